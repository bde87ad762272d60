//! The training configuration: YAML with defaults for every field, validated once on load, and
//! saved (resolved) next to every run's artefacts.
//!
//! YAML is read with `serde_yaml_ng`, a maintained fork of the archived `serde_yaml` with the same
//! API; the file format is plain YAML.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::arch::{ArchError, Architecture};
use crate::hierarchy::{Hierarchy, HierarchyError, PsiSpec};

/// Why a configuration was refused. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The file is not valid YAML, or has an unknown or mistyped field.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's reason, with the line.
        message: String,
    },
    /// The values parse but cannot be trained with (a zero batch size, a bad fraction, …).
    #[error("{path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Which training method runs. All share the backbone, heads and schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Meta auxiliary learning: labels from the generator, trained by the meta-gradient.
    Maxl,
    /// MAXL without the anti-collapse term (λ = 0): the ablation.
    MaxlNoEntropy,
    /// MAXL with a learned per-image weight of the auxiliary loss: the label generator also
    /// outputs w_i = 2·sigmoid(s_i) ∈ (0, 2) (1 at the start), stage 1 minimises
    /// L_pri + mean_i w_i·L_aux,i, and stage 2 trains labels and weights by the same exact
    /// meta-gradient.
    MaxlWeighted,
    /// Primary task only.
    Single,
    /// Each training image gets a fixed random auxiliary slot inside its class's ψ range.
    Random,
    /// Auxiliary labels are the dataset's true fine labels.
    Human,
}

impl crate::choice::Choice for Method {
    const ALL: &'static [Self] = &[
        Method::Maxl,
        Method::MaxlNoEntropy,
        Method::MaxlWeighted,
        Method::Single,
        Method::Random,
        Method::Human,
    ];

    fn name(self) -> &'static str {
        Method::name(self)
    }
}

impl Method {
    /// The value's name, as in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Maxl => "maxl",
            Method::MaxlNoEntropy => "maxl-no-entropy",
            Method::MaxlWeighted => "maxl-weighted",
            Method::Single => "single",
            Method::Random => "random",
            Method::Human => "human",
        }
    }

    /// Methods whose auxiliary labels come from the trained label generator.
    pub fn uses_generator(self) -> bool {
        matches!(
            self,
            Method::Maxl | Method::MaxlNoEntropy | Method::MaxlWeighted
        )
    }

    /// Whether the label generator also outputs a per-image weight of the auxiliary loss.
    pub fn weighted(self) -> bool {
        self == Method::MaxlWeighted
    }
}

/// When the two MAXL stages run (see the method description).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The authors': stage 1 over the whole epoch, then stage 2 over the whole epoch.
    Reference,
    /// Per batch: stage 1, then stage 2 on the same batch.
    Interleaved,
    /// Per batch, one forward and one gradient of L1 serve both stages: with plain SGD the
    /// stage-1 update is θ1⁺ itself, so the meta-gradient is taken at the pre-update θ1. A
    /// different algorithm, not a faster `reference`; needs θ1's optimiser without momentum
    /// or weight decay.
    Fused,
}

impl crate::choice::Choice for Schedule {
    const ALL: &'static [Self] = &[Schedule::Reference, Schedule::Interleaved, Schedule::Fused];

    fn name(self) -> &'static str {
        Schedule::name(self)
    }
}

impl Schedule {
    /// The value's name, as in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Reference => "reference",
            Schedule::Interleaved => "interleaved",
            Schedule::Fused => "fused",
        }
    }
}

/// How stage 2 computes the exact meta-gradient ∂L2/∂θ2 (both give the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetaGradientMode {
    /// Backward through the create_graph gradient G (a double backward).
    #[default]
    DoubleBackward,
    /// L1 is linear in g's output: one forward-mode Jacobian-vector product of f's per-slot
    /// losses along ∇L_pri(θ1⁺), then an ordinary backward through g.
    Jvp,
}

