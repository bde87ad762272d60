//! Load-time checks that a manifest and its graphs agree: the class count, Σψ and ψ itself,
//! the image input's C×H×W, the input and output names both backends look up, and (for a
//! `maxl-weighted` generator) the `sample_weight` output's shape `[N]`. A mismatch
//! is a load error naming the manifest field, never a wrong answer or a panic later.
//!
//! A file that carries maxl metadata ([`maxl_onnx::metadata`]) must also say what the manifest
//! says: class names and their order, ψ, slot names and the whole input description (sizes,
//! mean, std, resize policy) — what the graph's shapes cannot show. Files exported before the
//! metadata existed have none and are checked on their shapes only.

use std::path::Path;

use maxl_core::manifest::{MANIFEST_FILE, Manifest, ModelFile};
use maxl_onnx::{GraphDecl, ModelMetadata, TensorDecl};

use crate::error::InferError;

/// Which of the two graphs is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Primary,
    Generator,
}

/// What a checked graph has beyond what the manifest lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The graph declares `sample_weight` (checked to be an f32 vector `[N]`).
    pub sample_weight: bool,
}

/// Checks one graph against the manifest, phase by phase: names, image input, output widths,
/// (for the generator) the ψ mask and `sample_weight`, and the file's metadata. The first
/// disagreement is the error.
pub(crate) fn check(
    dir: &Path,
    manifest: &Manifest,
    file: &ModelFile,
    role: Role,
    bytes: &[u8],
) -> Result<Checked, InferError> {
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
    let mut checked = Checked {
        sample_weight: false,
    };
    match role {
        Role::Primary => g.check_primary_widths()?,
        Role::Generator => {
            g.check_generator_widths()?;
            g.check_psi_mask()?;
            checked.sample_weight = g.check_sample_weight()?;
        }
    }
    g.check_metadata()?;
    Ok(checked)
}

/// The first field on which a file's metadata and the manifest disagree: the manifest field and
/// a message saying what each side says.
fn metadata_difference(file: &ModelMetadata, m: &Manifest) -> Option<(&'static str, String)> {
    let says = |what: &str, ours: String, theirs: String| {
        format!("metadata says {what} is {ours}, {MANIFEST_FILE} says {theirs}")
    };
    let counts = |what: &str, ours: usize, theirs: usize| {
        format!("metadata lists {ours} {what}, {MANIFEST_FILE} lists {theirs}")
    };
    if file.classes.len() != m.classes.len() {
        return Some((
            "classes",
            counts("classes", file.classes.len(), m.classes.len()),
        ));
    }
    for (k, (a, b)) in file.classes.iter().zip(&m.classes).enumerate() {
        if a.display != b.display {
            let what = format!("class {k}");
            return Some(("classes", says(&what, q(&a.display), q(&b.display))));
        }
        if a.name != b.name {
            let what = format!("class {k}'s folder-safe name");
            return Some(("classes", says(&what, q(&a.name), q(&b.name))));
        }
    }
    if file.psi != m.psi {
        let show = |p: &[usize]| format!("{p:?}");
        return Some(("psi", says("ψ", show(&file.psi), show(&m.psi))));
    }
    if file.aux_slots.len() != m.aux_slots.len() {
        let what = "auxiliary slots";
        return Some((
            "aux_slots",
            counts(what, file.aux_slots.len(), m.aux_slots.len()),
        ));
    }
    if let Some((k, (a, b))) = file
        .aux_slots
        .iter()
        .zip(&m.aux_slots)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        return Some((
            "aux_slots",
            says(&format!("auxiliary slot {k}"), q(a), q(b)),
        ));
    }
    input_difference(file, m).map(|message| ("input", message))
}

/// The first difference between the input descriptions, mean and std compared per channel and
/// exactly (both sides come from the same f32 values).
fn input_difference(file: &ModelMetadata, m: &Manifest) -> Option<String> {
    let (a, b) = (&file.input, &m.input);
    let says = |what: &str, ours: String, theirs: String| {
        Some(format!(
            "metadata says input {what} is {ours}, {MANIFEST_FILE} says {theirs}"
        ))
    };
    for (what, ours, theirs) in [
        ("channels", a.channels, b.channels),
        ("height", a.height, b.height),
        ("width", a.width, b.width),
    ] {
        if ours != theirs {
            return says(what, ours.to_string(), theirs.to_string());
        }
    }
    if a.layout != b.layout {
        return says("layout", q(&a.layout), q(&b.layout));
    }
    if a.pixel_range != b.pixel_range {
        let show = |r: &[f32; 2]| format!("{r:?}");
        return says("pixel_range", show(&a.pixel_range), show(&b.pixel_range));
    }
    if a.normalisation != b.normalisation {
        return says("normalisation", q(&a.normalisation), q(&b.normalisation));
    }
    let per_channel = |i: &maxl_core::manifest::ManifestInput| {
        (i.mean.expand(i.channels), i.std.expand(i.channels))
    };
    let ((a_mean, a_std), (b_mean, b_std)) = (per_channel(a), per_channel(b));
    if a_mean != b_mean {
        return says("mean", format!("{a_mean:?}"), format!("{b_mean:?}"));
    }
    if a_std != b_std {
        return says("std", format!("{a_std:?}"), format!("{b_std:?}"));
    }
    if a.resize != b.resize {
        return says("resize", a.resize.describe(), b.resize.describe());
    }
    None
}

