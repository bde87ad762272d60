//! maxl-label and maxl-infer with the model committed in models/, on real Fashion-MNIST images.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, fashion_mnist_dir, run};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn dump(out: &Path, per_class: usize) {
    fashion_mnist_dir();
    run(Command::new(bin("maxl-train"))
        .args([
            "dump-images",
            "--per-class",
            &per_class.to_string(),
            "--out",
        ])
        .arg(out))
    .assert_ok();
}

fn label(input: &Path, out: &Path, backend: &str) -> common::Run {
    run(&mut label_with(input, out, &["--backend", backend]))
}

/// The CSV's rows as maps column → value (header by name).
fn rows(csv: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect()
}

#[test]
fn labels_a_folder_identically_with_ort_and_tract() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 6);
    let (a, b) = (tmp.path().join("ort.csv"), tmp.path().join("tract.csv"));
    let r = label(&imgs, &a, "ort-cpu");
    r.assert_ok();
    assert!(r.stdout.contains("labelled 60 images"), "{}", r.stdout);
    label(&imgs, &b, "tract").assert_ok();
    let (ta, tb) = (
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap(),
    );
    assert_eq!(ta.lines().count(), 61);
    assert_eq!(
        ta.lines().next().unwrap(),
        "path,class,class_source,class_probability,aux_slot,aux_label,aux_probability"
    );
    // Paths, classes and slots (the probabilities may differ in the last digits).
    let key = |t: &str| {
        rows(t)
            .iter()
            .map(|r| format!("{},{},{}", r["path"], r["class"], r["aux_slot"]))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&ta), key(&tb), "ort and tract assign the same slots");
    // Rows are sorted by path; every slot lies inside its class's ψ range (ψ = 5).
    let manifest = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let classes: Vec<&str> = manifest.classes.iter().map(|c| c.name.as_str()).collect();
    let all = rows(&ta);
    let paths: Vec<&String> = all.iter().map(|r| &r["path"]).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    for r in &all {
        let slot: usize = r["aux_slot"].parse().unwrap();
        assert_eq!(classes[slot / 5], r["class"], "{r:?}");
        assert_eq!(r["class_source"], "folder");
        assert!(r["path"].starts_with(&format!("{}/", r["class"])), "{r:?}");
        assert!(
            r["aux_label"].starts_with(&format!("{}.", r["class"])),
            "{r:?}"
        );
        for c in ["class_probability", "aux_probability"] {
            let p: f32 = r[c].parse().unwrap();
            assert!(p > 0.0 && p <= 1.0, "{r:?}");
        }
    }
}

#[test]
fn predicted_primary_on_a_flat_folder_equals_maxl_infer() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 4);
    // Flatten: no class folders at all.
    let flat = tmp.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    let mut files = Vec::new();
    for d in std::fs::read_dir(&imgs).unwrap() {
        let d = d.unwrap().path();
        for f in std::fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            let name = format!(
                "{}-{}",
                d.file_name().unwrap().to_str().unwrap(),
                f.file_name().unwrap().to_str().unwrap()
            );
            std::fs::copy(&f, flat.join(&name)).unwrap();
            files.push(flat.join(name));
        }
    }
    let out = tmp.path().join("pred.csv");
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(&flat)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(models())
        .args(["--primary", "predicted", "--probs"]));
    r.assert_ok();
    let labelled = rows(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(labelled.len(), 40);
    let p = run(Command::new(bin("maxl-infer"))
        .args(["predict", "--model"])
        .arg(models())
        .args(&files));
    p.assert_ok();
    let predicted = rows(&p.stdout);
    for row in &labelled {
        assert_eq!(row["class_source"], "predicted");
        let full = flat.join(&row["path"]).display().to_string();
        let q = predicted
            .iter()
            .find(|q| q["path"] == full)
            .unwrap_or_else(|| panic!("{full} not predicted"));
        for c in ["class", "aux_slot", "aux_label"] {
            assert_eq!(row[c], q[c], "{c} of {full}");
        }
        for c in ["class_probability", "aux_probability"] {
            let (a, b): (f32, f32) = (row[c].parse().unwrap(), q[c].parse().unwrap());
            assert!((a - b).abs() < 2e-6, "{c} of {full}: {a} vs {b}");
        }
        // The distribution over the class's 5 slots sums to 1 and holds the slot's probability.
        let d: Vec<f32> = row["aux_distribution"]
            .split(';')
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(d.len(), 5);
        assert!((d.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        let slot: usize = row["aux_slot"].parse().unwrap();
        assert_eq!(format!("{:.6}", d[slot % 5]), row["aux_probability"]);
    }
}

/// A valid PNG header declaring `w`×`h`, followed by garbage instead of image data.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut b = Vec::new();
    image::DynamicImage::new_luma8(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
        .unwrap();
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&b[12..29]);
    let crc = crc.sum();
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A real decompression bomb: 10000×10000 black pixels, about 100 KB compressed.
fn png_bomb() -> Vec<u8> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let px = vec![0u8; 10_000 * 10_000];
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::NoFilter)
        .write_image(&px, 10_000, 10_000, image::ExtendedColorType::L8)
        .unwrap();
    out
}

