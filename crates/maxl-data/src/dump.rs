//! Writing a dataset back out as an image folder, the layout [`crate::folder::image_folder`]
//! reads (for a quick look at the data, or test images for `maxl-infer` and `maxl-label`).

use std::path::Path;

use crate::{DataError, Dataset};

/// Writes up to `per_class` images of each class as `out/<folder-safe class>/<index>.png`
/// (index = position in the dataset). Returns how many were written.
/// A streamed dataset is refused: its images are already files.
pub fn write_image_folder(ds: &Dataset, out: &Path, per_class: usize) -> Result<usize, DataError> {
    if ds.is_streamed() {
        return Err(DataError::Invalid(
            "the dataset is streamed from image files; read it into memory (Dataset::into_resident) to write it again".into(),
        ));
    }
    let names = ds.safe_class_names();
    let mut written = vec![0usize; names.len()];
    for i in 0..ds.len() {
        let k = ds.labels[i];
        if written[k] >= per_class {
            continue;
        }
        let dir = out.join(&names[k]);
        std::fs::create_dir_all(&dir).map_err(|source| DataError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{i}.png"));
        let (w, h, px) = (ds.width as u32, ds.height as u32, ds.image(i));
        let plane = ds.width * ds.height;
        let saved = match ds.channels {
            1 => image::GrayImage::from_raw(w, h, px.to_vec()).map(|im| im.save(&path)),
            3 => image::RgbImage::from_fn(w, h, |x, y| {
                let o = y as usize * ds.width + x as usize;
                image::Rgb([px[o], px[plane + o], px[2 * plane + o]])
            })
            .save(&path)
            .into(),
            c => {
                return Err(DataError::Invalid(format!(
                    "cannot write {c}-channel images as PNG"
                )));
            }
        };
        match saved {
            Some(Ok(())) => written[k] += 1,
            Some(Err(e)) => {
                return Err(DataError::Format {
                    path,
                    message: e.to_string(),
                });
            }
            None => return Err(DataError::Invalid("image buffer has the wrong size".into())),
        }
    }
    Ok(written.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::{ImageShape, image_folder};

    #[test]
    fn a_written_folder_reads_back_as_the_same_images() {
        let ds = Dataset {
            channels: 3,
            height: 2,
            width: 2,
            pixels: (0..3 * 12).map(|v| (v * 7) as u8).collect(),
            labels: vec![0, 1, 0],
            fine_labels: None,
            class_names: vec!["T-shirt/top".into(), "Bag".into()],
            fine_class_names: None,
            files: None,
        };
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_image_folder(&ds, dir.path(), 1).unwrap(), 2);
        assert!(dir.path().join("T-shirt_top/0.png").is_file());
        assert!(
            !dir.path().join("T-shirt_top/2.png").exists(),
            "one per class"
        );
        let shape = ImageShape {
            channels: 3,
            height: 2,
            width: 2,
            resize: crate::folder::Resize::Stretch,
        };
        let back = image_folder(dir.path(), None, shape, 0.0, 0).unwrap().train;
        assert_eq!(back.class_names, ["Bag", "T-shirt_top"]);
        assert_eq!(back.image(0), ds.image(1));
        assert_eq!(back.image(1), ds.image(0));
    }
}
