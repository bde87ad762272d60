//! Data-parallel training on libtorch's c10d process groups (`cpp/dist.cpp`): how a process
//! learns its rank from the launcher ([`Launch`]: torchrun, Kubernetes, Slurm, or
//! `maxl-train --nproc-per-node`), and the [`Group`] it joins — Gloo for CPU tensors, NCCL for
//! CUDA tensors where maxl-train was built with it (Gloo otherwise, staging CUDA tensors through
//! host memory).
//!
//! Every rank must issue the same collectives in the same order with the same sizes (Gloo aborts
//! the process otherwise), so a run compares a digest of its config across ranks before its
//! first collective of training. A collective that fails — a peer that died, a timeout — comes
//! back as a [`TrainError::Distributed`] naming the ranks that did not answer a roll call in the
//! store, never as a hang.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_int, c_void};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::shim::call;

unsafe extern "C" {
    fn maxl_dist_has_nccl() -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn maxl_dist_init(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        host_store: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        backend: *const c_char,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn maxl_dist_allreduce(
        g: *mut c_void,
        t: *mut torch_sys::C_tensor,
        op: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn maxl_dist_broadcast(
        g: *mut c_void,
        t: *mut torch_sys::C_tensor,
        root: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn maxl_dist_barrier(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn maxl_dist_store_set(
        g: *mut c_void,
        key: *const c_char,
        value: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn maxl_dist_store_check(
        g: *mut c_void,
        key: *const c_char,
        present: *mut c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn maxl_dist_destroy(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
}

/// Whether this build of maxl-train has NCCL's process group (it needs CUDA headers at build
/// time).
pub fn has_nccl() -> bool {
    // SAFETY: a constant query.
    unsafe { maxl_dist_has_nccl() == 1 }
}

/// The port torchrun and PyTorch use when none is given.
pub const DEFAULT_PORT: u16 = 29500;

/// How one process of a data-parallel run was launched: its rank and the rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, 0..world.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Rank on this machine (the CUDA device index).
    pub local_rank: usize,
    /// The host of the TCPStore (MASTER_ADDR).
    pub master_addr: String,
    /// Its port (MASTER_PORT).
    pub master_port: u16,
    /// The store is hosted by a launcher agent (torchrun): every rank is a client.
    pub agent_store: bool,
    /// A prefix for the run's keys in the store (a torchrun restart gets fresh keys).
    pub prefix: String,
    /// Who launched it, for logs: torchrun, slurm or nproc-per-node.
    pub launcher: &'static str,
}

impl Launch {
    /// The launch described by the environment: torchrun / Kubernetes PyTorchJob (`RANK`,
    /// `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), else a Slurm task
    /// (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the first host of
    /// `SLURM_JOB_NODELIST` unless `MASTER_ADDR` is set). None for a single process (no such
    /// variables, a single Slurm task, or `WORLD_SIZE=1` without `MASTER_ADDR`); torchrun's
    /// world of one is a group of one rank.
    pub fn from_env() -> Result<Option<Launch>, TrainError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`from_env`](Launch::from_env) over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>, TrainError> {
        let num = |k: &str| -> Result<Option<usize>, TrainError> {
            var(k)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        TrainError::Invalid(format!("{k}={v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let port = || -> Result<u16, TrainError> {
            match var("MASTER_PORT") {
                None => Ok(DEFAULT_PORT),
                Some(p) => p.trim().parse::<u16>().map_err(|_| {
                    TrainError::Invalid(format!("MASTER_PORT={p:?} is not a port number"))
                }),
            }
        };
        let restart = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        let (rank, world, local_rank, master_addr, launcher, agent_store) =
            if let (Some(rank), Some(world)) = (num("RANK")?, num("WORLD_SIZE")?) {
                // A world of one with a store address is a group of one rank (torchrun with
                // one process, or a check of the NCCL process group on one GPU).
                if world == 1 && rank == 0 && var("MASTER_ADDR").is_none() {
                    return Ok(None);
                }
                let addr = var("MASTER_ADDR").ok_or_else(|| {
                    TrainError::Invalid("RANK and WORLD_SIZE are set but MASTER_ADDR is not".into())
                })?;
                let agent = var("TORCHELASTIC_USE_AGENT_STORE")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
                let launcher = if var("MAXL_LAUNCHED_BY").as_deref() == Some("nproc-per-node") {
                    "nproc-per-node"
                } else if var("TORCHELASTIC_RUN_ID").is_some() {
                    "torchrun"
                } else {
                    "environment"
                };
                let local = num("LOCAL_RANK")?.unwrap_or(rank);
                (rank, world, local, addr, launcher, agent)
            } else if let (Some(rank), Some(world)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
                if world == 1 && rank == 0 {
                    return Ok(None);
                }
                let local = num("SLURM_LOCALID")?.unwrap_or(0);
                let addr = match var("MASTER_ADDR") {
                    Some(a) => a,
                    None => {
                        let list = var("SLURM_JOB_NODELIST")
                            .or_else(|| var("SLURM_NODELIST"))
                            .ok_or_else(|| {
                                TrainError::Invalid(
                                    "a Slurm task without SLURM_JOB_NODELIST or MASTER_ADDR".into(),
                                )
                            })?;
                        first_host(&list).ok_or_else(|| {
                            TrainError::Invalid(format!(
                                "SLURM_JOB_NODELIST={list:?}: no host in it"
                            ))
                        })?
                    }
                };
                (rank, world, local, addr, "slurm", false)
            } else {
                return Ok(None);
            };
        if world == 0 || rank >= world {
            return Err(TrainError::Invalid(format!(
                "rank {rank} is not below the world size {world}"
            )));
        }
        if world == 1 && launcher == "slurm" {
            return Ok(None);
        }
        Ok(Some(Launch {
            rank,
            world,
            local_rank,
            master_addr,
            master_port: port()?,
            agent_store,
            prefix: format!("maxl/{restart}"),
            launcher,
        }))
    }
}

/// The first host of a Slurm node list: `gpu[03-06,09],cpu1` → `gpu03`, `node7,node8` →
/// `node7`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    // The first entry ends at a comma outside brackets.
    let mut depth = 0;
    let mut end = list.len();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let entry = &list[..end];
    let host = match entry.split_once('[') {
        None => entry.to_string(),
        Some((prefix, rest)) => {
            let first = rest.split([',', ']']).next()?;
            let start = first.split('-').next()?;
            format!("{prefix}{start}")
        }
    };
    (!host.is_empty()).then_some(host)
}

/// Which process-group backend a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// NCCL for CUDA when built with it, Gloo otherwise.
    #[default]
    Auto,
    /// Gloo (CPU tensors; CUDA tensors are staged through host memory).
    Gloo,
    /// NCCL (CUDA tensors only).
    Nccl,
}

impl maxl_core::Choice for Backend {
    const ALL: &'static [Self] = &[Backend::Auto, Backend::Gloo, Backend::Nccl];

    fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// A reduction of an all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Σ over ranks.
    Sum,
    /// The largest value.
    Max,
}

impl Reduce {
    fn code(self) -> c_int {
        match self {
            Reduce::Sum => 0,
            Reduce::Max => 3,
        }
    }
}

/// Time and volume of a group's collectives since it was joined (for benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// Collective calls.
    pub calls: u64,
    /// Bytes of the tensors reduced or broadcast (this rank's side).
    pub bytes: u64,
    /// Wall-clock seconds inside collectives (waiting for peers included).
    pub seconds: f64,
}

/// Elements per all-reduce call: larger lists are sent in buckets of this many.
const BUCKET_ELEMENTS: i64 = 8 << 20;

/// How long a rank waits for the others' answers to the roll call that names lost ranks.
const ROLL_CALL: Duration = Duration::from_secs(5);

/// A c10d process group this process has joined.
pub struct Group {
    ptr: *mut c_void,
    rank: usize,
    world: usize,
    backend: &'static str,
    /// CUDA tensors go through host memory (Gloo without NCCL).
    stage_on_host: bool,
    /// A collective failed: the group is not used (nor destroyed) again.
    failed: Cell<bool>,
    stats: Cell<CommStats>,
}

// SAFETY: the C++ group is used from one thread at a time (the training thread); c10d's
// backends are safe to call from any thread.
unsafe impl Send for Group {}
// SAFETY: see Send: every call goes through `&self` from the thread that trains.
unsafe impl Sync for Group {}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Group {{ rank: {}, world: {}, backend: {} }}",
            self.rank, self.world, self.backend
        )
    }
}

impl Group {
    /// Joins the group of `launch` for training on `device`: connects to (or, as rank 0 without
    /// a launcher's store, hosts) the TCPStore and creates the backend. Fails after `timeout`
    /// when not every rank arrives.
    pub fn join(
        launch: &Launch,
        backend: Backend,
        device: Device,
        timeout: Duration,
    ) -> Result<Group, TrainError> {
        let cuda = matches!(device, Device::Cuda(_));
        let name = match (backend, cuda) {
            (Backend::Nccl, false) => {
                return Err(TrainError::Invalid(
                    "--dist-backend nccl needs --device cuda (NCCL reduces CUDA tensors only)"
                        .into(),
                ));
            }
            (Backend::Nccl, true) => "nccl",
            (Backend::Auto, true) if has_nccl() => "nccl",
            (Backend::Auto, true) => {
                tracing::warn!(
                    "maxl-train was built without NCCL: Gloo reduces the CUDA tensors through host memory"
                );
                "gloo"
            }
            _ => "gloo",
        };
        let c = |s: &str| CString::new(s).map_err(|_| TrainError::Invalid(format!("{s:?}: NUL")));
        let (host, prefix, backend_name) = (c(&launch.master_addr)?, c(&launch.prefix)?, c(name)?);
        let mut ptr = std::ptr::null_mut();
        let host_store = launch.rank == 0 && !launch.agent_store;
        let what = format!(
            "rank {}: cannot join the {name} process group of {} ranks at {}:{}",
            launch.rank, launch.world, launch.master_addr, launch.master_port
        );
        call(|err, len| {
            // SAFETY: the strings outlive the call; `ptr` receives a new group.
            unsafe {
                maxl_dist_init(
                    host.as_ptr(),
                    launch.master_port as c_int,
                    launch.rank as c_int,
                    launch.world as c_int,
                    host_store as c_int,
                    timeout.as_millis().min(i64::MAX as u128) as i64,
                    prefix.as_ptr(),
                    backend_name.as_ptr(),
                    &mut ptr,
                    err,
                    len,
                )
            }
        })
        .map_err(|e| TrainError::Distributed(format!("{what}: {e}")))?;
        Ok(Group {
            ptr,
            rank: launch.rank,
            world: launch.world,
            backend: name,
            stage_on_host: cuda && name == "gloo",
            failed: Cell::new(false),
            stats: Cell::new(CommStats::default()),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The backend in use: "gloo" or "nccl".
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Time and volume of the collectives so far.
    pub fn stats(&self) -> CommStats {
        self.stats.get()
    }

    fn check_usable(&self) -> Result<(), TrainError> {
        if self.failed.get() {
            return Err(TrainError::Distributed(format!(
                "rank {}: the process group failed earlier",
                self.rank
            )));
        }
        Ok(())
    }

    /// Runs one collective on a flat tensor, counting it; a failure names the lost ranks.
    fn collective(
        &self,
        what: &str,
        t: &Tensor,
        f: impl FnOnce(*mut torch_sys::C_tensor, *mut c_char, usize) -> c_int,
    ) -> Result<(), TrainError> {
        self.check_usable()?;
        let start = Instant::now();
        let r = call(|err, len| f(t.as_ptr() as *mut torch_sys::C_tensor, err, len));
        let mut s = self.stats.get();
        s.calls += 1;
        s.bytes += (t.numel() * t.kind().elt_size_in_bytes()) as u64;
        s.seconds += start.elapsed().as_secs_f64();
        self.stats.set(s);
        r.map_err(|e| self.lost(what, &e))
    }

    /// Reduces `tensors` in place across ranks (flattened into buckets of one kind each).
    pub fn all_reduce(&self, tensors: &[Tensor], op: Reduce) -> Result<(), TrainError> {
        self.each_bucket(tensors, |flat| {
            self.collective("all-reduce", flat, |t, err, len| {
                // SAFETY: `t` is a live contiguous tensor handle for the call.
                unsafe { maxl_dist_allreduce(self.ptr, t, op.code(), err, len) }
            })
        })
    }

    /// Overwrites `tensors` with rank `root`'s.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<(), TrainError> {
        self.each_bucket(tensors, |flat| {
            self.collective("broadcast", flat, |t, err, len| {
                // SAFETY: as in all_reduce.
                unsafe { maxl_dist_broadcast(self.ptr, t, root as c_int, err, len) }
            })
        })
    }

    /// Waits until every rank has arrived.
    pub fn barrier(&self) -> Result<(), TrainError> {
        self.check_usable()?;
        // SAFETY: the group is live.
        call(|err, len| unsafe { maxl_dist_barrier(self.ptr, err, len) })
            .map_err(|e| self.lost("barrier", &e))
    }

    /// Flattens `tensors` into buckets (per kind and device, at most [`BUCKET_ELEMENTS`]
    /// elements), runs `op` on each and copies the results back.
    fn each_bucket(
        &self,
        tensors: &[Tensor],
        mut op: impl FnMut(&Tensor) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let mut start = 0;
        while start < tensors.len() {
            let (kind, device) = (tensors[start].kind(), tensors[start].device());
            let mut end = start;
            let mut elements = 0;
            while end < tensors.len()
                && tensors[end].kind() == kind
                && tensors[end].device() == device
                && (end == start || elements + tensors[end].numel() as i64 <= BUCKET_ELEMENTS)
            {
                elements += tensors[end].numel() as i64;
                end += 1;
            }
            let bucket = &tensors[start..end];
            tch::no_grad(|| -> Result<(), TrainError> {
                let parts: Vec<Tensor> = bucket.iter().map(|t| t.detach().reshape([-1])).collect();
                let mut flat = Tensor::cat(&parts, 0);
                if self.stage_on_host && device != Device::Cpu {
                    flat = flat.to_device(Device::Cpu);
                }
                op(&flat)?;
                let flat = flat.to_device(device);
                let mut offset = 0;
                for t in bucket {
                    let n = t.numel() as i64;
                    let mut dst = t.detach();
                    dst.copy_(&flat.narrow(0, offset, n).view(t.size().as_slice()));
                    offset += n;
                }
                Ok(())
            })?;
            start = end;
        }
        Ok(())
    }

    /// Every rank's `value` (one i64 each), in rank order.
    pub fn gather_i64(&self, value: i64) -> Result<Vec<i64>, TrainError> {
        let mut all = vec![0i64; self.world];
        all[self.rank] = value;
        let t = Tensor::from_slice(&all);
        self.all_reduce(std::slice::from_ref(&t), Reduce::Sum)?;
        Ok(Vec::<i64>::try_from(&t).expect("i64 vector"))
    }

    /// Whether every rank got this far without an error: each rank's `result` is exchanged;
    /// this rank's own error is returned as it is, another rank's failure as an error naming it
    /// (that rank reports its own reason).
    pub fn agree<T>(&self, stage: &str, result: Result<T, TrainError>) -> Result<T, TrainError> {
        let failed = self.gather_i64(result.is_err() as i64)?;
        let value = result?;
        let others: Vec<String> = failed
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f != 0)
            .map(|(r, _)| r.to_string())
            .collect();
        if others.is_empty() {
            return Ok(value);
        }
        Err(TrainError::Distributed(format!(
            "rank {}: rank {} failed {stage} (its own error says why); stopping",
            self.rank,
            others.join(", ")
        )))
    }

    /// Refuses to go on unless every rank has the same `digest` of `what`.
    pub fn same_everywhere(&self, what: &str, digest: u64) -> Result<(), TrainError> {
        // Positive i64s: the sum of the one-hot vector cannot overflow.
        let all = self.gather_i64((digest >> 1) as i64)?;
        let differ: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d != all[0])
            .map(|(r, _)| r.to_string())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(TrainError::Distributed(format!(
            "rank {}: {what} differs between rank 0 and rank {}: every rank must run the same \
             config (same file, flags and data)",
            self.rank,
            differ.join(", ")
        )))
    }

    /// The error of a failed collective: which ranks did not answer a roll call in the store
    /// within a few seconds (lost: dead, stopped or unreachable), with the backend's message.
    fn lost(&self, what: &str, message: &str) -> TrainError {
        self.failed.set(true);
        let lost = self.roll_call();
        let who = match lost {
            Ok(lost) if lost.is_empty() => "no rank is missing from the roll call".to_string(),
            Ok(lost) => format!("lost rank {}", join(&lost)),
            Err(_) if self.rank != 0 => "lost rank 0 (the store on its host is gone too)".into(),
            Err(e) => format!("the store is unreachable ({e})"),
        };
        TrainError::Distributed(format!(
            "rank {}: {what} failed: {who} ({message})",
            self.rank
        ))
    }

    /// The ranks that have not answered within [`ROLL_CALL`] after this one did.
    fn roll_call(&self) -> Result<Vec<usize>, String> {
        let key = |r: usize| CString::new(format!("rollcall/{r}")).expect("no NUL");
        let value = CString::new("alive").expect("no NUL");
        let mine = key(self.rank);
        // SAFETY: the group is live (it failed a collective, it was not destroyed).
        call(|err, len| unsafe {
            maxl_dist_store_set(self.ptr, mine.as_ptr(), value.as_ptr(), err, len)
        })?;
        let deadline = Instant::now() + ROLL_CALL;
        loop {
            let mut missing = Vec::new();
            for r in (0..self.world).filter(|&r| r != self.rank) {
                let k = key(r);
                let mut present = 0;
                // SAFETY: as above.
                call(|err, len| unsafe {
                    maxl_dist_store_check(self.ptr, k.as_ptr(), &mut present, err, len)
                })?;
                if present == 0 {
                    missing.push(r);
                }
            }
            if missing.is_empty() || Instant::now() >= deadline {
                return Ok(missing);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn join(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Drop for Group {
    fn drop(&mut self) {
        // After a failure the backend may still hold a broken connection: leave it (the process
        // is about to report the error and exit) rather than risk waiting on it.
        if self.failed.get() {
            return;
        }
        // SAFETY: the group is live and dropped once.
        if let Err(e) = call(|err, len| unsafe { maxl_dist_destroy(self.ptr, err, len) }) {
            tracing::warn!("rank {}: leaving the process group: {e}", self.rank);
        }
    }
}

/// One rank's part of a global batch: its share n_r / B, by which it weighs what it computed
/// on its own images before the sum across ranks (so that Σ_r share_r · mean_r is the mean over
/// the global batch, even when the last batch of an epoch splits unevenly).
#[derive(Clone, Copy)]
pub struct DataParallel<'a> {
    /// The group.
    pub group: &'a Group,
    /// n_r / B for the current batch.
    pub share: f64,
    /// Leaves the stage-1 gradient G unreduced when forming θ1⁺ (a different, wrong
    /// algorithm: kept for the test that shows the all-reduce is needed).
    pub skip_g_reduce: bool,
}

impl DataParallel<'_> {
    /// Σ_r share_r · x_r for each tensor (new tensors, without graph).
    pub fn mean(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>, TrainError> {
        let scaled: Vec<Tensor> = tch::no_grad(|| {
            tensors
                .iter()
                .map(|t| (t.detach() * self.share).contiguous())
                .collect()
        });
        self.group.all_reduce(&scaled, Reduce::Sum)?;
        Ok(scaled)
    }
}

/// The range of a batch of `n` images that `rank` of `world` takes: contiguous, sizes as even
/// as possible (the first n mod world ranks take one more).
pub fn shard(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// FNV-1a over bytes: a digest that is the same in every build (for comparing configs across
/// ranks).
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Sums of f64 values across ranks (metrics, evaluation counts); unchanged without a group.
pub fn sum_f64(group: Option<&Group>, values: &mut [f64]) -> Result<(), TrainError> {
    if let Some(g) = group {
        let t = Tensor::from_slice(values).to_kind(Kind::Double);
        g.all_reduce(std::slice::from_ref(&t), Reduce::Sum)?;
        values.copy_from_slice(&Vec::<f64>::try_from(&t).expect("f64 vector"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_node_lists() {
        assert_eq!(first_host("gpu[03-06,09],cpu1").as_deref(), Some("gpu03"));
        assert_eq!(first_host("node7,node8").as_deref(), Some("node7"));
        assert_eq!(first_host("n[1,4]").as_deref(), Some("n1"));
        assert_eq!(first_host("single").as_deref(), Some("single"));
        assert_eq!(first_host(""), None);
    }

    #[test]
    fn shards_cover_the_batch() {
        for (n, w) in [(8, 2), (7, 2), (10, 3), (3, 3)] {
            let parts: Vec<_> = (0..w).map(|r| shard(n, r, w)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[w - 1].end, n);
            for p in parts.windows(2) {
                assert_eq!(p[0].end, p[1].start);
                assert!(p[0].len() >= p[1].len() && p[0].len() - p[1].len() <= 1);
            }
        }
    }

    #[test]
    fn launches_from_the_environment() {
        let vars = |pairs: &'static [(&str, &str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Launch::from_vars(vars(&[])).unwrap(), None);
        let torchrun = Launch::from_vars(vars(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RUN_ID", "x"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (torchrun.rank, torchrun.world, torchrun.local_rank),
            (1, 2, 1)
        );
        assert!(torchrun.agent_store);
        assert_eq!(torchrun.launcher, "torchrun");
        assert_eq!(torchrun.prefix, "maxl/2");
        let slurm = Launch::from_vars(vars(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(slurm.master_addr, "gpu07");
        assert_eq!(
            (slurm.rank, slurm.local_rank, slurm.master_port),
            (3, 1, 29500)
        );
        assert!(!slurm.agent_store);
        // One Slurm task (any single-GPU job): a single process.
        let one = vars(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]);
        assert_eq!(Launch::from_vars(one).unwrap(), None);
        // torchrun with one process: a group of one rank.
        let one = vars(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "h")]);
        assert_eq!(Launch::from_vars(one).unwrap().unwrap().world, 1);
        assert_eq!(
            Launch::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "1")])).unwrap(),
            None
        );
        // Inconsistent: refused with the variable named.
        let bad = Launch::from_vars(vars(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
        ]));
        assert!(bad.unwrap_err().to_string().contains("rank 2"));
        let bad = Launch::from_vars(vars(&[("RANK", "x"), ("WORLD_SIZE", "2")]));
        assert!(bad.unwrap_err().to_string().contains("RANK"));
    }
}
