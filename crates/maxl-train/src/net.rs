//! The two MAXL networks as *functional* tch forwards: every forward takes the parameter list
//! explicitly, so the same code runs at the live weights θ and at the fast weights θ1⁺ = θ1 − αG.
//!
//! Both networks are built from one [`Architecture`]; parameter order and names come from it
//! (`Architecture::multitask_params` / `generator_params`), so training, checkpoints and export
//! cannot disagree about them.

use maxl_core::arch::{Architecture, Op, ParamKind, ParamSpec, WEIGHT_HEAD};
use maxl_core::hierarchy::Hierarchy;
use tch::{Device, Kind, Tensor};

use crate::loss::mask_softmax;

/// PyTorch's BatchNorm2d defaults.
pub const BN_MOMENTUM: f64 = 0.1;
/// ε added to the variance in batch norm (PyTorch's BatchNorm2d default).
pub const BN_EPS: f64 = 1e-5;

/// How batch norm behaves in a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchNorm {
    /// Normalise with batch statistics and update the running statistics (stage 1 only).
    BatchUpdate,
    /// Normalise with batch statistics; running statistics untouched (stage 2, fast weights).
    Batch,
    /// Normalise with the running statistics (evaluation, export, inference).
    Running,
}

/// Initialisation of weights: the reference uses Xavier-uniform for f and Xavier-normal for g.
/// ResNet convolutions (without bias) always get torchvision's Kaiming-normal (fan-out, ReLU)
/// instead, N(0, 2 / fan_out), so an untrained ResNet starts where torchvision's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Xavier (Glorot) uniform, U(−b, b) with b = √(6 / (fan_in + fan_out)): f's weights.
    XavierUniform,
    /// Xavier (Glorot) normal, N(0, 2 / (fan_in + fan_out)): g's weights.
    XavierNormal,
}

/// Named tensors of one network in the architecture's order: trainable parameters (which
/// require grad) and batch-norm running statistics (which never do).
#[derive(Debug)]
pub struct ParamStore {
    /// Name, shape and kind of every tensor, in the architecture's order.
    pub specs: Vec<ParamSpec>,
    /// Trainable tensors, in the order of `specs` filtered by `is_trainable`.
    pub params: Vec<Tensor>,
    /// Running mean and variance per batch norm, in the order of `specs` filtered by
    /// `!is_trainable`.
    pub buffers: Vec<Tensor>,
    /// Each trainable tensor's learning-rate scale (1 unless the backbone's is set; 0 freezes).
    pub lr_scales: Vec<f64>,
}

impl ParamStore {
    /// Freshly initialised tensors: weights by `init`, biases 0, BN γ = 1, β = 0, running
    /// mean 0 and variance 1. Uses tch's global RNG (seed it with `tch::manual_seed`).
    pub fn init(specs: Vec<ParamSpec>, init: Init, kind: Kind, device: Device) -> Self {
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        tch::no_grad(|| {
            for (i, s) in specs.iter().enumerate() {
                let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
                let biased = specs
                    .get(i + 1)
                    .is_some_and(|n| n.kind == ParamKind::ConvBias);
                let t = match s.kind {
                    ParamKind::ConvWeight if !biased => {
                        let (_, fan_out) = fans(&s.shape);
                        let std = (2.0 / fan_out as f64).sqrt();
                        Tensor::empty(shape.as_slice(), (kind, device)).normal_(0.0, std)
                    }
                    ParamKind::ConvWeight | ParamKind::LinearWeight => {
                        let (fan_in, fan_out) = fans(&s.shape);
                        let mut t = Tensor::empty(shape.as_slice(), (kind, device));
                        match init {
                            Init::XavierUniform => {
                                let b = (6.0 / (fan_in + fan_out) as f64).sqrt();
                                t.uniform_(-b, b)
                            }
                            Init::XavierNormal => {
                                let std = (2.0 / (fan_in + fan_out) as f64).sqrt();
                                t.normal_(0.0, std)
                            }
                        }
                    }
                    ParamKind::BnWeight | ParamKind::BnRunningVar => {
                        Tensor::ones(shape.as_slice(), (kind, device))
                    }
                    _ => Tensor::zeros(shape.as_slice(), (kind, device)),
                };
                if s.kind.is_trainable() {
                    params.push(t.set_requires_grad(true));
                } else {
                    buffers.push(t);
                }
            }
        });
        let lr_scales = vec![1.0; params.len()];
        Self {
            specs,
            params,
            buffers,
            lr_scales,
        }
    }

