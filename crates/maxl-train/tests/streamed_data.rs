//! Image folders streamed from their files against the same folders decoded into memory: the
//! same batches and so the same metrics and weights bit for bit (padded crops, random resized
//! crops and centre-cropped evaluation included), a streamed run resumed equal to the
//! uninterrupted one, and a corrupt file met while streaming as a one-line error naming it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use maxl_core::config::TrainConfig;
use maxl_train::resident::DataPlacement;
use maxl_train::{RunOptions, TrainError};

/// libtorch's generator and thread count are process-wide: runs that must give the same weights
/// take turns.
static TURN: Mutex<()> = Mutex::new(());

/// `root/<class>/<i>.(png|jpg)`: 3 classes of 10 RGB images, 14 × 11, each class its own
/// colour and stripes, every image different.
fn image_folder(root: &Path) {
    for k in 0..3usize {
        let dir = root.join(["cat", "dog", "eel"][k]);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..10usize {
            let img = image::RgbImage::from_fn(14, 11, |x, y| {
                let stripe = (x as usize + k * y as usize + i).is_multiple_of(k + 2) as u8;
                image::Rgb([
                    60 * k as u8 + 100 * stripe,
                    (17 * i + 5 * x as usize) as u8,
                    (200 - 40 * k) as u8 + 3 * y as u8,
                ])
            });
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join(format!("{i}.{ext}"))).unwrap();
        }
    }
}

/// MAXL (its generator's slot usage is evaluated too) on a tiny network over `data`; `extra`
/// adds `dataset:` fields; `input` is the architecture's input mapping.
fn config(data: &Path, input: &str, extra: &str) -> TrainConfig {
    let yaml = format!(
        "method: maxl\nepochs: 2\nbatch_size: 8\nseed: 3\n\
         model: {{preset: small, architecture: {{input: {input}, \
         blocks: [{{convs: 1, channels: 4}}, {{convs: 1, channels: 4}}], head_hidden: 8}}}}\n\
         dataset: {{kind: image-folder, path: {}, test_fraction: 0.2, validation_fraction: 0.2, {extra}}}\n\
         hierarchy: {{psi_per_class: 2}}\n",
        data.display()
    );
    TrainConfig::from_yaml(&yaml, Path::new("test.yaml")).unwrap()
}

const STRETCH: &str = "{channels: 3, height: 8, width: 8, mean: 0.5, std: 0.25}";
/// Shorter side 10, centre crop 8 × 8: with random resized crops the images are kept 10 × 10.
const SHORTER: &str =
    "{channels: 3, height: 8, width: 8, mean: 0.5, std: 0.25, resize: {shorter-side: 10}}";

fn options() -> RunOptions<'static> {
    RunOptions {
        placement: DataPlacement::Host,
        ..RunOptions::default()
    }
}

fn train(c: &TrainConfig, out: &Path) -> Result<(), TrainError> {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    maxl_train::train(c, out, &options()).map(|_| ())
}

/// metrics.csv without the wall-clock and CPU-time columns, and the final weights' bytes.
fn results(dir: &Path) -> (Vec<String>, Vec<Vec<u8>>) {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let timed: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].ends_with("seconds"))
        .collect();
    assert_eq!(timed.len(), 2, "{header:?}");
    let rows = text
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l
                .split(',')
                .enumerate()
                .filter(|(i, _)| !timed.contains(i))
                .map(|(_, c)| c)
                .collect();
            cols.join(",")
        })
        .collect();
    let weights = ["multitask.safetensors", "label_generator.safetensors"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    (rows, weights)
}

fn with_stream(mut c: TrainConfig, stream: &str) -> TrainConfig {
    c.dataset.stream = maxl_core::Choice::from_name(stream).unwrap();
    c
}

