//! Image files as training data: an image folder (`root/<class>/*` or `root/<coarse>/<fine>/*`)
//! and a CSV list (`path,label[,fine_label]`), each read into a train and a test [`Dataset`].
//!
//! Images (PNG, JPEG) go through [`maxl_preprocess`], the same path inference uses. A file that
//! cannot be decoded is an error naming it. The `*_streamed` readers list the files without
//! decoding them (a dataset larger than memory, see [`crate::files`]); the others decode every
//! image up front.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use maxl_preprocess::{DecodeLimits, ImageError, preprocess_file};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::files::ImageFiles;
use crate::scan::{read_list, scan_images};
use crate::{DataError, Dataset, TrainTest};

pub use maxl_preprocess::{ImageShape, Resize};

/// Decodes `path` into channel-first u8 pixels of `shape` through the one preprocessing path
/// ([`maxl_preprocess`]) with the default decode limits.
pub fn load_image(path: &Path, shape: ImageShape) -> Result<Vec<u8>, DataError> {
    preprocess_file(path, shape, &DecodeLimits::default()).map_err(|e| match e {
        ImageError::Io(source) => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
        e => DataError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// One labelled image before decoding.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    class: String,
    fine: Option<String>,
    /// Where the label came from, for errors (a folder or `file:line`).
    origin: String,
}

/// Lists `root/<class>/*` or `root/<coarse>/<fine>/*` through the shared walker
/// ([`crate::scan`]); anything it cannot read is an error naming it.
fn scan_folder(root: &Path) -> Result<Vec<Item>, DataError> {
    let scan = scan_images(root)?;
    if let Some(p) = scan.first_error() {
        return Err(DataError::Format {
            path: p.path.clone(),
            message: p.reason.clone(),
        });
    }
    let bad = |message: String| DataError::Format {
        path: root.to_path_buf(),
        message,
    };
    let mut items = Vec::with_capacity(scan.images.len());
    let mut nested = None;
    for found in scan.images {
        let folders = found.folders();
        let this_nested = match folders.len() {
            0 => {
                return Err(bad(format!(
                    "image {} lies directly in the root; put images in one folder per class",
                    found.rel
                )));
            }
            1 => false,
            2 => true,
            _ => {
                return Err(DataError::Format {
                    path: found.path,
                    message: "lies deeper than root/<coarse>/<fine>/".into(),
                });
            }
        };
        if *nested.get_or_insert(this_nested) != this_nested {
            return Err(bad(format!(
                "mixes root/<class>/… and root/<coarse>/<fine>/… layouts (at {})",
                found.rel
            )));
        }
        let class = folders[0].to_string();
        let fine = folders.get(1).map(|f| format!("{class}/{f}"));
        let origin = found.path.parent().unwrap_or(root).display().to_string();
        items.push(Item {
            path: found.path,
            class,
            fine,
            origin,
        });
    }
    if items.is_empty() {
        return Err(bad(
            "no PNG or JPEG images in class folders (expected root/<class>/… or root/<coarse>/<fine>/…)"
                .into(),
        ));
    }
    Ok(items)
}

/// Reads a `path,label[,fine_label]` list through the shared reader ([`crate::scan::read_list`]).
fn scan_csv(csv: &Path) -> Result<Vec<Item>, DataError> {
    let items: Vec<Item> = read_list(csv, true)?
        .into_iter()
        .map(|l| Item {
            path: l.path,
            class: l.label.unwrap_or_default(),
            fine: l.fine,
            origin: l.origin,
        })
        .collect();
    if items.iter().any(|it| it.fine.is_some()) && items.iter().any(|it| it.fine.is_none()) {
        return Err(DataError::Format {
            path: csv.to_path_buf(),
            message: "some lines have a fine label and some do not".into(),
        });
    }
    Ok(items)
}

/// A streamed dataset of the items with the given class lists (nothing decoded yet); an item
/// whose class is not listed is an error naming where it came from.
fn build(
    items: &[Item],
    classes: &[String],
    fines: Option<&[String]>,
    shape: ImageShape,
) -> Result<Dataset, DataError> {
    let mut labels = Vec::with_capacity(items.len());
    let mut fine_labels = fines.map(|_| Vec::with_capacity(items.len()));
    for it in items {
        let k = classes.iter().position(|c| *c == it.class).ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: class `{}` is not among the training classes {classes:?}",
                it.origin, it.class
            ))
        })?;
        labels.push(k);
        if let (Some(fines), Some(out)) = (fines, fine_labels.as_mut()) {
            let f = it.fine.as_deref().unwrap_or("");
            let j = fines.iter().position(|c| c == f).ok_or_else(|| {
                DataError::Invalid(format!(
                    "{}: fine class `{f}` is not among the training fine classes",
                    it.origin
                ))
            })?;
            out.push(j);
        }
    }
    Ok(Dataset {
        channels: shape.channels,
        height: shape.height,
        width: shape.width,
        pixels: Vec::new(),
        labels,
        fine_labels,
        class_names: classes.to_vec(),
        fine_class_names: fines.map(<[String]>::to_vec),
        files: Some(ImageFiles {
            paths: items.iter().map(|it| it.path.clone()).collect(),
            shape,
            pad: 0,
        }),
    })
}

