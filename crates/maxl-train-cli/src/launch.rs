//! `--nproc-per-node N`: runs N ranks of this same command on this machine, with the
//! environment torchrun would give them, and waits for them.

use std::ffi::OsString;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The command line without `--nproc-per-node N` (or `--nproc-per-node=N`).
fn rank_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for a in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        match a.to_str() {
            Some("--nproc-per-node") => skip_next = true,
            Some(s) if s.starts_with("--nproc-per-node=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// A TCP port free on 127.0.0.1 at the moment of asking.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts `n` ranks of this command and waits for all of them. When one fails, the others get
/// `grace` to fail on their own (they notice the lost rank and say so), then are killed.
pub fn spawn_ranks(n: u16, grace: Duration) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the maxl-train executable")?;
    let args = rank_args(std::env::args_os().skip(1));
    let port = free_port()?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = (cores / n as usize).max(1).to_string();
    let mut children: Vec<(u16, Child)> = Vec::new();
    for rank in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("MAXL_LAUNCHED_BY", "nproc-per-node")
            .env_remove("TORCHELASTIC_USE_AGENT_STORE");
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", &threads);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting rank {rank} ({})", exe.display()))?;
        children.push((rank, child));
    }
    tracing::info!("started {n} ranks on 127.0.0.1:{port}");
    let mut first_failure: Option<(u16, std::process::ExitStatus)> = None;
    let mut failed_at: Option<Instant> = None;
    let mut running = children;
    while !running.is_empty() {
        let mut still = Vec::new();
        for (rank, mut child) in running {
            match child.try_wait()? {
                Some(status) if !status.success() => {
                    first_failure.get_or_insert((rank, status));
                    failed_at.get_or_insert_with(Instant::now);
                }
                Some(_) => {}
                None => still.push((rank, child)),
            }
        }
        running = still;
        if failed_at.is_some_and(|t| t.elapsed() > grace) {
            for (rank, child) in &mut running {
                tracing::warn!("stopping rank {rank}: another rank failed");
                let _ = child.kill();
                let _ = child.wait();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        None => Ok(()),
        Some((rank, status)) => anyhow::bail!("rank {rank} of {n} failed ({status})"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ranks_get_the_command_without_the_launcher_flag() {
        let args = [
            "--epochs",
            "2",
            "--nproc-per-node",
            "2",
            "--nproc-per-node=3",
            "-q",
        ]
        .map(std::ffi::OsString::from);
        let got = super::rank_args(args.into_iter());
        assert_eq!(got, ["--epochs", "2", "-q"].map(std::ffi::OsString::from));
    }
}
