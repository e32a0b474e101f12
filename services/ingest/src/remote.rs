//! Scenes read where they lie in S3, through GDAL's `/vsis3/` file system.
//!
//! GDAL is given the service's own endpoint and credentials as *thread-local* options, set
//! for one scene's read and cleared after it: no other GDAL call in the process (and no
//! file a scene could name) ever sees them, and the process-wide hardening (no network file
//! systems, see [`crate::scene::harden_gdal`]) stays in force everywhere else. Only keys
//! ending `.tif`/`.tiff` are opened, with the GeoTIFF driver alone.

use aerial_shared::config::S3Settings;
use aerial_shared::keys::ObjectRef;
use secrecy::{ExposeSecret, SecretString};

/// GDAL options reaching the service's S3 endpoint (values secret: the key is among them).
#[derive(Debug, Clone)]
pub struct S3Access {
    options: Vec<(&'static str, SecretString)>,
}

impl S3Access {
    /// The options for the store in `s3`.
    pub fn new(s3: &S3Settings) -> Self {
        let mut options: Vec<(&'static str, String)> = vec![
            ("AWS_REGION", s3.region.clone()),
            (
                "AWS_VIRTUAL_HOSTING",
                if s3.path_style { "FALSE" } else { "TRUE" }.into(),
            ),
            ("AWS_NO_SIGN_REQUEST", "NO".into()),
            // /vsis3/ only for scenes; the hardening's NONE everywhere else
            ("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", ".tif,.tiff".into()),
            (
                "GDAL_HTTP_MAX_RETRY",
                s3.max_attempts.saturating_sub(1).to_string(),
            ),
            ("GDAL_HTTP_RETRY_DELAY", "1".into()),
            // a stalled connection fails (and the job is retried) instead of holding a
            // blocking thread for ever: 10 s to connect, under 1 KB/s for 60 s aborts
            ("GDAL_HTTP_CONNECTTIMEOUT", "10".into()),
            ("GDAL_HTTP_LOW_SPEED_TIME", "60".into()),
            ("GDAL_HTTP_LOW_SPEED_LIMIT", "1000".into()),
        ];
        if let Some(endpoint) = s3.endpoint.as_deref().filter(|e| !e.is_empty()) {
            let (https, host) = match endpoint.split_once("://") {
                Some((scheme, rest)) => (scheme.eq_ignore_ascii_case("https"), rest),
                None => (true, endpoint),
            };
            options.push(("AWS_S3_ENDPOINT", host.trim_end_matches('/').into()));
            options.push(("AWS_HTTPS", if https { "YES" } else { "NO" }.into()));
        }
        if let Some(ca) = &s3.ca_file {
            options.push(("CURL_CA_BUNDLE", ca.display().to_string()));
        }
        let mut options: Vec<(&'static str, SecretString)> = options
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect();
        // without static keys GDAL follows its own AWS credential chain (env, ~/.aws, IAM)
        if let (Some(id), Some(secret)) = (&s3.access_key, &s3.secret_key) {
            options.push(("AWS_ACCESS_KEY_ID", SecretString::from(id.clone())));
            options.push(("AWS_SECRET_ACCESS_KEY", secret.clone()));
        }
        Self { options }
    }

    /// Sets the options on this thread until the guard is dropped.
    pub fn for_this_thread(&self) -> ThreadOptions<'_> {
        for (k, v) in &self.options {
            // a failed set leaves the process-wide hardening, so the read fails, safely
            let _ = gdal::config::set_thread_local_config_option(k, v.expose_secret());
        }
        ThreadOptions(self)
    }
}

/// Clears [`S3Access`]'s options from the thread when dropped (blocking-pool threads are
/// reused by other work).
pub struct ThreadOptions<'a>(&'a S3Access);

impl Drop for ThreadOptions<'_> {
    fn drop(&mut self) {
        for (k, _) in &self.0.options {
            let _ = gdal::config::clear_thread_local_config_option(k);
        }
    }
}

