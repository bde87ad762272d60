//! Experiments: several training runs (methods, schedules, ψ…) × seeds from one base config,
//! each an ordinary run directory `OUT/<run>/seed-<s>/`, then the results table and plots
//! (see [`crate::results`](mod@crate::results)).
//!
//! An experiment file is YAML:
//!
//! ```yaml
//! seeds: [0, 1, 2]          # fixed in advance
//! baseline: single          # the run every other is compared with, seed by seed
//! base: { … }               # a training config, as for `maxl-train --config`
//! runs:
//!   - name: single
//!     set: { method: single } # fields merged into `base` (nested mappings merge)
//!   - name: maxl
//!     set: { method: maxl }
//!   - name: single-at-maxl-time
//!     set: { method: single }
//!     match_time: { of: maxl, epoch_seconds_of: single }
//! ```
//!
//! `match_time` gives a run as many epochs as fit in the training time of run `of` (same
//! seed), at the seconds per epoch measured by run `epoch_seconds_of` (same seed): both must
//! come earlier in `runs`. Time is wall-clock seconds, or with `clock: cpu` the process's CPU
//! seconds: the same on an otherwise idle machine with one libtorch thread, and unaffected by
//! other load (for experiments sharing a machine).
//!
//! Resumable: a finished run (its `summary.yaml` exists) is skipped, an interrupted one
//! continues from its last checkpoint, and a run directory made from a different config is
//! refused rather than mixed into the table.

use std::path::{Path, PathBuf};

use maxl_core::config::TrainConfig;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use tch::Device;
use tracing::info;

use crate::TrainError;
use crate::epoch_loop::{self, Observer, Start};
use crate::resident::DataPlacement;

/// The experiment file, as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The seeds every run is trained with, fixed in advance.
    pub seeds: Vec<u64>,
    /// The run every other run is compared with, seed by seed (one of `runs`).
    pub baseline: String,
    /// Which seconds time-matching and the time columns use.
    #[serde(default)]
    pub clock: Clock,
    /// The base training config (as for `maxl-train --config`) that each run's `set` is merged
    /// into.
    #[serde(default)]
    pub base: Value,
    /// The runs, in order (a `match_time` run names only runs listed before it).
    pub runs: Vec<RunSpec>,
}

/// One run of an experiment: its name and how its config differs from `base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The run's name, also its folder under the output directory (letters, digits, `.`, `_` or
    /// `-`).
    pub name: String,
    /// Fields merged into the experiment's `base` config (nested mappings merge).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub set: Value,
    /// Train as many epochs as fit in another run's training time, instead of `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_time: Option<MatchTime>,
}

/// Wall-clock or CPU seconds of training (evaluation excluded either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clock {
    /// Wall-clock seconds (the metrics.csv column `seconds`).
    #[default]
    Wall,
    /// The process's CPU seconds (the metrics.csv column `cpu_seconds`).
    Cpu,
}

impl Clock {
    /// The metrics.csv column.
    pub fn column(self) -> &'static str {
        match self {
            Clock::Wall => "seconds",
            Clock::Cpu => "cpu_seconds",
        }
    }
}

/// A run's time matching: as many epochs as fit in run `of`'s training time at run
/// `epoch_seconds_of`'s seconds per epoch, both of the same seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchTime {
    /// The run whose total training time is matched.
    pub of: String,
    /// The run whose seconds per epoch convert that time into epochs.
    pub epoch_seconds_of: String,
}

/// Changes the command line makes to every run (a quick version of an experiment).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Train these seeds instead of the experiment's.
    pub seeds: Option<Vec<u64>>,
    /// Train only these runs (with the baseline and the runs their `match_time` reads).
    pub only: Option<Vec<String>>,
    /// Every run's `epochs`.
    pub epochs: Option<usize>,
    /// Every run's `dataset.train_limit` (a seeded, class-balanced subset of training images).
    pub train_limit: Option<usize>,
    /// Every run's `dataset.test_limit` (a seeded, class-balanced subset of test images).
    pub test_limit: Option<usize>,
}

/// The copy of the experiment (with the overrides, but all its runs and seeds) kept in the
/// output directory; `maxl-train results` reads it.
pub const EXPERIMENT_FILE: &str = "experiment.yaml";
/// The config a run directory was made for, written before its first epoch.
pub const REQUESTED_FILE: &str = "requested.yaml";

