//! What both ONNX files say about the model in `ModelProto.metadata_props`, so that a file
//! describes itself to tools that never see `maxl.yaml` (onnxruntime's
//! `get_modelmeta().custom_metadata_map`, Netron, Triton), and so that a loader can check the
//! manifest it sits next to against it.
//!
//! | key | value (JSON) |
//! |---|---|
//! | `maxl.format` | the metadata format, [`METADATA_FORMAT`] |
//! | `maxl.producer` | the program that exported the file: `"maxl-train 0.1.0"` |
//! | `maxl.classes` | the primary classes in label order: `[{"name": "T-shirt_top", "display": "T-shirt/top"}, …]` |
//! | `maxl.psi` | ψ, the auxiliary classes of each primary class: `[5, 5, …]` |
//! | `maxl.aux_slots` | the auxiliary slot names in slot order: `["T-shirt_top.0", …]` |
//! | `maxl.input` | what `image` expects: `{"layout": "NCHW", "channels": 3, "height": 224, "width": 224, "pixel_range": [0.0, 1.0], "normalisation": "in-graph", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": {"shorter-side": 256}}` |
//!
//! Each value is the manifest field of the same name written as JSON, except that `mean` and `std`
//! are always one value per channel and `resize` is always present (`"stretch"` or
//! `{"shorter-side": S}`). Floats are written as serde_json writes an f32, the shortest decimal
//! that reads back as the same f32, so a reader can compare them exactly.

use std::collections::BTreeMap;

use maxl_core::arch::{PerChannel, Resize};
use maxl_core::manifest::{ClassName, Manifest, ManifestInput};
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

/// The metadata format this version writes and reads.
pub const METADATA_FORMAT: u32 = 1;
/// Key of the metadata format.
pub const KEY_FORMAT: &str = "maxl.format";
/// Key of the program that exported the file.
pub const KEY_PRODUCER: &str = "maxl.producer";
/// Key of the primary classes (folder-safe and display names).
pub const KEY_CLASSES: &str = "maxl.classes";
/// Key of ψ.
pub const KEY_PSI: &str = "maxl.psi";
/// Key of the auxiliary slot names.
pub const KEY_AUX_SLOTS: &str = "maxl.aux_slots";
/// Key of the `image` input's description.
pub const KEY_INPUT: &str = "maxl.input";

/// The keys every file with maxl metadata has, in the order they are written.
pub const METADATA_KEYS: [&str; 6] = [
    KEY_FORMAT,
    KEY_PRODUCER,
    KEY_CLASSES,
    KEY_PSI,
    KEY_AUX_SLOTS,
    KEY_INPUT,
];

/// What an exported ONNX file says about its model: the manifest's model-describing fields, built
/// from the same values as the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    /// The program that exported the file, with its version (`maxl-train 0.1.0`).
    pub producer: String,
    /// The primary classes, in label order.
    pub classes: Vec<ClassName>,
    /// ψ: the number of auxiliary classes of each primary class.
    pub psi: Vec<usize>,
    /// The auxiliary slot names (`<class>.<k>`), in slot order.
    pub aux_slots: Vec<String>,
    /// What the `image` input expects. Read back from a file, `mean` and `std` are per-channel
    /// lists.
    pub input: ManifestInput,
}

/// `maxl.input` as written: mean and std one value per channel, the resize policy always there.
#[derive(Serialize, Deserialize)]
struct InputJson {
    layout: String,
    channels: usize,
    height: usize,
    width: usize,
    pixel_range: [f32; 2],
    normalisation: String,
    mean: Vec<f32>,
    std: Vec<f32>,
    resize: Resize,
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata values always serialise")
}

impl ModelMetadata {
    /// The metadata a manifest describes (its producer, classes, ψ, slots and input).
    pub fn of_manifest(m: &Manifest) -> Self {
        ModelMetadata {
            producer: m.producer.clone(),
            classes: m.classes.clone(),
            psi: m.psi.clone(),
            aux_slots: m.aux_slots.clone(),
            input: m.input.clone(),
        }
    }

