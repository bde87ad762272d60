//! The architecture description: one value from which the multi-task network f and the label
//! generator g are built — by tch for training, by the ONNX exporter for deployment, by the tests.
//!
//! A backbone is a VGG-style stack of blocks; each block is `convs` × (3×3 conv, pad 1 → batch
//! norm → ReLU) followed by a 2×2 max-pool. Heads are Linear(F, hidden) → ReLU → Linear(hidden, out).
//! Parameter names follow PyTorch state-dict conventions so checkpoints read naturally there.

use serde::{Deserialize, Serialize};

/// The input a network expects, and how raw pixels are normalised before it sees them:
/// `x = (pixel / 255 − mean) / std`, the same for every channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows, pixels.
    pub height: usize,
    /// Columns, pixels.
    pub width: usize,
    /// Subtracted from every pixel in [0, 1].
    pub mean: f32,
    /// Divides every pixel after the mean is subtracted.
    pub std: f32,
}

/// `convs` convolutions with `channels` output channels each, then a 2×2 max-pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvBlock {
    /// Convolutions in the block.
    pub convs: usize,
    /// Output channels of each convolution.
    pub channels: usize,
}

/// A network's shape: its input, its backbone's blocks and its heads' width. Both networks
/// (the multi-task network f and the label generator g) are built from one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// The input images and their normalisation.
    pub input: InputSpec,
    /// The backbone's blocks, input side first.
    pub blocks: Vec<ConvBlock>,
    /// Width of the hidden layer of every head.
    pub head_hidden: usize,
}

/// What a parameter is; decides its initialisation and whether an optimiser updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A convolution's kernel, `[out, in, 3, 3]`.
    ConvWeight,
    /// A convolution's bias, `[out]`.
    ConvBias,
    /// Batch norm's scale γ, `[channels]`.
    BnWeight,
    /// Batch norm's shift β, `[channels]`.
    BnBias,
    /// Batch norm's running mean (a buffer), `[channels]`.
    BnRunningMean,
    /// Batch norm's running variance (a buffer), `[channels]`.
    BnRunningVar,
    /// A linear layer's weight, `[out, in]`.
    LinearWeight,
    /// A linear layer's bias, `[out]`.
    LinearBias,
}

impl ParamKind {
    /// Running statistics are buffers: they are saved and exported but never trained.
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamKind::BnRunningMean | ParamKind::BnRunningVar)
    }
}

/// One parameter or buffer of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Its PyTorch state-dict name (`backbone.0.conv.weight`).
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// What it is.
    pub kind: ParamKind,
}

/// One 3×3 convolution of the backbone, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvLayer {
    /// Index used in parameter names: `backbone.{index}.conv.weight`.
    pub index: usize,
    /// Channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// A 2×2 max-pool follows this layer's ReLU (the last conv of a block).
    pub pool_after: bool,
}

/// Names of the heads, used as parameter-name prefixes.
/// The multi-task network's primary head.
pub const PRIMARY_HEAD: &str = "primary_head";
/// The multi-task network's auxiliary head.
pub const AUX_HEAD: &str = "aux_head";
/// The label generator's head.
pub const GENERATOR_HEAD: &str = "head";

/// Why an architecture cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    /// A preset name that is not in [`PRESETS`].
    #[error("unknown preset `{0}` (known: {known})", known = PRESETS.join(", "))]
    UnknownPreset(String),
    /// A backbone without blocks.
    #[error("architecture has no blocks")]
    NoBlocks,
    /// A block (its index, from 0) has no convolutions or no channels.
    #[error("architecture block {0} has zero convs or zero channels")]
    EmptyBlock(usize),
    /// The input shrinks to nothing before the last pool.
    #[error("input {channels}×{height}×{width} is too small for {pools} 2×2 pools")]
    InputTooSmall {
        /// The input's channels.
        channels: usize,
        /// The input's height.
        height: usize,
        /// The input's width.
        width: usize,
        /// The number of pools (blocks).
        pools: usize,
    },
    /// A zero channel count or head width, or a normalisation std that is not positive.
    #[error("input channels, head width and normalisation std must be positive")]
    BadSizes,
}