fn invalid(path: &Path, message: impl std::fmt::Display) -> TrainError {
    TrainError::output(path, message)
}

/// Deep merge: mappings merge key by key, anything else in `over` replaces `base`.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, Value::Null) if !b.is_null() => {}
        (b, o) => *b = o.clone(),
    }
}

impl Experiment {
    /// Reads and checks an experiment file (every run's config is validated for every seed).
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path, format!("cannot read: {e}")))?;
        let e: Experiment = serde_yaml_ng::from_str(&text)
            .map_err(|e| invalid(path, e.to_string().lines().next().unwrap_or("").to_string()))?;
        e.check(path)?;
        Ok(e)
    }

    /// What the output directory's copy of the experiment records: the overrides' changes to
    /// every run, all of the file's runs, and its seeds followed by any other `--seeds`. A
    /// compare of some runs or seeds then leaves `maxl-train results` showing every finished
    /// run.
    pub fn recorded(self, o: &Overrides, path: &Path) -> Result<Self, TrainError> {
        let changes = Overrides {
            seeds: None,
            only: None,
            ..o.clone()
        };
        let mut e = self.with_overrides(&changes, path)?;
        for &s in o.seeds.iter().flatten() {
            if !e.seeds.contains(&s) {
                e.seeds.push(s);
            }
        }
        Ok(e)
    }

    /// Applies command-line overrides (fewer seeds or runs, fewer epochs, smaller subsets).
    pub fn with_overrides(mut self, o: &Overrides, path: &Path) -> Result<Self, TrainError> {
        if let Some(seeds) = &o.seeds {
            self.seeds = seeds.clone();
        }
        if let Some(only) = &o.only {
            for name in only {
                if !self.runs.iter().any(|r| &r.name == name) {
                    return Err(invalid(path, format!("--only: no run named `{name}`")));
                }
            }
            // The baseline and the runs a kept run's match_time reads are kept too (finished
            // ones are skipped): the table and the time-matched runs need them.
            let mut keep: Vec<String> = only.clone();
            keep.push(self.baseline.clone());
            for r in self.runs.iter().rev() {
                if let (true, Some(m)) = (keep.contains(&r.name), &r.match_time) {
                    keep.extend([m.of.clone(), m.epoch_seconds_of.clone()]);
                }
            }
            self.runs.retain(|r| keep.contains(&r.name));
        }
        let mut set = serde_yaml_ng::Mapping::new();
        if let Some(n) = o.epochs {
            set.insert("epochs".into(), n.into());
        }
        let mut dataset = serde_yaml_ng::Mapping::new();
        if let Some(n) = o.train_limit {
            dataset.insert("train_limit".into(), n.into());
        }
        if let Some(n) = o.test_limit {
            dataset.insert("test_limit".into(), n.into());
        }
        if !dataset.is_empty() {
            set.insert("dataset".into(), Value::Mapping(dataset));
        }
        merge(&mut self.base, &Value::Mapping(set));
        self.check(path)?;
        Ok(self)
    }

    fn check(&self, path: &Path) -> Result<(), TrainError> {
        if self.seeds.is_empty() {
            return Err(invalid(path, "seeds: at least one seed is needed"));
        }
        if self.runs.is_empty() {
            return Err(invalid(path, "runs: at least one run is needed"));
        }
        let mut seen: Vec<&str> = Vec::new();
        for r in &self.runs {
            let ok = !r.name.is_empty()
                && r.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && !r.name.starts_with('.');
            if !ok {
                return Err(invalid(
                    path,
                    format!(
                        "run name `{}` must be letters, digits, `.`, `_` or `-` (it names a folder)",
                        r.name
                    ),
                ));
            }
            if seen.contains(&r.name.as_str()) {
                return Err(invalid(path, format!("run `{}` is named twice", r.name)));
            }
            if let Some(m) = &r.match_time {
                for dep in [&m.of, &m.epoch_seconds_of] {
                    if !seen.contains(&dep.as_str()) {
                        return Err(invalid(
                            path,
                            format!(
                                "run `{}`: match_time names `{dep}`, which must be a run listed before it",
                                r.name
                            ),
                        ));
                    }
                }
            }
            seen.push(&r.name);
            for &seed in &self.seeds {
                self.config(r, seed, path)?;
            }
        }
        if !seen.contains(&self.baseline.as_str()) {
            return Err(invalid(
                path,
                format!("baseline `{}` is not one of the runs", self.baseline),
            ));
        }
        Ok(())
    }

    /// The resolved training config of run `r` with `seed` (before any `match_time`).
    pub fn config(&self, r: &RunSpec, seed: u64, path: &Path) -> Result<TrainConfig, TrainError> {
        let mut v = match &self.base {
            Value::Null => Value::Mapping(Default::default()),
            b => b.clone(),
        };
        merge(&mut v, &r.set);
        merge(
            &mut v,
            &Value::Mapping([("seed".into(), seed.into())].into_iter().collect()),
        );
        let text = serde_yaml_ng::to_string(&v).expect("a YAML value serialises");
        TrainConfig::from_yaml(&text, path).map_err(|e| {
            invalid(
                path,
                format!(
                    "run `{}`: {}",
                    r.name,
                    e.to_string().split_once(": ").map_or("", |p| p.1)
                ),
            )
        })
    }

    /// The run named `name`, if the experiment has one.
    pub fn run(&self, name: &str) -> Option<&RunSpec> {
        self.runs.iter().find(|r| r.name == name)
    }
}

