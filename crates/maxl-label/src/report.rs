//! What a finished label CSV says, read back from the file itself (so a resumed or merged run
//! reports its whole output): per-slot counts for the summary, and the most confident images of
//! each slot for the gallery.

use std::path::Path;

use maxl_infer::MaxlModel;

use crate::LabelError;
use crate::output::read_rows;

/// Counts and the most confident images per auxiliary slot.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Label rows.
    pub rows: u64,
    /// Rows with a non-empty `flag`.
    pub flagged: u64,
    /// Images per slot (index among all Σψ slots).
    pub per_slot: Vec<u64>,
    /// Per slot, up to `keep` (aux_probability, path), most confident first (ties: path order).
    pub best: Vec<Vec<(f32, String)>>,
}

impl Tally {
    /// Images in slot `j` (0 for a slot this tally does not have).
    pub fn slot(&self, j: usize) -> u64 {
        self.per_slot.get(j).copied().unwrap_or(0)
    }

    /// Slot `j`'s most confident images (none for a slot this tally does not have).
    pub fn best(&self, j: usize) -> &[(f32, String)] {
        self.best.get(j).map_or(&[], Vec::as_slice)
    }

    /// Images whose slot belongs to class `k` (0 for a class the model does not have).
    pub fn class_total(&self, model: &MaxlModel, k: usize) -> u64 {
        if k >= model.num_classes() {
            return 0;
        }
        model.hierarchy().slots(k).map(|j| self.slot(j)).sum()
    }
}

fn order(a: &(f32, String), b: &(f32, String)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1))
}

/// Reads `csv` (a finished maxl-label CSV for `model`) and keeps the `keep` most confident
/// images of every slot.
pub fn tally(csv: &Path, model: &MaxlModel, keep: usize) -> Result<Tally, LabelError> {
    let slots = model.hierarchy().num_aux();
    let mut t = Tally {
        per_slot: vec![0; slots],
        best: vec![Vec::new(); slots],
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
        if keep > 0 {
            let b = &mut t.best[row.aux_slot];
            b.push((row.aux_probability, row.path));
            if b.len() >= 4 * keep {
                b.sort_by(order);
                b.truncate(keep);
            }
        }
    })?;
    if let Some(message) = bad {
        return Err(LabelError::Format {
            path: csv.to_path_buf(),
            message,
        });
    }
    for b in &mut t.best {
        b.sort_by(order);
        b.truncate(keep);
    }
    Ok(t)
}

/// Per class: images and how many went to each of its slots (classes with none are left out).
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
    s
}