/// A name in quotes, escaped, as the messages show names.
fn q(s: &str) -> String {
    format!("{s:?}")
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

    /// The label generator's `sample_weight`, when the graph declares it: an f32 vector `[N]`,
    /// one weight per image. Returns whether the graph has it.
    fn check_sample_weight(&self) -> Result<bool, InferError> {
        let Some(t) = self
            .decl
            .outputs
            .iter()
            .find(|t| t.name == maxl_onnx::SAMPLE_WEIGHT)
        else {
            return Ok(false);
        };
        if t.is_f32() && t.dims.len() == 1 {
            return Ok(true);
        }
        let dims: Vec<String> = t
            .dims
            .iter()
            .map(|d| d.map_or("N".into(), |v| v.to_string()))
            .collect();
        Err(self.mismatch(
            self.fields().1,
            format!(
                "the graph's `{}` is [{}] ({}); maxl reads an f32 vector [N], one weight per image",
                maxl_onnx::SAMPLE_WEIGHT,
                dims.join(", "),
                if t.is_f32() { "f32" } else { "not f32" }
            ),
        ))
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

    /// The file's maxl metadata, when it has any, against the manifest.
    fn check_metadata(&self) -> Result<(), InferError> {
        let path = self.dir.join(&self.file.path);
        let metadata = match self.decl.maxl_metadata() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(message) => return Err(InferError::Model { path, message }),
        };
        match metadata_difference(&metadata, self.manifest) {
            None => Ok(()),
            Some((field, message)) => Err(InferError::Metadata {
                path,
                field,
                message,
            }),
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

#[cfg(test)]
mod tests {
    use maxl_core::arch::{PerChannel, Resize};

    use super::*;

    /// The committed model's manifest (its files predate the metadata, so it is the reference).
    fn committed() -> Manifest {
        Manifest::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap()
    }

    #[test]
    fn metadata_equal_to_the_manifest_passes_a_uniform_mean_equals_its_expansion() {
        let m = committed();
        let mut file = ModelMetadata::of_manifest(&m);
        assert_eq!(metadata_difference(&file, &m), None);
        // What a file reads back: per-channel lists for the manifest's single values.
        file.input.mean = PerChannel::Channels(vec![0.5]);
        file.input.std = PerChannel::Channels(vec![0.2]);
        file.producer = "maxl-train 9.9.9".into();
        assert_eq!(metadata_difference(&file, &m), None);
    }

    #[test]
    fn the_first_differing_field_is_named_with_both_values() {
        let m = committed();
        type Edit = fn(&mut ModelMetadata);
        let cases: [(Edit, &str, &str); 10] = [
            (
                |f| f.classes.swap(3, 4),
                "classes",
                r#"metadata says class 3 is "Coat", maxl.yaml says "Dress""#,
            ),
            (
                |f| f.classes[0].name = "T-shirt".into(),
                "classes",
                r#"metadata says class 0's folder-safe name is "T-shirt", maxl.yaml says "T-shirt_top""#,
            ),
            (
                |f| drop(f.classes.pop()),
                "classes",
                "metadata lists 9 classes, maxl.yaml lists 10",
            ),
            (
                |f| f.psi[1] = 4,
                "psi",
                "metadata says ψ is [5, 4, 5, 5, 5, 5, 5, 5, 5, 5], maxl.yaml says [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]",
            ),
            (
                |f| f.aux_slots.swap(6, 7),
                "aux_slots",
                r#"metadata says auxiliary slot 6 is "Trouser.2", maxl.yaml says "Trouser.1""#,
            ),
            (
                |f| f.input.height = 32,
                "input",
                "metadata says input height is 32, maxl.yaml says 28",
            ),
            (
                |f| f.input.mean = PerChannel::Channels(vec![0.485]),
                "input",
                "metadata says input mean is [0.485], maxl.yaml says [0.5]",
            ),
            (
                |f| f.input.std = 0.25.into(),
                "input",
                "metadata says input std is [0.25], maxl.yaml says [0.2]",
            ),
            (
                |f| f.input.resize = Resize::ShorterSide(32),
                "input",
                "metadata says input resize is shorter-side-32, maxl.yaml says stretch",
            ),
            (
                |f| f.input.normalisation = "outside".into(),
                "input",
                r#"metadata says input normalisation is "outside", maxl.yaml says "in-graph""#,
            ),
        ];
        for (edit, field, message) in cases {
            let mut file = ModelMetadata::of_manifest(&m);
            edit(&mut file);
            assert_eq!(
                metadata_difference(&file, &m),
                Some((field, message.to_string()))
            );
        }
    }
}
