//! Data-parallel training on 2 ranks (two processes of this test binary, Gloo over 127.0.0.1)
//! against the single-process trainer on the same global batches with "ghost" batch norm (each
//! half-batch normalised with its own statistics, as each rank does):
//!
//! * one step of every method, schedule and meta-gradient mode moves every θ1 and θ2 tensor by
//!   the same update (within 1e-5 of the update's size), and both ranks end bit-equal;
//! * the control — θ1⁺ formed from each rank's own G instead of the ranks' mean — fails that
//!   comparison, so the comparison can see a wrong algorithm;
//! * a run of 240 steps (shuffled, augmented, two epochs of lr schedule) gives the reference
//!   run's metrics to the printed precision.
//!
//! Each test starts this test binary twice more, running only itself, with the environment
//! torchrun would give ranks 0 and 1; there it takes its rank's part ([`as_rank`]) and returns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maxl_core::arch::{Architecture, ConvBlock, InputSpec, Resize};
use maxl_core::config::{
    LrStep, MetaGradientMode, Method, ModelConfig, OptimizerConfig, Schedule, TrainConfig,
};
use maxl_data::Dataset;
use maxl_train::Trainer;
use maxl_train::data::PreparedData;
use maxl_train::dist::{Backend, Group, Launch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// Tests of this file share the process-wide ghost batch-norm setting and tch's seed.
static TURN: Mutex<()> = Mutex::new(());

/// Set for the rank processes: where they write what the test compares.
const WORKER_DIR: &str = "MAXL_DP_TEST_DIR";

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
                channels: 4,
            },
            ConvBlock {
                convs: 1,
                channels: 6,
            },
        ],
        resnet: None,
        head_hidden: 8,
    }
}

fn synthetic(n: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    // Images that carry their class (a bright column), so training makes progress.
    let pixels = labels
        .iter()
        .flat_map(|&k| {
            let noise: Vec<u8> = (0..64).map(|_| rng.random_range(0..128)).collect();
            (0..64).map(move |p| if p % 8 == 2 * k { 255 } else { noise[p] })
        })
        .collect();
    Dataset {
        channels: 1,
        height: 8,
        width: 8,
        pixels,
        labels,
        fine_labels: None,
        class_names: (0..classes).map(|k| format!("c{k}")).collect(),
        fine_class_names: None,
        files: None,
    }
}

/// One case: a method, schedule and meta-gradient mode (and whether it is the control).
#[derive(Debug, Clone, Copy)]
struct Case {
    method: Method,
    schedule: Schedule,
    mode: MetaGradientMode,
    control: bool,
    /// μ, the per-image entropy weight.
    mu: f64,
    /// ν, the weight-mean penalty (`maxl-weighted`).
    nu: f64,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{}-{}-{}{}{}{}",
            self.method.name(),
            self.schedule.name(),
            self.mode.name(),
            if self.mu > 0.0 { "-mu" } else { "" },
            if self.nu > 0.0 { "-nu" } else { "" },
            if self.control { "-control" } else { "" }
        )
    }
}

fn cases() -> Vec<Case> {
    use MetaGradientMode::{DoubleBackward, Jvp};
    let case = |method, schedule, mode| Case {
        method,
        schedule,
        mode,
        control: false,
        mu: 0.0,
        nu: 0.0,
    };
    let mut all = vec![case(Method::Single, Schedule::Interleaved, DoubleBackward)];
    for schedule in [Schedule::Interleaved, Schedule::Reference, Schedule::Fused] {
        for mode in [DoubleBackward, Jvp] {
            all.push(case(Method::Maxl, schedule, mode));
        }
    }
    all.push(case(Method::Random, Schedule::Interleaved, DoubleBackward));
    for mode in [DoubleBackward, Jvp] {
        all.push(Case {
            mu: 0.5,
            ..case(Method::Maxl, Schedule::Fused, mode)
        });
    }
    // The weighted generator, its weights spread (see `trainer`) so that w̄'s penalty has a
    // gradient.
    for schedule in [Schedule::Interleaved, Schedule::Fused] {
        for mode in [DoubleBackward, Jvp] {
            all.push(Case {
                mu: 0.5,
                nu: 0.5,
                ..case(Method::MaxlWeighted, schedule, mode)
            });
        }
    }
    for mode in [DoubleBackward, Jvp] {
        all.push(Case {
            control: true,
            ..case(Method::Maxl, Schedule::Interleaved, mode)
        });
    }
    all
}

