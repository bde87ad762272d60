//! Embeds libtorch's library directory as an rpath, so `maxl-train` and the tests that link tch
//! run without LD_LIBRARY_PATH. torch-sys exports the directory it linked against (`links = "tch"`).
//!
//! `--no-as-needed` keeps libtorch_cuda (and libtorch) in the dependency list even though no symbol
//! of theirs is referenced directly; without it `tch::Cuda::is_available()` is false on a GPU.
//!
//! Also compiles `cpp/shim.cpp` against the same libtorch's headers: the C functions that enter
//! and leave a forward-mode AD level (tch wraps dual tensors but not levels) and read the CUDA
//! allocator's peak.
//!
//! And `cpp/dist.cpp`, libtorch's c10d process groups for data-parallel training: Gloo always
//! (with gloo's own headers, which the PyTorch wheel lacks, from Debian's libgloo-dev, or from
//! `MAXL_GLOO_INCLUDE`), NCCL in addition when the CUDA headers it needs are found (see
//! [`nccl_includes`]); a build without them says so when NCCL is asked for.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    println!("cargo:rerun-if-changed=cpp/dist.cpp");
    println!("cargo:rerun-if-changed=cpp/guard.h");
    println!("cargo:rerun-if-env-changed=MAXL_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=MAXL_CUDA_INCLUDE");
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
    let build = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT");
        b
    };
    build().file("cpp/shim.cpp").compile("maxl_shim");

    let gloo = std::env::var("MAXL_GLOO_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    if !std::path::Path::new(&gloo).join("gloo/config.h").exists() {
        panic!(
            "gloo's headers are missing ({gloo}/gloo/config.h): run scripts/setup.sh (it installs \
             Debian's libgloo-dev) or set MAXL_GLOO_INCLUDE to a directory holding gloo/"
        );
    }
    let mut dist = build();
    dist.include(&gloo)
        .define("USE_C10D_GLOO", None)
        .file("cpp/dist.cpp");
    let nccl = cuda.exists().then(|| nccl_includes(lib)).flatten();
    let with_nccl = nccl.is_some_and(|dirs| {
        let mut b = dist.clone();
        b.define("USE_C10D_NCCL", None)
            .define("MAXL_WITH_NCCL", None);
        for d in &dirs {
            b.include(d);
        }
        match b.try_compile("maxl_dist") {
            Ok(()) => true,
            Err(e) => {
                println!("cargo:warning=c10d shim built without NCCL: {e}");
                false
            }
        }
    });
    if !with_nccl {
        dist.compile("maxl_dist");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// The include directories NCCL's process group needs beyond libtorch's: `nccl.h` (the venv's
/// nvidia-nccl wheel) and the CUDA runtime headers with `crt/host_config.h` and `nv/target`
/// (`MAXL_CUDA_INCLUDE`, or the venv's nvidia wheels: nvidia-cuda-crt and nvidia-cuda-cccl).
/// None when any is missing.
fn nccl_includes(lib: &std::path::Path) -> Option<Vec<std::path::PathBuf>> {
    // lib = site-packages/torch/lib
    let site = lib.parent()?.parent()?;
    let nvidia = site.join("nvidia");
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("MAXL_CUDA_INCLUDE")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    for sub in [
        "nccl/include",
        "cu13/include",
        "cuda_runtime/include",
        "cuda_crt/include",
        "cuda_cccl/include",
        "cu13/include/cccl",
    ] {
        candidates.push(nvidia.join(sub));
    }
    let find = |file: &str| candidates.iter().find(|d| d.join(file).exists()).cloned();
    let dirs = [
        find("nccl.h")?,
        find("cuda_runtime_api.h")?,
        find("crt/host_config.h")?,
        find("nv/target")?,
    ];
    let mut out: Vec<std::path::PathBuf> = Vec::new();
    for d in dirs {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Some(out)
}