impl crate::choice::Choice for MetaGradientMode {
    const ALL: &'static [Self] = &[MetaGradientMode::DoubleBackward, MetaGradientMode::Jvp];

    fn name(self) -> &'static str {
        MetaGradientMode::name(self)
    }
}

impl MetaGradientMode {
    /// The value's name, as in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MetaGradientMode::DoubleBackward => "double-backward",
            MetaGradientMode::Jvp => "jvp",
        }
    }
}

/// `model:`: which networks to train, and where their backbones start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A named architecture (see [`crate::arch::PRESETS`]); ignored when `architecture` is
    /// given.
    pub preset: String,
    /// A full architecture description, overriding the preset.
    pub architecture: Option<Architecture>,
    /// The input's height and width, replacing the preset's (a shorter-side resize keeps its
    /// ratio to the crop). Not with `architecture`, which gives its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_size: Option<[usize; 2]>,
    /// A torchvision-layout state dict (safetensors) whose backbone tensors initialise f's
    /// backbone; the classifier `fc.*` is ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// The label generator g's network, when it differs from f's (the paper: the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorModel>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            preset: "small".into(),
            architecture: None,
            input_size: None,
            init_from: None,
            generator: None,
        }
    }
}

/// `model.generator:`: g's own architecture and initialisation. It sees the same images as
/// f, so its input (size, normalisation, resize) is always f's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorModel {
    /// A named architecture for g (its input replaced by f's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// A full architecture description for g (its input must equal f's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
    /// A state dict for g's backbone. Without it g starts from `model.init_from` when g's
    /// backbone is f's, and from its own initialisation otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

impl ModelConfig {
    /// f's architecture: the description when given, else the preset (at `input_size` when
    /// given); validated.
    pub fn resolve(&self) -> Result<Architecture, ArchError> {
        let arch = match (&self.architecture, self.input_size) {
            (Some(a), _) => a.clone(),
            (None, Some([h, w])) => Architecture::preset(&self.preset)?.with_input_size(h, w),
            (None, None) => Architecture::preset(&self.preset)?,
        };
        arch.validate()?;
        Ok(arch)
    }

    /// g's architecture: f's unless `generator` names another; validated, with f's input.
    pub fn resolve_generator(&self) -> Result<Architecture, String> {
        let f = self.resolve().map_err(|e| e.to_string())?;
        let Some(g) = &self.generator else {
            return Ok(f);
        };
        let arch = match (&g.architecture, &g.preset) {
            (Some(a), _) => {
                if a.input != f.input {
                    return Err(
                        "generator.architecture: its input must equal the multi-task \
                         network's (g sees the same images)"
                            .into(),
                    );
                }
                a.clone()
            }
            (None, Some(p)) => Architecture {
                input: f.input.clone(),
                ..Architecture::preset(p).map_err(|e| format!("generator: {e}"))?
            },
            (None, None) => f,
        };
        arch.validate().map_err(|e| format!("generator: {e}"))?;
        Ok(arch)
    }

    /// The state dict g's backbone starts from: its own, or f's when g's backbone is f's.
    pub fn generator_init_from(&self) -> Option<&Path> {
        let own = self.generator.as_ref().and_then(|g| g.init_from.as_deref());
        let same = self
            .generator
            .as_ref()
            .is_none_or(|g| g.architecture.is_none() && g.preset.is_none());
        own.or(self.init_from.as_deref().filter(|_| same))
    }

    /// The architecture's name for reports: the preset, or `custom`.
    pub fn describe(&self) -> String {
        if self.architecture.is_some() {
            "custom".into()
        } else {
            self.preset.clone()
        }
    }

    /// g's architecture's name for reports, when g has its own.
    pub fn describe_generator(&self) -> Option<String> {
        let g = self.generator.as_ref()?;
        match (&g.architecture, &g.preset) {
            (Some(_), _) => Some("custom".into()),
            (None, Some(p)) => Some(p.clone()),
            (None, None) => None,
        }
    }
}

