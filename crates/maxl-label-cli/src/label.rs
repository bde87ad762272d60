//! Labelling (the command without a subcommand): the arguments, as a [`LabelRequest`]; the
//! progress bar, driven by the run's [`Observer`]; the summary, the gallery and the count of
//! entries that could not be labelled.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use maxl_cli::choice;
use maxl_infer::{MaxlModel, ThreadOptions};
use maxl_infer_cli::args::ModelArgs;
use maxl_label::report::{self, Tally};
use maxl_label::{LabelRequest, Observer, Outcome, Primary, Shard, gallery};
use tracing::info;

#[derive(Args)]
pub struct LabelArgs {
    /// What to label: a folder of images or a CSV list. Folder: `<class>/…` (the class folder's
    /// folder-safe or display name; images at any depth below it belong to it, so training's
    /// `<coarse>/<fine>/` layout works when the primary classes are the coarse ones), or any
    /// layout with --primary predicted. List: `path,label[,fine_label]` lines (training's CSV
    /// format; a `path,…` header is optional; relative paths are relative to the list's folder).
    #[arg(long, value_name = "DIR|CSV", required = true)]
    input: Option<PathBuf>,
    /// The CSV to write. An existing file is replaced only with --force.
    #[arg(long, value_name = "FILE", required = true)]
    out: Option<PathBuf>,
    /// Write every entry that was not labelled here as `path,reason` (unreadable, truncated, not
    /// an image, over the decode limits, dangling link, link loop, unreadable folder, unknown
    /// class; files ignored as non-images with reason `ignored: …`). Without it, entries that
    /// could not be labelled are printed on stderr.
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    /// Where each image's primary class comes from: `given` (its class folder or the list's
    /// label) or `predicted` (the primary head's prediction; any folder layout, unlabelled lists).
    #[arg(long, value_parser = choice::<Primary>(), default_value = "given")]
    primary: Primary,
    /// Label only shard I of N (1 ≤ I ≤ N): the entries whose relative path hashes (FNV-1a) to
    /// I−1 modulo N. Run N of them (a Slurm array, a Kubernetes Indexed Job) and `merge` them.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Continue the interrupted run of this --out (refused if the model, options, shard or input
    /// files differ).
    #[arg(long)]
    resume: bool,
    /// Replace an existing --out (and --errors).
    #[arg(long)]
    force: bool,
    /// Threads that read, decode and resize images (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Images per inference batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch_size: u32,
    /// Add the column `aux_distribution`: the probabilities of the class's ψ slots, `;`-separated.
    #[arg(long)]
    probs: bool,
    /// Add the column `flag`: `class` where the primary head's probability of the row's class is
    /// below P (for a given class: a probably mislabelled image), `aux` where the slot's is,
    /// `class+aux` for both.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    min_confidence: Option<f32>,
    /// Write contact sheets of what the generator found here: one PNG per primary class, one row
    /// per auxiliary slot with its most confident images, and an index.html showing them all.
    #[arg(long, value_name = "DIR")]
    gallery: Option<PathBuf>,
    /// Thumbnails per slot in the gallery.
    #[arg(long, value_name = "M", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=64))]
    gallery_images: u32,
    #[command(flatten)]
    model_args: ModelArgs,
    /// Only errors on stderr; no progress bar or summary.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}`: expected a probability in [0, 1]")),
    }
}

/// The progress bar, and the lines a run logs as it goes.
struct Bar {
    /// Logged once the run has passed its checks (so that a refusal stays one line).
    announce: String,
    bar: ProgressBar,
    errors_file: bool,
}

impl Bar {
    /// A bar on stderr, hidden when `quiet` or when stderr is not a terminal.
    fn new(announce: String, quiet: bool, errors_file: bool) -> Self {
        let bar = maxl_cli::progress::bar(
            0,
            "[{bar:30}] {human_pos}/{human_len} images {per_sec} {elapsed_precise} eta {eta}",
            quiet,
        );
        Self {
            announce,
            bar,
            errors_file,
        }
    }
}

impl Observer for Bar {
    fn start(&mut self, entries: u64, done: u64) {
        if done > 0 {
            info!("{}; resuming at {done} of {entries} entries", self.announce);
        } else {
            info!("{}; {entries} entries", self.announce);
        }
        self.bar.set_length(entries);
        self.bar.set_position(done);
        self.bar.reset_eta();
    }

