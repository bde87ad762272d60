//! `maxl-infer predict`: images from files, in batches, to CSV or JSON lines. Images are decoded
//! in parallel; a bad image is reported on stderr, counted and skipped, and the rest go on.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use maxl_infer::{AuxFor, Classify, InferError, MaxlModel};

use crate::args::ModelArgs;
use crate::record::{Record, csv_header};

/// The arguments of `maxl-infer predict`.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output format. CSV columns: path,class,class_probability,aux_slot,aux_label,aux_probability
    /// (and aux_weight for a maxl-weighted model); jsonl adds top_k.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Classes listed in jsonl's top_k.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub top_k: u16,
    /// Images per model call.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
    /// Image files (PNG or JPEG); `-` reads paths from standard input, one per line.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header and one line per image.
    Csv,
    /// One JSON object per line, with `top_k`.
    Jsonl,
}

#[derive(Debug, Clone, Copy)]
pub struct PredictOptions {
    pub format: Format,
    pub top_k: usize,
    pub batch_size: usize,
}

/// How a run went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub written: usize,
    pub skipped: usize,
}

/// Preprocesses `paths` on up to `jobs` threads, in order.
fn preprocess_all(
    model: &MaxlModel,
    paths: &[PathBuf],
    jobs: usize,
) -> Vec<Result<Vec<f32>, InferError>> {
    let mut out: Vec<Option<Result<Vec<f32>, InferError>>> =
        (0..paths.len()).map(|_| None).collect();
    let per = paths.len().div_ceil(jobs.max(1)).max(1);
    std::thread::scope(|s| {
        for (slot, chunk) in out.chunks_mut(per).zip(paths.chunks(per)) {
            s.spawn(move || {
                for (o, p) in slot.iter_mut().zip(chunk) {
                    *o = Some(model.preprocess_file(p));
                }
            });
        }
    });
    out.into_iter()
        .map(|o| o.expect("every image preprocessed"))
        .collect()
}

/// Classifies `paths` in batches and writes one record per readable image to `out` (flushed per
/// batch). `progress` is called with the number of images done.
pub fn predict(
    model: &MaxlModel,
    paths: &[PathBuf],
    opts: PredictOptions,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<Summary> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let classify = Classify {
        top_k: opts.top_k,
        aux: AuxFor::Predicted,
    };
    let mut summary = Summary::default();
    if opts.format == Format::Csv {
        out.write_all(csv_header(model.has_sample_weight()).as_bytes())?;
    }
    let mut done = 0;
    for chunk in paths.chunks(opts.batch_size.max(1)) {
        let mut good = Vec::new();
        let mut pixels = Vec::new();
        for (path, px) in chunk.iter().zip(preprocess_all(model, chunk, jobs)) {
            let Some(name) = path.to_str() else {
                eprintln!(
                    "maxl-infer: skipped: {}: the path is not valid UTF-8, so it cannot be written to the output",
                    path.display()
                );
                summary.skipped += 1;
                continue;
            };
            match px {
                Ok(px) => {
                    good.push(name.to_string());
                    pixels.push(px);
                }
                Err(e) => {
                    eprintln!("maxl-infer: skipped: {e}");
                    summary.skipped += 1;
                }
            }
        }
        if !pixels.is_empty() {
            let batch = model.stack(&pixels)?;
            let results = model.classify(batch.view(), &classify)?;
            let mut text = String::new();
            for (path, c) in good.into_iter().zip(&results) {
                let r = Record::new(model, Some(path), c);
                match opts.format {
                    Format::Csv => text.push_str(&r.csv_line(model.has_sample_weight())),
                    Format::Jsonl => {
                        text.push_str(&serde_json::to_string(&r.with_top_k(c))?);
                        text.push('\n');
                    }
                }
                summary.written += 1;
            }
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        done += chunk.len();
        progress(done);
    }
    Ok(summary)
}

/// Runs `maxl-infer predict`: the records on stdout, a progress bar on stderr when it is a
/// terminal. `Ok(false)` when some images were skipped (the others are written).
pub fn run(args: &PredictArgs) -> anyhow::Result<bool> {
    let m = args.model.load()?;
    let paths = image_paths(&args.images)?;
    let bar = maxl_cli::progress::bar(
        paths.len() as u64,
        "[{bar:30}] {pos}/{len} images {per_sec} eta {eta}",
        false,
    );
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = predict(
        &m,
        &paths,
        PredictOptions {
            format: args.format,
            top_k: args.top_k as usize,
            batch_size: args.batch_size as usize,
        },
        &mut out,
        &mut |done| bar.set_position(done as u64),
    )?;
    out.flush()?;
    bar.finish_and_clear();
    if summary.skipped > 0 {
        eprintln!(
            "maxl-infer: {} of {} images were skipped",
            summary.skipped,
            paths.len()
        );
    }
    Ok(summary.skipped == 0)
}

/// Image paths from the arguments, `-` replaced by standard input's lines.
fn image_paths(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        if a.as_os_str() == "-" {
            for line in std::io::stdin().lock().split(b'\n') {
                let mut line = line.context("standard input")?;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if !line.is_empty() {
                    out.push(path_from_bytes(line));
                }
            }
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

#[cfg(unix)]
fn path_from_bytes(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

#[cfg(not(unix))]
fn path_from_bytes(b: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&b).into_owned())
}
