//! Embeds libtorch's folder as rpath, so the harness's binaries that link aerial-model (the
//! classifier bench) run without LD_LIBRARY_PATH.
fn main() {
    // torch-sys (links = "tch") exports the folder it linked against
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
