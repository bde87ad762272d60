//! One photo, one input tensor: training's image-folder reader (`maxl_train::data::prepare`,
//! then maxl-data's `assemble` with the run's `Normalize`, what training evaluates on) and
//! maxl-infer's `MaxlModel::preprocess_file` on the exported model, whose manifest says
//! `resize: {shorter-side: S}`, give the same numbers bit for bit, for an EXIF-rotated JPEG and a
//! PNG, neither square. maxl-label and `maxl-infer predict`/`serve` go through
//! `MaxlModel::preprocess_file` too (tests/shorter_side_paths.rs compares their outputs).

use maxl_core::arch::Architecture;
use maxl_core::config::{DatasetKind, TrainConfig};
use maxl_core::hierarchy::Hierarchy;
use maxl_data::batch::{Normalize, assemble};
use maxl_data::folder::{Resize, load_image};
use maxl_infer::{Backend, MaxlModel};
use maxl_train::export::{ExportInfo, export};
use maxl_train::net::{LabelGenerator, MultiTaskNet};
use tch::{Device, Kind};

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A textured, non-square RGB photo.
fn photo(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x as f32 * 0.7).sin() * (y as f32 * 0.45).cos() * 50.0) as i32;
        let px = |base: i32| (base + t).clamp(0, 255) as u8;
        image::Rgb([
            px((x * 200 / w) as i32 + 20),
            px(180 - (y * 150 / h) as i32),
            px(((x + y) % 64) as i32 * 3),
        ])
    })
}

#[path = "../../../tests/common/jpeg.rs"]
mod jpeg;

#[test]
fn training_and_inference_read_a_photo_into_the_same_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    for class in ["portrait", "wide"] {
        std::fs::create_dir_all(photos.join(class)).unwrap();
    }
    // Stored 300×200, shown 200×300; and a 261×170 PNG.
    let jpeg = jpeg::exif_jpeg(&photo(300, 200), 6, 90);
    std::fs::write(photos.join("portrait/rotated.jpg"), jpeg).unwrap();
    photo(261, 170).save(photos.join("wide/wide.png")).unwrap();
    let files = [
        photos.join("portrait/rotated.jpg"),
        photos.join("wide/wide.png"),
    ];

    let arch: Architecture = serde_yaml_ng::from_str(&format!(
        "input: {{channels: 3, height: 40, width: 36, mean: {MEAN:?}, std: {STD:?}, resize: {{shorter-side: 47}}}}\n\
         blocks: [{{convs: 1, channels: 4}}]\n\
         head_hidden: 8\n"
    ))
    .unwrap();
    arch.validate().unwrap();
    let mut config = TrainConfig::default();
    config.dataset.kind = DatasetKind::ImageFolder;
    config.dataset.path = Some(photos.clone());
    config.dataset.test_path = Some(photos.clone());
    config.dataset.validation_fraction = 0.0;
    let test = maxl_train::data::prepare(&config, &arch).unwrap().test;
    assert_eq!(test.len(), 2);
    assert_eq!(test.class_names, ["portrait", "wide"]);

    // The network's weights do not matter here: random ones, exported as training exports.
    let h = Hierarchy::new(vec![2, 2]).unwrap();
    let f = MultiTaskNet::new(&arch, 2, 4, Kind::Float, Device::Cpu);
    let g = LabelGenerator::new(&arch, &h, Kind::Float, Device::Cpu);
    let info = ExportInfo {
        config: &config,
        arch: &arch,
        hierarchy: &h,
        class_names: &test.class_names,
        epochs: 0,
        primary_test_accuracy: None,
    };
    let dir = tmp.path().join("model");
    export(&dir, &f, Some(&g), &info, Default::default()).unwrap();
    let manifest = std::fs::read_to_string(dir.join("maxl.yaml")).unwrap();
    assert!(manifest.contains("shorter-side: 47"), "{manifest}");
    let model = MaxlModel::builder(&dir)
        .with_backend(Backend::Tract)
        .build()
        .unwrap();
    assert_eq!(model.input_shape().resize, Resize::ShorterSide(47));

    let plane = 40 * 36;
    let norm = Normalize::per_channel(&MEAN, &STD);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for i in 0..test.len() {
        let file = &files[test.labels[i]];
        let inference = model.preprocess_file(file).unwrap();
        // The pixels in [0, 1], where the two paths meet.
        let unit = Normalize::uniform(0.0, 1.0);
        let training: Vec<f32> = (test.image(i).iter().enumerate())
            .map(|(j, &p)| unit.apply(p, j / plane))
            .collect();
        assert_eq!(bits(&training), bits(&inference), "{}", file.display());
        // Normalised: training's batch against the manifest's mean and std (the graph's).
        let batch = assemble(
            &test,
            &[i],
            norm,
            None::<(maxl_data::batch::Augment, &mut rand::rngs::StdRng)>,
        );
        let i_mean = model.manifest().input.mean.expand(3);
        let i_std = model.manifest().input.std.expand(3);
        let normalised: Vec<f32> = (inference.iter().enumerate())
            .map(|(j, &x)| (x - i_mean[j / plane]) / i_std[j / plane])
            .collect();
        assert_eq!(bits(&batch), bits(&normalised), "{}", file.display());
        // The policy matters: stretched, the same photo is another tensor.
        let stretched = maxl_data::folder::ImageShape {
            resize: Resize::Stretch,
            ..model.input_shape()
        };
        assert_ne!(load_image(file, stretched).unwrap(), test.image(i));
    }
}
