//! The one image preprocessing path of maxl: training's image-folder and CSV readers,
//! `maxl-infer` and `maxl-label` all turn an encoded image into model pixels here, so the
//! pixels a model was trained on and the pixels it is served cannot drift apart.
//!
//! Steps: the header is read first and the image refused when it is over the [`DecodeLimits`]
//! (before any pixel buffer is allocated); the decoder runs under an allocation limit; the EXIF
//! orientation is applied; the image is converted to the model's channels (grey for 1 with
//! Pillow's ITU-R 601 weights, RGB for 3; 16-bit, alpha and CMYK sources included) and brought
//! to its input size H × W by the shape's [`Resize`] policy, as torchvision does on a PIL image:
//! [`Resize::Stretch`] is `Resize((H, W))`; [`Resize::ShorterSide`] S is `Resize(S) →
//! CenterCrop((H, W))` (shorter side to S, longer side to S × long / short truncated, crop
//! offsets `round((len − crop) / 2)` with halves to even, zero padding where the crop is larger).
//! Resampling is Pillow's antialiased bilinear (triangle) convolution, SIMD-accelerated by
//! `fast_image_resize`, one axis at a time in Pillow 13's order with 8-bit rounding between the
//! passes, and only for the pixels the crop keeps. Against torchvision 0.26 with Pillow 13 no
//! pixel differs by more than one grey level: the coefficients are 15-bit where Pillow's are
//! 22-bit (up to 2 % of pixels one level off, mean difference ≤ 0.02), and JPEGs are decoded by
//! zune-jpeg where Pillow uses libjpeg-turbo (still within one level, mean ≤ 0.04, on the tested
//! photos).
//!
//! For a stretch only, a baseline JPEG much larger than the input size is decoded straight to
//! 1/2, 1/4 or 1/8 of its size by its DCT (each 8×8 block averaged exactly), the smallest scale
//! still at least the input size on both axes, and then resized: for a 256×256 photo and a 28×28
//! model that skips most of the decoding work, but it is a different low-pass filter from
//! torchvision's and can move textured pixels by tens of grey levels. [`unit()`] is the single
//! place where an 8-bit value becomes a model input in [0, 1].
//!
//! ```
//! use maxl_preprocess::{DecodeLimits, ImageError, ImageShape, Resize, preprocess, unit};
//!
//! // A 64×48 RGB photo, PNG-encoded, for a model that takes 1×28×28 grey input.
//! let photo = image::RgbImage::from_pixel(64, 48, image::Rgb([255, 0, 0]));
//! let mut png = std::io::Cursor::new(Vec::new());
//! photo.write_to(&mut png, image::ImageFormat::Png)?;
//! let shape = ImageShape { channels: 1, height: 28, width: 28, resize: Resize::Stretch };
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

/// How an image of any size is brought to the shape's H × W pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// Resized to H × W directly, the aspect ratio not kept: torchvision's `Resize((H, W))`.
    #[default]
    Stretch,
    /// Resized so that its shorter side is this many pixels and its longer side that times
    /// long / short, truncated (the aspect ratio kept), then the central H × W cropped:
    /// torchvision's `Resize(S) → CenterCrop((H, W))`. A crop larger than the resized image is
    /// padded with zeros, as torchvision pads it.
    ShorterSide(usize),
}

/// The shape images are converted to, and how they are brought to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows, pixels.
    pub height: usize,
    /// Columns, pixels.
    pub width: usize,
    /// How an image becomes `height` × `width`.
    pub resize: Resize,
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
    /// [`Resize::ShorterSide`] asks for a shorter side of 0 pixels, or of more than `u32::MAX`.
    #[error("cannot resize an image's shorter side to {0} pixels")]
    ShorterSide(usize),
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

/// Where the H × W output lies in the image resized as a whole: one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// The image's length on this axis once resized.
    resized: u64,
    /// The output's first pixel in the resized image; negative where the output is longer than
    /// the resized image and torchvision pads it with zeros.
    start: i64,
}

/// torchvision's `Resize(S)` on a PIL image (`_compute_resized_output_size`): the shorter side
/// (the width when the sides are equal) becomes S and the longer `int(S * long / short)`.
/// Python computes that quotient in floating point, but it is never within an ulp of the next
/// integer (long, short < 2^32), so the integer quotient is the same number. Returns (w, h);
/// a side past 2^63 (never an image's) is held there.
fn shorter_side_size((w, h): (u32, u32), side: u32) -> (u64, u64) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (side as u128 * long as u128 / short as u128).min(i64::MAX as u128) as u64;
    if w <= h {
        (side as u64, new_long)
    } else {
        (new_long, side as u64)
    }
}

