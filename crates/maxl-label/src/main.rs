//! `maxl-label`: auxiliary sub-class labels for a dataset, as CSV; `merge` for shards; `bench`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use maxl_infer_cli::args::{ModelArgs, init_logging};
use maxl_label::bench::{self, Case, Row};
use maxl_label::input::{Input, Primary};
use maxl_label::run::{Observer, Request, meta_path};
use maxl_label::state::{Options, Shard};
use maxl_label::{gallery, merge, report};
use tracing::info;

const EXIT_CODES: &str = "Exit status: 0 when every image was labelled; 1 when an error stopped the \
run, or when some entries could not be labelled (each is listed in --errors, or on stderr without \
it; files ignored because they are not images by name do not count); 2 for a wrong command line.";

/// Label every image of a dataset with the auxiliary sub-class MAXL's label generator assigns
/// it (one of its primary class's ψ slots) and write a CSV with the columns
/// `path,class,class_source,class_probability,aux_slot,aux_label,aux_probability` (the names
/// `maxl-infer predict` uses), plus `aux_distribution` with --probs and `flag` with
/// --min-confidence. `path` is relative to --input (or as written in a list); rows are sorted
/// by it, whatever the threads and batch size.
///
/// Rows stream to OUT.partial, flushed after every batch, with a job file OUT.partial.json; the
/// finished CSV appears under OUT by rename (with OUT.meta.json beside it), so OUT is never
/// half-written. An interrupted run (even SIGKILL) continues with --resume, to a file
/// byte-identical to an uninterrupted run's.
#[derive(Parser)]
#[command(
    name = "maxl-label",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    label: LabelArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Combine the finished outputs of `--shard 1/N` … `--shard N/N` into one CSV in path order
    /// (byte-identical to an unsharded run), after checking that all N shards are there and come
    /// from one model with the same options.
    #[command(after_help = EXIT_CODES)]
    Merge(MergeArgs),
    /// Images/s end to end on generated datasets (256×256 JPEGs, 28×28 PNGs), each backend in
    /// its own process, against a Python pipeline (--python) in the same run; peak RSS at N and
    /// at --rss-scale·N images. Build with --release.
    Bench(BenchArgs),
}

#[derive(Args)]
struct LabelArgs {
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
    #[arg(long, value_enum, default_value = "given")]
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
    quiet: bool,
}

