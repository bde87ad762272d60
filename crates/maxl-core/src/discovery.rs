//! Finding what maxl needs at run time outside its own binaries: the ONNX Runtime shared library
//! (ort runs in `load-dynamic` mode) and the files `scripts/setup.sh` installed.
//!
//! Order for the ONNX Runtime library: an explicit option (`--ort-lib`), then the `ORT_DYLIB_PATH`
//! environment variable, then the env file written by `scripts/setup.sh`. An explicit choice that
//! points at a missing file is an error, never silently replaced by a later source. Every error is
//! one line that names all three ways to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The command-line option every binary that runs ONNX Runtime accepts.
pub const ORT_OPTION: &str = "--ort-lib";
/// The environment variable ort itself reads.
pub const ORT_ENV_VAR: &str = "ORT_DYLIB_PATH";
/// The key under which setup.sh records the library in its env file.
pub const ORT_ENV_FILE_KEY: &str = "MAXL_ORT_DYLIB";
/// The env file's name inside the cache directory.
pub const ENV_FILE_NAME: &str = "maxl.env";

/// Where a library path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command-line option ([`ORT_OPTION`]).
    Option,
    /// The environment variable ([`ORT_ENV_VAR`]).
    EnvVar,
    /// The env file `scripts/setup.sh` wrote, at this path.
    SetupEnvFile(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Option => write!(f, "given by {ORT_OPTION}"),
            Source::EnvVar => write!(f, "given by {ORT_ENV_VAR}"),
            Source::SetupEnvFile(p) => write!(f, "listed in {} by scripts/setup.sh", p.display()),
        }
    }
}

/// A library found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The library file.
    pub path: PathBuf,
    /// Where its path came from.
    pub source: Source,
}

/// Why no ONNX Runtime library was found. One line, naming the three ways to give one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The path given (by the option, the variable or the env file) names no file.
    #[error(
        "ONNX Runtime library not found: {} ({origin}); pass {ORT_OPTION} <libonnxruntime.so>, set {ORT_ENV_VAR}, or run scripts/setup.sh",
        path.display()
    )]
    Missing {
        /// The path given.
        path: PathBuf,
        /// Where it was given.
        origin: Source,
    },
    /// No option, no variable, and the env file names no library (or does not exist).
    #[error(
        "ONNX Runtime library not found: no {ORT_OPTION} option, {ORT_ENV_VAR} is not set, and {} does not name one; pass {ORT_OPTION} <libonnxruntime.so>, set {ORT_ENV_VAR}, or run scripts/setup.sh",
        env_file.display()
    )]
    NotConfigured {
        /// The env file looked in.
        env_file: PathBuf,
    },
}

/// The cache directory setup.sh uses: `$MAXL_CACHE_DIR`, else `$XDG_CACHE_HOME/maxl`, else
/// `$HOME/.cache/maxl`.
pub fn cache_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(d) = non_empty("MAXL_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = non_empty("XDG_CACHE_HOME") {
        return Path::new(&d).join("maxl");
    }
    let home = non_empty("HOME").unwrap_or_else(|| "/".into());
    Path::new(&home).join(".cache").join("maxl")
}

/// The env file written by setup.sh.
pub fn setup_env_file(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    cache_dir(env).join(ENV_FILE_NAME)
}

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped. A missing file is an
/// empty map (set-up has not run).
pub fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Finds the ONNX Runtime library using the process environment.
pub fn locate_ort_library(explicit: Option<&Path>) -> Result<Located, DiscoveryError> {
    locate_ort_library_with(explicit, &|k| std::env::var(k).ok())
}

