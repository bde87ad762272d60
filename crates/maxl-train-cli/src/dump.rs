//! `maxl-train dump-images`: a dataset's test split written as an image folder.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use maxl_cli::choice;
use maxl_core::config::DatasetKind;

#[derive(Args)]
pub struct DumpArgs {
    /// Dataset format (fashion-mnist, idx, cifar10, cifar100).
    #[arg(long, value_parser = choice::<DatasetKind>(), default_value = "fashion-mnist")]
    dataset: DatasetKind,
    /// Dataset directory (default for Fashion-MNIST: /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Images per class.
    #[arg(long, default_value_t = 20)]
    per_class: usize,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(a: DumpArgs) -> anyhow::Result<()> {
    let need = || {
        a.data
            .as_deref()
            .context("--data is required for this dataset")
    };
    let test = match a.dataset {
        DatasetKind::FashionMnist => maxl_data::idx::fashion_mnist(a.data.as_deref())?.test,
        DatasetKind::Idx => maxl_data::idx::idx_dir(need()?, None)?.test,
        DatasetKind::Cifar10 => maxl_data::cifar::cifar10(need()?)?.test,
        DatasetKind::Cifar100 => maxl_data::cifar::cifar100(need()?)?.test,
        DatasetKind::ImageFolder | DatasetKind::Csv => {
            bail!("--dataset: image folders and CSV lists are images already")
        }
    };
    let n = maxl_data::dump::write_image_folder(&test, &a.out, a.per_class)?;
    println!("wrote {n} images to {}", a.out.display());
    Ok(())
}
