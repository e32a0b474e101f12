//! `aerial status`: progress of jobs, read from their status records in S3.

use aerial_shared::{keys, status::JobStatus, Settings, Store};

/// Prints one job's status, or a line per job.
pub async fn run(settings: &Settings, job: Option<&str>, json: bool) -> anyhow::Result<()> {
    let store = Store::connect(&settings.s3).await;
    let ids: Vec<String> = match job {
        Some(j) => vec![j.to_string()],
        None => store
            .list("jobs/")
            .await?
            .into_iter()
            .filter_map(|o| {
                o.key
                    .strip_suffix("/status.json")
                    .and_then(|k| k.strip_prefix("jobs/"))
                    .filter(|id| !id.contains('/'))
                    .map(String::from)
            })
            .collect(),
    };
    for id in ids {
        let st: JobStatus = store.get_json(&keys::job_status(&id)).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&st)?);
        } else {
            println!("{}", line(&st));
        }
    }
    Ok(())
}

/// One human line: state, counts, rate and ETA.
pub fn line(st: &JobStatus) -> String {
    let eta = st
        .eta_seconds()
        .map(|s| format!(", eta {s:.0}s"))
        .unwrap_or_default();
    let replicas = if st.replicas.is_empty() {
        String::new()
    } else {
        format!(", {} replica(s) seen", st.replicas.len())
    };
    format!(
        "{} [{} {:?}] {}/{} done, {} failed, {:.1}/s{}{}",
        st.job_id,
        st.kind,
        st.state,
        st.done,
        st.total,
        st.failed,
        st.rate(),
        eta,
        replicas
    )
}
