//! Training data kept on the training device.
//!
//! A small dataset is uploaded once, as bytes zero-padded by the crop padding, and every batch
//! is then made where it is used: one gather takes each image's crop window (mirrored where the
//! flip says so), and a 256-entry table turns the bytes into normalised values. Per step only
//! the batch's image indices, rows and columns travel to the device (8·B·(1+H+W) bytes instead
//! of 4·B·C·H·W bytes of floats). The placements are drawn on the host from the same random
//! stream, in the same order, as when batches are assembled there, and the table holds exactly
//! the host's normalised values: the batches are the same numbers either way. Datasets streamed
//! from their files and random resized crops are made on the host only.

use maxl_data::Dataset;
use maxl_data::batch::{Augment, Normalize, Placement};
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::data::PreparedData;

/// Where training batches are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPlacement {
    /// On the device when training on a GPU and the padded training, validation and test
    /// bytes together take at most 1 GiB; on the host otherwise.
    #[default]
    Auto,
    /// Upload the datasets to the training device (also on the CPU, where "device" memory is
    /// host memory: a second, padded copy) and make every batch there.
    Device,
    /// Assemble batches on the host, on a second thread, and copy them to the device.
    Host,
}

/// What [`DataPlacement::Auto`] keeps on a GPU: the bytes of the three sets, padded.
pub const AUTO_LIMIT_BYTES: usize = 1 << 30;

impl maxl_core::Choice for DataPlacement {
    const ALL: &'static [Self] = &[
        DataPlacement::Auto,
        DataPlacement::Device,
        DataPlacement::Host,
    ];

    fn name(self) -> &'static str {
        match self {
            DataPlacement::Auto => "auto",
            DataPlacement::Device => "device",
            DataPlacement::Host => "host",
        }
    }

    fn help(self) -> &'static str {
        match self {
            DataPlacement::Auto => {
                "On the device when training on a GPU and the padded training, validation and test bytes together take at most 1 GiB; on the host otherwise"
            }
            DataPlacement::Device => {
                "Upload the datasets to the training device (also on the CPU, where \"device\" memory is host memory: a second, padded copy) and make every batch there"
            }
            DataPlacement::Host => {
                "Assemble batches on the host, on a second thread, and copy them to the device"
            }
        }
    }
}

impl DataPlacement {
    /// Whether `data` is kept on `device`, with `pad` pixels of crop padding on each side of
    /// the training images.
    pub fn keeps(self, data: &PreparedData, pad: usize, device: Device) -> bool {
        match self {
            DataPlacement::Device => true,
            DataPlacement::Host => false,
            DataPlacement::Auto => {
                device.is_cuda() && resident_bytes(data, pad) <= AUTO_LIMIT_BYTES
            }
        }
    }
}

/// Bytes the three sets take on the device, the training set padded by `pad`.
pub fn resident_bytes(data: &PreparedData, pad: usize) -> usize {
    let t = &data.train;
    let train = t.len() * t.channels * (t.height + 2 * pad) * (t.width + 2 * pad);
    train + data.validation.decoded_bytes() + data.test.decoded_bytes()
}

/// Why batches of `data` augmented by `augment` can only be made on the host, if they can:
/// images streamed from their files are in no memory to upload, and a random resized crop is
/// a resampling, not a gather.
pub fn host_only(data: &PreparedData, augment: Option<Augment>) -> Option<&'static str> {
    if [&data.train, &data.validation, &data.test]
        .iter()
        .any(|d| d.is_streamed())
    {
        return Some(
            "the images are streamed from their files (over dataset.memory_budget_mb, or dataset.stream: always), so batches are made on the host",
        );
    }
    if augment.is_some_and(|a| a.resized_crop.is_some()) {
        return Some("random resized crops (dataset.random_resized_crop) are made on the host");
    }
    None
}

/// One dataset on the device.
pub struct ResidentSet {
    /// u8 [N, C, H + 2·pad, W + 2·pad], zero padding.
    pixels: Tensor,
    /// Primary labels, i64 [N].
    labels: Tensor,
    /// The fixed auxiliary slot of every image (`random` and `human` training sets), i64 [N].
    slots: Option<Tensor>,
    pad: usize,
    /// C, H, W of the unpadded images.
    shape: (usize, usize, usize),
}

/// The training, validation and test sets on the device, and the normalisation table.
pub struct Resident {
    /// The training set, padded for its crops, with its fixed auxiliary slots where the method has
    /// them.
    pub train: ResidentSet,
    /// The validation set (unpadded).
    pub validation: ResidentSet,
    /// The test set (unpadded).
    pub test: ResidentSet,
    /// The normalised value of each byte 0…255, [256], in the training kind.
    table: Tensor,
}

/// A batch made on the device: images [B, C, H, W], primary labels \[B\], fixed auxiliary
/// slots \[B\] where the set has them.
pub struct DeviceBatch {
    /// Normalised images [B, C, H, W], in the training kind.
    pub x: Tensor,
    /// Primary labels, i64 \[B\].
    pub y: Tensor,
    /// Fixed auxiliary slots, i64 \[B\] (the `random` and `human` training sets only).
    pub slots: Option<Tensor>,
}