fn is_root() -> bool {
    // SAFETY-free: the effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_hostile_folder_labels_every_good_image_and_lists_every_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 2);
    let bag = imgs.join("Bag");
    let good_png = std::fs::read_dir(&bag)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&good_png).unwrap();
    let w = |name: &str, b: &[u8]| std::fs::write(bag.join(name), b).unwrap();
    // Bad files.
    w("zero.png", b"");
    w("truncated.png", &bytes[..bytes.len() / 2]);
    w("text.jpg", b"these are not the pixels you are looking for");
    w("bomb.png", &png_bomb());
    w("header65535.png", &png_declaring(65535, 65535));
    std::os::unix::fs::symlink(bag.join("nowhere.png"), bag.join("dangling.png")).unwrap();
    std::os::unix::fs::symlink(&imgs, bag.join("loop")).unwrap();
    std::fs::create_dir(imgs.join("Zebra")).unwrap();
    std::fs::copy(&good_png, imgs.join("Zebra/z.png")).unwrap();
    w("notes.txt", b"ignored");
    let unreadable = !is_root();
    if unreadable {
        w("locked.png", &bytes);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            bag.join("locked.png"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
    }
    // Good, if unusual, images.
    let save = |name: &str, img: image::DynamicImage| img.save(bag.join(name)).unwrap();
    save(
        "rgb16.png",
        image::DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(30, 20, |x, y| {
            image::Rgb([x as u16 * 2000, y as u16 * 3000, 40000])
        })),
    );
    save(
        "rgba.png",
        image::DynamicImage::ImageRgba8(image::ImageBuffer::from_fn(28, 28, |x, _| {
            image::Rgba([200, 100, 50, (x * 9) as u8])
        })),
    );
    save("tiny.png", image::DynamicImage::new_luma8(1, 1));
    save(
        "big.jpg",
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(4000, 3000, |x, y| {
            image::Rgb([(x / 16) as u8, (y / 12) as u8, 128])
        })),
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmyk.jpg"),
        bag.join("cmyk.jpg"),
    )
    .unwrap();

    let out = tmp.path().join("labels.csv");
    let errors = tmp.path().join("errors.csv");
    let r = run(label_with(&imgs, &out, &[]).arg("--errors").arg(&errors));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let labelled = rows(&std::fs::read_to_string(&out).unwrap());
    let paths: Vec<&str> = labelled.iter().map(|r| r["path"].as_str()).collect();
    for good in [
        "Bag/rgb16.png",
        "Bag/rgba.png",
        "Bag/tiny.png",
        "Bag/big.jpg",
        "Bag/cmyk.jpg",
    ] {
        assert!(paths.contains(&good), "{good} not labelled: {paths:?}");
    }
    assert_eq!(labelled.len(), 20 + 5);
    let errs = std::fs::read_to_string(&errors).unwrap();
    let reason = |p: &str| {
        errs.lines()
            .find(|l| l.starts_with(&format!("{p},")))
            .unwrap_or_else(|| panic!("{p} missing from the errors file:\n{errs}"))
            .to_string()
    };
    assert!(reason("Bag/zero.png").contains("not a PNG or JPEG"));
    assert!(reason("Bag/truncated.png").contains("cannot decode"));
    assert!(reason("Bag/text.jpg").contains("not a PNG or JPEG"));
    assert!(reason("Bag/bomb.png").contains("image is 10000×10000, over the decode limit"));
    assert!(reason("Bag/header65535.png").contains("image is 65535×65535, over the decode limit"));
    assert!(reason("Bag/dangling.png").contains("dangling symbolic link"));
    assert!(reason("Bag/loop").contains("symbolic link loop"));
    assert!(reason("Zebra/z.png").contains("folder `Zebra` is not a class of the model"));
    assert!(reason("Bag/notes.txt").contains("ignored: not named as an image"));
    let bad = if unreadable {
        assert!(reason("Bag/locked.png").contains("ermission denied"));
        9
    } else {
        8
    };
    assert_eq!(errs.lines().count(), 1 + bad + 1, "{errs}");
    assert!(
        r.stdout.contains(&format!("({bad} skipped, 1 ignored)")),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!(
            "{bad} of {} entries could not be labelled",
            25 + bad + 1
        )),
        "{}",
        r.stderr
    );
    // Without --errors the skipped entries are on stderr, one line each.
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(&imgs)
        .arg("--out")
        .arg(tmp.path().join("again.csv"))
        .arg("--model")
        .arg(models()));
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr.matches("maxl-label: skipped: ").count(),
        bad,
        "{}",
        r.stderr
    );
}

