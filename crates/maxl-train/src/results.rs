//! The results of an experiment (see [`crate::compare`](mod@crate::compare)), regenerated from its
//! run directories:
//!
//! * `results.csv` — one row per run and seed: final primary test accuracy, best validation
//!   accuracy, epochs, training seconds, and the paired difference to the baseline's seed;
//! * `results.md` — one row per run: test accuracy mean ± std over seeds, the paired difference
//!   to the baseline mean ± std, best validation accuracy, seconds per epoch and training time
//!   as a multiple of the baseline's;
//! * `test_accuracy.png` — test accuracy per epoch and per second of training, mean and
//!   min–max over seeds;
//! * `slot_usage.png` — for runs with a label generator, the share of each primary class's
//!   images (validation set, or training set without one) that each auxiliary slot gets, all
//!   seeds together.
//!
//! Runs not finished yet are left out (the table says how many seeds each row has).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_yaml_ng::Value;

use crate::TrainError;
use crate::compare::{Clock, EXPERIMENT_FILE, Experiment, finished, run_dir};

/// One finished run of one seed.
#[derive(Debug, Clone)]
pub struct SeedResult {
    /// The run's name in the experiment.
    pub run: String,
    /// The method, as `summary.yaml` names it.
    pub method: String,
    /// The schedule, as `summary.yaml` names it.
    pub schedule: String,
    /// How the meta-gradient was computed, as `summary.yaml` names it (`double-backward` for runs
    /// written before the field existed).
    pub meta_gradient: String,
    /// The seed.
    pub seed: u64,
    /// Epochs trained (rows of `metrics.csv`).
    pub epochs: usize,
    /// Final primary test accuracy.
    pub test_acc: f64,
    /// NaN without a validation split.
    pub best_val_acc: f64,
    /// Wall-clock seconds of training, summed over epochs (evaluation excluded).
    pub train_seconds: f64,
    /// CPU seconds of training (NaN for runs written before the column existed).
    pub cpu_seconds: f64,
    /// ψ, the number of auxiliary classes of each primary class.
    pub psi: Vec<usize>,
    /// (epoch, test accuracy, training seconds so far, CPU seconds so far) per epoch.
    pub curve: Vec<(f64, f64, f64, f64)>,
    /// How many images got each auxiliary slot as the generator's argmax (A entries), for runs
    /// with a label generator.
    pub usage_counts: Option<Vec<usize>>,
    /// Display names of the primary classes.
    pub class_names: Vec<String>,
    /// The generator's mean per-image label entropy ÷ ln ψ at the end (1 = uniform labels); NaN
    /// without a generator.
    pub sample_entropy: f64,
}

impl SeedResult {
    /// Training seconds by `clock`.
    pub fn seconds(&self, clock: Clock) -> f64 {
        match clock {
            Clock::Wall => self.train_seconds,
            Clock::Cpu => self.cpu_seconds,
        }
    }

    /// Training seconds by `clock` per epoch.
    pub fn seconds_per_epoch(&self, clock: Clock) -> f64 {
        self.seconds(clock) / self.epochs.max(1) as f64
    }
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        // `NaN` and `-inf` as written by the summary are plain strings to YAML.
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

fn read_text(path: &Path) -> Result<String, TrainError> {
    std::fs::read_to_string(path).map_err(|e| TrainError::output(path, format!("cannot read: {e}")))
}

fn read_yaml(path: &Path) -> Result<Value, TrainError> {
    serde_yaml_ng::from_str(&read_text(path)?).map_err(|e| {
        TrainError::output(path, e.to_string().lines().next().unwrap_or("").to_string())
    })
}

/// Reads one finished run directory.
pub fn read_run(dir: &Path, run: &str, seed: u64) -> Result<SeedResult, TrainError> {
    let summary_path = dir.join("summary.yaml");
    let s = read_yaml(&summary_path)?;
    let field = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
    let text = |k: &str| field(k).as_str().unwrap_or("").to_string();
    let list = |k: &str| -> Option<Vec<usize>> {
        field(k)
            .as_sequence()
            .map(|q| q.iter().map(|v| v.as_u64().unwrap_or(0) as usize).collect())
    };
    let metrics_path = dir.join("metrics.csv");
    let metrics = read_text(&metrics_path)?;
    let mut lines = metrics.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| TrainError::output(&metrics_path, format!("no `{name}` column")))
    };
    let (ce, ct, cs) = (col("epoch")?, col("test_acc")?, col("seconds")?);
    let cc = col("cpu_seconds").ok();
    let mut curve = Vec::new();
    let mut elapsed = 0.0;
    let mut cpu = 0.0;
    for l in lines {
        let v: Vec<f64> = l
            .split(',')
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        if v.len() != header.len() {
            return Err(TrainError::output(&metrics_path, format!("bad row `{l}`")));
        }
        elapsed += v[cs];
        cpu += cc.map_or(f64::NAN, |c| v[c]);
        curve.push((v[ce], v[ct], elapsed, cpu));
    }
    if curve.is_empty() {
        return Err(TrainError::output(&metrics_path, "no epochs recorded"));
    }
    let class_names: Vec<String> = serde_yaml_ng::from_str(&read_text(
        &dir.join(crate::run_files::CLASSES_FILE),
    )?)
    .map_err(|e| TrainError::output(&dir.join(crate::run_files::CLASSES_FILE), e.to_string()))?;
    Ok(SeedResult {
        run: run.to_string(),
        method: text("method"),
        schedule: text("schedule"),
        meta_gradient: match text("meta_gradient") {
            m if m.is_empty() => "double-backward".into(),
            m => m,
        },
        seed,
        epochs: curve.len(),
        test_acc: number(&field("primary_test_accuracy")),
        best_val_acc: number(&field("best_validation_accuracy")),
        train_seconds: elapsed,
        cpu_seconds: cpu,
        psi: list("psi")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| TrainError::output(&summary_path, "no `psi` list"))?,
        curve,
        usage_counts: list("generator_usage_counts"),
        class_names,
        sample_entropy: number(&field("generator_sample_entropy")),
    })
}

