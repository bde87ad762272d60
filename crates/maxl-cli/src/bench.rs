//! The one benchmark harness of the three `bench` commands.
//!
//! A case (a training mode, a labelling backend, a Python pipeline…) runs in its own child
//! process ([`run_process`]), so its peak resident memory is its own; the whole set of cases is
//! repeated with the cases interleaved ([`interleave`]), so a slow minute of the machine hits
//! every case alike; results are medians ([`median`], the one definition: the mean of the two
//! middle values of an even count) with their spread ([`spread`]); the report is a [`Table`] or
//! JSON lines through serde ([`json_lines`]). Latency percentiles ([`quantile`]) use the same
//! interpolation as the median.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

/// The `p`-quantile (0 ≤ p ≤ 1) of `values`, interpolated linearly between the two closest
/// ranks (NumPy's default); NaN when empty. `quantile(v, 0.5)` is the [`median`].
pub fn quantile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = (s.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// The median: the middle value, or the mean of the two middle values of an even count; NaN
/// when empty.
pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// Half the range of `values` as a fraction of their median (0.05 reads "±5 %").
pub fn spread(values: &[f64]) -> f64 {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    0.5 * (hi - lo) / median(values)
}

/// [`spread`] as the tables print it: `±5%`.
pub fn spread_text(values: &[f64]) -> String {
    format!("±{:.0}%", 100.0 * spread(values))
}

/// What one child process did.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Wall time from start to exit, seconds.
    pub seconds: f64,
    /// The child's peak resident memory (`ru_maxrss`), KiB: on Linux at least the parent's
    /// resident memory when the child started (see [`own_peak_rss_kib`]).
    pub peak_rss_kib: u64,
    /// Everything it wrote on stdout.
    pub stdout: String,
}

impl Measured {
    /// The peak resident memory in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

/// This process's own peak resident memory (VmHWM) in KiB, where /proc has it. A child that
/// loads large libraries reports this itself: [`Measured::peak_rss_kib`] (`ru_maxrss`) also
/// counts the memory the parent had mapped when the child was started, since Linux carries the
/// pre-exec peak over into the child's.
pub fn own_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `cmd` to completion in its own process and measures it. A failure (a non-zero exit, a
/// signal) is an error carrying the last line of its stderr.
pub fn run_process(cmd: &mut Command) -> anyhow::Result<Measured> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let pid = child.id() as libc::pid_t;
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child, which
    // `child` has not reaped (it is never waited on through std).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        bail!("{program} failed: {}", last.unwrap_or("(no output)"));
    }
    Ok(Measured {
        seconds,
        peak_rss_kib: usage.ru_maxrss.max(0) as u64,
        stdout,
    })
}

/// Runs every case `repeats` times, the cases interleaved (case 1, 2, …, n, then again), and
/// returns each case's results in repeat order. `tick` is called after every run (a progress
/// bar's `inc`).
pub fn interleave<C, T>(
    cases: &[C],
    repeats: usize,
    mut run: impl FnMut(&C) -> anyhow::Result<T>,
    mut tick: impl FnMut(),
) -> anyhow::Result<Vec<Vec<T>>> {
    let mut results: Vec<Vec<T>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..repeats {
        for (case, out) in cases.iter().zip(results.iter_mut()) {
            out.push(run(case)?);
            tick();
        }
    }
    Ok(results)
}

/// Writes one JSON object per row.
pub fn json_lines<T: Serialize>(out: &mut dyn Write, rows: &[T]) -> anyhow::Result<()> {
    for r in rows {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)?;
    }
    Ok(())
}

/// A plain-text table: the first column left-aligned, the others right-aligned, each as wide
/// as its widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells print empty).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.header.len();
        let width = |c: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (c, w) in widths.iter().enumerate() {
                let cell = row.get(c).map_or("", String::as_str);
                if c == 0 {
                    line.push_str(&format!("{cell:<w$}"));
                } else {
                    line.push_str(&format!("  {cell:>w$}"));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_median_for_odd_and_even_counts_and_interpolated_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
        assert_eq!(spread(&[9.0, 10.0, 11.0]), 0.1);
        assert_eq!(spread_text(&[9.0, 10.0, 11.0]), "±10%");
    }

    #[test]
    fn cases_are_interleaved_within_each_repeat() {
        let mut order = Vec::new();
        let r = interleave(
            &["a", "b"],
            3,
            |c| {
                order.push(*c);
                Ok(order.len())
            },
            || {},
        )
        .unwrap();
        assert_eq!(order, ["a", "b", "a", "b", "a", "b"]);
        assert_eq!(r, [vec![1, 3, 5], vec![2, 4, 6]]);
    }

    #[test]
    fn a_child_is_measured_and_its_failure_carries_its_last_stderr_line() {
        let m = run_process(Command::new("sh").args(["-c", "echo out; echo note >&2"])).unwrap();
        assert_eq!(m.stdout, "out\n");
        assert!(m.peak_rss_kib > 0 && m.seconds > 0.0);
        assert!(own_peak_rss_kib().is_some_and(|k| k > 0));
        let e =
            run_process(Command::new("sh").args(["-c", "echo first >&2; echo why >&2; exit 3"]))
                .unwrap_err()
                .to_string();
        assert_eq!(e, "sh failed: why");
    }

    #[test]
    fn tables_align_columns_and_json_is_one_object_per_line() {
        let mut t = Table::new(["step", "ms"]);
        t.row(["single", "1.50"]);
        t.row(["fused-jvp", "12.25"]);
        assert_eq!(
            t.to_string(),
            "step          ms\nsingle      1.50\nfused-jvp  12.25\n"
        );
        #[derive(Serialize)]
        struct R {
            mode: &'static str,
            ms: f64,
        }
        let mut out = Vec::new();
        json_lines(
            &mut out,
            &[
                R { mode: "a", ms: 1.5 },
                R {
                    mode: "b\"",
                    ms: 2.0,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"mode\":\"a\",\"ms\":1.5}\n{\"mode\":\"b\\\"\",\"ms\":2.0}\n"
        );
    }
}