    fn progress(&mut self, done: u64) {
        self.bar.set_position(done);
    }

    fn skipped(&mut self, rel: &str, reason: &str) {
        if !self.errors_file {
            self.bar
                .suspend(|| eprintln!("maxl-label: skipped: {rel}: {reason}"));
        }
    }
}

/// The arguments as the library's request.
pub(crate) fn request(a: &LabelArgs) -> anyhow::Result<LabelRequest> {
    let (Some(input), Some(out)) = (&a.input, &a.out) else {
        anyhow::bail!("--input and --out are required");
    };
    let defaults = LabelRequest::new(input, out);
    Ok(LabelRequest {
        errors: a.errors.clone(),
        primary: a.primary,
        shard: a.shard,
        jobs: a.jobs.map_or(defaults.jobs, usize::from),
        batch_size: a.batch_size as usize,
        probs: a.probs,
        min_confidence: a.min_confidence,
        resume: a.resume,
        force: a.force,
        fp16: a.model_args.trt_fp16,
        ..defaults
    })
}

/// Labels as the arguments say. Ok(false): finished, but some entries were not labelled.
pub fn run(a: &LabelArgs) -> anyhow::Result<bool> {
    let request = request(a)?;
    // Refusals that need no model come before loading it.
    request.check()?;
    // Inference shares the cores with decoding: its idle threads must not spin.
    let model = a
        .model_args
        .builder()
        .with_threads(ThreadOptions {
            spin: false,
            ..a.model_args.threads()
        })
        .build()?;
    let announce = format!(
        "labelling {} with {} ({}), {} decoding threads{}",
        request.input.display(),
        a.model_args.model.display(),
        a.model_args.backend().name(),
        request.jobs,
        shard_note(a.shard)
    );
    let mut bar = Bar::new(announce, a.quiet, a.errors.is_some());
    let outcome = maxl_label::label(&model, &request, &mut bar)?;
    bar.bar.finish_and_clear();
    let keep = if a.gallery.is_some() {
        a.gallery_images as usize
    } else {
        0
    };
    let tally = report::tally(&request.out, &model, keep)?;
    if !a.quiet {
        print_summary(a, &request.out, &model, &outcome, &tally);
    }
    if let Some(dir) = &a.gallery {
        write_gallery(a, dir, &model, &outcome, &tally)?;
    }
    let c = outcome.job.counts;
    if c.skipped > 0 {
        eprintln!(
            "maxl-label: {} of {} entries could not be labelled{}",
            c.skipped,
            outcome.job.entries,
            a.errors
                .as_ref()
                .map_or(String::new(), |e| format!(" (see {})", e.display()))
        );
    }
    Ok(c.skipped == 0)
}

fn shard_note(shard: Option<Shard>) -> String {
    shard.map_or(String::new(), |s| format!(", shard {s}"))
}

/// What was written, with the per-slot counts read back from it.
fn print_summary(a: &LabelArgs, out: &Path, model: &MaxlModel, outcome: &Outcome, tally: &Tally) {
    let c = outcome.job.counts;
    println!(
        "labelled {} images into {} ({} skipped, {} ignored{}){}{}",
        tally.rows,
        out.display(),
        c.skipped,
        c.ignored,
        a.min_confidence.map_or(String::new(), |p| format!(
            ", {} flagged below {p}",
            tally.flagged
        )),
        shard_note(a.shard),
        if outcome.resumed { ", resumed" } else { "" }
    );
    print!("{}", report::summary(model, tally));
    if let Some(e) = &a.errors {
        println!("errors: {}", e.display());
    }
}

/// The contact sheets of --out in `dir`.
fn write_gallery(
    a: &LabelArgs,
    dir: &Path,
    model: &MaxlModel,
    outcome: &Outcome,
    tally: &Tally,
) -> anyhow::Result<()> {
    let name = a
        .out
        .as_deref()
        .and_then(Path::file_name)
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let keep = a.gallery_images as usize;
    let sheets = gallery::write(model, &outcome.input, tally, keep, dir, &name)
        .with_context(|| format!("{}: gallery", dir.display()))?;
    if !a.quiet {
        println!(
            "gallery: {} ({} sheets)",
            gallery::index_path(dir).display(),
            sheets.len()
        );
    }
    Ok(())
}