/// `OUT/<run>/seed-<s>`.
pub fn run_dir(out: &Path, run: &str, seed: u64) -> PathBuf {
    out.join(run).join(format!("seed-{seed}"))
}

/// Whether a run directory holds a finished run.
pub fn finished(dir: &Path) -> bool {
    dir.join("summary.yaml").is_file()
}

/// Total training seconds (by `clock`) and epochs of a finished run, from its metrics.csv.
pub fn training_time(dir: &Path, clock: Clock) -> Result<(f64, usize), TrainError> {
    let path = dir.join("metrics.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::output(&path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == clock.column())
        .ok_or_else(|| TrainError::output(&path, format!("no `{}` column", clock.column())))?;
    let mut total = 0.0;
    let mut epochs = 0;
    for l in lines {
        let v: f64 = l
            .split(',')
            .nth(col)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TrainError::output(&path, format!("bad row `{l}`")))?;
        total += v;
        epochs += 1;
    }
    Ok((total, epochs))
}

/// Runs every (run, seed) of `e` not finished yet, in file order, seed by seed, and keeps
/// `record` (the whole experiment `e` was chosen from) in `out`. `path` names the experiment
/// file in errors.
pub fn run_all(
    e: &Experiment,
    record: &Experiment,
    path: &Path,
    out: &Path,
    target: (Device, DataPlacement),
    observer: &dyn Observer,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(out).map_err(|err| TrainError::output(out, err))?;
    let copy = serde_yaml_ng::to_string(record).expect("an experiment serialises");
    maxl_core::fsio::write_atomic(&out.join(EXPERIMENT_FILE), copy.as_bytes())?;
    let total = e.runs.len() * e.seeds.len();
    let mut n = 0;
    for &seed in &e.seeds {
        for r in &e.runs {
            n += 1;
            let dir = run_dir(out, &r.name, seed);
            // Held until this (run, seed) is trained: a second compare on the same directory
            // refuses it instead of training it at the same time.
            let _lock = RunLock::take(&dir)?;
            let mut config = e.config(r, seed, path)?;
            if let Some(m) = &r.match_time {
                config.epochs = matched_epochs(out, m, seed, e.clock)?;
            }
            let requested = config.to_yaml();
            let requested_path = dir.join(REQUESTED_FILE);
            match std::fs::read_to_string(&requested_path) {
                Ok(old) if old != requested => {
                    return Err(TrainError::output(
                        &dir,
                        format!(
                            "holds a run of another config ({}); use another --out or remove it",
                            first_difference(&old, &requested)
                        ),
                    ));
                }
                _ => {}
            }
            if finished(&dir) {
                info!("[{n}/{total}] {} seed {seed}: finished, skipped", r.name);
                continue;
            }
            let start = if dir.join("checkpoints/last/state.yaml").is_file() {
                info!("[{n}/{total}] {} seed {seed}: continuing", r.name);
                Start::Resume {
                    dir: dir.clone(),
                    epochs: None,
                }
            } else {
                // Nothing of value yet (no epoch finished): start afresh.
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|err| TrainError::output(&dir, err))?;
                }
                std::fs::create_dir_all(&dir).map_err(|err| TrainError::output(&dir, err))?;
                maxl_core::fsio::write_atomic(&requested_path, requested.as_bytes())?;
                info!(
                    "[{n}/{total}] {} seed {seed}: {} epochs",
                    r.name, config.epochs
                );
                Start::New {
                    config: Box::new(config),
                    out: dir.clone(),
                }
            };
            epoch_loop::run(start, target, None, observer, None)?;
        }
    }
    Ok(())
}