#[derive(Args)]
struct MergeArgs {
    /// The merged CSV (with OUT.meta.json beside it).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The shards' finished CSVs (each with its .meta.json).
    #[arg(value_name = "SHARD_CSV", required = true)]
    shards: Vec<PathBuf>,
    /// Also merge the shards' errors files (as their runs recorded them) into this file.
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    /// Replace an existing --out (and --errors).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Images per dataset (N).
    #[arg(long, default_value_t = 2000)]
    images: usize,
    /// Interleaved repeats; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Backends to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "ort-cpu,tract")]
    backends: Vec<String>,
    /// Decoding threads and ONNX Runtime intra-op threads, for every pipeline alike (default:
    /// the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// The Python pipeline to compare with, e.g. `python scripts/bench_label.py`; it is run with
    /// `--input DIR --out FILE --model DIR --threads N` appended.
    #[arg(long, value_name = "CMD")]
    python: Option<String>,
    /// Peak RSS is also measured on this many times N images (ort-cpu, JPEGs).
    #[arg(long, default_value_t = 10)]
    rss_scale: usize,
    /// Where the datasets are generated (kept, and reused by later runs).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The model directory.
    #[arg(long, value_name = "DIR", default_value = "models")]
    model: PathBuf,
    /// Write the report as JSON here too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}`: expected a probability in [0, 1]")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = cli.command.is_none() && cli.label.quiet;
    init_logging(if quiet { "error" } else { "info" });
    let result = match &cli.command {
        Some(Cmd::Merge(m)) => run_merge(m),
        Some(Cmd::Bench(b)) => run_bench(b),
        None => run_label(&cli.label),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("maxl-label: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Bar {
    /// Logged once the run has passed its checks (so that a refusal stays one line).
    announce: String,
    bar: ProgressBar,
    errors_file: bool,
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

fn refuse_existing(path: &Path, force: bool) -> anyhow::Result<()> {
    if !force && path.exists() {
        anyhow::bail!(
            "{}: exists; pass --force to replace it (or --resume to continue an interrupted run)",
            path.display()
        );
    }
    Ok(())
}

/// Ok(false): finished, but some entries were not labelled.
fn run_label(a: &LabelArgs) -> anyhow::Result<bool> {
    let (input, out) = (
        a.input.clone().expect("required"),
        a.out.clone().expect("required"),
    );
    if !a.resume {
        refuse_existing(&out, a.force)?;
        if let Some(e) = &a.errors {
            refuse_existing(e, a.force)?;
        }
    }
    // Inference shares the cores with decoding: its idle threads must not spin.
    let model = a
        .model_args
        .builder()
        .with_threads(maxl_infer::ThreadOptions {
            spin: false,
            ..a.model_args.threads()
        })
        .build()?;
    let input = Input::new(&input)?;
    let jobs = a.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |j| j as usize,
    );
    let options = Options {
        input: std::path::absolute(input.path()).unwrap_or_else(|_| input.path().to_path_buf()),
        primary: a.primary,
        backend: format!(
            "{} {}{}",
            a.model_args.backend().name(),
            serde_json::to_string(&model.providers()).unwrap_or_default(),
            if a.model_args.trt_fp16 { " fp16" } else { "" }
        ),
        batch_size: a.batch_size as usize,
        probs: a.probs,
        min_confidence: a.min_confidence,
        errors: a
            .errors
            .as_ref()
            .map(|e| std::path::absolute(e).unwrap_or_else(|_| e.clone())),
    };
    let announce = format!(
        "labelling {} with {} ({}), {} decoding threads{}",
        input.path().display(),
        a.model_args.model.display(),
        a.model_args.backend().name(),
        jobs,
        a.shard.map_or(String::new(), |s| format!(", shard {s}"))
    );
    let bar = if a.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "[{bar:30}] {human_pos}/{human_len} images {per_sec} {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut observer = Bar {
        announce,
        bar,
        errors_file: a.errors.is_some(),
    };
    let req = Request {
        model: &model,
        input: input.clone(),
        out: out.clone(),
        options,
        shard: a.shard,
        jobs,
        resume: a.resume,
    };
    let outcome = maxl_label::run::run(&req, &mut observer)?;
    observer.bar.finish_and_clear();
    let c = outcome.job.counts;
    let keep = if a.gallery.is_some() {
        a.gallery_images as usize
    } else {
        0
    };
    let tally = report::tally(&out, &model, keep)?;
    if !a.quiet {
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
            a.shard.map_or(String::new(), |s| format!(", shard {s}")),
            if outcome.resumed { ", resumed" } else { "" }
        );
        print!("{}", report::summary(&model, &tally));
        if let Some(e) = &a.errors {
            println!("errors: {}", e.display());
        }
    }
    if let Some(dir) = &a.gallery {
        let name = out
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let sheets = gallery::write(&model, &input, &tally, keep, dir, &name)
            .with_context(|| format!("{}: gallery", dir.display()))?;
        if !a.quiet {
            println!(
                "gallery: {} ({} sheets)",
                gallery::index_path(dir).display(),
                sheets.len()
            );
        }
    }
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

fn run_merge(m: &MergeArgs) -> anyhow::Result<bool> {
    refuse_existing(&m.out, m.force)?;
    if let Some(e) = &m.errors {
        refuse_existing(e, m.force)?;
    }
    let merged = merge::merge(&m.out, &m.shards, m.errors.as_deref())?;
    println!(
        "merged {} shards: {} rows into {} ({} skipped, {} ignored; details in {})",
        merged.shards,
        merged.rows,
        m.out.display(),
        merged.counts.skipped,
        merged.counts.ignored,
        meta_path(&m.out).display()
    );
    Ok(true)
}

fn run_bench(b: &BenchArgs) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot find the maxl-label executable")?;
    let threads = b
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let manifest = maxl_core::manifest::Manifest::load(&b.model)?;
    let classes: Vec<String> = manifest.classes.iter().map(|c| c.name.clone()).collect();
    std::fs::create_dir_all(&b.dir)
        .with_context(|| format!("{}: cannot create", b.dir.display()))?;
    let cases = [Case::Jpeg256, Case::Png28];
    let mut data = Vec::new();
    for case in cases {
        eprintln!(
            "generating {} × {} in {}",
            b.images,
            case.name(),
            b.dir.display()
        );
        data.push((case, bench::generate(&b.dir, case, b.images, &classes)?));
    }
    let out = b.dir.join("bench-out.csv");
    let label = |input: &Path, backend: &str| {
        let mut c = Command::new(&exe);
        c.arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&out)
            .arg("--model")
            .arg(&b.model)
            .args(["--backend", backend, "--quiet", "--force"])
            .args(["--jobs", &threads.to_string()]);
        if backend.starts_with("ort") {
            c.args(["--intra-threads", &threads.to_string()]);
        }
        c
    };
    let python = |input: &Path| {
        let py = b.python.as_deref().unwrap_or_default();
        let mut words = py.split_whitespace();
        let mut c = Command::new(words.next().unwrap_or("python3"));
        c.args(words)
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&out)
            .arg("--model")
            .arg(&b.model)
            .args(["--threads", &threads.to_string()]);
        c
    };
    let mut pipelines: Vec<String> = b.backends.clone();
    if b.python.is_some() {
        pipelines.push("python".into());
    }
    let mut times = vec![vec![Vec::new(); pipelines.len()]; cases.len()];
    for r in 0..b.runs {
        for (ci, (case, dir)) in data.iter().enumerate() {
            for (pi, p) in pipelines.iter().enumerate() {
                let _ = std::fs::remove_file(&out);
                let m = if p == "python" {
                    bench::measure(&mut python(dir))?
                } else {
                    bench::measure(&mut label(dir, p))?
                };
                eprintln!(
                    "run {}/{}: {:<13} {:<8} {:>8.0} images/s, peak RSS {:.0} MiB",
                    r + 1,
                    b.runs,
                    case.name(),
                    p,
                    b.images as f64 / m.seconds,
                    m.peak_rss_mib
                );
                times[ci][pi].push(m);
            }
        }
    }
    let mut rows = Vec::new();
    for (ci, (case, _)) in data.iter().enumerate() {
        for (pi, p) in pipelines.iter().enumerate() {
            rows.push(Row::new(*case, p, b.images, times[ci][pi].clone()));
        }
    }
    // Memory at N and at rss_scale·N (ort-cpu, JPEGs).
    let big_n = b.images * b.rss_scale;
    eprintln!(
        "generating {big_n} × {} for the memory check",
        Case::Jpeg256.name()
    );
    let big = bench::generate(&b.dir, Case::Jpeg256, big_n, &classes)?;
    let _ = std::fs::remove_file(&out);
    let at_big = bench::measure(&mut label(&big, "ort-cpu"))?;
    let at_n = rows
        .iter()
        .find(|r| r.case == Case::Jpeg256.name() && r.pipeline == "ort-cpu")
        .map(|r| r.median_peak_rss_mib);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(meta_path(&out));

    println!(
        "maxl-label bench: {} images per dataset, medians of {} interleaved runs, {threads} threads, {} CPUs\n",
        b.images,
        b.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| input | pipeline | images/s | ÷ python | peak RSS MiB |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        let py = rows
            .iter()
            .find(|x| x.case == r.case && x.pipeline == "python")
            .map(|x| x.median_images_per_s);
        println!(
            "| {} | {} | {:.0} | {} | {:.0} |",
            r.case,
            r.pipeline,
            r.median_images_per_s,
            py.map_or("–".into(), |p| format!(
                "{:.2}×",
                r.median_images_per_s / p
            )),
            r.median_peak_rss_mib
        );
    }
    if let Some(n) = at_n {
        println!(
            "\npeak RSS, ort-cpu on JPEGs: {:.0} MiB at {} images, {:.0} MiB at {big_n} ({:.2}×)",
            n,
            b.images,
            at_big.peak_rss_mib,
            at_big.peak_rss_mib / n
        );
    }
    if let Some(j) = &b.json {
        let report = serde_json::json!({
            "images": b.images,
            "runs": b.runs,
            "threads": threads,
            "rows": rows,
            "rss_big": { "images": big_n, "peak_rss_mib": at_big.peak_rss_mib },
        });
        std::fs::write(j, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("{}: cannot write", j.display()))?;
    }
    Ok(true)
}