    /// The metadata as key → JSON value, as the files hold it.
    pub fn to_props(&self) -> BTreeMap<String, String> {
        let i = &self.input;
        let input = InputJson {
            layout: i.layout.clone(),
            channels: i.channels,
            height: i.height,
            width: i.width,
            pixel_range: i.pixel_range,
            normalisation: i.normalisation.clone(),
            mean: i.mean.expand(i.channels),
            std: i.std.expand(i.channels),
            resize: i.resize,
        };
        [
            (KEY_FORMAT, to_json(&METADATA_FORMAT)),
            (KEY_PRODUCER, to_json(&self.producer)),
            (KEY_CLASSES, to_json(&self.classes)),
            (KEY_PSI, to_json(&self.psi)),
            (KEY_AUX_SLOTS, to_json(&self.aux_slots)),
            (KEY_INPUT, to_json(&input)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The `metadata_props` entries of a `ModelProto`, in [`METADATA_KEYS`] order.
    pub(crate) fn to_proto(&self) -> Vec<pb::StringStringEntryProto> {
        let mut props = self.to_props();
        METADATA_KEYS
            .iter()
            .filter_map(|k| props.remove_entry(*k))
            .map(|(key, value)| pb::StringStringEntryProto { key, value })
            .collect()
    }

    /// Reads the maxl metadata of a file's `metadata_props` (as [`crate::GraphDecl::metadata`]
    /// holds them): `Ok(None)` when there is no `maxl.` key (files exported before the metadata
    /// existed), an error naming the key when one is missing, unreadable or of another format.
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        if !props.keys().any(|k| k.starts_with("maxl.")) {
            return Ok(None);
        }
        fn get<T: for<'de> Deserialize<'de>>(
            props: &BTreeMap<String, String>,
            key: &str,
        ) -> Result<T, String> {
            let text = props
                .get(key)
                .ok_or_else(|| format!("metadata has no `{key}`"))?;
            serde_json::from_str(text).map_err(|e| format!("metadata `{key}`: {e}"))
        }
        let format: u32 = get(props, KEY_FORMAT)?;
        if format != METADATA_FORMAT {
            return Err(format!(
                "metadata format {format} (this maxl reads {METADATA_FORMAT})"
            ));
        }
        let i: InputJson = get(props, KEY_INPUT)?;
        Ok(Some(ModelMetadata {
            producer: get(props, KEY_PRODUCER)?,
            classes: get(props, KEY_CLASSES)?,
            psi: get(props, KEY_PSI)?,
            aux_slots: get(props, KEY_AUX_SLOTS)?,
            input: ManifestInput {
                layout: i.layout,
                channels: i.channels,
                height: i.height,
                width: i.width,
                pixel_range: i.pixel_range,
                normalisation: i.normalisation,
                mean: PerChannel::Channels(i.mean),
                std: PerChannel::Channels(i.std),
                resize: i.resize,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(mean: PerChannel, resize: Resize) -> ModelMetadata {
        ModelMetadata {
            producer: "maxl-train 0.1.0".into(),
            classes: vec![
                ClassName {
                    name: "T-shirt_top".into(),
                    display: "T-shirt/top".into(),
                },
                ClassName {
                    name: "Bag".into(),
                    display: "Bag".into(),
                },
            ],
            psi: vec![2, 1],
            aux_slots: vec![
                "T-shirt_top.0".into(),
                "T-shirt_top.1".into(),
                "Bag.0".into(),
            ],
            input: ManifestInput {
                layout: "NCHW".into(),
                channels: 3,
                height: 224,
                width: 224,
                pixel_range: [0.0, 1.0],
                normalisation: "in-graph".into(),
                mean,
                std: PerChannel::Channels(maxl_core::arch::IMAGENET_STD.to_vec()),
                resize,
            },
        }
    }

    #[test]
    fn values_are_json_and_read_back_exactly() {
        let m = sample(
            PerChannel::Channels(maxl_core::arch::IMAGENET_MEAN.to_vec()),
            Resize::ShorterSide(256),
        );
        let props = m.to_props();
        assert_eq!(props.keys().count(), METADATA_KEYS.len());
        assert_eq!(props[KEY_FORMAT], "1");
        assert_eq!(props[KEY_PSI], "[2,1]");
        assert_eq!(
            props[KEY_CLASSES],
            r#"[{"name":"T-shirt_top","display":"T-shirt/top"},{"name":"Bag","display":"Bag"}]"#
        );
        assert_eq!(
            props[KEY_INPUT],
            r#"{"layout":"NCHW","channels":3,"height":224,"width":224,"pixel_range":[0.0,1.0],"normalisation":"in-graph","mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"resize":{"shorter-side":256}}"#
        );
        assert_eq!(ModelMetadata::from_props(&props).unwrap(), Some(m));
        let proto: Vec<String> = sample(0.5.into(), Resize::Stretch)
            .to_proto()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(proto, METADATA_KEYS);
    }

    #[test]
    fn one_mean_is_written_per_channel_and_stretch_explicitly() {
        let props = sample(0.5.into(), Resize::Stretch).to_props();
        assert!(
            props[KEY_INPUT].contains(r#""mean":[0.5,0.5,0.5]"#)
                && props[KEY_INPUT].ends_with(r#""resize":"stretch"}"#),
            "{}",
            props[KEY_INPUT]
        );
        let back = ModelMetadata::from_props(&props).unwrap().unwrap();
        assert_eq!(back.input.mean, PerChannel::Channels(vec![0.5; 3]));
    }

    #[test]
    fn files_without_maxl_keys_have_none_and_broken_ones_name_the_key() {
        let mut props = BTreeMap::from([("author".to_string(), "someone".to_string())]);
        assert_eq!(ModelMetadata::from_props(&props), Ok(None));
        props.extend(sample(0.5.into(), Resize::Stretch).to_props());
        props.insert(KEY_PSI.into(), "[2, oops]".into());
        let e = ModelMetadata::from_props(&props).unwrap_err();
        assert!(e.starts_with("metadata `maxl.psi`: "), "{e}");
        props.remove(KEY_PSI);
        let e = ModelMetadata::from_props(&props).unwrap_err();
        assert_eq!(e, "metadata has no `maxl.psi`");
        props.insert(KEY_FORMAT.into(), "2".into());
        let e = ModelMetadata::from_props(&props).unwrap_err();
        assert_eq!(e, "metadata format 2 (this maxl reads 1)");
    }
}
