//! What each library makes its embedders compile: the libraries carry no command-line, progress,
//! logging-subscriber, web-server or HTTP-client code (that lives in the CLI crates), and the
//! inference side no libtorch and no dataset readers.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::run;

/// `cargo tree -p krate --prefix none` with `args`: the names of the packages listed, the root
/// included. Fails the test unless cargo succeeds.
fn cargo_tree(krate: &str, args: &[&str]) -> BTreeSet<String> {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let r = run(Command::new(cargo)
        .args(["tree", "--prefix", "none", "-p", krate])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    r.assert_ok();
    let names: BTreeSet<String> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "{}", r.stdout);
    names
}

/// Every package `krate` compiles for its own use (normal and build dependencies, any depth).
fn normal_tree(krate: &str) -> BTreeSet<String> {
    let names = cargo_tree(krate, &["-e", "normal,build"]);
    assert!(names.contains(krate), "{names:?}");
    names
}

/// The packages `krate` names in its own `[dependencies]`.
fn direct_dependencies(krate: &str) -> BTreeSet<String> {
    let mut names = cargo_tree(krate, &["-e", "normal", "--depth", "1"]);
    names.remove(krate);
    names
}

/// The packages in `krate`'s normal tree that depend on `dep` directly.
fn dependents(krate: &str, dep: &str) -> BTreeSet<String> {
    let mut names = cargo_tree(krate, &["-e", "normal", "--invert", dep, "--depth", "1"]);
    names.remove(dep);
    names
}

fn assert_absent(krate: &str, found: &BTreeSet<String>, banned: &[&str]) {
    let present: Vec<&str> = banned
        .iter()
        .copied()
        .filter(|b| found.contains(*b))
        .collect();
    assert!(
        present.is_empty(),
        "{krate} depends on {present:?}; its tree: {found:?}"
    );
}

/// Command-line, progress, logging-subscriber, web-server and HTTP-client crates.
const CLI_AND_SERVER: [&str; 6] = [
    "clap",
    "indicatif",
    "tracing-subscriber",
    "axum",
    "tokio",
    "ureq",
];

#[test]
fn the_inference_library_compiles_no_cli_server_or_dataset_code() {
    let tree = normal_tree("maxl-infer");
    assert!(tree.contains("maxl-preprocess"), "{tree:?}");
    assert_absent("maxl-infer", &tree, &CLI_AND_SERVER);
    assert_absent("maxl-infer", &tree, &["hyper", "csv", "maxl-data"]);
    // walkdir only as tract's own dependency (its NNEF loader), never for dataset code.
    let walkdir: Vec<String> = dependents("maxl-infer", "walkdir").into_iter().collect();
    assert_eq!(
        walkdir,
        ["tract-nnef"],
        "packages of maxl-infer that use walkdir"
    );
    // anyhow is tract's own error type; maxl-infer itself uses none.
    assert_absent(
        "maxl-infer",
        &direct_dependencies("maxl-infer"),
        &["anyhow"],
    );
}

#[test]
fn the_preprocessing_library_is_image_decoding_only() {
    let tree = normal_tree("maxl-preprocess");
    assert_absent("maxl-preprocess", &tree, &CLI_AND_SERVER);
    assert_absent(
        "maxl-preprocess",
        &tree,
        &["anyhow", "maxl-core", "walkdir", "csv", "tract-onnx", "ort"],
    );
}

#[test]
fn the_training_library_compiles_no_cli_or_server_code() {
    assert_absent("maxl-train", &normal_tree("maxl-train"), &CLI_AND_SERVER);
    assert_absent(
        "maxl-train",
        &direct_dependencies("maxl-train"),
        &["anyhow"],
    );
}

#[test]
fn the_labelling_library_compiles_no_cli_or_server_code() {
    assert_absent("maxl-label", &normal_tree("maxl-label"), &CLI_AND_SERVER);
    assert_absent(
        "maxl-label",
        &direct_dependencies("maxl-label"),
        &["anyhow"],
    );
}

#[test]
fn inference_crates_do_not_depend_on_libtorch() {
    for krate in [
        "maxl-infer",
        "maxl-infer-cli",
        "maxl-label",
        "maxl-label-cli",
        "maxl-onnx",
        "maxl-core",
        "maxl-data",
        "maxl-preprocess",
    ] {
        let tree = cargo_tree(krate, &["-e", "normal,build"]);
        assert_absent(krate, &tree, &["tch", "torch-sys"]);
    }
}
