//! maxl's preprocessing against torchvision's evaluation transform, run by
//! `scripts/torchvision_preprocess.py` in the venv: `Resize(S) → CenterCrop((H, W))` and the
//! stretch `Resize((H, W))`, on non-square PNGs and EXIF-rotated JPEGs.
//!
//! Both sides resample with PIL's bilinear filter, one axis at a time in Pillow's order, each
//! pass rounding to 8 bits, but Pillow keeps 22-bit coefficients and fast_image_resize at most
//! 15: that moves up to 2 pixels in a hundred by one grey level (a value within a few
//! hundredths of a half rounds the other way). JPEGs also differ by decoder: Pillow decodes
//! with libjpeg-turbo, maxl with zune-jpeg, whose IDCTs round differently; a JPEG is therefore
//! compared twice: decoded by maxl and handed to torchvision as a PNG (the resize and crop
//! alone), and as the JPEG itself (the decoders' difference added). Both stay within one level.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use maxl_preprocess::{DecodeLimits, ImageShape, Resize, decode, preprocess};

/// The venv's Python (`MAXL_PYTHON`, exported by scripts/lib.sh), else `python3` on PATH.
fn python() -> PathBuf {
    std::env::var_os("MAXL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// How `scripts/torchvision_preprocess.py` names a shape: `C,H,W,RESIZE`.
fn shape_arg(s: ImageShape) -> String {
    let resize = match s.resize {
        Resize::Stretch => "stretch".to_string(),
        Resize::ShorterSide(side) => format!("shorter-side-{side}"),
    };
    format!("{},{},{},{resize}", s.channels, s.height, s.width)
}

/// torchvision's uint8 C×H×W tensors of every image under every shape, in one run of the
/// script (torch takes seconds to import): `[shape][image]`.
fn torchvision(shapes: &[ImageShape], images: &[PathBuf], dir: &Path) -> Vec<Vec<Vec<u8>>> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/torchvision_preprocess.py");
    let out = dir.join("reference.u8");
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg("--out").arg(&out);
    for &s in shapes {
        cmd.args(["--shape", &shape_arg(s)]);
    }
    let r = cmd.args(images).output().unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run the tests through scripts/test.sh or set MAXL_PYTHON)",
            python().display()
        )
    });
    assert!(
        r.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&r.stderr)
    );
    let bytes = std::fs::read(out).unwrap();
    let mut rest = bytes.as_slice();
    let all = shapes
        .iter()
        .map(|s| {
            images
                .iter()
                .map(|_| {
                    let (one, tail) = rest.split_at(s.len());
                    rest = tail;
                    one.to_vec()
                })
                .collect()
        })
        .collect();
    assert!(
        rest.is_empty(),
        "{} bytes more than the shapes hold",
        rest.len()
    );
    all
}

/// The largest and the mean absolute difference, in grey levels.
fn difference(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let d: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    let mean = d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64;
    (d.iter().copied().max().unwrap_or(0), mean)
}

/// A photo-like RGB image: smooth gradients, a hard-edged disc, a fine sinusoidal texture and
/// seeded noise, so that every frequency the filter passes or removes is present.
fn photo(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(0x9E37_79B9) | 1;
    RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 23) as f32 - 11.0;
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let d = ((fx - 0.4).powi(2) + (fy - 0.55).powi(2)).sqrt();
        let disc = if d < 0.22 { 90.0 } else { 0.0 };
        let texture = 40.0 * ((x as f32 * 0.9).sin() * (y as f32 * 0.55).cos());
        let v = |base: f32| (base + noise).clamp(0.0, 255.0) as u8;
        image::Rgb([
            v(40.0 + 150.0 * fx + disc + texture),
            v(200.0 - 120.0 * fy + texture * 0.5),
            v(60.0 + disc * 1.5 + 60.0 * (fx * fy)),
        ])
    })
}

