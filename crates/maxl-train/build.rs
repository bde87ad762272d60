//! Embeds libtorch's library directory as an rpath, so `maxl-train` and the tests that link tch
//! run without LD_LIBRARY_PATH. torch-sys exports the directory it linked against (`links = "tch"`).
//!
//! `--no-as-needed` keeps libtorch_cuda (and libtorch) in the dependency list even though no symbol
//! of theirs is referenced directly; without it `tch::Cuda::is_available()` is false on a GPU.
//!
//! Also compiles `cpp/shim.cpp` against the same libtorch's headers: the C functions that enter
//! and leave a forward-mode AD level (tch wraps dual tensors but not levels) and read the CUDA
//! allocator's peak.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys exports DEP_TCH_LIBTORCH_LIB (libtorch's lib directory)");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    let lib = std::path::Path::new(&dir);
    let cuda = lib.join("libtorch_cuda.so");
    if cuda.exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let include = lib.parent().expect("lib has a parent").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("cpp/shim.cpp")
        .compile("maxl_shim");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
