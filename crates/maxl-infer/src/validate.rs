//! Load-time checks that a manifest and its graphs agree: the class count, Σψ and ψ itself,
//! the image input's C×H×W, and the input and output names both backends look up. A mismatch
//! is a load error naming the manifest field, never a wrong answer or a panic later.

use std::path::Path;

use maxl_core::manifest::{MANIFEST_FILE, Manifest, ModelFile};
use maxl_onnx::{GraphDecl, TensorDecl};

use crate::error::InferError;

/// Which of the two graphs is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Primary,
    Generator,
}

/// Checks one graph against the manifest, phase by phase: names, image input, output widths and
/// (for the generator) the ψ mask. The first disagreement is the error.
pub(crate) fn check(
    dir: &Path,
    manifest: &Manifest,
    file: &ModelFile,
    role: Role,
    bytes: &[u8],
) -> Result<(), InferError> {
    let decl = maxl_onnx::describe(bytes).map_err(|message| InferError::Model {
        path: dir.join(&file.path),
        message,
    })?;
    let g = GraphCheck {
        dir,
        manifest,
        file,
        role,
        decl,
    };
    g.check_names()?;
    g.check_image()?;
    match role {
        Role::Primary => g.check_primary_widths(),
        Role::Generator => {
            g.check_generator_widths()?;
            g.check_psi_mask()
        }
    }
}

/// One graph's declaration with the manifest entry that describes it.
struct GraphCheck<'a> {
    dir: &'a Path,
    manifest: &'a Manifest,
    file: &'a ModelFile,
    role: Role,
    decl: GraphDecl,
}