/// The names [`Architecture::preset`] knows.
pub const PRESETS: &[&str] = &["small", "vgg16"];

impl Architecture {
    /// `vgg16`: the paper's network (VGG-16 with batch norm, 3×32×32). `small`: a narrow
    /// VGG-style network for 1×28×28 images that trains on two CPU cores in minutes.
    pub fn preset(name: &str) -> Result<Self, ArchError> {
        match name {
            "vgg16" => Ok(Self {
                input: InputSpec {
                    channels: 3,
                    height: 32,
                    width: 32,
                    mean: 0.5,
                    std: 0.2,
                },
                blocks: [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]
                    .map(|(convs, channels)| ConvBlock { convs, channels })
                    .to_vec(),
                head_hidden: 512,
            }),
            "small" => Ok(Self {
                input: InputSpec {
                    channels: 1,
                    height: 28,
                    width: 28,
                    mean: 0.5,
                    std: 0.2,
                },
                blocks: [(1, 16), (1, 32)]
                    .map(|(convs, channels)| ConvBlock { convs, channels })
                    .to_vec(),
                head_hidden: 128,
            }),
            other => Err(ArchError::UnknownPreset(other.to_string())),
        }
    }

    /// Checks that the network can be built: blocks present and non-empty, sizes positive, the
    /// input large enough for every pool.
    pub fn validate(&self) -> Result<(), ArchError> {
        if self.blocks.is_empty() {
            return Err(ArchError::NoBlocks);
        }
        if let Some(i) = self
            .blocks
            .iter()
            .position(|b| b.convs == 0 || b.channels == 0)
        {
            return Err(ArchError::EmptyBlock(i));
        }
        let InputSpec {
            channels,
            height,
            width,
            std,
            ..
        } = self.input;
        if channels == 0
            || self.head_hidden == 0
            || std.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return Err(ArchError::BadSizes);
        }
        let pools = self.blocks.len();
        if pools >= usize::BITS as usize || (height >> pools) == 0 || (width >> pools) == 0 {
            return Err(ArchError::InputTooSmall {
                channels,
                height,
                width,
                pools,
            });
        }
        Ok(())
    }

    /// The backbone's convolutions in order.
    pub fn conv_layers(&self) -> Vec<ConvLayer> {
        let mut layers = Vec::new();
        let mut in_channels = self.input.channels;
        for block in &self.blocks {
            for i in 0..block.convs {
                layers.push(ConvLayer {
                    index: layers.len(),
                    in_channels,
                    out_channels: block.channels,
                    pool_after: i + 1 == block.convs,
                });
                in_channels = block.channels;
            }
        }
        layers
    }

    /// Spatial size of the backbone's output (each pool floors, as PyTorch's MaxPool2d does).
    pub fn feature_hw(&self) -> (usize, usize) {
        let pools = self.blocks.len();
        (self.input.height >> pools, self.input.width >> pools)
    }

    /// F, the length of the flattened backbone output.
    pub fn feature_dim(&self) -> usize {
        let (h, w) = self.feature_hw();
        self.blocks.last().map_or(0, |b| b.channels) * h * w
    }

    /// Parameters and buffers of one backbone, in a fixed order.
    pub fn backbone_params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        for l in self.conv_layers() {
            let p = format!("backbone.{}", l.index);
            let c = l.out_channels;
            out.push(spec(
                &p,
                "conv.weight",
                vec![c, l.in_channels, 3, 3],
                ParamKind::ConvWeight,
            ));
            out.push(spec(&p, "conv.bias", vec![c], ParamKind::ConvBias));
            out.push(spec(&p, "bn.weight", vec![c], ParamKind::BnWeight));
            out.push(spec(&p, "bn.bias", vec![c], ParamKind::BnBias));
            out.push(spec(
                &p,
                "bn.running_mean",
                vec![c],
                ParamKind::BnRunningMean,
            ));
            out.push(spec(&p, "bn.running_var", vec![c], ParamKind::BnRunningVar));
        }
        out
    }

    /// Parameters of a head Linear(F, hidden) → ReLU → Linear(hidden, out); indices 0 and 2 as
    /// in a PyTorch `nn.Sequential`.
    pub fn head_params(&self, head: &str, out_dim: usize) -> Vec<ParamSpec> {
        let (f, h) = (self.feature_dim(), self.head_hidden);
        vec![
            spec(head, "0.weight", vec![h, f], ParamKind::LinearWeight),
            spec(head, "0.bias", vec![h], ParamKind::LinearBias),
            spec(head, "2.weight", vec![out_dim, h], ParamKind::LinearWeight),
            spec(head, "2.bias", vec![out_dim], ParamKind::LinearBias),
        ]
    }

    /// All parameters of the multi-task network f (backbone, primary head, auxiliary head).
    /// With `num_aux == 0` (the single-task baseline) there is no auxiliary head.
    pub fn multitask_params(&self, num_primary: usize, num_aux: usize) -> Vec<ParamSpec> {
        let mut out = self.backbone_params();
        out.extend(self.head_params(PRIMARY_HEAD, num_primary));
        if num_aux > 0 {
            out.extend(self.head_params(AUX_HEAD, num_aux));
        }
        out
    }

    /// All parameters of the label generator g.
    pub fn generator_params(&self, num_aux: usize) -> Vec<ParamSpec> {
        let mut out = self.backbone_params();
        out.extend(self.head_params(GENERATOR_HEAD, num_aux));
        out
    }
}

