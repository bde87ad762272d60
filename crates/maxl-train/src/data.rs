//! Preparing a dataset for one training run: reading it (image files decoded into memory, or
//! streamed from their files when they would not fit the memory budget), grouping classes,
//! resolving ψ for the method, the seeded validation split, and the fixed auxiliary labels of the
//! `random` and `human` baselines.

use maxl_core::arch::{self, Architecture};
use maxl_core::config::{DatasetConfig, DatasetKind, Method, StreamMode, TrainConfig};
use maxl_core::hierarchy::Hierarchy;
use maxl_data::folder::{ImageShape, Resize};
use maxl_data::{Dataset, TrainTest};
use rand::{Rng, SeedableRng};

use crate::TrainError;

/// Everything a run trains and evaluates on.
#[derive(Debug)]
pub struct PreparedData {
    /// The training images: what the seeded validation split leaves, cut to `dataset.train_limit`
    /// when set.
    pub train: Dataset,
    /// The validation images, held out of the training set (`dataset.validation_fraction`, seeded;
    /// empty at 0).
    pub validation: Dataset,
    /// The test images, cut to `dataset.test_limit` when set.
    pub test: Dataset,
    /// ψ, the number of auxiliary classes of each primary class (for `human`, the fine classes
    /// of each class).
    pub hierarchy: Hierarchy,
    /// The fixed auxiliary slot of every training image (`random` and `human` only).
    pub fixed_aux: Option<Vec<usize>>,
}

/// Reads the configured dataset and prepares it for `config.method`: groups classes
/// (`dataset.coarse_groups`), pads the images and replicates grey channels (`dataset.pad`,
/// `dataset.grey_to_rgb`) and checks them against the input `arch` expects, resolves ψ, splits
/// off the validation set, takes the subsets, and draws the fixed auxiliary labels of `random`
/// and `human`.
pub fn prepare(config: &TrainConfig, arch: &Architecture) -> Result<PreparedData, TrainError> {
    let d = &config.dataset;
    let (mut train, mut test) = read_dataset(config, arch)?;
    fit_to_input(config, arch, &mut train, &mut test)?;
    let hierarchy = resolve_hierarchy(config, &train)?;
    let (mut train, validation) = train.split_validation(d.validation_fraction, config.seed);
    if let Some(n) = d.train_limit {
        train = train.balanced_subset(n, config.seed);
    }
    if let Some(n) = d.test_limit {
        test = test.balanced_subset(n, config.seed ^ 0x7E57);
    }
    if train.len() < 2 {
        return Err(TrainError::Invalid(format!(
            "only {} training images after the split",
            train.len()
        )));
    }
    let fixed_aux = match config.method {
        Method::Random => Some(random_slots(&train, &hierarchy, config.seed)),
        Method::Human => Some(human_slots(&train, &hierarchy)),
        _ => None,
    };
    Ok(PreparedData {
        train,
        validation,
        test,
        hierarchy,
        fixed_aux,
    })
}

/// The size (rows, columns) the images are kept at: the network's input, or with
/// `dataset.random_resized_crop` the resize size the random boxes are cut from (S × S for a
/// shorter-side resize S, the input size for a stretch).
pub fn stored_size(config: &TrainConfig, arch: &Architecture) -> (usize, usize) {
    match (config.dataset.random_resized_crop, arch.input.resize) {
        (true, arch::Resize::ShorterSide(s)) => (s, s),
        _ => (arch.input.height, arch.input.width),
    }
}

/// What image files are decoded to: the input's channels at [`stored_size`], by the input's
/// resize (the central S × S square of a shorter-side resize S when the images are kept at S × S).
fn image_shape(config: &TrainConfig, arch: &Architecture) -> ImageShape {
    let (height, width) = stored_size(config, arch);
    ImageShape {
        channels: arch.input.channels,
        height,
        width,
        resize: match arch.input.resize {
            arch::Resize::Stretch => Resize::Stretch,
            arch::Resize::ShorterSide(s) => Resize::ShorterSide(s),
        },
    }
}

/// Image files decoded into memory, or left streamed when `dataset.stream` says so (`auto`:
/// when decoded they would take more than `dataset.memory_budget_mb`).
fn keep_or_stream(tt: TrainTest, d: &DatasetConfig) -> Result<TrainTest, TrainError> {
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let bytes = tt.decoded_bytes();
    let images = tt.train.len() + tt.test.len();
    let over = bytes as u128 > (d.memory_budget_mb as u128) << 20;
    let stream = match d.stream {
        StreamMode::Always => true,
        StreamMode::Never => false,
        StreamMode::Auto => over,
    };
    if stream {
        tracing::info!(
            "streaming {images} images from their files (decoded: {:.1} MiB; dataset.stream {}, memory budget {} MiB)",
            mib(bytes),
            maxl_core::Choice::name(d.stream),
            d.memory_budget_mb
        );
        return Ok(tt);
    }
    tracing::info!(
        "decoding {images} images into memory ({:.1} MiB)",
        mib(bytes)
    );
    Ok(tt.into_resident()?)
}

