//! Fine-tuning's starting point: a backbone initialised from a torchvision-layout state dict.
//!
//! The file is safetensors (a PyTorch `.pth` is converted first by
//! `scripts/convert_torchvision.py`). Its names are torchvision's (`layer1.0.conv1.weight`) or
//! already maxl's (`backbone.layer1.0.conv1.weight`, as in a run's checkpoint); each maps by
//! name onto the backbone, shape-checked, batch-norm running statistics included. The
//! classifier (`fc.*`), `num_batches_tracked` counters and head tensors are ignored; a name
//! that has no place in the backbone, or a shape that differs, refuses the file with the
//! tensor named.

use std::path::Path;

use maxl_core::arch::BACKBONE_PREFIX;
use tch::Tensor;

use crate::TrainError;
use crate::net::ParamStore;

/// What a state dict did to a backbone, by name (maxl's names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Backbone tensors taken from the file.
    pub loaded: Vec<String>,
    /// Tensors of the file that were not used (the file's names): the classifier, counters,
    /// heads.
    pub ignored: Vec<String>,
    /// Backbone tensors the file does not have: they keep their initialisation.
    pub kept: Vec<String>,
}

/// Whether a tensor of a state dict is not for the backbone: the classifier, batch norm's
/// step counters, or one of maxl's heads.
fn ignored(name: &str) -> bool {
    let stripped = name.strip_prefix(BACKBONE_PREFIX).unwrap_or(name);
    stripped.starts_with("fc.")
        || stripped.ends_with("num_batches_tracked")
        || ["primary_head.", "aux_head.", "head."]
            .iter()
            .any(|h| name.starts_with(h))
}

/// Reads the tensors of a safetensors state dict; a PyTorch pickle is refused with the
/// converter's command.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>, TrainError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(ext.as_str(), "pth" | "pt" | "ckpt" | "bin" | "tar") {
        return Err(TrainError::output(
            path,
            format!(
                "a PyTorch pickle; convert it first: python scripts/convert_torchvision.py {} {}",
                path.display(),
                path.with_extension("safetensors").display()
            ),
        ));
    }
    if !path.is_file() {
        return Err(TrainError::output(path, "no such file"));
    }
    Tensor::read_safetensors(path).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("").to_string();
        TrainError::output(path, format!("not a readable safetensors file: {first}"))
    })
}