fn spec(prefix: &str, name: &str, shape: Vec<usize>, kind: ParamKind) -> ParamSpec {
    ParamSpec {
        name: format!("{prefix}.{name}"),
        shape,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg16_matches_the_paper() {
        let a = Architecture::preset("vgg16").unwrap();
        a.validate().unwrap();
        let convs = a.conv_layers();
        assert_eq!(convs.len(), 13);
        assert_eq!(convs.iter().filter(|l| l.pool_after).count(), 5);
        assert_eq!(a.feature_dim(), 512);
        let p = a.multitask_params(20, 100);
        // 13 convs × 6 tensors + 2 heads × 4 tensors.
        assert_eq!(p.len(), 13 * 6 + 8);
        assert_eq!(p[0].shape, vec![64, 3, 3, 3]);
        let aux_out = p.iter().find(|s| s.name == "aux_head.2.weight").unwrap();
        assert_eq!(aux_out.shape, vec![100, 512]);
        let trainable: usize = p
            .iter()
            .filter(|s| s.kind.is_trainable())
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        // torchvision's vgg16_bn features (14,723,136 trainable) + two 512-wide heads.
        assert_eq!(
            trainable,
            14_723_136 + (512 * 512 + 512) * 2 + 512 * 20 + 20 + 512 * 100 + 100
        );
    }

    #[test]
    fn small_preset_and_validation() {
        let a = Architecture::preset("small").unwrap();
        a.validate().unwrap();
        assert_eq!(a.feature_hw(), (7, 7));
        assert!(matches!(
            Architecture::preset("resnet"),
            Err(ArchError::UnknownPreset(_))
        ));
        let mut tiny = a.clone();
        tiny.input.height = 2;
        assert!(matches!(
            tiny.validate(),
            Err(ArchError::InputTooSmall { .. })
        ));
        let mut empty = a.clone();
        empty.blocks[0].convs = 0;
        assert_eq!(empty.validate(), Err(ArchError::EmptyBlock(0)));
        let mut single = a.multitask_params(10, 0);
        single.retain(|s| s.name.starts_with("aux_head"));
        assert!(single.is_empty());
        assert_eq!(a.generator_params(50).last().unwrap().name, "head.2.bias");
    }
}
