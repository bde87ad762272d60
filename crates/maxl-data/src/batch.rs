//! Turning dataset images into normalised float batches, with the reference augmentation:
//! a random crop of the original size from the image zero-padded by `crop_padding` pixels, and a
//! horizontal flip with probability ½. Padding is black in pixel space (before normalisation),
//! as torchvision's `RandomCrop(padding=…)` applied before `Normalize`. Instead of the padded
//! crop, a random resized crop ([`crate::resized_crop`]) can cut each image's box and resize it
//! to the network's input; images kept larger than the input are otherwise centre-cropped to it.

use rand::Rng;
use rayon::prelude::*;

use crate::Dataset;
use crate::resized_crop::{CropBox, ResizedCrop, resize_box};

/// The training augmentation: a random crop from a zero-padded image or a random resized crop,
/// and a random horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Pixels of black padding on each side before the crop; 0 for no crop.
    pub crop_padding: usize,
    /// Mirror each image with probability ½.
    pub horizontal_flip: bool,
    /// A random resized crop of each image instead of the padded crop (`crop_padding` is then
    /// not used).
    pub resized_crop: Option<ResizedCrop>,
}

/// Where one image's crop window sits, in pixels from the unpadded image, and whether the
/// image is mirrored (before the shift: output column x of an output W′ wide reads column
/// `W′−1−x + dx`). With `crop`, the window is that box resized to the output instead, then
/// mirrored when `flip` says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placement {
    /// Rows the window is shifted by (−padding..=padding, or the centre crop's top row).
    pub dy: isize,
    /// Columns the window is shifted by (−padding..=padding, or the centre crop's left column).
    pub dx: isize,
    /// Whether the image is mirrored left to right.
    pub flip: bool,
    /// A random resized crop's box, resized to the output.
    pub crop: Option<CropBox>,
}

impl Placement {
    /// The central `out` window of an image of `size` (rows, columns), unmirrored: torchvision's
    /// `CenterCrop`, whose offsets are Python's `round((size − out) / 2)`.
    pub fn center(size: (usize, usize), out: (usize, usize)) -> Placement {
        let offset = |n: usize, o: usize| ((n.saturating_sub(o)) as f64 / 2.0).round_ties_even();
        Placement {
            dy: offset(size.0, out.0) as isize,
            dx: offset(size.1, out.1) as isize,
            ..Placement::default()
        }
    }
}

impl Augment {
    /// One image's random placement in an image of `size` (rows, columns): the random resized
    /// crop's draws ([`ResizedCrop::draw`]) or the row shift then the column shift, then the
    /// flip, in that order from `rng` (every way of building a batch draws them so, which keeps
    /// the random stream, and so the batches, the same).
    pub fn draw<R: Rng>(&self, size: (usize, usize), rng: &mut R) -> Placement {
        let p = self.crop_padding as i64;
        let (mut dy, mut dx, mut crop) = (0, 0, None);
        if let Some(rrc) = self.resized_crop {
            crop = Some(rrc.draw(size, rng));
        } else if p > 0 {
            dy = rng.random_range(-p..=p) as isize;
            dx = rng.random_range(-p..=p) as isize;
        }
        let flip = self.horizontal_flip && rng.random_bool(0.5);
        Placement { dy, dx, flip, crop }
    }
}

/// The placements of `n` images of `size` (rows, columns): drawn in turn when `augment` is
/// given, unmoved otherwise.
pub fn placements<R: Rng>(
    augment: Option<Augment>,
    n: usize,
    size: (usize, usize),
    rng: &mut R,
) -> Vec<Placement> {
    match augment {
        Some(a) => (0..n).map(|_| a.draw(size, rng)).collect(),
        None => vec![Placement::default(); n],
    }
}

/// `x = (pixel / 255 − mean[c]) / std[c]` for a pixel of channel c (at most 3 channels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Subtracted from every pixel in [0, 1], per channel.
    pub mean: [f32; 3],
    /// Divides every pixel after the mean is subtracted, per channel.
    pub std: [f32; 3],
}