    /// Builds a store from named tensors (a checkpoint or a fixture), checking names and shapes.
    pub fn from_named(
        specs: Vec<ParamSpec>,
        named: &[(String, Tensor)],
        kind: Kind,
        device: Device,
    ) -> Result<Self, String> {
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        for s in &specs {
            let t = named
                .iter()
                .find(|(n, _)| n == &s.name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("missing tensor `{}`", s.name))?;
            let want: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
            if t.size() != want {
                return Err(format!(
                    "tensor `{}` has shape {:?}, expected {:?}",
                    s.name,
                    t.size(),
                    want
                ));
            }
            let t = t.to_kind(kind).to_device(device).detach().copy();
            if s.kind.is_trainable() {
                params.push(t.set_requires_grad(true));
            } else {
                buffers.push(t);
            }
        }
        let lr_scales = vec![1.0; params.len()];
        Ok(Self {
            specs,
            params,
            buffers,
            lr_scales,
        })
    }

    /// Sets the backbone's learning-rate scale (the heads keep 1; 0 freezes the backbone).
    pub fn set_backbone_lr_scale(&mut self, scale: f64) {
        let backbone = self.specs.iter().filter(|s| s.kind.is_trainable());
        for (s, spec) in self.lr_scales.iter_mut().zip(backbone) {
            *s = if spec.is_backbone() { scale } else { 1.0 };
        }
    }

    /// All tensors with their names, parameters and buffers, in the architecture's order.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let (mut p, mut b) = (self.params.iter(), self.buffers.iter());
        self.specs
            .iter()
            .map(|s| {
                let t = if s.kind.is_trainable() {
                    p.next()
                } else {
                    b.next()
                };
                (s.name.clone(), t.expect("store matches its specs").detach())
            })
            .collect()
    }

    /// Names of the trainable parameters, in `params` order.
    pub fn param_names(&self) -> Vec<&str> {
        self.specs
            .iter()
            .filter(|s| s.kind.is_trainable())
            .map(|s| s.name.as_str())
            .collect()
    }
}

/// PyTorch's fan computation for Linear [out, in] and Conv [out, in, kh, kw] weights.
fn fans(shape: &[usize]) -> (usize, usize) {
    let receptive: usize = shape[2..].iter().product();
    (shape[1] * receptive, shape[0] * receptive)
}

/// cuDNN's batch norm on CUDA (its double backward and forward-mode formulas exist); the CPU
/// ignores the flag.
const CUDNN: bool = true;

/// The next unused trainable tensors and running statistics of a forward.
struct Cursor<'a> {
    params: std::slice::Iter<'a, Tensor>,
    buffers: std::slice::Iter<'a, Tensor>,
}

impl Cursor<'_> {
    fn param(&mut self) -> &Tensor {
        self.params
            .next()
            .expect("parameters match the architecture")
    }

    fn buffer(&mut self) -> &Tensor {
        self.buffers.next().expect("buffers match the architecture")
    }
}

/// Forward through a backbone: walks the architecture's ops, taking each op's trainable
/// tensors from `params` (conv: weight[, bias]; batch norm: γ, β) and its running statistics
/// from `buffers` in the architecture's order. Returns the features [N, F].
fn backbone(
    arch: &Architecture,
    x: &Tensor,
    params: &[Tensor],
    buffers: &[Tensor],
    bn: BatchNorm,
) -> Tensor {
    let mut cursor = Cursor {
        params: params.iter(),
        buffers: buffers.iter(),
    };
    run_ops(&arch.backbone_ops(), x, &mut cursor, bn)
}

