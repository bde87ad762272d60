//! The one image preprocessing path of maxl: training's image-folder and CSV readers,
//! `maxl-infer` and `maxl-label` all turn an encoded image into model pixels here, so the
//! pixels a model was trained on and the pixels it is served cannot drift apart.
//!
//! Steps: the header is read first and the image refused when it is over the [`DecodeLimits`]
//! (before any pixel buffer is allocated); the decoder runs under an allocation limit; the EXIF
//! orientation is applied; the image is converted to the model's channels (grey for 1, RGB for 3;
//! 16-bit, alpha and CMYK sources included) and resized to its input size with a triangle
//! filter. [`unit`] is the single place where an 8-bit value becomes a model input in [0, 1].

use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader};

/// The shape images are converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// Values per image (C × H × W).
    pub fn len(self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// What a decoder may be asked to do. A file over a limit is refused, never partly decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded file, in bytes.
    pub max_file_bytes: u64,
    pub max_width: u32,
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
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file is {size} bytes, over the limit of {limit}")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("not a PNG or JPEG image (format not recognised)")]
    UnknownFormat,
    #[error("image is {width}×{height}, over the decode limit ({limit})")]
    TooLarge {
        width: u32,
        height: u32,
        limit: String,
    },
    #[error("cannot decode image: {0}")]
    Decode(String),
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

/// Appends `pixels` as model inputs in [0, 1] (see [`unit`]).
pub fn extend_unit(out: &mut Vec<f32>, pixels: &[u8]) {
    out.extend(pixels.iter().map(|&p| unit(p)));
}

/// Reads a file of at most `limits.max_file_bytes`.
pub fn read_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, ImageError> {
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

/// A decoded image as channel-first 8-bit pixels of `shape`.
pub fn convert(img: &DynamicImage, shape: ImageShape) -> Result<Vec<u8>, ImageError> {
    let (w, h) = (shape.width as u32, shape.height as u32);
    let resized;
    let img = if img.width() == w && img.height() == h {
        img
    } else {
        resized = img.resize_exact(w, h, image::imageops::FilterType::Triangle);
        &resized
    };
    match shape.channels {
        1 => Ok(img.to_luma8().into_raw()),
        3 => {
            let rgb = img.to_rgb8();
            let plane = (w * h) as usize;
            let mut out = vec![0u8; 3 * plane];
            for (i, px) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = px.0[c];
                }
            }
            Ok(out)
        }
        c => Err(ImageError::Channels(c)),
    }
}

/// Encoded bytes → channel-first 8-bit pixels of `shape`: [`decode`] then [`convert`].
pub fn preprocess(
    bytes: &[u8],
    shape: ImageShape,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, ImageError> {
    if !matches!(shape.channels, 1 | 3) {
        return Err(ImageError::Channels(shape.channels));
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

    #[test]
    fn exif_orientation_is_applied() {
        // A 2×1 JPEG (left black, right white) rotated 90° clockwise by its EXIF tag is 1×2.
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(16, 8, |x, _| {
            image::Luma([if x < 8 { 0 } else { 255 }])
        }));
        let mut jpeg = Cursor::new(Vec::new());
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        use image::ImageEncoder;
        // EXIF APP1: big-endian TIFF with one IFD entry, Orientation (0x0112) = 6.
        let exif: Vec<u8> = [
            b"MM\x00\x2a\x00\x00\x00\x08".as_slice(),
            &[0, 1],
            &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
            &[0, 0, 0, 0],
        ]
        .concat();
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
}
