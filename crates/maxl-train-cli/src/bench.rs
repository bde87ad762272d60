//! `maxl-train bench`: ms per single-task step and per MAXL iteration for each schedule ×
//! meta-gradient mode, every mode in its own process (`bench --worker MODE` of this same
//! executable) through the shared harness, repeated interleaved; medians, spread, ratios to the
//! single-task step and peak memory; `maxl-weighted`'s iterations (`weighted-*`) also as a ratio
//! to the same MAXL iteration without weights (`× maxl`). `--check-jvp` compares the two
//! meta-gradient modes instead.
//! `--input-size` runs the preset at another input size; `--generator-preset` gives the label
//! generator its own network (a preset, or a narrowed ResNet preset such as `resnet18-narrow`).
//! `--nproc-per-node N` times each mode on one process and on N ranks of a Gloo (or NCCL)
//! process group with the same global batch, and reports the speed-up, the time inside
//! all-reduces and the bytes reduced per step.

use anyhow::{Context, bail};
use clap::Args;
use maxl_cli::bench::{Table, interleave, json_lines, median, run_process, spread_text};
use maxl_cli::choice;
use maxl_core::Choice;
use maxl_train::DeviceRequest;
use maxl_train::bench::{BenchConfig, BenchMode};
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct BenchArgs {
    /// Architecture preset to time.
    #[arg(long, default_value = "small")]
    preset: String,
    /// The preset at this input size instead of its own, as HxW (`64x64`) or one side (`64`).
    #[arg(long, value_name = "HxW", value_parser = parse_input_size)]
    input_size: Option<(usize, usize)>,
    /// The label generator's own network, at the same input as f: a preset, or `PRESET-narrow`
    /// for a ResNet preset with every width and the head's hidden width divided by 4
    /// (`resnet18-narrow`: widths [16, 32, 64, 128], head 128). Default: f's network.
    #[arg(long, value_name = "NAME")]
    generator_preset: Option<String>,
    /// Mini-batch size.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Number of primary classes of the synthetic task.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// ψ for every class.
    #[arg(long, default_value_t = 5)]
    psi_per_class: usize,
    /// Timed iterations per measurement (after warm-up).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed warm-up iterations per measurement.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Times the whole set of modes is run, interleaved (medians are reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only these modes (comma-separated): single, reference-double-backward, reference-jvp,
    /// interleaved-double-backward, interleaved-jvp, fused-double-backward, fused-jvp, and
    /// `maxl-weighted`'s weighted-interleaved-double-backward, weighted-interleaved-jvp,
    /// weighted-fused-double-backward, weighted-fused-jvp.
    #[arg(long, value_name = "MODE,…", value_delimiter = ',')]
    modes: Option<Vec<String>>,
    /// Print one JSON object per mode (median ms, every repeat, peak RSS) instead of the table.
    #[arg(long)]
    json: bool,
    /// Instead of timing: compare the jvp and the double-backward meta-gradient of one batch
    /// (f32, fresh weights, the preset and device given) and fail when they differ by more than
    /// 1e-4 of the gradient's largest magnitude.
    #[arg(long)]
    check_jvp: bool,
    /// Time one mode in this process and print one JSON line (used by the parent process).
    #[arg(long, hide = true, value_name = "MODE")]
    worker: Option<String>,
    /// Where to run: cpu, cuda or auto.
    #[arg(long, value_parser = choice::<DeviceRequest>(), default_value = "cpu")]
    device: DeviceRequest,
    /// libtorch CPU threads.
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
    /// Scaling: time each mode (default: single and fused-jvp) on one process and on N ranks of
    /// a process group on this machine, the same global --batch-size split among them (each
    /// rank gets cores / N threads unless --threads says otherwise); reports the speed-up, the
    /// share of the step spent in all-reduces and the bytes reduced per step.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    nproc_per_node: Option<u16>,
}

/// What a worker process prints.
#[derive(Serialize, Deserialize)]
struct WorkerLine {
    mode: String,
    ms: f64,
    /// The worker's own peak resident memory: libtorch makes the parent large, and the
    /// child's `ru_maxrss` would start from the parent's.
    peak_rss_kib: Option<u64>,
    peak_gpu_bytes: Option<u64>,
    /// One rank's collectives per step, when timed on several ranks.
    #[serde(default)]
    comm: Option<CommLine>,
}