fn run_ops(ops: &[Op], x: &Tensor, cur: &mut Cursor<'_>, bn: BatchNorm) -> Tensor {
    let mut h = x.shallow_clone();
    for op in ops {
        h = match op {
            Op::Conv(c) => {
                let w = cur.param().shallow_clone();
                let b = c.bias.then(|| cur.param().shallow_clone());
                let (s, p) = (c.stride as i64, c.padding as i64);
                h.conv2d(&w, b.as_ref(), [s, s], [p, p], [1, 1], 1)
            }
            Op::BatchNorm { .. } => {
                let (g, b) = (cur.param().shallow_clone(), cur.param().shallow_clone());
                let (mean, var) = (cur.buffer().shallow_clone(), cur.buffer().shallow_clone());
                let (running, training) = match bn {
                    BatchNorm::BatchUpdate => (true, true),
                    BatchNorm::Batch => (false, true),
                    BatchNorm::Running => (true, false),
                };
                let ghosts = ghost_batches();
                if training && ghosts > 1 {
                    ghost_batch_norm(&h, (&g, &b), running.then_some((&mean, &var)), ghosts)
                } else {
                    h.batch_norm(
                        Some(&g),
                        Some(&b),
                        running.then_some(&mean),
                        running.then_some(&var),
                        training,
                        BN_MOMENTUM,
                        BN_EPS,
                        CUDNN,
                    )
                }
            }
            Op::Relu => h.relu(),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let (k, s, p) = (*kernel as i64, *stride as i64, *padding as i64);
                h.max_pool2d([k, k], [s, s], [p, p], [1, 1], false)
            }
            Op::Residual { body, shortcut } => {
                let main = run_ops(body, &h, cur, bn);
                if shortcut.is_empty() {
                    main + &h
                } else {
                    main + run_ops(shortcut, &h, cur, bn)
                }
            }
            Op::GlobalAvgPool => h.mean_dim([2i64, 3].as_slice(), false, h.kind()),
            Op::Flatten => h.flatten(1, -1),
        };
    }
    h
}

static GHOST_BATCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Makes every training-mode batch norm of this process normalise each of `k` equal
/// consecutive parts of a batch with that part's own statistics ("ghost" batch norm), and
/// update running statistics by the mean of the parts' updates. One process then computes what
/// `k` data-parallel ranks compute on their shards of the batch (each rank normalises with its
/// own statistics; running statistics are averaged across ranks): the reference the
/// data-parallel trainer is tested against. 1 (the default) is plain batch norm.
pub fn set_ghost_batches(k: usize) {
    GHOST_BATCHES.store(k.max(1), std::sync::atomic::Ordering::SeqCst);
}

fn ghost_batches() -> usize {
    GHOST_BATCHES.load(std::sync::atomic::Ordering::SeqCst)
}

/// Batch norm in training mode with statistics per part of the batch (see
/// [`set_ghost_batches`]); `running`: the running mean and variance to update.
fn ghost_batch_norm(
    h: &Tensor,
    (weight, bias): (&Tensor, &Tensor),
    running: Option<(&Tensor, &Tensor)>,
    parts: usize,
) -> Tensor {
    let mut updated = Vec::new();
    let outs: Vec<Tensor> = h
        .chunk(parts as i64, 0)
        .iter()
        .map(|part| {
            let stats = running.map(|(m, v)| (m.copy(), v.copy()));
            let out = part.batch_norm(
                Some(weight),
                Some(bias),
                stats.as_ref().map(|s| &s.0),
                stats.as_ref().map(|s| &s.1),
                true,
                BN_MOMENTUM,
                BN_EPS,
                CUDNN,
            );
            updated.extend(stats);
            out
        })
        .collect();
    if let Some((mean, var)) = running {
        tch::no_grad(|| {
            let (ms, vs): (Vec<Tensor>, Vec<Tensor>) = updated.into_iter().unzip();
            let (mut m, mut v) = (mean.detach(), var.detach());
            m.copy_(&Tensor::stack(&ms, 0).mean_dim(0, false, mean.kind()));
            v.copy_(&Tensor::stack(&vs, 0).mean_dim(0, false, var.kind()));
        });
    }
    Tensor::cat(&outs, 0)
}

/// Linear → ReLU → Linear on four tensors (w0, b0, w2, b2).
fn head(features: &Tensor, p: &[Tensor]) -> Tensor {
    features
        .linear(&p[0], Some(&p[1]))
        .relu()
        .linear(&p[2], Some(&p[3]))
}

fn num_backbone_params(arch: &Architecture) -> usize {
    arch.backbone_params()
        .iter()
        .filter(|s| s.kind.is_trainable())
        .count()
}