/// A config of the case: global batch 16, no shuffling or augmentation for the one-step
/// comparison; momentum and weight decay where the schedule allows them.
fn config(case: &Case, batch: usize) -> TrainConfig {
    let plain = case.schedule == Schedule::Fused;
    let mut c = TrainConfig {
        method: case.method,
        schedule: case.schedule,
        meta_gradient: case.mode,
        model: ModelConfig {
            preset: "small".into(),
            architecture: Some(arch()),
            ..ModelConfig::default()
        },
        epochs: 2,
        batch_size: batch,
        multitask_optimizer: OptimizerConfig {
            lr: 0.1,
            momentum: if plain { 0.0 } else { 0.9 },
            weight_decay: if plain { 0.0 } else { 5e-4 },
            backbone_lr_scale: 1.0,
        },
        generator_optimizer: OptimizerConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            backbone_lr_scale: 1.0,
        },
        lr_step: LrStep {
            every_epochs: 1,
            gamma: 0.5,
        },
        seed: 7,
        sample_entropy_weight: case.mu,
        weight_mean_penalty: case.nu,
        ..TrainConfig::default()
    };
    c.dataset.shuffle = false;
    c.dataset.crop_padding = 0;
    c.dataset.horizontal_flip = false;
    c.dataset.validation_fraction = 0.0;
    c.hierarchy.psi_per_class = 3;
    c.validate().unwrap();
    c
}

fn trainer(c: &TrainConfig, n: usize) -> Trainer {
    let train = synthetic(n, 3, 1);
    let hierarchy = c.hierarchy.resolve(3).unwrap();
    let fixed_aux = (c.method == Method::Random).then(|| {
        let mut rng = StdRng::seed_from_u64(3);
        train
            .labels
            .iter()
            .map(|&k| {
                let r = hierarchy.slots(k);
                r.start + rng.random_range(0..r.len())
            })
            .collect()
    });
    let data = PreparedData {
        validation: train.subset(&[]),
        test: synthetic(40, 3, 2),
        hierarchy,
        fixed_aux,
        train,
    };
    let t = Trainer::new(c.clone(), data, Device::Cpu).unwrap();
    if let Some(g) = t.generator() {
        // A fresh weight head gives every image w = 1; spread the weights (the same values in
        // every process) so that they and their penalty take part in the step.
        tch::no_grad(|| {
            for p in g.weight_head_params() {
                let n = p.numel() as i64;
                let v = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.7).sin() * 0.05 + 0.3;
                p.shallow_clone().copy_(&v.view_as(p));
            }
        });
    }
    t
}

/// θ1, θ2 and both networks' running statistics, copied.
fn state(t: &Trainer) -> Vec<Tensor> {
    let mut all: Vec<Tensor> = Vec::new();
    let mut add = |s: &maxl_train::net::ParamStore| {
        all.extend(s.params.iter().chain(&s.buffers).map(Tensor::copy));
    };
    add(&t.f.store);
    if let Some(g) = t.generator() {
        add(&g.store);
    }
    all
}

fn names(t: &Trainer) -> Vec<String> {
    let mut all = Vec::new();
    let mut add = |net: &str, s: &maxl_train::net::ParamStore| {
        let trainable = s.specs.iter().filter(|p| p.kind.is_trainable());
        let buffers = s.specs.iter().filter(|p| !p.kind.is_trainable());
        all.extend(
            trainable
                .chain(buffers)
                .map(|p| format!("{net}.{}", p.name)),
        );
    };
    add("f", &t.f.store);
    if let Some(g) = t.generator() {
        add("g", &g.store);
    }
    all
}

fn save(path: &Path, tensors: &[Tensor]) {
    let named: Vec<(String, &Tensor)> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("t{i}"), t))
        .collect();
    Tensor::save_multi(&named, path).unwrap();
}

