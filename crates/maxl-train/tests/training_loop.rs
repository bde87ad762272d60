//! The training loop's schedules against step-by-step reproductions built from the public
//! stage functions, on a tiny synthetic task (no dataset files): the reference schedule's two
//! passes and its refresh of g's batch-norm statistics, α following θ1's scheduled lr, the
//! fused schedule's update, and the fixed labels of the `random` and `human` baselines. The
//! step functions themselves, one `interleaved` and one `fused` iteration, are compared with the
//! independent PyTorch implementation (`scripts/maxl_reference.py`, fixture written by
//! `scripts/make_fixtures.py`) in float64.

mod fixture;

use fixture::{Fixture, SCHEDULE_STEP};
use maxl_core::arch::{Architecture, ConvBlock, InputSpec, Resize};
use maxl_core::config::{
    CoarseGroup, DatasetKind, LrStep, MetaGradientMode, Method, ModelConfig, OptimizerConfig,
    Schedule, TrainConfig,
};
use maxl_data::Dataset;
use maxl_data::batch::{Normalize, assemble};
use maxl_train::Trainer;
use maxl_train::data::PreparedData;
use maxl_train::meta::{
    AuxTarget, Batch, Iteration, LearningRates, LossConfig, fused_step, interleaved_step,
    meta_gradient, stage1, stage2,
};
use maxl_train::net::BatchNorm;
use maxl_train::optim::Sgd;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Tensor};

const N: usize = 30;
const BATCH: usize = 10;

fn arch() -> Architecture {
    Architecture {
        input: InputSpec {
            channels: 1,
            height: 8,
            width: 8,
            mean: 0.5.into(),
            std: 0.2.into(),
            resize: Resize::Stretch,
        },
        blocks: vec![
            ConvBlock {
                convs: 1,
                channels: 3,
            },
            ConvBlock {
                convs: 1,
                channels: 4,
            },
        ],
        resnet: None,
        head_hidden: 6,
    }
}

fn synthetic(n: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    Dataset {
        channels: 1,
        height: 8,
        width: 8,
        pixels: (0..n * 64).map(|_| rng.random()).collect(),
        labels: (0..n).map(|i| i % classes).collect(),
        fine_labels: None,
        class_names: (0..classes).map(|k| format!("c{k}")).collect(),
        fine_class_names: None,
        files: None,
    }
}

/// Deterministic: no shuffling, no augmentation; lr halves every epoch.
fn config(method: Method, schedule: Schedule, mode: MetaGradientMode) -> TrainConfig {
    let mut c = TrainConfig {
        method,
        schedule,
        meta_gradient: mode,
        model: ModelConfig {
            preset: "small".into(),
            architecture: Some(arch()),
            ..ModelConfig::default()
        },
        epochs: 3,
        batch_size: BATCH,
        multitask_optimizer: OptimizerConfig {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            backbone_lr_scale: 1.0,
        },
        generator_optimizer: OptimizerConfig {
            lr: 0.05,
            momentum: 0.0,
            weight_decay: 5e-4,
            backbone_lr_scale: 1.0,
        },
        lr_step: LrStep {
            every_epochs: 1,
            gamma: 0.5,
        },
        ..TrainConfig::default()
    };
    c.dataset.shuffle = false;
    c.dataset.crop_padding = 0;
    c.dataset.horizontal_flip = false;
    c.dataset.validation_fraction = 0.0;
    c.hierarchy.psi_per_class = 2;
    c.validate().unwrap();
    c
}

fn trainer(c: &TrainConfig) -> Trainer {
    let train = synthetic(N, 3, 1);
    let data = PreparedData {
        validation: train.subset(&[]),
        test: synthetic(12, 3, 2),
        hierarchy: c.hierarchy.resolve(3).unwrap(),
        fixed_aux: None,
        train,
    };
    Trainer::new(c.clone(), data, Device::Cpu).unwrap()
}

