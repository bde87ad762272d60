//! The architecture description: one value from which the multi-task network f and the label
//! generator g are built — by tch for training, by the ONNX exporter for deployment, by the tests.
//!
//! A backbone is either
//! * VGG-style (`blocks`): each block is `convs` × (3×3 conv, pad 1 → batch norm → ReLU)
//!   followed by a 2×2 max-pool, the features flattened; or
//! * a ResNet (`resnet`) as torchvision defines it: basic or bottleneck blocks, stride-2
//!   downsample convolutions with batch norm, the 7×7/stride-2 stem and 3×3 max-pool for photos
//!   (`imagenet`) or a 3×3/stride-1 stem without pool for 32×32 inputs (`cifar`), and global
//!   average pooling. Its parameter names are torchvision's under `backbone.`
//!   (`backbone.layer2.0.downsample.0.weight`), so a torchvision state dict maps by name.
//!
//! Both kinds are lowered to one list of [`Op`]s ([`Architecture::backbone_ops`]); tch's forward,
//! the ONNX builder and the parameter list all walk that list, so they cannot disagree.
//! Heads are Linear(F, hidden) → ReLU → Linear(hidden, out).

use serde::{Deserialize, Serialize};

/// A per-channel statistic of the input normalisation: one value for every channel, or one
/// value per channel. Written as a number or a list in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerChannel {
    /// The same value for every channel.
    Uniform(f32),
    /// One value per channel, channel 0 first.
    Channels(Vec<f32>),
}

impl PerChannel {
    /// The value for `channel`.
    pub fn get(&self, channel: usize) -> f32 {
        match self {
            PerChannel::Uniform(v) => *v,
            PerChannel::Channels(v) => v.get(channel).copied().unwrap_or(f32::NAN),
        }
    }

    /// One value per channel, `channels` long.
    pub fn expand(&self, channels: usize) -> Vec<f32> {
        (0..channels).map(|c| self.get(c)).collect()
    }

    fn fits(&self, channels: usize) -> bool {
        match self {
            PerChannel::Uniform(_) => true,
            PerChannel::Channels(v) => v.len() == channels,
        }
    }

    fn values(&self) -> &[f32] {
        match self {
            PerChannel::Uniform(v) => std::slice::from_ref(v),
            PerChannel::Channels(v) => v,
        }
    }
}

impl From<f32> for PerChannel {
    fn from(v: f32) -> Self {
        PerChannel::Uniform(v)
    }
}

/// ImageNet's per-channel mean (RGB), torchvision's normalisation for its pretrained models.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel std (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How an image of any size becomes the network's H × W input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Resized to H × W directly, the aspect ratio not kept.
    #[default]
    Stretch,
    /// Resized so its shorter side is this many pixels (aspect ratio kept), then the central
    /// H × W cropped: torchvision's `Resize(S) → CenterCrop((H, W))` evaluation transform.
    ShorterSide(usize),
}

impl Resize {
    /// Whether this is [`Resize::Stretch`].
    pub fn is_stretch(&self) -> bool {
        matches!(self, Resize::Stretch)
    }

    /// The policy's name and size as one word: `stretch` or `shorter-side-256`.
    pub fn describe(&self) -> String {
        match self {
            Resize::Stretch => "stretch".into(),
            Resize::ShorterSide(s) => format!("shorter-side-{s}"),
        }
    }
}

/// The input a network expects, and how raw pixels become it: the image is resized by
/// `resize`, then `x = (pixel / 255 − mean[c]) / std[c]` per channel c.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows, pixels.
    pub height: usize,
    /// Columns, pixels.
    pub width: usize,
    /// Subtracted from every pixel in [0, 1]: one value, or one per channel.
    pub mean: PerChannel,
    /// Divides every pixel after the mean is subtracted: one value, or one per channel.
    pub std: PerChannel,
    /// How an image is brought to `height` × `width` (default: stretched).
    #[serde(
        default,
        skip_serializing_if = "Resize::is_stretch",
        with = "serde_yaml_ng::with::singleton_map"
    )]
    pub resize: Resize,
}