/// GDAL's name for an object.
pub fn vsis3_path(object: &ObjectRef) -> String {
    format!("/vsis3/{}/{}", object.bucket, object.key)
}

/// Drops what GDAL cached of `name` (its size, its blocks).
pub fn forget(name: &str) {
    if let Ok(c) = std::ffi::CString::new(name) {
        // SAFETY: a valid NUL-terminated string, read during the call only
        unsafe { gdal_sys::VSICurlPartialClearCache(c.as_ptr()) };
    }
}

/// Whether a failed read of a scene in S3 failed on the way (an HTTP or network error, the
/// store's credentials or signature), not in the scene's bytes: GDAL's error number on this
/// thread (CPLE_HttpResponse, CPLE_AWSInvalidCredentials, CPLE_AWSSignatureDoesNotMatch,
/// CPLE_AWSError), or curl's words in the message.
pub fn failed_in_transit(message: &str) -> bool {
    // SAFETY: reads this thread's last GDAL error number
    let number = unsafe { gdal_sys::CPLGetLastErrorNo() };
    const IN_TRANSIT: [i32; 4] = [11, 15, 16, 17];
    IN_TRANSIT.contains(&number)
        || ["HTTP", "curl", "Curl", "timed out", "Timeout", "Connection"]
            .iter()
            .any(|w| message.contains(w))
}

/// Whether a key names a GeoTIFF by its extension (the only ones GDAL is let open in S3).
pub fn is_tiff_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with(".tif") || k.ends_with(".tiff")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str, key: bool) -> S3Settings {
        S3Settings {
            endpoint: Some(endpoint.into()),
            region: "us-east-1".into(),
            bucket: "aerial".into(),
            access_key: key.then(|| "AKID".into()),
            secret_key: key.then(|| SecretString::from("s3cr3t")),
            ca_file: None,
            path_style: true,
            max_attempts: 5,
        }
    }

    #[test]
    fn options_follow_the_service_settings_and_leave_the_thread() {
        let a = S3Access::new(&settings("http://127.0.0.1:8333/", true));
        let get = |k: &str| {
            a.options
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.expose_secret().to_string())
        };
        assert_eq!(get("AWS_S3_ENDPOINT").as_deref(), Some("127.0.0.1:8333"));
        assert_eq!(get("AWS_HTTPS").as_deref(), Some("NO"));
        assert_eq!(get("AWS_VIRTUAL_HOSTING").as_deref(), Some("FALSE"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY").as_deref(), Some("s3cr3t"));
        assert!(!format!("{a:?}").contains("s3cr3t"), "debug hides values");
        let b = S3Access::new(&settings("https://s3.example.org", false));
        assert!(b
            .options
            .iter()
            .any(|(k, v)| *k == "AWS_HTTPS" && v.expose_secret() == "YES"));
        assert!(!b.options.iter().any(|(k, _)| *k == "AWS_ACCESS_KEY_ID"));

        let secret = || gdal::config::get_thread_local_config_option("AWS_SECRET_ACCESS_KEY", "");
        {
            let _on = a.for_this_thread();
            assert_eq!(secret().unwrap(), "s3cr3t");
            // not process-wide: another thread does not see it
            let other = std::thread::spawn(|| {
                gdal::config::get_config_option("AWS_SECRET_ACCESS_KEY", "").unwrap()
            });
            assert_eq!(other.join().unwrap(), "");
        }
        assert_eq!(secret().unwrap(), "", "cleared when the read ends");
    }

    #[test]
    fn only_tiff_names() {
        assert!(is_tiff_name("a/b/m_1_20200831.TIF"));
        assert!(is_tiff_name("x.tiff"));
        assert!(!is_tiff_name("x.vrt"));
        assert!(!is_tiff_name("x.tif.aux.xml"));
    }
}
