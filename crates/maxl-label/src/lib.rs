//! Labelling a folder of images with an exported label generator: every image in
//! `input/<class>/…` gets the auxiliary sub-class the generator assigns it within its class's ψ
//! slots. A bad item (an unreadable image, a folder that is not a class of the model) is
//! reported, counted and skipped; the run goes on.

use std::path::{Path, PathBuf};

use maxl_data::images::is_image;
use maxl_infer::{AuxFor, Classification, Classify, InferError, MaxlModel};
use maxl_infer_cli::record::{Record, csv_header};

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub path: PathBuf,
    pub result: Classification,
}

/// An item that could not be labelled, with the reason (one line that names the file).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub labelled: Vec<Labelled>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Infer(#[from] InferError),
}

/// Images under `input/<class>/` (sorted), with the class folder's name.
pub fn scan(input: &Path) -> Result<Vec<(PathBuf, String)>, LabelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LabelError::Io { path, source }
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(io(input))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut items = Vec::new();
    for d in dirs {
        let class = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(io(&d))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|f| (f, class.clone())));
    }
    Ok(items)
}

/// Labels `items` in batches of `batch`; `progress` is called with the number of items done.
pub fn label(
    model: &MaxlModel,
    items: &[(PathBuf, String)],
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, LabelError> {
    let mut report = Report::default();
    let mut done = 0;
    for chunk in items.chunks(batch.max(1)) {
        let mut pixels = Vec::new();
        let mut ok: Vec<(PathBuf, usize)> = Vec::new();
        for (path, folder) in chunk {
            let k = match model.class_index(folder) {
                Ok(k) => k,
                Err(e) => {
                    report.skipped.push(Skipped {
                        path: path.clone(),
                        reason: format!(
                            "{}: folder `{folder}` is not a class of the model: {e}",
                            path.display()
                        ),
                    });
                    continue;
                }
            };
            match model.preprocess_file(path) {
                Ok(p) => {
                    pixels.push(p);
                    ok.push((path.clone(), k));
                }
                Err(e) => report.skipped.push(Skipped {
                    path: path.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        if !ok.is_empty() {
            let x = model.stack(&pixels)?;
            let classes: Vec<usize> = ok.iter().map(|(_, k)| *k).collect();
            let out = model.classify(
                x.view(),
                &Classify {
                    top_k: 1,
                    aux: AuxFor::Given(&classes),
                },
            )?;
            for ((path, _), result) in ok.into_iter().zip(out) {
                report.labelled.push(Labelled { path, result });
            }
        }
        done += chunk.len();
        progress(done);
    }
    Ok(report)
}

/// The CSV text, with the columns of `maxl-infer predict`:
/// `path,class,class_probability,aux_slot,aux_label,aux_probability` (class: the folder's).
pub fn to_csv(model: &MaxlModel, report: &Report) -> String {
    let mut s = csv_header();
    for l in &report.labelled {
        let r = Record::new(model, Some(l.path.display().to_string()), &l.result);
        s.push_str(&r.csv_line());
    }
    s
}

/// Per class: images labelled and how many went to each of its slots.
pub fn summary(model: &MaxlModel, report: &Report) -> String {
    let h = model.hierarchy();
    let mut counts = vec![0usize; h.num_aux()];
    for l in &report.labelled {
        if let Some(a) = &l.result.aux {
            counts[a.slot] += 1;
        }
    }
    let mut s = String::new();
    for (k, c) in model.manifest().classes.iter().enumerate() {
        let per: Vec<String> = h.slots(k).map(|j| counts[j].to_string()).collect();
        let n: usize = h.slots(k).map(|j| counts[j]).sum();
        if n > 0 {
            s.push_str(&format!(
                "  {:<16} {n:>6} images, per slot: {}\n",
                c.name,
                per.join(" / ")
            ));
        }
    }
    s
}
