//! A run directory: the resolved config, `metrics.csv` (one row per epoch, flushed as it is
//! written so an interrupted run keeps what it measured), the trained weights as safetensors
//! with PyTorch-style names, and `summary.yaml`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use maxl_core::fsio::write_atomic;

use crate::TrainError;
use crate::run_files::{CLASSES_FILE, TrainState, write_tensors};
use crate::trainer::{EpochMetrics, Trainer};

/// An open run directory: `config.yaml` and the class names are written when it is created, and
/// `metrics.csv` stays open for one row per epoch.
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
    metrics: File,
    /// Number of `usage_entropy.<class>` columns (0 without a generator).
    usage_columns: usize,
    /// Number of `weight_*` columns (0 without a weight head).
    weight_columns: usize,
}

/// How many per-class slot-usage columns a metrics.csv header has.
fn usage_columns(header: &str) -> usize {
    header
        .split(',')
        .filter(|h| h.starts_with("usage_entropy."))
        .count()
}

/// How many weight columns (`weight_mean`, percentiles, `weight_mean.<class>`) a header has.
fn weight_columns(header: &str) -> usize {
    header
        .split(',')
        .filter(|h| h.starts_with("weight_"))
        .count()
}

impl RunDir {
    /// Creates the directory. A directory that already holds a run is refused rather than
    /// overwritten.
    pub fn create(path: &Path, trainer: &Trainer) -> Result<Self, TrainError> {
        let metrics_path = path.join("metrics.csv");
        if metrics_path.exists() {
            return Err(TrainError::output(
                path,
                "already holds a run (metrics.csv exists); choose another --out",
            ));
        }
        std::fs::create_dir_all(path).map_err(|e| TrainError::output(path, e))?;
        let mut config = trainer.config.clone();
        config.hierarchy.psi = Some(trainer.data.hierarchy.psi().to_vec());
        write_atomic(&path.join("config.yaml"), config.to_yaml().as_bytes())?;
        let classes =
            serde_yaml_ng::to_string(&trainer.data.train.class_names).expect("names serialise");
        write_atomic(&path.join(CLASSES_FILE), classes.as_bytes())?;
        let mut metrics = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&metrics_path)
            .map_err(|e| TrainError::output(&metrics_path, e))?;
        let mut header = String::from(
            "epoch,lr,primary_loss,aux_loss,meta_loss,regulariser,train_acc,val_acc,test_acc,seconds,cpu_seconds,generator_sample_entropy",
        );
        if trainer.g.is_some() {
            for name in trainer.data.train.safe_class_names() {
                header.push_str(&format!(",usage_entropy.{name}"));
            }
        }
        if trainer.generator().is_some_and(|g| g.weighted) {
            header.push_str(",weight_mean,weight_p10,weight_p50,weight_p90");
            for name in trainer.data.train.safe_class_names() {
                header.push_str(&format!(",weight_mean.{name}"));
            }
        }
        writeln!(metrics, "{header}").map_err(|e| TrainError::output(&metrics_path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            usage_columns: usage_columns(&header),
            weight_columns: weight_columns(&header),
            metrics,
        })
    }

    /// Reopens a run to continue it after `epochs_done` epochs: rows of later epochs (written
    /// before an interruption but not covered by the checkpoint) are dropped.
    pub fn reopen(path: &Path, epochs_done: usize) -> Result<Self, TrainError> {
        let metrics_path = path.join("metrics.csv");
        let text = std::fs::read_to_string(&metrics_path)
            .map_err(|e| TrainError::output(&metrics_path, e))?;
        let kept: Vec<&str> = text.lines().take(1 + epochs_done).collect();
        if kept.len() != 1 + epochs_done {
            return Err(TrainError::output(
                &metrics_path,
                format!(
                    "has {} epoch rows but the checkpoint is after epoch {epochs_done}",
                    kept.len().saturating_sub(1)
                ),
            ));
        }
        write_atomic(&metrics_path, format!("{}\n", kept.join("\n")).as_bytes())?;
        let metrics = OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(|e| TrainError::output(&metrics_path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            usage_columns: usage_columns(kept[0]),
            weight_columns: weight_columns(kept[0]),
            metrics,
        })
    }

    /// Appends one epoch's row to `metrics.csv` and flushes it (the generator columns NaN when
    /// there are no generator statistics).
    pub fn append(&mut self, m: &EpochMetrics) -> Result<(), TrainError> {
        let mut row = format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.5},{:.5},{:.5},{:.2},{:.2}",
            m.epoch,
            m.lr,
            m.primary_loss,
            m.aux_loss,
            m.meta_loss,
            m.regulariser,
            m.train_acc,
            m.val_acc,
            m.test_acc,
            m.seconds,
            m.cpu_seconds
        );
        match &m.generator {
            Some(g) => {
                row.push_str(&format!(",{:.4}", g.sample_entropy));
                for e in &g.usage_entropy {
                    row.push_str(&format!(",{e:.4}"));
                }
            }
            // No validation images to measure the generator on: the columns stay, empty of numbers.
            None => row.push_str(&",nan".repeat(1 + self.usage_columns)),
        }
        match m.generator.as_ref().and_then(|g| g.weights.as_ref()) {
            Some(w) if self.weight_columns > 0 => {
                for v in [w.mean, w.p10, w.p50, w.p90].iter().chain(&w.class_means) {
                    row.push_str(&format!(",{v:.4}"));
                }
            }
            _ => row.push_str(&",nan".repeat(self.weight_columns)),
        }
        let p = self.path.join("metrics.csv");
        writeln!(self.metrics, "{row}").map_err(|e| TrainError::output(&p, e))?;
        self.metrics.flush().map_err(|e| TrainError::output(&p, e))
    }

    /// Saves both networks' weights (parameters and running statistics).
    pub fn save_weights(&self, trainer: &Trainer) -> Result<(), TrainError> {
        write_tensors(
            &self.path.join("multitask.safetensors"),
            &trainer.f.store.named(),
        )?;
        if let Some(g) = trainer.generator() {
            write_tensors(
                &self.path.join("label_generator.safetensors"),
                &g.store.named(),
            )?;
        }
        Ok(())
    }

    /// Writes `summary.yaml`: method, schedule, meta-gradient, epochs and steps, final test and
    /// validation accuracy, best validation accuracy and its epoch, ψ, and the generator's slot
    /// usage where it was measured.
    pub fn write_summary(
        &self,
        trainer: &Trainer,
        last: &EpochMetrics,
        state: &TrainState,
    ) -> Result<(), TrainError> {
        let mut s = format!(
            "method: {}\nschedule: {}\nmeta_gradient: {}\nepochs: {}\nsteps: {}\nprimary_test_accuracy: {:.5}\nprimary_validation_accuracy: {:.5}\nbest_validation_accuracy: {:.5}\nbest_epoch: {}\npsi: {:?}\n",
            trainer.config.method.name(),
            trainer.config.schedule.name(),
            trainer.config.meta_gradient.name(),
            last.epoch,
            state.steps_done,
            last.test_acc,
            last.val_acc,
            state.best_val_acc,
            state.best_epoch,
            trainer.data.hierarchy.psi()
        );
        if let Some(g) = &last.generator {
            s.push_str(&format!(
                "generator_sample_entropy: {:.4}\n",
                g.sample_entropy
            ));
            if let Some(warning) = g.near_uniform_warning() {
                s.push_str(&format!("generator_labels_warning: \"{warning}\"\n"));
            }
            s.push_str(&format!(
                "generator_usage_counts: {:?}\ngenerator_usage_entropy:\n",
                g.usage_counts
            ));
            for (name, e) in trainer
                .data
                .train
                .safe_class_names()
                .iter()
                .zip(&g.usage_entropy)
            {
                s.push_str(&format!("  {name}: {e:.4}\n"));
            }
            if let Some(w) = &g.weights {
                s.push_str(&format!(
                    "generator_weights:\n  mean: {:.4}\n  p10: {:.4}\n  p50: {:.4}\n  p90: {:.4}\n  class_means:\n",
                    w.mean, w.p10, w.p50, w.p90
                ));
                for (name, m) in trainer
                    .data
                    .train
                    .safe_class_names()
                    .iter()
                    .zip(&w.class_means)
                {
                    s.push_str(&format!("    {name}: {m:.4}\n"));
                }
            }
        }
        Ok(write_atomic(&self.path.join("summary.yaml"), s.as_bytes())?)
    }
}
