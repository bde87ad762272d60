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
    let mut columns = Columns {
        probs: plan.options.probs,
        min_confidence: plan.options.min_confidence,
        weight: plan.model.has_sample_weight(),
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
        let (job, outputs, weight) = resume(&files, &fresh, &columns)?;
        columns.weight = weight;
        (job, outputs)
    } else {
        (fresh.clone(), start(&files, &fresh, &header)?)
    };
    observer.start(job.entries, job.done);
    // A resumed job's `done` is at most its entries (checked when it was read).
    let todo = &entries[job.done as usize..];
    label_all(
        plan,
        columns,
        todo,
        &mut outputs,
        &mut job,
        &files.job,
        observer,
    )?;
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

/// An interrupted run, if it is this one (`fresh`): its job file, its partial files cut back
/// to what the job file records, and whether its CSV has the `aux_weight` column. The rows go on
/// under the header the partial CSV has: `columns`' with or without `aux_weight` (a run begun
/// by a maxl-label that did not write it continues without it); any other header is refused.
fn resume(
    files: &Files,
    fresh: &Job,
    columns: &Columns,
) -> Result<(Job, Outputs, bool), LabelError> {
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
    let (csv, weight) = if gone(&files.csv) {
        (None, columns.weight)
    } else {
        let weight = partial_has_weight(&files.csv, columns)?;
        (Some(Partial::reopen(&files.csv, job.csv_bytes)?), weight)
    };
    let errors = match &files.errors {
        Some(p) if !gone(p) => Some(Partial::reopen(p, job.errors_bytes)?),
        _ => None,
    };
    Ok((job, Outputs { csv, errors }, weight))
}

/// Whether the partial CSV's header is `columns`' with `aux_weight` (true) or without (false);
/// a resume error for any other.
fn partial_has_weight(csv: &Path, columns: &Columns) -> Result<bool, LabelError> {
    use std::io::{BufRead, Read};
    let f = std::fs::File::open(csv).map_err(io_err(csv))?;
    let mut first = String::new();
    std::io::BufReader::new(f)
        .take(64 * 1024)
        .read_line(&mut first)
        .map_err(io_err(csv))?;
    let with = |weight| Columns { weight, ..*columns }.header();
    if first == with(true) {
        Ok(true)
    } else if first == with(false) {
        Ok(false)
    } else {
        Err(LabelError::Resume {
            path: csv.to_path_buf(),
            message: format!(
                "its header is `{}`, this run writes `{}`: not this job's partial output, start over",
                first.trim_end(),
                columns.header().trim_end()
            ),
        })
    }
}

/// One batch of entries, prepared: per entry its pixels or why not (`None` for entries that are
/// not images).
type Prepared = Vec<Option<Result<Vec<f32>, String>>>;