impl WorkerLine {
    /// A worker's printed line.
    fn parse(mode: BenchMode, stdout: &str) -> anyhow::Result<Self> {
        let text = stdout.trim();
        serde_json::from_str(text)
            .with_context(|| format!("{}: unreadable result `{text}`", mode.name()))
    }
}

/// [`maxl_train::dist::CommStats`] of one step.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct CommLine {
    calls: u64,
    bytes: u64,
    ms: f64,
}

/// One mode's line of `--json`.
#[derive(Serialize)]
struct ModeJson {
    #[serde(rename = "impl")]
    implementation: &'static str,
    mode: String,
    ms: f64,
    repeats: Vec<f64>,
    peak_rss_mib: f64,
    peak_gpu_mib: Option<f64>,
}

/// One mode over the repeats.
struct ModeResult {
    mode: BenchMode,
    ms: Vec<f64>,
    peak_rss_kib: u64,
    peak_gpu_bytes: Option<u64>,
}

/// `64x64`, `64×64` or `64` (square) as (height, width), both positive.
fn parse_input_size(s: &str) -> Result<(usize, usize), String> {
    let side = |v: &str| match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not HxW with positive sizes (e.g. 64x64)")),
    };
    match s.split_once(['x', 'X', '×']) {
        Some((h, w)) => Ok((side(h)?, side(w)?)),
        None => side(s).map(|n| (n, n)),
    }
}

impl BenchArgs {
    /// Whether this process is one of the bench's own workers (which may run as a rank).
    pub fn is_worker(&self) -> bool {
        self.worker.is_some()
    }

    fn config(&self) -> anyhow::Result<BenchConfig> {
        let mut arch = maxl_core::Architecture::preset(&self.preset)
            .map_err(|e| anyhow::anyhow!("--preset: {e}"))?;
        if let Some((h, w)) = self.input_size {
            arch = arch.with_input_size(h, w);
        }
        arch.validate()
            .map_err(|e| anyhow::anyhow!("--preset {}: {e}", self.preset))?;
        let generator_arch = match &self.generator_preset {
            Some(name) => maxl_train::bench::generator_architecture(name, &arch.input)
                .and_then(|g| g.validate().map(|()| g))
                .map_err(|e| anyhow::anyhow!("--generator-preset {name}: {e}"))?,
            None => arch.clone(),
        };
        if let Some(n) = self.threads {
            tch::set_num_threads(n);
        }
        Ok(BenchConfig {
            arch,
            generator_arch,
            batch_size: self.batch_size,
            classes: self.classes,
            psi_per_class: self.psi_per_class,
            iters: self.iters,
            warmup: self.warmup,
            device: self.device.resolve()?,
        })
    }

    /// The two networks' trainable parameter counts, and g's name where it is not f's.
    fn sizes(&self, c: &BenchConfig) -> String {
        let aux = self.classes * self.psi_per_class;
        let count = |specs: Vec<maxl_core::arch::ParamSpec>| -> f64 {
            let n: usize = specs
                .iter()
                .filter(|s| s.kind.is_trainable())
                .map(|s| s.shape.iter().product::<usize>())
                .sum();
            n as f64 / 1e6
        };
        let f = count(c.arch.multitask_params(self.classes, aux));
        let g = count(c.generator_arch.generator_params(aux));
        let name = self
            .generator_preset
            .as_deref()
            .unwrap_or("the same network");
        format!("f {f:.2} M parameters, generator {name} {g:.2} M")
    }

    fn modes(&self) -> anyhow::Result<Vec<BenchMode>> {
        let Some(names) = &self.modes else {
            return Ok(BenchMode::all());
        };
        let all: Vec<String> = BenchMode::all().iter().map(|m| m.name()).collect();
        names
            .iter()
            .map(|n| {
                BenchMode::parse(n).with_context(|| {
                    format!("--modes: unknown mode `{n}` (one of: {})", all.join(", "))
                })
            })
            .collect()
    }