/// `dataset.kind`: which reader reads the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST's IDX files (`.gz` or raw), by default from the Debian package.
    FashionMnist,
    /// Any MNIST-layout IDX directory (MNIST, KMNIST, EMNIST…): `train-images-idx3-ubyte` etc.,
    /// class names from `dataset.class_names` (one per line) or `0`…`K−1`.
    Idx,
    /// CIFAR-10's binary version (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10,
    /// CIFAR-100's binary version (`train.bin`, `test.bin`): coarse labels are the primary task,
    /// fine labels the fine classes.
    Cifar100,
    /// `path/<class>/*.png|jpg` or `path/<coarse>/<fine>/*`, resized to the model's input.
    ImageFolder,
    /// A CSV list of `path,label[,fine_label]` lines.
    Csv,
}

impl crate::choice::Choice for DatasetKind {
    const ALL: &'static [Self] = &[
        DatasetKind::FashionMnist,
        DatasetKind::Idx,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::ImageFolder,
        DatasetKind::Csv,
    ];

    fn name(self) -> &'static str {
        DatasetKind::name(self)
    }
}

impl DatasetKind {
    /// The value's name, as in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Idx => "idx",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageFolder => "image-folder",
            DatasetKind::Csv => "csv",
        }
    }
}

/// A primary class made of several of the dataset's classes: those become its fine labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoarseGroup {
    /// The group's class name.
    pub name: String,
    /// Indices of the dataset's original classes in this group.
    pub classes: Vec<usize>,
}

/// `dataset.stream`: whether image files are decoded up front or a batch at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamMode {
    /// Stream when the decoded images would take more than `dataset.memory_budget_mb`.
    #[default]
    Auto,
    /// Always decode each batch's images from their files.
    Always,
    /// Always decode every image into memory up front.
    Never,
}

impl crate::choice::Choice for StreamMode {
    const ALL: &'static [Self] = &[StreamMode::Auto, StreamMode::Always, StreamMode::Never];

    fn name(self) -> &'static str {
        match self {
            StreamMode::Auto => "auto",
            StreamMode::Always => "always",
            StreamMode::Never => "never",
        }
    }

    fn help(self) -> &'static str {
        match self {
            StreamMode::Auto => {
                "Stream when the decoded images would take more than the memory budget"
            }
            StreamMode::Always => "Decode each batch's images from their files",
            StreamMode::Never => "Decode every image into memory up front",
        }
    }
}