/// Mean and sample standard deviation (NaN for fewer than 2 values).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n;
    let std = if v.len() < 2 {
        f64::NAN
    } else {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    (mean, std)
}

/// Every finished (run, seed) of the experiment in `out`, in the experiment's order.
pub fn collect(out: &Path, e: &Experiment) -> Result<Vec<SeedResult>, TrainError> {
    let mut all = Vec::new();
    for r in &e.runs {
        for &seed in &e.seeds {
            let dir = run_dir(out, &r.name, seed);
            if finished(&dir) {
                all.push(read_run(&dir, &r.name, seed)?);
            }
        }
    }
    Ok(all)
}

fn pm(mean: f64, std: f64, scale: f64, digits: usize) -> String {
    if mean.is_nan() {
        "—".into()
    } else if std.is_nan() {
        format!("{:.digits$}", mean * scale)
    } else {
        format!("{:.digits$} ± {:.digits$}", mean * scale, std * scale)
    }
}

/// Writes results.csv, results.md and the plots into `out`; returns the table's text.
pub fn write(out: &Path) -> Result<String, TrainError> {
    let exp_path = out.join(EXPERIMENT_FILE);
    let e: Experiment = serde_yaml_ng::from_str(&read_text(&exp_path)?).map_err(|err| {
        TrainError::output(
            &exp_path,
            err.to_string().lines().next().unwrap_or("").to_string(),
        )
    })?;
    let all = collect(out, &e)?;
    if all.is_empty() {
        return Err(TrainError::output(out, "no finished runs yet"));
    }
    maxl_core::fsio::write_atomic(&out.join("results.csv"), csv_table(&e, &all).as_bytes())?;
    let md = markdown_table(&e, &all);
    maxl_core::fsio::write_atomic(&out.join("results.md"), md.as_bytes())?;
    accuracy_plot(&out.join("test_accuracy.png"), &e, &all)?;
    usage_plot(&out.join("slot_usage.png"), &e, &all)?;
    Ok(md)
}

/// The baseline's result of `seed`.
fn baseline_of<'a>(e: &Experiment, all: &'a [SeedResult], seed: u64) -> Option<&'a SeedResult> {
    all.iter().find(|r| r.run == e.baseline && r.seed == seed)
}

/// results.csv: one row per run and seed.
fn csv_table(e: &Experiment, all: &[SeedResult]) -> String {
    let mut csv = String::from(
        "run,method,schedule,meta_gradient,seed,epochs,test_acc,best_val_acc,train_seconds,cpu_seconds,generator_sample_entropy,diff_to_baseline\n",
    );
    for r in all {
        let diff = baseline_of(e, all, r.seed).map_or(f64::NAN, |b| r.test_acc - b.test_acc);
        writeln!(
            csv,
            "{},{},{},{},{},{},{:.5},{:.5},{:.2},{:.2},{:.4},{:.5}",
            r.run,
            r.method,
            r.schedule,
            r.meta_gradient,
            r.seed,
            r.epochs,
            r.test_acc,
            r.best_val_acc,
            r.train_seconds,
            r.cpu_seconds,
            r.sample_entropy,
            diff
        )
        .expect("string write");
    }
    csv
}