/// Streamed train and test sets from scanned items: the test items come from `test` when given,
/// else a seeded `test_fraction` of the training items is held out.
fn train_test(
    train_items: Vec<Item>,
    test_items: Option<Vec<Item>>,
    shape: ImageShape,
    test_fraction: f64,
    seed: u64,
) -> Result<TrainTest, DataError> {
    let classes: Vec<String> = train_items
        .iter()
        .map(|i| i.class.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let fines: Option<Vec<String>> = train_items
        .iter()
        .map(|i| i.fine.clone())
        .collect::<Option<BTreeSet<_>>>()
        .map(|s| s.into_iter().collect());
    let (train_items, test_items) = match test_items {
        Some(t) => (train_items, t),
        None => {
            let mut order: Vec<usize> = (0..train_items.len()).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x7E57));
            let n_test = ((train_items.len() as f64) * test_fraction).round() as usize;
            let mut test_idx: Vec<usize> = order[..n_test].to_vec();
            test_idx.sort_unstable();
            let test: Vec<Item> = test_idx.iter().map(|&i| train_items[i].clone()).collect();
            let keep: BTreeSet<usize> = test_idx.into_iter().collect();
            let train = train_items
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !keep.contains(i))
                .map(|(_, it)| it)
                .collect();
            (train, test)
        }
    };
    Ok(TrainTest {
        train: build(&train_items, &classes, fines.as_deref(), shape)?,
        test: build(&test_items, &classes, fines.as_deref(), shape)?,
    })
}

/// An image folder, decoded into memory; `test_root` is a second folder with the same layout.
pub fn image_folder(
    root: &Path,
    test_root: Option<&Path>,
    shape: ImageShape,
    test_fraction: f64,
    seed: u64,
) -> Result<TrainTest, DataError> {
    image_folder_streamed(root, test_root, shape, test_fraction, seed)?.into_resident()
}

/// An image folder as streamed datasets: the files are listed and labelled, not decoded
/// (see [`image_folder`] for the arguments).
pub fn image_folder_streamed(
    root: &Path,
    test_root: Option<&Path>,
    shape: ImageShape,
    test_fraction: f64,
    seed: u64,
) -> Result<TrainTest, DataError> {
    let train = scan_folder(root)?;
    let test = test_root.map(scan_folder).transpose()?;
    train_test(train, test, shape, test_fraction, seed)
}

/// A CSV list, decoded into memory; `test_csv` is a second list.
pub fn csv_list(
    csv: &Path,
    test_csv: Option<&Path>,
    shape: ImageShape,
    test_fraction: f64,
    seed: u64,
) -> Result<TrainTest, DataError> {
    csv_list_streamed(csv, test_csv, shape, test_fraction, seed)?.into_resident()
}

