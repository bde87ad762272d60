//! One output record per image, the same columns in `maxl-infer predict`, the server's JSON and
//! `maxl-label`: `path, class, class_probability, aux_slot, aux_label, aux_probability`, then
//! `aux_weight` for a `maxl-weighted` model (the label generator's per-image weight of the
//! auxiliary loss, in (0, 2); absent for every other model, so their output is unchanged).

use maxl_core::csv::field as csv_field;
use maxl_infer::{Classification, MaxlModel};
use serde::Serialize;

/// The CSV column a `maxl-weighted` model adds after [`COLUMNS`].
pub const WEIGHT_COLUMN: &str = "aux_weight";

/// The CSV columns, in order (without [`WEIGHT_COLUMN`]).
pub const COLUMNS: [&str; 6] = [
    "path",
    "class",
    "class_probability",
    "aux_slot",
    "aux_label",
    "aux_probability",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopK {
    pub class: String,
    pub probability: f32,
}

/// What the model says about one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The image's path (absent for a request body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The primary class (folder-safe name): predicted, or given.
    pub class: String,
    /// The primary head's probability of `class`.
    pub class_probability: f32,
    /// The label generator's slot for `class` (index among all Σψ slots); null without a generator.
    pub aux_slot: Option<usize>,
    /// `<class>.<k>`.
    pub aux_label: Option<String>,
    pub aux_probability: Option<f32>,
    /// How strongly the image's auxiliary loss counted in training, in (0, 2): the
    /// `maxl-weighted` generator's `sample_weight`. Left out for models without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_weight: Option<f32>,
    /// The distribution over `class`'s ψ slots (the server's `/v1/label`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_distribution: Option<Vec<f32>>,
    /// The most probable classes, most probable first (jsonl and the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Vec<TopK>>,
}

impl Record {
    /// The record of a classification. The class is the one the generator was asked for (given)
    /// when there is one, else the predicted class.
    pub fn new(model: &MaxlModel, path: Option<String>, c: &Classification) -> Self {
        let class = c.aux.as_ref().map_or(c.class.class, |a| a.class);
        Self {
            path,
            class: model.manifest().classes[class].name.clone(),
            class_probability: c.primary[class],
            aux_slot: c.aux.as_ref().map(|a| a.slot),
            aux_label: c.aux.as_ref().map(|a| a.label.clone()),
            aux_probability: c.aux.as_ref().map(|a| a.probability),
            aux_weight: c.aux.as_ref().and_then(|a| a.weight),
            aux_distribution: None,
            top_k: None,
        }
    }

    pub fn with_top_k(mut self, c: &Classification) -> Self {
        self.top_k = Some(
            c.top_k
                .iter()
                .map(|t| TopK {
                    class: t.name.clone(),
                    probability: t.probability,
                })
                .collect(),
        );
        self
    }

    pub fn with_distribution(mut self, c: &Classification) -> Self {
        self.aux_distribution = c.aux.as_ref().map(|a| a.distribution.clone());
        self
    }

    /// One CSV line (with its newline), fields quoted where needed; with `weighted` (the header
    /// has [`WEIGHT_COLUMN`]) `aux_weight` last, empty where the record has none.
    pub fn csv_line(&self, weighted: bool) -> String {
        let opt = |v: Option<String>| v.unwrap_or_default();
        let mut fields = vec![
            self.path.clone().unwrap_or_default(),
            self.class.clone(),
            format!("{:.6}", self.class_probability),
            opt(self.aux_slot.map(|s| s.to_string())),
            opt(self.aux_label.clone()),
            opt(self.aux_probability.map(|p| format!("{p:.6}"))),
        ];
        if weighted {
            fields.push(opt(self.aux_weight.map(|w| format!("{w:.6}"))));
        }
        let mut line = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        line.push('\n');
        line
    }
}

/// The CSV header line; with `weighted` (a `maxl-weighted` model) [`WEIGHT_COLUMN`] last.
pub fn csv_header(weighted: bool) -> String {
    let mut columns = COLUMNS.to_vec();
    if weighted {
        columns.push(WEIGHT_COLUMN);
    }
    format!("{}\n", columns.join(","))
}