/// Labels `todo` batch by batch: decoding one batch ahead on `plan.jobs` threads while the
/// previous one is inferred and written.
fn label_all(
    plan: &Plan<'_>,
    columns: Columns,
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
            columns,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use maxl_core::manifest::Manifest;
    use maxl_infer::{Backend, MaxlModel};

    use super::*;
    use crate::synthetic::{self, Case};
    use crate::{LabelRequest, label, report};

    const HEADER: &str =
        "path,class,class_source,class_probability,aux_slot,aux_label,aux_probability";

    fn committed() -> Manifest {
        Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap()
    }

    /// An untrained model like the committed one (weighted or not) and 30 generated images.
    fn setup(tmp: &Path, weighted: bool) -> (PathBuf, PathBuf) {
        let like = committed();
        let name = if weighted { "weighted" } else { "plain" };
        let dir = synthetic::model(&tmp.join(name), &like, weighted, 5).unwrap();
        let classes: Vec<String> = like.classes.iter().map(|c| c.name.clone()).collect();
        let images = synthetic::generate(tmp, Case::Png28, 30, &classes).unwrap();
        (dir, images)
    }

    fn load(dir: &Path, backend: Backend) -> MaxlModel {
        MaxlModel::builder(dir)
            .with_backend(backend)
            .build()
            .unwrap()
    }

    /// path → the row's fields by column.
    fn rows(csv: &Path) -> (String, BTreeMap<String, BTreeMap<String, String>>) {
        let text = std::fs::read_to_string(csv).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap().to_string();
        let names: Vec<&str> = header.split(',').collect();
        let rows = lines
            .map(|l| {
                let row: BTreeMap<String, String> = names
                    .iter()
                    .map(|n| n.to_string())
                    .zip(l.split(',').map(str::to_string))
                    .collect();
                (row["path"].clone(), row)
            })
            .collect();
        (header, rows)
    }

    #[test]
    fn a_weighted_model_adds_aux_weight_last_equal_to_the_models_weights_on_both_backends() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, images) = setup(tmp.path(), true);
        let mut by_backend = Vec::new();
        for backend in [Backend::OrtCpu, Backend::Tract] {
            let model = load(&dir, backend);
            assert!(model.has_sample_weight());
            let out = tmp.path().join(format!("{}.csv", backend.name()));
            let request = LabelRequest {
                jobs: 2,
                batch_size: 7,
                probs: true,
                min_confidence: Some(0.5),
                ..LabelRequest::new(&images, &out)
            };
            label(&model, &request, &mut ()).unwrap();
            let (header, rows) = rows(&out);
            assert_eq!(
                header,
                format!("{HEADER},aux_distribution,flag,aux_weight"),
                "{backend}"
            );
            assert_eq!(rows.len(), 30);
            // Each row's weight is the model's for that image alone, to the CSV's 6 decimals.
            let mut weights = BTreeMap::new();
            for (path, row) in &rows {
                let px = model.preprocess_file(&images.join(path)).unwrap();
                let k = model.class_index(&row["class"]).unwrap();
                let c = model
                    .classify(
                        model.stack(&[px]).unwrap().view(),
                        &maxl_infer::Classify {
                            top_k: 1,
                            aux: maxl_infer::AuxFor::Given(&[k]),
                        },
                    )
                    .unwrap()
                    .remove(0);
                let want = c.aux.unwrap().weight.unwrap();
                let got: f32 = row["aux_weight"].parse().unwrap();
                assert!(
                    (got - want).abs() < 2e-6,
                    "{backend} {path}: {got} vs {want}"
                );
                assert!(got > 0.0 && got < 2.0);
                weights.insert(path.clone(), got);
            }
            // Read back: the tally has every weight, the summary their distribution.
            let t = report::tally(&out, &model, 3).unwrap();
            assert!(t.weighted());
            let stats = t.weight_stats().unwrap();
            assert_eq!(stats.count, 30);
            assert!(stats.p10 <= stats.p50 && stats.p50 <= stats.p90);
            let summary = report::summary(&model, &t);
            assert!(summary.contains("  aux_weight: mean "), "{summary}");
            let lowest: Vec<f32> = (0..10)
                .flat_map(|k| t.lowest(k).iter().map(|p| p.weight.unwrap()))
                .collect();
            assert_eq!(lowest.len(), 30, "3 kept per class");
            let min = weights.values().cloned().fold(f32::MAX, f32::min);
            assert!(lowest.contains(&min));
            by_backend.push(weights);
        }
        for (path, w) in &by_backend[0] {
            let t = by_backend[1][path];
            assert!((w - t).abs() < 1e-5, "{path}: ort {w}, tract {t}");
        }
    }

    #[test]
    fn a_model_without_sample_weight_writes_the_csv_it_always_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, images) = setup(tmp.path(), false);
        let model = load(&dir, Backend::Tract);
        assert!(!model.has_sample_weight());
        let out = tmp.path().join("plain.csv");
        let request = LabelRequest {
            jobs: 2,
            probs: true,
            ..LabelRequest::new(&images, &out)
        };
        label(&model, &request, &mut ()).unwrap();
        let (header, rows) = rows(&out);
        assert_eq!(header, format!("{HEADER},aux_distribution"));
        assert!(rows.values().all(|r| !r.contains_key("aux_weight")));
        let t = report::tally(&out, &model, 3).unwrap();
        assert!(!t.weighted() && t.weight_stats().is_none());
        assert!(!report::summary(&model, &t).contains("aux_weight"));
    }

    /// A weighted model's run interrupted after 14 of its 30 rows, those rows (and the header)
    /// in its partial CSV as `edit` makes them, resumed.
    fn resume_from(
        tmp: &Path,
        model: &MaxlModel,
        images: &Path,
        name: &str,
        edit: impl Fn(&str) -> String,
    ) -> Result<PathBuf, LabelError> {
        let whole = tmp.join("whole.csv");
        let request = |out: &Path| LabelRequest {
            jobs: 1,
            batch_size: 7,
            ..LabelRequest::new(images, out)
        };
        if !whole.exists() {
            label(model, &request(&whole), &mut ()).unwrap();
        }
        let text = std::fs::read_to_string(&whole).unwrap();
        let partial: String = text
            .lines()
            .take(15)
            .map(|l| format!("{}\n", edit(l)))
            .collect();
        let out = tmp.join(name);
        std::fs::write(partial_path(&out), &partial).unwrap();
        let mut job = Job::read(&meta_path(&whole)).unwrap();
        // The work list: the generator's `.complete` marker (ignored), then the 30 images.
        job.finished = false;
        job.done = 15;
        job.counts.labelled = 14;
        job.csv_bytes = partial.len() as u64;
        std::fs::write(job_path(&out), job.to_json()).unwrap();
        label(
            model,
            &LabelRequest {
                resume: true,
                ..request(&out)
            },
            &mut (),
        )?;
        Ok(out)
    }

    #[test]
    fn a_resumed_run_keeps_the_header_of_its_partial_csv() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, images) = setup(tmp.path(), true);
        let model = load(&dir, Backend::Tract);
        let whole = tmp.path().join("whole.csv");
        // Interrupted by this maxl-label: resumed to the same bytes.
        let same = resume_from(tmp.path(), &model, &images, "same.csv", str::to_string).unwrap();
        let expected = std::fs::read_to_string(&whole).unwrap();
        assert!(expected.starts_with(&format!("{HEADER},aux_weight\n")));
        assert_eq!(std::fs::read_to_string(same).unwrap(), expected);
        // Interrupted by a maxl-label that wrote no aux_weight: it goes on without the column.
        let drop_weight = |l: &str| l.rsplit_once(',').unwrap().0.to_string();
        let older = resume_from(tmp.path(), &model, &images, "older.csv", drop_weight).unwrap();
        let without: String = expected
            .lines()
            .map(|l| format!("{}\n", drop_weight(l)))
            .collect();
        assert_eq!(std::fs::read_to_string(older).unwrap(), without);
        // Any other header is not this job's: refused, one line naming the partial file.
        let e = resume_from(tmp.path(), &model, &images, "other.csv", |l| {
            l.replacen("aux_probability", "probability", 1)
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("other.csv.partial: cannot resume: its header is `"),
            "{e}"
        );
        assert!(e.contains("this run writes `"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
