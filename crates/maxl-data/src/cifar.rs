//! CIFAR-10 and CIFAR-100 in their official binary format.
//!
//! CIFAR-10: `data_batch_{1..5}.bin` and `test_batch.bin`, records of 1 label byte + 3072 pixel
//! bytes. CIFAR-100: `train.bin` and `test.bin`, records of 1 coarse byte + 1 fine byte + 3072
//! pixel bytes; the 20 coarse classes are the primary task and the 100 fine classes are the
//! fine labels (the `human` baseline). Pixels are 1024 red, 1024 green, 1024 blue bytes, each a
//! row-major 32×32 plane — already channel-first. Class names come from `batches.meta.txt`,
//! `coarse_label_names.txt` and `fine_label_names.txt` when present.

use std::path::Path;

use crate::{DataError, Dataset, TrainTest};

const PIXELS: usize = 3 * 32 * 32;

/// CIFAR-10's class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100's 20 superclass (coarse) names, in label order.
pub const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// CIFAR-100's 100 class (fine) names, in label order.
pub const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

fn names(path: &Path, defaults: &[&str]) -> Result<Vec<String>, DataError> {
    if !path.is_file() {
        return Ok(defaults.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let got: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if got.len() != defaults.len() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("{} class names, expected {}", got.len(), defaults.len()),
        });
    }
    Ok(got)
}

/// Reads records of `label_bytes` label bytes + 3072 pixels; checks every label against `limits`.
fn records(
    path: &Path,
    label_bytes: usize,
    limits: &[usize],
    what: &str,
) -> Result<(Vec<u8>, Vec<Vec<usize>>), DataError> {
    let data = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rec = label_bytes + PIXELS;
    if data.is_empty() || data.len() % rec != 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "{} bytes is not a whole number of {rec}-byte {what} records (truncated, or not a {what} file)",
                data.len()
            ),
        });
    }
    let n = data.len() / rec;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = vec![Vec::with_capacity(n); label_bytes];
    for (i, r) in data.chunks_exact(rec).enumerate() {
        for (j, (&b, &limit)) in r[..label_bytes].iter().zip(limits).enumerate() {
            if b as usize >= limit {
                return Err(DataError::Format {
                    path: path.to_path_buf(),
                    message: format!(
                        "record {i}: label {b} is outside [0, {limit}) (not a {what} file?)"
                    ),
                });
            }
            labels[j].push(b as usize);
        }
        pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok((pixels, labels))
}

fn dataset(
    pixels: Vec<u8>,
    labels: Vec<usize>,
    fine: Option<Vec<usize>>,
    names: &[String],
    fine_names: Option<&[String]>,
) -> Dataset {
    Dataset {
        channels: 3,
        height: 32,
        width: 32,
        pixels,
        labels,
        fine_labels: fine,
        class_names: names.to_vec(),
        fine_class_names: fine_names.map(<[String]>::to_vec),
        files: None,
    }
}

/// CIFAR-10 from the directory of its binary version (`cifar-10-batches-bin`).
pub fn cifar10(dir: &Path) -> Result<TrainTest, DataError> {
    let names = names(&dir.join("batches.meta.txt"), &CIFAR10_CLASSES)?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 1..=5 {
        let (p, l) = records(
            &dir.join(format!("data_batch_{i}.bin")),
            1,
            &[10],
            "CIFAR-10",
        )?;
        pixels.extend(p);
        labels.extend(l.into_iter().next().expect("one label column"));
    }
    let (tp, tl) = records(&dir.join("test_batch.bin"), 1, &[10], "CIFAR-10")?;
    Ok(TrainTest {
        train: dataset(pixels, labels, None, &names, None),
        test: dataset(
            tp,
            tl.into_iter().next().expect("one label column"),
            None,
            &names,
            None,
        ),
    })
}

