//! ONNX graphs of MAXL's two networks, built from the same [`Architecture`] that training uses
//! (so the trained network and the exported graph cannot drift apart), with the protobuf types
//! `tract_onnx::pb` exposes — no protoc, no libtorch.
//!
//! * `primary.onnx`: input `image` f32 [N, C, H, W] (pixels scaled to [0, 1]; the mean/std
//!   normalisation is inside the graph); outputs `primary_probs` [N, K] and, unless single-task,
//!   `aux_probs` [N, A], plus their pre-softmax `primary_logits` / `aux_logits`.
//! * `label_generator.onnx`: inputs `image` and `primary_label` i64 `[N]`; outputs
//!   `aux_label_probs` [N, A] (the mask softmax inside the graph: the ψ mask is a constant K×A
//!   table gathered by label; disallowed logits are replaced by −1e9, softmax, then multiplied by
//!   the 0/1 mask so off-class slots are exactly 0 on every runtime), `aux_slot` i64 `[N]` (argmax)
//!   and `generator_logits` [N, A]; for a `maxl-weighted` generator (weights with a weight head,
//!   `weight_head.weight` [1, F] and `weight_head.bias` \[1\]) also `sample_weight` f32 `[N]`,
//!   w = 2·sigmoid(features·Wᵀ + b) ∈ (0, 2): how strongly each image's auxiliary loss counted
//!   in training (1 as in plain MAXL, near 0 where the generator judged it unhelpful).
//!
//! Batch norm is in inference form (running statistics), optionally folded into the convolution.
//! Opset 17, IR version 8, batch dimension symbolic (`N`).
//!
//! Both files carry the model's description in `ModelProto.metadata_props` ([`ModelMetadata`]):
//! `maxl.format`, `maxl.producer`, `maxl.classes`, `maxl.psi`, `maxl.aux_slots` and `maxl.input`,
//! each a JSON value (the table is in the [`metadata`] module), so that the files describe
//! themselves without `maxl.yaml` and a loader can check the manifest against them. [`describe`]
//! reads them back.

#![warn(missing_docs)]

pub mod metadata;
pub mod synthetic;

use std::collections::BTreeMap;

use maxl_core::arch::{
    AUX_HEAD, Architecture, Conv, GENERATOR_HEAD, Op, PRIMARY_HEAD, ParamSpec, PerChannel,
    WEIGHT_HEAD,
};
use maxl_core::hierarchy::Hierarchy;
use prost::Message;
use tract_onnx::pb;

pub use metadata::ModelMetadata;

/// The ONNX opset the graphs are written for.
pub const OPSET: i64 = 17;
/// The ONNX IR version of the files written.
pub const IR_VERSION: i64 = 8;
/// Batch norm's ε, as in PyTorch's `BatchNorm2d`.
pub const BN_EPS: f32 = 1e-5;
/// What disallowed logits become before the generator's softmax (as in training).
pub const MASK_FILL: f32 = -1e9;

/// Input of both graphs: the images, f32 [N, C, H, W] in [0, 1].
pub const IMAGE: &str = "image";
/// The label generator's second input: each image's primary class, i64 `[N]`.
pub const PRIMARY_LABEL: &str = "primary_label";
/// The primary head's softmax, [N, K].
pub const PRIMARY_PROBS: &str = "primary_probs";
/// The primary head's logits, [N, K].
pub const PRIMARY_LOGITS: &str = "primary_logits";
/// The auxiliary head's softmax over all Σψ slots, [N, A] (MAXL models only).
pub const AUX_PROBS: &str = "aux_probs";
/// The auxiliary head's logits, [N, A] (MAXL models only).
pub const AUX_LOGITS: &str = "aux_logits";
/// The label generator's masked distribution over the slots, [N, A].
pub const LABEL_PROBS: &str = "aux_label_probs";
/// The label generator's most likely slot, i64 `[N]`.
pub const LABEL_SLOT: &str = "aux_slot";
/// The label generator's logits before the mask, [N, A].
pub const GENERATOR_LOGITS: &str = "generator_logits";
/// The `maxl-weighted` label generator's per-image weight of the auxiliary loss, f32 `[N]`:
/// w = 2·sigmoid(features·Wᵀ + b) ∈ (0, 2) (1 counts the image's auxiliary loss as plain MAXL
/// does, near 0 means the generator judged the image's auxiliary task unhelpful). Only graphs
/// exported from weights with a weight head have it.
pub const SAMPLE_WEIGHT: &str = "sample_weight";
/// The label generator's constant K × A ψ mask.
pub const PSI_MASK_TABLE: &str = "psi_mask_table";

