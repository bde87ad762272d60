//! Files that appear whole or not at all. Every output of the workspace that a crash must not
//! leave half-written (models, manifests, run files, label CSVs) is written through here: to
//! `<name>.<pid>.tmp` next to the final name, synced, then renamed into place, and the directory
//! synced so that the rename itself survives a power cut. The process id keeps processes that
//! write the same file (parallel experiment runs sharing a directory) off each other's
//! temporary file: each rename is whole, the last one wins.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O error with the file it happened to.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot write: {source}", path.display())]
pub struct WriteError {
    /// The file being written.
    pub path: PathBuf,
    /// The system's reason.
    pub source: std::io::Error,
}

impl WriteError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `<path>.<pid>.tmp`, next to the final file.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(s)
}

/// Writes `bytes` to `path` atomically: a reader (or a crash) sees the old file or the new one,
/// never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Replaces `path` through a temporary file and a rename, without syncing: atomic for readers
/// and against a crash of the process, not against a power cut. For files rewritten many times
/// a second.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(WriteError::at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(WriteError::at(path))
}

/// Like [`write_atomic`], with the contents written by `fill` to the temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(WriteError::at(&tmp))?;
    fill(&mut f)
        .and_then(|()| f.sync_all())
        .map_err(WriteError::at(&tmp))?;
    drop(f);
    rename_durable(&tmp, path)
}

/// Renames `from` to `to` and syncs the directory of `to`, so that the new name is on disk when
/// this returns.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), WriteError> {
    std::fs::rename(from, to).map_err(WriteError::at(to))?;
    sync_dir_of(to).map_err(WriteError::at(to))
}

/// Syncs the directory that holds `path` (a no-op where directories cannot be opened).
pub fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match File::open(dir) {
        Ok(d) => d.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_names_the_file_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!tmp_path(&p).exists());
        // A failing writer leaves the old file in place.
        let e = write_atomic_with(&p, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        let pid = std::process::id();
        assert!(
            e.to_string()
                .contains(&format!("a.csv.{pid}.tmp: cannot write: disk full")),
            "{e}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let e = write_atomic(&dir.path().join("missing/x"), b"").unwrap_err();
        assert!(
            e.to_string().contains(&format!("missing/x.{pid}.tmp")),
            "{e}"
        );
    }
}
