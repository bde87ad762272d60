//! A loaded MAXL model: the manifest, the multi-task network and (when exported) the label
//! generator, on one backend, shared by reference across threads.
//!
//! `MaxlModel` is `Send + Sync` and every inference call takes `&self`: a service keeps one
//! `Arc<MaxlModel>`. ONNX Runtime backends keep a pool of sessions per graph
//! ([`ThreadOptions::sessions`]; a session runs one call at a time, so that many calls run at
//! once); tract runs one shared plan, any number of calls at once.
//!
//! Thread settings: each session has its own intra-op pool ([`ThreadOptions::intra_threads`]), or
//! all sessions of the process share ONNX Runtime's global pool
//! ([`ThreadOptions::global_threads`]). The global pool, like the library loaded, belongs to the
//! process-wide ONNX Runtime environment: the first model loaded decides it.

use std::path::{Path, PathBuf};

use maxl_core::hierarchy::Hierarchy;
use maxl_core::manifest::Manifest;
use maxl_preprocess::{self as preprocess, DecodeLimits, ImageShape};
use ndarray::{Array1, Array2, Array4, ArrayView1, ArrayView4, Ix1, Ix2};

use crate::error::InferError;
use crate::graph::{Graph, GraphSpec, Input, Output};
use crate::providers::{Backend, ProviderOptions, Providers, ThreadOptions};
use crate::validate::{self, Role};

/// The multi-task network's outputs for a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// [N, K]: the softmax over the K primary classes of each image.
    pub primary_probs: Array2<f32>,
    /// [N, K]: the primary head's logits.
    pub primary_logits: Array2<f32>,
    /// [N, A]: the auxiliary head's softmax over all Σψ slots; `None` for a single-task model.
    pub aux_probs: Option<Array2<f32>>,
    /// [N, A]: the auxiliary head's logits; `None` for a single-task model.
    pub aux_logits: Option<Array2<f32>>,
}

/// The label generator's outputs for a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedLabels {
    /// [N, A]: a distribution over the slots of each image's primary class, exact zeros elsewhere.
    pub probs: Array2<f32>,
    /// `[N]`: the most likely auxiliary slot.
    pub slots: Array1<i64>,
    /// [N, A]: pre-mask logits, when the graph exports them.
    pub logits: Option<Array2<f32>>,
    /// `[N]`: each image's weight of the auxiliary loss, w ∈ (0, 2), from the graph's
    /// `sample_weight` output: `Some` for a `maxl-weighted` export, `None` for other exports
    /// (which have no such output).
    pub weights: Option<Array1<f32>>,
}

/// A primary class and its probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassProbability {
    /// The class index, in the manifest's class order.
    pub class: usize,
    /// The folder-safe class name.
    pub name: String,
    /// The model's probability for this class.
    pub probability: f32,
}

/// The label generator's auxiliary slot for one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuxLabel {
    /// The primary class whose slots it is among (given or predicted).
    pub class: usize,
    /// The slot's index among all Σψ slots.
    pub slot: usize,
    /// `<class>.<k>`.
    pub label: String,
    /// The generator's probability for this slot.
    pub probability: f32,
    /// The distribution over the class's ψ_k slots, in slot order.
    pub distribution: Vec<f32>,
    /// How strongly the image's auxiliary loss counted in training, w ∈ (0, 2) (1 as in plain
    /// MAXL, near 0 where the generator judged the image's auxiliary task unhelpful): the
    /// `maxl-weighted` generator's `sample_weight`. `None` (and left out when serialised) for
    /// models without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f32>,
}

/// Everything the model says about one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classification {
    /// The predicted primary class (argmax; the lowest index on ties).
    pub class: ClassProbability,
    /// The full primary distribution.
    pub primary: Vec<f32>,
    /// The `top_k` most probable classes, most probable first.
    pub top_k: Vec<ClassProbability>,
    /// The generator's slot, when asked for and the model has a generator.
    pub aux: Option<AuxLabel>,
}

/// For which primary class the label generator is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuxFor<'a> {
    /// No auxiliary label: the generator does not run.
    None,
    /// The predicted class of each image (no auxiliary label when the model has no generator).
    Predicted,
    /// A given class per image.
    Given(&'a [usize]),
    /// A given class for some images, the predicted class for those with `None`.
    GivenOrPredicted(&'a [Option<usize>]),
}

/// What [`MaxlModel::classify`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classify<'a> {
    /// How many of the most probable classes each result lists (`top_k`); default 1.
    pub top_k: usize,
    /// For which class the label generator is asked; default [`AuxFor::Predicted`].
    pub aux: AuxFor<'a>,
}