/// `dataset:`: what to train on, how it is split, and the augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetConfig {
    /// The reader.
    pub kind: DatasetKind,
    /// The dataset's directory (or CSV file); only Fashion-MNIST has a default location.
    pub path: Option<PathBuf>,
    /// Image folder / CSV only: a separate test folder or CSV list. Without it a seeded
    /// `test_fraction` of the images is held out as the test set.
    pub test_path: Option<PathBuf>,
    /// Image folder / CSV only: the held-out test fraction when there is no `test_path`.
    pub test_fraction: f64,
    /// Fraction of the training set held out (seeded) for validation.
    pub validation_fraction: f64,
    /// Shuffle the training set every epoch (off for step-level comparisons).
    pub shuffle: bool,
    /// Random crop with this much zero padding (0 disables the crop).
    pub crop_padding: usize,
    /// Mirror each training image with probability ½.
    pub horizontal_flip: bool,
    /// Image folder / CSV only: crop each training image by a random box (torchvision's
    /// `RandomResizedCrop`: area 8–100 %, width ÷ height 3/4–4/3) resized to the input, instead
    /// of the padded crop (`crop_padding` must then be 0). Images are kept at the resize size
    /// (S × S for a shorter-side resize S, the input size for a stretch) and evaluation uses
    /// their central crop.
    pub random_resized_crop: bool,
    /// Image folder / CSV only: keep the decoded images in memory, or decode each batch's from
    /// its files (`auto`: stream when they would take more than `memory_budget_mb`).
    pub stream: StreamMode,
    /// Image folder / CSV only: the most MiB the decoded training and test images may take in
    /// memory before `stream: auto` streams them.
    pub memory_budget_mb: u64,
    /// Train on coarse groups of the dataset's classes, with the original classes as the fine
    /// labels (this is what the `human` method needs on a flat dataset such as Fashion-MNIST).
    pub coarse_groups: Option<Vec<CoarseGroup>>,
    /// Train on a seeded, class-balanced subset of N training images (after the validation
    /// split): N/K per class (per fine class where the data has them).
    pub train_limit: Option<usize>,
    /// Evaluate on a seeded, class-balanced subset of N test images.
    pub test_limit: Option<usize>,
    /// Pad every image with this many black pixels on each side (Fashion-MNIST's 28×28 → 32×32
    /// with 2).
    pub pad: usize,
    /// Replicate single-channel images to the model's 3 channels.
    pub grey_to_rgb: bool,
    /// `idx` only: a text file with one class name per line (default `0`…`K−1`).
    pub class_names: Option<PathBuf>,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            kind: DatasetKind::FashionMnist,
            path: None,
            test_path: None,
            test_fraction: 0.1,
            validation_fraction: 0.1,
            shuffle: true,
            crop_padding: 2,
            horizontal_flip: true,
            random_resized_crop: false,
            stream: StreamMode::Auto,
            memory_budget_mb: 4096,
            coarse_groups: None,
            train_limit: None,
            test_limit: None,
            pad: 0,
            grey_to_rgb: false,
            class_names: None,
        }
    }
}

/// `hierarchy:`: ψ, how many auxiliary classes each primary class gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HierarchyConfig {
    /// One auxiliary-class count per primary class.
    pub psi: Option<Vec<usize>>,
    /// The same count for every primary class (used when `psi` is not given).
    pub psi_per_class: usize,
}

impl Default for HierarchyConfig {
    fn default() -> Self {
        Self {
            psi: None,
            psi_per_class: 5,
        }
    }
}

impl HierarchyConfig {
    /// ψ as written: the list when given, else the per-class count.
    pub fn spec(&self) -> PsiSpec {
        match &self.psi {
            Some(psi) => PsiSpec::Psi(psi.clone()),
            None => PsiSpec::PsiPerClass(self.psi_per_class),
        }
    }

    /// The hierarchy for a dataset of `num_primary` classes.
    pub fn resolve(&self, num_primary: usize) -> Result<Hierarchy, HierarchyError> {
        Hierarchy::from_spec(&self.spec(), num_primary)
    }
}

/// SGD with optional momentum and (L2) weight decay, as `torch.optim.SGD`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// The learning rate.
    pub lr: f64,
    /// The momentum factor (0: plain SGD).
    #[serde(default)]
    pub momentum: f64,
    /// The L2 penalty added to the gradient (0: none).
    #[serde(default)]
    pub weight_decay: f64,
    /// The backbone's learning rate as a multiple of `lr` (the heads get `lr`): the usual
    /// fine-tuning schedule, e.g. 0.1. Also scales the backbone's part of the meta-step's
    /// inner step θ1⁺ = θ1 − αG, so the meta-gradient stays exact.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub backbone_lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

/// Multiply every learning rate (and so the inner lr α) by `gamma` every `every_epochs` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrStep {
    /// Epochs between two steps.
    pub every_epochs: usize,
    /// The factor each step multiplies the learning rates by.
    pub gamma: f64,
}