/// results.md: the header, then one row per run with finished seeds.
fn markdown_table(e: &Experiment, all: &[SeedResult]) -> String {
    let mut md = format!(
        "| run | method | schedule | meta-gradient | ψ | seeds | epochs | test accuracy % | Δ vs {b} (pp, paired) | best val. % | {c} s / epoch | {c} time × {b} | per-image entropy |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        b = e.baseline,
        c = match e.clock {
            Clock::Wall => "wall",
            Clock::Cpu => "CPU",
        }
    );
    for spec in &e.runs {
        let rs: Vec<&SeedResult> = all.iter().filter(|r| r.run == spec.name).collect();
        if !rs.is_empty() {
            md.push_str(&markdown_row(e, all, &spec.name, &rs));
        }
    }
    md
}

/// The epochs of a run's seeds: `30`, or `12–15` when they differ.
fn epochs_text(rs: &[&SeedResult]) -> String {
    let mut epochs: Vec<usize> = rs.iter().map(|r| r.epochs).collect();
    epochs.dedup();
    match epochs.as_slice() {
        [one] => one.to_string(),
        many => format!(
            "{}–{}",
            many.iter().min().expect("non-empty"),
            many.iter().max().expect("non-empty")
        ),
    }
}

/// One row of results.md: run `name`'s seeds `rs` (non-empty) against the baseline's.
fn markdown_row(e: &Experiment, all: &[SeedResult], name: &str, rs: &[&SeedResult]) -> String {
    let first = rs[0];
    let acc: Vec<f64> = rs.iter().map(|r| r.test_acc).collect();
    let (diffs, ratios): (Vec<f64>, Vec<f64>) = rs
        .iter()
        .filter_map(|r| {
            baseline_of(e, all, r.seed).map(|b| {
                (
                    r.test_acc - b.test_acc,
                    r.seconds(e.clock) / b.seconds(e.clock),
                )
            })
        })
        .unzip();
    let val: Vec<f64> = rs
        .iter()
        .map(|r| r.best_val_acc)
        .filter(|v| v.is_finite())
        .collect();
    let spe: Vec<f64> = rs.iter().map(|r| r.seconds_per_epoch(e.clock)).collect();
    let generator = first.method.starts_with("maxl");
    let (a, s) = mean_std(&acc);
    let (d, ds) = mean_std(&diffs);
    let (v, vs) = mean_std(&val);
    let (t, _) = mean_std(&spe);
    let (q, _) = mean_std(&ratios);
    let entropy: Vec<f64> = rs
        .iter()
        .map(|r| r.sample_entropy)
        .filter(|v| v.is_finite())
        .collect();
    let (h, hs) = mean_std(&entropy);
    let uniform = first.psi.iter().all(|&p| p == first.psi[0]);
    let psi = if first.method == "single" {
        "—".to_string()
    } else if uniform {
        first.psi[0].to_string()
    } else {
        format!("{:?}", first.psi)
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |\n",
        name,
        first.method,
        if generator {
            first.schedule.as_str()
        } else {
            "—"
        },
        if generator {
            first.meta_gradient.as_str()
        } else {
            "—"
        },
        psi,
        rs.len(),
        epochs_text(rs),
        pm(a, s, 100.0, 2),
        if name == e.baseline {
            "—".into()
        } else {
            pm(d, ds, 100.0, 2)
        },
        pm(v, vs, 100.0, 2),
        t,
        if q.is_nan() {
            "—".into()
        } else {
            format!("{q:.2}")
        },
        pm(h, hs, 1.0, 3),
    )
}

/// One point of a curve over seeds: (x, mean, min, max).
type BandPoint = (f64, f64, f64, f64);

/// Per run: points over seeds, x = epoch or mean training seconds.
fn bands(rs: &[&SeedResult], by_time: Option<Clock>) -> Vec<BandPoint> {
    let longest = rs.iter().map(|r| r.curve.len()).max().unwrap_or(0);
    (0..longest)
        .filter_map(|i| {
            let pts: Vec<&(f64, f64, f64, f64)> =
                rs.iter().filter_map(|r| r.curve.get(i)).collect();
            if pts.is_empty() {
                return None;
            }
            let n = pts.len() as f64;
            let x = match by_time {
                Some(Clock::Wall) => pts.iter().map(|p| p.2).sum::<f64>() / n,
                Some(Clock::Cpu) => pts.iter().map(|p| p.3).sum::<f64>() / n,
                None => pts[0].0,
            };
            let ys: Vec<f64> = pts.iter().map(|p| p.1 * 100.0).collect();
            let mean = ys.iter().sum::<f64>() / n;
            let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Some((x, mean, lo, hi))
        })
        .collect()
}

