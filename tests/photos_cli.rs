//! Fine-tuning on photos end to end, as a user does it: a folder of photo-like JPEGs of mixed
//! sizes and aspect ratios in class folders, a random torchvision checkpoint saved as `.pth` and
//! converted by the committed converter, a narrow ResNet MAXL run initialised from it, resumed
//! byte-exactly, streamed from disk with the same metrics, exported, and the folder labelled with
//! `maxl-label`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_same_weights, bin, metrics_without_seconds, python, run};

const CLASSES: [&str; 3] = ["amber", "moss", "slate"];

/// A deterministic photo-like JPEG: a class-coloured gradient with a class-specific pattern
/// and noise, `w`×`h` pixels.
fn photo(class: usize, w: u32, h: u32, seed: u64) -> image::RgbImage {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 41) as i32 - 20
    };
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let pattern = match class {
            0 => ((fx * 6.0).sin() * 60.0) as i32,
            1 => {
                if ((x / 6) + (y / 6)) % 2 == 0 {
                    50
                } else {
                    -50
                }
            }
            _ => (((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt() * 200.0) as i32 - 50,
        };
        let base = [[200, 140, 40], [60, 150, 70], [90, 100, 130]][class];
        let mut px =
            |c: usize| (base[c] + pattern + noise() + (fy * 40.0) as i32).clamp(0, 255) as u8;
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// `per_class` JPEGs per class under `dir/<class>/`, of mixed sizes and orientations.
fn photo_folder(dir: &Path, per_class: usize, seed: u64) -> usize {
    for (c, name) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..per_class {
            let k = seed + (c * 1000 + i) as u64;
            let (w, h) = (40 + (k * 7 % 50) as u32, 36 + (k * 13 % 44) as u32);
            let path = dir.join(name).join(format!("{i:03}.jpg"));
            photo(c, w, h, k).save(&path).unwrap();
        }
    }
    CLASSES.len() * per_class
}

/// A torchvision ResNet with one basic block per stage (random weights), saved as a `.pth`
/// state dict and converted to safetensors by scripts/convert_torchvision.py.
fn converted_checkpoint(dir: &Path) -> PathBuf {
    let pth = dir.join("resnet10.pth");
    let code = format!(
        "import torch, torchvision\n\
         torch.manual_seed(3)\n\
         m = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])\n\
         torch.save(m.state_dict(), {:?})\n",
        pth.display().to_string()
    );
    run(Command::new(python()).args(["-c", &code])).assert_ok();
    let out = dir.join("resnet10.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/convert_torchvision.py");
    run(Command::new(python()).arg(script).arg(&pth).arg(&out)).assert_ok();
    out
}

fn config(dir: &Path, init: &Path) -> PathBuf {
    let yaml = format!(
        "model:
  architecture:
    input: {{channels: 3, height: 32, width: 32, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], resize: {{shorter-side: 36}}}}
    resnet: {{block: basic, layers: [1, 1, 1, 1], widths: [64, 128, 256, 512], stem: imagenet}}
    head_hidden: 32
  init_from: {init:?}
dataset: {{kind: image-folder, path: {train:?}, test_path: {test:?}, crop_padding: 2}}
hierarchy: {{psi_per_class: 2}}
meta_gradient: jvp
batch_size: 30
multitask_optimizer: {{lr: 0.01, momentum: 0.9, backbone_lr_scale: 0.5}}
freeze_backbone_epochs: 1
",
        init = init.display().to_string(),
        train = dir.join("train").display().to_string(),
        test = dir.join("test").display().to_string(),
    );
    let path = dir.join("photos.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn train() -> Command {
    let mut c = Command::new(bin("maxl-train"));
    c.args(["--threads", "1"]);
    c
}

#[test]
fn fine_tune_a_resnet_on_photos_resume_export_and_label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n_train = photo_folder(&dir.join("train"), 60, 1);
    photo_folder(&dir.join("test"), 10, 9_000);
    let init = converted_checkpoint(dir);
    let cfg = config(dir, &init);

    // Two epochs straight (the first with frozen backbones), logged in full.
    let full = dir.join("full");
    let r = run(train()
        .arg("--config")
        .arg(&cfg)
        .args(["--epochs", "2", "--out"])
        .arg(&full));
    r.assert_ok();
    assert!(
        r.stderr.contains("f's backbone: loaded 60 tensors")
            && r.stderr.contains("g's backbone: loaded 60 tensors")
            && r.stderr.contains("ignored 14 (")
            && r.stderr.contains("fc.weight")
            && r.stderr.contains("kept their initialisation: 0 (none)"),
        "{}",
        r.stderr
    );

    // One epoch, then resumed to two: the same metrics and the same bytes.
    let split = dir.join("split");
    run(train()
        .arg("--config")
        .arg(&cfg)
        .args(["--quiet", "--epochs", "1", "--out"])
        .arg(&split))
    .assert_ok();
    run(train()
        .arg("--quiet")
        .arg("--resume")
        .arg(&split)
        .args(["--epochs", "2"]))
    .assert_ok();
    assert_eq!(
        metrics_without_seconds(&full),
        metrics_without_seconds(&split)
    );
    assert_same_weights(&full, &split);

    // Decoded from disk batch by batch instead of kept in memory: the same run.
    let streamed = dir.join("streamed");
    run(train()
        .arg("--config")
        .arg(&cfg)
        .args(["--quiet", "--stream", "always", "--epochs", "2", "--out"])
        .arg(&streamed))
    .assert_ok();
    assert_eq!(
        metrics_without_seconds(&full),
        metrics_without_seconds(&streamed)
    );

    // Export and label the training folder.
    let models = dir.join("models");
    run(Command::new(bin("maxl-train"))
        .args(["export", "--checkpoint"])
        .arg(split.join("checkpoints/last"))
        .arg("--out")
        .arg(&models))
    .assert_ok();
    let manifest = std::fs::read_to_string(models.join("maxl.yaml")).unwrap();
    assert!(manifest.contains("shorter-side: 36"), "{manifest}");
    let labels = dir.join("labels.csv");
    run(Command::new(bin("maxl-label"))
        .arg("--quiet")
        .arg("--input")
        .arg(dir.join("train"))
        .arg("--out")
        .arg(&labels)
        .arg("--model")
        .arg(&models))
    .assert_ok();
    let text = std::fs::read_to_string(&labels).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), n_train, "{text}");
    for row in rows {
        let class = CLASSES
            .iter()
            .find(|c| row.contains(&format!("{c}/")))
            .unwrap_or_else(|| panic!("{row}"));
        assert!(row.contains(&format!(",{class},")), "{row}");
    }

    // --max-steps 0 exports the initialised networks untrained; here with a generator of its
    // own architecture, which the export and its manifest carry.
    let untrained = dir.join("untrained");
    run(train()
        .arg("--config")
        .arg(&cfg)
        .args([
            "--quiet",
            "--max-steps",
            "0",
            "--generator-preset",
            "resnet18-cifar",
        ])
        .arg("--out")
        .arg(dir.join("zero"))
        .arg("--export")
        .arg(&untrained))
    .assert_ok();
    let manifest = std::fs::read_to_string(untrained.join("maxl.yaml")).unwrap();
    assert!(
        manifest.contains("generator_architecture: resnet18-cifar"),
        "{manifest}"
    );
    let r = run(Command::new(bin("maxl-infer"))
        .args(["predict", "--model"])
        .arg(&untrained)
        .arg(dir.join("train/moss/000.jpg")));
    r.assert_ok();

    // A shape mismatch names the tensor, in one line.
    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("widths: [64, 128, 256, 512]", "widths: [32, 64, 128, 256]");
    std::fs::write(&bad, text).unwrap();
    run(train()
        .arg("--config")
        .arg(&bad)
        .args(["--quiet", "--out"])
        .arg(dir.join("bad")))
    .assert_one_line_error(&["resnet10.safetensors", "`conv1.weight`", "shape"]);
}