    /// This executable's `bench --worker MODE` with the same settings.
    fn worker_command(&self, mode: BenchMode) -> anyhow::Result<std::process::Command> {
        let exe =
            std::env::current_exe().context("cannot find this executable to run the modes")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["bench", "--worker", &mode.name(), "--preset", &self.preset]);
        if let Some((h, w)) = self.input_size {
            cmd.args(["--input-size", &format!("{h}x{w}")]);
        }
        if let Some(g) = &self.generator_preset {
            cmd.args(["--generator-preset", g]);
        }
        for (flag, v) in [
            ("--batch-size", self.batch_size),
            ("--classes", self.classes),
            ("--psi-per-class", self.psi_per_class),
            ("--iters", self.iters),
            ("--warmup", self.warmup),
        ] {
            cmd.args([flag, &v.to_string()]);
        }
        cmd.args(["--device", self.device.name()]);
        if let Some(n) = self.threads {
            cmd.args(["--threads", &n.to_string()]);
        }
        Ok(cmd)
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.batch_size < 2 || a.iters == 0 || a.classes == 0 || a.psi_per_class == 0 || a.repeats == 0
    {
        bail!("--batch-size must be ≥ 2 and --iters, --repeats, --classes, --psi-per-class ≥ 1");
    }
    if a.check_jvp {
        return check_jvp(&a);
    }
    if let Some(name) = &a.worker {
        return worker(&a, name);
    }
    if let Some(n) = a.nproc_per_node {
        return scaling(&a, n);
    }
    let config = a.config()?;
    let modes = a.modes()?;
    let bar = maxl_cli::progress::bar(
        (a.repeats * modes.len()) as u64,
        "[{bar:30}] {pos}/{len}",
        false,
    );
    let runs = interleave(
        &modes,
        a.repeats,
        |&mode| {
            let m = run_process(&mut a.worker_command(mode)?).with_context(|| mode.name())?;
            let line = WorkerLine::parse(mode, &m.stdout)?;
            let rss = line.peak_rss_kib.unwrap_or(m.peak_rss_kib);
            Ok((line, rss))
        },
        || bar.inc(1),
    )?;
    bar.finish_and_clear();
    let results: Vec<ModeResult> = modes
        .iter()
        .zip(runs)
        .map(|(&mode, runs)| ModeResult {
            mode,
            ms: runs.iter().map(|(l, _)| l.ms).collect(),
            peak_rss_kib: runs.iter().map(|(_, k)| *k).max().unwrap_or(0),
            peak_gpu_bytes: runs.iter().filter_map(|(l, _)| l.peak_gpu_bytes).max(),
        })
        .collect();
    if a.json {
        let rows: Vec<ModeJson> = results.iter().map(ModeResult::json).collect();
        return json_lines(&mut std::io::stdout().lock(), &rows);
    }
    let i = &config.arch.input;
    println!(
        "preset {} ({}×{}×{}), {}, batch {}, {} classes × ψ {}, device {:?}, {} timed steps per process, medians of {} interleaved repeats",
        a.preset,
        i.channels,
        i.height,
        i.width,
        a.sizes(&config),
        a.batch_size,
        a.classes,
        a.psi_per_class,
        config.device,
        a.iters,
        a.repeats
    );
    print!("{}", table(&results));
    Ok(())
}

const MIB: f64 = 1048576.0;

impl ModeResult {
    fn json(&self) -> ModeJson {
        ModeJson {
            implementation: "rust",
            mode: self.mode.name(),
            ms: median(&self.ms),
            repeats: self.ms.clone(),
            peak_rss_mib: self.peak_rss_kib as f64 / 1024.0,
            peak_gpu_mib: self.peak_gpu_bytes.map(|b| b as f64 / MIB),
        }
    }
}

