//! `maxl-label bench`: images per second end to end — the real binary, as a user runs it, in its
//! own process — on N generated 256×256 RGB JPEGs and N 28×28 grey PNGs, for each backend, and
//! (with `--python CMD`) the same job through a Python pipeline in the same run, interleaved,
//! so the ratios compare like with like. Peak RSS (the child's `ru_maxrss`) is measured at N
//! and at `--rss-scale`·N images.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::LabelError;

/// A generated dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Case {
    /// 256×256 RGB JPEGs (quality 90): photo-sized inputs.
    Jpeg256,
    /// 28×28 grey PNGs: Fashion-MNIST-sized inputs.
    Png28,
}

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Jpeg256 => "256x256 JPEG",
            Case::Png28 => "28x28 PNG",
        }
    }

    fn dir_name(self, n: usize) -> String {
        match self {
            Case::Jpeg256 => format!("jpeg256-{n}"),
            Case::Png28 => format!("png28-{n}"),
        }
    }
}

/// A photo-like picture: a smooth two-colour gradient, a few soft ellipses, sensor-like noise.
fn picture(seed: u64, side: u32) -> RgbImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let c0: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    let c1: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    let blobs: Vec<(f32, f32, f32, f32, [f32; 3])> = (0..4)
        .map(|_| {
            (
                rng.random_range(0.0..1.0),
                rng.random_range(0.0..1.0),
                rng.random_range(0.08..0.3),
                rng.random_range(0.08..0.3),
                std::array::from_fn(|_| rng.random_range(0.0..255.0)),
            )
        })
        .collect();
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let (ca, sa) = (angle.cos(), angle.sin());
    let s = side as f32;
    RgbImage::from_fn(side, side, |x, y| {
        let (u, v) = (x as f32 / s, y as f32 / s);
        let t = ((u - 0.5) * ca + (v - 0.5) * sa + 0.5).clamp(0.0, 1.0);
        let mut p: [f32; 3] = std::array::from_fn(|c| c0[c] * (1.0 - t) + c1[c] * t);
        for (bx, by, rx, ry, col) in &blobs {
            let d = ((u - bx) / rx).powi(2) + ((v - by) / ry).powi(2);
            let w = (-d * 2.0).exp();
            for c in 0..3 {
                p[c] = p[c] * (1.0 - w) + col[c] * w;
            }
        }
        let noise = rng.random_range(-6.0..6.0);
        Rgb(std::array::from_fn(|c| {
            (p[c] + noise).clamp(0.0, 255.0) as u8
        }))
    })
}

/// Writes `n` images of `case` into `dir/<class>/` (classes round-robin), unless a previous
/// call finished doing so. Returns the folder.
pub fn generate(
    dir: &Path,
    case: Case,
    n: usize,
    classes: &[String],
) -> Result<PathBuf, LabelError> {
    let root = dir.join(case.dir_name(n));
    let done = root.join(".complete");
    if done.exists() {
        return Ok(root);
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LabelError::Io { path: p, source }
    };
    for c in classes {
        std::fs::create_dir_all(root.join(c)).map_err(io(&root.join(c)))?;
    }
    use rayon::prelude::*;
    (0..n).into_par_iter().try_for_each(|i| {
        let class = &classes[i % classes.len()];
        let (path, bytes) = match case {
            Case::Jpeg256 => {
                let img = picture(i as u64, 256);
                let mut out = std::io::Cursor::new(Vec::new());
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                    .encode_image(&img)
                    .map_err(|e| LabelError::Invalid(format!("JPEG encoding: {e}")))?;
                (
                    root.join(class).join(format!("{i:07}.jpg")),
                    out.into_inner(),
                )
            }
            Case::Png28 => {
                let img = image::DynamicImage::ImageRgb8(picture(i as u64, 28)).to_luma8();
                let mut out = std::io::Cursor::new(Vec::new());
                img.write_to(&mut out, image::ImageFormat::Png)
                    .map_err(|e| LabelError::Invalid(format!("PNG encoding: {e}")))?;
                (
                    root.join(class).join(format!("{i:07}.png")),
                    out.into_inner(),
                )
            }
        };
        std::fs::write(&path, bytes).map_err(io(&path))
    })?;
    std::fs::write(&done, b"").map_err(io(&done))?;
    Ok(root)
}

/// Wall time and peak resident memory of one child process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measured {
    pub seconds: f64,
    pub peak_rss_mib: f64,
}

/// Runs `cmd` to completion, measuring it; a failure is an error with its stderr's last line.
pub fn measure(cmd: &mut Command) -> Result<Measured, LabelError> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabelError::Invalid(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(LabelError::Invalid(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            err.lines().last().unwrap_or("(no output)")
        )));
    }
    Ok(Measured {
        seconds,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: String,
    pub pipeline: String,
    pub images: usize,
    pub runs: Vec<Measured>,
    pub median_images_per_s: f64,
    pub median_peak_rss_mib: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    maxl_infer_cli::bench::percentile(&v, 0.5)
}

impl Row {
    pub fn new(case: Case, pipeline: &str, images: usize, runs: Vec<Measured>) -> Self {
        Self {
            case: case.name().into(),
            pipeline: pipeline.into(),
            images,
            median_images_per_s: median(runs.iter().map(|m| images as f64 / m.seconds).collect()),
            median_peak_rss_mib: median(runs.iter().map(|m| m.peak_rss_mib).collect()),
            runs,
        }
    }
}
