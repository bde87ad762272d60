//! The one image preprocessing path of maxl: training's image-folder and CSV readers,
//! `maxl-infer` and `maxl-label` all turn an encoded image into model pixels here, so the
//! pixels a model was trained on and the pixels it is served cannot drift apart.
//!
//! Steps: the header is read first and the image refused when it is over the [`DecodeLimits`]
//! (before any pixel buffer is allocated); the decoder runs under an allocation limit; the EXIF
//! orientation is applied; the image is converted to the model's channels (grey for 1 with
//! Pillow's ITU-R 601 weights, RGB for 3; 16-bit, alpha and CMYK sources included) and resized
//! to its input size with a bilinear (triangle) convolution filter, SIMD-accelerated by
//! `fast_image_resize`. A baseline JPEG much larger than the input size is decoded straight to
//! 1/2, 1/4 or 1/8 of its size by its DCT (each 8×8 block averaged exactly), the smallest scale
//! still at least the input size on both axes, and then resized: for a 256×256 photo and a 28×28
//! model that skips most of the decoding work. [`unit()`] is the single place where an 8-bit value
//! becomes a model input in [0, 1].
//!
//! ```
//! use maxl_preprocess::{DecodeLimits, ImageError, ImageShape, preprocess, unit};
//!
//! // A 64×48 RGB photo, PNG-encoded, for a model that takes 1×28×28 grey input.
//! let photo = image::RgbImage::from_pixel(64, 48, image::Rgb([255, 0, 0]));
//! let mut png = std::io::Cursor::new(Vec::new());
//! photo.write_to(&mut png, image::ImageFormat::Png)?;
//! let shape = ImageShape { channels: 1, height: 28, width: 28 };
//!
//! let pixels = preprocess(png.get_ref(), shape, &DecodeLimits::default())?;
//! assert_eq!(pixels.len(), shape.len());
//! assert!(pixels.iter().all(|&p| p == 76)); // pure red in grey, by ITU-R 601
//! let input: Vec<f32> = pixels.iter().map(|&p| unit(p)).collect();
//! assert!((input[0] - 76.0 / 255.0).abs() < 1e-6);
//!
//! // Bytes that are not a PNG or JPEG are refused, never guessed at.
//! let junk = preprocess(b"not an image", shape, &DecodeLimits::default());
//! assert!(matches!(junk, Err(ImageError::UnknownFormat)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader};

/// The shape images are converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows, pixels.
    pub height: usize,
    /// Columns, pixels.
    pub width: usize,
}