/// torchvision's `CenterCrop` offset of a crop of `crop` pixels from an axis of `len`:
/// `int(round((len - crop) / 2.0))`, Python rounding halves to even. A crop longer than the
/// axis is padded with `(crop - len) // 2` zeros before it, which puts it at minus that.
fn center_crop_start(len: u64, crop: u64) -> i64 {
    if crop > len {
        return -(((crop - len) / 2) as i64);
    }
    let d = len - crop;
    // d / 2 is k + ½ for odd d; round-half-to-even takes k + 1 when k is odd (d = 4k' + 3).
    (d / 2 + u64::from(d % 4 == 3)) as i64
}

/// Where the output of `shape` lies in an image of `src` pixels resized by `shape.resize`:
/// (columns, rows).
fn window(src: (u32, u32), shape: ImageShape) -> Result<(Span, Span), ImageError> {
    let (tw, th) = (shape.width as u64, shape.height as u64);
    Ok(match shape.resize {
        Resize::Stretch => (
            Span {
                resized: tw,
                start: 0,
            },
            Span {
                resized: th,
                start: 0,
            },
        ),
        Resize::ShorterSide(s) => {
            let side = u32::try_from(s)
                .ok()
                .filter(|&s| s > 0)
                .ok_or(ImageError::ShorterSide(s))?;
            let (rw, rh) = shorter_side_size(src, side);
            (
                Span {
                    resized: rw,
                    start: center_crop_start(rw, tw),
                },
                Span {
                    resized: rh,
                    start: center_crop_start(rh, th),
                },
            )
        }
    })
}

/// The part of the output that the resized image covers on one axis: (first, end) in resized
/// pixels. Never empty: a crop longer than the image is centred on it.
fn covered(span: Span, out: u64) -> (u64, u64) {
    let first = span.start.max(0) as u64;
    let end = (span.start + out as i64).min(span.resized as i64) as u64;
    (first, end)
}

/// Resized pixels [first, end) of an axis `len` long resized to `resized`, as source
/// coordinates: PIL's resampling box. Whole ends stay exact, so a stretch samples the image as
/// a resize of the whole image does.
fn source_box(len: u32, resized: u64, (first, end): (u64, u64)) -> (f64, f64) {
    let at = |i: u64| {
        if i == 0 {
            0.0
        } else if i == resized {
            len as f64
        } else {
            // One rounding: the product is exact below 2^53.
            (i as f64 * len as f64) / resized as f64
        }
    };
    let (a, b) = (at(first), at(end));
    (a, (b - a).min(len as f64 - a))
}

/// Whether Pillow (13) resizes an image of `src` pixels to `resized` along its columns first:
/// when the height shrinks by more than twice as many pixels as the width does. Otherwise (and
/// in every Pillow before 13) it resamples the rows first.
fn columns_first((w, h): (u32, u32), (rw, rh): (u64, u64)) -> bool {
    let (w, h, rw, rh) = (w as i128, h as i128, rw as i128, rh as i128);
    h > rh && h - rh > 2 * (w - rw)
}

/// Interleaved 8-bit pixels (1 or 3 channels) of `src` pixels → the interleaved `shape.width` ×
/// `shape.height` output: the image resized with a bilinear convolution filter (PIL's, with
/// its antialiasing support) as `shape.resize` says, and the output's window cut from it.
/// Only the window is resampled (PIL's resampling box), so a panorama resized by its shorter
/// side never allocates its full resized width.
fn resize(
    pixels: &[u8],
    (w, h): (u32, u32),
    shape: ImageShape,
    channels: usize,
) -> Result<Vec<u8>, ImageError> {
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, images};
    let (tw, th) = (shape.width as u64, shape.height as u64);
    if tw == 0 || th == 0 {
        return Ok(Vec::new());
    }
    let (cols, rows) = window((w, h), shape)?;
    let (x0, x1) = covered(cols, tw);
    let (y0, y1) = covered(rows, th);
    let (cw, ch) = ((x1 - x0) as u32, (y1 - y0) as u32);
    let pt = if channels == 1 {
        PixelType::U8
    } else {
        PixelType::U8x3
    };
    let fail = |e: &dyn std::fmt::Display| ImageError::Decode(format!("cannot resize: {e}"));
    let (left, width) = source_box(w, cols.resized, (x0, x1));
    let (top, height) = source_box(h, rows.resized, (y0, y1));
    // Two calls, each resampling one axis and rounding to 8 bits, in Pillow's order, so that
    // the intermediate rounding is Pillow's: in the other order one pixel in five or six comes
    // out one level off. A call whose box is whole pixels of the same length copies.
    let pass = |pixels: &[u8], (w, h): (u32, u32), to: (u32, u32), bx: (f64, f64, f64, f64)| {
        let src = images::ImageRef::new(w, h, pixels, pt).map_err(|e| fail(&e))?;
        let mut dst = images::Image::new(to.0, to.1, pt);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(bx.0, bx.1, bx.2, bx.3);
        RESIZER
            .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
            .map_err(|e| fail(&e))?;
        Ok::<_, ImageError>(dst.into_vec())
    };
    let px = if columns_first((w, h), (cols.resized, rows.resized)) {
        let columns_done = pass(pixels, (w, h), (w, ch), (0.0, top, w as f64, height))?;
        pass(
            &columns_done,
            (w, ch),
            (cw, ch),
            (left, 0.0, width, ch as f64),
        )?
    } else {
        let rows_done = pass(pixels, (w, h), (cw, h), (left, 0.0, width, h as f64))?;
        pass(&rows_done, (cw, h), (cw, ch), (0.0, top, cw as f64, height))?
    };
    if (cw as u64, ch as u64) == (tw, th) {
        return Ok(px);
    }
    // The crop is larger than the resized image: zeros around it, as torchvision pads.
    let (dx, dy) = (
        (x0 as i64 - cols.start) as usize,
        (y0 as i64 - rows.start) as usize,
    );
    let (tw, cw) = (tw as usize, cw as usize);
    let mut out = vec![0u8; tw * th as usize * channels];
    for (y, row) in px.chunks_exact(cw * channels).enumerate() {
        let at = ((dy + y) * tw + dx) * channels;
        out[at..at + row.len()].copy_from_slice(row);
    }
    Ok(out)
}