/// Medians, ratios to the single-task median, spread, peak memory.
fn table(results: &[ModeResult]) -> Table {
    let base = results
        .iter()
        .find(|r| r.mode == BenchMode::Single)
        .map(|r| median(&r.ms));
    let gpu = results.iter().any(|r| r.peak_gpu_bytes.is_some());
    let weighted = results.iter().any(|r| r.mode.unweighted().is_some());
    let mut header = vec!["step", "median ms", "× single", "spread", "peak RSS MiB"];
    if weighted {
        header.insert(3, "× maxl");
    }
    if gpu {
        header.push("peak GPU MiB");
    }
    let mut t = Table::new(header);
    for r in results {
        let m = median(&r.ms);
        let mut row = vec![
            r.mode.name(),
            format!("{m:.2}"),
            base.map_or("—".into(), |b| format!("{:.2}", m / b)),
        ];
        if weighted {
            // maxl-weighted against the same MAXL iteration without weights, in the same run.
            let maxl = r
                .mode
                .unweighted()
                .and_then(|u| results.iter().find(|o| o.mode == u));
            row.push(maxl.map_or("—".into(), |o| format!("{:.3}", m / median(&o.ms))));
        }
        row.extend([
            spread_text(&r.ms),
            format!("{:.0}", r.peak_rss_kib as f64 / 1024.0),
        ]);
        if gpu {
            row.push(
                r.peak_gpu_bytes
                    .map_or("—".into(), |b| format!("{:.0}", b as f64 / MIB)),
            );
        }
        t.row(row);
    }
    t
}

/// Times one mode in this process and prints its [`WorkerLine`].
fn worker(a: &BenchArgs, name: &str) -> anyhow::Result<()> {
    let mode =
        BenchMode::parse(name).with_context(|| format!("--worker: unknown mode `{name}`"))?;
    let mut c = a.config()?;
    let launch = maxl_train::dist::Launch::from_env()?;
    let group = match &launch {
        Some(l) => {
            if let tch::Device::Cuda(_) = c.device {
                c.device = tch::Device::Cuda(l.local_rank);
            }
            let timeout = std::time::Duration::from_secs(600);
            let backend = maxl_train::dist::Backend::Auto;
            Some(maxl_train::dist::Group::join(
                l, backend, c.device, timeout,
            )?)
        }
        None => None,
    };
    let (ms, comm) = maxl_train::bench::time_mode_on(&c, mode, group.as_ref())?;
    let peak_gpu_bytes = match c.device {
        tch::Device::Cuda(i) => Some(maxl_train::bench::cuda_peak_bytes(i)?),
        _ => None,
    };
    if let Some(g) = &group {
        g.barrier()?;
        if g.rank() != 0 {
            return Ok(());
        }
    }
    let line = WorkerLine {
        mode: name.into(),
        ms,
        peak_rss_kib: maxl_cli::bench::own_peak_rss_kib(),
        peak_gpu_bytes,
        comm: group.is_some().then_some(CommLine {
            calls: comm.calls,
            bytes: comm.bytes,
            ms: comm.seconds * 1000.0,
        }),
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// One mode on `n` ranks of this machine (`bench --worker` with the launcher's environment,
/// `threads` each): rank 0's line.
fn time_ranks(a: &BenchArgs, mode: BenchMode, n: u16, threads: i32) -> anyhow::Result<WorkerLine> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut children = Vec::new();
    for rank in 0..n {
        let mut cmd = a.worker_command(mode)?;
        if a.threads.is_none() {
            cmd.args(["--threads", &threads.to_string()]);
        }
        cmd.env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdout(std::process::Stdio::piped());
        children.push(cmd.spawn().context("starting a rank")?);
    }
    let mut first = None;
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{}: rank {rank} failed ({})", mode.name(), out.status);
        }
        if rank == 0 {
            first = Some(WorkerLine::parse(
                mode,
                &String::from_utf8_lossy(&out.stdout),
            )?);
        }
    }
    first.context("no rank 0")
}

