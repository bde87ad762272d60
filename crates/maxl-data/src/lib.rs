//! Datasets for maxl: readers that turn files on disk into [`Dataset`]s of 8-bit images with
//! primary (and, where the data has them, fine) labels, a seeded validation split, coarse
//! grouping, and batch assembly with the reference augmentation or random resized crops. Image
//! folders and CSV lists can also stay in their files, decoded a batch at a time ([`files`]).
//!
//! Readers validate everything they read; every error names the file and the problem.

#![warn(missing_docs)]

pub mod batch;
pub mod cifar;
pub mod dump;
pub mod files;
pub mod folder;
pub mod idx;
pub mod resized_crop;
pub mod scan;

use std::path::PathBuf;

use maxl_core::config::CoarseGroup;
use maxl_core::hierarchy::folder_safe_name;

use crate::files::ImageFiles;

/// Why a dataset could not be read. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder that cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// A file whose content is not what its format says (truncated, corrupt, wrong layout).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file (or folder, for a folder layout).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Data that is readable but unusable together (an unknown class, a bad grouping).
    #[error("{0}")]
    Invalid(String),
}

/// Images as 8-bit pixels, N × C × H × W, with labels: held in memory (`pixels`), or streamed
/// from their files (`files`), decoded a batch at a time by [`Dataset::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Channels per image: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows per image, pixels.
    pub height: usize,
    /// Columns per image, pixels.
    pub width: usize,
    /// Every image's pixels in turn, channel-first (N × C × H × W values); empty for a streamed
    /// dataset.
    pub pixels: Vec<u8>,
    /// Primary class of each image.
    pub labels: Vec<usize>,
    /// Fine class of each image, where the dataset has a coarse→fine hierarchy.
    pub fine_labels: Option<Vec<usize>>,
    /// Display names of the primary classes.
    pub class_names: Vec<String>,
    /// Display names of the fine classes, with `fine_labels`.
    pub fine_class_names: Option<Vec<String>>,
    /// Where a streamed dataset's images are read from, one file per image; None when the
    /// pixels are in memory.
    pub files: Option<ImageFiles>,
}

impl Dataset {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The number of primary classes (K).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Values per image (C × H × W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the images stay in their files ([`Dataset::files`]) instead of `pixels`.
    pub fn is_streamed(&self) -> bool {
        self.files.is_some()
    }

    /// Bytes the decoded images take (N × C × H × W), whether or not they are in memory.
    pub fn decoded_bytes(&self) -> usize {
        self.len() * self.image_len()
    }

    /// Image `i`'s pixels, channel-first. A streamed dataset has none in memory: take them
    /// from [`Dataset::load`] (this panics on one).
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

    /// A new dataset with the images at `indices`, in that order (streamed when this one is:
    /// only the file list is subset).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.image_len();
        let mut pixels = Vec::new();
        if !self.is_streamed() {
            pixels.reserve(indices.len() * n);
            for &i in indices {
                pixels.extend_from_slice(self.image(i));
            }
        }
        Dataset {
            pixels,
            files: self.files.as_ref().map(|f| ImageFiles {
                paths: indices.iter().map(|&i| f.paths[i].clone()).collect(),
                shape: f.shape,
                pad: f.pad,
            }),
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
            files: None,
        }
    }

    /// The images at `indices`, in that order, as a dataset in memory: a streamed dataset's
    /// files are decoded (in parallel, on the current rayon pool) exactly as a dataset read whole
    /// would have them; an error names the first file in `indices` that cannot be read.
    pub fn load(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        let Some(files) = &self.files else {
            return Ok(self.subset(indices));
        };
        let n = self.image_len();
        let mut pixels = vec![0u8; indices.len() * n];
        files.decode_many(indices, n, &mut pixels)?;
        Ok(Dataset {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            fine_labels: self
                .fine_labels
                .as_ref()
                .map(|f| indices.iter().map(|&i| f[i]).collect()),
            ..self.clone_meta()
        })
    }

    /// The dataset with every image in memory (a streamed one decoded whole, see
    /// [`Dataset::load`]).
    pub fn into_resident(self) -> Result<Dataset, DataError> {
        if !self.is_streamed() {
            return Ok(self);
        }
        let all: Vec<usize> = (0..self.len()).collect();
        self.load(&all)
    }

    /// A seeded, class-balanced subset of `n` images: the images are spread as evenly as
    /// possible over the classes (the fine classes where the dataset has them, so a coarse
    /// grouping keeps every original class), each class's share drawn at random without
    /// replacement. A class with fewer images than its share gives all of them and the rest is
    /// spread over the others. The subset keeps the dataset's order.
    pub fn balanced_subset(&self, n: usize, seed: u64) -> Dataset {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        if n >= self.len() {
            return self.clone();
        }
        let strata = self.fine_labels.as_ref().unwrap_or(&self.labels);
        let k = strata.iter().max().map_or(0, |&m| m + 1);
        let mut members = vec![Vec::new(); k];
        for (i, &c) in strata.iter().enumerate() {
            members[c].push(i);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xBA1A_4CED);
        for m in &mut members {
            m.shuffle(&mut rng);
        }
        // Water-filling: classes smaller than the fair share give all their images.
        let mut take = vec![0usize; k];
        let mut left = n;
        let mut open: Vec<usize> = (0..k).filter(|&c| !members[c].is_empty()).collect();
        open.sort_by_key(|&c| members[c].len());
        while left > 0 && !open.is_empty() {
            let share = left / open.len();
            let extra = left % open.len();
            let c = open[0];
            let available = members[c].len() - take[c];
            if available <= share {
                take[c] += available;
                left -= available;
                open.remove(0);
                continue;
            }
            // Every open class can give its share: the remainder goes to the lowest class ids.
            let mut by_id = open.clone();
            by_id.sort_unstable();
            for (j, &c) in by_id.iter().enumerate() {
                take[c] += share + usize::from(j < extra);
            }
            left = 0;
        }
        let mut chosen: Vec<usize> = members
            .iter()
            .zip(&take)
            .flat_map(|(m, &t)| m[..t].iter().copied())
            .collect();
        chosen.sort_unstable();
        self.subset(&chosen)
    }