/// Why weights cannot be exported: they do not fit the architecture.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A tensor the architecture needs is not among the weights.
    #[error("weights: missing tensor `{0}`")]
    Missing(String),
    /// One tensor of the weight head without the other: `present` is there, `missing` is not.
    #[error(
        "weights: `{present}` without `{missing}`: a maxl-weighted label generator needs both tensors of its weight head"
    )]
    PartialWeightHead {
        /// The weight-head tensor found.
        present: String,
        /// The weight-head tensor missing.
        missing: String,
    },
    /// A tensor has another shape than the architecture gives it.
    #[error("weights: tensor `{name}` has shape {got:?}, the architecture needs {want:?}")]
    Shape {
        /// The tensor's (PyTorch) name.
        name: String,
        /// Its shape in the weights.
        got: Vec<usize>,
        /// The shape the architecture needs.
        want: Vec<usize>,
    },
}

/// A tensor's shape and row-major f32 data.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

/// Named weights of one network (parameters and running statistics), PyTorch names.
pub type Weights = BTreeMap<String, Array>;

/// How the graphs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportOptions {
    /// Fold batch norm into the preceding convolution (fewer nodes; same function).
    pub fold_batch_norm: bool,
}

/// Checks that `weights` has every tensor of `specs` with the right shape.
fn check(weights: &Weights, specs: &[ParamSpec]) -> Result<(), ExportError> {
    for s in specs {
        let a = weights
            .get(&s.name)
            .ok_or_else(|| ExportError::Missing(s.name.clone()))?;
        if a.shape != s.shape || a.data.len() != s.shape.iter().product::<usize>() {
            return Err(ExportError::Shape {
                name: s.name.clone(),
                got: a.shape.clone(),
                want: s.shape.clone(),
            });
        }
    }
    Ok(())
}

fn float_tensor(name: &str, shape: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(
    name: &str,
    elem: pb::tensor_proto::DataType,
    dims: &[Option<usize>],
) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v as i64),
                None => Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// Accumulates nodes and initialisers of one graph.
struct Graph {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
}