impl GraphCheck<'_> {
    /// A disagreement on manifest `field`, naming the graph's file.
    fn mismatch(&self, field: &'static str, message: String) -> InferError {
        InferError::Mismatch {
            manifest: self.dir.join(MANIFEST_FILE),
            field,
            message: format!("{message} ({})", self.file.path),
        }
    }

    /// The manifest fields that list this graph's inputs and outputs.
    fn fields(&self) -> (&'static str, &'static str) {
        match self.role {
            Role::Primary => ("models.primary.inputs", "models.primary.outputs"),
            Role::Generator => (
                "models.label_generator.inputs",
                "models.label_generator.outputs",
            ),
        }
    }

    fn lists_output(&self, name: &str) -> bool {
        self.file.outputs.iter().any(|o| o == name)
    }

    /// The manifest's input and output names against the graph's, and the names maxl feeds and
    /// reads.
    fn check_names(&self) -> Result<(), InferError> {
        let (inputs_field, outputs_field) = self.fields();
        let file = self.file;
        let names = |v: &[TensorDecl]| v.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let graph_inputs = names(&self.decl.inputs);
        if graph_inputs != file.inputs {
            return Err(self.mismatch(
                inputs_field,
                format!(
                    "the manifest lists {:?}, the graph's inputs are {graph_inputs:?}",
                    file.inputs
                ),
            ));
        }
        let graph_outputs = names(&self.decl.outputs);
        for o in &file.outputs {
            if !graph_outputs.contains(o) {
                return Err(self.mismatch(
                    outputs_field,
                    format!("`{o}` is not an output of the graph (its outputs: {graph_outputs:?})"),
                ));
            }
        }
        let needed: &[&str] = match self.role {
            Role::Primary => &[maxl_onnx::PRIMARY_PROBS, maxl_onnx::PRIMARY_LOGITS],
            Role::Generator => &[maxl_onnx::LABEL_PROBS, maxl_onnx::LABEL_SLOT],
        };
        if let Some(n) = needed.iter().find(|n| !self.lists_output(n)) {
            return Err(self.mismatch(outputs_field, format!("`{n}` is missing; maxl needs it")));
        }
        let needed_inputs: &[&str] = match self.role {
            Role::Primary => &[maxl_onnx::IMAGE],
            Role::Generator => &[maxl_onnx::IMAGE, maxl_onnx::PRIMARY_LABEL],
        };
        if file.inputs.len() != needed_inputs.len()
            || needed_inputs
                .iter()
                .any(|n| !file.inputs.iter().any(|i| i == n))
        {
            return Err(self.mismatch(
                inputs_field,
                format!(
                    "maxl feeds {needed_inputs:?}, the manifest lists {:?}",
                    file.inputs
                ),
            ));
        }
        Ok(())
    }

    /// Output `name`'s second dimension must be `want`; `what` says where `want` comes from.
    fn expect_width(
        &self,
        name: &str,
        want: usize,
        field: &'static str,
        what: &str,
    ) -> Result<(), InferError> {
        let width = self
            .decl
            .outputs
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.dims.get(1).copied().flatten());
        match width {
            Some(w) if w == want => Ok(()),
            got => Err(self.mismatch(
                field,
                format!(
                    "{what}, the graph's `{name}` has {}",
                    got.map_or("an unknown width".to_string(), |w| format!("width {w}"))
                ),
            )),
        }
    }

    /// The primary graph's outputs: K classes wide, the auxiliary head (if exported) Σψ wide.
    fn check_primary_widths(&self) -> Result<(), InferError> {
        let k = self.manifest.classes.len();
        let a = self.manifest.aux_slots.len();
        for n in [maxl_onnx::PRIMARY_PROBS, maxl_onnx::PRIMARY_LOGITS] {
            self.expect_width(n, k, "classes", &format!("the manifest lists {k} classes"))?;
        }
        for n in [maxl_onnx::AUX_PROBS, maxl_onnx::AUX_LOGITS] {
            if self.lists_output(n) {
                self.expect_width(n, a, "psi", &format!("ψ sums to {a}"))?;
            }
        }
        Ok(())
    }

    /// The label generator's outputs: Σψ wide.
    fn check_generator_widths(&self) -> Result<(), InferError> {
        let a = self.manifest.aux_slots.len();
        for n in [maxl_onnx::LABEL_PROBS, maxl_onnx::GENERATOR_LOGITS] {
            if self.lists_output(n) {
                self.expect_width(n, a, "psi", &format!("ψ sums to {a}"))?;
            }
        }
        Ok(())
    }

    /// The label generator's ψ mask table must be the manifest's ψ.
    fn check_psi_mask(&self) -> Result<(), InferError> {
        let (k, a) = (self.manifest.classes.len(), self.manifest.aux_slots.len());
        let want = self
            .manifest
            .hierarchy()
            .map_err(|e| self.mismatch("psi", e))?;
        match &self.decl.psi_mask {
            Some(m) if m.shape == [k, a] && m.data == want.mask_table() => Ok(()),
            Some(m) => {
                let psi: Vec<usize> = if m.shape.len() == 2 && m.shape[1] > 0 {
                    m.data
                        .chunks(m.shape[1])
                        .map(|row| row.iter().filter(|&&v| v != 0.0).count())
                        .collect()
                } else {
                    Vec::new()
                };
                Err(self.mismatch(
                    "psi",
                    format!(
                        "the manifest's ψ is {:?}, the graph's ψ mask is {:?}",
                        self.manifest.psi, psi
                    ),
                ))
            }
            None => Err(self.mismatch(
                "psi",
                format!(
                    "the graph has no `{}`; it is not a maxl label generator",
                    maxl_onnx::PSI_MASK_TABLE
                ),
            )),
        }
    }

    /// The image input: NCHW in [0, 1], f32, the manifest's C×H×W; `primary_label` an int64
    /// vector.
    fn check_image(&self) -> Result<(), InferError> {
        let i = &self.manifest.input;
        if i.layout != "NCHW" || i.pixel_range != [0.0, 1.0] {
            return Err(self.mismatch(
                "input",
                format!(
                    "layout {} with pixel range {:?}; maxl feeds NCHW in [0, 1]",
                    i.layout, i.pixel_range
                ),
            ));
        }
        let image = self
            .decl
            .inputs
            .iter()
            .find(|t| t.name == maxl_onnx::IMAGE)
            .ok_or_else(|| self.mismatch("input", "the graph has no `image` input".into()))?;
        let want = [Some(i.channels), Some(i.height), Some(i.width)];
        if !image.is_f32() || image.dims.len() != 4 || image.dims[1..] != want {
            let got: Vec<String> = image
                .dims
                .iter()
                .map(|d| d.map_or("?".into(), |v| v.to_string()))
                .collect();
            return Err(self.mismatch(
                "input",
                format!(
                    "the manifest says {}×{}×{}, the graph's `image` is {} ({})",
                    i.channels,
                    i.height,
                    i.width,
                    got.join("×"),
                    if image.is_f32() { "f32" } else { "not f32" }
                ),
            ));
        }
        if let Some(label) = self
            .decl
            .inputs
            .iter()
            .find(|t| t.name == maxl_onnx::PRIMARY_LABEL)
            && (!label.is_i64() || label.dims.len() != 1)
        {
            return Err(self.mismatch(
                "input",
                "the graph's `primary_label` is not an int64 vector".into(),
            ));
        }
        Ok(())
    }
}