impl ImageShape {
    /// Values per image (C × H × W).
    pub fn len(self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the shape holds no values (a zero dimension).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// What a decoder may be asked to do. A file over a limit is refused, never partly decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded file, in bytes.
    pub max_file_bytes: u64,
    /// Widest image, in pixels.
    pub max_width: u32,
    /// Tallest image, in pixels.
    pub max_height: u32,
    /// Largest width × height.
    pub max_pixels: u64,
    /// Most memory the decoder may allocate, in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 64 MiB files, 16384 pixels a side, 50 megapixels, 512 MiB of decoder memory: every
    /// ordinary photo passes, a header that declares 20000 × 20000 does not.
    fn default() -> Self {
        Self {
            max_file_bytes: 64 << 20,
            max_width: 16384,
            max_height: 16384,
            max_pixels: 50_000_000,
            max_alloc: 512 << 20,
        }
    }
}

/// Why an image could not be turned into model pixels. Always the caller's input at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file cannot be read (or is not a regular file).
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The encoded file is larger than [`DecodeLimits::max_file_bytes`].
    #[error("the file is {size} bytes, over the limit of {limit}")]
    FileTooLarge {
        /// The file's size, in bytes.
        size: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The bytes are not a PNG or a JPEG.
    #[error("not a PNG or JPEG image (format not recognised)")]
    UnknownFormat,
    /// The header declares dimensions over the [`DecodeLimits`]; nothing was decoded.
    #[error("image is {width}×{height}, over the decode limit ({limit})")]
    TooLarge {
        /// The declared width, in pixels.
        width: u32,
        /// The declared height, in pixels.
        height: u32,
        /// The limit it is over, in words.
        limit: String,
    },
    /// The image is corrupt, truncated or over the decoder's memory limit.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The target shape asks for a channel count other than 1 or 3.
    #[error("the model expects {0} channels; images can be read as 1 (grey) or 3 (RGB)")]
    Channels(usize),
}

fn decode_err(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Limits(l) => ImageError::Decode(format!("over the decode limits: {l}")),
        e => ImageError::Decode(
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// An 8-bit pixel value as a model input in [0, 1].
#[inline]
pub fn unit(pixel: u8) -> f32 {
    pixel as f32 / 255.0
}

/// Appends `pixels` as model inputs in [0, 1] (see [`unit()`]).
pub fn extend_unit(out: &mut Vec<f32>, pixels: &[u8]) {
    out.extend(pixels.iter().map(|&p| unit(p)));
}

/// Reads a file of at most `limits.max_file_bytes`.
pub fn read_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, ImageError> {
    // A FIFO or a device would block or never end: only regular files are opened.
    if !std::fs::metadata(path)?.is_file() {
        return Err(ImageError::Io(std::io::Error::other("not a regular file")));
    }
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge {
            size,
            limit: limits.max_file_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limits.max_file_bytes + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    Ok(bytes)
}

/// Refuses dimensions over `limits` (and empty images).
fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), ImageError> {
    let too_large = |limit: String| ImageError::TooLarge {
        width,
        height,
        limit,
    };
    if width > limits.max_width || height > limits.max_height {
        return Err(too_large(format!(
            "{}×{} pixels a side",
            limits.max_width, limits.max_height
        )));
    }
    if width as u64 * height as u64 > limits.max_pixels {
        return Err(too_large(format!("{} pixels", limits.max_pixels)));
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Decode(format!("image is {width}×{height}")));
    }
    Ok(())
}

/// Decodes an encoded PNG or JPEG under `limits`, with its EXIF orientation applied.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, ImageError> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => return Err(ImageError::UnknownFormat),
    }
    // The header alone is read here; the size is checked below, before any pixel buffer exists,
    // and the limits are handed to the decoder after that.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(limits.max_alloc);
    decoder.set_limits(l).map_err(decode_err)?;
    let orientation = decoder.orientation().map_err(decode_err)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Grey by ITU-R 601 (Pillow's `convert("L")`: (19595 R + 38470 G + 7471 B + 2^15) >> 16).
fn grey(img: &DynamicImage) -> Cow<'_, [u8]> {
    match img {
        DynamicImage::ImageLuma8(g) => Cow::Borrowed(g.as_raw().as_slice()),
        DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => Cow::Owned(img.to_luma8().into_raw()),
        _ => {
            let rgb = rgb(img);
            Cow::Owned(
                rgb.chunks_exact(3)
                    .map(|p| {
                        ((19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000)
                            >> 16) as u8
                    })
                    .collect(),
            )
        }
    }
}

/// Interleaved 8-bit RGB.
fn rgb(img: &DynamicImage) -> Cow<'_, [u8]> {
    match img {
        DynamicImage::ImageRgb8(i) => Cow::Borrowed(i.as_raw().as_slice()),
        _ => Cow::Owned(img.to_rgb8().into_raw()),
    }
}

thread_local! {
    static RESIZER: std::cell::RefCell<fast_image_resize::Resizer> =
        std::cell::RefCell::new(fast_image_resize::Resizer::new());
}

/// Resizes interleaved 8-bit pixels (1 or 3 channels) with a bilinear convolution filter.
fn resize(
    pixels: &[u8],
    (w, h): (u32, u32),
    (tw, th): (u32, u32),
    channels: usize,
) -> Result<Vec<u8>, ImageError> {
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, images};
    if (w, h) == (tw, th) {
        return Ok(pixels.to_vec());
    }
    let pt = if channels == 1 {
        PixelType::U8
    } else {
        PixelType::U8x3
    };
    let fail = |e: &dyn std::fmt::Display| ImageError::Decode(format!("cannot resize: {e}"));
    let src = images::ImageRef::new(w, h, pixels, pt).map_err(|e| fail(&e))?;
    let mut dst = images::Image::new(tw, th, pt);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
        .map_err(|e| fail(&e))?;
    Ok(dst.into_vec())
}

/// A decoded image as channel-first 8-bit pixels of `shape`.
pub fn convert(img: &DynamicImage, shape: ImageShape) -> Result<Vec<u8>, ImageError> {
    let src = (img.width(), img.height());
    let dst = (shape.width as u32, shape.height as u32);
    match shape.channels {
        1 => resize(&grey(img), src, dst, 1),
        3 => {
            let px = resize(&rgb(img), src, dst, 3)?;
            let plane = shape.width * shape.height;
            let mut out = vec![0u8; 3 * plane];
            for (i, p) in px.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = p[c];
                }
            }
            Ok(out)
        }
        c => Err(ImageError::Channels(c)),
    }
}

