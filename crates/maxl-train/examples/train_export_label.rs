//! The whole toolchain from one program: train a short MAXL run through the `maxl_train`
//! library, export it to ONNX, load the export with `maxl_infer`, and label a folder of images
//! with its label generator through `maxl_label`.
//!
//! ```text
//! cargo run --release -p maxl-train --example train_export_label -- [FASHION_MNIST_DIR] [WORK_DIR]
//! ```
//!
//! FASHION_MNIST_DIR defaults to the Debian package's `/usr/share/datasets/fashion-mnist`;
//! WORK_DIR (default `train-export-label`) receives `run/`, `model/`, `images/` and
//! `labels.csv`. It trains on a 1,000-image slice for one epoch: a minute on two cores.

use std::error::Error;
use std::path::PathBuf;

use maxl_core::TrainConfig;
use maxl_core::config::{MetaGradientMode, Schedule};
use maxl_infer::{Backend, MaxlModel};
use maxl_label::LabelRequest;
use maxl_train::RunOptions;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let data = args
        .next()
        .unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let work = args.next().unwrap_or_else(|| "train-export-label".into());

    // 1. Train: MAXL, fused schedule, jvp meta-gradient, on a class-balanced slice.
    let mut config = TrainConfig::default();
    config.dataset.path = Some(data.clone());
    config.dataset.train_limit = Some(1000);
    config.dataset.test_limit = Some(500);
    config.epochs = 1;
    config.schedule = Schedule::Fused;
    config.multitask_optimizer.momentum = 0.0; // the fused schedule needs plain SGD for θ1
    config.meta_gradient = MetaGradientMode::Jvp;
    let run = maxl_train::train(&config, &work.join("run"), &RunOptions::default())?;
    let accuracy = run.last.as_ref().map_or(f64::NAN, |m| m.test_acc);
    println!("trained: primary test accuracy {:.1}%", 100.0 * accuracy);

    // 2. Export both networks with their manifest.
    let models = work.join("model");
    run.export(&models, Default::default())?;
    println!("exported to {}", models.display());

    // 3. Load the export (pure-Rust tract here; ONNX Runtime with Backend::OrtCpu).
    let model = MaxlModel::builder(&models)
        .with_backend(Backend::Tract)
        .build()?;

    // 4. A folder of images to label: ten test images per class, as PNGs in class folders.
    let images = work.join("images");
    let test = maxl_data::idx::fashion_mnist(Some(&data))?.test;
    maxl_data::dump::write_image_folder(&test, &images, 10)?;

    // 5. Label it: every image gets one of its class's auxiliary slots.
    let out = work.join("labels.csv");
    let mut request = LabelRequest::new(&images, &out);
    request.force = true;
    let labelled = maxl_label::label(&model, &request, &mut ())?;
    let counts = &labelled.job.counts;
    println!(
        "labelled {} images ({} skipped) into {}",
        counts.labelled,
        counts.skipped,
        out.display()
    );
    Ok(())
}