/// A training run's configuration, as the YAML config file holds it; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The training method.
    pub method: Method,
    /// When the two MAXL stages run.
    pub schedule: Schedule,
    /// The network.
    pub model: ModelConfig,
    /// The data, its splits and augmentation.
    pub dataset: DatasetConfig,
    /// ψ.
    pub hierarchy: HierarchyConfig,
    /// Epochs to train.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// The seed of every random choice (initialisation, splits, shuffles, augmentation).
    pub seed: u64,
    /// θ1, the multi-task network. Its current lr is also the inner lr α of the meta-step.
    pub multitask_optimizer: OptimizerConfig,
    /// θ2, the label generator.
    pub generator_optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub lr_step: LrStep,
    /// How stage 2 computes the exact meta-gradient.
    pub meta_gradient: MetaGradientMode,
    /// λ, the weight of the anti-collapse (entropy) term. Forced to 0 by `maxl-no-entropy`.
    pub entropy_weight: f64,
    /// μ, the weight of the per-image entropy term in stage 2: μ · mean_i H(t_i) (nats) pushes
    /// each image's label towards one slot while λR spreads the batch over the slots; together
    /// they are (minus) the mutual information between image and slot. 0 (the default) is the
    /// paper's objective. Used by the methods with a label generator.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub sample_entropy_weight: f64,
    /// ν, the weight of (mean_i w_i − 1)² in stage 2 (`maxl-weighted` only): keeps the batch-mean
    /// weight of the auxiliary loss near 1, so the generator cannot switch the auxiliary task off
    /// wholesale. 0 (the default): no penalty.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub weight_mean_penalty: f64,
    /// γ of the focal loss.
    pub focal_gamma: f64,
    /// Epochs at the start in which both backbones are frozen and only the heads train (the
    /// fine-tuning warm-up); 0: none.
    #[serde(skip_serializing_if = "is_zero")]
    pub freeze_backbone_epochs: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl Default for TrainConfig {
    /// The demo configuration: the `small` preset, MAXL, Fashion-MNIST, a few minutes on two cores.
    fn default() -> Self {
        Self {
            method: Method::Maxl,
            schedule: Schedule::Interleaved,
            model: ModelConfig::default(),
            dataset: DatasetConfig::default(),
            hierarchy: HierarchyConfig::default(),
            epochs: 3,
            batch_size: 100,
            seed: 0,
            multitask_optimizer: OptimizerConfig {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.0,
                backbone_lr_scale: 1.0,
            },
            generator_optimizer: OptimizerConfig {
                lr: 1e-3,
                momentum: 0.0,
                weight_decay: 5e-4,
                backbone_lr_scale: 1.0,
            },
            lr_step: LrStep {
                every_epochs: 2,
                gamma: 0.5,
            },
            meta_gradient: MetaGradientMode::DoubleBackward,
            entropy_weight: 0.2,
            sample_entropy_weight: 0.0,
            weight_mean_penalty: 0.0,
            focal_gamma: 2.0,
            freeze_backbone_epochs: 0,
        }
    }
}

