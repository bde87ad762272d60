//! `maxl-label bench`: images per second end to end — the real binary, as a user runs it, in its
//! own process — on N generated 256×256 RGB JPEGs and N 28×28 grey PNGs, for each backend, and
//! (with `--python CMD`) the same job through a Python pipeline in the same run, interleaved,
//! so the ratios compare like with like. Peak RSS (the child's `ru_maxrss`) is measured at N
//! and at `--rss-scale`·N images.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Args;
use maxl_cli::bench::{self, median};
use maxl_label::run::meta_path;
use maxl_label::synthetic::{self, Case};
use serde::Serialize;

#[derive(Args)]
pub struct BenchArgs {
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

/// The cases, in the order the tables list them.
const CASES: [Case; 2] = [Case::Jpeg256, Case::Png28];

/// Wall time and peak resident memory of one child process.
#[derive(Debug, Clone, Copy, Serialize)]
struct Measured {
    seconds: f64,
    peak_rss_mib: f64,
}

/// Runs `cmd` to completion in its own process, measuring it; a failure is an error with its
/// stderr's last line.
fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    let m = bench::run_process(cmd)?;
    Ok(Measured {
        seconds: m.seconds,
        peak_rss_mib: m.peak_rss_mib(),
    })
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
struct Row {
    case: String,
    pipeline: String,
    images: usize,
    runs: Vec<Measured>,
    median_images_per_s: f64,
    median_peak_rss_mib: f64,
}

impl Row {
    fn new(case: Case, pipeline: &str, images: usize, runs: Vec<Measured>) -> Self {
        Self {
            case: case.name().into(),
            pipeline: pipeline.into(),
            images,
            median_images_per_s: median(
                &runs
                    .iter()
                    .map(|m| images as f64 / m.seconds)
                    .collect::<Vec<_>>(),
            ),
            median_peak_rss_mib: median(&runs.iter().map(|m| m.peak_rss_mib).collect::<Vec<_>>()),
            runs,
        }
    }
}

/// Peak RSS at rss_scale·N images (ort-cpu, JPEGs).
struct Memory {
    images: usize,
    at_big: Measured,
}

/// One benchmark: its arguments and what every child shares.
struct Bench<'a> {
    args: &'a BenchArgs,
    /// This executable, run as `maxl-label` for each backend.
    exe: PathBuf,
    threads: usize,
    classes: Vec<String>,
    /// The CSV every child writes (and the next one replaces).
    out: PathBuf,
}

/// Runs the benchmark and prints its report.
pub fn run(b: &BenchArgs) -> anyhow::Result<bool> {
    let bench = Bench::new(b)?;
    let data = bench.datasets()?;
    let rows = bench.time(&data)?;
    let memory = bench.memory()?;
    bench.print(&rows, &memory);
    if let Some(j) = &b.json {
        bench.write_json(j, &rows, &memory)?;
    }
    Ok(true)
}

