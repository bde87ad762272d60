//! A labelling run as a script or a service asks for one ([`LabelRequest`]), checked before
//! anything is read or written, and run by [`label`].

use std::path::{Path, PathBuf};

use maxl_infer::MaxlModel;

use crate::LabelError;
use crate::input::{Input, Primary};
use crate::run::{self, Observer, Outcome, Plan};
use crate::state::{Options, Shard};

/// The most decoding threads a run starts.
pub const MAX_JOBS: usize = 65536;

/// What to label, where the rows go and how. Make one with [`LabelRequest::new`] and change the
/// fields that differ from the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRequest {
    /// A folder of images (`<class>/…`, or any layout with [`Primary::Predicted`]) or a CSV list
    /// of `path,label[,fine_label]` lines.
    pub input: PathBuf,
    /// The label CSV to write. It appears whole, by rename, when the run finishes.
    pub out: PathBuf,
    /// Where every entry that was not labelled is listed as `path,reason`, if anywhere.
    pub errors: Option<PathBuf>,
    /// Where each image's primary class comes from. Default: [`Primary::Given`].
    pub primary: Primary,
    /// Label only this shard of the input. Default: all of it.
    pub shard: Option<Shard>,
    /// Threads that read, decode and resize images, 1 to [`MAX_JOBS`]. Default: the number of
    /// CPUs.
    pub jobs: usize,
    /// Images per inference batch, at least 1. Default: 64.
    pub batch_size: usize,
    /// Add the column `aux_distribution`. Default: no.
    pub probs: bool,
    /// Add the column `flag` for probabilities below this, in [0, 1]. Default: no column.
    pub min_confidence: Option<f32>,
    /// Continue the interrupted run of `out` (refused if anything that decides the output
    /// differs). Default: no.
    pub resume: bool,
    /// Replace an existing `out` (and `errors`). Default: no.
    pub force: bool,
    /// The model's TensorRT engines may use FP16 kernels: recorded with the backend in the job
    /// file (outputs differ in the last digits, so a resumed run must agree). Default: no.
    pub fp16: bool,
}

impl LabelRequest {
    /// Labels `input` into `out` with the defaults.
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            out: out.into(),
            errors: None,
            primary: Primary::Given,
            shard: None,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            batch_size: 64,
            probs: false,
            min_confidence: None,
            resume: false,
            force: false,
            fp16: false,
        }
    }

    /// Checks the request before any model is loaded or file is read: the numbers are in range,
    /// the outputs are two different files, and (unless resuming) neither exists without
    /// `force`. [`label`] checks it again.
    pub fn check(&self) -> Result<(), LabelError> {
        if !(1..=MAX_JOBS).contains(&self.jobs) {
            return Err(LabelError::Invalid(format!(
                "jobs: {} decoding threads; expected 1 to {MAX_JOBS}",
                self.jobs
            )));
        }
        if self.batch_size == 0 {
            return Err(LabelError::Invalid(
                "batch size: at least one image per batch is needed".into(),
            ));
        }
        if let Some(p) = self.min_confidence
            && !(0.0..=1.0).contains(&p)
        {
            return Err(LabelError::Invalid(format!(
                "min confidence `{p}`: expected a probability in [0, 1]"
            )));
        }
        if let Some(e) = &self.errors
            && absolute(e) == absolute(&self.out)
        {
            return Err(LabelError::Invalid(format!(
                "{}: the label CSV and the errors file must be different files",
                e.display()
            )));
        }
        if !self.resume {
            refuse_existing(&self.out, self.force)?;
            if let Some(e) = &self.errors {
                refuse_existing(e, self.force)?;
            }
        }
        Ok(())
    }

    /// What the job file records as deciding the output's bytes.
    fn options(&self, model: &MaxlModel, input: &Input) -> Options {
        Options {
            input: absolute(input.path()),
            primary: self.primary,
            backend: format!(
                "{} {}{}",
                model.backend().name(),
                serde_json::to_string(&model.providers()).unwrap_or_default(),
                if self.fp16 { " fp16" } else { "" }
            ),
            batch_size: self.batch_size,
            probs: self.probs,
            min_confidence: self.min_confidence,
            errors: self.errors.as_deref().map(absolute),
        }
    }
}

/// `path` made absolute (as given if it cannot be).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// An error if `path` exists and may not be replaced.
pub(crate) fn refuse_existing(path: &Path, force: bool) -> Result<(), LabelError> {
    if !force && path.exists() {
        return Err(LabelError::Exists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Labels (or, with `resume`, finishes labelling) `request.input` with `model`, which must have
/// a label generator, telling `observer` how it goes. Every image gets a row of the label CSV in
/// path order; every entry that is not labelled is counted (and listed with `errors`). A run
/// with skipped entries still succeeds: see the outcome's counts.
///
/// Errors: the request's own (see [`LabelRequest::check`]), an input that cannot be read or holds
/// no images, a model without a generator, an interrupted run in the way (or, to resume, none,
/// or another), and I/O and inference failures; each names its file. A failure leaves `out`
/// untouched and the interrupted run resumable.
pub fn label(
    model: &MaxlModel,
    request: &LabelRequest,
    observer: &mut dyn Observer,
) -> Result<Outcome, LabelError> {
    request.check()?;
    let input = Input::new(&request.input)?;
    let plan = Plan {
        model,
        options: request.options(model, &input),
        input,
        out: request.out.clone(),
        shard: request.shard,
        jobs: request.jobs,
        resume: request.resume,
    };
    run::run(&plan, observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_out_of_range_are_refused_before_anything_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = LabelRequest::new(tmp.path().join("in"), tmp.path().join("out.csv"));
        assert!(ok.check().is_ok());
        let refused = |r: LabelRequest, needle: &str| {
            let e = r.check().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        for jobs in [0, usize::MAX] {
            refused(LabelRequest { jobs, ..ok.clone() }, "expected 1 to 65536");
        }
        refused(
            LabelRequest {
                batch_size: 0,
                ..ok.clone()
            },
            "one image per batch",
        );
        for p in [-0.1, 1.5, f32::NAN] {
            refused(
                LabelRequest {
                    min_confidence: Some(p),
                    ..ok.clone()
                },
                "expected a probability in [0, 1]",
            );
        }
        refused(
            LabelRequest {
                errors: Some(tmp.path().join("out.csv")),
                ..ok.clone()
            },
            "must be different files",
        );
        std::fs::write(&ok.out, "").unwrap();
        refused(ok.clone(), "out.csv: exists; pass --force");
        assert!(
            LabelRequest {
                force: true,
                ..ok.clone()
            }
            .check()
            .is_ok()
        );
        assert!(LabelRequest { resume: true, ..ok }.check().is_ok());
    }
}
