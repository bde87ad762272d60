//! What a finished label CSV says, read back from the file itself (so a resumed or merged run
//! reports its whole output): per-slot counts for the summary, the most confident images of
//! each slot for the gallery and, for a `maxl-weighted` model (a CSV with `aux_weight`), the
//! distribution of the per-image weights and the lowest-weighted images of each class.

use std::path::Path;

use maxl_infer::MaxlModel;

use crate::LabelError;
use crate::output::read_rows;

/// One image the gallery shows: its slot's probability, its weight (when the CSV has
/// `aux_weight`) and its path as the CSV has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// `aux_probability`.
    pub probability: f32,
    /// `aux_weight`, for a `maxl-weighted` model.
    pub weight: Option<f32>,
    /// `aux_slot`.
    pub slot: usize,
    /// `path`.
    pub path: String,
}

/// The distribution of the per-image weights `aux_weight` (in (0, 2); 1 counts an image's
/// auxiliary loss as plain MAXL does). Percentiles interpolate linearly between the sorted
/// weights (numpy's default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightStats {
    /// Rows with a weight.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// The smallest.
    pub min: f64,
    /// The 10th percentile.
    pub p10: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The largest.
    pub max: f64,
}

/// Counts, the most confident images per auxiliary slot and, with weights, their distribution.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Label rows.
    pub rows: u64,
    /// Rows with a non-empty `flag`.
    pub flagged: u64,
    /// Images per slot (index among all Σψ slots).
    pub per_slot: Vec<u64>,
    /// Per slot, up to `keep` images, most confident first (ties: path order).
    pub best: Vec<Vec<Pick>>,
    /// Every row's `aux_weight`, in file order (empty for a CSV without the column).
    pub weights: Vec<f32>,
    /// Per slot, the sum of its images' weights (zeros without weights).
    pub weight_sum: Vec<f64>,
    /// Per primary class, up to `keep` images with the lowest weights, lowest first (ties: path
    /// order); empty without weights.
    pub lowest: Vec<Vec<Pick>>,
}

impl Tally {
    /// Images in slot `j` (0 for a slot this tally does not have).
    pub fn slot(&self, j: usize) -> u64 {
        self.per_slot.get(j).copied().unwrap_or(0)
    }

    /// Slot `j`'s most confident images (none for a slot this tally does not have).
    pub fn best(&self, j: usize) -> &[Pick] {
        self.best.get(j).map_or(&[], Vec::as_slice)
    }

    /// Images whose slot belongs to class `k` (0 for a class the model does not have).
    pub fn class_total(&self, model: &MaxlModel, k: usize) -> u64 {
        if k >= model.num_classes() {
            return 0;
        }
        model.hierarchy().slots(k).map(|j| self.slot(j)).sum()
    }

    /// Whether the CSV had per-image weights (`aux_weight`, a `maxl-weighted` model).
    pub fn weighted(&self) -> bool {
        !self.weights.is_empty()
    }

    /// The weights' distribution; `None` without weights.
    pub fn weight_stats(&self) -> Option<WeightStats> {
        weight_stats(&self.weights)
    }

    /// The mean weight of slot `j`'s images; `None` without weights or images.
    pub fn slot_mean_weight(&self, j: usize) -> Option<f64> {
        let n = self.slot(j);
        (self.weighted() && n > 0)
            .then(|| self.weight_sum.get(j).copied().unwrap_or(0.0) / n as f64)
    }

    /// The mean weight of class `k`'s images; `None` without weights or images.
    pub fn class_mean_weight(&self, model: &MaxlModel, k: usize) -> Option<f64> {
        let n = self.class_total(model, k);
        if !self.weighted() || n == 0 {
            return None;
        }
        let sum: f64 = model
            .hierarchy()
            .slots(k)
            .map(|j| self.weight_sum.get(j).copied().unwrap_or(0.0))
            .sum();
        Some(sum / n as f64)
    }

    /// Class `k`'s lowest-weighted images (none without weights).
    pub fn lowest(&self, k: usize) -> &[Pick] {
        self.lowest.get(k).map_or(&[], Vec::as_slice)
    }
}

/// The distribution of `weights`; `None` when there are none.
pub fn weight_stats(weights: &[f32]) -> Option<WeightStats> {
    if weights.is_empty() {
        return None;
    }
    let mut w: Vec<f64> = weights.iter().map(|&v| v as f64).collect();
    w.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (w.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        w[lo] + (w[hi] - w[lo]) * (pos - lo as f64)
    };
    Some(WeightStats {
        count: w.len() as u64,
        mean: w.iter().sum::<f64>() / w.len() as f64,
        min: w[0],
        p10: at(0.1),
        p50: at(0.5),
        p90: at(0.9),
        max: w[w.len() - 1],
    })
}