impl InputSpec {
    /// Checks the sizes are positive, the std positive, the mean and std one value or one per
    /// channel, and a shorter-side resize at least the crop it feeds.
    pub fn validate(&self) -> Result<(), ArchError> {
        let positive = |v: &f32| v.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater);
        if self.channels == 0
            || self.height == 0
            || self.width == 0
            || !self.std.values().iter().all(positive)
        {
            return Err(ArchError::BadSizes);
        }
        if !self.mean.fits(self.channels) || !self.std.fits(self.channels) {
            return Err(ArchError::ChannelStats(self.channels));
        }
        if let Resize::ShorterSide(size) = self.resize
            && size < self.height.max(self.width)
        {
            return Err(ArchError::ResizeTooSmall {
                size,
                height: self.height,
                width: self.width,
            });
        }
        Ok(())
    }
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

/// A ResNet's residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// Two 3×3 convolutions (resnet18, resnet34); expansion 1.
    Basic,
    /// 1×1 → 3×3 (strided) → 1×1 convolutions (resnet50 and up, torchvision's "v1.5");
    /// expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block per unit of its width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A ResNet's stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// 7×7 stride-2 convolution, batch norm, ReLU, 3×3 stride-2 max-pool (photos).
    Imagenet,
    /// 3×3 stride-1 convolution, batch norm, ReLU, no pool (32×32 inputs).
    Cifar,
}

/// A ResNet backbone: `layers[i]` blocks in stage i, of width `widths[i]`; stage 0 keeps the
/// stem's resolution, every later stage halves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetSpec {
    /// Basic or bottleneck blocks.
    pub block: BlockKind,
    /// Blocks per stage (resnet18: `[2, 2, 2, 2]`).
    pub layers: Vec<usize>,
    /// Width of each stage (torchvision: `[64, 128, 256, 512]`).
    pub widths: Vec<usize>,
    /// The stem.
    pub stem: Stem,
    /// Output channels of the stem's convolution (default: the first stage's width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem_width: Option<usize>,
}

impl ResNetSpec {
    fn stem_channels(&self) -> usize {
        self.stem_width
            .unwrap_or_else(|| self.widths.first().copied().unwrap_or(0))
    }
}

/// A network's shape: its input, its backbone (`blocks` or `resnet`, exactly one) and its
/// heads' width. Both networks (the multi-task network f and the label generator g) are built
/// from one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// The input images and their normalisation.
    pub input: InputSpec,
    /// A VGG-style backbone's blocks, input side first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<ConvBlock>,
    /// A ResNet backbone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resnet: Option<ResNetSpec>,
    /// Width of the hidden layer of every head.
    pub head_hidden: usize,
}

/// What a parameter is; decides its initialisation and whether an optimiser updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A convolution's kernel, `[out, in, k, k]`.
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

impl ParamSpec {
    /// Whether the tensor belongs to the backbone (not to a head).
    pub fn is_backbone(&self) -> bool {
        self.name.starts_with(BACKBONE_PREFIX)
    }
}

/// A 2-D convolution of the backbone (square kernel, no dilation, no groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv {
    /// Its name without `.weight`/`.bias` (`backbone.layer1.0.conv1`).
    pub name: String,
    /// Channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Whether it has a bias (VGG blocks do; ResNet convolutions, followed by batch norm, don't).
    pub bias: bool,
}

/// One step of a backbone's forward, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A convolution.
    Conv(Conv),
    /// Batch norm over `channels`; its tensors are `{name}.weight`, `.bias`, `.running_mean`,
    /// `.running_var`.
    BatchNorm {
        /// Its name (`backbone.bn1`).
        name: String,
        /// Channels normalised.
        channels: usize,
    },
    /// ReLU.
    Relu,
    /// Max-pool (floor mode; padding counts as −∞).
    MaxPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding on every side.
        padding: usize,
    },
    /// `body(x) + shortcut(x)`; an empty shortcut is the identity. (The ReLU after the sum is
    /// the next op.)
    Residual {
        /// The block's main path.
        body: Vec<Op>,
        /// The downsample path, or empty for the identity.
        shortcut: Vec<Op>,
    },
    /// Global average pooling to `[N, C]` (the features).
    GlobalAvgPool,
    /// Flattening `[N, C, H, W]` to `[N, C·H·W]` (the features).
    Flatten,
}