/// A JPEG decoded by its DCT at the smallest of 1/8, 1/4, 1/2 that is still at least `at_least`
/// pixels on both axes, with its EXIF orientation; `None` when no reduction applies (or the
/// colour type is one the full decoder handles: CMYK, 16-bit).
fn decode_jpeg_reduced(
    bytes: &[u8],
    at_least: u32,
    limits: &DecodeLimits,
) -> Result<Option<DynamicImage>, ImageError> {
    let jpeg_err = |e: jpeg_decoder::Error| ImageError::Decode(format!("JPEG: {e}"));
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info().map_err(jpeg_err)?;
    let Some(info) = d.info() else {
        return Ok(None);
    };
    let (w, h) = (info.width as u32, info.height as u32);
    check_dimensions(w, h, limits)?;
    if !matches!(
        info.pixel_format,
        jpeg_decoder::PixelFormat::L8 | jpeg_decoder::PixelFormat::RGB24
    ) || info.coding_process == jpeg_decoder::CodingProcess::Lossless
    {
        return Ok(None);
    }
    let scaled = |len: u32, eighths: u32| (len * eighths).div_ceil(8);
    let Some(eighths) = [1, 2, 4]
        .into_iter()
        .find(|&e| scaled(w, e) >= at_least && scaled(h, e) >= at_least)
    else {
        return Ok(None);
    };
    let (sw, sh) = d
        .scale(scaled(w, eighths) as u16, scaled(h, eighths) as u16)
        .map_err(jpeg_err)?;
    d.set_max_decoding_buffer_size(limits.max_alloc.min(usize::MAX as u64) as usize);
    let px = d.decode().map_err(jpeg_err)?;
    let (sw, sh) = (sw as u32, sh as u32);
    let short = || ImageError::Decode("JPEG: decoded fewer pixels than its header declares".into());
    let mut img = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(image::GrayImage::from_raw(sw, sh, px).ok_or_else(short)?)
        }
        _ => DynamicImage::ImageRgb8(image::RgbImage::from_raw(sw, sh, px).ok_or_else(short)?),
    };
    if let Some(o) = d
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
    {
        img.apply_orientation(o);
    }
    Ok(Some(img))
}