#[test]
fn lists_and_nested_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 2);
    // Nested <class>/<fine>/ folders: the class is the top folder.
    let nested = tmp.path().join("nested");
    for d in std::fs::read_dir(&imgs).unwrap() {
        let d = d.unwrap().path();
        let class = d.file_name().unwrap().to_owned();
        for (i, f) in std::fs::read_dir(&d).unwrap().enumerate() {
            let to = nested.join(&class).join(format!("fine{i}"));
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(f.unwrap().path(), to.join("x.png")).unwrap();
        }
    }
    let out = tmp.path().join("nested.csv");
    label(&nested, &out, "ort-cpu").assert_ok();
    let nested_rows = rows(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(nested_rows.len(), 20);
    assert!(
        nested_rows
            .iter()
            .all(|r| r["path"].starts_with(&format!("{}/fine", r["class"])))
    );
    // A CSV list (training's format), with an unknown label and a path listed twice.
    let list = tmp.path().join("list.csv");
    let mut text = String::from("path,label\n");
    for r in &nested_rows {
        text.push_str(&format!("nested/{},{}\n", r["path"], r["class"]));
    }
    text.push_str("nested/Bag/fine0/zebra.png,Zebra\n");
    text.push_str(&format!(
        "nested/{},{}\n",
        nested_rows[1]["path"], nested_rows[1]["class"]
    ));
    std::fs::write(&list, text).unwrap();
    let out = tmp.path().join("list-out.csv");
    let errors = tmp.path().join("list-errors.csv");
    let r = run(label_with(&list, &out, &[]).arg("--errors").arg(&errors));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let list_rows = rows(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(list_rows.len(), 20);
    for (a, b) in list_rows.iter().zip(&nested_rows) {
        assert_eq!(a["path"], format!("nested/{}", b["path"]));
        assert_eq!(a["class_source"], "csv");
        for c in ["class", "aux_slot", "aux_probability", "class_probability"] {
            assert_eq!(a[c], b[c]);
        }
    }
    let errs = std::fs::read_to_string(&errors).unwrap();
    assert!(
        errs.contains("label `Zebra` is not a class of the model"),
        "{errs}"
    );
    assert!(errs.contains("listed again (first at"), "{errs}");
}

fn label_with(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("maxl-label"));
    c.arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(models())
        .args(extra);
    c
}