/// Copies the backbone tensors of the state dict at `path` into `store`; see the module.
pub fn load_backbone(store: &mut ParamStore, path: &Path) -> Result<InitReport, TrainError> {
    let mut named = read_state_dict(path)?;
    // Checked in the backbone's order (the stem first), the file's other tensors by name
    // after: the first mismatch reported is the first a reader of the network would meet.
    let position = |n: &str| {
        let full = if n.starts_with(BACKBONE_PREFIX) {
            n.to_string()
        } else {
            format!("{BACKBONE_PREFIX}{n}")
        };
        store
            .specs
            .iter()
            .position(|s| s.name == full)
            .unwrap_or(usize::MAX)
    };
    named.sort_by(|(a, _), (b, _)| position(a).cmp(&position(b)).then_with(|| a.cmp(b)));
    let mut report = InitReport::default();
    let mut targets = Vec::new();
    for (file_name, tensor) in &named {
        if ignored(file_name) {
            report.ignored.push(file_name.clone());
            continue;
        }
        let name = if file_name.starts_with(BACKBONE_PREFIX) {
            file_name.clone()
        } else {
            format!("{BACKBONE_PREFIX}{file_name}")
        };
        let Some(index) = store.specs.iter().position(|s| s.name == name) else {
            return Err(TrainError::output(
                path,
                format!(
                    "tensor `{file_name}` has no place in this backbone (it has no `{name}`); \
                     is the file for another architecture?"
                ),
            ));
        };
        let spec = &store.specs[index];
        let want: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
        if tensor.size() != want {
            return Err(TrainError::output(
                path,
                format!(
                    "tensor `{file_name}` has shape {:?}, the backbone's `{name}` is {want:?}",
                    tensor.size()
                ),
            ));
        }
        if !tensor.is_floating_point() {
            return Err(TrainError::output(
                path,
                format!(
                    "tensor `{file_name}` is {:?}, not floating point",
                    tensor.kind()
                ),
            ));
        }
        targets.push((index, tensor));
        report.loaded.push(name);
    }
    // Every check passed: only now is the store changed.
    let (mut p, mut b) = (0, 0);
    let mut slot = Vec::with_capacity(store.specs.len());
    for s in &store.specs {
        if s.kind.is_trainable() {
            slot.push((true, p));
            p += 1;
        } else {
            slot.push((false, b));
            b += 1;
        }
    }
    tch::no_grad(|| {
        for (index, tensor) in targets {
            let (trainable, at) = slot[index];
            let dst = if trainable {
                &mut store.params[at]
            } else {
                &mut store.buffers[at]
            };
            dst.copy_(&tensor.to_kind(dst.kind()).to_device(dst.device()));
        }
    });
    report.kept = store
        .specs
        .iter()
        .filter(|s| s.is_backbone() && !report.loaded.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxl_core::arch::Architecture;
    use tch::{Device, Kind};

    fn tiny() -> Architecture {
        let yaml = "input: {channels: 3, height: 8, width: 8, mean: 0.5, std: 0.2}\nresnet: {block: basic, layers: [1, 1], widths: [2, 4], stem: cifar}\nhead_hidden: 3\n";
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn write(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> std::path::PathBuf {
        let path = dir.join(name);
        Tensor::write_safetensors(tensors, &path).unwrap();
        path
    }

    #[test]
    fn torchvision_names_load_and_mismatches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let arch = tiny();
        let specs = arch.multitask_params(2, 0);
        let mut store = crate::net::ParamStore::init(
            specs,
            crate::net::Init::XavierUniform,
            Kind::Float,
            Device::Cpu,
        );
        let w = Tensor::full([2, 3, 3, 3], 0.25, (Kind::Float, Device::Cpu));
        let mean = Tensor::full([2], 0.5, (Kind::Float, Device::Cpu));
        let path = write(
            dir.path(),
            "ok.safetensors",
            &[
                ("conv1.weight", w.shallow_clone()),
                ("bn1.running_mean", mean.shallow_clone()),
                ("bn1.num_batches_tracked", Tensor::from(7i64)),
                (
                    "fc.weight",
                    Tensor::zeros([5, 4], (Kind::Float, Device::Cpu)),
                ),
            ],
        );
        let r = load_backbone(&mut store, &path).unwrap();
        assert_eq!(
            r.loaded,
            vec!["backbone.conv1.weight", "backbone.bn1.running_mean"]
        );
        assert_eq!(r.ignored, vec!["bn1.num_batches_tracked", "fc.weight"]);
        assert!(
            r.kept
                .contains(&"backbone.layer2.0.downsample.0.weight".to_string())
        );
        assert!(!r.kept.contains(&"backbone.conv1.weight".to_string()));
        let named = store.named();
        let get = |n: &str| {
            named
                .iter()
                .find(|(k, _)| k == n)
                .unwrap()
                .1
                .shallow_clone()
        };
        assert!(get("backbone.conv1.weight").equal(&w));
        assert!(get("backbone.bn1.running_mean").equal(&mean));

        let before = store.named();
        let bad_shape = write(
            dir.path(),
            "shape.safetensors",
            &[
                ("bn1.weight", Tensor::ones([2], (Kind::Float, Device::Cpu))),
                (
                    "conv1.weight",
                    Tensor::zeros([2, 3, 7, 7], (Kind::Float, Device::Cpu)),
                ),
            ],
        );
        let e = load_backbone(&mut store, &bad_shape)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shape.safetensors") && e.contains("`conv1.weight`"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        // Nothing changed: the first tensor passed its check but the file was refused.
        for ((_, a), (_, b)) in before.iter().zip(store.named()) {
            assert!(a.equal(&b));
        }
        let bad_name = write(
            dir.path(),
            "name.safetensors",
            &[(
                "layer3.0.conv1.weight",
                Tensor::zeros([4], (Kind::Float, Device::Cpu)),
            )],
        );
        let e = load_backbone(&mut store, &bad_name)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`layer3.0.conv1.weight` has no place"), "{e}");
        let pth = dir.path().join("resnet18.pth");
        std::fs::write(&pth, b"PK").unwrap();
        let e = load_backbone(&mut store, &pth).unwrap_err().to_string();
        assert!(e.contains("convert_torchvision.py"), "{e}");
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not safetensors").unwrap();
        let e = load_backbone(&mut store, &junk).unwrap_err().to_string();
        assert!(e.starts_with(&junk.display().to_string()), "{e}");
    }
}