/// Reads the configured dataset's training and test sets, with classes grouped when
/// `dataset.coarse_groups` is set.
fn read_dataset(
    config: &TrainConfig,
    arch: &Architecture,
) -> Result<(Dataset, Dataset), TrainError> {
    let d = &config.dataset;
    let shape = image_shape(config, arch);
    // validate() guarantees a path for every kind but Fashion-MNIST.
    let path = || d.path.as_deref().expect("validated: dataset.path is set");
    let test = d.test_path.as_deref();
    let tt = match d.kind {
        DatasetKind::FashionMnist => maxl_data::idx::fashion_mnist(d.path.as_deref())?,
        DatasetKind::Idx => maxl_data::idx::idx_dir(path(), d.class_names.as_deref())?,
        DatasetKind::Cifar10 => maxl_data::cifar::cifar10(path())?,
        DatasetKind::Cifar100 => maxl_data::cifar::cifar100(path())?,
        DatasetKind::ImageFolder | DatasetKind::Csv => {
            let list = if d.kind == DatasetKind::Csv {
                maxl_data::folder::csv_list_streamed
            } else {
                maxl_data::folder::image_folder_streamed
            };
            keep_or_stream(list(path(), test, shape, d.test_fraction, config.seed)?, d)?
        }
    };
    let (mut train, mut test) = (tt.train, tt.test);
    if let Some(groups) = &d.coarse_groups {
        train.group_classes(groups)?;
        test.group_classes(groups)?;
    }
    Ok((train, test))
}

/// Pads the images and replicates grey channels as configured, and checks them against the
/// input `arch` expects.
fn fit_to_input(
    config: &TrainConfig,
    arch: &Architecture,
    train: &mut Dataset,
    test: &mut Dataset,
) -> Result<(), TrainError> {
    let d = &config.dataset;
    let input = &arch.input;
    let channels = if d.grey_to_rgb {
        input.channels
    } else {
        train.channels
    };
    if d.grey_to_rgb && train.channels != 1 {
        return Err(TrainError::Invalid(format!(
            "dataset.grey_to_rgb: the images already have {} channels",
            train.channels
        )));
    }
    train.pad_and_replicate(d.pad, channels)?;
    test.pad_and_replicate(d.pad, channels)?;
    let (height, width) = stored_size(config, arch);
    if (train.channels, train.height, train.width) != (input.channels, height, width) {
        return Err(TrainError::Invalid(format!(
            "dataset images are {}×{}×{} but the model expects {}×{}×{} (model.preset `{}`)",
            train.channels,
            train.height,
            train.width,
            input.channels,
            height,
            width,
            config.model.preset
        )));
    }
    Ok(())
}

/// ψ for the method: from the fine labels for `human` (checked against `hierarchy.psi` when
/// given), from the config otherwise.
fn resolve_hierarchy(config: &TrainConfig, train: &Dataset) -> Result<Hierarchy, TrainError> {
    match config.method {
        Method::Human => {
            let psi = train.fine_per_class().ok_or_else(|| {
                TrainError::Invalid(
                    "method `human` needs fine labels: this dataset has none; set dataset.coarse_groups to train on \
                     coarse groups with the original classes as fine labels"
                        .into(),
                )
            })?;
            let h =
                Hierarchy::new(psi).map_err(|e| TrainError::Invalid(format!("human ψ: {e}")))?;
            if let Some(given) = &config.hierarchy.psi
                && given.as_slice() != h.psi()
            {
                return Err(TrainError::Invalid(format!(
                    "method `human` takes ψ from the fine labels ({:?}), but hierarchy.psi is {given:?}",
                    h.psi()
                )));
            }
            Ok(h)
        }
        _ => config
            .hierarchy
            .resolve(train.num_classes())
            .map_err(|e| TrainError::Invalid(format!("hierarchy: {e}"))),
    }
}

/// A seeded random slot of its class for each training image (`random`).
fn random_slots(train: &Dataset, hierarchy: &Hierarchy, seed: u64) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5EED_A0C5);
    train
        .labels
        .iter()
        .map(|&k| {
            let r = hierarchy.slots(k);
            r.start + rng.random_range(0..r.len())
        })
        .collect()
}

/// Slot of each image's fine label: fine classes of primary class k, in increasing order, take
/// the slots of k in that order.
fn human_slots(train: &Dataset, hierarchy: &Hierarchy) -> Vec<usize> {
    let fine = train.fine_labels.as_ref().expect("checked by prepare");
    let mut members = vec![std::collections::BTreeSet::new(); hierarchy.num_primary()];
    for (&k, &f) in train.labels.iter().zip(fine) {
        members[k].insert(f);
    }
    train
        .labels
        .iter()
        .zip(fine)
        .map(|(&k, f)| {
            hierarchy.slots(k).start + members[k].iter().position(|m| m == f).expect("member")
        })
        .collect()
}

/// A dataset split the trainer evaluates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Train,
    Validation,
    Test,
}
