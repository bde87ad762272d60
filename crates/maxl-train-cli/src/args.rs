//! Arguments more than one command takes.

use clap::Args;
use maxl_cli::choice;
use maxl_train::DeviceRequest;
use maxl_train::resident::DataPlacement;

/// Where to train, and where its batches are made (train, compare).
#[derive(Args)]
pub struct TargetArgs {
    /// Where to train: cpu, cuda (fails when libtorch sees no GPU) or auto (cuda if available).
    #[arg(long, value_parser = choice::<DeviceRequest>(), default_value = "cpu")]
    pub device: DeviceRequest,
    /// Where training batches are made: device (the images are uploaded once, zero-padded for
    /// the crops, and every batch is cropped, flipped and normalised there), host (assembled on
    /// a second thread and copied over), or auto (device on a GPU when the images take at most
    /// 1 GiB, host otherwise). The batches are the same numbers either way.
    #[arg(long, value_parser = choice::<DataPlacement>(), default_value = "auto")]
    pub data_placement: DataPlacement,
    /// libtorch CPU threads (default: libtorch's choice, usually one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<i32>,
}

impl TargetArgs {
    /// Sets libtorch's threads and resolves the device.
    pub fn device(&self) -> anyhow::Result<tch::Device> {
        if let Some(n) = self.threads {
            tch::set_num_threads(n);
        }
        Ok(self.device.resolve()?)
    }
}

/// How this process takes part in a data-parallel run (train, resume, bench).
#[derive(Args, Clone)]
pub struct DistArgs {
    /// Start N ranks of a data-parallel run on this machine (N processes, 127.0.0.1, a free
    /// port; OMP_NUM_THREADS = cores / N unless set) and wait for them; one that fails stops
    /// the others. Under torchrun, Slurm (srun) or Kubernetes the launcher starts the ranks
    /// instead: maxl-train reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (or
    /// SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST). batch_size stays the
    /// global batch; rank 0 writes the run directory.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub nproc_per_node: Option<u16>,
    /// Process-group backend: gloo (CPU tensors; CUDA tensors go through host memory), nccl
    /// (CUDA; needs a build with NCCL) or auto (nccl for CUDA when built with it, else gloo).
    #[arg(long, value_parser = choice::<maxl_train::dist::Backend>(), default_value = "auto")]
    pub dist_backend: maxl_train::dist::Backend,
    /// Seconds a rank waits for the others (to join, or in a collective) before it fails with
    /// an error naming the ranks that did not answer. A rank that dies is noticed at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub dist_timeout: u64,
}

impl DistArgs {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.dist_timeout)
    }
}