fn load(path: &Path, n: usize) -> Vec<Tensor> {
    let mut named = Tensor::load_multi(path).unwrap();
    named.sort_by_key(|(k, _)| k[1..].parse::<usize>().unwrap());
    assert_eq!(named.len(), n, "{}", path.display());
    named.into_iter().map(|(_, t)| t).collect()
}

/// Starts this test binary, running only `test`, as ranks 0 and 1 of a group on a free port.
fn start_ranks(test: &str, dir: &Path) -> Vec<Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exe = std::env::current_exe().unwrap();
    (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", test, "--test-threads", "1"])
                .env(WORKER_DIR, dir)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn wait_ranks(children: Vec<Child>) {
    for (rank, mut c) in children.into_iter().enumerate() {
        let status = c.wait().unwrap();
        assert!(status.success(), "rank {rank} failed: {status}");
    }
}

fn rank_file(dir: &Path, case: &Case, rank: usize) -> PathBuf {
    dir.join(format!("{}-rank{rank}.ot", case.name()))
}

/// In a process started by [`start_ranks`]: joins the group from the environment, does this
/// rank's part of `job` and returns true. False in the test's own process.
fn as_rank(job: &str) -> bool {
    let Some(dir) = std::env::var_os(WORKER_DIR).map(PathBuf::from) else {
        return false;
    };
    tch::set_num_threads(1);
    let launch = Launch::from_env().unwrap().expect("RANK and WORLD_SIZE");
    let group = Arc::new(
        Group::join(&launch, Backend::Gloo, Device::Cpu, Duration::from_secs(60)).unwrap(),
    );
    match job {
        "one-step" => {
            for case in cases() {
                let mut t = trainer(&config(&case, 16), 48);
                t.skip_g_reduce = case.control;
                t.join(Arc::clone(&group)).unwrap();
                t.train_epoch(Some(1), &mut |_, _| {}).unwrap();
                save(&rank_file(&dir, &case, launch.rank), &state(&t));
            }
        }
        "run" => {
            let mut t = trainer(&long_config(), 480);
            t.join(Arc::clone(&group)).unwrap();
            let rows = long_run(&mut t);
            if launch.rank == 0 {
                std::fs::write(dir.join("metrics.txt"), rows.join("\n")).unwrap();
            }
        }
        other => panic!("unknown job {other}"),
    }
    true
}

/// The largest difference between two updates (after − before) relative to the reference
/// update's largest entry.
fn relative_update_error(before: &Tensor, reference: &Tensor, other: &Tensor) -> f64 {
    let want = reference - before;
    let got = other - before;
    let scale = want.abs().max().double_value(&[]).max(1e-30);
    (got - want).abs().max().double_value(&[]) / scale
}

#[test]
fn one_step_on_two_ranks_is_the_one_process_step_with_ghost_batch_norm() {
    if as_rank("one-step") {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    wait_ranks(start_ranks(
        "one_step_on_two_ranks_is_the_one_process_step_with_ghost_batch_norm",
        tmp.path(),
    ));
    maxl_train::net::set_ghost_batches(2);
    let mut report = Vec::new();
    for case in cases() {
        let mut t = trainer(&config(&case, 16), 48);
        let before = state(&t);
        t.train_epoch(Some(1), &mut |_, _| {}).unwrap();
        let reference = state(&t);
        let names = names(&t);
        let ranks: Vec<Vec<Tensor>> = (0..2)
            .map(|r| load(&rank_file(tmp.path(), &case, r), reference.len()))
            .collect();
        for (a, b) in ranks[0].iter().zip(&ranks[1]) {
            assert!(a.equal(b), "{}: the ranks' weights differ", case.name());
        }
        // Each tensor after the step, relative to its largest entry (at least 1e-3: biases that
        // start at 0 and stay near it are compared absolutely, to 1e-8); and
        // a stronger one: each tensor's update, relative to the update's largest entry, for
        // updates above rounding (a convolution's bias followed by batch norm has gradient 0:
        // its update is float noise of order 1e-9).
        let mut worst = (0.0f64, String::new());
        let mut worst_update = (0.0f64, String::new());
        for (((b, r), o), n) in before.iter().zip(&reference).zip(&ranks[0]).zip(&names) {
            let scale = r.abs().max().double_value(&[]).max(1e-3);
            let e = (o - r).abs().max().double_value(&[]) / scale;
            let size = (r - b).abs().max().double_value(&[]);
            let u = relative_update_error(b, r, o);
            if std::env::var_os("MAXL_DP_VERBOSE").is_some() {
                eprintln!(
                    "{} {n}: error {e:.2e}, update {size:.2e} error {u:.2e}",
                    case.name()
                );
            }
            if e > worst.0 {
                worst = (e, n.clone());
            }
            if size > 1e-6 && u > worst_update.0 {
                worst_update = (u, n.clone());
            }
        }
        report.push(format!(
            "{}: {:.2e} ({}); update {:.2e} ({})",
            case.name(),
            worst.0,
            worst.1,
            worst_update.0,
            worst_update.1
        ));
        if case.control {
            assert!(
                worst.0 > 1e-5 && worst_update.0 > 1e-2,
                "{}: without the all-reduce of G the step must differ, got {:.2e} / {:.2e}",
                case.name(),
                worst.0,
                worst_update.0
            );
        } else {
            assert!(
                worst.0 < 1e-5,
                "{}: {:.2e} at {}",
                case.name(),
                worst.0,
                worst.1
            );
            assert!(
                worst_update.0 < 1e-4,
                "{}: update {:.2e} at {}",
                case.name(),
                worst_update.0,
                worst_update.1
            );
        }
    }
    maxl_train::net::set_ghost_batches(1);
    eprintln!(
        "largest relative update difference, 2 ranks vs one process:\n{}",
        report.join("\n")
    );
}

fn long_config() -> TrainConfig {
    let case = Case {
        method: Method::Maxl,
        schedule: Schedule::Interleaved,
        mode: MetaGradientMode::Jvp,
        control: false,
        mu: 0.0,
        nu: 0.0,
    };
    let mut c = config(&case, 16);
    c.epochs = 8;
    c.lr_step = LrStep {
        every_epochs: 4,
        gamma: 0.5,
    };
    c.multitask_optimizer.lr = 0.05;
    c.generator_optimizer.lr = 0.02;
    c.dataset.shuffle = true;
    c.dataset.horizontal_flip = true;
    c.dataset.crop_padding = 1;
    c
}

/// Trains every epoch; each epoch's metrics as printed (losses to 4 decimals, accuracies in %
/// to 2).
fn long_run(t: &mut Trainer) -> Vec<String> {
    let mut rows = Vec::new();
    while t.epochs_done < t.config.epochs {
        let m = t.train_epoch(None, &mut |_, _| {}).unwrap();
        rows.push(format!(
            "epoch {} loss {:.4} aux {:.4} meta {:.4} reg {:.4} train {:.2}% test {:.2}% entropy {:.3}",
            m.epoch,
            m.primary_loss,
            m.aux_loss,
            m.meta_loss,
            m.regulariser,
            100.0 * m.train_acc,
            100.0 * m.test_acc,
            m.generator.as_ref().map_or(f64::NAN, |g| g.sample_entropy)
        ));
    }
    rows
}

#[test]
fn a_run_of_240_steps_on_two_ranks_prints_the_one_process_metrics() {
    if as_rank("run") {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let ranks = start_ranks(
        "a_run_of_240_steps_on_two_ranks_prints_the_one_process_metrics",
        tmp.path(),
    );
    maxl_train::net::set_ghost_batches(2);
    let mut t = trainer(&long_config(), 480);
    let reference = long_run(&mut t);
    maxl_train::net::set_ghost_batches(1);
    assert_eq!(t.steps_done, 240);
    wait_ranks(ranks);
    let got = std::fs::read_to_string(tmp.path().join("metrics.txt")).unwrap();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, reference, "2 ranks vs one process");
    // It learned: the comparison is of a run that moves.
    let first_last = (reference[0].clone(), reference.last().unwrap().clone());
    assert_ne!(first_last.0, first_last.1);
    eprintln!("{}", reference.join("\n"));
}