/// A CSV list as streamed datasets: the files are listed and labelled, not decoded (see
/// [`csv_list`] for the arguments).
pub fn csv_list_streamed(
    csv: &Path,
    test_csv: Option<&Path>,
    shape: ImageShape,
    test_fraction: f64,
    seed: u64,
) -> Result<TrainTest, DataError> {
    let train = scan_csv(csv)?;
    let test = test_csv.map(scan_csv).transpose()?;
    train_test(train, test, shape, test_fraction, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: ImageShape = ImageShape {
        channels: 1,
        height: 4,
        width: 4,
        resize: Resize::Stretch,
    };

    fn png(path: &Path, v: u8, size: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(size, size, image::Luma([v]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn decodes_resizes_and_converts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jpg");
        image::RgbImage::from_pixel(10, 6, image::Rgb([200, 100, 50]))
            .save(&p)
            .unwrap();
        let rgb = load_image(
            &p,
            ImageShape {
                channels: 3,
                height: 3,
                width: 5,
                resize: Resize::Stretch,
            },
        )
        .unwrap();
        assert_eq!(rgb.len(), 45);
        assert!(
            (rgb[0] as i32 - 200).abs() <= 3
                && (rgb[15] as i32 - 100).abs() <= 3
                && (rgb[30] as i32 - 50).abs() <= 3
        );
        let grey = load_image(&p, GREY).unwrap();
        assert_eq!(grey.len(), 16);
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = load_image(&bad, GREY).unwrap_err().to_string();
        assert!(e.contains("bad.png") && e.contains("cannot decode"), "{e}");
    }

    #[test]
    fn flat_and_nested_folders() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("flat");
        png(&r.join("cat/1.png"), 10, 8);
        png(&r.join("cat/2.png"), 20, 8);
        png(&r.join("dog/1.PNG"), 30, 8);
        std::fs::write(r.join("dog/notes.txt"), "ignored").unwrap();
        let t = dir.path().join("flat-test");
        png(&t.join("dog/9.png"), 40, 8);
        let tt = image_folder(&r, Some(&t), GREY, 0.0, 0).unwrap();
        assert_eq!(tt.train.class_names, vec!["cat", "dog"]);
        assert_eq!(tt.train.labels, vec![0, 0, 1]);
        assert_eq!(tt.train.image(2), &[30; 16]);
        assert_eq!(tt.test.labels, vec![1]);
        // Unknown class folder in the test set.
        png(&t.join("cow/1.png"), 40, 8);
        let e = image_folder(&r, Some(&t), GREY, 0.0, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cow") && e.contains("not among the training classes"),
            "{e}"
        );
        // Nested: coarse/fine, with a held-out test split.
        let n = dir.path().join("nested");
        for (i, f) in ["animal/cat", "animal/dog", "thing/cup"].iter().enumerate() {
            for j in 0..5 {
                png(&n.join(f).join(format!("{j}.png")), (i * 10 + j) as u8, 4);
            }
        }
        let tt = image_folder(&n, None, GREY, 0.2, 3).unwrap();
        assert_eq!((tt.train.len(), tt.test.len()), (12, 3));
        assert_eq!(tt.train.class_names, vec!["animal", "thing"]);
        assert_eq!(
            tt.train.fine_class_names.as_ref().unwrap(),
            &vec!["animal/cat", "animal/dog", "thing/cup"]
        );
        assert_eq!(tt.train.fine_per_class(), Some(vec![2, 1]));
        // A corrupt image fails the read, naming the file.
        std::fs::write(n.join("thing/cup/broken.png"), b"garbage").unwrap();
        let e = image_folder(&n, None, GREY, 0.0, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("broken.png"), "{e}");
        let e = image_folder(&dir.path().join("nope"), None, GREY, 0.0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn csv_lists() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("img/a.png"), 1, 4);
        png(&dir.path().join("img/b.png"), 2, 4);
        let csv = dir.path().join("train.csv");
        std::fs::write(
            &csv,
            "path,label,fine_label\nimg/a.png,shoe,boot\nimg/b.png,shirt,tee\n",
        )
        .unwrap();
        let test = dir.path().join("test.csv");
        std::fs::write(&test, "img/b.png,shirt,tee\n").unwrap();
        let tt = csv_list(&csv, Some(&test), GREY, 0.0, 0).unwrap();
        assert_eq!(tt.train.class_names, vec!["shirt", "shoe"]);
        assert_eq!(tt.train.labels, vec![1, 0]);
        assert_eq!(tt.train.fine_labels, Some(vec![0, 1]));
        assert_eq!(tt.test.labels, vec![0]);
        std::fs::write(&test, "img/b.png,hat,tee\n").unwrap();
        let e = csv_list(&csv, Some(&test), GREY, 0.0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.csv:1") && e.contains("class `hat`"), "{e}");
        std::fs::write(&test, "img/b.png\n").unwrap();
        let e = csv_list(&csv, Some(&test), GREY, 0.0, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.csv:1") && e.contains("expected `path,label[,fine_label]`"),
            "{e}"
        );
        std::fs::write(&test, "img/missing.png,shirt,tee\n").unwrap();
        let e = csv_list(&csv, Some(&test), GREY, 0.0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.png"), "{e}");
    }
}