/// An exclusive lock on one (run, seed) of an experiment directory: `<run>/seed-<s>.lock`, locked
/// with flock(2) (released by the kernel when the process ends, however it ends) and holding the
/// process id for the message another process gets.
struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    fn take(dir: &Path) -> Result<Self, TrainError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let path = dir.with_extension("lock");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| TrainError::output(parent, err))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| TrainError::output(&path, err))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::output(
                    &path,
                    format!(
                        "this run is being trained by another process ({}); wait for it, or give \
                         this compare other runs or seeds (--only, --seeds)",
                        match holder.trim() {
                            "" => "unknown pid".to_string(),
                            pid => format!("pid {pid}"),
                        }
                    ),
                ));
            }
            return Err(TrainError::output(&path, format!("cannot lock: {err}")));
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()));
        written.map_err(|err| TrainError::output(&path, err))?;
        Ok(RunLock { _file: file })
    }
}

/// Epochs for a `match_time` run: ⌊training seconds of `of` / seconds per epoch of
/// `epoch_seconds_of`⌋ (at least 1), both of the same seed.
fn matched_epochs(out: &Path, m: &MatchTime, seed: u64, clock: Clock) -> Result<usize, TrainError> {
    let (budget, _) = training_time(&run_dir(out, &m.of, seed), clock)?;
    let (secs, epochs) = training_time(&run_dir(out, &m.epoch_seconds_of, seed), clock)?;
    if epochs == 0 {
        return Err(TrainError::output(
            &run_dir(out, &m.epoch_seconds_of, seed),
            "has no finished epoch to time",
        ));
    }
    let per_epoch = secs / epochs as f64;
    Ok(((budget / per_epoch).floor() as usize).max(1))
}