impl Normalize {
    /// The same mean and std for every channel.
    pub fn uniform(mean: f32, std: f32) -> Self {
        Self {
            mean: [mean; 3],
            std: [std; 3],
        }
    }

    /// One mean and std per channel (channel 0 first; 1 to 3 values each).
    pub fn per_channel(mean: &[f32], std: &[f32]) -> Self {
        let pick = |v: &[f32], c: usize| v.get(c).or(v.last()).copied().unwrap_or(0.0);
        Self {
            mean: std::array::from_fn(|c| pick(mean, c)),
            std: std::array::from_fn(|c| pick(std, c)),
        }
    }

    /// One 8-bit pixel of `channel` as the network's normalised input.
    pub fn apply(self, pixel: u8, channel: usize) -> f32 {
        (maxl_preprocess::unit(pixel) - self.mean[channel]) / self.std[channel]
    }

    /// The normalised value of every pixel value 0…255 of every channel, channel-major
    /// (`channels` × 256): a lookup table that gives exactly [`Normalize::apply`]'s numbers
    /// wherever it is applied.
    pub fn table(self, channels: usize) -> Vec<f32> {
        (0..channels)
            .flat_map(|c| (0..256).map(move |p| self.apply(p as u8, c)))
            .collect()
    }
}

/// The images at `indices` as a flat N × C × H × W buffer, augmented when `augment` is given.
pub fn assemble<R: Rng>(
    ds: &Dataset,
    indices: &[usize],
    norm: Normalize,
    augment: Option<(Augment, &mut R)>,
) -> Vec<f32> {
    let size = (ds.height, ds.width);
    let placements = match augment {
        Some((aug, rng)) => placements(Some(aug), indices.len(), size, rng),
        None => vec![Placement::default(); indices.len()],
    };
    assemble_placed(ds, indices, norm, &placements)
}

/// The images at `indices`, each placed as `placements` says, as a flat N × C × H × W buffer
/// of the dataset's image size.
pub fn assemble_placed(
    ds: &Dataset,
    indices: &[usize],
    norm: Normalize,
    placements: &[Placement],
) -> Vec<f32> {
    assemble_sized(ds, indices, norm, placements, (ds.height, ds.width))
}

/// The images at `indices`, each placed as `placements` says, as a flat N × C × H′ × W′ buffer,
/// `out` = (H′, W′): a window of that size (outside the image black), or a crop box resized
/// to it. Large images are placed in parallel on the current rayon pool; every image's values
/// are the same whichever thread makes them.
pub fn assemble_sized(
    ds: &Dataset,
    indices: &[usize],
    norm: Normalize,
    placements: &[Placement],
    out: (usize, usize),
) -> Vec<f32> {
    let n = ds.channels * out.0 * out.1;
    if n == 0 {
        return Vec::new();
    }
    let mut buf = vec![0f32; indices.len() * n];
    // About 256 Ki values per task: batches of small images (CIFAR's, Fashion-MNIST's) stay on
    // the batch thread, photo-sized ones spread over the pool.
    let min_len = (1 << 18) / n + 1;
    buf.par_chunks_mut(n)
        .zip(indices.par_iter().zip(placements.par_iter()))
        .with_min_len(min_len)
        .for_each(|(dst, (&i, p))| place(ds, i, norm, p, out, dst));
    buf
}

