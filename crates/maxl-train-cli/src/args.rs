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
