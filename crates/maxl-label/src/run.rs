//! The labelling run: work list → parallel decode and resize (a bounded rayon pool, one batch
//! ahead of inference) → batched inference → rows in the work list's order, appended to
//! `<out>.partial` and flushed after every batch, with the job file rewritten after it.
//!
//! Crash safety: the job file records how many entries are done and how many bytes of the
//! partial files hold exactly their rows. A run killed at any moment (SIGKILL included) leaves a
//! job file whose counts are at most the rows written; `--resume` truncates the partial files
//! to those counts and goes on, so the finished file is byte-identical to an uninterrupted
//! run's. The finished files appear under their final names by rename only.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, Instant};

use maxl_core::fsio;
use maxl_infer::{AuxFor, Classification, Classify, InferError, MaxlModel};
use rayon::prelude::*;

use crate::LabelError;
use crate::input::{Entry, Input, Work};
use crate::output::{Columns, ERRORS_HEADER, error_row};
use crate::partial::{Partial, io_err};
use crate::state::{Counts, FORMAT, Job, ModelId, Options, Shard, entries_digest};

/// `<out>.partial`: the rows written so far.
pub fn partial_path(out: &Path) -> PathBuf {
    suffixed(out, ".partial")
}

/// `<out>.partial.json`: the job file of a run in progress.
pub fn job_path(out: &Path) -> PathBuf {
    suffixed(out, ".partial.json")
}

/// `<out>.meta.json`: the job file of a finished run (read by `merge`).
pub fn meta_path(out: &Path) -> PathBuf {
    suffixed(out, ".meta.json")
}

pub(crate) fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What to run, checked (see [`crate::LabelRequest`], which makes it).
pub(crate) struct Plan<'a> {
    pub model: &'a MaxlModel,
    pub input: Input,
    pub out: PathBuf,
    pub options: Options,
    pub shard: Option<Shard>,
    /// Decoding threads.
    pub jobs: usize,
    pub resume: bool,
}

/// Called as the run goes (a progress bar, a service's status). Every method does nothing unless
/// implemented; `()` is the observer that watches nothing.
pub trait Observer {
    /// The number of entries in this run (this shard) and how many a resumed run had done.
    fn start(&mut self, _entries: u64, _done: u64) {}
    /// Entries done so far.
    fn progress(&mut self, _done: u64) {}
    /// An entry that could not be labelled (not merely ignored).
    fn skipped(&mut self, _rel: &str, _reason: &str) {}
}

impl Observer for () {}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The finished job file (also written as `<out>.meta.json`): counts, options, model.
    pub job: Job,
    /// Whether this run continued an interrupted one.
    pub resumed: bool,
    /// What was labelled (resolves the CSV's `path` column, e.g. for a gallery).
    pub input: Input,
}