/// The prefix of every backbone tensor's name.
pub const BACKBONE_PREFIX: &str = "backbone.";
/// Names of the heads, used as parameter-name prefixes.
/// The multi-task network's primary head.
pub const PRIMARY_HEAD: &str = "primary_head";
/// The multi-task network's auxiliary head.
pub const AUX_HEAD: &str = "aux_head";
/// The label generator's head.
pub const GENERATOR_HEAD: &str = "head";
/// Name of the label generator's per-image weight head (`maxl-weighted`): one Linear(F, 1) on
/// g's backbone features, w = 2·sigmoid(s).
pub const WEIGHT_HEAD: &str = "weight_head";

/// Why an architecture cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    /// A preset name that is not in [`PRESETS`].
    #[error("unknown preset `{0}` (known: {known})", known = PRESETS.join(", "))]
    UnknownPreset(String),
    /// Neither `blocks` nor `resnet`, or both.
    #[error("architecture needs exactly one backbone: `blocks` (VGG-style) or `resnet`")]
    NoBlocks,
    /// A block (its index, from 0) has no convolutions or no channels.
    #[error("architecture block {0} has zero convs or zero channels")]
    EmptyBlock(usize),
    /// A ResNet description that cannot be built.
    #[error("resnet: {0}")]
    BadResNet(String),
    /// The input shrinks to nothing inside the backbone.
    #[error("input {channels}×{height}×{width} is too small for this backbone")]
    InputTooSmall {
        /// The input's channels.
        channels: usize,
        /// The input's height.
        height: usize,
        /// The input's width.
        width: usize,
    },
    /// A zero size or head width, or a normalisation std that is not positive.
    #[error("input channels, height, width, head width and normalisation std must be positive")]
    BadSizes,
    /// A per-channel mean or std whose length is not the input's channel count.
    #[error("input mean and std need one value or one per channel ({0} channels)")]
    ChannelStats(usize),
    /// A shorter-side resize below the crop it feeds.
    #[error("resize shorter-side {size} is below the {height}×{width} crop it feeds")]
    ResizeTooSmall {
        /// The shorter side's size.
        size: usize,
        /// The crop's height.
        height: usize,
        /// The crop's width.
        width: usize,
    },
}

/// The names [`Architecture::preset`] knows.
pub const PRESETS: &[&str] = &[
    "small",
    "vgg16",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet18-cifar",
];

fn vgg(
    channels: usize,
    side: usize,
    blocks: &[(usize, usize)],
    head_hidden: usize,
) -> Architecture {
    Architecture {
        input: InputSpec {
            channels,
            height: side,
            width: side,
            mean: 0.5.into(),
            std: 0.2.into(),
            resize: Resize::Stretch,
        },
        blocks: blocks
            .iter()
            .map(|&(convs, channels)| ConvBlock { convs, channels })
            .collect(),
        resnet: None,
        head_hidden,
    }
}

fn resnet(block: BlockKind, layers: [usize; 4], stem: Stem, side: usize) -> Architecture {
    Architecture {
        input: InputSpec {
            channels: 3,
            height: side,
            width: side,
            mean: PerChannel::Channels(IMAGENET_MEAN.to_vec()),
            std: PerChannel::Channels(IMAGENET_STD.to_vec()),
            resize: match stem {
                // torchvision's evaluation transform: Resize(256) → CenterCrop(224).
                Stem::Imagenet => Resize::ShorterSide(side * 8 / 7),
                Stem::Cifar => Resize::Stretch,
            },
        },
        blocks: Vec::new(),
        resnet: Some(ResNetSpec {
            block,
            layers: layers.to_vec(),
            widths: vec![64, 128, 256, 512],
            stem,
            stem_width: None,
        }),
        head_hidden: 512,
    }
}

