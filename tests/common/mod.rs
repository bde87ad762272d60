//! Helpers for the end-to-end tests: they run the real binaries of the workspace.

#![allow(dead_code)]

pub mod jpeg;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A workspace binary next to this test executable (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --all-targets`, as scripts/test.sh does)",
        path.display()
    );
    path
}

/// An example program of a workspace crate (`target/<profile>/examples/<name>`).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (`cargo build --workspace --all-targets`, as scripts/test.sh does)",
        path.display()
    );
    path
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("spawn");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl Run {
    /// A user-input failure: exit 1, exactly one line on stderr that says `error:`, no panic.
    pub fn assert_one_line_error(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(1), "exit code; stderr: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line expected, got: {}", self.stderr);
        assert!(lines[0].contains("error:"), "{}", lines[0]);
        for n in needles {
            assert!(lines[0].contains(n), "`{n}` missing in: {}", lines[0]);
        }
    }

    pub fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
    }
}

/// The Fashion-MNIST directory scripts/setup.sh installs. Tests that need it fail, never skip,
/// when it is missing.
pub fn fashion_mnist_dir() -> PathBuf {
    let dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is not installed in {}: run scripts/setup.sh (Debian package dataset-fashion-mnist)",
        dir.display()
    );
    dir
}

/// The Python with torch and safetensors: the venv's (`MAXL_PYTHON`, exported by the scripts
/// from set-up's env file), else `python3` on PATH (scripts/test.sh puts the venv first).
pub fn python() -> PathBuf {
    std::env::var_os("MAXL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The name of the folder that holds `path` (an image's class folder).
pub fn folder_of(path: &str) -> String {
    Path::new(path)
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An HTTP client that returns error statuses as responses (tests check them) and gives up on a
/// request after `timeout`.
pub fn http_agent(timeout: std::time::Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A run directory's metrics.csv rows without the timing columns (`seconds`, `cpu_seconds`),
/// which differ between runs of the same computation.
#[allow(dead_code)]
pub fn metrics_without_seconds(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let timed: Vec<usize> = ["seconds", "cpu_seconds"]
        .iter()
        .filter_map(|name| header.iter().position(|h| h == name))
        .collect();
    text.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| !timed.contains(i))
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Both run directories hold the same final weights, byte for byte.
#[allow(dead_code)]
pub fn assert_same_weights(a: &Path, b: &Path) {
    for f in ["multitask.safetensors", "label_generator.safetensors"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}