/// Encoded bytes → channel-first 8-bit pixels of `shape`: [`decode`] (or the reduced JPEG decode)
/// then [`convert`].
pub fn preprocess(
    bytes: &[u8],
    shape: ImageShape,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, ImageError> {
    if !matches!(shape.channels, 1 | 3) {
        return Err(ImageError::Channels(shape.channels));
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) {
        let at_least = shape.width.max(shape.height) as u32;
        match decode_jpeg_reduced(bytes, at_least, limits) {
            Ok(Some(img)) => return convert(&img, shape),
            // Over the limits: refused whichever decoder reads it.
            Err(e @ (ImageError::TooLarge { .. } | ImageError::FileTooLarge { .. })) => {
                return Err(e);
            }
            // Anything the reduced decoder does not handle goes to the full decoder, so whether
            // a file can be read never depends on its size relative to the model's input.
            Ok(None) | Err(_) => {}
        }
    }
    convert(&decode(bytes, limits)?, shape)
}

/// A file → channel-first 8-bit pixels of `shape`.
pub fn preprocess_file(
    path: &Path,
    shape: ImageShape,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, ImageError> {
    preprocess(&read_file(path, limits)?, shape, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: ImageShape = ImageShape {
        channels: 1,
        height: 4,
        width: 4,
    };

    fn png_bytes(img: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A valid PNG header declaring `w`×`h`, followed by garbage instead of image data.
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut b = png_bytes(DynamicImage::new_luma8(1, 1));
        b[16..20].copy_from_slice(&w.to_be_bytes());
        b[20..24].copy_from_slice(&h.to_be_bytes());
        // Fix the IHDR CRC so that the decoder reads the header as valid.
        let mut crc = flate2::Crc::new();
        crc.update(&b[12..29]);
        let crc = crc.sum();
        b[29..33].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn huge_declared_sizes_are_refused_from_the_header() {
        for (w, h) in [(20000, 20000), (65535, 65535), (16000, 16000)] {
            let e = preprocess(&png_declaring(w, h), GREY, &DecodeLimits::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("image is {w}×{h}, over the decode limit")),
                "{e}"
            );
        }
    }

    /// EXIF APP1: big-endian TIFF with one IFD entry, Orientation (0x0112) = 6 (90° clockwise).
    fn exif_rotated_clockwise() -> Vec<u8> {
        [
            b"MM\x00\x2a\x00\x00\x00\x08".as_slice(),
            &[0, 1],
            &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
            &[0, 0, 0, 0],
        ]
        .concat()
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 2×1 JPEG (left black, right white) rotated 90° clockwise by its EXIF tag is 1×2.
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(16, 8, |x, _| {
            image::Luma([if x < 8 { 0 } else { 255 }])
        }));
        let mut jpeg = Cursor::new(Vec::new());
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        use image::ImageEncoder;
        let exif = exif_rotated_clockwise();
        enc.set_exif_metadata(exif).unwrap();
        enc.write_image(img.as_bytes(), 16, 8, image::ExtendedColorType::L8)
            .unwrap();
        let d = decode(jpeg.get_ref(), &DecodeLimits::default()).unwrap();
        assert_eq!((d.width(), d.height()), (8, 16));
        // Rotated clockwise: the left (black) half is now on top.
        let g = d.to_luma8();
        assert!(g.get_pixel(4, 2).0[0] < 40 && g.get_pixel(4, 13).0[0] > 215);
    }

    #[test]
    fn formats_and_limits() {
        let rgba16 = DynamicImage::ImageRgba16(image::ImageBuffer::from_pixel(
            6,
            6,
            image::Rgba([65535u16, 0, 0, 65535]),
        ));
        let px = preprocess(&png_bytes(rgba16), GREY, &DecodeLimits::default()).unwrap();
        assert_eq!(px.len(), 16);
        assert!(px.iter().all(|&p| p == px[0]));
        let e = preprocess(b"hello, world", GREY, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::UnknownFormat), "{e}");
        let small = DecodeLimits {
            max_file_bytes: 10,
            ..Default::default()
        };
        let e = preprocess(&png_bytes(DynamicImage::new_luma8(2, 2)), GREY, &small).unwrap_err();
        assert!(matches!(e, ImageError::FileTooLarge { .. }), "{e}");
        assert_eq!(unit(255), 1.0);
        assert_eq!(unit(0), 0.0);
    }

    fn jpeg_bytes(img: &DynamicImage, exif: Option<Vec<u8>>) -> Vec<u8> {
        use image::ImageEncoder;
        let mut out = Cursor::new(Vec::new());
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
        if let Some(e) = exif {
            enc.set_exif_metadata(e).unwrap();
        }
        enc.write_image(
            img.as_bytes(),
            img.width(),
            img.height(),
            img.color().into(),
        )
        .unwrap();
        out.into_inner()
    }

    #[test]
    fn reduced_jpeg_decoding_matches_the_full_decode() {
        // A smooth 256×192 photo-like RGB image: gradients and a disc.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(256, 192, |x, y| {
            let d = ((x as f32 - 100.0).powi(2) + (y as f32 - 90.0).powi(2)).sqrt();
            let disc = if d < 50.0 { 120 } else { 0 };
            image::Rgb([(x / 2) as u8 + disc / 2, (y / 2) as u8, disc])
        }));
        let jpeg = jpeg_bytes(&img, None);
        let limits = DecodeLimits::default();
        for shape in [
            GREY,
            ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            ImageShape {
                channels: 3,
                height: 40,
                width: 60,
            },
        ] {
            let at_least = shape.width.max(shape.height) as u32;
            let reduced = decode_jpeg_reduced(&jpeg, at_least, &limits)
                .unwrap()
                .unwrap();
            assert!(reduced.width() < 256 && reduced.width() >= at_least);
            let fast = preprocess(&jpeg, shape, &limits).unwrap();
            let full = convert(&decode(&jpeg, &limits).unwrap(), shape).unwrap();
            assert_eq!(fast.len(), full.len());
            let worst = fast
                .iter()
                .zip(&full)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .max()
                .unwrap();
            let mean = fast
                .iter()
                .zip(&full)
                .map(|(a, b)| (*a as f64 - *b as f64).abs())
                .sum::<f64>()
                / full.len() as f64;
            assert!(
                worst <= 24 && mean < 2.0,
                "{shape:?}: worst {worst}, mean {mean}"
            );
        }
        // No reduction when the image is not at least twice the input size.
        let shape = ImageShape {
            channels: 1,
            height: 150,
            width: 150,
        };
        assert!(decode_jpeg_reduced(&jpeg, 150, &limits).unwrap().is_none());
        assert_eq!(preprocess(&jpeg, shape, &limits).unwrap().len(), 150 * 150);
    }

    #[test]
    fn reduced_jpeg_decoding_applies_exif_orientation_and_limits() {
        // 64×32, left half black, rotated 90° clockwise by EXIF: 32×64 with black on top.
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 32, |x, _| {
            image::Luma([if x < 32 { 0 } else { 255 }])
        }));
        let exif = exif_rotated_clockwise();
        let jpeg = jpeg_bytes(&img, Some(exif));
        let shape = ImageShape {
            channels: 1,
            height: 8,
            width: 4,
        };
        let px = preprocess(&jpeg, shape, &DecodeLimits::default()).unwrap();
        assert!(px[1] < 40 && px[29] > 215, "{px:?}");
        let small = DecodeLimits {
            max_pixels: 1000,
            ..Default::default()
        };
        let e = preprocess(&jpeg, shape, &small).unwrap_err().to_string();
        assert!(e.contains("image is 64×32, over the decode limit"), "{e}");
    }

    #[test]
    fn grey_uses_itu_601_weights() {
        let img =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0])));
        let one = ImageShape {
            channels: 1,
            height: 2,
            width: 2,
        };
        // Pillow: convert("L") of pure red is 76.
        assert_eq!(convert(&img, one).unwrap(), vec![76; 4]);
    }
}
