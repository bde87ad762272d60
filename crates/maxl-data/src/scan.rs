//! Finding images: the one walker over image folders and the one reader of image lists, shared
//! by training (which refuses any problem) and `maxl-label` (which reports each problem and goes
//! on).
//!
//! Folder rules: symbolic links are followed (a link back to one of its own ancestors is a
//! problem, not an endless walk); names starting with `.` are skipped; files whose extension is
//! not `.png`, `.jpg` or `.jpeg` (any case) are ignored. Everything the walk meets that is not an
//! image it returns — a dangling link, an unreadable folder, a non-UTF-8 name — comes back as a
//! [`Problem`] naming it, so that nothing disappears silently. Images are returned sorted by
//! their relative path as a string (`/`-separated), the order every consumer uses.

use std::path::{Component, Path, PathBuf};

use crate::DataError;

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether `path` is named as an image: its extension is one of [`IMAGE_EXTENSIONS`].
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// One image file found under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file (the root joined with `rel`).
    pub path: PathBuf,
    /// The path relative to the root, `/`-separated.
    pub rel: String,
}

impl Found {
    /// The folders between the root and the file (`["Coat"]` for `Coat/1.png`).
    pub fn folders(&self) -> Vec<&str> {
        let mut parts: Vec<&str> = self.rel.split('/').collect();
        parts.pop();
        parts
    }
}

/// Something met on the walk that is not an image to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry (the root joined with `rel`).
    pub path: PathBuf,
    /// The path relative to the root (lossy where the name is not UTF-8).
    pub rel: String,
    /// What is wrong with it, or why it is skipped, in words.
    pub reason: String,
    /// Not an error: a file that is not an image by its name, or a hidden entry.
    pub ignored: bool,
}

/// The result of a walk.
#[derive(Debug, Default)]
pub struct Scan {
    /// Sorted by `rel`.
    pub images: Vec<Found>,
    /// Sorted by `rel`.
    pub problems: Vec<Problem>,
}

impl Scan {
    /// The first problem that is not merely an ignored file.
    pub fn first_error(&self) -> Option<&Problem> {
        self.problems.iter().find(|p| !p.ignored)
    }
}

fn rel_of(root: &Path, path: &Path) -> Result<String, String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s.to_string()),
                None => parts.push(s.to_string_lossy().into_owned()),
            },
            _ => parts.push(c.as_os_str().to_string_lossy().into_owned()),
        }
    }
    let lossy = parts.join("/");
    if rel.to_str().is_none() {
        Err(lossy)
    } else {
        Ok(lossy)
    }
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Why walkdir could not visit an entry, in words.
fn describe(err: &walkdir::Error) -> String {
    if let Some(ancestor) = err.loop_ancestor() {
        return format!("symbolic link loop: leads back to {}", ancestor.display());
    }
    let path = err.path();
    let link = path
        .and_then(|p| std::fs::symlink_metadata(p).ok())
        .is_some_and(|m| m.file_type().is_symlink());
    let io = err.io_error();
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::NotFound) if link => {
            "dangling symbolic link (its target does not exist)".into()
        }
        _ if link && io.and_then(std::io::Error::raw_os_error) == Some(libc::ELOOP) => {
            "symbolic link loop".into()
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            let dir = path.is_some_and(|p| p.is_dir());
            format!(
                "cannot read {}: permission denied",
                if dir { "folder" } else { "entry" }
            )
        }
        _ => match io {
            Some(e) => format!("cannot read: {e}"),
            None => format!("cannot read: {err}"),
        },
    }
}

