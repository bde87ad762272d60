//! `maxl-infer runtime`: loads the ONNX Runtime library and reports which one was found and how.

use std::path::PathBuf;

/// The arguments of `maxl-infer runtime`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Path to libonnxruntime.so; overrides ORT_DYLIB_PATH and the library recorded by scripts/setup.sh.
    #[arg(long = "ort-lib", value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
}

/// Runs `maxl-infer runtime`: the library's path and how it was found, then its build, on stdout.
pub fn run(args: &RuntimeArgs) -> anyhow::Result<()> {
    let rt = maxl_infer::OrtRuntime::load(args.ort_lib.as_deref(), None)?;
    println!(
        "onnxruntime: {} ({})",
        rt.library.path.display(),
        rt.library.source
    );
    println!("build: {}", rt.build_info);
    Ok(())
}