/// A second trainer holding exactly the first one's weights and statistics.
fn twin(t: &Trainer) -> Trainer {
    let u = trainer(&t.config);
    tch::no_grad(|| {
        let pairs = |a: &maxl_train::net::ParamStore, b: &maxl_train::net::ParamStore| {
            for (x, y) in a
                .params
                .iter()
                .chain(&a.buffers)
                .zip(b.params.iter().chain(&b.buffers))
            {
                y.shallow_clone().copy_(x);
            }
        };
        pairs(&t.f.store, &u.f.store);
        if let (Some(a), Some(b)) = (t.generator(), u.generator()) {
            pairs(&a.store, &b.store);
        }
    });
    u
}

/// Batch `b` (file order) as the trainer builds it without augmentation.
fn batch(t: &Trainer, b: usize) -> (Tensor, Tensor) {
    let ds = &t.data.train;
    let idx: Vec<usize> = (b * BATCH..(b + 1) * BATCH).collect();
    let norm = Normalize::uniform(0.5, 0.2);
    let pixels = assemble::<StdRng>(ds, &idx, norm, None);
    let x = Tensor::from_slice(&pixels).reshape([BATCH as i64, 1, 8, 8]);
    let labels: Vec<i64> = idx.iter().map(|&i| ds.labels[i] as i64).collect();
    (x, Tensor::from_slice(&labels))
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn state(t: &Trainer) -> Vec<Tensor> {
    let g = &t.generator().unwrap().store;
    t.f.store
        .params
        .iter()
        .chain(&t.f.store.buffers)
        .chain(&g.params)
        .chain(&g.buffers)
        .map(Tensor::copy)
        .collect()
}

fn losses(c: &TrainConfig) -> LossConfig {
    LossConfig {
        gamma: c.focal_gamma,
        lambda: c.effective_entropy_weight(),
        sample_entropy: c.effective_sample_entropy_weight(),
        weight_mean_penalty: c.effective_weight_mean_penalty(),
    }
}

#[test]
fn the_reference_schedule_is_two_passes_then_a_refresh_of_gs_statistics() {
    for mode in [MetaGradientMode::DoubleBackward, MetaGradientMode::Jvp] {
        let c = config(Method::Maxl, Schedule::Reference, mode);
        let mut a = trainer(&c);
        let mut b = twin(&a);
        let batches: Vec<_> = (0..3).map(|i| batch(&b, i)).collect();
        let mut totals = Vec::new();
        a.train_epoch(None, &mut |done, total| totals.push((done, total)))
            .unwrap();
        assert_eq!(
            totals.last(),
            Some(&(6, 6)),
            "3 stage-1 then 3 stage-2 steps"
        );

        // By hand: stage 1 over the epoch, stage 2 over the epoch (α = θ1's lr), then g's
        // running statistics recomputed at the final θ2 over the epoch's batches.
        let mut opt_f = Sgd::new(c.multitask_optimizer, b.f.store.params.len());
        let g = b.g.as_mut().unwrap();
        let lr = LearningRates { f: 0.1, g: 0.05 };
        for (x, y) in &batches {
            let target = AuxTarget::Generator(&g.net);
            stage1(&b.f, &mut opt_f, target, Batch::new(x, y), lr.f, losses(&c));
        }
        for (x, y) in &batches {
            stage2(&b.f, g, Batch::new(x, y), lr, losses(&c), mode).unwrap();
        }
        let g = &g.net;
        let before_refresh: Vec<Tensor> = g.store.buffers.iter().map(Tensor::copy).collect();
        for (x, y) in &batches {
            let _ = tch::no_grad(|| g.forward(x, y, BatchNorm::BatchUpdate));
        }
        let moved = max_diff(&before_refresh, &g.store.buffers);
        let d = max_diff(&state(&a), &state(&b));
        assert!(d < 1e-6, "{}: train_epoch vs by hand: {d:e}", mode.name());
        assert!(
            moved > 1e-4,
            "the refresh changes g's statistics ({moved:e})"
        );
    }
}

#[test]
fn alpha_follows_the_scheduled_learning_rate() {
    let c = config(Method::Maxl, Schedule::Interleaved, MetaGradientMode::Jvp);
    let mut a = trainer(&c);
    a.train_epoch(None, &mut |_, _| {}).unwrap();
    let b = twin(&a);
    let m = a.train_epoch(None, &mut |_, _| {}).unwrap();
    assert_eq!(m.lr, 0.05, "epoch 2 runs at half the lr");
    // Epoch 2 by hand with lr = α = 0.05 for θ1 and 0.025 for θ2 …
    let run = |alpha: f64| {
        let mut u = twin(&b);
        let batches: Vec<_> = (0..3).map(|i| batch(&u, i)).collect();
        let mut opt_f = Sgd::new(c.multitask_optimizer, u.f.store.params.len());
        let g = u.g.as_mut().unwrap();
        let lr = LearningRates { f: 0.05, g: 0.025 };
        for (x, y) in &batches {
            let batch = Batch::new(x, y);
            // interleaved_step takes α = lr.f; an α that did not follow the schedule is
            // reproduced by stage 1 and a meta-gradient with that α.
            if alpha == lr.f {
                interleaved_step(&u.f, &mut opt_f, g, batch, lr, losses(&c), c.meta_gradient)
                    .unwrap();
            } else {
                let target = AuxTarget::Generator(&g.net);
                stage1(&u.f, &mut opt_f, target, batch, lr.f, losses(&c));
                let mg =
                    meta_gradient(&u.f, &g.net, batch, alpha, losses(&c), c.meta_gradient).unwrap();
                g.opt
                    .step(&g.net.store.params, &mg.grads, lr.g, &g.net.store.lr_scales);
            }
        }
        state(&u)
    };
    let d = max_diff(&state(&a), &run(0.05));
    assert!(d < 1e-6, "α = scheduled lr: {d:e}");
    // … and not with α = the base lr.
    let d = max_diff(&state(&a), &run(0.1));
    assert!(d > 1e-6, "α = base lr would give other weights ({d:e})");
}

#[test]
fn the_fused_schedule_steps_theta1_by_the_same_gradient_its_meta_step_used() {
    for mode in [MetaGradientMode::DoubleBackward, MetaGradientMode::Jvp] {
        let c = config(Method::Maxl, Schedule::Fused, mode);
        let mut a = trainer(&c);
        let mut b = twin(&a);
        a.train_epoch(None, &mut |_, _| {}).unwrap();
        let batches: Vec<_> = (0..3).map(|i| batch(&b, i)).collect();
        let mut opt_f = Sgd::new(c.multitask_optimizer, b.f.store.params.len());
        let g = b.g.as_mut().unwrap();
        let lr = LearningRates { f: 0.1, g: 0.05 };
        for (x, y) in &batches {
            fused_step(&b.f, &mut opt_f, g, Batch::new(x, y), lr, losses(&c), mode).unwrap();
        }
        let d = max_diff(&state(&a), &state(&b));
        assert!(d < 1e-6, "{}: {d:e}", mode.name());
    }
    // The two meta-gradient modes agree on the fused update too (f32 here), from one set of
    // initial weights (libtorch's generator is shared by the test threads).
    let start = trainer(&config(
        Method::Maxl,
        Schedule::Fused,
        MetaGradientMode::Jvp,
    ));
    let run = |mode| {
        let mut t = twin(&start);
        t.config.meta_gradient = mode;
        t.train_epoch(None, &mut |_, _| {}).unwrap();
        state(&t)
    };
    let d = max_diff(
        &run(MetaGradientMode::DoubleBackward),
        &run(MetaGradientMode::Jvp),
    );
    assert!(d < 1e-4, "{d:e}");
    // Momentum or weight decay on θ1 is refused by the config.
    let mut c = config(Method::Maxl, Schedule::Fused, MetaGradientMode::Jvp);
    c.multitask_optimizer.momentum = 0.9;
    let e = c.validate().unwrap_err();
    assert!(e.contains("fused") && e.contains("plain SGD"), "{e}");
    c.method = Method::Single;
    c.validate().expect("baselines ignore the schedule");
}

/// [`fixture::iterations_match_pytorch`] on the schedule fixture: MAXL's schedules.
fn schedule_matches_pytorch(name: &str, step: Iteration) {
    let fx = Fixture::load(SCHEDULE_STEP);
    let losses = LossConfig {
        gamma: fx.scalar("gamma"),
        lambda: fx.scalar("lambda"),
        sample_entropy: 0.0,
        weight_mean_penalty: 0.0,
    };
    fixture::iterations_match_pytorch(&fx, name, step, || fx.nets(), losses);
}

#[test]
fn two_interleaved_iterations_match_pytorch() {
    schedule_matches_pytorch("interleaved", interleaved_step);
}

#[test]
fn two_fused_iterations_match_pytorch() {
    schedule_matches_pytorch("fused", fused_step);
}

/// An IDX dataset on disk (the generic `idx` kind) with 6 classes.
fn idx_dir(dir: &std::path::Path) {
    let mut rng = StdRng::seed_from_u64(3);
    for (prefix, n) in [("train", 120), ("t10k", 30)] {
        let pixels: Vec<u8> = (0..n * 64).map(|_| rng.random()).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 6) as u8).collect();
        maxl_data::idx::write_images(
            &dir.join(format!("{prefix}-images-idx3-ubyte")),
            8,
            8,
            &pixels,
        )
        .unwrap();
        maxl_data::idx::write_labels(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &labels)
            .unwrap();
    }
}