/// f(θ1): shared backbone, primary head (K classes) and, unless single-task, auxiliary head (A).
#[derive(Debug)]
pub struct MultiTaskNet {
    /// The architecture the network is built from.
    pub arch: Architecture,
    /// K, the number of primary classes.
    pub num_primary: usize,
    /// 0 for the single-task baseline (no auxiliary head).
    pub num_aux: usize,
    /// θ1 and the backbone's batch-norm running statistics.
    pub store: ParamStore,
}

/// Logits of the multi-task network.
pub struct MultiTaskOutput {
    /// Primary logits [N, K].
    pub primary: Tensor,
    /// Auxiliary logits [N, A]; None without an auxiliary head or when the forward skipped it.
    pub aux: Option<Tensor>,
}

impl MultiTaskNet {
    /// A freshly initialised network (Xavier-uniform weights) with K = `num_primary` primary and
    /// A = `num_aux` auxiliary classes (0: no auxiliary head).
    pub fn new(
        arch: &Architecture,
        num_primary: usize,
        num_aux: usize,
        kind: Kind,
        device: Device,
    ) -> Self {
        let specs = arch.multitask_params(num_primary, num_aux);
        Self {
            arch: arch.clone(),
            num_primary,
            num_aux,
            store: ParamStore::init(specs, Init::XavierUniform, kind, device),
        }
    }

    /// Forward at arbitrary parameters (live or fast), with this network's running statistics.
    /// `with_aux: false` skips the auxiliary head (stage 2 needs only the primary loss).
    pub fn forward_with(
        &self,
        x: &Tensor,
        params: &[Tensor],
        bn: BatchNorm,
        with_aux: bool,
    ) -> MultiTaskOutput {
        let nb = num_backbone_params(&self.arch);
        let feats = backbone(&self.arch, x, &params[..nb], &self.store.buffers, bn);
        let primary = head(&feats, &params[nb..nb + 4]);
        let aux = (with_aux && self.num_aux > 0).then(|| head(&feats, &params[nb + 4..nb + 8]));
        MultiTaskOutput { primary, aux }
    }

    /// The backbone's features [N, F] at the live weights (what the heads see).
    pub fn features(&self, x: &Tensor, bn: BatchNorm) -> Tensor {
        let nb = num_backbone_params(&self.arch);
        backbone(
            &self.arch,
            x,
            &self.store.params[..nb],
            &self.store.buffers,
            bn,
        )
    }

    /// Forward at the live weights.
    pub fn forward(&self, x: &Tensor, bn: BatchNorm) -> MultiTaskOutput {
        self.forward_with(x, &self.store.params, bn, true)
    }
}

/// g(θ2): its own backbone and a head over the A auxiliary slots, followed by the mask softmax
/// with the mask of each sample's ground-truth primary class.
#[derive(Debug)]
pub struct LabelGenerator {
    /// The architecture g's backbone is built from (the same as f's).
    pub arch: Architecture,
    /// ψ: which auxiliary slots each primary class owns.
    pub hierarchy: Hierarchy,
    /// K × A 0/1 mask table (row k = mask of primary class k), in the parameters' kind.
    pub mask_table: Tensor,
    /// θ2 and the backbone's batch-norm running statistics.
    pub store: ParamStore,
    /// Whether g also has the weight head (`maxl-weighted`): its two tensors follow the label
    /// head's four in θ2.
    pub weighted: bool,
}

/// What g outputs for a batch: the soft labels and, with a weight head, each image's weight of
/// the auxiliary loss.
pub struct GeneratorOutput {
    /// t [N, A]: the mask softmax over each image's class's slots.
    pub labels: Tensor,
    /// w \[N\] = 2·sigmoid(s) ∈ (0, 2); None without a weight head (every image weighs 1).
    pub weights: Option<Tensor>,
}

impl GeneratorOutput {
    /// The auxiliary target of L1: u = w·t (each row scaled by its image's weight), or t itself
    /// without weights. The focal loss is linear in its target, so focal(aux, u) is
    /// mean_i w_i·L_aux,i.
    ///
    /// Without weights u is an alias of t, a node of its own in the graph: the gradient
    /// contributions through L1 then sum in u before they meet the regularisers' in t, grouped
    /// as they are with weights, so a weight head fixed at w ≡ 1 reproduces MAXL bit for bit.
    pub fn target(&self) -> Tensor {
        match &self.weights {
            Some(w) => &self.labels * w.unsqueeze(-1),
            None => self.labels.alias(),
        }
    }
}