fn accuracy_plot(path: &Path, e: &Experiment, all: &[SeedResult]) -> Result<(), TrainError> {
    crate::plots::font()?;
    let runs = results_by_run(e, all);
    let y_range = accuracy_range(all);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 2));
        for (panel, by_time) in panels.iter().zip([None, Some(e.clock)]) {
            accuracy_panel(panel, &runs, by_time, y_range.clone())?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|err| TrainError::output(path, err))
}

/// The experiment's runs, in its order, with their finished seeds; runs without any left out.
fn results_by_run<'a>(
    e: &'a Experiment,
    all: &'a [SeedResult],
) -> Vec<(&'a str, Vec<&'a SeedResult>)> {
    e.runs
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                all.iter().filter(|r| r.run == s.name).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, rs)| !rs.is_empty())
        .collect()
}

/// The accuracy axis (%): up to just above the best point, from about the lowest tenth's top.
fn accuracy_range(all: &[SeedResult]) -> std::ops::Range<f64> {
    let ys: Vec<f64> = all
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.1 * 100.0))
        .collect();
    // Early epochs can be far below the rest: show the upper part where the runs differ.
    let y_hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 0.5;
    let mut sorted = ys.clone();
    sorted.sort_by(f64::total_cmp);
    let y_lo = (sorted[sorted.len() / 10] - 1.0).min(y_hi - 1.0);
    y_lo..y_hi
}

/// One panel of the accuracy plot: accuracy by epoch, or by training time on `by_time`'s clock.
fn accuracy_panel(
    panel: &DrawingArea<BitMapBackend<'_>, Shift>,
    runs: &[(&str, Vec<&SeedResult>)],
    by_time: Option<Clock>,
    y_range: std::ops::Range<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let series: Vec<(&str, Vec<BandPoint>)> = runs
        .iter()
        .map(|(n, rs)| (*n, bands(rs, by_time)))
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, b)| b.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(panel)
        .caption(
            if by_time.is_some() {
                "Primary test accuracy by training time"
            } else {
                "Primary test accuracy by epoch"
            },
            ("sans-serif", 22),
        )
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max * 1.02, y_range)?;
    chart
        .configure_mesh()
        .x_desc(match by_time {
            Some(Clock::Wall) => "training seconds, wall-clock (mean over seeds)",
            Some(Clock::Cpu) => "training CPU seconds (mean over seeds)",
            None => "epoch",
        })
        .y_desc("test accuracy % (line: mean, band: min–max over seeds)")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, (name, b)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut band: Vec<(f64, f64)> = b.iter().map(|p| (p.0, p.3)).collect();
        band.extend(b.iter().rev().map(|p| (p.0, p.2)));
        chart.draw_series(std::iter::once(Polygon::new(
            band,
            color.mix(0.18).filled(),
        )))?;
        chart
            .draw_series(LineSeries::new(
                b.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    // Markers where the lines are short (a handful of epochs).
    for (i, (_, b)) in series.iter().enumerate() {
        if b.len() <= 40 {
            let color = Palette99::pick(i).to_rgba();
            chart.draw_series(b.iter().map(|p| Circle::new((p.0, p.1), 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn usage_plot(path: &Path, e: &Experiment, all: &[SeedResult]) -> Result<(), TrainError> {
    let panels: Vec<(String, &SeedResult, Vec<usize>)> = e
        .runs
        .iter()
        .filter_map(|s| {
            let rs: Vec<&SeedResult> = all
                .iter()
                .filter(|r| r.run == s.name && r.usage_counts.is_some())
                .collect();
            let first = *rs.first()?;
            let mut sum = vec![0usize; first.usage_counts.as_ref()?.len()];
            for r in &rs {
                for (a, b) in sum
                    .iter_mut()
                    .zip(r.usage_counts.as_ref().expect("filtered"))
                {
                    *a += b;
                }
            }
            Some((format!("{} ({} seeds)", s.name, rs.len()), first, sum))
        })
        .collect();
    if panels.is_empty() {
        // No generator in this experiment: no stale picture either.
        let _ = std::fs::remove_file(path);
        return Ok(());
    }
    crate::plots::font()?;
    let k = panels[0].1.psi.len();
    let width = (160 + 90 * k).max(700) as u32;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (width, 330 * panels.len() as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, (title, r, counts)) in root.split_evenly((panels.len(), 1)).iter().zip(&panels) {
            crate::plots::draw_slot_usage(
                area,
                &format!("Slot usage per primary class: {title}"),
                &r.class_names,
                &r.psi,
                counts,
            )?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|err| TrainError::output(path, err))
}

/// The default output directory of an experiment file: `experiments/<file stem>`.
pub fn default_out(experiment: &Path) -> PathBuf {
    PathBuf::from("experiments").join(
        experiment
            .file_stem()
            .map_or_else(|| "experiment".into(), |s| s.to_string_lossy().into_owned()),
    )
}
