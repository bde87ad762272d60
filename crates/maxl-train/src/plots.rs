//! PNG plots of a run, redrawn after every epoch: `accuracy.png` and `loss.png` from
//! `metrics.csv` (so a resumed run plots its whole history), and `slot_usage.png`, the share of
//! validation images the label generator gives each auxiliary slot of each primary class.
//! `maxl-weighted` runs add `weights.png` (the per-image weights' mean and 10/50/90th
//! percentiles per epoch) and `weights_by_class.png` (each class's mean weight per epoch).
//!
//! Text is drawn with DejaVu Sans (Debian's fonts-dejavu-core, installed by scripts/setup.sh,
//! or the file `MAXL_PLOT_FONT` names).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::TrainError;

/// Registers the font once per process.
pub(crate) fn font() -> Result<(), TrainError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = maxl_core::discovery::plot_font()?;
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the plot font is not a usable TrueType font".to_string())
        })
        .clone()
        .map_err(TrainError::Invalid)
}

/// Columns of metrics.csv by name.
struct Metrics {
    header: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl Metrics {
    fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::output(path, e))?;
        let mut lines = text.lines();
        let header = lines
            .next()
            .unwrap_or("")
            .split(',')
            .map(String::from)
            .collect();
        let rows = lines
            .map(|l| {
                l.split(',')
                    .map(|v| v.parse().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        Ok(Self { header, rows })
    }

    fn series(&self, name: &str) -> Vec<(f64, f64)> {
        let Some(c) = self.header.iter().position(|h| h == name) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .map(|r| (r[0], r[c]))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }
}

fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), TrainError> {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    y_min -= pad;
    y_max += pad;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..x_max + 0.5, y_min..y_max)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, (name, s)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(s.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainError::output(path, e))
}

/// Redraws accuracy.png and loss.png from the run's metrics.csv.
pub fn curves(run_dir: &Path) -> Result<(), TrainError> {
    font()?;
    let m = Metrics::read(&run_dir.join("metrics.csv"))?;
    line_chart(
        &run_dir.join("accuracy.png"),
        "Primary accuracy",
        "top-1 accuracy",
        &[
            ("train", m.series("train_acc")),
            ("validation", m.series("val_acc")),
            ("test", m.series("test_acc")),
        ],
    )?;
    line_chart(
        &run_dir.join("loss.png"),
        "Training losses",
        "loss",
        &[
            ("primary (focal)", m.series("primary_loss")),
            ("auxiliary (focal)", m.series("aux_loss")),
            ("meta L2", m.series("meta_loss")),
        ],
    )?;
    if m.header.iter().any(|h| h == "weight_mean") {
        line_chart(
            &run_dir.join("weights.png"),
            "Per-image weight of the auxiliary loss",
            "w = 2·sigmoid(s)",
            &[
                ("90th percentile", m.series("weight_p90")),
                ("median", m.series("weight_p50")),
                ("mean", m.series("weight_mean")),
                ("10th percentile", m.series("weight_p10")),
            ],
        )?;
        let by_class: Vec<(&str, Vec<(f64, f64)>)> = m
            .header
            .iter()
            .filter_map(|h| h.strip_prefix("weight_mean."))
            .map(|class| (class, m.series(&format!("weight_mean.{class}"))))
            .collect();
        line_chart(
            &run_dir.join("weights_by_class.png"),
            "Mean weight of the auxiliary loss per class",
            "mean w",
            &by_class,
        )?;
    }
    Ok(())
}

/// Draws slot_usage.png: one stacked bar per primary class, one segment per auxiliary slot, the
/// segment's height the share of that class's validation images whose argmax is the slot.
pub fn slot_usage(
    run_dir: &Path,
    class_names: &[String],
    psi: &[usize],
    counts: &[usize],
) -> Result<(), TrainError> {
    font()?;
    let path = run_dir.join("slot_usage.png");
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let width = (120 + 70 * psi.len()).max(600) as u32;
        let root = BitMapBackend::new(&path, (width, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_slot_usage(
            &root,
            "Label generator: slot usage per primary class",
            class_names,
            psi,
            counts,
        )?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainError::output(&path, e))
}

/// The slot-usage chart on a drawing area (also one panel of an experiment's figure).
pub(crate) fn draw_slot_usage<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    class_names: &[String],
    psi: &[usize],
    counts: &[usize],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let max_psi = psi.iter().copied().max().unwrap_or(1);
    let k = psi.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        // A segmented range `0..n` has n + 1 columns; k classes need `0..k - 1`.
        .build_cartesian_2d((0..k.saturating_sub(1)).into_segmented(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("share of the class's images")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => class_names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_labels(k)
        .label_style(("sans-serif", 12))
        .draw()?;
    let mut offset = 0;
    for (class, &n) in psi.iter().enumerate() {
        let slots = &counts[offset..offset + n];
        offset += n;
        let total: usize = slots.iter().sum();
        let mut bottom = 0.0;
        for (j, &c) in slots.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            };
            let color = HSLColor(j as f64 / max_psi as f64, 0.6, 0.55);
            let corners = [
                (SegmentValue::Exact(class), bottom),
                (SegmentValue::Exact(class + 1), bottom + share),
            ];
            chart.draw_series(std::iter::once(Rectangle::new(
                corners.clone(),
                color.filled(),
            )))?;
            chart.draw_series(std::iter::once(Rectangle::new(
                corners,
                WHITE.stroke_width(1),
            )))?;
            bottom += share;
        }
    }
    Ok(())
}