impl LabelGenerator {
    /// A freshly initialised generator (Xavier-normal weights) over ψ's A auxiliary slots.
    pub fn new(arch: &Architecture, hierarchy: &Hierarchy, kind: Kind, device: Device) -> Self {
        let store = ParamStore::init(
            arch.generator_params(hierarchy.num_aux()),
            Init::XavierNormal,
            kind,
            device,
        );
        Self::with_store(arch, hierarchy, store)
    }

    /// A freshly initialised generator with the weight head of `maxl-weighted`: as
    /// [`LabelGenerator::new`] (the same random draws), and the weight head's
    /// weight and bias 0, so every image's weight starts at exactly 2·sigmoid(0) = 1 (the method
    /// starts as MAXL).
    pub fn new_weighted(
        arch: &Architecture,
        hierarchy: &Hierarchy,
        kind: Kind,
        device: Device,
    ) -> Self {
        let mut store = ParamStore::init(
            arch.generator_params(hierarchy.num_aux()),
            Init::XavierNormal,
            kind,
            device,
        );
        // Zeros, drawn from no random stream: the rest of the run sees MAXL's draws.
        for spec in arch.weight_head_params() {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            let t = Tensor::zeros(shape.as_slice(), (kind, device)).set_requires_grad(true);
            store.params.push(t);
            store.lr_scales.push(1.0);
            store.specs.push(spec);
        }
        Self::with_store(arch, hierarchy, store)
    }

    /// A generator with the given tensors (a checkpoint's); the mask table takes their kind and
    /// device. It has the weight head when the store holds its tensors.
    pub fn with_store(arch: &Architecture, hierarchy: &Hierarchy, store: ParamStore) -> Self {
        let weighted = store
            .specs
            .iter()
            .any(|s| s.name.starts_with(&format!("{WEIGHT_HEAD}.")));
        let (kind, device) = (store.params[0].kind(), store.params[0].device());
        let mask_table = Tensor::from_slice(&hierarchy.mask_table())
            .reshape([hierarchy.num_primary() as i64, hierarchy.num_aux() as i64])
            .to_kind(kind)
            .to_device(device);
        Self {
            arch: arch.clone(),
            hierarchy: hierarchy.clone(),
            mask_table,
            store,
            weighted,
        }
    }

    /// The weight head's tensors in θ2 (weight [1, F], bias \[1\]); empty without one.
    pub fn weight_head_params(&self) -> &[Tensor] {
        if self.weighted {
            let nb = num_backbone_params(&self.arch);
            &self.store.params[nb + 4..nb + 6]
        } else {
            &[]
        }
    }

    /// Labels and (with a weight head) weights at the given parameters, from one backbone
    /// forward (which updates g's running statistics once under [`BatchNorm::BatchUpdate`]).
    pub fn outputs_with(
        &self,
        x: &Tensor,
        y: &Tensor,
        params: &[Tensor],
        bn: BatchNorm,
    ) -> GeneratorOutput {
        let nb = num_backbone_params(&self.arch);
        let feats = backbone(&self.arch, x, &params[..nb], &self.store.buffers, bn);
        let logits = head(&feats, &params[nb..nb + 4]);
        let mask = self.mask_table.index_select(0, y);
        let weights = self.weighted.then(|| {
            let s = feats.linear(&params[nb + 4], Some(&params[nb + 5]));
            s.squeeze_dim(-1).sigmoid() * 2.0
        });
        GeneratorOutput {
            labels: mask_softmax(&logits, &mask),
            weights,
        }
    }

    /// [`LabelGenerator::outputs_with`] at the live weights θ2.
    pub fn outputs(&self, x: &Tensor, y: &Tensor, bn: BatchNorm) -> GeneratorOutput {
        self.outputs_with(x, y, &self.store.params, bn)
    }

    /// Pre-softmax logits over all A slots.
    pub fn logits_with(&self, x: &Tensor, params: &[Tensor], bn: BatchNorm) -> Tensor {
        let nb = num_backbone_params(&self.arch);
        let feats = backbone(&self.arch, x, &params[..nb], &self.store.buffers, bn);
        head(&feats, &params[nb..nb + 4])
    }

