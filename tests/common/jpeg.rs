//! JPEGs with an EXIF orientation, for the preprocessing tests of several crates (included by
//! `#[path]` where `tests/common` is not a module).

#![allow(dead_code)]

use std::io::Cursor;

use image::ImageEncoder;

/// `img` as a JPEG of `quality` whose EXIF Orientation tag (0x0112, in a big-endian TIFF with one
/// IFD entry) is `orientation`: 6 turns it 90° clockwise, 8 counter-clockwise.
pub fn exif_jpeg(img: &image::RgbImage, orientation: u8, quality: u8) -> Vec<u8> {
    let exif = [
        b"MM\x00\x2a\x00\x00\x00\x08".as_slice(),
        &[0, 1],
        &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0],
        &[0, 0, 0, 0],
    ]
    .concat();
    let mut out = Cursor::new(Vec::new());
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    enc.set_exif_metadata(exif).unwrap();
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    out.into_inner()
}