/// A decoded image as channel-first 8-bit pixels of `shape`.
pub fn convert(img: &DynamicImage, shape: ImageShape) -> Result<Vec<u8>, ImageError> {
    let src = (img.width(), img.height());
    match shape.channels {
        1 => resize(&grey(img), src, shape, 1),
        3 => {
            let px = resize(&rgb(img), src, shape, 3)?;
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

/// The side both axes of a JPEG decoded at a reduced scale must keep for `shape`, or `None` where
/// the reduced decode is not used. A stretch keeps the input size. A shorter-side resize always
/// decodes in full, as torchvision does: a DCT-reduced decode followed by the bilinear filter is
/// a different low-pass filter from the bilinear filter alone, and on a textured 1024×768 photo
/// it moved pixels by up to 15 grey levels at the smallest scale still at least S, and by 2
/// with the reduced image's shorter side still 3.8 S.
fn reduced_decode_floor(shape: ImageShape) -> Option<u32> {
    match shape.resize {
        Resize::Stretch => Some(shape.width.max(shape.height) as u32),
        Resize::ShorterSide(_) => None,
    }
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
    if let Some(at_least) = reduced_decode_floor(shape)
        && image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg)
    {
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
        resize: Resize::Stretch,
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
                resize: Resize::Stretch,
            },
            ImageShape {
                channels: 3,
                height: 40,
                width: 60,
                resize: Resize::Stretch,
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
            resize: Resize::Stretch,
        };
        assert!(decode_jpeg_reduced(&jpeg, 150, &limits).unwrap().is_none());
        assert_eq!(preprocess(&jpeg, shape, &limits).unwrap().len(), 150 * 150);
    }

    #[test]
    fn a_shorter_side_resize_decodes_jpegs_in_full() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(256, 192, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 3) as u8,
                ((x ^ y) * 5 % 256) as u8,
            ])
        }));
        let jpeg = jpeg_bytes(&img, None);
        let limits = DecodeLimits::default();
        let shape = ImageShape {
            channels: 3,
            height: 28,
            width: 30,
            resize: Resize::ShorterSide(32),
        };
        let full = convert(&decode(&jpeg, &limits).unwrap(), shape).unwrap();
        assert_eq!(preprocess(&jpeg, shape, &limits).unwrap(), full);
        // The same file stretched to that size does take the reduced decode, and differs.
        let stretch = ImageShape {
            resize: Resize::Stretch,
            ..shape
        };
        let full = convert(&decode(&jpeg, &limits).unwrap(), stretch).unwrap();
        assert_ne!(preprocess(&jpeg, stretch, &limits).unwrap(), full);
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
            resize: Resize::Stretch,
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
    fn shorter_side_sizes_follow_torchvision() {
        // Values from torchvision's `_compute_resized_output_size`, as (w, h).
        // Landscape: 71 × 301 / 203 = 105.27 truncated.
        assert_eq!(shorter_side_size((301, 203), 71), (105, 71));
        // Portrait: 73 × 333 / 190 = 127.94, truncated, not rounded.
        assert_eq!(shorter_side_size((190, 333), 73), (73, 127));
        // Nearly square either way, and an exact quotient.
        assert_eq!(shorter_side_size((96, 97), 50), (50, 50));
        assert_eq!(shorter_side_size((97, 96), 50), (50, 50));
        assert_eq!(shorter_side_size((200, 100), 50), (100, 50));
        assert_eq!(shorter_side_size((1000, 3), 7), (2333, 7));
        assert_eq!(shorter_side_size((5, 5), 3), (3, 3));
        // No overflow at the extremes.
        assert_eq!(
            shorter_side_size((u32::MAX, 1), u32::MAX),
            (i64::MAX as u64, u32::MAX as u64)
        );
    }

    #[test]
    fn center_crop_offsets_round_halves_to_even_as_python_does() {
        // int(round((len - crop) / 2.0)) in Python: 22.5 → 22, 10.5 → 10, 31.5 → 32, 1.5 → 2.
        for (len, crop, start) in [
            (105, 60, 22),
            (71, 50, 10),
            (127, 64, 32),
            (5, 2, 2),
            (3, 2, 0),
            (4, 4, 0),
            (6, 4, 1),
        ] {
            assert_eq!(center_crop_start(len, crop), start, "{len} → {crop}");
        }
        // A crop longer than the axis: (crop − len) // 2 zeros before it.
        assert_eq!(center_crop_start(4, 7), -1);
        assert_eq!(center_crop_start(5, 6), 0);
        assert_eq!(center_crop_start(36, 47), -5);
    }

    fn counting(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageLuma8(image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([(y * w + x + 1) as u8])
        }))
    }

    fn grey_shape(height: usize, width: usize, resize: Resize) -> ImageShape {
        ImageShape {
            channels: 1,
            height,
            width,
            resize,
        }
    }

    #[test]
    fn a_shorter_side_at_the_image_size_is_torchvisions_center_crop() {
        // No resampling (S is the shorter side): exactly the pixels torchvision's CenterCrop
        // keeps. 9×6 → 4×3: left round(2.5) = 2, top round(1.5) = 2.
        let px = convert(&counting(9, 6), grey_shape(3, 4, Resize::ShorterSide(6))).unwrap();
        assert_eq!(px, [21, 22, 23, 24, 30, 31, 32, 33, 39, 40, 41, 42]);
        // Portrait, 6×9 → 3×4: left round(1.5) = 2, top round(2.5) = 2.
        let px = convert(&counting(6, 9), grey_shape(4, 3, Resize::ShorterSide(6))).unwrap();
        assert_eq!(px, [15, 16, 17, 21, 22, 23, 27, 28, 29, 33, 34, 35]);
        // A crop larger than the image: padded with zeros, one row above and two below, one
        // column on the right.
        let px = convert(&counting(5, 4), grey_shape(7, 6, Resize::ShorterSide(4))).unwrap();
        #[rustfmt::skip]
        assert_eq!(px, [
            0, 0, 0, 0, 0, 0,
            1, 2, 3, 4, 5, 0,
            6, 7, 8, 9, 10, 0,
            11, 12, 13, 14, 15, 0,
            16, 17, 18, 19, 20, 0,
            0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0,
        ]);
    }

    #[test]
    fn a_shorter_side_resize_samples_only_the_crop() {
        // 16000×2 by its shorter side to 256 is 2 048 000 × 256 pixels (1.5 GB in RGB) as a
        // whole; only the 224×224 crop is resampled.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(16000, 2, |x, _| {
            image::Rgb([(x % 256) as u8, 0, 255])
        }));
        let shape = ImageShape {
            channels: 3,
            height: 224,
            width: 224,
            resize: Resize::ShorterSide(256),
        };
        let px = convert(&img, shape).unwrap();
        assert_eq!(px.len(), shape.len());
        assert!(px[2 * 224 * 224..].iter().all(|&b| b == 255), "blue plane");
    }

    #[test]
    fn a_shorter_side_of_zero_is_refused() {
        let e = convert(&counting(4, 4), grey_shape(2, 2, Resize::ShorterSide(0))).unwrap_err();
        assert!(matches!(e, ImageError::ShorterSide(0)), "{e}");
        assert_eq!(
            e.to_string(),
            "cannot resize an image's shorter side to 0 pixels"
        );
    }

    #[test]
    fn pillow_13_resamples_columns_first_when_the_height_shrinks_twice_as_much() {
        // Measured against Pillow 13's Image.resize (bilinear) on random images.
        assert!(columns_first((190, 333), (52, 36)));
        assert!(columns_first((100, 151), (50, 50)));
        assert!(!columns_first((100, 150), (50, 50)));
        assert!(!columns_first((301, 203), (52, 36)));
        // The height grows: rows first, however the width changes.
        assert!(!columns_first((10, 10), (20, 11)));
        assert!(columns_first((10, 10), (20, 9)));
    }

    #[test]
    fn grey_uses_itu_601_weights() {
        let img =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0])));
        let one = ImageShape {
            channels: 1,
            height: 2,
            width: 2,
            resize: Resize::Stretch,
        };
        // Pillow: convert("L") of pure red is 76.
        assert_eq!(convert(&img, one).unwrap(), vec![76; 4]);
    }
}
