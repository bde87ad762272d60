//! `maxl-train export`: a run's checkpoint to ONNX with its manifest.

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct ExportArgs {
    /// Checkpoint directory of a run: <run>/checkpoints/last or <run>/checkpoints/best.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Output directory (created if needed; files are replaced atomically).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Fold batch norm into the preceding convolutions.
    #[arg(long)]
    fold_batch_norm: bool,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let opts = maxl_onnx::ExportOptions {
        fold_batch_norm: a.fold_batch_norm,
    };
    let m = maxl_train::export_checkpoint(&a.checkpoint, &a.out, opts)?;
    println!(
        "exported {} ({} classes, ψ = {:?}) to {}",
        a.checkpoint.display(),
        m.classes.len(),
        m.psi,
        a.out.display()
    );
    Ok(())
}
