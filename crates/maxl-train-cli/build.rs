//! Embeds libtorch's library directory as an rpath, so `maxl-train` runs without
//! LD_LIBRARY_PATH, and keeps libtorch_cuda linked (without `--no-as-needed` it is dropped and
//! `tch::Cuda::is_available()` is false on a GPU). torch-sys exports the directory it linked
//! against (`links = "tch"`). The maxl-train library's build script does the same for its tests
//! and examples.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys exports DEP_TCH_LIBTORCH_LIB (libtorch's lib directory)");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