/// Walks `root` (following symbolic links, skipping hidden names) and returns every image file
/// and every problem, each sorted by relative path. Only an unreadable root is an error.
pub fn scan_images(root: &Path) -> Result<Scan, DataError> {
    let meta = std::fs::metadata(root).map_err(|source| DataError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DataError::Format {
            path: root.to_path_buf(),
            message: "not a folder".into(),
        });
    }
    let mut scan = Scan::default();
    let mut walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .min_depth(1)
        .into_iter();
    while let Some(entry) = walker.next() {
        match entry {
            Ok(e) => visit_entry(root, &e, &mut walker, &mut scan),
            Err(err) => visit_error(root, &err, &mut scan)?,
        }
    }
    // By relative path; the file path breaks ties between non-UTF-8 names that read the same.
    scan.images
        .sort_by(|a, b| a.rel.cmp(&b.rel).then_with(|| a.path.cmp(&b.path)));
    scan.problems
        .sort_by(|a, b| a.rel.cmp(&b.rel).then_with(|| a.path.cmp(&b.path)));
    Ok(scan)
}

/// Files one walked entry as an image or a problem; a hidden folder is not searched further.
fn visit_entry(
    root: &Path,
    e: &walkdir::DirEntry,
    walker: &mut walkdir::IntoIter,
    scan: &mut Scan,
) {
    let path = e.path().to_path_buf();
    let is_dir = e.file_type().is_dir();
    let rel = rel_of(root, &path);
    let problem = |rel: String, reason: &str, ignored| Problem {
        path: path.clone(),
        rel,
        reason: reason.into(),
        ignored,
    };
    if hidden(e.file_name()) {
        let reason = if is_dir {
            walker.skip_current_dir();
            "hidden folder, not searched"
        } else {
            "hidden file"
        };
        scan.problems
            .push(problem(rel.unwrap_or_else(|l| l), reason, true));
        return;
    }
    if is_dir {
        return;
    }
    match rel {
        Err(lossy) => scan.problems.push(problem(
            lossy,
            "the path is not valid UTF-8",
            !is_image(&path),
        )),
        Ok(rel) if !e.file_type().is_file() => {
            scan.problems.push(problem(rel, "not a regular file", true));
        }
        Ok(rel) if !is_image(&path) => scan.problems.push(problem(
            rel,
            "not named as an image (.png, .jpg, .jpeg)",
            true,
        )),
        Ok(rel) => scan.images.push(Found { path, rel }),
    }
}

/// Files a walk error as a problem; only an error at the root itself is returned.
fn visit_error(root: &Path, err: &walkdir::Error, scan: &mut Scan) -> Result<(), DataError> {
    let path = err
        .path()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    if err.depth() == 0 {
        return Err(DataError::Format {
            path,
            message: describe(err),
        });
    }
    let rel = rel_of(root, &path).unwrap_or_else(|l| l);
    // A hidden name is skipped even when it cannot be visited (an editor's
    // `.#file.png` lock link, say).
    let ignored = path.file_name().is_some_and(hidden);
    scan.problems.push(Problem {
        reason: describe(err),
        path,
        rel,
        ignored,
    });
    Ok(())
}

/// One line of an image list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The path as written in the list.
    pub rel: String,
    /// The file: `rel`, relative to the list's folder unless absolute.
    pub path: PathBuf,
    /// The primary class, when the line gives one.
    pub label: Option<String>,
    /// The fine class, when the line gives one.
    pub fine: Option<String>,
    /// `list.csv:<line>`, for messages.
    pub origin: String,
}

