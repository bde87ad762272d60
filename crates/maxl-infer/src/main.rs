//! `maxl-infer`: runs exported MAXL models.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use maxl_data::images::{ImageShape, load_image};
use maxl_infer::ModelArgs;
use ndarray::Array4;

#[derive(Parser)]
#[command(
    name = "maxl-infer",
    version,
    about = "Run MAXL's exported primary head and label generator with ONNX Runtime or tract"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images with the primary head: prints `path,class,probability` per image.
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        /// Image files (PNG or JPEG), converted and resized to the model's input.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Load the ONNX Runtime library and report which one was found and how.
    Runtime {
        /// Path to libonnxruntime.so; overrides ORT_DYLIB_PATH and the library recorded by scripts/setup.sh.
        #[arg(long = "ort-lib", value_name = "FILE")]
        ort_lib: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maxl-infer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Predict { model, images } => {
            let mut m = model.load()?;
            let i = &m.manifest.input;
            let shape = ImageShape {
                channels: i.channels,
                height: i.height,
                width: i.width,
            };
            let mut failed = 0;
            println!("path,class,probability");
            for path in &images {
                let pixels = match load_image(path, shape) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("maxl-infer: skipped: {e}");
                        failed += 1;
                        continue;
                    }
                };
                let x = Array4::from_shape_vec(
                    (1, shape.channels, shape.height, shape.width),
                    pixels.iter().map(|&v| v as f32 / 255.0).collect(),
                )
                .expect("decoded to the model's shape");
                let p = m.predict(x.view())?;
                let (k, prob) = p
                    .primary_probs
                    .row(0)
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (k, &v)| if v > b.1 { (k, v) } else { b });
                println!(
                    "{},{},{prob:.6}",
                    path.display(),
                    m.manifest.classes[k].name
                );
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} images could not be read", images.len());
            }
            Ok(())
        }
        Command::Runtime { ort_lib } => {
            let rt = maxl_infer::OrtRuntime::load(ort_lib.as_deref())?;
            println!(
                "onnxruntime: {} ({})",
                rt.library.path.display(),
                rt.library.source
            );
            println!("build: {}", rt.build_info);
            Ok(())
        }
    }
}