impl TrainConfig {
    /// Reads, parses and validates a YAML file. Errors name the file and, for syntax or type
    /// errors, the line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        // An empty file (or only comments) means "all defaults", like an empty mapping.
        let config: TrainConfig = if text
            .trim()
            .lines()
            .all(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        {
            TrainConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
                path: origin.to_path_buf(),
                message: one_line(&e.to_string()),
            })?
        };
        config.validate().map_err(|message| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Checks everything that can be checked without the dataset.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_model()?;
        validate_dataset(&self.dataset)?;
        self.validate_training()
    }

    /// Checks the model, the hierarchy, and the epoch and batch counts.
    fn validate_model(&self) -> Result<(), String> {
        self.model.resolve().map_err(|e| format!("model: {e}"))?;
        self.model
            .resolve_generator()
            .map_err(|e| format!("model: {e}"))?;
        if self.model.architecture.is_some() && self.model.input_size.is_some() {
            return Err(
                "model: input_size is for presets; an architecture gives its own input".into(),
            );
        }
        for (name, o) in [
            ("multitask_optimizer", self.multitask_optimizer),
            ("generator_optimizer", self.generator_optimizer),
        ] {
            if !(o.backbone_lr_scale >= 0.0 && o.backbone_lr_scale.is_finite()) {
                return Err(format!(
                    "{name}.backbone_lr_scale must be ≥ 0 (got {})",
                    o.backbone_lr_scale
                ));
            }
        }
        if let Some(psi) = &self.hierarchy.psi {
            Hierarchy::new(psi.clone()).map_err(|e| format!("hierarchy: {e}"))?;
        } else if self.hierarchy.psi_per_class == 0 {
            return Err("hierarchy: psi_per_class must be at least 1".into());
        }
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if self.batch_size < 2 {
            // Batch norm in training mode needs two images, and a one-image batch is skipped.
            return Err(format!(
                "batch_size must be at least 2, got {}",
                self.batch_size
            ));
        }
        Ok(())
    }

    /// Checks the schedule, both optimisers, the learning-rate step and the loss weights.
    fn validate_training(&self) -> Result<(), String> {
        if self.schedule == Schedule::Fused
            && self.method.uses_generator()
            && (self.multitask_optimizer.momentum != 0.0
                || self.multitask_optimizer.weight_decay != 0.0)
        {
            return Err(format!(
                "schedule `fused` needs plain SGD for θ1 (its update is the meta-step's θ1⁺): set \
                 multitask_optimizer.momentum and weight_decay to 0 (got {} and {})",
                self.multitask_optimizer.momentum, self.multitask_optimizer.weight_decay
            ));
        }
        for (name, o) in [
            ("multitask_optimizer", &self.multitask_optimizer),
            ("generator_optimizer", &self.generator_optimizer),
        ] {
            let ok = o.lr > 0.0
                && o.lr.is_finite()
                && (0.0..1.0).contains(&o.momentum)
                && o.weight_decay >= 0.0;
            if !ok {
                return Err(format!(
                    "{name}: need lr > 0, momentum in [0, 1), weight_decay ≥ 0 (got lr {}, momentum {}, weight_decay {})",
                    o.lr, o.momentum, o.weight_decay
                ));
            }
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if self.lr_step.every_epochs == 0 || !positive(self.lr_step.gamma) {
            return Err("lr_step: every_epochs must be ≥ 1 and gamma > 0".into());
        }
        if !non_negative(self.entropy_weight)
            || !non_negative(self.sample_entropy_weight)
            || !non_negative(self.weight_mean_penalty)
            || !non_negative(self.focal_gamma)
        {
            return Err(
                "entropy_weight, sample_entropy_weight, weight_mean_penalty and focal_gamma must be ≥ 0"
                    .into(),
            );
        }
        if self.weight_mean_penalty != 0.0 && !self.method.weighted() {
            return Err(format!(
                "weight_mean_penalty applies to method `maxl-weighted` only (method is `{}`)",
                self.method.name()
            ));
        }
        Ok(())
    }

    /// λ as the method uses it.
    pub fn effective_entropy_weight(&self) -> f64 {
        match self.method {
            Method::MaxlNoEntropy => 0.0,
            _ => self.entropy_weight,
        }
    }

    /// μ as the method uses it: 0 without a label generator.
    pub fn effective_sample_entropy_weight(&self) -> f64 {
        if self.method.uses_generator() {
            self.sample_entropy_weight
        } else {
            0.0
        }
    }

    /// ν as the method uses it: 0 unless `maxl-weighted`.
    pub fn effective_weight_mean_penalty(&self) -> f64 {
        if self.method.weighted() {
            self.weight_mean_penalty
        } else {
            0.0
        }
    }

    /// The configuration as YAML, in the config file's format.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a TrainConfig always serialises")
    }
}