/// The file a list line's `path` names: itself when absolute, else relative to the list's folder.
pub fn list_path(csv: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        csv.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads an image list: CSV (RFC 4180 quoting) with the columns `path,label[,fine_label]`, an
/// optional header line that starts with `path`. With `labels_required` false, lines of the
/// path alone are accepted too. Relative paths are relative to the list's folder.
pub fn read_list(csv: &Path, labels_required: bool) -> Result<Vec<Listed>, DataError> {
    let file = std::fs::File::open(csv).map_err(|source| DataError::Io {
        path: csv.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let expected = if labels_required {
        "`path,label[,fine_label]`"
    } else {
        "`path[,label[,fine_label]]`"
    };
    let mut items = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(i as u64 + 1, |p| p.line());
            DataError::Invalid(format!("{}:{line}: {}", csv.display(), csv_reason(&e)))
        })?;
        let line = record.position().map_or(i as u64 + 1, |p| p.line());
        let origin = format!("{}:{line}", csv.display());
        let cols: Vec<&str> = record.iter().collect();
        if cols.iter().all(|c| c.is_empty()) {
            continue;
        }
        if i == 0 && cols[0].eq_ignore_ascii_case("path") {
            continue;
        }
        let min = if labels_required { 2 } else { 1 };
        if !(min..=3).contains(&cols.len()) || cols.iter().any(|c| c.is_empty()) {
            return Err(DataError::Invalid(format!(
                "{origin}: expected {expected}, got `{}`",
                cols.join(",")
            )));
        }
        items.push(Listed {
            rel: cols[0].to_string(),
            path: list_path(csv, cols[0]),
            label: cols.get(1).map(|s| s.to_string()),
            fine: cols.get(2).map(|s| s.to_string()),
            origin,
        });
    }
    if items.is_empty() {
        return Err(DataError::Format {
            path: csv.to_path_buf(),
            message: "no images listed".into(),
        });
    }
    Ok(items)
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        csv::ErrorKind::Io(e) => format!("cannot read: {e}"),
        _ => e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn walks_sorted_and_reports_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("b/2.png"));
        touch(&r.join("b/10.JPG"));
        touch(&r.join("a.b/1.png"));
        touch(&r.join("a/x/1.jpeg"));
        touch(&r.join("a/notes.txt"));
        touch(&r.join(".cache/1.png"));
        touch(&r.join("b/.DS_Store"));
        std::os::unix::fs::symlink(r.join("nowhere.png"), r.join("b/dangling.png")).unwrap();
        std::os::unix::fs::symlink(r.join("a"), r.join("a/x/up")).unwrap();
        std::os::unix::fs::symlink(r.join("b/self.png"), r.join("b/self.png")).unwrap();
        let s = scan_images(r).unwrap();
        let rels: Vec<&str> = s.images.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a.b/1.png", "a/x/1.jpeg", "b/10.JPG", "b/2.png"]);
        assert_eq!(s.images[1].folders(), ["a", "x"]);
        let probs: Vec<(&str, &str, bool)> = s
            .problems
            .iter()
            .map(|p| (p.rel.as_str(), p.reason.as_str(), p.ignored))
            .collect();
        assert_eq!(
            probs,
            [
                (".cache", "hidden folder, not searched", true),
                (
                    "a/notes.txt",
                    "not named as an image (.png, .jpg, .jpeg)",
                    true
                ),
                (
                    "a/x/up",
                    &*format!(
                        "symbolic link loop: leads back to {}",
                        r.join("a").display()
                    ),
                    false
                ),
                ("b/.DS_Store", "hidden file", true),
                (
                    "b/dangling.png",
                    "dangling symbolic link (its target does not exist)",
                    false
                ),
                ("b/self.png", "symbolic link loop", false),
            ]
        );
        assert_eq!(s.first_error().unwrap().rel, "a/x/up");
        let e = scan_images(&r.join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn lists_with_quotes_headers_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("l.csv");
        std::fs::write(&csv, "path,label\n\"a,b.png\",Coat\n/abs/c.png, Bag \n\n").unwrap();
        let l = read_list(&csv, true).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].rel, "a,b.png");
        assert_eq!(l[0].path, dir.path().join("a,b.png"));
        assert_eq!(l[1].path, Path::new("/abs/c.png"));
        assert_eq!(l[1].label.as_deref(), Some("Bag"));
        assert_eq!(l[1].origin, format!("{}:3", csv.display()));
        std::fs::write(&csv, "a.png\n").unwrap();
        let e = read_list(&csv, true).unwrap_err().to_string();
        assert!(
            e.contains("l.csv:1: expected `path,label[,fine_label]`"),
            "{e}"
        );
        assert_eq!(read_list(&csv, false).unwrap()[0].label, None);
        std::fs::write(&csv, "path\n").unwrap();
        let e = read_list(&csv, false).unwrap_err().to_string();
        assert!(e.contains("no images listed"), "{e}");
    }
}
