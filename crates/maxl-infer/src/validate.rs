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

pub(crate) fn check(
    dir: &Path,
    manifest: &Manifest,
    file: &ModelFile,
    role: Role,
    bytes: &[u8],
) -> Result<(), InferError> {
    let path = dir.join(&file.path);
    let decl = maxl_onnx::describe(bytes).map_err(|message| InferError::Model {
        path: path.clone(),
        message,
    })?;
    let mismatch = |field: &'static str, message: String| InferError::Mismatch {
        manifest: dir.join(MANIFEST_FILE),
        field,
        message: format!("{message} ({})", file.path),
    };
    let (inputs_field, outputs_field) = match role {
        Role::Primary => ("models.primary.inputs", "models.primary.outputs"),
        Role::Generator => (
            "models.label_generator.inputs",
            "models.label_generator.outputs",
        ),
    };
    let names = |v: &[TensorDecl]| v.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let graph_inputs = names(&decl.inputs);
    if graph_inputs != file.inputs {
        return Err(mismatch(
            inputs_field,
            format!(
                "the manifest lists {:?}, the graph's inputs are {graph_inputs:?}",
                file.inputs
            ),
        ));
    }
    let graph_outputs = names(&decl.outputs);
    for o in &file.outputs {
        if !graph_outputs.contains(o) {
            return Err(mismatch(
                outputs_field,
                format!("`{o}` is not an output of the graph (its outputs: {graph_outputs:?})"),
            ));
        }
    }
    let needed: &[&str] = match role {
        Role::Primary => &[maxl_onnx::PRIMARY_PROBS, maxl_onnx::PRIMARY_LOGITS],
        Role::Generator => &[maxl_onnx::LABEL_PROBS, maxl_onnx::LABEL_SLOT],
    };
    for n in needed {
        if !file.outputs.iter().any(|o| o == n) {
            return Err(mismatch(
                outputs_field,
                format!("`{n}` is missing; maxl needs it"),
            ));
        }
    }
    let needed_inputs: &[&str] = match role {
        Role::Primary => &[maxl_onnx::IMAGE],
        Role::Generator => &[maxl_onnx::IMAGE, maxl_onnx::PRIMARY_LABEL],
    };
    if file.inputs.len() != needed_inputs.len()
        || needed_inputs
            .iter()
            .any(|n| !file.inputs.iter().any(|i| i == n))
    {
        return Err(mismatch(
            inputs_field,
            format!(
                "maxl feeds {needed_inputs:?}, the manifest lists {:?}",
                file.inputs
            ),
        ));
    }
    check_image(&decl, manifest, &mismatch)?;
    let k = manifest.classes.len();
    let a = manifest.aux_slots.len();
    let width = |name: &str| {
        decl.outputs
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.dims.get(1).copied().flatten())
    };
    let expect_width =
        |name: &str, want: usize, field: &'static str, what: String| match width(name) {
            Some(w) if w == want => Ok(()),
            got => Err(mismatch(
                field,
                format!(
                    "{what}, the graph's `{name}` has {}",
                    got.map_or("an unknown width".to_string(), |w| format!("width {w}"))
                ),
            )),
        };
    match role {
        Role::Primary => {
            for n in [maxl_onnx::PRIMARY_PROBS, maxl_onnx::PRIMARY_LOGITS] {
                expect_width(n, k, "classes", format!("the manifest lists {k} classes"))?;
            }
            for n in [maxl_onnx::AUX_PROBS, maxl_onnx::AUX_LOGITS] {
                if file.outputs.iter().any(|o| o == n) {
                    expect_width(n, a, "psi", format!("ψ sums to {a}"))?;
                }
            }
        }
        Role::Generator => {
            for n in [maxl_onnx::LABEL_PROBS, maxl_onnx::GENERATOR_LOGITS] {
                if file.outputs.iter().any(|o| o == n) {
                    expect_width(n, a, "psi", format!("ψ sums to {a}"))?;
                }
            }
            let want = manifest.hierarchy().map_err(|e| mismatch("psi", e))?;
            match &decl.psi_mask {
                Some(m) if m.shape == [k, a] && m.data == want.mask_table() => {}
                Some(m) => {
                    let psi: Vec<usize> = if m.shape.len() == 2 && m.shape[1] > 0 {
                        m.data
                            .chunks(m.shape[1])
                            .map(|row| row.iter().filter(|&&v| v != 0.0).count())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    return Err(mismatch(
                        "psi",
                        format!(
                            "the manifest's ψ is {:?}, the graph's ψ mask is {:?}",
                            manifest.psi, psi
                        ),
                    ));
                }
                None => {
                    return Err(mismatch(
                        "psi",
                        format!(
                            "the graph has no `{}`; it is not a maxl label generator",
                            maxl_onnx::PSI_MASK_TABLE
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_image(
    decl: &GraphDecl,
    manifest: &Manifest,
    mismatch: &dyn Fn(&'static str, String) -> InferError,
) -> Result<(), InferError> {
    let i = &manifest.input;
    if i.layout != "NCHW" || i.pixel_range != [0.0, 1.0] {
        return Err(mismatch(
            "input",
            format!(
                "layout {} with pixel range {:?}; maxl feeds NCHW in [0, 1]",
                i.layout, i.pixel_range
            ),
        ));
    }
    let image = decl
        .inputs
        .iter()
        .find(|t| t.name == maxl_onnx::IMAGE)
        .ok_or_else(|| mismatch("input", "the graph has no `image` input".into()))?;
    let want = [Some(i.channels), Some(i.height), Some(i.width)];
    if !image.is_f32() || image.dims.len() != 4 || image.dims[1..] != want {
        let got: Vec<String> = image
            .dims
            .iter()
            .map(|d| d.map_or("?".into(), |v| v.to_string()))
            .collect();
        return Err(mismatch(
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
    if let Some(label) = decl
        .inputs
        .iter()
        .find(|t| t.name == maxl_onnx::PRIMARY_LABEL)
        && (!label.is_i64() || label.dims.len() != 1)
    {
        return Err(mismatch(
            "input",
            "the graph's `primary_label` is not an int64 vector".into(),
        ));
    }
    Ok(())
}