/// Finds the ONNX Runtime library with an injectable environment (for tests).
pub fn locate_ort_library_with(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Located, DiscoveryError> {
    let check = |path: PathBuf, source: Source| {
        if path.is_file() {
            Ok(Located { path, source })
        } else {
            Err(DiscoveryError::Missing {
                path,
                origin: source,
            })
        }
    };
    if let Some(p) = explicit {
        return check(p.to_path_buf(), Source::Option);
    }
    if let Some(p) = env(ORT_ENV_VAR).filter(|v| !v.is_empty()) {
        return check(PathBuf::from(p), Source::EnvVar);
    }
    let env_file = setup_env_file(env);
    match read_env_file(&env_file).remove(ORT_ENV_FILE_KEY) {
        Some(p) if !p.is_empty() => check(PathBuf::from(p), Source::SetupEnvFile(env_file)),
        _ => Err(DiscoveryError::NotConfigured { env_file }),
    }
}

/// The TrueType font plots and galleries are drawn with: the file `MAXL_PLOT_FONT` names, else
/// DejaVu Sans from Debian's fonts-dejavu-core (installed by scripts/setup.sh). Read once per
/// process; the error is one line naming the file.
pub fn plot_font() -> Result<&'static [u8], String> {
    static FONT: std::sync::OnceLock<Result<&'static [u8], String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let path: PathBuf = std::env::var_os("MAXL_PLOT_FONT").map_or_else(
            || PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
            PathBuf::from,
        );
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "{}: plot font: {e} (install fonts-dejavu-core)",
                path.display()
            )
        })?;
        Ok(&*Box::leak(bytes.into_boxed_slice()))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn cache_dir_precedence() {
        let e = env_of(&[("HOME", "/h".into())]);
        assert_eq!(cache_dir(&e), PathBuf::from("/h/.cache/maxl"));
        let e = env_of(&[("HOME", "/h".into()), ("XDG_CACHE_HOME", "/x".into())]);
        assert_eq!(cache_dir(&e), PathBuf::from("/x/maxl"));
        let e = env_of(&[
            ("XDG_CACHE_HOME", "/x".into()),
            ("MAXL_CACHE_DIR", "/m".into()),
        ]);
        assert_eq!(setup_env_file(&e), PathBuf::from("/m/maxl.env"));
    }

    #[test]
    fn option_then_env_var_then_setup_file() {
        let dir = tempfile::tempdir().unwrap();
        let lib = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            p
        };
        let (a, b, c) = (lib("a.so"), lib("b.so"), lib("c.so"));
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::write(
            cache.join(ENV_FILE_NAME),
            format!("# setup\nLIBTORCH=/t\n{ORT_ENV_FILE_KEY}={}\n", c.display()),
        )
        .unwrap();
        let cache_s = cache.display().to_string();
        let full = env_of(&[
            ("MAXL_CACHE_DIR", cache_s.clone()),
            (ORT_ENV_VAR, b.display().to_string()),
        ]);
        let got = locate_ort_library_with(Some(&a), &full).unwrap();
        assert_eq!((got.path, got.source), (a.clone(), Source::Option));
        let got = locate_ort_library_with(None, &full).unwrap();
        assert_eq!((got.path, got.source), (b, Source::EnvVar));
        let file_only = env_of(&[("MAXL_CACHE_DIR", cache_s)]);
        let got = locate_ort_library_with(None, &file_only).unwrap();
        assert_eq!(got.path, c);
        assert_eq!(got.source, Source::SetupEnvFile(cache.join(ENV_FILE_NAME)));
    }

    #[test]
    fn explicit_missing_file_is_an_error_naming_option_and_env_var() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.so");
        std::fs::write(&good, b"x").unwrap();
        let env = env_of(&[(ORT_ENV_VAR, good.display().to_string())]);
        let missing = dir.path().join("nope.so");
        let err = locate_ort_library_with(Some(&missing), &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nope.so"), "{msg}");
        assert!(msg.contains("given by --ort-lib"), "{msg}");
        assert!(msg.contains(ORT_ENV_VAR), "{msg}");
        assert!(!msg.contains('\n'));
        let env = env_of(&[(ORT_ENV_VAR, missing.display().to_string())]);
        let msg = locate_ort_library_with(None, &env).unwrap_err().to_string();
        assert!(msg.contains("given by ORT_DYLIB_PATH"), "{msg}");
    }

    #[test]
    fn nothing_configured_names_all_three() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[("MAXL_CACHE_DIR", dir.path().display().to_string())]);
        let msg = locate_ort_library_with(None, &env).unwrap_err().to_string();
        for needle in [
            "--ort-lib",
            "ORT_DYLIB_PATH",
            "scripts/setup.sh",
            "maxl.env",
        ] {
            assert!(msg.contains(needle), "{needle} missing in: {msg}");
        }
        // A stale env file naming a removed library.
        std::fs::write(
            dir.path().join(ENV_FILE_NAME),
            "MAXL_ORT_DYLIB=/gone/libonnxruntime.so\n",
        )
        .unwrap();
        let msg = locate_ort_library_with(None, &env).unwrap_err().to_string();
        assert!(
            msg.contains("/gone/libonnxruntime.so") && msg.contains("listed in"),
            "{msg}"
        );
    }
}