/// Checks the dataset section: fractions, paths, limits, coarse groups and class names.
fn validate_dataset(d: &DatasetConfig) -> Result<(), String> {
    if !(0.0..1.0).contains(&d.validation_fraction) {
        return Err(format!(
            "dataset.validation_fraction must be in [0, 1), got {}",
            d.validation_fraction
        ));
    }
    if d.path.is_none() && d.kind != DatasetKind::FashionMnist {
        return Err(format!(
            "dataset.path is required for dataset kind `{}`",
            d.kind.name()
        ));
    }
    if d.test_path.is_some()
        && matches!(
            d.kind,
            DatasetKind::FashionMnist
                | DatasetKind::Idx
                | DatasetKind::Cifar10
                | DatasetKind::Cifar100
        )
    {
        return Err(format!(
            "dataset.test_path applies to image-folder and csv, not `{}` (it has its own test split)",
            d.kind.name()
        ));
    }
    if !(0.0..1.0).contains(&d.test_fraction) {
        return Err(format!(
            "dataset.test_fraction must be in [0, 1), got {}",
            d.test_fraction
        ));
    }
    if d.train_limit == Some(0) || d.test_limit == Some(0) {
        return Err("dataset.train_limit and dataset.test_limit must be at least 1".into());
    }
    if let Some(groups) = &d.coarse_groups {
        validate_groups(groups)?;
    }
    let from_files = matches!(d.kind, DatasetKind::ImageFolder | DatasetKind::Csv);
    if d.random_resized_crop && !from_files {
        return Err(format!(
            "dataset.random_resized_crop applies to image-folder and csv, not `{}`",
            d.kind.name()
        ));
    }
    if d.random_resized_crop && d.crop_padding > 0 {
        return Err(format!(
            "dataset.random_resized_crop replaces the padded crop: set dataset.crop_padding to 0 (it is {})",
            d.crop_padding
        ));
    }
    if d.stream == StreamMode::Always && !from_files {
        return Err(format!(
            "dataset.stream: always applies to image-folder and csv, not `{}` (its files are read whole)",
            d.kind.name()
        ));
    }
    if d.class_names.is_some() && d.kind != DatasetKind::Idx {
        return Err(format!(
            "dataset.class_names applies to kind `idx`, not `{}` (its names come with the data)",
            d.kind.name()
        ));
    }
    Ok(())
}