#[test]
fn random_and_human_labels_are_fixed_and_inside_their_class_range() {
    let dir = tempfile::tempdir().unwrap();
    idx_dir(dir.path());
    for method in [Method::Random, Method::Human] {
        let mut c = config(method, Schedule::Reference, MetaGradientMode::Jvp);
        c.dataset.kind = DatasetKind::Idx;
        c.dataset.path = Some(dir.path().to_path_buf());
        c.dataset.shuffle = true;
        c.dataset.coarse_groups = Some(vec![
            CoarseGroup {
                name: "low".into(),
                classes: vec![0, 1, 2],
            },
            CoarseGroup {
                name: "high".into(),
                classes: vec![3, 4, 5],
            },
        ]);
        c.hierarchy.psi = Some(vec![3, 3]);
        let data = maxl_train::data::prepare(&c, &arch()).unwrap();
        let fixed = data.fixed_aux.clone().unwrap();
        let h = data.hierarchy.clone();
        assert_eq!(fixed.len(), data.train.len());
        for (i, &slot) in fixed.iter().enumerate() {
            let k = data.train.labels[i];
            assert!(
                h.slots(k).contains(&slot),
                "image {i}: slot {slot} outside class {k}"
            );
            if method == Method::Human {
                let fine = data.train.fine_labels.as_ref().unwrap()[i];
                assert_eq!(slot, fine, "the fine classes in order are the slots here");
            }
        }
        if method == Method::Random {
            let mut used = fixed.clone();
            used.sort_unstable();
            used.dedup();
            assert_eq!(used.len(), 6, "random labels use every slot");
        }
        assert_eq!(
            maxl_train::data::prepare(&c, &arch())
                .unwrap()
                .fixed_aux
                .unwrap(),
            fixed,
            "the same for the same seed"
        );
        // Training does not redraw them.
        let mut t = Trainer::new(c.clone(), data, Device::Cpu).unwrap();
        t.train_epoch(None, &mut |_, _| {}).unwrap();
        t.train_epoch(None, &mut |_, _| {}).unwrap();
        assert_eq!(t.data.fixed_aux.as_ref().unwrap(), &fixed);
    }
}

