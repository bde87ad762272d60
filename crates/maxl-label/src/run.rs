//! The labelling run: work list → parallel decode and resize (a bounded rayon pool, one batch
//! ahead of inference) → batched inference → rows in the work list's order, appended to
//! `<out>.partial` and flushed after every batch, with the job file rewritten after it.
//!
//! Crash safety: the job file records how many entries are done and how many bytes of the
//! partial files hold exactly their rows. A run killed at any moment (SIGKILL included) leaves a
//! job file whose counts are at most the rows written; `--resume` truncates the partial files
//! to those counts and goes on, so the finished file is byte-identical to an uninterrupted
//! run's. The finished files appear under their final names by rename only.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use maxl_core::fsio;
use maxl_infer::{AuxFor, Classify, InferError, MaxlModel};
use rayon::prelude::*;

use crate::LabelError;
use crate::input::{Entry, Input, Work};
use crate::output::{Columns, ERRORS_HEADER, error_row};
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

/// What to run.
pub struct Request<'a> {
    pub model: &'a MaxlModel,
    pub input: Input,
    pub out: PathBuf,
    pub options: Options,
    pub shard: Option<Shard>,
    /// Decoding threads.
    pub jobs: usize,
    pub resume: bool,
}

/// Called as the run goes.
pub trait Observer {
    /// The number of entries in this run (this shard) and how many a resumed run had done.
    fn start(&mut self, _entries: u64, _done: u64) {}
    /// Entries done so far.
    fn progress(&mut self, _done: u64) {}
    /// An entry that could not be labelled (not merely ignored).
    fn skipped(&mut self, _rel: &str, _reason: &str) {}
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job: Job,
    /// Whether this run continued an interrupted one.
    pub resumed: bool,
}

/// The test hook of the crash-safety tests: `MAXL_LABEL_FAILPOINT=after-rows:K` kills the
/// process with SIGKILL once the rows of its K-th batch are written (before the job file is),
/// `after-checkpoint:K` once the job file is rewritten after it.
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

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LabelError + '_ {
    move |source| LabelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open partial output file and its length.
struct Partial {
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
}

impl Partial {
    fn create(path: &Path, header: &str) -> Result<Self, LabelError> {
        let mut file = BufWriter::new(File::create(path).map_err(io_err(path))?);
        file.write_all(header.as_bytes()).map_err(io_err(path))?;
        let mut p = Self {
            path: path.to_path_buf(),
            file,
            bytes: header.len() as u64,
        };
        // On disk before the job file that records it.
        p.sync()?;
        Ok(p)
    }