fn write_png(img: &RgbImage, path: &Path) {
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

#[path = "../../../tests/common/jpeg.rs"]
mod jpeg;

/// A quality-90 JPEG of `img` whose EXIF tag says to rotate it by `orientation`.
fn write_jpeg(img: &RgbImage, orientation: u8, path: &Path) {
    std::fs::write(path, jpeg::exif_jpeg(img, orientation, 90)).unwrap();
}

fn shape(channels: usize, height: usize, width: usize, resize: Resize) -> ImageShape {
    ImageShape {
        channels,
        height,
        width,
        resize,
    }
}

/// maxl's pixels for `file` against `expected`: (max, mean) difference, printed.
fn compare(file: &Path, shape: ImageShape, expected: &[u8], what: &str) -> (u8, f64) {
    let bytes = std::fs::read(file).unwrap();
    let ours = preprocess(&bytes, shape, &DecodeLimits::default()).unwrap();
    let (max, mean) = difference(&ours, expected);
    eprintln!(
        "{}, {} ({what}): max {max}, mean {mean:.4}",
        shape_arg(shape),
        file.file_name().unwrap().to_string_lossy()
    );
    (max, mean)
}

/// Shapes with odd and even crop margins on both axes (a margin of 4k + 1 rounds down, 4k + 3
/// up), landscape and portrait crops, grey and RGB, a crop larger than the resized image
/// (padded), and stretches that enlarge and that reduce.
fn shapes() -> Vec<ImageShape> {
    vec![
        shape(3, 50, 60, Resize::ShorterSide(71)),
        shape(3, 64, 48, Resize::ShorterSide(73)),
        shape(1, 56, 56, Resize::ShorterSide(64)),
        shape(3, 40, 40, Resize::ShorterSide(40)),
        shape(3, 48, 44, Resize::ShorterSide(36)),
        shape(3, 150, 120, Resize::Stretch),
        shape(3, 36, 52, Resize::Stretch),
    ]
}

/// A stretch to at most half a JPEG's size on both axes reads it through the DCT-reduced
/// decode (for speed; a shorter-side resize never does), which is a different filter from
/// torchvision's: on these textured images it moves pixels by tens of grey levels.
fn reads_reduced(shape: ImageShape, (w, h): (u32, u32)) -> bool {
    let side = shape.width.max(shape.height) as u32;
    shape.resize == Resize::Stretch && w.div_ceil(2) >= side && h.div_ceil(2) >= side
}

#[test]
fn pngs_match_torchvision_within_one_grey_level() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = [(301, 203, 1), (190, 333, 2), (97, 96, 3)]
        .into_iter()
        .map(|(w, h, seed)| {
            let p = tmp.path().join(format!("{w}x{h}.png"));
            write_png(&photo(w, h, seed), &p);
            p
        })
        .collect();
    let shapes = shapes();
    let reference = torchvision(&shapes, &files, tmp.path());
    for (&shape, per_file) in shapes.iter().zip(&reference) {
        for (file, expected) in files.iter().zip(per_file) {
            let (max, mean) = compare(file, shape, expected, "PNG");
            assert!(max <= 1 && mean < 0.05, "{shape:?}: max {max}, mean {mean}");
        }
    }
}

#[test]
fn exif_rotated_jpegs_match_torchvision_within_one_grey_level() {
    let tmp = tempfile::tempdir().unwrap();
    let mut jpegs = Vec::new();
    let mut decoded = Vec::new();
    // Stored landscape, shown portrait: 90° clockwise (6) and counter-clockwise (8).
    let stored = [(6, 320, 210), (8, 287, 199)];
    for (orientation, w, h) in stored {
        let jpeg = tmp.path().join(format!("o{orientation}.jpg"));
        write_jpeg(&photo(w, h, orientation as u32), orientation, &jpeg);
        let img = decode(&std::fs::read(&jpeg).unwrap(), &DecodeLimits::default()).unwrap();
        assert_eq!((img.width(), img.height()), (h, w), "rotated upright");
        // maxl's decode, orientation applied, handed to torchvision losslessly.
        let png = tmp.path().join(format!("o{orientation}-decoded.png"));
        write_png(&img.to_rgb8(), &png);
        jpegs.push(jpeg);
        decoded.push(png);
    }
    let shapes: Vec<ImageShape> = shapes()
        .into_iter()
        .filter(|&s| stored.iter().all(|&(_, w, h)| !reads_reduced(s, (w, h))))
        .collect();
    assert!(shapes.iter().any(|s| s.resize == Resize::Stretch));
    let files: Vec<PathBuf> = jpegs.iter().chain(&decoded).cloned().collect();
    let reference = torchvision(&shapes, &files, tmp.path());
    for (&shape, per_file) in shapes.iter().zip(&reference) {
        let (of_jpeg, of_decoded) = per_file.split_at(jpegs.len());
        for ((jpeg, expected_jpeg), expected_decoded) in jpegs.iter().zip(of_jpeg).zip(of_decoded) {
            // The resize and crop alone: the same decoded pixels on both sides.
            let (max, mean) = compare(jpeg, shape, expected_decoded, "decoded by maxl");
            assert!(max <= 1 && mean < 0.05, "{shape:?}: max {max}, mean {mean}");
            // The JPEG itself: Pillow's libjpeg-turbo against zune-jpeg as well. Both upsample
            // chroma with libjpeg's triangle ("fancy") filter; their IDCTs round differently.
            let (max, mean) = compare(jpeg, shape, expected_jpeg, "decoded by Pillow");
            assert!(max <= 1 && mean < 0.05, "{shape:?}: max {max}, mean {mean}");
        }
    }
}
