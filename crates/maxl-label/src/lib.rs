//! Labelling a folder of images with an exported label generator: every image in
//! `input/<class>/…` gets the auxiliary sub-class the generator assigns it within its class's ψ
//! slots. A bad item (an unreadable image, a folder that is not a class of the model) is
//! reported, counted and skipped; the run goes on.

use std::path::{Path, PathBuf};

use maxl_data::images::{ImageShape, is_image, load_image};
use maxl_infer::{InferError, MaxlModel};
use ndarray::{Array1, Array4};

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub path: PathBuf,
    pub class: usize,
    pub slot: usize,
    pub probability: f32,
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
    model: &mut MaxlModel,
    items: &[(PathBuf, String)],
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, LabelError> {
    let i = &model.manifest.input;
    let shape = ImageShape {
        channels: i.channels,
        height: i.height,
        width: i.width,
    };
    let classes = model.manifest.classes.clone();
    let mut report = Report::default();
    let mut done = 0;
    for chunk in items.chunks(batch.max(1)) {
        let mut pixels = Vec::new();
        let mut ok: Vec<(PathBuf, usize)> = Vec::new();
        for (path, folder) in chunk {
            let Some(k) = classes
                .iter()
                .position(|c| c.name == *folder || c.display == *folder)
            else {
                report.skipped.push(Skipped {
                    path: path.clone(),
                    reason: format!(
                        "{}: folder `{folder}` is not a class of the model ({} classes: {})",
                        path.display(),
                        classes.len(),
                        classes
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
                continue;
            };
            match load_image(path, shape) {
                Ok(p) => {
                    pixels.extend(p.into_iter().map(|v| v as f32 / 255.0));
                    ok.push((path.clone(), k));
                }
                Err(e) => report.skipped.push(Skipped {
                    path: path.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        if !ok.is_empty() {
            let x = Array4::from_shape_vec(
                (ok.len(), shape.channels, shape.height, shape.width),
                pixels,
            )
            .expect("decoded to the model's shape");
            let y = Array1::from_iter(ok.iter().map(|(_, k)| *k as i64));
            let out = model.generate_labels(x.view(), y.view())?;
            for (j, (path, k)) in ok.into_iter().enumerate() {
                let slot = out.slots[j] as usize;
                report.labelled.push(Labelled {
                    path,
                    class: k,
                    slot,
                    probability: out.probs[[j, slot]],
                });
            }
        }
        done += chunk.len();
        progress(done);
    }
    Ok(report)
}

/// The CSV text: `path,class,aux_slot,aux_label,probability`.
pub fn to_csv(model: &MaxlModel, report: &Report) -> String {
    let mut s = String::from("path,class,aux_slot,aux_label,probability\n");
    for l in &report.labelled {
        let path = l.path.display().to_string();
        let path = if path.contains(',') || path.contains('"') {
            format!("\"{}\"", path.replace('"', "\"\""))
        } else {
            path
        };
        s.push_str(&format!(
            "{path},{},{},{},{:.6}\n",
            model.manifest.classes[l.class].name,
            l.slot,
            model.manifest.aux_slots[l.slot],
            l.probability
        ));
    }
    s
}

/// Per class: images labelled and how many went to each of its slots.
pub fn summary(model: &MaxlModel, report: &Report) -> String {
    let h = model.manifest.hierarchy().expect("validated manifest");
    let mut counts = vec![0usize; h.num_aux()];
    for l in &report.labelled {
        counts[l.slot] += 1;
    }
    let mut s = String::new();
    for (k, c) in model.manifest.classes.iter().enumerate() {
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