#[test]
fn shards_merge_into_the_unsharded_output_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 8);
    std::fs::write(imgs.join("Bag/broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let whole = tmp.path().join("whole.csv");
    let whole_err = tmp.path().join("whole-errors.csv");
    let opts = ["--probs", "--min-confidence", "0.3", "--batch-size", "7"];
    let mut c = label_with(&imgs, &whole, &opts);
    c.arg("--errors").arg(&whole_err);
    assert_eq!(run(&mut c).code, Some(1));
    // Three shards at once, as an array job would run them.
    let shard = |i: usize| tmp.path().join(format!("shard{i}.csv"));
    let children: Vec<_> = (1..=3)
        .map(|i| {
            let mut c = label_with(&imgs, &shard(i), &opts);
            c.args(["--shard", &format!("{i}/3"), "--quiet", "--errors"])
                .arg(tmp.path().join(format!("errors{i}.csv")));
            c.stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    let sizes: Vec<usize> = (1..=3)
        .map(|i| std::fs::read_to_string(shard(i)).unwrap().lines().count() - 1)
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 80, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s > 10), "{sizes:?}");
    let merged = tmp.path().join("merged.csv");
    let merged_err = tmp.path().join("merged-errors.csv");
    let r = run(Command::new(bin("maxl-label"))
        .args(["merge", "--out"])
        .arg(&merged)
        .arg("--errors")
        .arg(&merged_err)
        .arg(shard(3))
        .arg(shard(1))
        .arg(shard(2)));
    r.assert_ok();
    assert!(
        r.stdout.contains("merged 3 shards: 80 rows"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&whole).unwrap()
    );
    assert_eq!(
        std::fs::read(&merged_err).unwrap(),
        std::fs::read(&whole_err).unwrap()
    );
    // A missing shard, a shard given twice, an unsharded file: refused, nothing written.
    let m2 = tmp.path().join("m2.csv");
    let refuse = |args: &[PathBuf], needle: &str| {
        let r = run(Command::new(bin("maxl-label"))
            .args(["merge", "--out"])
            .arg(&m2)
            .args(args));
        r.assert_one_line_error(&[needle]);
        assert!(!m2.exists());
    };
    refuse(&[shard(1), shard(3)], "shard 2/3 of this job is missing");
    refuse(&[shard(1), shard(1), shard(2)], "is shard 1/3 again");
    refuse(&[shard(1), whole.clone()], "was not written with --shard");
}

fn labelled_tree(tmp: &Path, per_class: usize) -> PathBuf {
    let imgs = tmp.join("imgs");
    dump(&imgs, per_class);
    std::fs::write(imgs.join("Coat/broken.png"), b"garbage").unwrap();
    imgs
}

#[test]
fn a_killed_run_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = labelled_tree(tmp.path(), 30);
    let opts = ["--batch-size", "8", "--probs", "--quiet"];
    let whole = tmp.path().join("whole.csv");
    let whole_err = tmp.path().join("whole-errors.csv");
    let mut c = label_with(&imgs, &whole, &opts);
    c.arg("--errors").arg(&whole_err);
    assert_eq!(run(&mut c).code, Some(1));
    let expected = std::fs::read(&whole).unwrap();
    let expected_err = std::fs::read(&whole_err).unwrap();
    for (n, failpoint) in ["after-rows:3", "after-checkpoint:5", "after-rows:1"]
        .iter()
        .enumerate()
    {
        let out = tmp.path().join(format!("killed{n}.csv"));
        let err = tmp.path().join(format!("killed{n}-errors.csv"));
        let mut c = label_with(&imgs, &out, &opts);
        c.arg("--errors")
            .arg(&err)
            .env("MAXL_LABEL_FAILPOINT", failpoint);
        let r = run(&mut c);
        assert_eq!(
            r.code, None,
            "{failpoint}: killed by a signal (a maxl-label built without its `failpoints` feature \
             finishes instead: build it with the tests, `cargo build --workspace --all-targets`)\n{}",
            r.stderr
        );
        assert!(!out.exists(), "no final file after a crash");
        // Without --resume the interrupted run is protected, not overwritten.
        let mut again = label_with(&imgs, &out, &opts);
        again.arg("--errors").arg(&err);
        run(&mut again).assert_one_line_error(&["an interrupted run of this --out exists"]);
        // Other options are refused.
        let mut other = label_with(&imgs, &out, &["--batch-size", "16", "--resume", "--probs"]);
        other.arg("--errors").arg(&err);
        run(&mut other).assert_one_line_error(&["--batch-size: was 8, now 16"]);
        let mut resume = label_with(&imgs, &out, &opts);
        resume.arg("--errors").arg(&err).arg("--resume");
        assert_eq!(run(&mut resume).code, Some(1), "{failpoint}");
        assert_eq!(std::fs::read(&out).unwrap(), expected, "{failpoint}");
        assert_eq!(std::fs::read(&err).unwrap(), expected_err, "{failpoint}");
    }
    // And once at a random moment (SIGKILL from outside), then resumed until done.
    let out = tmp.path().join("random.csv");
    let err = tmp.path().join("random-errors.csv");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let wait = std::time::Duration::from_millis(50 + (nanos % 400) as u64);
    let mut c = label_with(&imgs, &out, &opts);
    c.arg("--errors").arg(&err);
    let mut child = c.stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(wait);
    let _ = child.kill();
    let _ = child.wait();
    let mut resume = label_with(&imgs, &out, &opts);
    resume.arg("--errors").arg(&err);
    if tmp.path().join("random.csv.partial.json").exists() {
        resume.arg("--resume");
    } else {
        // It finished (or had not started) before the kill.
        resume.arg("--force");
    }
    let r = run(&mut resume);
    assert_eq!(r.code, Some(1), "killed after {wait:?}: {}", r.stderr);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        expected,
        "killed after {wait:?}"
    );
    assert_eq!(
        std::fs::read(&err).unwrap(),
        expected_err,
        "killed after {wait:?}"
    );
}

