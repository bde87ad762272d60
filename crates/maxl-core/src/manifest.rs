//! The model manifest `maxl.yaml`, written next to the exported ONNX files: what the models are,
//! what they expect, what they output, how they were trained, and a SHA-256 of each file.
//! Anything that loads a model loads it through [`Manifest::load`], which refuses a manifest whose
//! hashes do not match the files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::arch::{InputSpec, PerChannel, Resize};
use crate::hierarchy::Hierarchy;

/// The manifest's file name inside a model directory.
pub const MANIFEST_FILE: &str = "maxl.yaml";
/// The manifest format this version reads and writes.
pub const FORMAT: u32 = 1;

/// Why a model directory's manifest or files were refused. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest or a model file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The manifest is not valid YAML, has another format, or contradicts itself.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A model file's SHA-256 is not the one the manifest records.
    #[error("{}: SHA-256 {actual} does not match {expected} recorded in {} (the file was changed or is corrupt)", file.display(), manifest.display())]
    HashMismatch {
        /// The model file.
        file: PathBuf,
        /// The manifest.
        manifest: PathBuf,
        /// The SHA-256 the manifest records, hex.
        expected: String,
        /// The file's SHA-256, hex.
        actual: String,
    },
}

/// A primary class: a folder-safe name (used in slot names and output folders) and the
/// dataset's display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassName {
    /// The folder-safe name (`T-shirt_top`).
    pub name: String,
    /// The dataset's name for the class (`T-shirt/top`).
    pub display: String,
}

/// What the `image` input expects. Pixels are scaled to `pixel_range` (8-bit value / 255);
/// the (x − mean) / std normalisation happens inside the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestInput {
    /// The tensor layout, `NCHW`.
    pub layout: String,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows, pixels.
    pub height: usize,
    /// Columns, pixels.
    pub width: usize,
    /// The range input pixels are scaled to, `[0, 1]`.
    pub pixel_range: [f32; 2],
    /// Where the mean/std normalisation happens: `in-graph`.
    pub normalisation: String,
    /// The normalisation's mean (applied inside the graph): one value, or one per channel.
    pub mean: PerChannel,
    /// The normalisation's std (applied inside the graph): one value, or one per channel.
    pub std: PerChannel,
    /// How an image is brought to `height` × `width` before it becomes `image` (absent:
    /// stretched).
    #[serde(
        default,
        skip_serializing_if = "Resize::is_stretch",
        with = "serde_yaml_ng::with::singleton_map"
    )]
    pub resize: Resize,
}

impl ManifestInput {
    /// What a network with this input expects: NCHW pixels in [0, 1], normalised in the graph.
    pub fn of_spec(i: &InputSpec) -> Self {
        ManifestInput {
            layout: "NCHW".into(),
            channels: i.channels,
            height: i.height,
            width: i.width,
            pixel_range: [0.0, 1.0],
            normalisation: "in-graph".into(),
            mean: i.mean.clone(),
            std: i.std.clone(),
            resize: i.resize,
        }
    }

    /// The input as the architecture describes it.
    pub fn spec(&self) -> InputSpec {
        InputSpec {
            channels: self.channels,
            height: self.height,
            width: self.width,
            mean: self.mean.clone(),
            std: self.std.clone(),
            resize: self.resize,
        }
    }
}

/// One ONNX file of the model directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// The file, relative to the model directory.
    pub path: String,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// The graph's input names, in order.
    pub inputs: Vec<String>,
    /// The graph's output names.
    pub outputs: Vec<String>,
}

/// The model directory's ONNX files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestModels {
    /// The multi-task network (`primary.onnx`).
    pub primary: ModelFile,
    /// Absent for baselines without a label generator.
    pub label_generator: Option<ModelFile>,
}

/// How the exported weights were trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    /// The training method (`maxl`, `single`, …).
    pub method: String,
    /// The MAXL schedule (`reference`, `fused`, …).
    pub schedule: String,
    /// The architecture preset or description.
    pub architecture: String,
    /// The label generator's architecture, when it is not the multi-task network's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_architecture: Option<String>,
    /// The dataset trained on.
    pub dataset: String,
    /// Epochs trained.
    pub epochs: usize,
    /// The training seed.
    pub seed: u64,
    /// The primary task's accuracy on the test set, when measured.
    pub primary_test_accuracy: Option<f64>,
}

/// The model manifest `maxl.yaml`: everything needed to load and use the exported graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format ([`FORMAT`]).
    pub format: u32,
    /// The program that wrote it, with its version.
    pub producer: String,
    /// The ONNX opset of the graphs.
    pub opset: i64,
    /// ψ: the number of auxiliary classes of each primary class.
    pub psi: Vec<usize>,
    /// The primary classes, in label order.
    pub classes: Vec<ClassName>,
    /// The auxiliary slot names (`<class>.<k>`), Σψ of them, in slot order.
    pub aux_slots: Vec<String>,
    /// What the `image` input expects.
    pub input: ManifestInput,
    /// The ONNX files.
    pub models: ManifestModels,
    /// How the weights were trained.
    pub training: TrainingSummary,
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(sha256_bytes(&std::fs::read(path)?))
}

