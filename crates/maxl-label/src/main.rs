//! `maxl-label`: writes auxiliary sub-class labels for a folder of images as CSV.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use maxl_infer_cli::args::{ModelArgs, init_logging};
use tracing::info;

/// Label every image in INPUT/<class>/ with the auxiliary sub-class MAXL's label generator
/// assigns it (one of its class's ψ slots), and write a CSV
/// `path,class,class_probability,aux_slot,aux_label,aux_probability` (the columns of
/// `maxl-infer predict`; class_probability is the primary head's probability of the folder's class). Unreadable images and folders that are not
/// classes of the model are reported and skipped; the exit status is 1 when any were.
#[derive(Parser)]
#[command(name = "maxl-label", version)]
struct Cli {
    /// Folder of images, one sub-folder per primary class (folder-safe class name or display name).
    #[arg(long, value_name = "DIR")]
    input: PathBuf,
    /// CSV to write (replaced only when labelling finishes).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    model_args: ModelArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Only errors on stderr; no progress bar or summary.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet { "error" } else { "info" };
    init_logging(level);
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("maxl-label: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false): finished, but some items were skipped.
fn run(cli: &Cli) -> anyhow::Result<bool> {
    let backend = cli.model_args.backend();
    let model = cli.model_args.load()?;
    if !model.has_generator() {
        anyhow::bail!(
            "{}: the model has no label generator (trained with method `{}`)",
            cli.model_args.model.display(),
            model.manifest().training.method
        );
    }
    let items = maxl_label::scan(&cli.input)?;
    if items.is_empty() {
        anyhow::bail!(
            "{}: no PNG or JPEG images in class sub-folders",
            cli.input.display()
        );
    }
    info!(
        "labelling {} images from {} with {} ({})",
        items.len(),
        cli.input.display(),
        cli.model_args.model.display(),
        backend.name()
    );
    let bar = if cli.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(items.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} images {elapsed_precise} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let report = maxl_label::label(&model, &items, cli.batch_size, &mut |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    for s in &report.skipped {
        eprintln!("maxl-label: skipped: {}", s.reason);
    }
    let tmp = PathBuf::from(format!("{}.tmp", cli.out.display()));
    std::fs::write(&tmp, maxl_label::to_csv(&model, &report))
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, &cli.out)
        .with_context(|| format!("{}: cannot write", cli.out.display()))?;
    if !cli.quiet {
        println!(
            "labelled {} images into {} ({} skipped)",
            report.labelled.len(),
            cli.out.display(),
            report.skipped.len()
        );
        print!("{}", maxl_label::summary(&model, &report));
    }
    if !report.skipped.is_empty() {
        eprintln!(
            "maxl-label: {} of {} images were skipped",
            report.skipped.len(),
            items.len()
        );
    }
    Ok(report.skipped.is_empty())
}