#[test]
fn the_gallery_shows_every_class_with_the_summary_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 12);
    let out = tmp.path().join("labels.csv");
    let gallery = tmp.path().join("gallery");
    let r = run(&mut label_with(
        &imgs,
        &out,
        &[
            "--gallery",
            gallery.to_str().unwrap(),
            "--gallery-images",
            "6",
        ],
    ));
    r.assert_ok();
    let manifest = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let html = std::fs::read_to_string(gallery.join("index.html")).unwrap();
    let labelled = rows(&std::fs::read_to_string(&out).unwrap());
    for c in &manifest.classes {
        // The summary line and the index's table row carry the same per-slot counts.
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", c.name)))
            .unwrap_or_else(|| panic!("{} not in the summary: {}", c.name, r.stdout));
        let per_slot = line.split("per slot: ").nth(1).unwrap();
        let counts: Vec<usize> = per_slot.split(" / ").map(|v| v.parse().unwrap()).collect();
        assert_eq!(counts.len(), 5, "ψ = 5 rows: {line}");
        assert_eq!(counts.iter().sum::<usize>(), 12);
        for (k, n) in counts.iter().enumerate() {
            let from_csv = labelled
                .iter()
                .filter(|r| r["aux_label"] == format!("{}.{k}", c.name))
                .count();
            assert_eq!(*n, from_csv, "{}.{k}", c.name);
        }
        assert!(
            html.contains(&format!(
                "<tr><td><a href=\"#{0}\">{0}</a></td><td>12</td><td>{per_slot}</td></tr>",
                c.name
            )),
            "{html}"
        );
        assert!(
            html.contains(&format!("<img src=\"{}.png\"", c.name)),
            "{html}"
        );
        // One sheet per class: a title band, then 5 slot rows of 96-pixel thumbnails
        // (56 + 5 × (122 + 6) + 6 pixels high) and 6 thumbnails a row.
        let sheet = image::open(gallery.join(format!("{}.png", c.name))).unwrap();
        assert_eq!(
            (sheet.width(), sheet.height()),
            (210 + 6 * 102 + 6, 56 + 5 * 128 + 6),
            "{}",
            c.name
        );
        // Not blank: the thumbnails are drawn.
        let px = sheet.to_luma8();
        let dark = px.pixels().filter(|p| p.0[0] < 64).count();
        assert!(dark > 2000, "{}: {dark} dark pixels", c.name);
    }
    assert!(
        r.stdout.contains("gallery: ") && r.stdout.contains("(10 sheets)"),
        "{}",
        r.stdout
    );
}

