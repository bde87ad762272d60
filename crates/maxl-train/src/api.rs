//! The library's entry points, for scripts and services as for the `maxl-train` command:
//! [`train`] a new run, [`resume`] one, [`Outcome::export`] it (or [`export_checkpoint`] any
//! checkpoint), run an experiment with [`compare`] and regenerate its tables with [`results`].
//! Each validates what it is given and returns a [`TrainError`]; none panics on a config a user
//! can write.

use std::path::{Path, PathBuf};

use maxl_core::TrainConfig;
use maxl_core::manifest::Manifest;
use tch::Device;

use crate::TrainError;
use crate::compare::{Experiment, Overrides};
use crate::epoch_loop::{self, Observer, Outcome, Silent, Start};
use crate::export::ExportInfo;
use crate::resident::DataPlacement;
use maxl_onnx::ExportOptions;

/// Which device to train on, as a user asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// The CPU.
    #[default]
    Cpu,
    /// The first CUDA device; an error when libtorch sees none.
    Cuda,
    /// CUDA when libtorch sees a device, the CPU otherwise.
    Auto,
}

impl maxl_core::Choice for DeviceRequest {
    const ALL: &'static [Self] = &[DeviceRequest::Cpu, DeviceRequest::Cuda, DeviceRequest::Auto];

    fn name(self) -> &'static str {
        match self {
            DeviceRequest::Cpu => "cpu",
            DeviceRequest::Cuda => "cuda",
            DeviceRequest::Auto => "auto",
        }
    }
}

impl DeviceRequest {
    /// The libtorch device, or why there is none.
    pub fn resolve(self) -> Result<Device, TrainError> {
        match self {
            DeviceRequest::Cpu => Ok(Device::Cpu),
            DeviceRequest::Auto => Ok(Device::cuda_if_available()),
            DeviceRequest::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceRequest::Cuda => Err(TrainError::Invalid(
                "device cuda: libtorch sees no CUDA device (no GPU, no driver, or a CPU-only libtorch)"
                    .into(),
            )),
        }
    }
}

/// How a run trains, beyond its config: where, with how many steps at most, reporting to whom.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// The training device.
    pub device: Device,
    /// Where training batches are made.
    pub placement: DataPlacement,
    /// Stop after this many stage-1 steps in total (the last epoch may be partial).
    pub max_steps: Option<usize>,
    /// Told about every epoch and step.
    pub observer: &'a dyn Observer,
    /// The process group when this process is one rank of a data-parallel run (see
    /// [`crate::dist`]); None for a single process.
    pub group: Option<&'a std::sync::Arc<crate::dist::Group>>,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            placement: DataPlacement::Auto,
            max_steps: None,
            observer: &Silent,
            group: None,
        }
    }
}

/// Trains a new run into the run directory `out` (refused when it already holds a run): the
/// config is validated first, and nothing is written when it is wrong.
pub fn train(
    config: &TrainConfig,
    out: &Path,
    opts: &RunOptions<'_>,
) -> Result<Outcome, TrainError> {
    // The epoch loop validates the config before it writes anything.
    let start = Start::New {
        config: Box::new(config.clone()),
        out: out.to_path_buf(),
    };
    epoch_loop::run(
        start,
        (opts.device, opts.placement),
        opts.max_steps,
        opts.observer,
        opts.group,
    )
}

/// Continues the run in `dir` from its last checkpoint with its own config; `epochs` sets a
/// new total. A run that already has its epochs returns with [`Outcome::last`] `None`.
pub fn resume(
    dir: &Path,
    epochs: Option<usize>,
    opts: &RunOptions<'_>,
) -> Result<Outcome, TrainError> {
    let start = Start::Resume {
        dir: dir.to_path_buf(),
        epochs,
    };
    epoch_loop::run(
        start,
        (opts.device, opts.placement),
        opts.max_steps,
        opts.observer,
        opts.group,
    )
}

impl Outcome {
    /// Exports the networks as they are now to ONNX, with the manifest `maxl.yaml`, into `dir`
    /// (created if needed; every file replaced atomically).
    pub fn export(&self, dir: &Path, opts: ExportOptions) -> Result<Manifest, TrainError> {
        let t = &self.trainer;
        let info = ExportInfo {
            config: &t.config,
            arch: &t.arch,
            hierarchy: &t.data.hierarchy,
            class_names: &t.data.train.class_names,
            epochs: self.state.epochs_done,
            primary_test_accuracy: self.last.as_ref().map(|m| m.test_acc),
        };
        crate::export::export(dir, &t.f, t.generator(), &info, opts)
    }
}

pub use crate::export::export_checkpoint;

/// Runs an experiment file (every run × seed not finished yet; interrupted ones continue) into
/// `out`, then writes its results table and plots and returns the table.
pub fn compare(
    experiment: &Path,
    out: &Path,
    overrides: &Overrides,
    device: Device,
    placement: DataPlacement,
    observer: &dyn Observer,
) -> Result<String, TrainError> {
    let whole = Experiment::load(experiment)?;
    let record = whole.clone().recorded(overrides, experiment)?;
    let e = whole.with_overrides(overrides, experiment)?;
    crate::compare::run_all(&e, &record, experiment, out, (device, placement), observer)?;
    results(out)
}

/// Regenerates `results.md`, `results.csv`, `test_accuracy.png` and `slot_usage.png` of an
/// experiment directory from its finished runs; returns the table.
pub fn results(dir: &Path) -> Result<String, TrainError> {
    crate::results::write(dir)
}

/// The default output directory of an experiment file: `experiments/<file stem>`.
pub fn default_experiment_dir(experiment: &Path) -> PathBuf {
    crate::results::default_out(experiment)
}

#[cfg(test)]
mod tests {
    use maxl_core::Choice;

    use super::DeviceRequest;
    use crate::resident::DataPlacement;

    /// Every variant is listed once in `ALL` (the match below stops compiling when one is added)
    /// and its name parses back to it.
    #[test]
    fn every_variant_has_a_name_on_the_command_line() {
        let place = |p: DataPlacement| match p {
            DataPlacement::Auto => 0,
            DataPlacement::Device => 1,
            DataPlacement::Host => 2,
        };
        let device = |d: DeviceRequest| match d {
            DeviceRequest::Cpu => 0,
            DeviceRequest::Cuda => 1,
            DeviceRequest::Auto => 2,
        };
        assert_eq!(
            DataPlacement::ALL
                .iter()
                .map(|&p| place(p))
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(
            DeviceRequest::ALL
                .iter()
                .map(|&d| device(d))
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for &p in DataPlacement::ALL {
            assert_eq!(DataPlacement::from_name(p.name()), Some(p));
        }
        for &d in DeviceRequest::ALL {
            assert_eq!(DeviceRequest::from_name(d.name()), Some(d));
        }
        assert_eq!(DeviceRequest::Cpu.resolve().unwrap(), tch::Device::Cpu);
    }
}