    /// Opens a partial file of an interrupted run and cuts it back to `bytes`.
    fn reopen(path: &Path, bytes: u64) -> Result<Self, LabelError> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let len = f.metadata().map_err(io_err(path))?.len();
        if len < bytes {
            return Err(LabelError::Resume {
                path: path.to_path_buf(),
                message: format!(
                    "holds {len} bytes, fewer than the {bytes} the job file records; the partial output was damaged, start over"
                ),
            });
        }
        f.set_len(bytes).map_err(io_err(path))?;
        f.seek(std::io::SeekFrom::End(0)).map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: BufWriter::new(f),
            bytes,
        })
    }

    fn write(&mut self, s: &str) -> Result<(), LabelError> {
        self.bytes += s.len() as u64;
        self.file
            .write_all(s.as_bytes())
            .map_err(io_err(&self.path))
    }

    fn flush(&mut self) -> Result<(), LabelError> {
        self.file.flush().map_err(io_err(&self.path))
    }

    fn sync(&mut self) -> Result<(), LabelError> {
        self.flush()?;
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

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

/// Runs (or resumes) a labelling job to the end.
pub fn run(req: &Request<'_>, observer: &mut dyn Observer) -> Result<Outcome, LabelError> {
    let model = req.model;
    if !model.has_generator() {
        return Err(LabelError::Invalid(format!(
            "{}: the model has no label generator (trained with method `{}`)",
            model.dir().display(),
            model.manifest().training.method
        )));
    }
    let out = &req.out;
    let columns = Columns {
        probs: req.options.probs,
        min_confidence: req.options.min_confidence,
    };
    let all = req.input.entries(model, req.options.primary)?;
    if !all.iter().any(|e| matches!(e.work, Work::Image { .. }))
        && !all
            .iter()
            .any(|e| matches!(e.work, Work::Skip { ignored: false, .. }))
    {
        return Err(LabelError::Format {
            path: req.input.path().to_path_buf(),
            message: "no PNG or JPEG images found".into(),
        });
    }
    let entries: Vec<&Entry> = all
        .iter()
        .filter(|e| req.shard.is_none_or(|s| s.contains(&e.rel)))
        .collect();
    let header = columns.header();
    let batch = req.options.batch_size.max(1);
    let mut job = Job {
        format: FORMAT,
        model: model_id(model),
        options: req.options.clone(),
        shard: req.shard,
        entries: entries.len() as u64,
        entries_sha256: entries_digest(&entries),
        input_sha256: if req.shard.is_some() {
            entries_digest(&all.iter().collect::<Vec<_>>())
        } else {
            String::new()
        },
        done: 0,
        csv_bytes: header.len() as u64,
        errors_bytes: ERRORS_HEADER.len() as u64,
        counts: Counts::default(),
        finished: false,
    };
    let job_file = job_path(out);
    let csv_path = partial_path(out);
    let errors_path = req.options.errors.as_ref().map(|e| partial_path(e));
    let (mut csv, mut errors) = if req.resume {
        if !job_file.exists() {
            return Err(LabelError::Resume {
                path: job_file,
                message: "nothing to resume: no interrupted run of this --out".into(),
            });
        }
        let old = Job::read(&job_file)?;
        old.check_continues(&job, &job_file)?;
        job = old;
        // A run killed while finishing may have renamed its files already.
        let gone = |p: &Path| job.finished && !p.exists();
        (
            if gone(&csv_path) {
                None
            } else {
                Some(Partial::reopen(&csv_path, job.csv_bytes)?)
            },
            match &errors_path {
                Some(p) if !gone(p) => Some(Partial::reopen(p, job.errors_bytes)?),
                _ => None,
            },
        )
    } else {
        if job_file.exists() {
            return Err(LabelError::Resume {
                path: job_file.clone(),
                message: format!(
                    "an interrupted run of this --out exists: pass --resume to continue it, or delete {} and {} to start over",
                    job_file.display(),
                    csv_path.display()
                ),
            });
        }
        let csv = Partial::create(&csv_path, &header)?;
        let errors = errors_path
            .as_ref()
            .map(|p| Partial::create(p, ERRORS_HEADER))
            .transpose()?;
        fsio::write_atomic(&job_file, &job.to_json())?;
        (Some(csv), errors)
    };
    let resumed = req.resume;
    observer.start(job.entries, job.done);

    let todo = &entries[job.done as usize..];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.jobs.max(1))
        .thread_name(|i| format!("maxl-label-decode-{i}"))
        .build()
        .map_err(|e| LabelError::Invalid(format!("cannot start decoding threads: {e}")))?;
    let mut last_sync = Instant::now();
    let result: Result<(), LabelError> = std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Vec<Option<Result<Vec<f32>, String>>>>(1);
        scope.spawn(move || {
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
        });
        let (Some(csv), mut errors) = (csv.as_mut(), errors.as_mut()) else {
            return Ok(());
        };
        for (n, (chunk, prepared)) in todo.chunks(batch).zip(rx).enumerate() {
            let mut images = Vec::new();
            let mut classes = Vec::new();
            for (e, p) in chunk.iter().zip(&prepared) {
                if let (Work::Image { class, .. }, Some(Ok(px))) = (&e.work, p) {
                    images.push(px.as_slice());
                    classes.push(*class);
                }
            }
            let mut results = if images.is_empty() {
                Vec::new()
            } else {
                let x = model.stack(&images)?;
                model.classify(
                    x.view(),
                    &Classify {
                        top_k: 1,
                        aux: AuxFor::GivenOrPredicted(&classes),
                    },
                )?
            }
            .into_iter();
            for (e, p) in chunk.iter().zip(prepared) {
                match (&e.work, p) {
                    (Work::Image { source, .. }, Some(Ok(_))) => {
                        let c = results.next().expect("one result per image");
                        let (row, flagged) = columns.row(model, &e.rel, *source, &c);
                        csv.write(&row)?;
                        job.counts.labelled += 1;
                        job.counts.flagged += flagged as u64;
                    }
                    (Work::Image { .. }, Some(Err(reason))) => {
                        job.counts.skipped += 1;
                        observer.skipped(&e.rel, &reason);
                        if let Some(f) = errors.as_deref_mut() {
                            f.write(&error_row(&e.rel, &reason))?;
                        }
                    }
                    (Work::Skip { reason, ignored }, _) => {
                        if *ignored {
                            job.counts.ignored += 1;
                        } else {
                            job.counts.skipped += 1;
                            observer.skipped(&e.rel, reason);
                        }
                        if let Some(f) = errors.as_deref_mut() {
                            let reason = if *ignored {
                                format!("ignored: {reason}")
                            } else {
                                reason.clone()
                            };
                            f.write(&error_row(&e.rel, &reason))?;
                        }
                    }
                    (Work::Image { .. }, None) => unreachable!("images are always prepared"),
                }
            }
            csv.flush()?;
            if let Some(f) = errors.as_deref_mut() {
                f.flush()?;
            }
            failpoint("after-rows", n as u64 + 1);
            job.done += chunk.len() as u64;
            job.csv_bytes = csv.bytes;
            job.errors_bytes = errors.as_ref().map_or(job.errors_bytes, |f| f.bytes);
            if last_sync.elapsed() > Duration::from_secs(5) {
                // Now and then, make what is written survive a power cut too.
                csv.sync()?;
                if let Some(f) = errors.as_deref_mut() {
                    f.sync()?;
                }
                fsio::write_atomic(&job_file, &job.to_json())?;
                last_sync = Instant::now();
            } else {
                // A crash of the process never leaves it half-written; the synced write above,
                // every few seconds, covers a power cut.
                fsio::replace(&job_file, &job.to_json())?;
            }
            failpoint("after-checkpoint", n as u64 + 1);
            observer.progress(job.done);
        }
        Ok(())
    });
    result?;

    // Finish: make everything durable, then move the files to their final names.
    if let Some(csv) = csv.as_mut() {
        csv.sync()?;
    }
    if let Some(f) = errors.as_mut() {
        f.sync()?;
    }
    job.finished = true;
    fsio::write_atomic(&job_file, &job.to_json())?;
    drop((csv, errors));
    if let (Some(p), Some(final_errors)) = (&errors_path, &req.options.errors)
        && p.exists()
    {
        fsio::rename_durable(p, final_errors)?;
    }
    if csv_path.exists() {
        fsio::rename_durable(&csv_path, out)?;
    }
    fsio::write_atomic(&meta_path(out), &job.to_json())?;
    std::fs::remove_file(&job_file).map_err(io_err(&job_file))?;
    Ok(Outcome { job, resumed })
}