#[test]
fn model_errors_are_one_line_and_keep_an_existing_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 1);
    let out = tmp.path().join("labels.csv");
    std::fs::write(&out, "precious\n").unwrap();
    // A model directory whose ONNX file does not match the manifest.
    let bad = tmp.path().join("model");
    std::fs::create_dir(&bad).unwrap();
    for f in ["maxl.yaml", "primary.onnx", "label_generator.onnx"] {
        std::fs::copy(models().join(f), bad.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(bad.join("primary.onnx")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(bad.join("primary.onnx"), bytes).unwrap();
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(&imgs)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(&bad)
        .arg("--force"));
    r.assert_one_line_error(&["primary.onnx: SHA-256", "does not match"]);
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(&imgs)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(tmp.path().join("none"))
        .arg("--force"));
    r.assert_one_line_error(&["maxl.yaml: cannot read"]);
    let r = run(&mut label_with(&imgs, &out, &[]));
    r.assert_one_line_error(&["labels.csv: exists; pass --force"]);
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(tmp.path().join("nothing"))
        .arg("--out")
        .arg(tmp.path().join("new.csv"))
        .arg("--model")
        .arg(models()));
    r.assert_one_line_error(&["nothing"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
}

#[test]
fn maxl_infer_predicts_real_images_mostly_right() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 5);
    let files: Vec<PathBuf> = std::fs::read_dir(&imgs)
        .unwrap()
        .flat_map(|d| {
            std::fs::read_dir(d.unwrap().path())
                .unwrap()
                .map(|f| f.unwrap().path())
        })
        .collect();
    for backend in ["ort-cpu", "tract"] {
        let r = run(Command::new(bin("maxl-infer"))
            .args(["predict", "--backend", backend, "--model"])
            .arg(models())
            .args(&files));
        r.assert_ok();
        let right = r
            .stdout
            .lines()
            .skip(1)
            .filter(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                common::folder_of(cols[0]) == cols[1]
            })
            .count();
        assert!(right >= 35, "{backend}: {right} of 50 right\n{}", r.stdout);
    }
}