#[test]
fn streamed_runs_equal_in_memory_runs_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    image_folder(&data);
    let cases = [
        (
            "padded-crop",
            STRETCH,
            "crop_padding: 2, horizontal_flip: true",
        ),
        (
            "resized-crop",
            SHORTER,
            "crop_padding: 0, horizontal_flip: true, random_resized_crop: true",
        ),
    ];
    for (name, input, extra) in cases {
        let c = config(&data, input, extra);
        let run = |stream: &str| {
            let out = tmp.path().join(format!("{name}-{stream}"));
            train(&with_stream(c.clone(), stream), &out).unwrap();
            out
        };
        let (memory, streamed) = (run("never"), run("always"));
        let (m, s) = (results(&memory), results(&streamed));
        assert_eq!(m.0.len(), 3, "{name}: a header and two epochs");
        assert_eq!(m, s, "{name}: streamed and in-memory runs differ");
        // auto with a budget of 0 MiB streams; the default budget keeps these images in memory.
        let mut tiny = with_stream(c.clone(), "auto");
        tiny.dataset.memory_budget_mb = 0;
        let out = tmp.path().join(format!("{name}-auto"));
        train(&tiny, &out).unwrap();
        assert_eq!(results(&out), m, "{name}: auto");
        // A streamed run interrupted after epoch 1 and resumed equals the uninterrupted one.
        let split = tmp.path().join(format!("{name}-split"));
        let mut one = with_stream(c.clone(), "always");
        one.epochs = 1;
        train(&one, &split).unwrap();
        {
            let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
            maxl_train::resume(&split, Some(2), &options()).unwrap();
        }
        assert_eq!(results(&split), s, "{name}: resumed");
    }
}

#[test]
fn a_random_resized_crop_changes_the_batches() {
    // The in-memory and streamed runs above agree; this checks that the crops do something.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    image_folder(&data);
    let plain = config(&data, SHORTER, "crop_padding: 0, horizontal_flip: false");
    let cropped = config(
        &data,
        SHORTER,
        "crop_padding: 0, horizontal_flip: false, random_resized_crop: true",
    );
    let (a, b) = (tmp.path().join("plain"), tmp.path().join("cropped"));
    train(&plain, &a).unwrap();
    train(&cropped, &b).unwrap();
    assert_ne!(results(&a).1, results(&b).1);
}

#[test]
fn a_corrupt_file_met_while_streaming_is_a_one_line_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    image_folder(&data);
    let bad: PathBuf = data.join("dog/broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthe rest is missing").unwrap();
    let c = with_stream(config(&data, STRETCH, "crop_padding: 1"), "always");
    // Listing the files reads none of them: the run starts, and the batch (or evaluation) that
    // meets the file fails.
    let e = train(&c, &tmp.path().join("streamed"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.png") && !e.contains('\n'), "{e}");
    assert!(e.contains("cannot decode"), "{e}");
    // In memory, the file is refused while the images are decoded, before the run directory.
    let c = with_stream(c, "never");
    let out = tmp.path().join("memory");
    let e = train(&c, &out).unwrap_err().to_string();
    assert!(e.contains("broken.png") && !e.contains('\n'), "{e}");
    assert!(!out.exists());
}

#[test]
fn streamed_images_and_resized_crops_refuse_device_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    image_folder(&data);
    let device = RunOptions {
        placement: DataPlacement::Device,
        ..RunOptions::default()
    };
    for (c, why) in [
        (
            with_stream(config(&data, STRETCH, "crop_padding: 1"), "always"),
            "streamed from their files",
        ),
        (
            config(&data, STRETCH, "crop_padding: 0, random_resized_crop: true"),
            "random resized crops",
        ),
    ] {
        let out = tmp.path().join("device");
        let e = {
            let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
            maxl_train::train(&c, &out, &device)
                .map(|_| ())
                .unwrap_err()
        }
        .to_string();
        assert!(
            e.starts_with("--data-placement device: ") && e.contains(why),
            "{e}"
        );
        assert!(!out.exists(), "a refused placement writes nothing");
    }
}