/// Image `i` of `ds` placed as `p` says, normalised into `dst` (C × H′ × W′).
fn place(
    ds: &Dataset,
    i: usize,
    norm: Normalize,
    p: &Placement,
    (oh, ow): (usize, usize),
    dst: &mut [f32],
) {
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let img = ds.image(i);
    let column = |x: usize| if p.flip { ow - 1 - x } else { x };
    for (ch, dst) in dst.chunks_exact_mut(oh * ow).enumerate().take(c) {
        let plane = &img[ch * h * w..(ch + 1) * h * w];
        if let Some(b) = p.crop {
            let resized = resize_box(plane, (h, w), b, (oh, ow));
            for (row, d) in resized.chunks_exact(ow).zip(dst.chunks_exact_mut(ow)) {
                for (x, v) in d.iter_mut().enumerate() {
                    *v = norm.apply(row[column(x)], ch);
                }
            }
            continue;
        }
        for (y, d) in dst.chunks_exact_mut(ow).enumerate() {
            let sy = y as isize + p.dy;
            for (x, v) in d.iter_mut().enumerate() {
                let sx = column(x) as isize + p.dx;
                let pixel = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                    plane[sy as usize * w + sx as usize]
                } else {
                    0
                };
                *v = norm.apply(pixel, ch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ds() -> Dataset {
        Dataset {
            channels: 1,
            height: 2,
            width: 3,
            pixels: vec![0, 51, 102, 153, 204, 255],
            labels: vec![0],
            fine_labels: None,
            class_names: vec!["a".into()],
            fine_class_names: None,
            files: None,
        }
    }

    #[test]
    fn normalises_without_augmentation() {
        let n = Normalize::uniform(0.5, 0.25);
        let out = assemble::<rand::rngs::StdRng>(&ds(), &[0], n, None);
        let want: Vec<f32> = [0.0f32, 0.2, 0.4, 0.6, 0.8, 1.0]
            .iter()
            .map(|p| (p - 0.5) / 0.25)
            .collect();
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn a_flip_mirrors_each_row_and_both_outcomes_appear() {
        let n = Normalize::uniform(0.0, 1.0 / 255.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let flip_only = Augment {
            crop_padding: 0,
            horizontal_flip: true,
            resized_crop: None,
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let out = assemble(&ds(), &[0], n, Some((flip_only, &mut rng)));
            let px: Vec<u8> = out.iter().map(|v| v.round() as u8).collect();
            assert!(
                px == [0, 51, 102, 153, 204, 255] || px == [102, 51, 0, 255, 204, 153],
                "{px:?}"
            );
            seen.insert(px);
        }
        assert_eq!(seen.len(), 2, "both flipped and unflipped images appear");
    }

    /// `img` (c × h × w) zero-padded by `p` pixels on every side, the h × w window at row
    /// `p + dy`, column `p + dx` of the padded image cut out, then mirrored when `flip`:
    /// torchvision's `RandomCrop(padding = p)` followed by `RandomHorizontalFlip`, written out
    /// step by step.
    fn crop_by_hand(
        img: &[u8],
        (c, h, w): (usize, usize, usize),
        p: usize,
        (dy, dx, flip): (i64, i64, bool),
    ) -> Vec<u8> {
        let (ph, pw) = (h + 2 * p, w + 2 * p);
        let mut padded = vec![0u8; c * ph * pw];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    padded[(ch * ph + y + p) * pw + x + p] = img[(ch * h + y) * w + x];
                }
            }
        }
        let (top, left) = ((p as i64 + dy) as usize, (p as i64 + dx) as usize);
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            for y in 0..h {
                let row = &padded[(ch * ph + top + y) * pw + left..][..w];
                if flip {
                    out.extend(row.iter().rev());
                } else {
                    out.extend(row);
                }
            }
        }
        out
    }

    #[test]
    fn resized_crops_resize_the_drawn_box_and_centre_crops_follow_torchvision() {
        let (c, h, w) = (2, 6, 8);
        let ds = Dataset {
            channels: c,
            height: h,
            width: w,
            pixels: (0..c * h * w).map(|v| (v * 2) as u8).collect(),
            labels: vec![0],
            fine_labels: None,
            class_names: vec!["a".into()],
            fine_class_names: None,
            files: None,
        };
        let n = Normalize::uniform(0.0, 1.0 / 255.0);
        let rrc = ResizedCrop::default();
        let aug = Augment {
            crop_padding: 0,
            horizontal_flip: true,
            resized_crop: Some(rrc),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut flips = std::collections::BTreeSet::new();
        for _ in 0..40 {
            // The draws: the box, then the flip.
            let mut replay = rng.clone();
            let p = placements(Some(aug), 1, (h, w), &mut rng);
            let b = rrc.draw((h, w), &mut replay);
            let flip = replay.random_bool(0.5);
            let want = Placement {
                crop: Some(b),
                flip,
                ..Placement::default()
            };
            assert_eq!(p, [want]);
            let out = assemble_sized(&ds, &[0], n, &p, (4, 5));
            let px: Vec<u8> = out.iter().map(|v| v.round() as u8).collect();
            for ch in 0..c {
                let r = resize_box(&ds.image(0)[ch * h * w..][..h * w], (h, w), b, (4, 5));
                for y in 0..4 {
                    for x in 0..5 {
                        let sx = if flip { 4 - x } else { x };
                        assert_eq!(px[(ch * 4 + y) * 5 + x], r[y * 5 + sx], "{b:?} {flip}");
                    }
                }
            }
            flips.insert(flip);
        }
        assert_eq!(flips.len(), 2);
        // torchvision's CenterCrop offsets: round((size − out) / 2), halves to even.
        let center = Placement::center((6, 8), (4, 4));
        assert_eq!((center.dy, center.dx, center.flip), (1, 2, false));
        assert_eq!(Placement::center((7, 4), (4, 4)).dy, 2, "1.5 → 2");
        assert_eq!(Placement::center((9, 4), (4, 4)).dy, 2, "2.5 → 2");
        let out = assemble_sized(&ds, &[0], n, &[center], (4, 4));
        for ch in 0..c {
            for y in 0..4 {
                for x in 0..4 {
                    let want = ds.image(0)[(ch * h + y + 1) * w + x + 2];
                    assert_eq!(out[(ch * 4 + y) * 4 + x].round() as u8, want);
                }
            }
        }
    }

    #[test]
    fn each_image_is_its_own_random_crop_and_flip_of_the_padded_image() {
        // 2 channels of 3 × 4 (not square), three images, every pixel a different non-zero
        // value: the padding (0) and every shift, flip and channel mix-up show.
        let (c, h, w) = (2, 3, 4);
        let ds = Dataset {
            channels: c,
            height: h,
            width: w,
            pixels: (1..=3 * c * h * w).map(|v| v as u8).collect(),
            labels: vec![0; 3],
            fine_labels: None,
            class_names: vec!["a".into()],
            fine_class_names: None,
            files: None,
        };
        let n = Normalize::uniform(0.0, 1.0 / 255.0);
        let p = 2;
        let aug = Augment {
            crop_padding: p,
            horizontal_flip: true,
            resized_crop: None,
        };
        let order = [2, 0, 1];
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..150 {
            // The documented draws, replayed from a copy of the stream: per image the row
            // shift, the column shift, each uniform in −p..=p, then a fair coin for the flip.
            let mut replay = rng.clone();
            let out = assemble(&ds, &order, n, Some((aug, &mut rng)));
            let px: Vec<u8> = out.iter().map(|v| v.round() as u8).collect();
            assert_eq!(px.len(), order.len() * c * h * w);
            for (j, &i) in order.iter().enumerate() {
                let pl = p as i64;
                let dy = replay.random_range(-pl..=pl);
                let dx = replay.random_range(-pl..=pl);
                let flip = replay.random_bool(0.5);
                let want = crop_by_hand(ds.image(i), (c, h, w), p, (dy, dx, flip));
                let got = &px[j * c * h * w..(j + 1) * c * h * w];
                assert_eq!(got, want, "image {i}: dy {dy}, dx {dx}, flip {flip}");
                seen.insert((dy, dx, flip));
            }
        }
        assert_eq!(
            seen.len(),
            5 * 5 * 2,
            "every shift in −2..=2 with and without flip"
        );
    }
}