/// SHA-256 of bytes, lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Manifest {
    /// The hierarchy the models were exported with.
    pub fn hierarchy(&self) -> Result<Hierarchy, String> {
        Hierarchy::new(self.psi.clone()).map_err(|e| e.to_string())
    }

    fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "manifest format {} (this maxl reads {FORMAT})",
                self.format
            ));
        }
        let h = self.hierarchy()?;
        if self.classes.len() != h.num_primary() {
            return Err(format!(
                "{} classes but ψ has {} entries",
                self.classes.len(),
                h.num_primary()
            ));
        }
        if self.aux_slots.len() != h.num_aux() {
            return Err(format!(
                "{} auxiliary slot names but ψ sums to {}",
                self.aux_slots.len(),
                h.num_aux()
            ));
        }
        self.input
            .spec()
            .validate()
            .map_err(|e| format!("input: {e}"))
    }

    /// Reads `dir/maxl.yaml` and validates it, without reading the model files.
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let invalid = |message: String| ManifestError::Invalid {
            path: path.clone(),
            message,
        };
        let m: Manifest = serde_yaml_ng::from_str(&text).map_err(|e| {
            invalid(
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })?;
        m.validate().map_err(invalid)?;
        Ok(m)
    }

    /// Reads one of the manifest's model files and checks its SHA-256: the bytes returned are
    /// the bytes that were hashed, so a caller that loads them loads exactly what was verified.
    pub fn read_model_file(&self, dir: &Path, f: &ModelFile) -> Result<Vec<u8>, ManifestError> {
        let file = dir.join(&f.path);
        let bytes = std::fs::read(&file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        let actual = sha256_bytes(&bytes);
        if actual != f.sha256 {
            return Err(ManifestError::HashMismatch {
                file,
                manifest: dir.join(MANIFEST_FILE),
                expected: f.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Reads `dir/maxl.yaml`, validates it, and checks each model file's SHA-256.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let m = Self::read(dir)?;
        for f in std::iter::once(&m.models.primary).chain(m.models.label_generator.as_ref()) {
            m.read_model_file(dir, f)?;
        }
        Ok(m)
    }

    /// The manifest as YAML, as `maxl.yaml` holds it.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a Manifest always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(dir: &Path) -> Manifest {
        std::fs::write(dir.join("primary.onnx"), b"model bytes").unwrap();
        Manifest {
            format: FORMAT,
            producer: "maxl-train test".into(),
            opset: 17,
            psi: vec![2, 1],
            classes: vec![
                ClassName {
                    name: "T-shirt_top".into(),
                    display: "T-shirt/top".into(),
                },
                ClassName {
                    name: "Bag".into(),
                    display: "Bag".into(),
                },
            ],
            aux_slots: vec![
                "T-shirt_top.0".into(),
                "T-shirt_top.1".into(),
                "Bag.0".into(),
            ],
            input: ManifestInput {
                layout: "NCHW".into(),
                channels: 1,
                height: 28,
                width: 28,
                pixel_range: [0.0, 1.0],
                normalisation: "in-graph".into(),
                mean: 0.5.into(),
                std: 0.2.into(),
                resize: Default::default(),
            },
            models: ManifestModels {
                primary: ModelFile {
                    path: "primary.onnx".into(),
                    sha256: sha256_file(&dir.join("primary.onnx")).unwrap(),
                    inputs: vec!["image".into()],
                    outputs: vec!["primary_probs".into()],
                },
                label_generator: None,
            },
            training: TrainingSummary {
                method: "maxl".into(),
                schedule: "interleaved".into(),
                architecture: "small".into(),
                generator_architecture: None,
                dataset: "fashion-mnist".into(),
                epochs: 3,
                seed: 0,
                primary_test_accuracy: Some(0.87),
            },
        }
    }

    #[test]
    fn round_trips_and_verifies_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample(dir.path());
        std::fs::write(dir.path().join(MANIFEST_FILE), m.to_yaml()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        assert_eq!(
            sha256_file(&dir.path().join("primary.onnx")).unwrap().len(),
            64
        );
        std::fs::write(dir.path().join("primary.onnx"), b"model bytez").unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("primary.onnx: SHA-256")
                && e.contains("does not match")
                && e.contains("maxl.yaml"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("primary.onnx")).unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("primary.onnx: cannot read"), "{e}");
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample(dir.path());
        m.aux_slots.pop();
        std::fs::write(dir.path().join(MANIFEST_FILE), m.to_yaml()).unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("maxl.yaml") && e.contains("2 auxiliary slot names but ψ sums to 3"),
            "{e}"
        );
        std::fs::write(dir.path().join(MANIFEST_FILE), "format: 1\npsi: [oops\n").unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("maxl.yaml") && !e.contains('\n'), "{e}");
        let e = Manifest::load(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nowhere/maxl.yaml: cannot read"), "{e}");
    }
}