impl Default for Classify<'_> {
    fn default() -> Self {
        Self {
            top_k: 1,
            aux: AuxFor::Predicted,
        }
    }
}

/// How a [`MaxlModel`] is loaded: made by [`MaxlModel::builder`], set with the `with_*` methods,
/// finished by [`MaxlModelBuilder::build`]. The defaults: ONNX Runtime on the CPU
/// ([`Backend::OrtCpu`]), default providers, threads and decode limits.
pub struct MaxlModelBuilder {
    dir: PathBuf,
    backend: Backend,
    ort_library: Option<PathBuf>,
    providers: ProviderOptions,
    threads: ThreadOptions,
    limits: DecodeLimits,
}

impl MaxlModelBuilder {
    /// The engine that runs the graphs: ONNX Runtime with an execution provider, or tract.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The ONNX Runtime library to load (`--ort-lib`); with `None`, `ORT_DYLIB_PATH` or the
    /// set-up env file names it. Ignored by tract. Process-wide: the first model loaded decides.
    pub fn with_ort_library(mut self, path: Option<PathBuf>) -> Self {
        self.ort_library = path;
        self
    }

    /// Execution provider options (CUDA device, TensorRT settings, fall-backs) for ONNX
    /// Runtime backends. Ignored by tract.
    pub fn with_providers(mut self, providers: ProviderOptions) -> Self {
        self.providers = providers;
        self
    }

    /// Sessions per graph and their thread pools for ONNX Runtime backends. Ignored by tract.
    pub fn with_threads(mut self, threads: ThreadOptions) -> Self {
        self.threads = threads;
        self
    }

    /// Limits for decoding encoded images ([`DecodeLimits::default`] otherwise).
    pub fn with_decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads the manifest, reads each ONNX file once (the hashed bytes are the loaded bytes),
    /// checks the manifest against the graphs and loads them.
    pub fn build(self) -> Result<MaxlModel, InferError> {
        let manifest = Manifest::read(&self.dir)?;
        let hierarchy = manifest
            .hierarchy()
            .map_err(|message| InferError::Mismatch {
                manifest: self.dir.join(maxl_core::manifest::MANIFEST_FILE),
                field: "psi",
                message,
            })?;
        let runtime = if self.backend.is_ort() {
            Some(crate::runtime::shared(
                self.ort_library.as_deref(),
                self.threads.global_threads,
            )?)
        } else {
            None
        };
        let i = &manifest.input;
        let image_dims = [i.channels, i.height, i.width];
        // A graph's outputs: those the manifest lists, and the generator's `sample_weight`
        // whenever its file has it (a manifest may predate the output and not list it).
        let load = |file: &maxl_core::manifest::ModelFile, role: Role| {
            let bytes = manifest.read_model_file(&self.dir, file)?;
            let checked = validate::check(&self.dir, &manifest, file, role, &bytes)?;
            let mut outputs = file.outputs.clone();
            let sample_weight = role == Role::Generator && checked.sample_weight;
            if sample_weight && !outputs.iter().any(|o| o == maxl_onnx::SAMPLE_WEIGHT) {
                outputs.push(maxl_onnx::SAMPLE_WEIGHT.to_string());
            }
            let graph = Graph::load(
                GraphSpec {
                    path: &self.dir.join(&file.path),
                    bytes: &bytes,
                    inputs: &file.inputs,
                    outputs: &outputs,
                    image_dims,
                },
                self.backend,
                runtime,
                &self.providers,
                &self.threads,
            )?;
            Ok::<_, InferError>((graph, sample_weight))
        };
        let (primary, _) = load(&manifest.models.primary, Role::Primary)?;
        let (generator, sample_weight) = match &manifest.models.label_generator {
            Some(g) => {
                let (graph, weighted) = load(g, Role::Generator)?;
                (Some(graph), weighted)
            }
            None => (None, false),
        };
        let shape = ImageShape {
            channels: i.channels,
            height: i.height,
            width: i.width,
            resize: match i.resize {
                maxl_core::arch::Resize::Stretch => preprocess::Resize::Stretch,
                maxl_core::arch::Resize::ShorterSide(s) => preprocess::Resize::ShorterSide(s),
            },
        };
        Ok(MaxlModel {
            manifest,
            hierarchy,
            dir: self.dir,
            backend: self.backend,
            primary,
            generator,
            sample_weight,
            shape,
            limits: self.limits,
        })
    }
}