/// The test hook of the crash-safety tests: `MAXL_LABEL_FAILPOINT=after-rows:K` kills the
/// process with SIGKILL once the rows of its K-th batch are written (before the job file is),
/// `after-checkpoint:K` once the job file is rewritten after it. Compiled in only with the
/// `failpoints` feature.
#[cfg(feature = "failpoints")]
fn failpoint(stage: &str, batch: u64) {
    if let Ok(v) = std::env::var("MAXL_LABEL_FAILPOINT")
        && let Some((s, k)) = v.split_once(':')
        && s == stage
        && k.parse() == Ok(batch)
    {
        // SAFETY: kill(2) on our own pid; no memory is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_stage: &str, _batch: u64) {}

/// The model's identity for the job file.
pub fn model_id(model: &MaxlModel) -> ModelId {
    let m = &model.manifest().models;
    ModelId {
        primary_sha256: m.primary.sha256.clone(),
        label_generator_sha256: m
            .label_generator
            .as_ref()
            .map(|g| g.sha256.clone())
            .unwrap_or_default(),
    }
}

/// One image decoded, resized and scaled to [0, 1] — or why not. A decoder that panics on a
/// hostile file costs that file, not the run.
fn prepare(model: &MaxlModel, path: &Path) -> Result<Vec<f32>, String> {
    let work = || {
        model.preprocess_file(path).map_err(|e| match e {
            // The path has its own column: the reason alone.
            InferError::Image { source, .. } => source.to_string(),
            e => e.to_string(),
        })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err("the image decoder failed on this file (internal error)".into()))
}

/// The files of one run.
struct Files {
    /// `<out>.partial.json`.
    job: PathBuf,
    /// `<out>.partial`.
    csv: PathBuf,
    /// `<errors>.partial`, with --errors.
    errors: Option<PathBuf>,
}

/// The open partial files. The label CSV is `None` when a run killed while finishing had already
/// renamed it (its errors file likewise).
struct Outputs {
    csv: Option<Partial>,
    errors: Option<Partial>,
}

/// Runs (or resumes) a labelling job to the end.
pub(crate) fn run(plan: &Plan<'_>, observer: &mut dyn Observer) -> Result<Outcome, LabelError> {
    check_generator(plan.model)?;
    let columns = Columns {
        probs: plan.options.probs,
        min_confidence: plan.options.min_confidence,
    };
    let all = work_list(plan)?;
    let entries: Vec<&Entry> = all
        .iter()
        .filter(|e| plan.shard.is_none_or(|s| s.contains(&e.rel)))
        .collect();
    let header = columns.header();
    let fresh = new_job(plan, &all, &entries, &header);
    let files = Files {
        job: job_path(&plan.out),
        csv: partial_path(&plan.out),
        errors: plan.options.errors.as_ref().map(|e| partial_path(e)),
    };
    let (mut job, mut outputs) = if plan.resume {
        resume(&files, &fresh)?
    } else {
        (fresh.clone(), start(&files, &fresh, &header)?)
    };
    observer.start(job.entries, job.done);
    // A resumed job's `done` is at most its entries (checked when it was read).
    let todo = &entries[job.done as usize..];
    label_all(plan, todo, &mut outputs, &mut job, &files.job, observer)?;
    finish(plan, &files, job, outputs)
}

fn check_generator(model: &MaxlModel) -> Result<(), LabelError> {
    if model.has_generator() {
        return Ok(());
    }
    Err(LabelError::Invalid(format!(
        "{}: the model has no label generator (trained with method `{}`)",
        model.dir().display(),
        model.manifest().training.method
    )))
}

/// The whole input's work list; an error when it holds nothing that could be an image.
fn work_list(plan: &Plan<'_>) -> Result<Vec<Entry>, LabelError> {
    let all = plan.input.entries(plan.model, plan.options.primary)?;
    if !all.iter().any(|e| matches!(e.work, Work::Image { .. }))
        && !all
            .iter()
            .any(|e| matches!(e.work, Work::Skip { ignored: false, .. }))
    {
        return Err(LabelError::Format {
            path: plan.input.path().to_path_buf(),
            message: "no PNG or JPEG images found".into(),
        });
    }
    Ok(all)
}

/// The job file of a run that has done nothing yet.
fn new_job(plan: &Plan<'_>, all: &[Entry], entries: &[&Entry], header: &str) -> Job {
    Job {
        format: FORMAT,
        model: model_id(plan.model),
        options: plan.options.clone(),
        shard: plan.shard,
        entries: entries.len() as u64,
        entries_sha256: entries_digest(entries),
        input_sha256: if plan.shard.is_some() {
            entries_digest(&all.iter().collect::<Vec<_>>())
        } else {
            String::new()
        },
        done: 0,
        csv_bytes: header.len() as u64,
        errors_bytes: ERRORS_HEADER.len() as u64,
        counts: Counts::default(),
        finished: false,
    }
}

/// A new run: refused over an interrupted one; otherwise the partial files with their headers,
/// then the job file that records them.
fn start(files: &Files, job: &Job, header: &str) -> Result<Outputs, LabelError> {
    if files.job.exists() {
        return Err(LabelError::Resume {
            path: files.job.clone(),
            message: format!(
                "an interrupted run of this --out exists: pass --resume to continue it, or delete {} and {} to start over",
                files.job.display(),
                files.csv.display()
            ),
        });
    }
    let csv = Partial::create(&files.csv, header)?;
    let errors = files
        .errors
        .as_ref()
        .map(|p| Partial::create(p, ERRORS_HEADER))
        .transpose()?;
    fsio::write_atomic(&files.job, &job.to_json())?;
    Ok(Outputs {
        csv: Some(csv),
        errors,
    })
}

/// An interrupted run, if it is this one (`fresh`): its job file, and its partial files cut back
/// to what the job file records.
fn resume(files: &Files, fresh: &Job) -> Result<(Job, Outputs), LabelError> {
    if !files.job.exists() {
        return Err(LabelError::Resume {
            path: files.job.clone(),
            message: "nothing to resume: no interrupted run of this --out".into(),
        });
    }
    let job = Job::read(&files.job)?;
    job.check_continues(fresh, &files.job)?;
    // A run killed while finishing may have renamed its files already.
    let gone = |p: &Path| job.finished && !p.exists();
    let csv = if gone(&files.csv) {
        None
    } else {
        Some(Partial::reopen(&files.csv, job.csv_bytes)?)
    };
    let errors = match &files.errors {
        Some(p) if !gone(p) => Some(Partial::reopen(p, job.errors_bytes)?),
        _ => None,
    };
    Ok((job, Outputs { csv, errors }))
}

/// One batch of entries, prepared: per entry its pixels or why not (`None` for entries that are
/// not images).
type Prepared = Vec<Option<Result<Vec<f32>, String>>>;

/// Labels `todo` batch by batch: decoding one batch ahead on `plan.jobs` threads while the
/// previous one is inferred and written.
fn label_all(
    plan: &Plan<'_>,
    todo: &[&Entry],
    outputs: &mut Outputs,
    job: &mut Job,
    job_file: &Path,
    observer: &mut dyn Observer,
) -> Result<(), LabelError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.jobs.max(1))
        .thread_name(|i| format!("maxl-label-decode-{i}"))
        .build()
        .map_err(|e| LabelError::Invalid(format!("cannot start decoding threads: {e}")))?;
    let batch = plan.options.batch_size.max(1);
    let model = plan.model;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Prepared>(1);
        scope.spawn(move || decode_ahead(&pool, model, todo, batch, tx));
        let (Some(csv), errors) = (outputs.csv.as_mut(), outputs.errors.as_mut()) else {
            return Ok(());
        };
        let mut sink = Sink {
            model,
            columns: Columns {
                probs: plan.options.probs,
                min_confidence: plan.options.min_confidence,
            },
            csv,
            errors,
            job,
            job_file,
            last_sync: Instant::now(),
        };
        sink.write_all(todo.chunks(batch).zip(rx), observer)
    })
}