impl Architecture {
    /// `vgg16`: the paper's network (VGG-16 with batch norm, 3×32×32). `small`: a narrow
    /// VGG-style network for 1×28×28 images that trains on two CPU cores in minutes.
    /// `resnet18`, `resnet34`, `resnet50`: torchvision's ImageNet layouts at 3×224×224 with
    /// ImageNet's normalisation and `Resize(256) → CenterCrop(224)`. `resnet18-cifar`: resnet18
    /// with the 3×3 stride-1 stem and no max-pool, at 3×32×32.
    pub fn preset(name: &str) -> Result<Self, ArchError> {
        match name {
            "vgg16" => Ok(vgg(
                3,
                32,
                &[(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)],
                512,
            )),
            "small" => Ok(vgg(1, 28, &[(1, 16), (1, 32)], 128)),
            "resnet18" => Ok(resnet(BlockKind::Basic, [2, 2, 2, 2], Stem::Imagenet, 224)),
            "resnet34" => Ok(resnet(BlockKind::Basic, [3, 4, 6, 3], Stem::Imagenet, 224)),
            "resnet50" => Ok(resnet(
                BlockKind::Bottleneck,
                [3, 4, 6, 3],
                Stem::Imagenet,
                224,
            )),
            "resnet18-cifar" => Ok(resnet(BlockKind::Basic, [2, 2, 2, 2], Stem::Cifar, 32)),
            other => Err(ArchError::UnknownPreset(other.to_string())),
        }
    }

    /// The same network at another input size. A shorter-side resize keeps its ratio to the
    /// crop (256 : 224 for the ImageNet presets).
    pub fn with_input_size(mut self, height: usize, width: usize) -> Self {
        let i = &mut self.input;
        if let Resize::ShorterSide(s) = i.resize {
            let old = i.height.max(i.width).max(1);
            let new = height.max(width);
            i.resize = Resize::ShorterSide((new * s).div_ceil(old).max(new));
        }
        i.height = height;
        i.width = width;
        self
    }

    /// Checks that the network can be built: one backbone, non-empty, sizes positive, the input
    /// large enough for every stride and pool, the normalisation and resize consistent.
    pub fn validate(&self) -> Result<(), ArchError> {
        match (&self.resnet, self.blocks.is_empty()) {
            (None, true) | (Some(_), false) => return Err(ArchError::NoBlocks),
            (None, false) => {
                if let Some(i) = self
                    .blocks
                    .iter()
                    .position(|b| b.convs == 0 || b.channels == 0)
                {
                    return Err(ArchError::EmptyBlock(i));
                }
            }
            (Some(r), true) => {
                if r.layers.is_empty() || r.layers.len() != r.widths.len() {
                    return Err(ArchError::BadResNet(format!(
                        "`layers` ({}) and `widths` ({}) need one entry per stage, at least one",
                        r.layers.len(),
                        r.widths.len()
                    )));
                }
                if r.layers.contains(&0) || r.widths.contains(&0) || r.stem_channels() == 0 {
                    return Err(ArchError::BadResNet(
                        "every stage needs at least one block and a positive width".into(),
                    ));
                }
            }
        }
        let i = &self.input;
        if self.head_hidden == 0 {
            return Err(ArchError::BadSizes);
        }
        i.validate()?;
        if self.feature_shape().is_none() || i.height.min(i.width) < self.total_stride() {
            return Err(ArchError::InputTooSmall {
                channels: i.channels,
                height: i.height,
                width: i.width,
            });
        }
        Ok(())
    }

    /// How many input pixels one feature-map pixel of the last stage spans on each axis: the
    /// smallest input the backbone takes (32 for the ImageNet ResNet layouts).
    pub fn total_stride(&self) -> usize {
        match &self.resnet {
            Some(r) => {
                let stem = match r.stem {
                    Stem::Imagenet => 4,
                    Stem::Cifar => 1,
                };
                stem << (r.layers.len().saturating_sub(1)).min(16)
            }
            None => 1 << self.blocks.len().min(16),
        }
    }