#[test]
fn bench_smoke_test_times_every_case_and_writes_its_report() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let r = run(Command::new(bin("maxl-label"))
        .args([
            "bench",
            "--images",
            "20",
            "--runs",
            "1",
            "--backends",
            "tract",
        ])
        .args(["--rss-scale", "2", "--threads", "2", "--dir"])
        .arg(tmp.path().join("data"))
        .arg("--model")
        .arg(models())
        .arg("--json")
        .arg(&json));
    r.assert_ok();
    for case in ["256x256 JPEG", "28x28 PNG"] {
        assert!(
            r.stdout.contains(&format!("| {case} | tract | ")),
            "{}",
            r.stdout
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    for row in rows {
        assert_eq!(row["images"], 20, "{row}");
        assert_eq!(row["runs"].as_array().unwrap().len(), 1, "{row}");
        assert!(row["median_images_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["median_peak_rss_mib"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(report["rss_big"]["images"], 40, "{report}");
    assert!(report["rss_big"]["peak_rss_mib"].as_f64().unwrap() > 0.0);
    // The generated datasets stay for the next run; the children's outputs do not.
    assert!(tmp.path().join("data/png28-20/.complete").exists());
    assert!(!tmp.path().join("data/bench-out.csv").exists());
}

/// `maxl-label` with a `maxl-weighted` model: the `aux_weight` column last (the same weights on
/// both backends), its distribution in the summary, weights in the gallery, and shards, merge
/// and resume as byte-exact as without it.
#[test]
fn a_weighted_model_adds_aux_weight_through_summary_gallery_shards_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let like = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let model = maxl_label::synthetic::model(&tmp.path().join("weighted"), &like, true, 9).unwrap();
    let classes: Vec<String> = like.classes.iter().map(|c| c.name.clone()).collect();
    let imgs = maxl_label::synthetic::generate(
        tmp.path(),
        maxl_label::synthetic::Case::Png28,
        60,
        &classes,
    )
    .unwrap();
    let label = |out: &Path, extra: &[&str]| {
        let mut c = Command::new(bin("maxl-label"));
        c.arg("--input")
            .arg(&imgs)
            .arg("--out")
            .arg(out)
            .arg("--model")
            .arg(&model)
            .args(["--probs", "--min-confidence", "0.3", "--batch-size", "8"])
            .args(extra);
        c
    };
    let gallery = tmp.path().join("gallery");
    let mut weights = Vec::new();
    for backend in ["ort-cpu", "tract"] {
        let out = tmp.path().join(format!("{backend}.csv"));
        let mut c = label(&out, &["--backend", backend]);
        if backend == "tract" {
            c.arg("--gallery")
                .arg(&gallery)
                .args(["--gallery-images", "4"]);
        }
        let r = run(&mut c);
        r.assert_ok();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "path,class,class_source,class_probability,aux_slot,aux_label,aux_probability,aux_distribution,flag,aux_weight"
        );
        let all = rows(&text);
        assert_eq!(all.len(), 60);
        let w: Vec<f32> = all
            .iter()
            .map(|r| r["aux_weight"].parse().unwrap())
            .collect();
        assert!(w.iter().all(|w| *w > 0.0 && *w < 2.0), "{w:?}");
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("aux_weight: mean "))
            .unwrap_or_else(|| panic!("no weight distribution in: {}", r.stdout));
        for part in ["p10 ", "p50 ", "p90 "] {
            assert!(line.contains(part), "{line}");
        }
        weights.push(w);
    }
    for (o, t) in weights[0].iter().zip(&weights[1]) {
        assert!((o - t).abs() < 1e-5, "ort {o}, tract {t}");
    }
    // The gallery: a last row of the lowest-weighted images on every sheet, the weights in the
    // index.
    let html = std::fs::read_to_string(gallery.join("index.html")).unwrap();
    for needle in [
        "<code>aux_weight</code>",
        "<th>mean weight</th>",
        "lowest-weighted images",
    ] {
        assert!(html.contains(needle), "`{needle}` missing: {html}");
    }
    for c in &classes {
        let sheet = image::open(gallery.join(format!("{c}.png"))).unwrap();
        assert_eq!(
            (sheet.width(), sheet.height()),
            (210 + 4 * 102 + 6, 56 + 6 * 128 + 6),
            "{c}: 5 slot rows and the lowest-weighted row"
        );
    }
    // Shards merge into the unsharded file, aux_weight and all.
    let whole = tmp.path().join("tract.csv");
    let shard = |i: usize| tmp.path().join(format!("shard{i}.csv"));
    for i in 1..=2 {
        run(&mut label(
            &shard(i),
            &[
                "--backend",
                "tract",
                "--quiet",
                "--shard",
                &format!("{i}/2"),
            ],
        ))
        .assert_ok();
    }
    let merged = tmp.path().join("merged.csv");
    run(Command::new(bin("maxl-label"))
        .args(["merge", "--out"])
        .arg(&merged)
        .arg(shard(2))
        .arg(shard(1)))
    .assert_ok();
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&whole).unwrap()
    );
    // A killed run resumes to the same bytes.
    let killed = tmp.path().join("killed.csv");
    let r = run(label(&killed, &["--backend", "tract", "--quiet"])
        .env("MAXL_LABEL_FAILPOINT", "after-rows:3"));
    assert_eq!(r.code, None, "killed by a signal: {}", r.stderr);
    run(&mut label(
        &killed,
        &["--backend", "tract", "--quiet", "--resume"],
    ))
    .assert_ok();
    assert_eq!(
        std::fs::read(&killed).unwrap(),
        std::fs::read(&whole).unwrap()
    );
}