    /// Pads every image with `pad` black pixels on each side and, with `channels` > the
    /// dataset's single channel, replicates the grey channel (Fashion-MNIST for a model that
    /// expects 3×32×32 input).
    pub fn pad_and_replicate(&mut self, pad: usize, channels: usize) -> Result<(), DataError> {
        if channels != self.channels && self.channels != 1 {
            return Err(DataError::Invalid(format!(
                "only single-channel images can be replicated to {channels} channels; these have {}",
                self.channels
            )));
        }
        if pad == 0 && channels == self.channels {
            return Ok(());
        }
        let (h, w) = (self.height + 2 * pad, self.width + 2 * pad);
        if let Some(files) = &mut self.files {
            // Applied to each image as it is decoded (ImageFiles::decode_into).
            files.pad += pad;
            (self.channels, self.height, self.width) = (channels, h, w);
            return Ok(());
        }
        let mut out = vec![0u8; self.len() * channels * h * w];
        for i in 0..self.len() {
            let src = self.image(i);
            for c in 0..channels {
                let plane = &src[(c % self.channels) * self.height * self.width..];
                let dst = &mut out[(i * channels + c) * h * w..];
                for r in 0..self.height {
                    let row = &plane[r * self.width..(r + 1) * self.width];
                    dst[(r + pad) * w + pad..(r + pad) * w + pad + self.width].copy_from_slice(row);
                }
            }
        }
        self.pixels = out;
        self.channels = channels;
        self.height = h;
        self.width = w;
        Ok(())
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
    /// The training images (the validation split is taken from these).
    pub train: Dataset,
    /// The test images, never trained on.
    pub test: Dataset,
}

impl TrainTest {
    /// Both parts with every image in memory (see [`Dataset::into_resident`]); the training
    /// images are decoded first, so a bad file among them is the one named.
    pub fn into_resident(self) -> Result<TrainTest, DataError> {
        Ok(TrainTest {
            train: self.train.into_resident()?,
            test: self.test.into_resident()?,
        })
    }

    /// Bytes both parts take decoded.
    pub fn decoded_bytes(&self) -> usize {
        self.train.decoded_bytes() + self.test.decoded_bytes()
    }
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
            files: None,
        }
    }

    fn counts(d: &Dataset, k: usize) -> Vec<usize> {
        let mut c = vec![0; k];
        for &l in &d.labels {
            c[l] += 1;
        }
        c
    }

    #[test]
    fn balanced_subsets_are_seeded_and_spread_over_classes() {
        // Class-sorted, as an image folder is: the first N images would be class 0 only.
        let labels: Vec<usize> = (0..3).flat_map(|c| vec![c; [50, 4, 50][c]]).collect();
        let d = toy(labels);
        let s = d.balanced_subset(30, 7);
        assert_eq!(counts(&s, 3), vec![13, 4, 13], "class 1 gives all it has");
        let s = d.balanced_subset(31, 7);
        assert_eq!(
            counts(&s, 3),
            vec![14, 4, 13],
            "remainder to the lowest class id"
        );
        assert_eq!(s, d.balanced_subset(31, 7), "same seed, same subset");
        assert_ne!(
            s,
            d.balanced_subset(31, 8),
            "another seed draws other images"
        );
        // Original order kept: pixel values (2 per image, increasing) stay increasing.
        assert!(s.pixels.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(d.balanced_subset(1000, 7), d);
        // Coarse groups balance over the fine classes.
        let mut g = toy((0..3).flat_map(|c| vec![c; 20]).collect());
        g.group_classes(&[
            CoarseGroup {
                name: "x".into(),
                classes: vec![0, 2],
            },
            CoarseGroup {
                name: "y".into(),
                classes: vec![1],
            },
        ])
        .unwrap();
        let s = g.balanced_subset(9, 0);
        let mut fine = [0; 3];
        for &f in s.fine_labels.as_ref().unwrap() {
            fine[f] += 1;
        }
        assert_eq!(fine, [3, 3, 3]);
    }

    #[test]
    fn padding_and_channel_replication() {
        let mut d = Dataset {
            channels: 1,
            height: 2,
            width: 2,
            pixels: vec![1, 2, 3, 4, 5, 6, 7, 8],
            labels: vec![0, 1],
            fine_labels: None,
            class_names: vec!["a".into(), "b".into()],
            fine_class_names: None,
            files: None,
        };
        d.pad_and_replicate(1, 3).unwrap();
        assert_eq!((d.channels, d.height, d.width, d.len()), (3, 4, 4, 2));
        #[rustfmt::skip]
        let plane = [0, 0, 0, 0,
                     0, 5, 6, 0,
                     0, 7, 8, 0,
                     0, 0, 0, 0];
        for c in 0..3 {
            assert_eq!(&d.image(1)[c * 16..(c + 1) * 16], &plane);
        }
        assert!(
            d.pad_and_replicate(0, 1).is_err(),
            "3 channels cannot become 1"
        );
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