impl Graph {
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
        output.to_string()
    }

    fn init(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        self.inits.push(float_tensor(name, shape, data));
        name.to_string()
    }

    fn weight(&mut self, weights: &Weights, name: &str) -> String {
        let a = &weights[name];
        self.init(name, &a.shape, &a.data)
    }

    /// (x − mean) / std per channel, then the backbone; returns the features [N, F].
    fn backbone(&mut self, arch: &Architecture, w: &Weights, opts: ExportOptions) -> String {
        let i = &arch.input;
        let stat = |p: &PerChannel| match p {
            PerChannel::Uniform(v) => (vec![], vec![*v]),
            PerChannel::Channels(_) => (vec![1, i.channels, 1, 1], p.expand(i.channels)),
        };
        let (mean_shape, mean) = stat(&i.mean);
        let (std_shape, std) = stat(&i.std);
        let mean = self.init("input.mean", &mean_shape, &mean);
        let std = self.init("input.std", &std_shape, &std);
        let centred = self.node("Sub", &[IMAGE, &mean], "input.centred", vec![]);
        let h = self.node("Div", &[&centred, &std], "input.normalised", vec![]);
        let h = self.ops(&arch.backbone_ops(), w, opts, h);
        self.node("Identity", &[&h], "features", vec![])
    }

    /// The nodes of `ops` applied to `x`; returns the last node's output.
    fn ops(&mut self, ops: &[Op], w: &Weights, opts: ExportOptions, x: String) -> String {
        let mut h = x;
        let mut i = 0;
        while i < ops.len() {
            h = match &ops[i] {
                Op::Conv(c) => {
                    let next_bn = match ops.get(i + 1) {
                        Some(Op::BatchNorm { name, .. }) if opts.fold_batch_norm => Some(name),
                        _ => None,
                    };
                    match next_bn {
                        Some(bn) => {
                            i += 1;
                            self.folded_conv(c, bn, w, &h)
                        }
                        None => self.conv(c, w, &h),
                    }
                }
                Op::BatchNorm { name, .. } => {
                    let names: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
                        .iter()
                        .map(|n| self.weight(w, &format!("{name}.{n}")))
                        .collect();
                    self.node(
                        "BatchNormalization",
                        &[&h, &names[0], &names[1], &names[2], &names[3]],
                        name,
                        vec![float("epsilon", BN_EPS)],
                    )
                }
                Op::Relu => {
                    let out = format!("{h}.relu");
                    self.node("Relu", &[&h], &out, vec![])
                }
                Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    let (k, s, p) = (*kernel as i64, *stride as i64, *padding as i64);
                    let out = format!("{h}.pool");
                    self.node(
                        "MaxPool",
                        &[&h],
                        &out,
                        vec![
                            ints("kernel_shape", &[k, k]),
                            ints("strides", &[s, s]),
                            ints("pads", &[p, p, p, p]),
                        ],
                    )
                }
                Op::Residual { body, shortcut } => {
                    let main = self.ops(body, w, opts, h.clone());
                    let side = if shortcut.is_empty() {
                        h.clone()
                    } else {
                        self.ops(shortcut, w, opts, h.clone())
                    };
                    // The block's name: its first convolution's without `.conv1`.
                    let block = match body.first() {
                        Some(Op::Conv(c)) => c.name.trim_end_matches(".conv1").to_string(),
                        _ => format!("residual_{}", self.nodes.len()),
                    };
                    self.node("Add", &[&main, &side], &format!("{block}.add"), vec![])
                }
                Op::GlobalAvgPool => {
                    let pooled = self.node("GlobalAveragePool", &[&h], "backbone.avgpool", vec![]);
                    self.node(
                        "Flatten",
                        &[&pooled],
                        "backbone.flatten",
                        vec![int("axis", 1)],
                    )
                }
                Op::Flatten => {
                    self.node("Flatten", &[&h], "backbone.flatten", vec![int("axis", 1)])
                }
            };
            i += 1;
        }
        h
    }

    fn conv_attrs(c: &Conv) -> Vec<pb::AttributeProto> {
        let (k, s, p) = (c.kernel as i64, c.stride as i64, c.padding as i64);
        vec![
            ints("kernel_shape", &[k, k]),
            ints("pads", &[p, p, p, p]),
            ints("strides", &[s, s]),
        ]
    }

    fn conv(&mut self, c: &Conv, w: &Weights, x: &str) -> String {
        let wn = self.weight(w, &format!("{}.weight", c.name));
        let mut inputs = vec![x.to_string(), wn];
        if c.bias {
            inputs.push(self.weight(w, &format!("{}.bias", c.name)));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node("Conv", &refs, &c.name, Self::conv_attrs(c))
    }

    /// A convolution with the batch norm after it folded in:
    /// y = γ (conv(x) + b − μ) / √(σ² + ε) + β  =  conv'(x) + b'.
    fn folded_conv(&mut self, c: &Conv, bn: &str, w: &Weights, x: &str) -> String {
        let wt = &w[&format!("{}.weight", c.name)];
        let get = |n: &str| &w[&format!("{bn}.{n}")];
        let (g, be, mu, var) = (
            get("weight"),
            get("bias"),
            get("running_mean"),
            get("running_var"),
        );
        let out = c.out_channels;
        let per_out = wt.data.len() / out;
        let mut wf = wt.data.clone();
        let mut bf = vec![0.0; out];
        for ch in 0..out {
            let s = g.data[ch] / (var.data[ch] + BN_EPS).sqrt();
            wf[ch * per_out..(ch + 1) * per_out]
                .iter_mut()
                .for_each(|v| *v *= s);
            let b = if c.bias {
                w[&format!("{}.bias", c.name)].data[ch]
            } else {
                0.0
            };
            bf[ch] = (b - mu.data[ch]) * s + be.data[ch];
        }
        let wn = self.init(&format!("{}.weight", c.name), &wt.shape, &wf);
        let bn_name = self.init(&format!("{}.bias", c.name), &[out], &bf);
        self.node("Conv", &[x, &wn, &bn_name], &c.name, Self::conv_attrs(c))
    }

    /// Linear → ReLU → Linear (Gemm with transB, as PyTorch stores [out, in]).
    fn head(&mut self, w: &Weights, features: &str, head: &str, output: &str) -> String {
        let names: Vec<String> = ["0.weight", "0.bias", "2.weight", "2.bias"]
            .iter()
            .map(|n| self.weight(w, &format!("{head}.{n}")))
            .collect();
        let h = self.node(
            "Gemm",
            &[features, &names[0], &names[1]],
            &format!("{head}.0"),
            vec![int("transB", 1)],
        );
        let h = self.node("Relu", &[&h], &format!("{head}.1"), vec![]);
        self.node(
            "Gemm",
            &[&h, &names[2], &names[3]],
            output,
            vec![int("transB", 1)],
        )
    }

    /// The weight head: 2·Sigmoid(Gemm(features, W, b, transB)) [N, 1], flattened to
    /// [`SAMPLE_WEIGHT`] `[N]`.
    fn sample_weight(&mut self, w: &Weights, features: &str) -> String {
        let weight = self.weight(w, &format!("{WEIGHT_HEAD}.weight"));
        let bias = self.weight(w, &format!("{WEIGHT_HEAD}.bias"));
        let score = self.node(
            "Gemm",
            &[features, &weight, &bias],
            &format!("{WEIGHT_HEAD}.score"),
            vec![int("transB", 1)],
        );
        let sig = self.node(
            "Sigmoid",
            &[&score],
            &format!("{WEIGHT_HEAD}.sigmoid"),
            vec![],
        );
        let two = self.init(&format!("{WEIGHT_HEAD}.two"), &[], &[2.0]);
        let scaled = self.node(
            "Mul",
            &[&sig, &two],
            &format!("{WEIGHT_HEAD}.scaled"),
            vec![],
        );
        self.inits.push(pb::TensorProto {
            name: format!("{WEIGHT_HEAD}.shape"),
            dims: vec![1],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            raw_data: (-1i64).to_le_bytes().to_vec(),
            ..Default::default()
        });
        self.node(
            "Reshape",
            &[&scaled, &format!("{WEIGHT_HEAD}.shape")],
            SAMPLE_WEIGHT,
            vec![],
        )
    }

    fn model(
        self,
        name: &str,
        inputs: Vec<pb::ValueInfoProto>,
        outputs: Vec<pb::ValueInfoProto>,
        doc: &str,
        metadata: &ModelMetadata,
    ) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "maxl".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            metadata_props: metadata.to_proto(),
            graph: Some(pb::GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.inits,
                input: inputs,
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn image_input(arch: &Architecture) -> pb::ValueInfoProto {
    let i = &arch.input;
    value_info(
        IMAGE,
        pb::tensor_proto::DataType::Float,
        &[None, Some(i.channels), Some(i.height), Some(i.width)],
    )
}

fn float_output(name: &str, width: usize) -> pb::ValueInfoProto {
    value_info(
        name,
        pb::tensor_proto::DataType::Float,
        &[None, Some(width)],
    )
}

/// The multi-task network's graph (`primary.onnx`), `metadata` in its `metadata_props`.
/// `num_aux == 0` for a single-task model.
pub fn primary_model(
    arch: &Architecture,
    num_primary: usize,
    num_aux: usize,
    w: &Weights,
    opts: ExportOptions,
    metadata: &ModelMetadata,
) -> Result<pb::ModelProto, ExportError> {
    check(w, &arch.multitask_params(num_primary, num_aux))?;
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let feats = g.backbone(arch, w, opts);
    let logits = g.head(w, &feats, PRIMARY_HEAD, PRIMARY_LOGITS);
    g.node("Softmax", &[&logits], PRIMARY_PROBS, vec![int("axis", 1)]);
    let mut outputs = vec![float_output(PRIMARY_PROBS, num_primary)];
    let mut logit_outputs = vec![float_output(PRIMARY_LOGITS, num_primary)];
    if num_aux > 0 {
        let aux = g.head(w, &feats, AUX_HEAD, AUX_LOGITS);
        g.node("Softmax", &[&aux], AUX_PROBS, vec![int("axis", 1)]);
        outputs.push(float_output(AUX_PROBS, num_aux));
        logit_outputs.push(float_output(AUX_LOGITS, num_aux));
    }
    outputs.extend(logit_outputs);
    Ok(g.model(
        "maxl_primary",
        vec![image_input(arch)],
        outputs,
        "MAXL multi-task network: primary (and auxiliary) class probabilities",
        metadata,
    ))
}

/// Whether `w` holds a `maxl-weighted` weight head (`weight_head.weight` and `weight_head.bias`):
/// `Ok(true)` with both, `Ok(false)` with neither, an error naming the missing one with one alone.
pub fn has_weight_head(w: &Weights) -> Result<bool, ExportError> {
    let weight = format!("{WEIGHT_HEAD}.weight");
    let bias = format!("{WEIGHT_HEAD}.bias");
    match (w.contains_key(&weight), w.contains_key(&bias)) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(ExportError::PartialWeightHead {
            present: weight,
            missing: bias,
        }),
        (false, true) => Err(ExportError::PartialWeightHead {
            present: bias,
            missing: weight,
        }),
    }
}

/// The label generator's graph (`label_generator.onnx`), `metadata` in its `metadata_props`.
/// Weights with a weight head ([`has_weight_head`], `maxl-weighted`) add the output
/// [`SAMPLE_WEIGHT`] after the others.
pub fn label_generator_model(
    arch: &Architecture,
    hierarchy: &Hierarchy,
    w: &Weights,
    opts: ExportOptions,
    metadata: &ModelMetadata,
) -> Result<pb::ModelProto, ExportError> {
    let a = hierarchy.num_aux();
    let weighted = has_weight_head(w)?;
    check(w, &arch.generator_params_for(a, weighted))?;
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let feats = g.backbone(arch, w, opts);
    let logits = g.head(w, &feats, GENERATOR_HEAD, GENERATOR_LOGITS);
    let table = g.init(
        PSI_MASK_TABLE,
        &[hierarchy.num_primary(), a],
        &hierarchy.mask_table(),
    );
    let mask = g.node(
        "Gather",
        &[&table, PRIMARY_LABEL],
        "mask",
        vec![int("axis", 0)],
    );
    let zero = g.init("zero", &[], &[0.0]);
    let fill = g.init("mask_fill", &[], &[MASK_FILL]);
    let off = g.node("Equal", &[&mask, &zero], "off_class", vec![]);
    let filled = g.node("Where", &[&off, &fill, &logits], "masked_logits", vec![]);
    let soft = g.node(
        "Softmax",
        &[&filled],
        "masked_softmax",
        vec![int("axis", 1)],
    );
    let probs = g.node("Mul", &[&soft, &mask], LABEL_PROBS, vec![]);
    g.node(
        "ArgMax",
        &[&probs],
        LABEL_SLOT,
        vec![int("axis", 1), int("keepdims", 0)],
    );
    let inputs = vec![
        image_input(arch),
        value_info(PRIMARY_LABEL, pb::tensor_proto::DataType::Int64, &[None]),
    ];
    if weighted {
        g.sample_weight(w, &feats);
    }
    let mut outputs = vec![
        float_output(LABEL_PROBS, a),
        value_info(LABEL_SLOT, pb::tensor_proto::DataType::Int64, &[None]),
        float_output(GENERATOR_LOGITS, a),
    ];
    if weighted {
        outputs.push(value_info(
            SAMPLE_WEIGHT,
            pb::tensor_proto::DataType::Float,
            &[None],
        ));
    }
    Ok(g.model(
        "maxl_label_generator",
        inputs,
        outputs,
        "MAXL label generator: auxiliary label distribution inside the primary class's ψ slots",
        metadata,
    ))
}

/// The serialised model.
pub fn to_bytes(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// An input or output of a graph as its file declares it: name, element type and dimensions
/// (`None` for a symbolic dimension such as the batch `N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDecl {
    /// The input's or output's name.
    pub name: String,
    /// The ONNX element type (`TensorProto.DataType`).
    pub elem_type: i32,
    /// The dimensions; `None` where symbolic.
    pub dims: Vec<Option<usize>>,
}

impl TensorDecl {
    /// Whether the elements are 32-bit floats.
    pub fn is_f32(&self) -> bool {
        self.elem_type == pb::tensor_proto::DataType::Float as i32
    }

    /// Whether the elements are 64-bit integers.
    pub fn is_i64(&self) -> bool {
        self.elem_type == pb::tensor_proto::DataType::Int64 as i32
    }
}

/// What a serialised graph declares, read without building it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphDecl {
    /// The graph's inputs, in order.
    pub inputs: Vec<TensorDecl>,
    /// The graph's outputs, in order.
    pub outputs: Vec<TensorDecl>,
    /// The label generator's K × A ψ mask (`psi_mask_table`), when the graph has one.
    pub psi_mask: Option<Array>,
    /// The file's `metadata_props`, key → value (maxl's keys and any others); empty for files
    /// exported before maxl wrote metadata.
    pub metadata: BTreeMap<String, String>,
}