/// `--nproc-per-node N`: each mode on one process and on N ranks, interleaved over the
/// repeats; medians.
fn scaling(a: &BenchArgs, n: u16) -> anyhow::Result<()> {
    let config = a.config()?;
    if !a.batch_size.is_multiple_of(n as usize) || a.batch_size / (n as usize) < 2 {
        bail!(
            "--batch-size {} does not split into {n} shards of 2 or more",
            a.batch_size
        );
    }
    let modes = match &a.modes {
        Some(_) => a.modes()?,
        None => vec![
            BenchMode::Single,
            BenchMode::Fused(maxl_core::config::MetaGradientMode::Jvp),
        ],
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as i32;
    let one_threads = a.threads.unwrap_or(cores);
    let rank_threads = a.threads.unwrap_or((cores / n as i32).max(1));
    let bar = maxl_cli::progress::bar(
        (a.repeats * modes.len() * 2) as u64,
        "[{bar:30}] {pos}/{len}",
        false,
    );
    let runs = interleave(
        &modes,
        a.repeats,
        |&mode| {
            let mut one = a.worker_command(mode)?;
            if a.threads.is_none() {
                one.args(["--threads", &one_threads.to_string()]);
            }
            let m = run_process(&mut one).with_context(|| mode.name())?;
            let single = WorkerLine::parse(mode, &m.stdout)?;
            bar.inc(1);
            let many = time_ranks(a, mode, n, rank_threads)?;
            Ok((single.ms, many))
        },
        || bar.inc(1),
    )?;
    bar.finish_and_clear();
    let i = &config.arch.input;
    println!(
        "preset {} ({}×{}×{}), {}, global batch {}, device {:?}; 1 process × {one_threads} threads vs {n} ranks × {rank_threads} threads ({} cores), {} timed steps, medians of {} interleaved repeats",
        a.preset,
        i.channels,
        i.height,
        i.width,
        a.sizes(&config),
        a.batch_size,
        config.device,
        cores,
        a.iters,
        a.repeats
    );
    let ranks_ms = format!("{n} ranks ms");
    let mut t = Table::new(vec![
        "step",
        "1 process ms",
        ranks_ms.as_str(),
        "speed-up",
        "all-reduce ms",
        "all-reduce share",
        "all-reduces",
        "MiB reduced",
    ]);
    for (mode, runs) in modes.iter().zip(&runs) {
        let one: Vec<f64> = runs.iter().map(|(ms, _)| *ms).collect();
        let many: Vec<f64> = runs.iter().map(|(_, l)| l.ms).collect();
        let comm: Vec<CommLine> = runs.iter().filter_map(|(_, l)| l.comm).collect();
        let comm_ms = median(&comm.iter().map(|c| c.ms).collect::<Vec<_>>());
        let (one, many) = (median(&one), median(&many));
        let last = comm.last().copied();
        t.row(vec![
            mode.name(),
            format!("{one:.2}"),
            format!("{many:.2}"),
            format!("{:.2}", one / many),
            format!("{comm_ms:.2}"),
            format!("{:.0}%", 100.0 * comm_ms / many),
            last.map_or("—".into(), |c| c.calls.to_string()),
            last.map_or("—".into(), |c| format!("{:.2}", c.bytes as f64 / MIB)),
        ]);
    }
    print!("{t}");
    Ok(())
}

fn check_jvp(a: &BenchArgs) -> anyhow::Result<()> {
    let c = a.config()?;
    let d = maxl_train::bench::jvp_difference(&c)?;
    const BOUND: f64 = 1e-4;
    println!(
        "jvp vs double-backward, preset {} ({}×{}), {}, batch {}, f32, {:?}: max |difference| / max |meta-gradient| = {d:.2e} (bound {BOUND:.0e})",
        a.preset,
        c.arch.input.height,
        c.arch.input.width,
        a.sizes(&c),
        a.batch_size,
        c.device
    );
    if d.is_nan() || d > BOUND {
        bail!("the jvp meta-gradient differs from the double-backward one by {d:.2e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_input_size;

    #[test]
    fn input_sizes_parse() {
        assert_eq!(parse_input_size("64x48"), Ok((64, 48)));
        assert_eq!(parse_input_size("32×32"), Ok((32, 32)));
        assert_eq!(parse_input_size("64"), Ok((64, 64)));
        for bad in ["0x4", "64x", "x64", "-1", "big", ""] {
            assert!(parse_input_size(bad).is_err(), "{bad}");
        }
    }
}