fn validate_groups(groups: &[CoarseGroup]) -> Result<(), String> {
    if groups.is_empty() {
        return Err("dataset.coarse_groups is empty".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for g in groups {
        if g.classes.is_empty() {
            return Err(format!(
                "dataset.coarse_groups: group `{}` has no classes",
                g.name
            ));
        }
        for &c in &g.classes {
            if !seen.insert(c) {
                return Err(format!(
                    "dataset.coarse_groups: class {c} is in more than one group"
                ));
            }
        }
    }
    Ok(())
}

/// serde_yaml_ng's messages can span lines (context snippets); errors here are one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrainConfig, ConfigError> {
        TrainConfig::from_yaml(text, Path::new("run.yaml"))
    }

    /// Every training config the documentation shows (README.md and docs/*.md) parses and
    /// validates (the Kubernetes manifest among its YAML blocks is not a config).
    #[test]
    fn the_readme_and_docs_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("README.md")];
        let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        pages.sort();
        files.extend(pages);
        let docs: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
            .collect::<Vec<_>>()
            .join("\n");
        let blocks: Vec<&str> = docs
            .split("```yaml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .filter(|b| !b.contains("apiVersion:"))
            .collect();
        // The full config file and the authors' CIFAR-100 setting, at least.
        assert!(blocks.len() >= 2, "{}", blocks.len());
        for b in blocks {
            let c = parse(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
            c.validate().unwrap_or_else(|e| panic!("{e}\n{b}"));
        }
        // The authors' setting, as the documentation spells it.
        let authors = docs
            .split("The authors' CIFAR-100 setting")
            .nth(1)
            .and_then(|t| t.split("```yaml\n").nth(1))
            .and_then(|t| t.split("```").next())
            .unwrap();
        let c = parse(authors).unwrap();
        assert_eq!(c.dataset.crop_padding, 4);
        assert_eq!(c.dataset.validation_fraction, 0.0);
        assert_eq!(c.multitask_optimizer.momentum, 0.0);
    }

    #[test]
    fn empty_file_gives_the_defaults_and_they_round_trip() {
        let c = parse("# nothing\n").unwrap();
        assert_eq!(c, TrainConfig::default());
        let again = parse(&c.to_yaml()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn fields_override_defaults() {
        let c = parse(
            "method: human\nschedule: reference\nepochs: 7\nhierarchy:\n  psi: [2, 3]\n\
             model:\n  preset: vgg16\ndataset:\n  coarse_groups:\n    - {name: a, classes: [0, 1]}\n    - {name: b, classes: [2]}\n",
        )
        .unwrap();
        assert_eq!(c.method, Method::Human);
        assert_eq!(c.schedule, Schedule::Reference);
        assert_eq!(c.epochs, 7);
        assert_eq!(c.hierarchy.resolve(2).unwrap().num_aux(), 5);
        assert_eq!(c.model.resolve().unwrap().feature_dim(), 512);
        assert_eq!(c.batch_size, 100);
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let e = parse("epochs: 3\nbatch_size: [1,\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("run.yaml: "), "{e}");
        assert!(e.contains("line"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_types_unknown_fields_and_values_are_refused() {
        let e = parse("epochs: many\n").unwrap_err().to_string();
        assert!(e.contains("epochs") || e.contains("invalid type"), "{e}");
        let e = parse("epoch: 3\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `epoch`"), "{e}");
        let e = parse("method: magic\n").unwrap_err().to_string();
        assert!(e.contains("unknown variant `magic`"), "{e}");
        let e = parse("model:\n  preset: resnet\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "run.yaml: model: unknown preset `resnet` (known: small, vgg16, resnet18, resnet34, \
             resnet50, resnet18-cifar)"
        );
        let e = parse("hierarchy:\n  psi: [2, 0]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ψ[1] is 0"), "{e}");
        let e = parse("hierarchy:\n  psi: []\n").unwrap_err().to_string();
        assert!(e.contains("ψ is empty"), "{e}");
        let e = parse("multitask_optimizer: {lr: -1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("multitask_optimizer"), "{e}");
        let e = parse("dataset:\n  validation_fraction: 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("validation_fraction"), "{e}");
        let e = parse("dataset:\n  coarse_groups:\n    - {name: a, classes: [0]}\n    - {name: b, classes: [0]}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one group"), "{e}");
    }

    #[test]
    fn streaming_and_random_resized_crops_are_image_file_options() {
        let c = parse(
            "dataset: {kind: image-folder, path: img, stream: always, memory_budget_mb: 10, \
             random_resized_crop: true, crop_padding: 0}\n",
        )
        .unwrap();
        assert_eq!(c.dataset.stream, StreamMode::Always);
        assert_eq!(c.dataset.memory_budget_mb, 10);
        assert!(c.dataset.random_resized_crop);
        let e = parse("dataset: {kind: csv, path: l.csv, random_resized_crop: true}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("set dataset.crop_padding to 0 (it is 2)"), "{e}");
        let e = parse("dataset: {random_resized_crop: true, crop_padding: 0}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("image-folder and csv, not `fashion-mnist`"),
            "{e}"
        );
        let e = parse("dataset: {kind: cifar10, path: c, stream: always}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dataset.stream: always applies to image-folder"),
            "{e}"
        );
        let e = parse("dataset: {stream: sometimes}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = TrainConfig::load(Path::new("/nonexistent/cfg.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/cfg.yaml: cannot read"), "{e}");
    }

    #[test]
    fn no_entropy_forces_lambda_zero() {
        let mut c = TrainConfig::default();
        assert_eq!(c.effective_entropy_weight(), 0.2);
        c.method = Method::MaxlNoEntropy;
        assert_eq!(c.effective_entropy_weight(), 0.0);
    }
}
