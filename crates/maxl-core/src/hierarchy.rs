//! The hierarchy ψ: how many auxiliary classes each primary class owns.
//!
//! Auxiliary classes are laid out contiguously: primary class k owns the slots
//! `[Σ_{j<k} ψ_j, Σ_{j≤k} ψ_j)`. Everything that needs the layout (the mask softmax in training
//! and in the exported graph, slot names, label validation) asks this type, so there is one
//! definition of it.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Why a ψ or a label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HierarchyError {
    /// ψ has no entries.
    #[error("ψ is empty: give one auxiliary-class count per primary class")]
    Empty,
    /// A primary class would own no auxiliary class.
    #[error("ψ[{class}] is 0: every primary class needs at least one auxiliary class")]
    ZeroEntry {
        /// The primary class.
        class: usize,
    },
    /// ψ has another length than the number of primary classes.
    #[error("ψ has {len} entries but the dataset has {classes} primary classes")]
    LengthMismatch {
        /// ψ's length.
        len: usize,
        /// The number of primary classes (K).
        classes: usize,
    },
    /// A primary label outside [0, K).
    #[error("label {label} is outside the primary classes [0, {classes})")]
    LabelOutOfRange {
        /// The label given.
        label: i64,
        /// The number of primary classes (K).
        classes: usize,
    },
    /// An auxiliary slot outside [0, Σψ).
    #[error("auxiliary slot {slot} is outside [0, {slots})")]
    SlotOutOfRange {
        /// The slot given.
        slot: usize,
        /// The number of slots (Σψ).
        slots: usize,
    },
}

/// How ψ is written in a config: explicitly, or as "n for every class".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiSpec {
    /// One count per primary class.
    Psi(Vec<usize>),
    /// The same count for every primary class.
    PsiPerClass(usize),
}

/// A validated ψ with its slot offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    psi: Vec<usize>,
    /// `offsets[k]` is the first slot of class k; `offsets[K]` is the number of slots.
    offsets: Vec<usize>,
}

impl Hierarchy {
    /// Validates ψ: non-empty, no zero entry.
    pub fn new(psi: Vec<usize>) -> Result<Self, HierarchyError> {
        if psi.is_empty() {
            return Err(HierarchyError::Empty);
        }
        if let Some(class) = psi.iter().position(|&n| n == 0) {
            return Err(HierarchyError::ZeroEntry { class });
        }
        let mut offsets = Vec::with_capacity(psi.len() + 1);
        let mut total = 0;
        for &n in &psi {
            offsets.push(total);
            total += n;
        }
        offsets.push(total);
        Ok(Self { psi, offsets })
    }

    /// Resolves a config's ψ against the dataset's number of primary classes.
    pub fn from_spec(spec: &PsiSpec, num_primary: usize) -> Result<Self, HierarchyError> {
        match spec {
            PsiSpec::Psi(psi) => {
                let h = Self::new(psi.clone())?;
                if h.num_primary() != num_primary {
                    return Err(HierarchyError::LengthMismatch {
                        len: h.num_primary(),
                        classes: num_primary,
                    });
                }
                Ok(h)
            }
            PsiSpec::PsiPerClass(n) => {
                if num_primary == 0 {
                    return Err(HierarchyError::Empty);
                }
                Self::new(vec![*n; num_primary])
            }
        }
    }

    /// ψ: the number of auxiliary classes of each primary class, in class order.
    pub fn psi(&self) -> &[usize] {
        &self.psi
    }

    /// K, the number of primary classes.
    pub fn num_primary(&self) -> usize {
        self.psi.len()
    }

    /// A = Σ ψ_k, the number of auxiliary slots.
    pub fn num_aux(&self) -> usize {
        self.offsets[self.psi.len()]
    }

    /// The auxiliary slots owned by primary class `class` (which must be < K).
    pub fn slots(&self, class: usize) -> Range<usize> {
        self.offsets[class]..self.offsets[class + 1]
    }

    /// Checks that a label is a primary class and returns it as an index.
    pub fn check_label(&self, label: i64) -> Result<usize, HierarchyError> {
        if label < 0 || label as u64 >= self.num_primary() as u64 {
            return Err(HierarchyError::LabelOutOfRange {
                label,
                classes: self.num_primary(),
            });
        }
        Ok(label as usize)
    }

    /// The primary class that owns an auxiliary slot.
    pub fn owner_of_slot(&self, slot: usize) -> Result<usize, HierarchyError> {
        if slot >= self.num_aux() {
            return Err(HierarchyError::SlotOutOfRange {
                slot,
                slots: self.num_aux(),
            });
        }
        // offsets is sorted; the owner is the last class whose first slot is <= slot.
        Ok(self.offsets.partition_point(|&o| o <= slot) - 1)
    }

