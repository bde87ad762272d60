//! Datasets for maxl: readers that turn files on disk into [`Dataset`]s of 8-bit images with
//! primary (and, where the data has them, fine) labels, a seeded validation split, coarse
//! grouping, and batch assembly with the reference augmentation.
//!
//! Readers validate everything they read; every error names the file and the problem.

pub mod batch;
pub mod cifar;
pub mod idx;
pub mod images;
pub mod preprocess;
pub mod scan;

use std::path::PathBuf;

use maxl_core::config::CoarseGroup;
use maxl_core::hierarchy::folder_safe_name;

/// Why a dataset could not be read. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Images as 8-bit pixels, N × C × H × W, with labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
    /// Primary class of each image.
    pub labels: Vec<usize>,
    /// Fine class of each image, where the dataset has a coarse→fine hierarchy.
    pub fine_labels: Option<Vec<usize>>,
    /// Display names of the primary classes.
    pub class_names: Vec<String>,
    /// Display names of the fine classes, with `fine_labels`.
    pub fine_class_names: Option<Vec<String>>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Folder-safe names of the primary classes (used for slot names and output folders).
    pub fn safe_class_names(&self) -> Vec<String> {
        self.class_names
            .iter()
            .map(|n| folder_safe_name(n))
            .collect()
    }

    /// For each primary class, how many fine classes it contains (ψ of the `human` baseline).
    pub fn fine_per_class(&self) -> Option<Vec<usize>> {
        let fine = self.fine_labels.as_ref()?;
        let mut sets = vec![std::collections::BTreeSet::new(); self.num_classes()];
        for (&c, &f) in self.labels.iter().zip(fine) {
            sets[c].insert(f);
        }
        Some(sets.iter().map(|s| s.len()).collect())
    }

    /// Replaces the primary classes by coarse groups of them; the original classes become the
    /// fine labels. Every class must be in exactly one group.
    pub fn group_classes(&mut self, groups: &[CoarseGroup]) -> Result<(), DataError> {
        let k = self.num_classes();
        let mut group_of = vec![None; k];
        for (g, group) in groups.iter().enumerate() {
            for &c in &group.classes {
                let slot = group_of.get_mut(c).ok_or_else(|| {
                    DataError::Invalid(format!(
                        "coarse group `{}` names class {c}, but the dataset has {k} classes",
                        group.name
                    ))
                })?;
                *slot = Some(g);
            }
        }
        if let Some(c) = group_of.iter().position(Option::is_none) {
            return Err(DataError::Invalid(format!(
                "class {c} ({}) is in no coarse group",
                self.class_names[c]
            )));
        }
        let group_of: Vec<usize> = group_of.into_iter().map(Option::unwrap).collect();
        let fine = std::mem::take(&mut self.labels);
        self.labels = fine.iter().map(|&c| group_of[c]).collect();
        self.fine_labels = Some(fine);
        self.fine_class_names = Some(std::mem::take(&mut self.class_names));
        self.class_names = groups.iter().map(|g| g.name.clone()).collect();
        Ok(())
    }

    /// A new dataset with the images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            fine_labels: self
                .fine_labels
                .as_ref()
                .map(|f| indices.iter().map(|&i| f[i]).collect()),
            ..self.clone_meta()
        }
    }

    fn clone_meta(&self) -> Dataset {
        Dataset {
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels: Vec::new(),
            labels: Vec::new(),
            fine_labels: None,
            class_names: self.class_names.clone(),
            fine_class_names: self.fine_class_names.clone(),
        }
    }

    /// Splits off a seeded random `fraction` as a validation set: (train, validation).
    pub fn split_validation(&self, fraction: f64, seed: u64) -> (Dataset, Dataset) {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut order: Vec<usize> = (0..self.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        order.shuffle(&mut rng);
        let n_val = ((self.len() as f64) * fraction).round() as usize;
        let (val, train) = order.split_at(n_val.min(self.len()));
        let (mut train, mut val) = (train.to_vec(), val.to_vec());
        // Keep the original order inside each part: only membership is random.
        train.sort_unstable();
        val.sort_unstable();
        (self.subset(&train), self.subset(&val))
    }
}

/// Train and test parts of a dataset, as read from disk.
#[derive(Debug, Clone)]
pub struct TrainTest {
    pub train: Dataset,
    pub test: Dataset,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(labels: Vec<usize>) -> Dataset {
        Dataset {
            channels: 1,
            height: 1,
            width: 2,
            pixels: (0..labels.len() * 2).map(|v| v as u8).collect(),
            labels,
            fine_labels: None,
            class_names: vec!["a/b".into(), "c".into(), "d".into()],
            fine_class_names: None,
        }
    }

    #[test]
    fn grouping_moves_classes_to_fine_labels() {
        let mut d = toy(vec![0, 1, 2, 2]);
        let groups = vec![
            CoarseGroup {
                name: "x".into(),
                classes: vec![0, 2],
            },
            CoarseGroup {
                name: "y".into(),
                classes: vec![1],
            },
        ];
        d.group_classes(&groups).unwrap();
        assert_eq!(d.labels, vec![0, 1, 0, 0]);
        assert_eq!(d.fine_labels, Some(vec![0, 1, 2, 2]));
        assert_eq!(d.class_names, vec!["x", "y"]);
        assert_eq!(d.fine_per_class(), Some(vec![2, 1]));
        let mut d = toy(vec![0, 1]);
        let bad = vec![CoarseGroup {
            name: "x".into(),
            classes: vec![0, 1],
        }];
        let e = d.group_classes(&bad).unwrap_err().to_string();
        assert_eq!(e, "class 2 (d) is in no coarse group");
        let bad = vec![CoarseGroup {
            name: "x".into(),
            classes: vec![0, 1, 2, 9],
        }];
        assert!(
            d.group_classes(&bad)
                .unwrap_err()
                .to_string()
                .contains("class 9")
        );
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let d = toy((0..100).map(|i| i % 3).collect());
        let (t1, v1) = d.split_validation(0.2, 7);
        let (t2, v2) = d.split_validation(0.2, 7);
        let (_, v3) = d.split_validation(0.2, 8);
        assert_eq!((t1.len(), v1.len()), (80, 20));
        assert_eq!(v1, v2);
        assert_eq!(t1, t2);
        assert_ne!(v1.pixels, v3.pixels);
        let mut firsts: Vec<u8> = t1
            .pixels
            .iter()
            .step_by(2)
            .chain(v1.pixels.iter().step_by(2))
            .copied()
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..100).map(|i| (2 * i) as u8).collect::<Vec<_>>());
        assert_eq!(d.safe_class_names()[0], "a_b");
    }
}