/// A loaded model: the manifest, the multi-task network and, when exported, the label
/// generator, on one backend. `Send + Sync`; every inference call takes `&self`, so a service
/// shares one `Arc<MaxlModel>` between threads.
pub struct MaxlModel {
    manifest: Manifest,
    hierarchy: Hierarchy,
    dir: PathBuf,
    backend: Backend,
    primary: Graph,
    generator: Option<Graph>,
    /// Whether the generator's graph has `sample_weight` (read with every call).
    sample_weight: bool,
    shape: ImageShape,
    limits: DecodeLimits,
}

impl std::fmt::Debug for MaxlModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaxlModel")
            .field("dir", &self.dir)
            .field("backend", &self.backend)
            .field("providers", &self.providers())
            .finish_non_exhaustive()
    }
}

fn two_d(out: &mut std::collections::BTreeMap<String, Output>, name: &str) -> Option<Array2<f32>> {
    match out.remove(name)? {
        Output::F32(a) => a.into_dimensionality::<Ix2>().ok(),
        Output::I64(_) => None,
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

impl MaxlModel {
    /// Starts loading the model exported into `dir` (its `maxl.yaml` and ONNX files).
    pub fn builder(dir: impl Into<PathBuf>) -> MaxlModelBuilder {
        MaxlModelBuilder {
            dir: dir.into(),
            backend: Backend::OrtCpu,
            ort_library: None,
            providers: ProviderOptions::default(),
            threads: ThreadOptions::default(),
            limits: DecodeLimits::default(),
        }
    }

    /// The manifest the model was loaded with (read-only: it was checked against the graphs).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The hierarchy ψ: how many auxiliary slots each primary class has, and where they lie.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine that runs the graphs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The image shape the model takes (C×H×W).
    pub fn input_shape(&self) -> ImageShape {
        self.shape
    }

    /// The limits encoded images are decoded under.
    pub fn decode_limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Whether the model has a label generator (models trained with a MAXL method do).
    pub fn has_generator(&self) -> bool {
        self.generator.is_some()
    }

    /// Whether the label generator outputs a per-image weight of the auxiliary loss
    /// (`sample_weight`, a `maxl-weighted` export): then [`GeneratedLabels::weights`] and
    /// [`AuxLabel::weight`] are `Some`. False without a generator and for older exports.
    pub fn has_sample_weight(&self) -> bool {
        self.sample_weight
    }

    /// Sessions per graph (ONNX Runtime's pool size; 1 for tract, whose plan is shared).
    pub fn sessions(&self) -> usize {
        self.primary.sessions()
    }

    /// The execution providers registered for each graph.
    pub fn providers(&self) -> Providers {
        Providers {
            primary: self.primary.providers().to_vec(),
            label_generator: self.generator.as_ref().map(|g| g.providers().to_vec()),
        }
    }

    /// How many primary classes the model tells apart (K).
    pub fn num_classes(&self) -> usize {
        self.manifest.classes.len()
    }

    /// A class by folder-safe or display name.
    pub fn class_index(&self, name: &str) -> Result<usize, InferError> {
        self.manifest
            .classes
            .iter()
            .position(|c| c.name == name || c.display == name)
            .ok_or_else(|| InferError::UnknownClass {
                name: name.to_string(),
                known: self
                    .manifest
                    .classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Encoded image bytes (PNG or JPEG) → the model's C×H×W input in [0, 1], through the one
    /// preprocessing path training uses. `what` names the image in errors.
    pub fn preprocess(&self, bytes: &[u8], what: &str) -> Result<Vec<f32>, InferError> {
        let px = preprocess::preprocess(bytes, self.shape, &self.limits).map_err(|source| {
            InferError::Image {
                what: what.to_string(),
                source,
            }
        })?;
        Ok(px.into_iter().map(preprocess::unit).collect())
    }

    /// An image file → the model's input (see [`MaxlModel::preprocess`]).
    pub fn preprocess_file(&self, path: &Path) -> Result<Vec<f32>, InferError> {
        let bytes =
            preprocess::read_file(path, &self.limits).map_err(|source| InferError::Image {
                what: path.display().to_string(),
                source,
            })?;
        self.preprocess(&bytes, &path.display().to_string())
    }

    /// A decoded image → the model's input.
    pub fn preprocess_image(&self, img: &image::DynamicImage) -> Result<Vec<f32>, InferError> {
        let px = preprocess::convert(img, self.shape).map_err(|source| InferError::Image {
            what: "image".into(),
            source,
        })?;
        Ok(px.into_iter().map(preprocess::unit).collect())
    }

    /// Stacks preprocessed images into a batch.
    pub fn stack<I: AsRef<[f32]>>(&self, images: &[I]) -> Result<Array4<f32>, InferError> {
        let s = self.shape;
        let mut flat = Vec::with_capacity(images.len() * s.len());
        for (i, im) in images.iter().enumerate() {
            let im = im.as_ref();
            if im.len() != s.len() {
                return Err(InferError::Input(format!(
                    "image {i} has {} values, the model takes {}×{}×{} = {}",
                    im.len(),
                    s.channels,
                    s.height,
                    s.width,
                    s.len()
                )));
            }
            flat.extend_from_slice(im);
        }
        Array4::from_shape_vec((images.len(), s.channels, s.height, s.width), flat)
            .map_err(|e| InferError::Input(e.to_string()))
    }

    /// Shape, finiteness and range: every value must be finite and in [0, 1].
    fn check_images(&self, images: &ArrayView4<'_, f32>) -> Result<(), InferError> {
        let s = images.shape();
        let want = [self.shape.channels, self.shape.height, self.shape.width];
        if s[1..] != want {
            return Err(InferError::Input(format!(
                "images are {}×{}×{}, the model expects {}×{}×{}",
                s[1], s[2], s[3], want[0], want[1], want[2]
            )));
        }
        if let Some((idx, v)) = images
            .indexed_iter()
            .find(|(_, v)| !(v.is_finite() && (0.0..=1.0).contains(*v)))
        {
            return Err(InferError::Input(format!(
                "images[{}, {}, {}, {}] is {v}; pixels must be finite and in [0, 1]",
                idx.0, idx.1, idx.2, idx.3
            )));
        }
        Ok(())
    }

    /// Runs the multi-task network on images in [0, 1], [N, C, H, W], in any memory layout.
    pub fn predict(&self, images: ArrayView4<'_, f32>) -> Result<Prediction, InferError> {
        self.check_images(&images)?;
        let standard = images.as_standard_layout();
        let mut out = self
            .primary
            .run(&[Input::F32(standard.view().into_dyn())])?;
        let missing = |n: &str| InferError::Run {
            backend: self.backend.name(),
            message: format!("the primary graph's `{n}` is not an f32 matrix"),
        };
        Ok(Prediction {
            primary_probs: two_d(&mut out, maxl_onnx::PRIMARY_PROBS)
                .ok_or_else(|| missing(maxl_onnx::PRIMARY_PROBS))?,
            primary_logits: two_d(&mut out, maxl_onnx::PRIMARY_LOGITS)
                .ok_or_else(|| missing(maxl_onnx::PRIMARY_LOGITS))?,
            aux_probs: two_d(&mut out, maxl_onnx::AUX_PROBS),
            aux_logits: two_d(&mut out, maxl_onnx::AUX_LOGITS),
        })
    }

    /// Runs the label generator on images in [0, 1] with their primary labels. Labels outside
    /// [0, K) are refused before anything runs.
    pub fn generate_labels(
        &self,
        images: ArrayView4<'_, f32>,
        labels: ArrayView1<'_, i64>,
    ) -> Result<GeneratedLabels, InferError> {
        let g = self
            .generator
            .as_ref()
            .ok_or_else(|| InferError::NoGenerator(self.manifest.training.method.clone()))?;
        self.check_images(&images)?;
        if labels.len() != images.shape()[0] {
            return Err(InferError::Input(format!(
                "{} labels for {} images",
                labels.len(),
                images.shape()[0]
            )));
        }
        for &l in labels {
            self.hierarchy
                .check_label(l)
                .map_err(|e| InferError::Input(e.to_string()))?;
        }
        let standard = images.as_standard_layout();
        let labels = labels.as_standard_layout();
        let mut out = g.run(&[
            Input::F32(standard.view().into_dyn()),
            Input::I64(labels.view().into_dyn()),
        ])?;
        let bad = |n: &str| InferError::Run {
            backend: self.backend.name(),
            message: format!("the label generator's `{n}` has the wrong type or shape"),
        };
        let probs =
            two_d(&mut out, maxl_onnx::LABEL_PROBS).ok_or_else(|| bad(maxl_onnx::LABEL_PROBS))?;
        let slots = match out.remove(maxl_onnx::LABEL_SLOT) {
            Some(Output::I64(a)) => a
                .into_dimensionality::<Ix1>()
                .map_err(|_| bad(maxl_onnx::LABEL_SLOT))?,
            _ => return Err(bad(maxl_onnx::LABEL_SLOT)),
        };
        let n = labels.len();
        if probs.nrows() != n {
            return Err(bad(maxl_onnx::LABEL_PROBS));
        }
        if slots.len() != n {
            return Err(bad(maxl_onnx::LABEL_SLOT));
        }
        let weights = if self.sample_weight {
            match out.remove(maxl_onnx::SAMPLE_WEIGHT) {
                Some(Output::F32(a)) => match a.into_dimensionality::<Ix1>() {
                    Ok(w) if w.len() == n => Some(w),
                    _ => return Err(bad(maxl_onnx::SAMPLE_WEIGHT)),
                },
                _ => return Err(bad(maxl_onnx::SAMPLE_WEIGHT)),
            }
        } else {
            None
        };
        Ok(GeneratedLabels {
            probs,
            slots,
            logits: two_d(&mut out, maxl_onnx::GENERATOR_LOGITS),
            weights,
        })
    }

    /// Per image: the primary distribution, the predicted class, the top-k classes and, as
    /// asked, the label generator's slot. One image's result never depends on the others in
    /// its batch.
    pub fn classify(
        &self,
        images: ArrayView4<'_, f32>,
        opts: &Classify<'_>,
    ) -> Result<Vec<Classification>, InferError> {
        let n = images.shape()[0];
        let given = match opts.aux {
            AuxFor::Given(l) => Some(l.len()),
            AuxFor::GivenOrPredicted(l) => Some(l.len()),
            _ => None,
        };
        if let Some(len) = given
            && len != n
        {
            return Err(InferError::Input(format!("{len} labels for {n} images")));
        }
        if n == 0 {
            self.check_images(&images)?;
            return Ok(Vec::new());
        }
        let p = self.predict(images.view())?;
        let classes = &self.manifest.classes;
        let class_prob = |k: usize, row: &[f32]| ClassProbability {
            class: k,
            name: classes[k].name.clone(),
            probability: row[k],
        };
        let mut results: Vec<Classification> = p
            .primary_probs
            .rows()
            .into_iter()
            .map(|row| {
                let row = row.to_vec();
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                let top_k = order
                    .iter()
                    .take(opts.top_k.min(row.len()))
                    .map(|&k| class_prob(k, &row))
                    .collect();
                Classification {
                    class: class_prob(argmax(&row), &row),
                    top_k,
                    primary: row,
                    aux: None,
                }
            })
            .collect();
        let aux_classes: Vec<usize> = match opts.aux {
            AuxFor::None => return Ok(results),
            AuxFor::Predicted if self.generator.is_none() => return Ok(results),
            AuxFor::Predicted => results.iter().map(|r| r.class.class).collect(),
            AuxFor::Given(labels) => labels.to_vec(),
            AuxFor::GivenOrPredicted(labels) => labels
                .iter()
                .zip(&results)
                .map(|(l, r)| l.unwrap_or(r.class.class))
                .collect(),
        };
        let labels = Array1::from_iter(aux_classes.iter().map(|&k| k as i64));
        let g = self.generate_labels(images, labels.view())?;
        for (j, (r, &k)) in results.iter_mut().zip(&aux_classes).enumerate() {
            let slots = self.hierarchy.slots(k);
            let slot = g.slots[j] as usize;
            let distribution: Vec<f32> = slots.clone().map(|s| g.probs[[j, s]]).collect();
            r.aux = Some(AuxLabel {
                class: k,
                slot,
                label: self.manifest.aux_slots[slot].clone(),
                probability: g.probs[[j, slot]],
                distribution,
                weight: g.weights.as_ref().map(|w| w[j]),
            });
        }
        Ok(results)
    }

    /// [`MaxlModel::classify`] on encoded images; the first bad image fails the call.
    pub fn classify_encoded(
        &self,
        images: &[&[u8]],
        opts: &Classify<'_>,
    ) -> Result<Vec<Classification>, InferError> {
        let pixels = images
            .iter()
            .enumerate()
            .map(|(i, b)| self.preprocess(b, &format!("image {i}")))
            .collect::<Result<Vec<_>, _>>()?;
        self.classify(self.stack(&pixels)?.view(), opts)
    }
}
