//! IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw.
//!
//! Images: magic 0x00000803, then N, rows, cols as big-endian u32, then N·rows·cols bytes.
//! Labels: magic 0x00000801, then N, then N bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{DataError, Dataset, TrainTest};

/// Where the Debian package `dataset-fashion-mnist` installs the data.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                message: format!("corrupt gzip data: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(path: &Path, data: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>, DataError> {
    let fmt = |message: String| DataError::Format {
        path: path.to_path_buf(),
        message,
    };
    let need = 4 + 4 * dims;
    if data.len() < need {
        return Err(fmt(format!(
            "truncated IDX header ({} bytes, need {need})",
            data.len()
        )));
    }
    let word = |i: usize| u32::from_be_bytes(data[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) != magic {
        return Err(fmt(format!(
            "not an IDX file of this kind: magic 0x{:08x}, expected 0x{magic:08x}",
            word(0)
        )));
    }
    let shape: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let body: usize = shape.iter().product();
    if data.len() != need + body {
        return Err(fmt(format!(
            "IDX size mismatch: header {shape:?} needs {} bytes, file has {} (truncated or corrupt)",
            need + body,
            data.len()
        )));
    }
    Ok(shape)
}

/// Reads an images file: (N, rows, cols, pixels).
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let mut data = read_maybe_gz(path)?;
    let shape = header(path, &data, IMAGES_MAGIC, 3)?;
    data.drain(..16);
    Ok((shape[0], shape[1], shape[2], data))
}

/// Reads a labels file, checking every label is below `num_classes`.
pub fn read_labels(path: &Path, num_classes: usize) -> Result<Vec<usize>, DataError> {
    let data = read_maybe_gz(path)?;
    header(path, &data, LABELS_MAGIC, 1)?;
    let labels: Vec<usize> = data[8..].iter().map(|&b| b as usize).collect();
    if let Some(i) = labels.iter().position(|&l| l >= num_classes) {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "label {} of item {i} is outside [0, {num_classes})",
                labels[i]
            ),
        });
    }
    Ok(labels)
}

/// `<dir>/<stem>.gz` if present, else `<dir>/<stem>`; names the `.gz` file when neither exists.
fn find(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    let raw = dir.join(stem);
    if !gz.exists() && raw.exists() {
        raw
    } else {
        gz
    }
}

/// Reads one split (`train` or `t10k`) of an MNIST-layout directory.
pub fn read_split(dir: &Path, prefix: &str, class_names: &[&str]) -> Result<Dataset, DataError> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"));
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"));
    let (n, height, width, pixels) = read_images(&images_path)?;
    let labels = read_labels(&labels_path, class_names.len())?;
    if labels.len() != n {
        return Err(DataError::Format {
            path: labels_path,
            message: format!(
                "{} labels for {n} images in {}",
                labels.len(),
                images_path.display()
            ),
        });
    }
    Ok(Dataset {
        channels: 1,
        height,
        width,
        pixels,
        labels,
        fine_labels: None,
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
        fine_class_names: None,
        files: None,
    })
}

/// Fashion-MNIST from `dir` (default: the Debian package's location).
pub fn fashion_mnist(dir: Option<&Path>) -> Result<TrainTest, DataError> {
    let dir = dir.unwrap_or(Path::new(FASHION_MNIST_DIR));
    Ok(TrainTest {
        train: read_split(dir, "train", &FASHION_MNIST_CLASSES)?,
        test: read_split(dir, "t10k", &FASHION_MNIST_CLASSES)?,
    })
}

/// Any MNIST-layout IDX directory (`train-…` and `t10k-…` files). Class names from
/// `names_file` (one per non-empty line), else `0`…`K−1` with K = the largest label + 1.
pub fn idx_dir(dir: &Path, names_file: Option<&Path>) -> Result<TrainTest, DataError> {
    let names: Vec<String> = match names_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| DataError::Io {
                path: p.to_path_buf(),
                source,
            })?;
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.len() < 2 {
                return Err(DataError::Format {
                    path: p.to_path_buf(),
                    message: format!(
                        "needs at least 2 class names, one per line; found {}",
                        names.len()
                    ),
                });
            }
            names
        }
        None => {
            // At most 256 classes fit a byte label: read the labels once to count them.
            let labels = read_labels(&find(dir, "train-labels-idx1-ubyte"), 256)?;
            let k = labels.iter().max().map_or(0, |&m| m + 1);
            (0..k).map(|i| i.to_string()).collect()
        }
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Ok(TrainTest {
        train: read_split(dir, "train", &refs)?,
        test: read_split(dir, "t10k", &refs)?,
    })
}

