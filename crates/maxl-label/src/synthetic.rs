//! Generated datasets: N photo-like 256×256 RGB JPEGs or N 28×28 grey PNGs in class folders,
//! deterministic for a given N (image `i` is drawn from seed `i`). `maxl-label bench` times
//! labelling them; an example or a test labels a few without any real data. [`model`] writes an
//! untrained model (a `maxl-weighted` one with per-image weights, if asked) to label them with.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};

use maxl_core::manifest::Manifest;

use crate::LabelError;

/// Writes an untrained model into `dir` with the classes, ψ and input of `like` (a tiny network,
/// random weights from `seed`): `maxl.yaml`, `primary.onnx` and `label_generator.onnx`, the
/// generator with the weight head and `sample_weight` output of a `maxl-weighted` export when
/// `weighted`. Returns `dir`. Its labels mean nothing; they exercise every code path.
pub fn model(
    dir: &Path,
    like: &Manifest,
    weighted: bool,
    seed: u64,
) -> Result<PathBuf, LabelError> {
    maxl_onnx::synthetic::export(dir, like, weighted, seed)
        .map_err(|message| LabelError::Invalid(format!("synthetic model: {message}")))?;
    Ok(dir.to_path_buf())
}

/// A kind of generated dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// 256×256 RGB JPEGs (quality 90): photo-sized inputs.
    Jpeg256,
    /// 28×28 grey PNGs: Fashion-MNIST-sized inputs.
    Png28,
}

impl Case {
    /// How reports name it: `256x256 JPEG`, `28x28 PNG`.
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

/// Writes `n` images of `case` into `<class>/` folders (classes round-robin) of a folder in
/// `dir` named for the case and `n` (`jpeg256-2000`, `png28-20`), unless a previous call
/// finished doing so. Returns that folder. An error if `classes` is empty.
pub fn generate(
    dir: &Path,
    case: Case,
    n: usize,
    classes: &[String],
) -> Result<PathBuf, LabelError> {
    if classes.is_empty() {
        return Err(LabelError::Invalid(
            "a generated dataset needs at least one class".into(),
        ));
    }
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
