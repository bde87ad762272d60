//! Random-resized-crop augmentation, as torchvision's `RandomResizedCrop`: a box of random area
//! (a `scale` fraction of the image) and aspect ratio (log-uniform in `ratio`) at a random place,
//! resized to the network's input with a bilinear convolution filter (Pillow's, the filter
//! `maxl_preprocess` resizes with). After ten boxes that do not fit, the central box of the
//! image clamped to the ratio range is taken.

use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images};
use rand::Rng;

/// Where a random-resized-crop box sits in the image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// The ranges random-resized-crop boxes are drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizedCrop {
    /// The box's area as a fraction of the image's, drawn uniformly from this range.
    pub scale: (f64, f64),
    /// The box's width ÷ height, drawn log-uniformly from this range.
    pub ratio: (f64, f64),
}

impl Default for ResizedCrop {
    /// torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3).
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

/// Python's `int(round(x))` (halves to even).
fn round_half_even(x: f64) -> usize {
    x.round_ties_even().max(0.0) as usize
}

impl ResizedCrop {
    /// Draws a box in an image of `height` × `width`, torchvision's `get_params` step by step:
    /// up to ten tries of (area fraction, log ratio) and, for a box that fits, its top row then
    /// its left column; after ten misfits the central box with the ratio clamped to the range.
    pub fn draw<R: Rng>(&self, (height, width): (usize, usize), rng: &mut R) -> CropBox {
        let area = (height * width) as f64;
        let (lo, hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, lo, hi).exp();
            let w = round_half_even((target * aspect).sqrt());
            let h = round_half_even((target / aspect).sqrt());
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        self.central((height, width))
    }

    /// The fallback box: the whole image, narrowed to the ratio range when its own ratio is
    /// outside it, centred.
    pub fn central(&self, (height, width): (usize, usize)) -> CropBox {
        let in_ratio = width as f64 / height as f64;
        let (min, max) = (
            self.ratio.0.min(self.ratio.1),
            self.ratio.0.max(self.ratio.1),
        );
        let (h, w) = if in_ratio < min {
            (round_half_even(width as f64 / min).min(height), width)
        } else if in_ratio > max {
            (height, round_half_even(height as f64 * max).min(width))
        } else {
            (height, width)
        };
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }
}

/// Uniform in [lo, hi) (lo itself when the range is empty), as `torch.empty(1).uniform_`.
fn uniform<R: Rng>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

thread_local! {
    static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
}

/// The box of one `h` × `w` plane of 8-bit pixels resized to `out` (rows, columns) with the
/// bilinear convolution filter. The box is cut out first, as torchvision's `resized_crop` does:
/// the filter sees only its pixels, its edges clamped.
pub fn resize_box(
    plane: &[u8],
    (_, w): (usize, usize),
    b: CropBox,
    out: (usize, usize),
) -> Vec<u8> {
    let mut cut = Vec::with_capacity(b.height * b.width);
    for row in plane.chunks_exact(w).skip(b.top).take(b.height) {
        cut.extend_from_slice(&row[b.left..b.left + b.width]);
    }
    if (b.height, b.width) == out {
        return cut;
    }
    let src = images::ImageRef::new(b.width as u32, b.height as u32, &cut, PixelType::U8)
        .expect("a box of height × width bytes");
    let mut dst = images::Image::new(out.1 as u32, out.0 as u32, PixelType::U8);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
        .expect("a U8 box inside the plane resizes");
    dst.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn boxes_follow_torchvisions_rule() {
        let rrc = ResizedCrop::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (h, w) in [(32, 32), (40, 24), (7, 9)] {
            let mut fallbacks = 0;
            let mut areas = (f64::MAX, 0.0f64);
            for _ in 0..2000 {
                let b = rrc.draw((h, w), &mut rng);
                assert!(b.height >= 1 && b.width >= 1, "{b:?}");
                assert!(
                    b.top + b.height <= h && b.left + b.width <= w,
                    "{b:?} in {h}×{w}"
                );
                if b == rrc.central((h, w)) {
                    fallbacks += 1;
                    continue;
                }
                // The rounding of √(area·ratio) and √(area/ratio) moves a box by at most ½ pixel
                // a side: its area and ratio stay within that of the drawn ranges.
                let (bh, bw) = (b.height as f64, b.width as f64);
                let frac = bh * bw / (h * w) as f64;
                let slack = (bh + bw + 1.0) / (h * w) as f64;
                assert!(frac > 0.08 - slack && frac <= 1.0, "{b:?}: area {frac}");
                let r = bw / bh;
                let (rlo, rhi) = ((bw - 0.5) / (bh + 0.5), (bw + 0.5) / (bh - 0.5));
                assert!(rhi >= 0.75 && rlo <= 4.0 / 3.0, "{b:?}: ratio {r}");
                areas = (areas.0.min(frac), areas.1.max(frac));
            }
            assert!(fallbacks < 200, "{h}×{w}: {fallbacks} fallbacks");
            assert!(areas.0 < 0.2 && areas.1 > 0.6, "{h}×{w}: areas {areas:?}");
        }
        // The fallback: the whole image when its ratio is in range, else narrowed and centred.
        let central = |h, w| rrc.central((h, w));
        assert_eq!(
            central(30, 36),
            CropBox {
                top: 0,
                left: 0,
                height: 30,
                width: 36
            }
        );
        // 10 / 40 = 0.25 < 3/4: full width, height round(10 / 0.75) = 13, centred.
        assert_eq!(
            central(40, 10),
            CropBox {
                top: 13,
                left: 0,
                height: 13,
                width: 10
            }
        );
        // 50 / 10 > 4/3: full height, width round(10 · 4/3) = 13, centred.
        assert_eq!(
            central(10, 50),
            CropBox {
                top: 0,
                left: 18,
                height: 10,
                width: 13
            }
        );
        // A scale range no box can meet (more than the whole image) always falls back.
        let never = ResizedCrop {
            scale: (1.5, 2.0),
            ..rrc
        };
        assert_eq!(never.draw((40, 10), &mut rng), central(40, 10));
    }

    #[test]
    fn python_rounding_and_a_resized_box() {
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(2.49), 2);
        // A 2 × 2 box of a 4 × 4 plane resized to 4 × 4: a constant box stays constant, and
        // the box (not the whole plane) is what is read.
        let mut plane = vec![0u8; 16];
        for y in 1..3 {
            for x in 2..4 {
                plane[y * 4 + x] = 200;
            }
        }
        let b = CropBox {
            top: 1,
            left: 2,
            height: 2,
            width: 2,
        };
        assert_eq!(resize_box(&plane, (4, 4), b, (4, 4)), vec![200; 16]);
        let whole = CropBox {
            top: 0,
            left: 0,
            height: 4,
            width: 4,
        };
        assert_eq!(resize_box(&plane, (4, 4), whole, (4, 4)), plane);
    }
}
