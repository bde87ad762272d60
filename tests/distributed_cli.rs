//! maxl-train on two ranks as users launch it — the built-in `--nproc-per-node`, the venv's
//! torchrun, and Slurm's variables set by hand — on real Fashion-MNIST, with Gloo over
//! 127.0.0.1: the same run directory from each; a killed rank named by the survivor, and the run
//! resumed to the uninterrupted run's weights; ranks with different configs refused; commands
//! that run as one process refused as ranks.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_weights, bin, fashion_mnist_dir, metrics_without_seconds, python, run};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A short MAXL run: `epochs` over 256 images, global batch 32.
fn args(out: &Path, epochs: usize, train_limit: usize) -> Vec<String> {
    [
        "--quiet",
        "--epochs",
        &epochs.to_string(),
        "--train-limit",
        &train_limit.to_string(),
        "--test-limit",
        "200",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--dist-timeout",
        "60",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

/// Rank `rank` of 2 with the variables Slurm's srun sets (and MASTER_PORT, as a job script
/// does).
fn slurm_rank(rank: usize, port: u16, args: &[String]) -> Command {
    let mut c = Command::new(bin("maxl-train"));
    c.args(args)
        .env("SLURM_PROCID", rank.to_string())
        .env("SLURM_NTASKS", "2")
        .env("SLURM_LOCALID", rank.to_string())
        .env("SLURM_JOB_NODELIST", "localhost")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1");
    for v in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"] {
        c.env_remove(v);
    }
    c
}

/// Rank `rank` of 2 with torchrun's variables set by hand (no launcher agent).
fn env_rank(rank: usize, port: u16, args: &[String]) -> Command {
    let mut c = Command::new(bin("maxl-train"));
    c.args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1");
    c
}

fn spawn_captured(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) -> common::Run {
    let out = child.wait_with_output().unwrap();
    let r = common::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
    r
}

fn torchrun() -> PathBuf {
    let py = python();
    let dir = std::fs::canonicalize(&py)
        .ok()
        .and_then(|_| py.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let t = dir.join("torchrun");
    assert!(
        t.is_file(),
        "torchrun is missing next to {} (run scripts/setup.sh; the scripts export MAXL_PYTHON)",
        py.display()
    );
    t
}

#[test]
fn torchrun_slurm_and_nproc_per_node_give_the_same_run() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["builtin", "torchrun", "slurm"]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();

    let r = run(Command::new(bin("maxl-train"))
        .args(args(&dirs[0], 1, 256))
        .args(["--nproc-per-node", "2"]));
    r.assert_ok();
    assert!(
        r.stdout.contains("primary test accuracy"),
        "rank 0 prints the summary: {}",
        r.stdout
    );
    assert_eq!(
        r.stdout.matches("primary test accuracy").count(),
        1,
        "only rank 0 prints: {}",
        r.stdout
    );

    let r = run(Command::new(torchrun())
        .args(["--standalone", "--nproc-per-node", "2", "--no-python"])
        .arg(bin("maxl-train"))
        .args(args(&dirs[1], 1, 256))
        .env("OMP_NUM_THREADS", "1"));
    r.assert_ok();

    let port = free_port();
    let ranks: Vec<Child> = (0..2)
        .map(|rank| spawn_captured(slurm_rank(rank, port, &args(&dirs[2], 1, 256))))
        .collect();
    for (rank, c) in ranks.into_iter().enumerate() {
        finish(c, &format!("slurm rank {rank}")).assert_ok();
    }

    for d in &dirs[1..] {
        assert_eq!(
            metrics_without_seconds(&dirs[0]),
            metrics_without_seconds(d),
            "{}",
            d.display()
        );
        assert_same_weights(&dirs[0], d);
    }
    // Rank 0 alone wrote: one metrics row, one set of checkpoints.
    assert_eq!(metrics_without_seconds(&dirs[0]).len(), 2);
}

#[test]
fn a_killed_rank_is_named_and_the_run_resumes_to_the_uninterrupted_weights() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));

    let r = run(Command::new(bin("maxl-train"))
        .args(args(&full, 3, 1024))
        .args(["--nproc-per-node", "2"]));
    r.assert_ok();

    let port = free_port();
    let mut ranks: Vec<Child> = (0..2)
        .map(|rank| spawn_captured(env_rank(rank, port, &args(&cut, 3, 1024))))
        .collect();
    // Kill rank 1 in the second epoch: after the first epoch's row and checkpoint.
    let start = Instant::now();
    let metrics = cut.join("metrics.csv");
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "no first epoch");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    ranks[1].kill().unwrap();
    let _ = ranks[1].wait();
    let killed_at = Instant::now();
    let rank0 = ranks.remove(0);
    let r = finish(rank0, "rank 0");
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "rank 0 must stop within the timeout, took {took:?}"
    );
    r.assert_one_line_error(&["rank 0", "lost rank 1"]);
    assert!(
        std::fs::read_to_string(&metrics).unwrap().lines().count() < 4,
        "the run was interrupted before its last epoch"
    );

    let r = run(Command::new(bin("maxl-train"))
        .args([
            "--quiet",
            "--threads",
            "1",
            "--nproc-per-node",
            "2",
            "--resume",
        ])
        .arg(&cut));
    r.assert_ok();
    assert_eq!(
        metrics_without_seconds(&full),
        metrics_without_seconds(&cut)
    );
    assert_same_weights(&full, &cut);
}

#[test]
fn ranks_with_different_configs_are_refused_before_anything_is_written() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let port = free_port();
    let ranks: Vec<Child> = (0..2)
        .map(|rank| {
            let mut a = args(&out, 1, 256);
            a.extend(["--seed".to_string(), (rank + 1).to_string()]);
            spawn_captured(env_rank(rank, port, &a))
        })
        .collect();
    for (rank, c) in ranks.into_iter().enumerate() {
        finish(c, &format!("rank {rank}"))
            .assert_one_line_error(&[&format!("rank {rank}"), "differs between rank 0 and rank 1"]);
    }
    assert!(!out.exists(), "nothing written");

    // A global batch that does not divide among the ranks.
    let port = free_port();
    let ranks: Vec<Child> = (0..2)
        .map(|rank| {
            let mut a = args(&out, 1, 256);
            let at = a.iter().position(|s| s == "--batch-size").unwrap();
            a[at + 1] = "33".into();
            spawn_captured(env_rank(rank, port, &a))
        })
        .collect();
    for (rank, c) in ranks.into_iter().enumerate() {
        finish(c, &format!("rank {rank}"))
            .assert_one_line_error(&["batch_size 33", "does not divide among 2 ranks"]);
    }
    assert!(!out.exists(), "nothing written");
}

#[test]
fn commands_that_run_as_one_process_refuse_to_run_as_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(env_rank(1, free_port(), &[])
        .args(["results"])
        .arg(tmp.path()));
    r.assert_one_line_error(&["`maxl-train results` runs as one process", "2-rank run"]);
}
