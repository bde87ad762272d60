//! Decoded batches per second of the streaming loader: an image folder's files decoded a batch
//! at a time on a pool of worker threads, through the same preprocessing and batch assembly as
//! training (here the evaluation transform: shorter side resized to `resize`, the central
//! `size` × `size` cropped, normalised with ImageNet's mean and std). `scripts/bench_loader.py`
//! runs it against torchvision's `ImageFolder` + `DataLoader`.
//!
//! ```sh
//! cargo run --release -p maxl-data --example bench_loader -- DIR [--workers 2] [--batch 64]
//!     [--size 224] [--resize 256] [--epochs 2]
//! ```
//!
//! Prints one JSON line: batches, images, seconds, batches and images per second (the first
//! epoch, which warms the page cache, is not timed).

use std::path::PathBuf;
use std::time::Instant;

use maxl_data::batch::{Normalize, Placement, assemble_sized};
use maxl_data::folder::{ImageShape, Resize, image_folder_streamed};

struct Args {
    dir: PathBuf,
    workers: usize,
    batch: usize,
    size: usize,
    resize: usize,
    epochs: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::new(),
        workers: 2,
        batch: 64,
        size: 224,
        resize: 256,
        epochs: 2,
    };
    let mut it = std::env::args().skip(1);
    let mut dir = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--workers" => a.workers = value("--workers")?,
            "--batch" => a.batch = value("--batch")?,
            "--size" => a.size = value("--size")?,
            "--resize" => a.resize = value("--resize")?,
            "--epochs" => a.epochs = value("--epochs")?.max(2),
            _ if !arg.starts_with('-') && dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument `{arg}`")),
        }
    }
    a.dir = dir.ok_or(
        "usage: bench_loader DIR [--workers N] [--batch N] [--size N] [--resize N] [--epochs N]",
    )?;
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let shape = ImageShape {
        channels: 3,
        height: a.size,
        width: a.size,
        resize: Resize::ShorterSide(a.resize),
    };
    let ds = image_folder_streamed(&a.dir, None, shape, 0.0, 0)?.train;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.workers)
        .build()?;
    let norm = Normalize::per_channel(&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225]);
    let order: Vec<usize> = (0..ds.len()).collect();
    let (mut batches, mut images, mut checksum) = (0usize, 0usize, 0f64);
    let mut start = Instant::now();
    for epoch in 0..a.epochs {
        if epoch == 1 {
            (batches, images, start) = (0, 0, Instant::now());
        }
        for idx in order.chunks(a.batch) {
            let floats = pool.install(|| -> Result<Vec<f32>, maxl_data::DataError> {
                let loaded = ds.load(idx)?;
                let local: Vec<usize> = (0..idx.len()).collect();
                let center = vec![Placement::default(); idx.len()];
                Ok(assemble_sized(
                    &loaded,
                    &local,
                    norm,
                    &center,
                    (a.size, a.size),
                ))
            })?;
            checksum += floats[0] as f64;
            batches += 1;
            images += idx.len();
        }
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "{{\"impl\": \"maxl\", \"workers\": {}, \"batches\": {batches}, \"images\": {images}, \"seconds\": {s:.4}, \"batches_per_s\": {:.3}, \"images_per_s\": {:.1}, \"checksum\": {checksum:.3}}}",
        a.workers,
        batches as f64 / s,
        images as f64 / s
    );
    Ok(())
}
