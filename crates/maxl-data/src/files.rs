//! Datasets whose images stay in their files until a batch needs them.
//!
//! A dataset larger than memory keeps only its file list and labels ([`ImageFiles`] in
//! [`Dataset::files`](crate::Dataset::files)); [`Dataset::load`](crate::Dataset::load) decodes the
//! images a batch needs, in parallel on the current rayon pool, through the same
//! [`maxl_preprocess`] path and [`ImageShape`] as a dataset read whole into memory, so a streamed
//! batch is the same bytes as a resident one. Padding and channel replication asked of a
//! streamed dataset are recorded and applied to each image after it is decoded.

use std::path::PathBuf;

use maxl_preprocess::ImageShape;
use rayon::prelude::*;

use crate::DataError;
use crate::folder::load_image;

/// The files of a streamed dataset, one per image in the dataset's order, and how each becomes
/// the dataset's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFiles {
    /// One encoded image (PNG or JPEG) per dataset image.
    pub paths: Vec<PathBuf>,
    /// What each file is decoded to (before `pad` and channel replication).
    pub shape: ImageShape,
    /// Black pixels added on each side after decoding.
    pub pad: usize,
}

impl ImageFiles {
    /// Decodes image `i` into `out` (C × (H + 2·pad) × (W + 2·pad) bytes, C the dataset's
    /// channels, at least the decoded ones): the border stays 0, a grey image is replicated to
    /// every channel of `out`.
    pub(crate) fn decode_into(&self, i: usize, out: &mut [u8]) -> Result<(), DataError> {
        let px = load_image(&self.paths[i], self.shape)?;
        let (c0, h, w, p) = (
            self.shape.channels,
            self.shape.height,
            self.shape.width,
            self.pad,
        );
        let (ph, pw) = (h + 2 * p, w + 2 * p);
        let channels = out.len() / (ph * pw);
        if p == 0 && channels == c0 {
            out.copy_from_slice(&px);
            return Ok(());
        }
        out.fill(0);
        for c in 0..channels {
            let plane = &px[(c % c0) * h * w..][..h * w];
            let dst = &mut out[c * ph * pw..][..ph * pw];
            for (r, row) in plane.chunks_exact(w).enumerate() {
                dst[(r + p) * pw + p..][..w].copy_from_slice(row);
            }
        }
        Ok(())
    }

    /// Decodes the images at `indices` into `out`, `image_len` bytes each, in parallel on the
    /// current rayon pool. When files fail, the error is the first failing one in `indices`'
    /// order, whatever the threads' timing.
    pub(crate) fn decode_many(
        &self,
        indices: &[usize],
        image_len: usize,
        out: &mut [u8],
    ) -> Result<(), DataError> {
        if image_len == 0 {
            return Ok(());
        }
        let failed = out
            .par_chunks_mut(image_len)
            .zip(indices.par_iter())
            .enumerate()
            .filter_map(|(j, (dst, &i))| self.decode_into(i, dst).err().map(|e| (j, e)))
            .min_by_key(|(j, _)| *j);
        match failed {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::folder::{ImageShape, Resize, image_folder, image_folder_streamed};

    /// A folder of RGB PNGs whose pixels differ per image and per position.
    fn folder(root: &std::path::Path, n: usize) {
        for i in 0..n {
            let dir = root.join(["a", "b", "c"][i % 3]);
            std::fs::create_dir_all(&dir).unwrap();
            image::RgbImage::from_fn(7, 5, |x, y| {
                image::Rgb([(i * 20 + x as usize) as u8, (y * 30) as u8, 255 - i as u8])
            })
            .save(dir.join(format!("{i}.png")))
            .unwrap();
        }
    }

    #[test]
    fn streamed_images_decode_to_the_resident_bytes() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), 12);
        let shape = ImageShape {
            channels: 3,
            height: 4,
            width: 6,
            resize: Resize::Stretch,
        };
        let resident = image_folder(dir.path(), None, shape, 0.25, 1).unwrap();
        let streamed = image_folder_streamed(dir.path(), None, shape, 0.25, 1).unwrap();
        assert!(streamed.train.is_streamed() && streamed.train.pixels.is_empty());
        assert!(!resident.train.is_streamed());
        assert_eq!(streamed.decoded_bytes(), resident.decoded_bytes());
        assert_eq!(
            streamed.test.load(&[2, 0]).unwrap(),
            resident.test.subset(&[2, 0])
        );
        // Splits and subsets keep file lists in step with the labels.
        let (st, sv) = streamed.train.split_validation(0.3, 4);
        let (rt, rv) = resident.train.split_validation(0.3, 4);
        assert_eq!(sv.into_resident().unwrap(), rv);
        let sb = st.balanced_subset(4, 2);
        assert!(sb.is_streamed());
        assert_eq!(sb.into_resident().unwrap(), rt.balanced_subset(4, 2));
        // Padding and replication of grey images, recorded and applied per decoded image.
        let grey = ImageShape {
            channels: 1,
            ..shape
        };
        let mut s = image_folder_streamed(dir.path(), None, grey, 0.0, 0)
            .unwrap()
            .train;
        let mut r = image_folder(dir.path(), None, grey, 0.0, 0).unwrap().train;
        s.pad_and_replicate(2, 3).unwrap();
        r.pad_and_replicate(2, 3).unwrap();
        assert_eq!((s.channels, s.height, s.width), (3, 8, 10));
        assert_eq!(s.load(&[5, 1, 7]).unwrap(), r.subset(&[5, 1, 7]));
        assert_eq!(s.into_resident().unwrap(), r);
    }

    #[test]
    fn a_corrupt_file_fails_its_batch_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), 6);
        std::fs::write(dir.path().join("b/4.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
        std::fs::write(dir.path().join("a/3.png"), b"not an image at all").unwrap();
        let shape = ImageShape {
            channels: 3,
            height: 4,
            width: 4,
            resize: Resize::Stretch,
        };
        let ds = image_folder_streamed(dir.path(), None, shape, 0.0, 0)
            .unwrap()
            .train;
        // Files in order: a/0 a/3 b/1 b/4 c/2 c/5.
        assert!(ds.load(&[0, 2, 4]).is_ok(), "good files decode");
        for _ in 0..5 {
            // Both bad files in the batch: the first in the batch's order is named, every time.
            let e = ds.load(&[5, 3, 1, 0]).unwrap_err().to_string();
            assert!(e.contains("4.png") && !e.contains('\n'), "{e}");
        }
        let e = ds.into_resident().unwrap_err().to_string();
        assert!(
            e.contains("3.png") && e.contains("not a PNG or JPEG"),
            "{e}"
        );
    }
}