impl Resident {
    /// New handles to the same device memory (for another thread).
    pub fn shallow_clone(&self) -> Self {
        Resident {
            train: self.train.shallow_clone(),
            validation: self.validation.shallow_clone(),
            test: self.test.shallow_clone(),
            table: self.table.shallow_clone(),
        }
    }

    /// Uploads `data`, the training set padded by `pad` for its crops.
    pub fn upload(
        data: &PreparedData,
        pad: usize,
        norm: Normalize,
        kind: Kind,
        device: Device,
    ) -> Result<Self, TrainError> {
        let table = Tensor::from_slice(&norm.table(data.train.channels))
            .f_to_kind(kind)?
            .f_to_device(device)?;
        Ok(Resident {
            train: ResidentSet::upload(&data.train, pad, data.fixed_aux.as_deref(), device)?,
            validation: ResidentSet::upload(&data.validation, 0, None, device)?,
            test: ResidentSet::upload(&data.test, 0, None, device)?,
            table,
        })
    }

    /// The images at `indices` of `set`, each placed as `placements` says.
    pub fn batch(
        &self,
        set: &ResidentSet,
        indices: &[usize],
        placements: &[Placement],
    ) -> Result<DeviceBatch, TrainError> {
        let device = set.pixels.device();
        let (c, h, w) = set.shape;
        let (b, p) = (indices.len(), set.pad as i64);
        let mut idx = Vec::with_capacity(b * (1 + h + w));
        idx.extend(indices.iter().map(|&i| i as i64));
        for q in placements {
            idx.extend((0..h as i64).map(|y| y + q.dy as i64 + p));
        }
        for q in placements {
            idx.extend((0..w as i64).map(|x| {
                let xx = if q.flip { w as i64 - 1 - x } else { x };
                xx + q.dx as i64 + p
            }));
        }
        let (b, c, h, w) = (b as i64, c as i64, h as i64, w as i64);
        let all = Tensor::from_slice(&idx).f_to_device(device)?;
        let images = all.narrow(0, 0, b);
        let rows = all.narrow(0, b, b * h).view([b, 1, h, 1]);
        let cols = all.narrow(0, b + b * h, b * w).view([b, 1, 1, w]);
        let channels = Tensor::arange(c, (Kind::Int64, device)).view([1, c, 1, 1]);
        let bytes = set.pixels.f_index(&[
            Some(images.view([b, 1, 1, 1])),
            Some(channels.shallow_clone()),
            Some(rows),
            Some(cols),
        ])?;
        // The table is channels × 256: channel c's values start at 256·c.
        let entries = bytes.to_kind(Kind::Int64) + channels * 256;
        Ok(DeviceBatch {
            x: self.table.f_take(&entries)?,
            y: set.labels.f_index_select(0, &images)?,
            slots: set
                .slots
                .as_ref()
                .map(|s| s.f_index_select(0, &images))
                .transpose()?,
        })
    }

    pub(crate) fn set(&self, split: crate::data::Split) -> &ResidentSet {
        use crate::data::Split;
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }

    /// Images `start..start + n` of `set`, unaugmented: a slice, no gather.
    pub fn range(&self, set: &ResidentSet, start: usize, n: usize) -> (Tensor, Tensor) {
        let (_, h, w) = set.shape;
        let p = set.pad as i64;
        let bytes = set
            .pixels
            .narrow(0, start as i64, n as i64)
            .narrow(2, p, h as i64)
            .narrow(3, p, w as i64);
        (
            self.table.take(&bytes.to_kind(Kind::Int64)),
            set.labels.narrow(0, start as i64, n as i64),
        )
    }
}

impl ResidentSet {
    fn shallow_clone(&self) -> Self {
        ResidentSet {
            pixels: self.pixels.shallow_clone(),
            labels: self.labels.shallow_clone(),
            slots: self.slots.as_ref().map(Tensor::shallow_clone),
            pad: self.pad,
            shape: self.shape,
        }
    }

    fn upload(
        ds: &Dataset,
        pad: usize,
        slots: Option<&[usize]>,
        device: Device,
    ) -> Result<Self, TrainError> {
        let shape = (ds.channels, ds.height, ds.width);
        let (c, h, w) = (shape.0 as i64, shape.1 as i64, shape.2 as i64);
        let p = pad as i64;
        let pixels = Tensor::from_slice(&ds.pixels)
            .f_view([ds.len() as i64, c, h, w])?
            .f_to_device(device)?
            .f_constant_pad_nd([p, p, p, p])?;
        let longs = |v: &[usize]| {
            let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            Tensor::from_slice(&v).f_to_device(device)
        };
        Ok(ResidentSet {
            pixels,
            labels: longs(&ds.labels)?,
            slots: slots.map(longs).transpose()?,
            pad,
            shape,
        })
    }
}