fn first_difference(old: &str, new: &str) -> String {
    old.lines()
        .zip(new.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("`{}` now `{}`", a.trim(), b.trim()))
        .unwrap_or_else(|| "different length".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
seeds: [0, 1]
baseline: single
base:
  epochs: 2
  dataset: {validation_fraction: 0, train_limit: 100}
  multitask_optimizer: {lr: 0.01}
runs:
  - name: single
    set: {method: single}
  - name: maxl-psi3
    set: {method: maxl, hierarchy: {psi_per_class: 3}, dataset: {test_limit: 50}}
  - name: single-at-maxl-time
    set: {method: single}
    match_time: {of: maxl-psi3, epoch_seconds_of: single}
";

    fn parse(text: &str) -> Result<Experiment, TrainError> {
        let e: Experiment =
            serde_yaml_ng::from_str(text).map_err(|e| TrainError::Invalid(e.to_string()))?;
        e.check(Path::new("x.yaml"))?;
        Ok(e)
    }

    #[test]
    fn runs_merge_into_the_base_config() {
        let e = parse(FILE).unwrap();
        let c = e.config(&e.runs[1], 1, Path::new("x.yaml")).unwrap();
        assert_eq!(c.method, maxl_core::Method::Maxl);
        assert_eq!(c.seed, 1);
        assert_eq!(c.epochs, 2);
        assert_eq!(c.hierarchy.psi_per_class, 3);
        // Nested mappings merge: the base's dataset fields stay.
        assert_eq!(c.dataset.train_limit, Some(100));
        assert_eq!(c.dataset.test_limit, Some(50));
        assert_eq!(c.dataset.validation_fraction, 0.0);
        assert_eq!(c.multitask_optimizer.lr, 0.01);
        let o = Overrides {
            only: Some(vec!["single-at-maxl-time".into()]),
            ..Default::default()
        };
        let kept: Vec<String> = e
            .with_overrides(&o, Path::new("x.yaml"))
            .unwrap()
            .runs
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(
            kept,
            ["single", "maxl-psi3", "single-at-maxl-time"],
            "the baseline and the runs match_time reads are kept"
        );
        let o = Overrides {
            epochs: Some(1),
            only: Some(vec!["single".into(), "maxl-psi3".into()]),
            test_limit: Some(10),
            ..Default::default()
        };
        let e = parse(FILE)
            .unwrap()
            .with_overrides(&o, Path::new("x.yaml"))
            .unwrap();
        assert_eq!(e.runs.len(), 2);
        let c = e.config(&e.runs[1], 0, Path::new("x.yaml")).unwrap();
        assert_eq!(
            (c.epochs, c.dataset.test_limit),
            (1, Some(50)),
            "a run's own set wins"
        );
        let c = e.config(&e.runs[0], 0, Path::new("x.yaml")).unwrap();
        assert_eq!(c.dataset.test_limit, Some(10));
        // The output's copy: every run, the file's seeds then the others asked for, the
        // changes to every run applied.
        let o = Overrides {
            seeds: Some(vec![1, 7]),
            ..o
        };
        let r = parse(FILE)
            .unwrap()
            .recorded(&o, Path::new("x.yaml"))
            .unwrap();
        assert_eq!(r.seeds, [0, 1, 7]);
        assert_eq!(r.runs.len(), parse(FILE).unwrap().runs.len());
        let c = r.config(&r.runs[0], 0, Path::new("x.yaml")).unwrap();
        assert_eq!((c.epochs, c.dataset.test_limit), (1, Some(10)));
    }

    #[test]
    fn bad_experiments_are_refused_with_the_reason() {
        let cases = [
            (
                FILE.replace("baseline: single", "baseline: nope"),
                "baseline `nope`",
            ),
            (
                FILE.replace("of: maxl-psi3", "of: later"),
                "must be a run listed before",
            ),
            (
                FILE.replace("name: maxl-psi3", "name: single"),
                "named twice",
            ),
            (
                FILE.replace("name: maxl-psi3", "name: a/b"),
                "names a folder",
            ),
            (
                FILE.replace("seeds: [0, 1]", "seeds: []"),
                "at least one seed",
            ),
            (
                FILE.replace("psi_per_class: 3", "psi_per_class: 0"),
                "run `maxl-psi3`",
            ),
            (
                FILE.replace("method: single}", "method: singel}"),
                "unknown variant",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).expect_err(want).to_string();
            assert!(e.contains(want), "{e} (want {want})");
        }
    }

    #[test]
    fn a_run_is_trained_by_one_process_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = run_dir(tmp.path(), "maxl", 0);
        let held = RunLock::take(&dir).unwrap();
        // flock locks belong to the open file: a second open, as another process makes, is
        // refused while the first is held, with the holder's pid.
        let e = RunLock::take(&dir).err().expect("refused").to_string();
        assert!(
            e.contains("seed-0.lock") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        RunLock::take(&dir).expect("free again once released");
    }

    #[test]
    fn the_committed_experiments_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let e = Experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    e.seeds,
                    vec![0, 1, 2],
                    "{}: seeds fixed in advance",
                    path.display()
                );
                n += 1;
            }
        }
        assert_eq!(
            n, 5,
            "low-data-fmnist, low-data-fmnist-mi, coarse-fine-fmnist, coarse-fine-fmnist-mi, vgg16-fmnist32"
        );
    }

    #[test]
    fn time_matching_counts_whole_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let write = |run: &str, secs: &[f64]| {
            let d = run_dir(dir.path(), run, 0);
            std::fs::create_dir_all(&d).unwrap();
            let mut t = String::from("epoch,lr,seconds,cpu_seconds,test_acc\n");
            for (i, s) in secs.iter().enumerate() {
                t.push_str(&format!("{},0.01,{s},{},0.5\n", i + 1, s / 2.0));
            }
            std::fs::write(d.join("metrics.csv"), t).unwrap();
        };
        write("maxl", &[10.0, 11.0, 9.5]);
        write("single", &[1.5, 1.3]);
        let m = MatchTime {
            of: "maxl".into(),
            epoch_seconds_of: "single".into(),
        };
        // 30.5 s of MAXL at 1.4 s per single-task epoch: 21 whole epochs.
        assert_eq!(matched_epochs(dir.path(), &m, 0, Clock::Wall).unwrap(), 21);
        // CPU seconds (half the wall-clock here): the same ratio.
        assert_eq!(matched_epochs(dir.path(), &m, 0, Clock::Cpu).unwrap(), 21);
        write("single", &[1.5, 1.5]);
        assert_eq!(matched_epochs(dir.path(), &m, 0, Clock::Wall).unwrap(), 20);
    }
}
