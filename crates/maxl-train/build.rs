//! Embeds libtorch's library directory as an rpath, so `maxl-train` and the tests that link tch
//! run without LD_LIBRARY_PATH. torch-sys exports the directory it linked against (`links = "tch"`).
//!
//! `--no-as-needed` keeps libtorch_cuda (and libtorch) in the dependency list even though no symbol
//! of theirs is referenced directly; without it `tch::Cuda::is_available()` is false on a GPU.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        let cuda = std::path::Path::new(&dir).join("libtorch_cuda.so");
        if cuda.exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-ltorch");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}
