//! One training run from start (or from its last checkpoint) to its summary: the loop that
//! `maxl-train` and `maxl-train compare` share. Per epoch: train, append to `metrics.csv`,
//! checkpoint (`last`, and `best` by validation accuracy), redraw the plots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxl_core::config::TrainConfig;
use tch::Device;
use tracing::info;

use crate::TrainError;
use crate::checkpoint;
use crate::data::PreparedData;
use crate::dist::Group;
use crate::resident::DataPlacement;
use crate::run_dir::RunDir;
use crate::run_files::TrainState;
use crate::trainer::{EpochMetrics, Trainer};

/// What a training run reports while it runs. Every method has a default that does nothing;
/// the command line draws a progress bar from [`Observer::steps`].
pub trait Observer {
    /// Epoch `epoch` (counted from 1) of `epochs` starts.
    fn epoch_started(&self, epoch: usize, epochs: usize) {
        let _ = (epoch, epochs);
    }
    /// `done` of the epoch's `total` stage-1 steps are done.
    fn steps(&self, done: usize, total: usize) {
        let _ = (done, total);
    }
    /// The epoch's steps and evaluation are done; it is recorded and checkpointed next.
    fn epoch_trained(&self) {}
    /// The epoch is trained, evaluated, recorded and checkpointed.
    fn epoch_finished(&self, metrics: &EpochMetrics) {
        let _ = metrics;
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}

/// Where a run starts.
pub enum Start {
    /// A new run directory `out` (refused if it already holds a run).
    New {
        /// The run's config (validated before anything is written).
        config: Box<TrainConfig>,
        /// The run directory to create.
        out: PathBuf,
    },
    /// The run in `dir`, from its last checkpoint, with its own config; `epochs` sets a new
    /// total.
    Resume {
        /// The run directory.
        dir: PathBuf,
        /// A new total number of epochs, if given.
        epochs: Option<usize>,
    },
}

/// A finished (or already complete) run.
pub struct Outcome {
    /// The trained networks, their optimisers and data.
    pub trainer: Trainer,
    /// The run directory.
    pub out: PathBuf,
    /// Epochs and steps done, best validation accuracy and its epoch.
    pub state: TrainState,
    /// The last epoch trained now; None when the run already had all its epochs.
    pub last: Option<EpochMetrics>,
}

/// Trains until the configured epochs (or `max_steps` stage-1 steps) are done, then saves the
/// weights and `summary.yaml`.
/// `target`: the device to train on, and where batches are made. With a process `group`, this
/// process is one rank of a data-parallel run (see [`Trainer::join`]): every rank prepares the
/// data and networks (a failure on any rank stops all of them), rank 0 alone writes the run
/// directory, and a resumed run's checkpoint is read by every rank.
pub fn run(
    start: Start,
    (device, placement): (Device, DataPlacement),
    max_steps: Option<usize>,
    observer: &dyn Observer,
    group: Option<&Arc<Group>>,
) -> Result<Outcome, TrainError> {
    let prepared = prepare_trainer(&start, device, placement);
    let mut trainer = agree(group, "to prepare its data and networks", prepared)?;
    if let Some(g) = group {
        // The config and data digest is compared before anything is written; every check in
        // join is made on all ranks alike, so they all stop together.
        trainer.join(Arc::clone(g))?;
    }
    let writer = trainer.is_writer();
    let opened = open_run_dir(start, &mut trainer, writer);
    let (out, mut run_dir, mut state) = agree(group, "to open the run directory", opened)?;
    if let Some(g) = group {
        // A resumed run: every rank read the checkpoint; check they read the same one.
        let summary = format!(
            "{} {} {}",
            state.epochs_done, state.steps_done, trainer.steps_done
        );
        g.same_everywhere("the checkpoint", crate::dist::digest(summary.as_bytes()))?;
        g.broadcast(&trainer.state_tensors(), 0)?;
    }
    info!("run directory: {}", out.display());
    let last = train_epochs(
        &mut trainer,
        run_dir.as_mut(),
        &mut state,
        max_steps,
        observer,
    )?;
    // Rank 0's view decides whether the summary is missing (the others may not see the files).
    let missing = !out.join("summary.yaml").exists() && state.epochs_done > 0;
    let missing = match group {
        Some(g) => g.gather_i64(missing as i64)?[0] != 0,
        None => missing,
    };
    if let Some(last) = &last {
        if let Some(run_dir) = &run_dir {
            run_dir.save_weights(&trainer)?;
            run_dir.write_summary(&trainer, last, &state)?;
            if let Some(w) = last
                .generator
                .as_ref()
                .and_then(|g| g.near_uniform_warning())
            {
                tracing::warn!("{w}");
            }
        }
    } else if missing {
        // Stopped after its last checkpoint but before the summary: finish it.
        let evaluation = trainer.evaluation()?;
        if let Some(run_dir) = &run_dir {
            info!("{}: writing the missing weights and summary", out.display());
            run_dir.save_weights(&trainer)?;
            run_dir.write_summary(&trainer, &evaluation, &state)?;
        }
    }
    if let Some(g) = group {
        // No rank leaves (and closes its connections) while rank 0 still writes.
        g.barrier()?;
    }
    Ok(Outcome {
        trainer,
        out,
        state,
        last,
    })
}

/// Every rank's result of a step of the start, exchanged (see [`Group::agree`]); the result
/// itself without a group.
fn agree<T>(
    group: Option<&Arc<Group>>,
    stage: &str,
    result: Result<T, TrainError>,
) -> Result<T, TrainError> {
    match group {
        Some(g) => g.agree(stage, result),
        None => result,
    }
}

/// The config, data and networks of a run (before its directory is opened): a new run's
/// backbones initialised, batches placed.
fn prepare_trainer(
    start: &Start,
    device: Device,
    placement: DataPlacement,
) -> Result<Trainer, TrainError> {
    let config = start_config(start)?;
    let arch = config
        .model
        .resolve()
        .map_err(|e| TrainError::Invalid(format!("model: {e}")))?;
    let data = crate::data::prepare(&config, &arch)?;
    log_run(&config, &data, device);
    let mut trainer = Trainer::new(config, data, device)?;
    if matches!(start, Start::New { .. }) {
        trainer.init_backbones()?;
    }
    // Before a new run directory is made: a refused upload leaves nothing behind.
    if let Some(bytes) = trainer.place_data(placement)? {
        info!(
            "batches made on the device from {:.1} MiB of images kept there",
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(trainer)
}

/// The run's config, validated: the given one for a new run, the run directory's (with the
/// new total of epochs, if given) when resuming.
fn start_config(start: &Start) -> Result<TrainConfig, TrainError> {
    let config = match start {
        Start::Resume { dir, epochs } => {
            let mut c = TrainConfig::load(&dir.join("config.yaml"))?;
            c.epochs = epochs.unwrap_or(c.epochs);
            c
        }
        Start::New { config, .. } => (**config).clone(),
    };
    config.validate().map_err(TrainError::Invalid)?;
    Ok(config)
}

/// Logs what the run trains: method, schedule, data sizes, ψ and device.
fn log_run(config: &TrainConfig, data: &PreparedData, device: Device) {
    let how = if config.method.uses_generator() {
        format!(
            " ({} schedule, {} meta-gradient)",
            config.schedule.name(),
            config.meta_gradient.name()
        )
    } else {
        String::new()
    };
    info!(
        "{}{how} on {} train / {} validation / {} test images, {} primary classes, ψ = {:?}, device {device:?}",
        config.method.name(),
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        data.hierarchy.num_primary(),
        data.hierarchy.psi()
    );
}

/// The run directory and training state: a new directory, or the resumed one with the trainer
/// restored from its last checkpoint. Only a `writer` opens the directory (the others of a
/// data-parallel run read a resumed run's checkpoint and write nothing).
fn open_run_dir(
    start: Start,
    trainer: &mut Trainer,
    writer: bool,
) -> Result<(PathBuf, Option<RunDir>, TrainState), TrainError> {
    Ok(match start {
        Start::Resume { dir, .. } => {
            let state = checkpoint::load(&dir.join("checkpoints").join("last"), trainer)?;
            info!(
                "resuming {} after epoch {} ({} steps)",
                dir.display(),
                state.epochs_done,
                state.steps_done
            );
            let run_dir = writer
                .then(|| RunDir::reopen(&dir, state.epochs_done))
                .transpose()?;
            (dir, run_dir, state)
        }
        Start::New { out, .. } => {
            let run_dir = writer.then(|| RunDir::create(&out, trainer)).transpose()?;
            let state = TrainState {
                format: crate::run_files::STATE_FORMAT,
                epochs_done: 0,
                steps_done: 0,
                best_val_acc: f64::NEG_INFINITY,
                best_epoch: 0,
            };
            (out, run_dir, state)
        }
    })
}

/// Trains the remaining epochs, writing metrics and checkpoints after each. Returns the last
/// epoch's metrics (None when there was nothing left to train).
fn train_epochs(
    trainer: &mut Trainer,
    mut run_dir: Option<&mut RunDir>,
    state: &mut TrainState,
    max_steps: Option<usize>,
    observer: &dyn Observer,
) -> Result<Option<EpochMetrics>, TrainError> {
    let epochs = trainer.config.epochs;
    let checkpoints = run_dir.as_ref().map(|r| r.path.join("checkpoints"));
    if let Some(checkpoints) = &checkpoints {
        std::fs::create_dir_all(checkpoints)
            .map_err(|e| TrainError::output(checkpoints, format!("cannot create: {e}")))?;
    }
    let mut last = None;
    while trainer.epochs_done < epochs && !trainer.steps_exhausted(max_steps) {
        observer.epoch_started(trainer.epochs_done + 1, epochs);
        let m = trainer.train_epoch(max_steps, &mut |done, total| observer.steps(done, total))?;
        observer.epoch_trained();
        if let Some(run_dir) = run_dir.as_deref_mut() {
            run_dir.append(&m)?;
        }
        state.epochs_done = trainer.epochs_done;
        state.steps_done = trainer.steps_done;
        // Without a validation set (validation_fraction 0) every epoch is the best so far.
        let best = m.val_acc.is_nan() || m.val_acc > state.best_val_acc;
        if best {
            state.best_val_acc = m.val_acc;
            state.best_epoch = m.epoch;
        }
        if let (Some(run_dir), Some(checkpoints)) = (run_dir.as_deref(), &checkpoints) {
            checkpoint::save(&checkpoints.join("last"), trainer, state)?;
            if best {
                checkpoint::save(&checkpoints.join("best"), trainer, state)?;
            }
            draw_plots(trainer, &run_dir.path, &m);
        }
        log_epoch(&m, epochs);
        observer.epoch_finished(&m);
        last = Some(m);
    }
    Ok(last)
}

/// Plots are a convenience: a failure to draw them is reported, never fatal to the run.
fn draw_plots(trainer: &Trainer, run_dir: &Path, m: &EpochMetrics) {
    let mut result = crate::plots::curves(run_dir);
    if let (Ok(()), Some(g)) = (&result, &m.generator) {
        let names = trainer.data.train.safe_class_names();
        result = crate::plots::slot_usage(
            run_dir,
            &names,
            trainer.data.hierarchy.psi(),
            &g.usage_counts,
        );
    }
    if let Err(e) = result {
        tracing::warn!("plots not drawn: {e}");
    }
}

fn log_epoch(m: &EpochMetrics, epochs: usize) {
    let gen_note = m
        .generator
        .as_ref()
        .map(|g| {
            let mean = g.usage_entropy.iter().sum::<f64>() / g.usage_entropy.len() as f64;
            let weights = g
                .weights
                .as_ref()
                .map(|w| {
                    format!(
                        ", weights mean {:.3} (p10 {:.3}, p90 {:.3})",
                        w.mean, w.p10, w.p90
                    )
                })
                .unwrap_or_default();
            format!(
                ", slot usage entropy {mean:.3}, sample entropy {:.3}{weights}",
                g.sample_entropy
            )
        })
        .unwrap_or_default();
    info!(
        "epoch {}/{epochs}: loss {:.4}, train {:.2}%, val {:.2}%, test {:.2}%, {:.1}s{gen_note}",
        m.epoch,
        m.primary_loss,
        100.0 * m.train_acc,
        100.0 * m.val_acc,
        100.0 * m.test_acc,
        m.seconds
    );
}
