//! What to label: the work list, built from a folder (class folders, `<coarse>/<fine>` folders, or
//! any folder with the class predicted) or from a CSV list, sorted by relative path. Every entry
//! that will not be labelled — a dangling link, an unreadable folder, an unknown class folder, a
//! file that is not an image — is in the list too, as a [`Work::Skip`], so that it gets a row in
//! the errors file at its place in the order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use maxl_core::Choice;
use maxl_data::scan::{list_path, read_list, scan_images};
use maxl_infer::MaxlModel;
use serde::{Deserialize, Serialize};

use crate::LabelError;

/// Where an image's primary class comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Primary {
    /// The class folder (`root/<class>/…`, any depth below it) or the list's label column.
    Given,
    /// The primary head's prediction: any folder layout, lists without labels.
    Predicted,
}

impl Choice for Primary {
    const ALL: &'static [Self] = &[Primary::Given, Primary::Predicted];

    fn name(self) -> &'static str {
        match self {
            Primary::Given => "given",
            Primary::Predicted => "predicted",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Primary::Given => {
                "The class folder (`root/<class>/…`, any depth below it) or the list's label column"
            }
            Primary::Predicted => {
                "The primary head's prediction: any folder layout, lists without labels"
            }
        }
    }
}

/// The `class_source` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassSource {
    /// The image's class folder.
    Folder,
    /// The list's label column.
    Csv,
    /// The primary head's prediction.
    Predicted,
}

impl ClassSource {
    /// The column's value: `folder`, `csv` or `predicted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClassSource::Folder => "folder",
            ClassSource::Csv => "csv",
            ClassSource::Predicted => "predicted",
        }
    }
}

/// What happens to one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Label the image; `class` is the given class (None: predict it).
    Image {
        /// The file to read.
        path: PathBuf,
        /// The given class's index, or `None` to predict it.
        class: Option<usize>,
        /// Where the class comes from.
        source: ClassSource,
    },
    /// Not labelled, with the reason; `ignored` for files that are not images by name.
    Skip {
        /// Why (the errors file's `reason`).
        reason: String,
        /// Left out as not an image by name, rather than failed.
        ignored: bool,
    },
}

/// One entry of the work list.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The path relative to the input folder (or as written in the list): the `path` column and
    /// the sort key.
    pub rel: String,
    /// What happens to it.
    pub work: Work,
}

/// A folder of images or a CSV list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A folder, walked for images.
    Folder(PathBuf),
    /// A CSV list of `path,label[,fine_label]` lines.
    List(PathBuf),
}

impl Input {
    /// A file is read as a CSV list, a folder is walked.
    pub fn new(path: &Path) -> Result<Self, LabelError> {
        let meta = std::fs::metadata(path).map_err(|source| LabelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(if meta.is_dir() {
            Input::Folder(path.to_path_buf())
        } else {
            Input::List(path.to_path_buf())
        })
    }

    /// The folder or list, as given.
    pub fn path(&self) -> &Path {
        match self {
            Input::Folder(p) | Input::List(p) => p,
        }
    }

    /// The file a `path` column value refers to.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        match self {
            Input::Folder(root) => root.join(rel),
            Input::List(csv) => list_path(csv, rel),
        }
    }

    /// The work list, sorted by `rel` (byte order of the string).
    pub fn entries(&self, model: &MaxlModel, primary: Primary) -> Result<Vec<Entry>, LabelError> {
        let mut entries = match self {
            Input::Folder(root) => folder_entries(root, model, primary)?,
            Input::List(csv) => list_entries(csv, model, primary)?,
        };
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(entries)
    }
}

fn skip(rel: String, reason: String, ignored: bool) -> Entry {
    Entry {
        rel,
        work: Work::Skip { reason, ignored },
    }
}

fn unknown_class(model: &MaxlModel, name: &str, what: &str) -> String {
    let known: Vec<&str> = model
        .manifest()
        .classes
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    format!(
        "{what} `{name}` is not a class of the model (classes: {})",
        known.join(", ")
    )
}

fn folder_entries(
    root: &Path,
    model: &MaxlModel,
    primary: Primary,
) -> Result<Vec<Entry>, LabelError> {
    let scan = scan_images(root)?;
    let mut out = Vec::with_capacity(scan.images.len() + scan.problems.len());
    let mut classes: HashMap<String, Result<usize, String>> = HashMap::new();
    for f in scan.images {
        let (class, source) = match primary {
            Primary::Predicted => (None, ClassSource::Predicted),
            Primary::Given => {
                let Some(folder) = f.folders().first().map(|s| s.to_string()) else {
                    out.push(skip(
                        f.rel,
                        "not in a class folder (put it in <class>/, or pass --primary predicted)"
                            .into(),
                        false,
                    ));
                    continue;
                };
                let k = classes
                    .entry(folder.clone())
                    .or_insert_with(|| {
                        model
                            .class_index(&folder)
                            .map_err(|_| unknown_class(model, &folder, "folder"))
                    })
                    .clone();
                match k {
                    Ok(k) => (Some(k), ClassSource::Folder),
                    Err(reason) => {
                        out.push(skip(f.rel, reason, false));
                        continue;
                    }
                }
            }
        };
        out.push(Entry {
            rel: f.rel,
            work: Work::Image {
                path: f.path,
                class,
                source,
            },
        });
    }
    out.extend(
        scan.problems
            .into_iter()
            .map(|p| skip(p.rel, p.reason, p.ignored)),
    );
    Ok(out)
}

fn list_entries(csv: &Path, model: &MaxlModel, primary: Primary) -> Result<Vec<Entry>, LabelError> {
    let listed = read_list(csv, primary == Primary::Given)?;
    let mut first: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(listed.len());
    for l in listed {
        if let Some(origin) = first.get(&l.rel) {
            out.push(skip(
                l.rel,
                format!("{}: listed again (first at {origin})", l.origin),
                false,
            ));
            continue;
        }
        first.insert(l.rel.clone(), l.origin.clone());
        let (class, source) = match (primary, &l.label) {
            (Primary::Given, Some(label)) => match model.class_index(label) {
                Ok(k) => (Some(k), ClassSource::Csv),
                Err(_) => {
                    let reason = format!("{}: {}", l.origin, unknown_class(model, label, "label"));
                    out.push(skip(l.rel, reason, false));
                    continue;
                }
            },
            _ => (None, ClassSource::Predicted),
        };
        out.push(Entry {
            rel: l.rel,
            work: Work::Image {
                path: l.path,
                class,
                source,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_names_are_the_job_file_names() {
        for &p in Primary::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
            assert_eq!(Primary::from_name(p.name()), Some(p));
        }
        let names: Vec<&str> = Primary::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["given", "predicted"]);
    }
}