/// Most confident first, then path order.
fn by_confidence(a: &Pick, b: &Pick) -> std::cmp::Ordering {
    b.probability
        .total_cmp(&a.probability)
        .then_with(|| a.path.cmp(&b.path))
}

/// Lowest weight first, then path order.
fn by_weight(a: &Pick, b: &Pick) -> std::cmp::Ordering {
    let w = |p: &Pick| p.weight.unwrap_or(f32::INFINITY);
    w(a).total_cmp(&w(b)).then_with(|| a.path.cmp(&b.path))
}

/// Adds `pick` to `list`, which keeps the first `keep` in `order` (trimmed now and then).
fn keep_best(
    list: &mut Vec<Pick>,
    pick: Pick,
    keep: usize,
    order: fn(&Pick, &Pick) -> std::cmp::Ordering,
) {
    list.push(pick);
    if list.len() >= 4 * keep {
        list.sort_by(order);
        list.truncate(keep);
    }
}

/// Reads `csv` (a finished maxl-label CSV for `model`) and keeps the `keep` most confident
/// images of every slot and, when the CSV has `aux_weight`, the `keep` lowest-weighted images of
/// every class.
pub fn tally(csv: &Path, model: &MaxlModel, keep: usize) -> Result<Tally, LabelError> {
    let h = model.hierarchy();
    let slots = h.num_aux();
    let mut t = Tally {
        per_slot: vec![0; slots],
        best: vec![Vec::new(); slots],
        weight_sum: vec![0.0; slots],
        lowest: vec![Vec::new(); model.num_classes()],
        ..Default::default()
    };
    let mut bad = None;
    read_rows(csv, |row| {
        if row.aux_slot >= slots {
            bad.get_or_insert(format!(
                "{}: aux_slot {} is out of range (the model has {slots} slots)",
                row.path, row.aux_slot
            ));
            return;
        }
        t.rows += 1;
        t.flagged += row.flagged as u64;
        t.per_slot[row.aux_slot] += 1;
        if let Some(w) = row.aux_weight {
            t.weights.push(w);
            t.weight_sum[row.aux_slot] += w as f64;
        }
        if keep > 0 {
            let pick = Pick {
                probability: row.aux_probability,
                weight: row.aux_weight,
                slot: row.aux_slot,
                path: row.path,
            };
            if pick.weight.is_some()
                && let Ok(k) = h.owner_of_slot(row.aux_slot)
            {
                keep_best(&mut t.lowest[k], pick.clone(), keep, by_weight);
            }
            keep_best(&mut t.best[row.aux_slot], pick, keep, by_confidence);
        }
    })?;
    if let Some(message) = bad {
        return Err(LabelError::Format {
            path: csv.to_path_buf(),
            message,
        });
    }
    for b in &mut t.best {
        b.sort_by(by_confidence);
        b.truncate(keep);
    }
    for l in &mut t.lowest {
        l.sort_by(by_weight);
        l.truncate(keep);
    }
    Ok(t)
}

/// Per class: images and how many went to each of its slots (classes with none are left out);
/// then, for a CSV with `aux_weight`, the weights' distribution.
pub fn summary(model: &MaxlModel, t: &Tally) -> String {
    let h = model.hierarchy();
    let mut s = String::new();
    for (k, c) in model.manifest().classes.iter().enumerate() {
        let n = t.class_total(model, k);
        if n > 0 {
            let per: Vec<String> = h.slots(k).map(|j| t.slot(j).to_string()).collect();
            s.push_str(&format!(
                "  {:<16} {n:>8} images, per slot: {}\n",
                c.name,
                per.join(" / ")
            ));
        }
    }
    if let Some(w) = t.weight_stats() {
        s.push_str(&format!(
            "  aux_weight: mean {:.3}, p10 {:.3}, p50 {:.3}, p90 {:.3} (min {:.3}, max {:.3}; 1 = as plain MAXL, near 0 = auxiliary loss down-weighted)\n",
            w.mean, w.p10, w.p50, w.p90, w.min, w.max
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_percentiles_interpolate_like_numpy() {
        assert_eq!(weight_stats(&[]), None);
        let one = weight_stats(&[0.5]).unwrap();
        assert_eq!((one.p10, one.p50, one.p90, one.mean), (0.5, 0.5, 0.5, 0.5));
        // numpy.percentile([0.2, 0.4, 1.0, 1.2, 1.8], [10, 50, 90]) = [0.28, 1.0, 1.56].
        let w = weight_stats(&[1.8, 0.2, 1.0, 0.4, 1.2]).unwrap();
        assert_eq!(w.count, 5);
        for (got, want) in [
            (w.p10, 0.28),
            (w.p50, 1.0),
            (w.p90, 1.56),
            (w.mean, 0.92),
            (w.min, 0.2),
            (w.max, 1.8),
        ] {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