    /// Whether the backbone is a ResNet.
    pub fn is_resnet(&self) -> bool {
        self.resnet.is_some()
    }

    /// The backbone's forward as a list of ops.
    pub fn backbone_ops(&self) -> Vec<Op> {
        match &self.resnet {
            Some(r) => resnet_ops(r, self.input.channels),
            None => vgg_ops(&self.blocks, self.input.channels),
        }
    }

    /// The backbone's output as (channels, height, width) before the final flatten or pooling;
    /// `None` when the input shrinks to nothing.
    fn feature_shape(&self) -> Option<(usize, usize, usize)> {
        let i = &self.input;
        shape_through(&self.backbone_ops(), (i.channels, i.height, i.width))
    }

    /// F, the length of the backbone's feature vector (0 for an input too small).
    pub fn feature_dim(&self) -> usize {
        match self.feature_shape() {
            Some((c, _, _)) if self.is_resnet() => c,
            Some((c, h, w)) => c * h * w,
            None => 0,
        }
    }

    /// Parameters and buffers of one backbone, in the order its ops use them.
    pub fn backbone_params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        collect_params(&self.backbone_ops(), &mut out);
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

    /// The weight head of `maxl-weighted`'s label generator: Linear(F, 1) (`weight_head.weight`
    /// [1, F], `weight_head.bias` \[1\]).
    pub fn weight_head_params(&self) -> Vec<ParamSpec> {
        vec![
            spec(
                WEIGHT_HEAD,
                "weight",
                vec![1, self.feature_dim()],
                ParamKind::LinearWeight,
            ),
            spec(WEIGHT_HEAD, "bias", vec![1], ParamKind::LinearBias),
        ]
    }

    /// All parameters of the label generator g, with the weight head after the label head when
    /// `weighted` (`maxl-weighted`).
    pub fn generator_params_for(&self, num_aux: usize, weighted: bool) -> Vec<ParamSpec> {
        let mut out = self.generator_params(num_aux);
        if weighted {
            out.extend(self.weight_head_params());
        }
        out
    }
}

fn vgg_ops(blocks: &[ConvBlock], in_channels: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    let (mut index, mut c_in) = (0, in_channels);
    for block in blocks {
        for _ in 0..block.convs {
            ops.push(Op::Conv(Conv {
                name: format!("backbone.{index}.conv"),
                in_channels: c_in,
                out_channels: block.channels,
                kernel: 3,
                stride: 1,
                padding: 1,
                bias: true,
            }));
            ops.push(Op::BatchNorm {
                name: format!("backbone.{index}.bn"),
                channels: block.channels,
            });
            ops.push(Op::Relu);
            c_in = block.channels;
            index += 1;
        }
        ops.push(Op::MaxPool {
            kernel: 2,
            stride: 2,
            padding: 0,
        });
    }
    ops.push(Op::Flatten);
    ops
}