    /// The 0/1 mask of one primary class over all A slots.
    pub fn mask_row(&self, class: usize) -> Vec<f32> {
        let mut row = vec![0.0; self.num_aux()];
        row[self.slots(class)].fill(1.0);
        row
    }

    /// The K×A mask table, row-major: row k is `mask_row(k)`. Gathered by label in training and
    /// stored as a constant in the exported label generator.
    pub fn mask_table(&self) -> Vec<f32> {
        (0..self.num_primary())
            .flat_map(|k| self.mask_row(k))
            .collect()
    }

    /// Slot names `<class>.<k>` for folder-safe class names, in slot order.
    pub fn slot_names<S: AsRef<str>>(&self, class_names: &[S]) -> Vec<String> {
        (0..self.num_primary())
            .flat_map(|k| {
                let name = class_names
                    .get(k)
                    .map(|s| s.as_ref().to_string())
                    .unwrap_or_else(|| format!("class{k}"));
                (0..self.psi[k]).map(move |i| format!("{name}.{i}"))
            })
            .collect()
    }
}

/// A folder-safe form of a class's display name: ASCII letters, digits, `-` and `_` kept,
/// everything else (slashes, spaces, dots) becomes `_`, runs collapsed. "T-shirt/top" → "T-shirt_top".
pub fn folder_safe_name(display: &str) -> String {
    let mut out = String::with_capacity(display.len());
    for c in display.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '-' || c == '_';
        let c = if keep { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "class".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_masks_follow_the_method() {
        let h = Hierarchy::new(vec![2, 2]).unwrap();
        assert_eq!(h.num_aux(), 4);
        assert_eq!(h.mask_row(0), vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(h.mask_row(1), vec![0.0, 0.0, 1.0, 1.0]);
        let h = Hierarchy::new(vec![1, 3, 2]).unwrap();
        assert_eq!(h.slots(1), 1..4);
        assert_eq!(h.slots(2), 4..6);
        assert_eq!(
            h.mask_table(),
            vec![
                1., 0., 0., 0., 0., 0., //
                0., 1., 1., 1., 0., 0., //
                0., 0., 0., 0., 1., 1.
            ]
        );
        let owners: Vec<usize> = (0..6).map(|s| h.owner_of_slot(s).unwrap()).collect();
        assert_eq!(owners, vec![0, 1, 1, 1, 2, 2]);
        assert_eq!(
            h.owner_of_slot(6),
            Err(HierarchyError::SlotOutOfRange { slot: 6, slots: 6 })
        );
    }

    #[test]
    fn invalid_psi_is_refused() {
        assert_eq!(Hierarchy::new(vec![]), Err(HierarchyError::Empty));
        assert_eq!(
            Hierarchy::new(vec![3, 0, 2]),
            Err(HierarchyError::ZeroEntry { class: 1 })
        );
        assert_eq!(
            Hierarchy::from_spec(&PsiSpec::Psi(vec![2, 2, 2]), 10),
            Err(HierarchyError::LengthMismatch {
                len: 3,
                classes: 10
            })
        );
        assert_eq!(
            Hierarchy::from_spec(&PsiSpec::PsiPerClass(0), 10),
            Err(HierarchyError::ZeroEntry { class: 0 })
        );
        let h = Hierarchy::from_spec(&PsiSpec::PsiPerClass(5), 20).unwrap();
        assert_eq!(h.num_aux(), 100);
        assert_eq!(h.psi(), &[5; 20]);
    }

    #[test]
    fn labels_outside_the_primary_classes_are_refused() {
        let h = Hierarchy::new(vec![2, 3]).unwrap();
        assert_eq!(h.check_label(1), Ok(1));
        for bad in [-1, 2, i64::MAX, i64::MIN] {
            assert_eq!(
                h.check_label(bad),
                Err(HierarchyError::LabelOutOfRange {
                    label: bad,
                    classes: 2
                })
            );
        }
        let msg = h.check_label(7).unwrap_err().to_string();
        assert_eq!(msg, "label 7 is outside the primary classes [0, 2)");
    }

    #[test]
    fn slot_and_folder_names() {
        let h = Hierarchy::new(vec![2, 1]).unwrap();
        assert_eq!(
            h.slot_names(&["T-shirt_top", "Bag"]),
            vec!["T-shirt_top.0", "T-shirt_top.1", "Bag.0"]
        );
        assert_eq!(folder_safe_name("T-shirt/top"), "T-shirt_top");
        assert_eq!(folder_safe_name("Ankle boot"), "Ankle_boot");
        assert_eq!(folder_safe_name(" ../.. "), "class");
    }
}