impl<'a> Bench<'a> {
    fn new(args: &'a BenchArgs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the maxl-label executable")?;
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let manifest = maxl_core::manifest::Manifest::load(&args.model)?;
        let classes = manifest.classes.iter().map(|c| c.name.clone()).collect();
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("{}: cannot create", args.dir.display()))?;
        Ok(Self {
            args,
            exe,
            threads,
            classes,
            out: args.dir.join("bench-out.csv"),
        })
    }

    /// Every case's dataset of N images (generated once, then reused).
    fn datasets(&self) -> anyhow::Result<Vec<(Case, PathBuf)>> {
        let b = self.args;
        let mut data = Vec::new();
        for case in CASES {
            eprintln!(
                "generating {} × {} in {}",
                b.images,
                case.name(),
                b.dir.display()
            );
            data.push((
                case,
                synthetic::generate(&b.dir, case, b.images, &self.classes)?,
            ));
        }
        Ok(data)
    }

    /// `maxl-label` labelling `input` with `backend`.
    fn label(&self, input: &Path, backend: &str) -> Command {
        let b = self.args;
        let mut c = Command::new(&self.exe);
        c.arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&self.out)
            .arg("--model")
            .arg(&b.model)
            .args(["--backend", backend, "--quiet", "--force"])
            .args(["--jobs", &self.threads.to_string()]);
        if backend.starts_with("ort") {
            c.args(["--intra-threads", &self.threads.to_string()]);
        }
        c
    }

    /// The Python pipeline labelling `input`.
    fn python(&self, input: &Path) -> Command {
        let b = self.args;
        let py = b.python.as_deref().unwrap_or_default();
        let mut words = py.split_whitespace();
        let mut c = Command::new(words.next().unwrap_or("python3"));
        c.args(words)
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&self.out)
            .arg("--model")
            .arg(&b.model)
            .args(["--threads", &self.threads.to_string()]);
        c
    }

    /// Times every pipeline on every dataset, --runs times interleaved; one row per pair.
    fn time(&self, data: &[(Case, PathBuf)]) -> anyhow::Result<Vec<Row>> {
        let b = self.args;
        let mut pipelines: Vec<String> = b.backends.clone();
        if b.python.is_some() {
            pipelines.push("python".into());
        }
        // One case per (dataset, pipeline), run --runs times interleaved by the harness.
        let cases: Vec<(&(Case, PathBuf), &String)> = data
            .iter()
            .flat_map(|d| pipelines.iter().map(move |p| (d, p)))
            .collect();
        let done = std::cell::Cell::new(0);
        let times = bench::interleave(
            &cases,
            b.runs,
            |&((case, dir), p)| {
                let _ = std::fs::remove_file(&self.out);
                let m = if p == "python" {
                    measure(&mut self.python(dir))?
                } else {
                    measure(&mut self.label(dir, p))?
                };
                eprintln!(
                    "run {}/{}: {:<13} {:<8} {:>8.0} images/s, peak RSS {:.0} MiB",
                    done.get() / cases.len() + 1,
                    b.runs,
                    case.name(),
                    p,
                    b.images as f64 / m.seconds,
                    m.peak_rss_mib
                );
                Ok(m)
            },
            || done.set(done.get() + 1),
        )?;
        let rows = cases
            .iter()
            .zip(times)
            .map(|(((case, _), p), runs)| Row::new(*case, p, b.images, runs))
            .collect();
        Ok(rows)
    }

    /// Peak RSS at rss_scale·N images (ort-cpu, JPEGs); the output files removed after.
    fn memory(&self) -> anyhow::Result<Memory> {
        let b = self.args;
        let images = b.images * b.rss_scale;
        eprintln!(
            "generating {images} × {} for the memory check",
            Case::Jpeg256.name()
        );
        let big = synthetic::generate(&b.dir, Case::Jpeg256, images, &self.classes)?;
        let _ = std::fs::remove_file(&self.out);
        let at_big = measure(&mut self.label(&big, "ort-cpu"))?;
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(meta_path(&self.out));
        Ok(Memory { images, at_big })
    }

    /// The report: a Markdown table and the memory line.
    fn print(&self, rows: &[Row], memory: &Memory) {
        let b = self.args;
        println!(
            "maxl-label bench: {} images per dataset, medians of {} interleaved runs, {} threads, {} CPUs\n",
            b.images,
            b.runs,
            self.threads,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!("| input | pipeline | images/s | ÷ python | peak RSS MiB |");
        println!("|---|---|---:|---:|---:|");
        for r in rows {
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
        let at_n = rows
            .iter()
            .find(|r| r.case == Case::Jpeg256.name() && r.pipeline == "ort-cpu")
            .map(|r| r.median_peak_rss_mib);
        if let Some(n) = at_n {
            println!(
                "\npeak RSS, ort-cpu on JPEGs: {:.0} MiB at {} images, {:.0} MiB at {} ({:.2}×)",
                n,
                b.images,
                memory.at_big.peak_rss_mib,
                memory.images,
                memory.at_big.peak_rss_mib / n
            );
        }
    }

    /// The report as JSON.
    fn write_json(&self, path: &Path, rows: &[Row], memory: &Memory) -> anyhow::Result<()> {
        let b = self.args;
        let report = serde_json::json!({
            "images": b.images,
            "runs": b.runs,
            "threads": self.threads,
            "rows": rows,
            "rss_big": { "images": memory.images, "peak_rss_mib": memory.at_big.peak_rss_mib },
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("{}: cannot write", path.display()))
    }
}
