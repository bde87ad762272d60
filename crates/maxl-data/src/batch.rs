//! Turning dataset images into normalised float batches, with the reference augmentation:
//! a random crop of the original size from the image zero-padded by `crop_padding` pixels, and a
//! horizontal flip with probability ½. Padding is black in pixel space (before normalisation),
//! as torchvision's `RandomCrop(padding=…)` applied before `Normalize`.

use rand::Rng;

use crate::Dataset;

/// The reference augmentation: a random crop from a zero-padded image and a random horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Pixels of black padding on each side before the crop; 0 for no crop.
    pub crop_padding: usize,
    /// Mirror each image with probability ½.
    pub horizontal_flip: bool,
}

/// Where one image's crop window sits, in pixels from the unpadded image, and whether the
/// image is mirrored (before the shift: output column x reads column `W−1−x + dx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placement {
    /// Rows the window is shifted by (−padding..=padding).
    pub dy: isize,
    /// Columns the window is shifted by (−padding..=padding).
    pub dx: isize,
    /// Whether the image is mirrored left to right.
    pub flip: bool,
}

impl Augment {
    /// One image's random placement: the row shift, the column shift, then the flip, in that
    /// order from `rng` (every way of building a batch draws them so, which keeps the random
    /// stream, and so the batches, the same).
    pub fn draw<R: Rng>(&self, rng: &mut R) -> Placement {
        let p = self.crop_padding as i64;
        let (mut dy, mut dx) = (0, 0);
        if p > 0 {
            dy = rng.random_range(-p..=p) as isize;
            dx = rng.random_range(-p..=p) as isize;
        }
        let flip = self.horizontal_flip && rng.random_bool(0.5);
        Placement { dy, dx, flip }
    }
}

/// The placements of `n` images: drawn in turn when `augment` is given, unmoved otherwise.
pub fn placements<R: Rng>(augment: Option<Augment>, n: usize, rng: &mut R) -> Vec<Placement> {
    match augment {
        Some(a) => (0..n).map(|_| a.draw(rng)).collect(),
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
    let placements = match augment {
        Some((aug, rng)) => placements(Some(aug), indices.len(), rng),
        None => vec![Placement::default(); indices.len()],
    };
    assemble_placed(ds, indices, norm, &placements)
}

/// The images at `indices`, each placed as `placements` says, as a flat N × C × H × W buffer.
pub fn assemble_placed(
    ds: &Dataset,
    indices: &[usize],
    norm: Normalize,
    placements: &[Placement],
) -> Vec<f32> {
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let mut out = Vec::with_capacity(indices.len() * c * h * w);
    for (&i, &Placement { dy, dx, flip }) in indices.iter().zip(placements) {
        let img = ds.image(i);
        for ch in 0..c {
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            for y in 0..h as isize {
                let sy = y + dy;
                for x in 0..w as isize {
                    let xx = if flip { w as isize - 1 - x } else { x };
                    let sx = xx + dx;
                    let pixel = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        plane[sy as usize * w + sx as usize]
                    } else {
                        0
                    };
                    out.push(norm.apply(pixel, ch));
                }
            }
        }
    }
    out
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
        };
        let n = Normalize::uniform(0.0, 1.0 / 255.0);
        let p = 2;
        let aug = Augment {
            crop_padding: p,
            horizontal_flip: true,
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
