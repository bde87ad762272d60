//! How the binaries find native libraries, as a user meets it.

mod common;

use std::process::Command;

use common::{bin, run};

#[test]
fn onnx_runtime_is_found_through_the_setup_env_file() {
    let r = run(Command::new(bin("maxl-infer"))
        .arg("runtime")
        .env_remove("ORT_DYLIB_PATH"));
    r.assert_ok();
    assert!(
        r.stdout.contains("libonnxruntime.so.1.31.1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("scripts/setup.sh"), "{}", r.stdout);
}

#[test]
fn a_missing_onnx_runtime_is_a_one_line_error_naming_the_ways_to_fix_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("libonnxruntime.so");
    run(Command::new(bin("maxl-infer"))
        .arg("runtime")
        .arg("--ort-lib")
        .arg(&missing))
    .assert_one_line_error(&["--ort-lib", "ORT_DYLIB_PATH", "libonnxruntime.so"]);
    run(Command::new(bin("maxl-infer"))
        .arg("runtime")
        .env("ORT_DYLIB_PATH", &missing))
    .assert_one_line_error(&["given by ORT_DYLIB_PATH", "--ort-lib"]);
    // Nothing configured at all: no option, no variable, no set-up env file.
    run(Command::new(bin("maxl-infer"))
        .arg("runtime")
        .env_remove("ORT_DYLIB_PATH")
        .env("MAXL_CACHE_DIR", tmp.path()))
    .assert_one_line_error(&["--ort-lib", "ORT_DYLIB_PATH", "scripts/setup.sh"]);
    // A file that is not a shared library.
    let junk = tmp.path().join("junk.so");
    std::fs::write(&junk, "not a library").unwrap();
    run(Command::new(bin("maxl-infer"))
        .arg("runtime")
        .arg("--ort-lib")
        .arg(&junk))
    .assert_one_line_error(&["cannot load ONNX Runtime", "junk.so", "ORT_DYLIB_PATH"]);
}

#[test]
fn maxl_train_runs_without_ld_library_path() {
    // libtorch is found through the rpath the build script embeds.
    let r = run(Command::new(bin("maxl-train"))
        .arg("--help")
        .env_remove("LD_LIBRARY_PATH"));
    r.assert_ok();
    for flag in [
        "--config",
        "--method",
        "--schedule",
        "--preset",
        "--epochs",
        "--seed",
        "--data",
        "--out",
    ] {
        assert!(r.stdout.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn an_unavailable_execution_provider_is_an_error_not_a_silent_cpu_fallback() {
    // The set-up's onnxruntime is the CPU build: CUDA and TensorRT cannot register here.
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([128]))
        .save(&img)
        .unwrap();
    for (backend, provider) in [("ort-cuda", "CUDA"), ("ort-tensorrt", "TensorRT")] {
        run(Command::new(bin("maxl-infer"))
            .args(["predict", "--backend", backend, "--model"])
            .arg(&models)
            .arg(&img))
        .assert_one_line_error(&[
            backend,
            "cannot register the",
            provider,
            "execution provider",
        ]);
    }
    let r = run(Command::new(bin("maxl-infer"))
        .args(["predict", "--backend", "ort-cpu", "--model"])
        .arg(&models)
        .arg(&img));
    r.assert_ok();
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
}

#[test]
fn a_provider_fallback_happens_only_when_asked_and_is_logged() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([90]))
        .save(&img)
        .unwrap();
    // TensorRT with its options and CUDA behind it: both fail to register on the CPU build, and
    // the error names both.
    run(Command::new(bin("maxl-infer"))
        .args([
            "predict",
            "--backend",
            "ort-tensorrt",
            "--trt-fp16",
            "--trt-profile",
            "1,32,64",
            "--trt-cuda-fallback",
            "--trt-engine-cache",
        ])
        .arg(tmp.path().join("engines"))
        .arg("--model")
        .arg(&models)
        .arg(&img))
    .assert_one_line_error(&["TensorrtExecutionProvider", "CUDAExecutionProvider"]);
    // A malformed profile is refused by the command line.
    let r = run(Command::new(bin("maxl-infer"))
        .args([
            "predict",
            "--backend",
            "ort-tensorrt",
            "--trt-profile",
            "64,1,8",
        ])
        .arg(&img));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("MIN ≤ OPT ≤ MAX"), "{}", r.stderr);
    // Asked for: the CPU runs it, with a warning that says so.
    for backend in ["ort-cuda", "ort-tensorrt"] {
        let r = run(Command::new(bin("maxl-infer"))
            .args([
                "predict",
                "--fallback-to-cpu",
                "--backend",
                backend,
                "--model",
            ])
            .arg(&models)
            .arg(&img));
        r.assert_ok();
        assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
        assert!(
            r.stderr.contains("cannot register") && r.stderr.contains("falling back to the CPU"),
            "{backend}: {}",
            r.stderr
        );
    }
}