fn conv(name: String, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Op {
    Op::Conv(Conv {
        name,
        in_channels: c_in,
        out_channels: c_out,
        kernel,
        stride,
        padding: kernel / 2,
        bias: false,
    })
}

fn bn(name: String, channels: usize) -> Op {
    Op::BatchNorm { name, channels }
}

fn resnet_ops(r: &ResNetSpec, in_channels: usize) -> Vec<Op> {
    let stem = r.stem_channels();
    let mut ops = match r.stem {
        Stem::Imagenet => vec![
            conv("backbone.conv1".into(), in_channels, stem, 7, 2),
            bn("backbone.bn1".into(), stem),
            Op::Relu,
            Op::MaxPool {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
        ],
        Stem::Cifar => vec![
            conv("backbone.conv1".into(), in_channels, stem, 3, 1),
            bn("backbone.bn1".into(), stem),
            Op::Relu,
        ],
    };
    let expansion = r.block.expansion();
    let mut c_in = stem;
    for (stage, (&blocks, &width)) in r.layers.iter().zip(&r.widths).enumerate() {
        for b in 0..blocks {
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let p = format!("backbone.layer{}.{b}", stage + 1);
            let c_out = width * expansion;
            let body = match r.block {
                BlockKind::Basic => vec![
                    conv(format!("{p}.conv1"), c_in, width, 3, stride),
                    bn(format!("{p}.bn1"), width),
                    Op::Relu,
                    conv(format!("{p}.conv2"), width, width, 3, 1),
                    bn(format!("{p}.bn2"), width),
                ],
                BlockKind::Bottleneck => vec![
                    conv(format!("{p}.conv1"), c_in, width, 1, 1),
                    bn(format!("{p}.bn1"), width),
                    Op::Relu,
                    conv(format!("{p}.conv2"), width, width, 3, stride),
                    bn(format!("{p}.bn2"), width),
                    Op::Relu,
                    conv(format!("{p}.conv3"), width, c_out, 1, 1),
                    bn(format!("{p}.bn3"), c_out),
                ],
            };
            let shortcut = if stride != 1 || c_in != c_out {
                vec![
                    conv(format!("{p}.downsample.0"), c_in, c_out, 1, stride),
                    bn(format!("{p}.downsample.1"), c_out),
                ]
            } else {
                Vec::new()
            };
            ops.push(Op::Residual { body, shortcut });
            ops.push(Op::Relu);
            c_in = c_out;
        }
    }
    ops.push(Op::GlobalAvgPool);
    ops
}

/// The (channels, height, width) after `ops` (before a final flatten or pooling), or `None`
/// when a spatial size reaches zero.
fn shape_through(ops: &[Op], mut s: (usize, usize, usize)) -> Option<(usize, usize, usize)> {
    let window = |n: usize, k: usize, st: usize, p: usize| -> Option<usize> {
        (n + 2 * p).checked_sub(k).map(|v| v / st + 1)
    };
    for op in ops {
        s = match op {
            Op::Conv(c) => (
                c.out_channels,
                window(s.1, c.kernel, c.stride, c.padding)?,
                window(s.2, c.kernel, c.stride, c.padding)?,
            ),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => (
                s.0,
                window(s.1, *kernel, *stride, *padding)?,
                window(s.2, *kernel, *stride, *padding)?,
            ),
            Op::Residual { body, .. } => shape_through(body, s)?,
            Op::BatchNorm { .. } | Op::Relu | Op::GlobalAvgPool | Op::Flatten => s,
        };
        if s.1 == 0 || s.2 == 0 {
            return None;
        }
    }
    Some(s)
}

fn collect_params(ops: &[Op], out: &mut Vec<ParamSpec>) {
    for op in ops {
        match op {
            Op::Conv(c) => {
                out.push(spec(
                    &c.name,
                    "weight",
                    vec![c.out_channels, c.in_channels, c.kernel, c.kernel],
                    ParamKind::ConvWeight,
                ));
                if c.bias {
                    out.push(spec(
                        &c.name,
                        "bias",
                        vec![c.out_channels],
                        ParamKind::ConvBias,
                    ));
                }
            }
            Op::BatchNorm { name, channels } => {
                let c = *channels;
                out.push(spec(name, "weight", vec![c], ParamKind::BnWeight));
                out.push(spec(name, "bias", vec![c], ParamKind::BnBias));
                out.push(spec(
                    name,
                    "running_mean",
                    vec![c],
                    ParamKind::BnRunningMean,
                ));
                out.push(spec(name, "running_var", vec![c], ParamKind::BnRunningVar));
            }
            Op::Residual { body, shortcut } => {
                collect_params(body, out);
                collect_params(shortcut, out);
            }
            Op::Relu | Op::MaxPool { .. } | Op::GlobalAvgPool | Op::Flatten => {}
        }
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
        let ops = a.backbone_ops();
        assert_eq!(ops.iter().filter(|o| matches!(o, Op::Conv(_))).count(), 13);
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, Op::MaxPool { .. }))
                .count(),
            5
        );
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
        assert_eq!(a.feature_dim(), 32 * 7 * 7);
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

    fn trainable_backbone(a: &Architecture) -> usize {
        a.backbone_params()
            .iter()
            .filter(|s| s.kind.is_trainable())
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    #[test]
    fn resnets_match_torchvision() {
        // torchvision's parameter counts less the classifier fc (512·1000 + 1000, or 2048·1000 +
        // 1000 for resnet50).
        for (name, total, fc, features) in [
            ("resnet18", 11_689_512, 513_000, 512),
            ("resnet34", 21_797_672, 513_000, 512),
            ("resnet50", 25_557_032, 2_049_000, 2048),
            (
                "resnet18-cifar",
                11_689_512 - 64 * 3 * 49 + 64 * 3 * 9,
                513_000,
                512,
            ),
        ] {
            let a = Architecture::preset(name).unwrap();
            a.validate().unwrap();
            assert_eq!(trainable_backbone(&a), total - fc, "{name}");
            assert_eq!(a.feature_dim(), features, "{name}");
        }
        let r50 = Architecture::preset("resnet50").unwrap();
        let names: Vec<String> = r50.backbone_params().into_iter().map(|s| s.name).collect();
        assert_eq!(names[0], "backbone.conv1.weight");
        assert_eq!(names[1], "backbone.bn1.weight");
        for n in [
            "backbone.layer1.0.downsample.0.weight",
            "backbone.layer2.0.downsample.1.running_var",
            "backbone.layer4.2.conv3.weight",
            "backbone.layer4.2.bn3.bias",
        ] {
            assert!(names.iter().any(|m| m == n), "{n}");
        }
        assert!(!names.iter().any(|m| m.contains("conv1.bias")));
        // resnet18 has no downsample in layer1 (64 → 64, stride 1).
        let r18 = Architecture::preset("resnet18").unwrap();
        assert!(
            !r18.backbone_params()
                .iter()
                .any(|s| s.name.starts_with("backbone.layer1.0.downsample"))
        );
    }

    #[test]
    fn resnet_inputs_and_yaml_form() {
        let yaml = "input: {channels: 3, height: 40, width: 36, mean: [0.5, 0.4, 0.3], std: 0.25, resize: {shorter-side: 48}}\nresnet: {block: basic, layers: [1, 1], widths: [4, 8], stem: cifar}\nhead_hidden: 16\n";
        let a: Architecture = serde_yaml_ng::from_str(yaml).unwrap();
        a.validate().unwrap();
        assert_eq!(a.feature_dim(), 8);
        assert_eq!(a.input.resize, Resize::ShorterSide(48));
        assert_eq!(a.input.mean.expand(3), vec![0.5, 0.4, 0.3]);
        assert_eq!(a.input.std.expand(3), vec![0.25; 3]);
        let back: Architecture =
            serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
        // The smallest ImageNet-layout input: 32 → 16 → 8 → 4 → 2 → 1.
        let r = Architecture::preset("resnet18")
            .unwrap()
            .with_input_size(32, 32);
        r.validate().unwrap();
        assert_eq!(r.input.resize, Resize::ShorterSide(37));
        let tiny = Architecture::preset("resnet18")
            .unwrap()
            .with_input_size(16, 16);
        assert!(matches!(
            tiny.validate(),
            Err(ArchError::InputTooSmall { .. })
        ));
        let mut both = a.clone();
        both.blocks = vec![ConvBlock {
            convs: 1,
            channels: 2,
        }];
        assert_eq!(both.validate(), Err(ArchError::NoBlocks));
        let mut stats = a.clone();
        stats.input.mean = PerChannel::Channels(vec![0.5, 0.5]);
        assert_eq!(stats.validate(), Err(ArchError::ChannelStats(3)));
        let mut crop = a.clone();
        crop.input.resize = Resize::ShorterSide(39);
        assert!(matches!(
            crop.validate(),
            Err(ArchError::ResizeTooSmall { .. })
        ));
        let mut stages = a;
        stages.resnet.as_mut().unwrap().widths.pop();
        assert!(matches!(stages.validate(), Err(ArchError::BadResNet(_))));
    }
}