/// CIFAR-100 from the directory of its binary version (`cifar-100-binary`): coarse labels are
/// the primary classes, fine labels the fine classes.
pub fn cifar100(dir: &Path) -> Result<TrainTest, DataError> {
    let coarse = names(&dir.join("coarse_label_names.txt"), &CIFAR100_COARSE)?;
    let fine = names(&dir.join("fine_label_names.txt"), &CIFAR100_FINE)?;
    let read = |file: &str| -> Result<Dataset, DataError> {
        let (p, mut l) = records(&dir.join(file), 2, &[20, 100], "CIFAR-100")?;
        let f = l.pop().expect("fine column");
        let c = l.pop().expect("coarse column");
        Ok(dataset(p, c, Some(f), &coarse, Some(&fine)))
    };
    Ok(TrainTest {
        train: read("train.bin")?,
        test: read("test.bin")?,
    })
}

/// Writes CIFAR records (for tests and conversions): `labels[i]` holds the label bytes of image i.
pub fn write_records(path: &Path, labels: &[Vec<u8>], pixels: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::new();
    for (l, p) in labels.iter().zip(pixels.chunks_exact(PIXELS)) {
        out.extend_from_slice(l);
        out.extend_from_slice(p);
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(v: u8) -> Vec<u8> {
        (0..PIXELS).map(|i| v.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn cifar100_reads_coarse_and_fine() {
        let dir = tempfile::tempdir().unwrap();
        let px: Vec<u8> = [img(1), img(2), img(3)].concat();
        write_records(
            &dir.path().join("train.bin"),
            &[vec![4, 30], vec![19, 99], vec![0, 0]],
            &px,
        )
        .unwrap();
        write_records(&dir.path().join("test.bin"), &[vec![1, 2]], &img(9)).unwrap();
        let tt = cifar100(dir.path()).unwrap();
        assert_eq!(tt.train.labels, vec![4, 19, 0]);
        assert_eq!(tt.train.fine_labels, Some(vec![30, 99, 0]));
        assert_eq!(tt.train.image(1), img(2).as_slice());
        assert_eq!(
            (tt.test.channels, tt.test.height, tt.test.width),
            (3, 32, 32)
        );
        assert_eq!(tt.train.class_names[19], "vehicles_2");
        assert_eq!(tt.train.fine_class_names.as_ref().unwrap()[99], "worm");
    }

    #[test]
    fn cifar10_reads_five_batches_and_names() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=5u8 {
            write_records(
                &dir.path().join(format!("data_batch_{i}.bin")),
                &[vec![i]],
                &img(i),
            )
            .unwrap();
        }
        write_records(&dir.path().join("test_batch.bin"), &[vec![9]], &img(0)).unwrap();
        let names: String = (0..10).map(|i| format!("c{i}\n")).collect();
        std::fs::write(dir.path().join("batches.meta.txt"), names).unwrap();
        let tt = cifar10(dir.path()).unwrap();
        assert_eq!(tt.train.labels, vec![1, 2, 3, 4, 5]);
        assert_eq!(tt.test.labels, vec![9]);
        assert_eq!(tt.train.class_names[3], "c3");
        assert!(tt.train.fine_labels.is_none());
    }

    #[test]
    fn wrong_sizes_labels_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train.bin");
        write_records(
            &train,
            &[vec![1, 2], vec![3, 4]],
            &[img(0), img(1)].concat(),
        )
        .unwrap();
        write_records(&dir.path().join("test.bin"), &[vec![1, 2]], &img(0)).unwrap();
        let bytes = std::fs::read(&train).unwrap();
        std::fs::write(&train, &bytes[..bytes.len() - 1]).unwrap();
        let e = cifar100(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("train.bin") && e.contains("3074-byte CIFAR-100 records"),
            "{e}"
        );
        // A CIFAR-10 file (3073-byte records) read as CIFAR-100.
        write_records(&train, &[vec![1], vec![1]], &[img(0), img(1)].concat()).unwrap();
        let e = cifar100(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a whole number"), "{e}");
        write_records(&train, &[vec![25, 2]], &img(0)).unwrap();
        let e = cifar100(dir.path()).unwrap_err().to_string();
        assert!(e.contains("record 0: label 25 is outside [0, 20)"), "{e}");
        std::fs::write(dir.path().join("fine_label_names.txt"), "a\nb\n").unwrap();
        let e = cifar100(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("fine_label_names.txt") && e.contains("2 class names, expected 100"),
            "{e}"
        );
        let e = cifar10(dir.path()).unwrap_err().to_string();
        assert!(e.contains("data_batch_1.bin"), "{e}");
    }
}