/// Decodes `todo` batch by batch on `pool`, sending each batch; stops when nobody listens.
fn decode_ahead(
    pool: &rayon::ThreadPool,
    model: &MaxlModel,
    todo: &[&Entry],
    batch: usize,
    tx: SyncSender<Prepared>,
) {
    for chunk in todo.chunks(batch) {
        let prepared = pool.install(|| {
            chunk
                .par_iter()
                .map(|e| match &e.work {
                    Work::Image { path, .. } => Some(prepare(model, path)),
                    Work::Skip { .. } => None,
                })
                .collect()
        });
        if tx.send(prepared).is_err() {
            break;
        }
    }
}

/// Where a run's rows go: the open partial files and the job file that records them.
struct Sink<'a> {
    model: &'a MaxlModel,
    columns: Columns,
    csv: &'a mut Partial,
    errors: Option<&'a mut Partial>,
    job: &'a mut Job,
    job_file: &'a Path,
    /// When the partial files and the job file were last synced to disk.
    last_sync: Instant,
}

impl Sink<'_> {
    /// Writes the batches as they come, with a checkpoint after each.
    fn write_all<'e>(
        &mut self,
        batches: impl Iterator<Item = (&'e [&'e Entry], Prepared)>,
        observer: &mut dyn Observer,
    ) -> Result<(), LabelError> {
        for (n, (chunk, prepared)) in batches.enumerate() {
            self.batch(chunk, prepared, observer)?;
            failpoint("after-rows", n as u64 + 1);
            self.checkpoint(chunk.len())?;
            failpoint("after-checkpoint", n as u64 + 1);
            observer.progress(self.job.done);
        }
        Ok(())
    }

    /// Infers one batch and writes its rows, flushed (the job file does not record them yet).
    fn batch(
        &mut self,
        chunk: &[&Entry],
        prepared: Prepared,
        observer: &mut dyn Observer,
    ) -> Result<(), LabelError> {
        let mut results = infer(self.model, chunk, &prepared)?.into_iter();
        for (e, p) in chunk.iter().zip(prepared) {
            match (&e.work, p) {
                (Work::Image { source, .. }, Some(Ok(_))) => {
                    let c = results.next().ok_or_else(|| {
                        LabelError::Invalid("the model returned fewer results than images".into())
                    })?;
                    let (row, flagged) = self.columns.row(self.model, &e.rel, *source, &c);
                    self.csv.write(&row)?;
                    self.job.counts.labelled += 1;
                    self.job.counts.flagged += flagged as u64;
                }
                (Work::Image { .. }, Some(Err(reason))) => {
                    self.skip(&e.rel, &reason, false, observer)?
                }
                (Work::Skip { reason, ignored }, _) => {
                    self.skip(&e.rel, reason, *ignored, observer)?
                }
                (Work::Image { .. }, None) => unreachable!("images are always prepared"),
            }
        }
        self.csv.flush()?;
        if let Some(f) = self.errors.as_deref_mut() {
            f.flush()?;
        }
        Ok(())
    }

    /// An entry that is not labelled: counted, observed (unless merely ignored) and listed in
    /// the errors file.
    fn skip(
        &mut self,
        rel: &str,
        reason: &str,
        ignored: bool,
        observer: &mut dyn Observer,
    ) -> Result<(), LabelError> {
        if ignored {
            self.job.counts.ignored += 1;
        } else {
            self.job.counts.skipped += 1;
            observer.skipped(rel, reason);
        }
        if let Some(f) = self.errors.as_deref_mut() {
            let reason = if ignored {
                format!("ignored: {reason}")
            } else {
                reason.to_string()
            };
            f.write(&error_row(rel, &reason))?;
        }
        Ok(())
    }

    /// Records `entries` more as done in the job file, now that their rows are written.
    fn checkpoint(&mut self, entries: usize) -> Result<(), LabelError> {
        let job = &mut *self.job;
        job.done += entries as u64;
        job.csv_bytes = self.csv.bytes;
        job.errors_bytes = self.errors.as_ref().map_or(job.errors_bytes, |f| f.bytes);
        if self.last_sync.elapsed() > Duration::from_secs(5) {
            // Now and then, make what is written survive a power cut too.
            self.csv.sync()?;
            if let Some(f) = self.errors.as_deref_mut() {
                f.sync()?;
            }
            fsio::write_atomic(self.job_file, &job.to_json())?;
            self.last_sync = Instant::now();
        } else {
            // A crash of the process never leaves it half-written; the synced write above,
            // every few seconds, covers a power cut.
            fsio::replace(self.job_file, &job.to_json())?;
        }
        Ok(())
    }
}