#[test]
fn the_generic_idx_kind_names_classes_and_the_pad_option_feeds_a_3_channel_model() {
    let dir = tempfile::tempdir().unwrap();
    idx_dir(dir.path());
    let mut c = config(Method::Single, Schedule::Reference, MetaGradientMode::Jvp);
    c.dataset.kind = DatasetKind::Idx;
    c.dataset.path = Some(dir.path().to_path_buf());
    let data = maxl_train::data::prepare(&c, &arch()).unwrap();
    assert_eq!(data.train.class_names, ["0", "1", "2", "3", "4", "5"]);
    // 8×8 grey → 12×12 with 3 channels for a model that expects that.
    let mut a = arch();
    a.input.channels = 3;
    a.input.height = 12;
    a.input.width = 12;
    c.model.architecture = Some(a.clone());
    let e = maxl_train::data::prepare(&c, &a).unwrap_err().to_string();
    assert!(e.contains("1×8×8") && e.contains("3×12×12"), "{e}");
    c.dataset.pad = 2;
    c.dataset.grey_to_rgb = true;
    let data = maxl_train::data::prepare(&c, &a).unwrap();
    assert_eq!(
        (data.train.channels, data.train.height, data.test.width),
        (3, 12, 12)
    );
    let mut t = Trainer::new(c, data, Device::Cpu).unwrap();
    let m = t.train_epoch(None, &mut |_, _| {}).unwrap();
    assert!(m.test_acc.is_finite());
}