/// Writes IDX files (used by tests and by tools that convert data to this format).
pub fn write_images(path: &Path, rows: usize, cols: usize, pixels: &[u8]) -> std::io::Result<()> {
    let n = pixels.len() / (rows * cols);
    let mut out = Vec::with_capacity(16 + pixels.len());
    for w in [IMAGES_MAGIC, n as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&w.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    std::fs::write(path, out)
}

/// Writes labels as an IDX1 file (uncompressed), the format [`idx_dir`] reads.
pub fn write_labels(path: &Path, labels: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(8 + labels.len());
    for w in [LABELS_MAGIC, labels.len() as u32] {
        out.extend_from_slice(&w.to_be_bytes());
    }
    out.extend_from_slice(labels);
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_set(dir: &Path, prefix: &str, n: usize, gz: bool) {
        let pixels: Vec<u8> = (0..n * 4).map(|v| v as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let ip = dir.join(format!("{prefix}-images-idx3-ubyte"));
        let lp = dir.join(format!("{prefix}-labels-idx1-ubyte"));
        write_images(&ip, 2, 2, &pixels).unwrap();
        write_labels(&lp, &labels).unwrap();
        if gz {
            for p in [ip, lp] {
                let raw = std::fs::read(&p).unwrap();
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&raw).unwrap();
                std::fs::write(p.with_extension("gz"), enc.finish().unwrap()).unwrap();
                std::fs::remove_file(p).unwrap();
            }
        }
    }

    #[test]
    fn generic_idx_names_classes_by_number_or_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 12, false);
        write_set(dir.path(), "t10k", 3, true);
        let tt = idx_dir(dir.path(), None).unwrap();
        let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(tt.train.class_names, want);
        assert_eq!(tt.test.len(), 3);
        let names = dir.path().join("names.txt");
        let digits = "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n";
        std::fs::write(&names, digits).unwrap();
        let tt = idx_dir(dir.path(), Some(&names)).unwrap();
        assert_eq!(tt.train.class_names[0], "zero");
        // Too few names for the labels: the labels file is named.
        std::fs::write(&names, "zero\none\n").unwrap();
        let e = idx_dir(dir.path(), Some(&names)).unwrap_err().to_string();
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("outside [0, 2)"),
            "{e}"
        );
        std::fs::write(&names, "zero\n").unwrap();
        let e = idx_dir(dir.path(), Some(&names)).unwrap_err().to_string();
        assert!(e.contains("names.txt") && e.contains("at least 2"), "{e}");
    }

    #[test]
    fn reads_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 5, true);
        write_set(dir.path(), "t10k", 3, false);
        let tt = fashion_mnist(Some(dir.path())).unwrap();
        assert_eq!(tt.train.len(), 5);
        assert_eq!(tt.test.len(), 3);
        assert_eq!((tt.train.height, tt.train.width), (2, 2));
        assert_eq!(tt.train.image(1), &[4, 5, 6, 7]);
        assert_eq!(tt.test.labels, vec![0, 1, 2]);
        assert_eq!(tt.train.class_names[0], "T-shirt/top");
    }

    #[test]
    fn truncated_corrupt_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 5, false);
        write_set(dir.path(), "t10k", 3, false);
        let ip = dir.path().join("train-images-idx3-ubyte");
        let full = std::fs::read(&ip).unwrap();
        std::fs::write(&ip, &full[..full.len() - 3]).unwrap();
        let e = fashion_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
            "{e}"
        );
        std::fs::write(&ip, &full[..10]).unwrap();
        let e = fashion_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("truncated IDX header"), "{e}");
        std::fs::write(&ip, [0x1f, 0x8b, 1, 2, 3]).unwrap();
        let e = fashion_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("corrupt gzip"), "{e}");
        std::fs::write(&ip, &full).unwrap();
        let lp = dir.path().join("t10k-labels-idx1-ubyte");
        write_labels(&lp, &[1, 2, 11]).unwrap();
        let e = fashion_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("label 11 of item 2"), "{e}");
        write_labels(&lp, &[1, 2]).unwrap();
        let e = fashion_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("2 labels for 3 images"), "{e}");
        std::fs::remove_file(&lp).unwrap();
        let e = fashion_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("t10k-labels-idx1-ubyte.gz") && !e.contains('\n'),
            "{e}"
        );
        // Swapped files: an images file where labels are expected.
        std::fs::copy(&ip, &lp).unwrap();
        let e = fashion_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("magic 0x00000803"), "{e}");
    }
}
