//! What a run directory and its checkpoints hold on disk, shared by the modules that write and
//! read them (run, checkpoint, export): file names, the checkpoint's state record, and
//! safetensors reading and writing.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::TrainError;

/// Display names of the primary classes, written into every run directory.
pub const CLASSES_FILE: &str = "classes.yaml";
/// The multi-task network f(θ1) in a checkpoint: parameters and batch-norm running statistics.
pub const MULTITASK_FILE: &str = "multitask.safetensors";
/// The label generator g(θ2) in a checkpoint (methods with a generator only).
pub const GENERATOR_FILE: &str = "label_generator.safetensors";
/// The SGD momentum buffers of a checkpoint, as `<network>.<parameter>.momentum_buffer`.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// A checkpoint's [`TrainState`].
pub const STATE_FILE: &str = "state.yaml";
/// The version of `state.yaml` this maxl-train writes and reads.
pub const STATE_FORMAT: u32 = 1;

/// `state.yaml` of a checkpoint: where the run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The version of this record, [`STATE_FORMAT`].
    pub format: u32,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Stage-1 optimiser steps taken so far (over all epochs).
    pub steps_done: usize,
    /// The best validation accuracy so far (NaN without a validation set).
    pub best_val_acc: f64,
    /// The epoch (from 1) of `best_val_acc`, the one `checkpoints/best` holds (the last without a
    /// validation set).
    pub best_epoch: usize,
}

/// Named tensors of a safetensors file, refused with the file's name when missing or unreadable.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, TrainError> {
    if !path.is_file() {
        return Err(TrainError::output(path, "missing checkpoint file"));
    }
    Tensor::read_safetensors(path).map_err(|e| {
        TrainError::output(
            path,
            format!(
                "not a readable safetensors file: {}",
                crate::first_line(&e.to_string())
            ),
        )
    })
}

/// Writes named tensors as safetensors (on the CPU, contiguous), through a temporary file and a
/// rename like [`maxl_core::fsio::write_atomic`].
pub fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<(), TrainError> {
    let tmp = maxl_core::fsio::tmp_path(path);
    let cpu: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| TrainError::output(&tmp, e))?;
    Ok(maxl_core::fsio::rename_durable(&tmp, path)?)
}
