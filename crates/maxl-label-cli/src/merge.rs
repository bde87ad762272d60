//! `maxl-label merge`: shards back into one CSV.

use std::path::PathBuf;

use clap::Args;
use maxl_label::MergeRequest;
use maxl_label::run::meta_path;

#[derive(Args)]
pub struct MergeArgs {
    /// The merged CSV (with OUT.meta.json beside it).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The shards' finished CSVs (each with its .meta.json).
    #[arg(value_name = "SHARD_CSV", required = true)]
    shards: Vec<PathBuf>,
    /// Also merge the shards' errors files (as their runs recorded them) into this file.
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    /// Replace an existing --out (and --errors).
    #[arg(long)]
    force: bool,
}

/// Merges the shards and says what was written.
pub fn run(m: &MergeArgs) -> anyhow::Result<bool> {
    let merged = maxl_label::merge(&MergeRequest {
        out: m.out.clone(),
        shards: m.shards.clone(),
        errors: m.errors.clone(),
        force: m.force,
    })?;
    println!(
        "merged {} shards: {} rows into {} ({} skipped, {} ignored; details in {})",
        merged.shards,
        merged.rows,
        m.out.display(),
        merged.counts.skipped,
        merged.counts.ignored,
        meta_path(&m.out).display()
    );
    Ok(true)
}