/// Every parameter and buffer of f and g, flattened into one f64 vector.
fn all_weights(t: &Trainer) -> Vec<f64> {
    let mut out = Vec::new();
    let stores = std::iter::once(&t.f.store).chain(t.generator().map(|g| &g.store));
    for s in stores {
        for x in s.params.iter().chain(&s.buffers) {
            out.extend(Vec::<f64>::try_from(&x.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap());
        }
    }
    out
}

#[test]
fn batches_made_on_the_device_are_the_host_batches() {
    use maxl_train::resident::DataPlacement;
    // Shuffled, cropped (padding 2 on 8×8 images: many windows reach into the padding) and
    // flipped; `random` reads fixed slots per batch, `maxl` also evaluates slot usage on the
    // (padded) training set; the reference schedule's second pass and refresh draw more batches.
    for (method, schedule) in [
        (Method::Random, Schedule::Reference),
        (Method::Maxl, Schedule::Reference),
        (Method::Maxl, Schedule::Fused),
    ] {
        let mut c = config(method, schedule, MetaGradientMode::Jvp);
        c.dataset.shuffle = true;
        c.dataset.crop_padding = 2;
        c.dataset.horizontal_flip = true;
        // Tests run in parallel threads and libtorch's generator is process-wide: the trainers
        // start from copies of one set of initial weights, not from the seed.
        let start = trainer(&c);
        let run = |placement| {
            let mut t = twin(&start);
            if method == Method::Random {
                let mut rng = StdRng::seed_from_u64(3);
                let slots = t
                    .data
                    .train
                    .labels
                    .iter()
                    .map(|&k| 2 * k + rng.random_range(0..2));
                t.data.fixed_aux = Some(slots.collect());
            }
            let kept = t.place_data(placement).unwrap();
            assert_eq!(kept.is_some(), placement == DataPlacement::Device);
            let metrics: Vec<_> = (0..2)
                .map(|_| {
                    let m = t.train_epoch(None, &mut |_, _| {}).unwrap();
                    let slots = m.generator.map(|g| (g.usage_counts, g.sample_entropy));
                    let values = [m.primary_loss, m.aux_loss, m.meta_loss, m.train_acc];
                    (values.map(f64::to_bits), m.test_acc, slots)
                })
                .collect();
            (metrics, all_weights(&t))
        };
        let (host, device) = (run(DataPlacement::Host), run(DataPlacement::Device));
        assert_eq!(host.0, device.0, "{method:?} {schedule:?}: the same epochs");
        assert!(
            host.1
                .iter()
                .zip(&device.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{method:?} {schedule:?}: the same weights, bit for bit"
        );
        assert_eq!(run(DataPlacement::Auto).0, host.0, "auto on the CPU");
    }
}

#[test]
fn the_per_image_entropy_term_makes_the_labels_more_confident() {
    let mut c = config(Method::Maxl, Schedule::Interleaved, MetaGradientMode::Jvp);
    c.epochs = 6;
    c.lr_step.gamma = 1.0;
    let start = trainer(&c);
    let entropy = |mu: f64| {
        let mut t = twin(&start);
        t.config.sample_entropy_weight = mu;
        let mut last = None;
        while t.epochs_done < t.config.epochs {
            last = Some(t.train_epoch(None, &mut |_, _| {}).unwrap());
        }
        last.unwrap().generator.unwrap().sample_entropy
    };
    let (paper, with_mu) = (entropy(0.0), entropy(1.0));
    assert!(
        with_mu < paper - 0.01,
        "mean per-image entropy (÷ ln ψ): μ = 1 gives {with_mu:.4}, μ = 0 gives {paper:.4}"
    );
}