impl GraphDecl {
    /// The file's maxl metadata: `Ok(None)` when it has none, an error naming the key when a
    /// `maxl.` key is missing or unreadable.
    pub fn maxl_metadata(&self) -> Result<Option<ModelMetadata>, String> {
        ModelMetadata::from_props(&self.metadata)
    }
}

/// Parses an ONNX file's bytes and lists its declared inputs, outputs, ψ mask and metadata.
pub fn describe(bytes: &[u8]) -> Result<GraphDecl, String> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
    let metadata = model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    let graph = model
        .graph
        .ok_or_else(|| "not an ONNX model: no graph".to_string())?;
    let decl = |v: &pb::ValueInfoProto| {
        let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => Some(t),
            _ => None,
        };
        let dims = tensor
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v >= 0 => {
                            Some(v as usize)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        TensorDecl {
            name: v.name.clone(),
            elem_type: tensor.map_or(0, |t| t.elem_type),
            dims,
        }
    };
    let inits: std::collections::BTreeSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let psi_mask = graph
        .initializer
        .iter()
        .find(|t| t.name == PSI_MASK_TABLE)
        .map(|t| {
            let data = if t.raw_data.is_empty() {
                t.float_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            Array {
                shape: t.dims.iter().map(|&d| d.max(0) as usize).collect(),
                data,
            }
        });
    Ok(GraphDecl {
        // Older exporters list initializers among the inputs; they are not fed.
        inputs: graph
            .input
            .iter()
            .filter(|v| !inits.contains(v.name.as_str()))
            .map(decl)
            .collect(),
        outputs: graph.output.iter().map(decl).collect(),
        psi_mask,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use maxl_core::arch::InputSpec;
    use maxl_core::manifest::{ClassName, ManifestInput};
    use tract_onnx::prelude::*;

    use super::*;

    fn arch() -> Architecture {
        synthetic::tiny_architecture(InputSpec {
            channels: 1,
            height: 12,
            width: 12,
            mean: 0.5.into(),
            std: 0.2.into(),
            resize: maxl_core::arch::Resize::Stretch,
        })
    }

    fn hierarchy() -> Hierarchy {
        Hierarchy::new(vec![2, 3]).unwrap()
    }

    fn metadata(arch: &Architecture) -> ModelMetadata {
        let classes: Vec<ClassName> = ["a", "b"]
            .iter()
            .map(|n| ClassName {
                name: n.to_string(),
                display: n.to_string(),
            })
            .collect();
        ModelMetadata {
            producer: "test".into(),
            aux_slots: hierarchy().slot_names(&["a", "b"]),
            classes,
            psi: vec![2, 3],
            input: ManifestInput::of_spec(&arch.input),
        }
    }

    fn generator(weighted: bool) -> Result<pb::ModelProto, ExportError> {
        let a = arch();
        let w = synthetic::random_weights(&a.generator_params_for(5, weighted), 7);
        label_generator_model(
            &a,
            &hierarchy(),
            &w,
            ExportOptions::default(),
            &metadata(&a),
        )
    }

    fn output_names(m: &pb::ModelProto) -> Vec<String> {
        describe(&to_bytes(m))
            .unwrap()
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }

    #[test]
    fn a_weighted_generator_has_sample_weight_last_an_unweighted_one_does_not() {
        let weighted = generator(true).unwrap();
        assert_eq!(
            output_names(&weighted),
            [LABEL_PROBS, LABEL_SLOT, GENERATOR_LOGITS, SAMPLE_WEIGHT]
        );
        let decl = describe(&to_bytes(&weighted)).unwrap();
        let sw = decl.outputs.last().unwrap();
        assert!(sw.is_f32());
        assert_eq!(sw.dims, [None], "sample_weight is [N], N symbolic");
        let plain = generator(false).unwrap();
        assert_eq!(
            output_names(&plain),
            [LABEL_PROBS, LABEL_SLOT, GENERATOR_LOGITS]
        );
        // The unweighted graph is the one this crate always wrote: no weight-head node in it.
        let g = plain.graph.unwrap();
        assert!(g.node.iter().all(|n| !n.name.contains("weight_head")
            && n.output.iter().all(|o| !o.starts_with(WEIGHT_HEAD))));
        assert!(
            g.initializer
                .iter()
                .all(|t| !t.name.starts_with(WEIGHT_HEAD))
        );
    }

    #[test]
    fn a_lone_weight_head_tensor_is_refused_naming_the_missing_one() {
        let a = arch();
        for (drop, missing) in [
            ("weight_head.bias", "weight_head.bias"),
            ("weight_head.weight", "weight_head.weight"),
        ] {
            let mut w = synthetic::random_weights(&a.generator_params_for(5, true), 1);
            w.remove(drop);
            let e = label_generator_model(
                &a,
                &hierarchy(),
                &w,
                ExportOptions::default(),
                &metadata(&a),
            )
            .unwrap_err();
            let message = e.to_string();
            assert!(
                matches!(&e, ExportError::PartialWeightHead { missing: m, .. } if m == missing),
                "{message}"
            );
            assert!(
                message.contains(&format!("without `{missing}`")),
                "{message}"
            );
            assert_eq!(message.lines().count(), 1);
        }
        // A weight head of the wrong width is a shape error naming the tensor.
        let mut w = synthetic::random_weights(&a.generator_params_for(5, true), 1);
        w.insert(
            "weight_head.weight".into(),
            Array {
                shape: vec![1, 3],
                data: vec![0.0; 3],
            },
        );
        let e = label_generator_model(
            &a,
            &hierarchy(),
            &w,
            ExportOptions::default(),
            &metadata(&a),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`weight_head.weight` has shape [1, 3]"),
            "{e}"
        );
    }

    /// tract runs the weighted graph; `sample_weight` equals 2·sigmoid(features·w + b) computed
    /// by hand from the graph's own `features`, within 1e-5, and lies in (0, 2).
    #[test]
    fn sample_weight_is_two_sigmoid_of_the_weight_heads_score() {
        let a = arch();
        let w = synthetic::random_weights(&a.generator_params_for(5, true), 3);
        for fold in [false, true] {
            let opts = ExportOptions {
                fold_batch_norm: fold,
            };
            let m = label_generator_model(&a, &hierarchy(), &w, opts, &metadata(&a)).unwrap();
            let plan = tract_onnx::onnx()
                .model_for_read(&mut std::io::Cursor::new(to_bytes(&m)))
                .and_then(|m| m.with_outputs_by_name(["features", SAMPLE_WEIGHT]))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .unwrap();
            let n = 6;
            let pixels: Vec<f32> = (0..n * 144)
                .map(|i| ((i * 37 % 101) as f32 / 100.0).min(1.0))
                .collect();
            let image = tract_ndarray::Array4::from_shape_vec((n, 1, 12, 12), pixels).unwrap();
            let labels = tract_ndarray::Array1::from_vec(vec![0i64, 1, 0, 1, 1, 0]);
            let out = plan
                .run(tvec![
                    Tensor::from(image).into(),
                    Tensor::from(labels).into()
                ])
                .unwrap();
            let features = out[0].to_plain_array_view::<f32>().unwrap();
            let sw = out[1].to_plain_array_view::<f32>().unwrap();
            assert_eq!(sw.shape(), [n]);
            let (head_w, head_b) = (&w["weight_head.weight"].data, w["weight_head.bias"].data[0]);
            let mut seen = Vec::new();
            for i in 0..n {
                let s: f64 = features
                    .index_axis(tract_ndarray::Axis(0), i)
                    .iter()
                    .zip(head_w)
                    .map(|(f, w)| *f as f64 * *w as f64)
                    .sum::<f64>()
                    + head_b as f64;
                let want = 2.0 / (1.0 + (-s).exp());
                let got = sw[i] as f64;
                assert!((got - want).abs() < 1e-5, "image {i}: {got} vs {want}");
                assert!(got > 0.0 && got < 2.0);
                seen.push(got);
            }
            // The random weight head spreads the weights (the check is not of constants).
            let spread = seen.iter().cloned().fold(f64::MIN, f64::max)
                - seen.iter().cloned().fold(f64::MAX, f64::min);
            assert!(spread > 0.05, "{seen:?}");
        }
    }
}
