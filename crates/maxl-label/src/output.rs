//! The label CSV and the errors CSV: columns, one row per image, and reading rows back (for the
//! summary, the gallery and `merge`).
//!
//! Label columns: `path, class, class_source, class_probability, aux_slot, aux_label,
//! aux_probability` — the names `maxl-infer predict` uses, with `class_source` (folder, csv or
//! predicted) after `class` — then `aux_distribution` with `--probs` (the probabilities of the
//! class's ψ slots, `;`-separated, in slot order) and `flag` with `--min-confidence`, then, last,
//! `aux_weight` when the model is a `maxl-weighted` export (the label generator's weight of the
//! image's auxiliary loss in training, in (0, 2)). Every column of the CSV without it keeps its
//! place, so readers of older outputs (by name or by position) read a weighted one unchanged;
//! other models' CSVs are byte-identical to before.

use std::path::Path;

use maxl_core::csv::field as csv_field;
use maxl_infer::{Classification, MaxlModel};

use crate::LabelError;
use crate::input::ClassSource;

/// Optional columns.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Columns {
    /// `aux_distribution`.
    pub probs: bool,
    /// `flag`, set where a probability is below this.
    pub min_confidence: Option<f32>,
    /// `aux_weight` (the model has `sample_weight`), the last column.
    pub weight: bool,
}

impl Columns {
    /// The header line (with its newline).
    pub fn header(&self) -> String {
        let mut h = vec![
            "path",
            "class",
            "class_source",
            "class_probability",
            "aux_slot",
            "aux_label",
            "aux_probability",
        ];
        if self.probs {
            h.push("aux_distribution");
        }
        if self.min_confidence.is_some() {
            h.push("flag");
        }
        if self.weight {
            h.push(WEIGHT_COLUMN);
        }
        format!("{}\n", h.join(","))
    }

    /// Why a row is flagged: `class` (the primary head's probability of the row's class is
    /// below the threshold: for a given class, probably a mislabelled image), `aux` (the slot's
    /// probability is), both joined by `+`, or empty.
    pub fn flag(&self, class_probability: f32, aux_probability: f32) -> Option<String> {
        let p = self.min_confidence?;
        let mut f = Vec::new();
        if class_probability < p {
            f.push("class");
        }
        if aux_probability < p {
            f.push("aux");
        }
        Some(f.join("+"))
    }

    /// One row (with its newline) and whether it is flagged.
    pub fn row(
        &self,
        model: &MaxlModel,
        rel: &str,
        source: ClassSource,
        c: &Classification,
    ) -> (String, bool) {
        let aux = c.aux.as_ref().expect("maxl-label asks for the aux label");
        let class = aux.class;
        let class_probability = c.primary[class];
        let mut fields: Vec<String> = vec![
            csv_field(rel).into_owned(),
            csv_field(&model.manifest().classes[class].name).into_owned(),
            source.as_str().into(),
            format!("{class_probability:.6}"),
            aux.slot.to_string(),
            csv_field(&aux.label).into_owned(),
            format!("{:.6}", aux.probability),
        ];
        if self.probs {
            fields.push(
                aux.distribution
                    .iter()
                    .map(|p| format!("{p:.6}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            );
        }
        let flag = self.flag(class_probability, aux.probability);
        let flagged = flag.as_ref().is_some_and(|f| !f.is_empty());
        if let Some(f) = flag {
            fields.push(f);
        }
        if self.weight {
            fields.push(aux.weight.map_or(String::new(), |w| format!("{w:.6}")));
        }
        let mut line = fields.join(",");
        line.push('\n');
        (line, flagged)
    }
}

/// The column of a `maxl-weighted` model's per-image weight, after all others.
pub const WEIGHT_COLUMN: &str = "aux_weight";

/// The errors file's header line.
pub const ERRORS_HEADER: &str = "path,reason\n";

/// One errors-file row.
pub fn error_row(rel: &str, reason: &str) -> String {
    format!("{},{}\n", csv_field(rel), csv_field(reason))
}

/// A label row read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `path`.
    pub path: String,
    /// `class`.
    pub class: String,
    /// `class_probability`.
    pub class_probability: f32,
    /// `aux_slot`.
    pub aux_slot: usize,
    /// `aux_probability`.
    pub aux_probability: f32,
    /// Whether `flag` is there and not empty.
    pub flagged: bool,
    /// `aux_weight`, where the CSV has the column and the row a value.
    pub aux_weight: Option<f32>,
}

/// Reads the label rows of a finished CSV, calling `each` for every row in file order.
pub fn read_rows(csv: &Path, mut each: impl FnMut(Row)) -> Result<(), LabelError> {
    let bad = |message: String| LabelError::Format {
        path: csv.to_path_buf(),
        message,
    };
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(csv)
        .map_err(|e| bad(e.to_string()))?;
    let headers = r.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| bad(format!("no `{name}` column: not a maxl-label CSV")))
    };
    let (path, class, cp, slot, ap) = (
        col("path")?,
        col("class")?,
        col("class_probability")?,
        col("aux_slot")?,
        col("aux_probability")?,
    );
    let flag = headers.iter().position(|h| h == "flag");
    let weight = headers.iter().position(|h| h == WEIGHT_COLUMN);
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let num = |i: usize| {
            rec.get(i).unwrap_or("").parse::<f64>().map_err(|_| {
                bad(format!(
                    "line {line}: `{}` is not a number",
                    rec.get(i).unwrap_or("")
                ))
            })
        };
        let aux_weight = match weight.and_then(|i| rec.get(i)) {
            None | Some("") => None,
            Some(v) => match v.parse::<f32>() {
                Ok(w) if w.is_finite() => Some(w),
                _ => {
                    return Err(bad(format!(
                        "line {line}: `{v}` is not a number ({WEIGHT_COLUMN})"
                    )));
                }
            },
        };
        each(Row {
            path: rec.get(path).unwrap_or("").to_string(),
            class: rec.get(class).unwrap_or("").to_string(),
            class_probability: num(cp)? as f32,
            aux_slot: num(slot)? as usize,
            aux_probability: num(ap)? as f32,
            flagged: flag.is_some_and(|f| !rec.get(f).unwrap_or("").is_empty()),
            aux_weight,
        });
    }
    Ok(())
}