/// The model's answers for the batch's prepared images, in order.
fn infer(
    model: &MaxlModel,
    chunk: &[&Entry],
    prepared: &Prepared,
) -> Result<Vec<Classification>, LabelError> {
    let mut images = Vec::new();
    let mut classes = Vec::new();
    for (e, p) in chunk.iter().zip(prepared) {
        if let (Work::Image { class, .. }, Some(Ok(px))) = (&e.work, p) {
            images.push(px.as_slice());
            classes.push(*class);
        }
    }
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let x = model.stack(&images)?;
    Ok(model.classify(
        x.view(),
        &Classify {
            top_k: 1,
            aux: AuxFor::GivenOrPredicted(&classes),
        },
    )?)
}

/// Makes everything durable, then moves the files to their final names and leaves the job file
/// as `<out>.meta.json`.
fn finish(
    plan: &Plan<'_>,
    files: &Files,
    mut job: Job,
    outputs: Outputs,
) -> Result<Outcome, LabelError> {
    let Outputs {
        mut csv,
        mut errors,
    } = outputs;
    if let Some(csv) = csv.as_mut() {
        csv.sync()?;
    }
    if let Some(f) = errors.as_mut() {
        f.sync()?;
    }
    job.finished = true;
    fsio::write_atomic(&files.job, &job.to_json())?;
    drop((csv, errors));
    if let (Some(p), Some(final_errors)) = (&files.errors, &plan.options.errors)
        && p.exists()
    {
        fsio::rename_durable(p, final_errors)?;
    }
    if files.csv.exists() {
        fsio::rename_durable(&files.csv, &plan.out)?;
    }
    fsio::write_atomic(&meta_path(&plan.out), &job.to_json())?;
    std::fs::remove_file(&files.job).map_err(io_err(&files.job))?;
    Ok(Outcome {
        job,
        resumed: plan.resume,
        input: plan.input.clone(),
    })
}