    /// The soft auxiliary labels: mask softmax of the logits with the mask of each sample's
    /// primary label `y` (int64 \[N\], already validated).
    pub fn forward_with(&self, x: &Tensor, y: &Tensor, params: &[Tensor], bn: BatchNorm) -> Tensor {
        let mask = self.mask_table.index_select(0, y);
        mask_softmax(&self.logits_with(x, params, bn), &mask)
    }

    /// The soft auxiliary labels [N, A] at the live weights θ2 (see
    /// [`LabelGenerator::forward_with`]).
    pub fn forward(&self, x: &Tensor, y: &Tensor, bn: BatchNorm) -> Tensor {
        self.forward_with(x, y, &self.store.params, bn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxl_core::arch::{ConvBlock, InputSpec, Resize};

    pub(crate) fn tiny_arch() -> Architecture {
        Architecture {
            input: InputSpec {
                channels: 1,
                height: 4,
                width: 4,
                mean: 0.5.into(),
                std: 0.2.into(),
                resize: Resize::Stretch,
            },
            blocks: vec![ConvBlock {
                convs: 1,
                channels: 2,
            }],
            resnet: None,
            head_hidden: 3,
        }
    }

    #[test]
    fn init_follows_the_reference() {
        tch::manual_seed(0);
        let arch = tiny_arch();
        let f = MultiTaskNet::new(&arch, 2, 3, Kind::Double, Device::Cpu);
        let named = f.store.named();
        let get = |n: &str| {
            named
                .iter()
                .find(|(k, _)| k == n)
                .unwrap()
                .1
                .shallow_clone()
        };
        assert_eq!(
            get("backbone.0.bn.weight")
                .sum(Kind::Double)
                .double_value(&[]),
            2.0
        );
        assert_eq!(
            get("backbone.0.bn.running_var")
                .sum(Kind::Double)
                .double_value(&[]),
            2.0
        );
        assert_eq!(
            get("backbone.0.conv.bias")
                .abs()
                .sum(Kind::Double)
                .double_value(&[]),
            0.0
        );
        // Xavier-uniform bound for the conv: sqrt(6 / (9 + 18)).
        let w = get("backbone.0.conv.weight");
        assert!(w.abs().max().double_value(&[]) <= (6.0f64 / 27.0).sqrt());
        assert_eq!(f.store.params.len(), 4 + 8);
        assert_eq!(f.store.buffers.len(), 2);
        assert!(f.store.params.iter().all(|p| p.requires_grad()));
        assert!(f.store.buffers.iter().all(|b| !b.requires_grad()));
        let out = f.forward(
            &Tensor::randn([5, 1, 4, 4], (Kind::Double, Device::Cpu)),
            BatchNorm::Batch,
        );
        assert_eq!(out.primary.size(), vec![5, 2]);
        assert_eq!(out.aux.unwrap().size(), vec![5, 3]);
    }
}

#[cfg(test)]
mod vgg16_tests {
    use super::*;

    #[test]
    fn vgg16_preset_builds_and_runs_both_networks() {
        tch::manual_seed(0);
        let arch = Architecture::preset("vgg16").unwrap();
        let h = Hierarchy::new(vec![5; 20]).unwrap();
        let f = MultiTaskNet::new(&arch, 20, 100, Kind::Float, Device::Cpu);
        let g = LabelGenerator::new(&arch, &h, Kind::Float, Device::Cpu);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[3i64, 19]);
        let out = tch::no_grad(|| f.forward(&x, BatchNorm::Running));
        assert_eq!(out.primary.size(), vec![2, 20]);
        assert_eq!(out.aux.unwrap().size(), vec![2, 100]);
        let t = tch::no_grad(|| g.forward(&x, &y, BatchNorm::Batch));
        assert_eq!(t.size(), vec![2, 100]);
        // Sample 0 (class 3) owns slots 15..20; sample 1 (class 19) owns 95..100.
        let row0 = Vec::<f32>::try_from(&t.get(0)).unwrap();
        assert!((row0[15..20].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(row0[..15].iter().chain(&row0[20..]).all(|&v| v == 0.0));
        assert_eq!(f.store.params.len(), 13 * 4 + 8);
    }
}
