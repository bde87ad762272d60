//! `maxl-weighted`: the label generator's per-image weight of the auxiliary loss, trained by the
//! same exact meta-gradient. Checked against the PyTorch reference (`scripts/make_fixtures.py`
//! writes `weighted_step.safetensors`), central finite differences in float64 for the label and
//! the weight parameters, and MAXL itself: a weight head frozen at w ≡ 1 must give MAXL's step
//! bit for bit.

mod fixture;

use fixture::{
    Fixture, WEIGHTED_STEP, assert_close, finite_difference_error, grads_named, max_abs_diff,
    schedule_opt,
};
use maxl_core::config::{MetaGradientMode, OptimizerConfig};
use maxl_train::meta::{
    AuxTarget, Batch, Generator, Iteration, LearningRates, LossConfig, MetaGradient, StageOne,
    fused_step, interleaved_step, meta_gradient, stage1, stage2,
};
use maxl_train::net::{BatchNorm, LabelGenerator, ParamStore};
use maxl_train::optim::Sgd;
use tch::{Kind, Tensor};

const MODES: [MetaGradientMode; 2] = [MetaGradientMode::DoubleBackward, MetaGradientMode::Jvp];

fn losses_of(fx: &Fixture, prefix: &str) -> LossConfig {
    LossConfig {
        gamma: 2.0,
        lambda: fx.scalar(&format!("{prefix}.lambda")),
        sample_entropy: fx.scalar(&format!("{prefix}.mu")),
        weight_mean_penalty: fx.scalar(&format!("{prefix}.nu")),
    }
}

#[test]
fn the_weighted_meta_gradient_matches_pytorch_in_both_modes() {
    let fx = Fixture::load(WEIGHTED_STEP);
    let (f, g) = fx.nets_at("f.", "g.", true);
    assert!(g.weighted);
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.scalar("alpha"));
    // The fixture's weight head is random: the weights are not 1, so they matter.
    let w = g.outputs(&x, &y, BatchNorm::Batch).weights.unwrap();
    assert!(max_abs_diff(&w, &w.ones_like()) > 0.05, "{w}");
    for tag in ["plain", "mi"] {
        let losses = losses_of(&fx, tag);
        for mode in MODES {
            let mg = meta_gradient(&f, &g, Batch::new(&x, &y), alpha, losses, mode).unwrap();
            let at = format!("{tag} ({})", mode.name());
            let want = fx.scalar(&format!("expected.{tag}.loss"));
            let got = mg.loss.double_value(&[]);
            assert!((got - want).abs() < 1e-12, "{at}: L2 {got} vs {want}");
            assert_close(
                &grads_named(&g, &mg.grads),
                &fx,
                &format!("expected.{tag}.grad."),
                1e-10,
            );
        }
    }
}

#[test]
fn the_weighted_meta_gradient_matches_finite_differences_for_labels_and_weights() {
    let fx = Fixture::load(WEIGHTED_STEP);
    let (f, g) = fx.nets_at("f.", "g.", true);
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.scalar("alpha"));
    let losses = losses_of(&fx, "mi");
    assert!(losses.weight_mean_penalty > 0.0 && losses.sample_entropy > 0.0);
    let run = |mode| meta_gradient(&f, &g, Batch::new(&x, &y), alpha, losses, mode).unwrap();
    let (db, jvp) = (run(MODES[0]), run(MODES[1]));
    for (a, b) in db.grads.iter().zip(&jvp.grads) {
        assert!(max_abs_diff(a, b) < 1e-10, "jvp equals double-backward");
    }
    assert!((db.loss.double_value(&[]) - jvp.loss.double_value(&[])).abs() < 1e-14);
    // L2 = primary at θ1⁺ + λR + μ mean_i H(t_i) + ν (w̄ − 1)².
    let out = g.outputs(&x, &y, BatchNorm::Batch);
    let h = maxl_train::loss::mean_sample_entropy(&out.labels).double_value(&[]);
    let w_bar = out.weights.unwrap().mean(Kind::Double).double_value(&[]);
    let l2 = db.primary_at_fast.double_value(&[])
        + losses.lambda * db.regulariser.double_value(&[])
        + losses.sample_entropy * h
        + losses.weight_mean_penalty * (w_bar - 1.0).powi(2);
    assert!((db.loss.double_value(&[]) - l2).abs() < 1e-12);
    let loss = || run(MODES[0]).loss.double_value(&[]);
    // The label head and the weight head separately (the last six tensors of θ2), then all of
    // θ2 (the shared backbone carries both).
    let n = g.store.params.len();
    let (label_head, weight_head) = (n - 6..n - 2, n - 2..n);
    for (what, range, stride) in [
        ("label head", label_head, 1),
        ("weight head", weight_head, 1),
        ("all of θ2", 0..n, 3),
    ] {
        let rel = finite_difference_error(
            &g.store.params[range.clone()],
            &db.grads[range],
            stride,
            loss,
        );
        assert!(rel < 1e-5, "{what}: relative error {rel:e}");
    }
}

/// `g` with a weight head of zeros appended (w ≡ 2·sigmoid(0) = 1), frozen by a learning-rate
/// scale of 0.
fn frozen_at_one(g: &LabelGenerator) -> LabelGenerator {
    let a = g.hierarchy.num_aux();
    let mut named = g.store.named();
    for s in g.arch.weight_head_params() {
        let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
        named.push((
            s.name,
            Tensor::zeros(shape.as_slice(), (Kind::Double, tch::Device::Cpu)),
        ));
    }
    let store = ParamStore::from_named(
        g.arch.generator_params_for(a, true),
        &named,
        Kind::Double,
        tch::Device::Cpu,
    )
    .unwrap();
    let mut w = LabelGenerator::with_store(&g.arch, &g.hierarchy, store);
    let n = w.store.lr_scales.len();
    w.store.lr_scales[n - 2..].fill(0.0);
    w
}

fn same_bits(a: &[(String, Tensor)], b: &[(String, Tensor)], what: &str) {
    for ((n, x), (m, y)) in a.iter().zip(b) {
        assert_eq!(n, m);
        assert!(
            x.equal(y),
            "{what}: {n} differs by {:e}",
            max_abs_diff(x, y)
        );
    }
}

fn shared(g: &LabelGenerator) -> Vec<(String, Tensor)> {
    g.store
        .named()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("weight_head."))
        .collect()
}

#[test]
fn a_weight_head_frozen_at_one_gives_maxls_steps_bit_for_bit() {
    let fx = Fixture::load(WEIGHTED_STEP);
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.2,
        sample_entropy: 0.3,
        weight_mean_penalty: 0.5,
    };
    let batches: Vec<(Tensor, Tensor)> = (1..=2)
        .map(|i| (fx.get(&format!("x{i}")), fx.get(&format!("y{i}"))))
        .collect();
    let schedules: [(&str, Iteration); 2] =
        [("interleaved", interleaved_step), ("fused", fused_step)];
    for (name, step) in schedules {
        for mode in MODES {
            let at = format!("{name} ({})", mode.name());
            let opt = |net: &str| schedule_opt(&fx, name, net);
            let lr = LearningRates {
                f: opt("f").lr,
                g: opt("g").lr,
            };
            let mut runs = Vec::new();
            for weighted in [false, true] {
                let (f, g) = fx.nets_at("sched.f.", "sched.g.", false);
                let g = if weighted { frozen_at_one(&g) } else { g };
                let mut opt_f = Sgd::new(opt("f"), f.store.params.len());
                let mut g = Generator::new(g, opt("g"));
                let mut losses_seen = Vec::new();
                for (x, y) in &batches {
                    let (s, mg): (StageOne, MetaGradient) =
                        step(&f, &mut opt_f, &mut g, Batch::new(x, y), lr, losses, mode).unwrap();
                    losses_seen.push(s.aux_loss.unwrap());
                    losses_seen.push(mg.loss);
                }
                runs.push((f, g, losses_seen));
            }
            let (f0, g0, l0) = &runs[0];
            let (f1, g1, l1) = &runs[1];
            same_bits(&f0.store.named(), &f1.store.named(), &at);
            same_bits(&shared(&g0.net), &shared(&g1.net), &at);
            for (a, b) in l0.iter().zip(l1) {
                assert!(a.equal(b), "{at}: losses differ");
            }
            let w = g1
                .net
                .outputs(&batches[0].0, &batches[0].1, BatchNorm::Batch);
            assert!(w.weights.unwrap().eq(1.0).all().int64_value(&[]) == 1);
        }
    }
    // The reference schedule's stages one at a time.
    for mode in MODES {
        let mut runs = Vec::new();
        for weighted in [false, true] {
            let (f, g) = fx.nets_at("sched.f.", "sched.g.", false);
            let g = if weighted { frozen_at_one(&g) } else { g };
            let cfg = OptimizerConfig {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 5e-4,
                backbone_lr_scale: 1.0,
            };
            let mut opt_f = Sgd::new(cfg, f.store.params.len());
            let mut g = Generator::new(g, cfg);
            let (x, y) = &batches[0];
            stage1(
                &f,
                &mut opt_f,
                AuxTarget::Generator(&g.net),
                Batch::new(x, y),
                0.1,
                losses,
            );
            let lr = LearningRates { f: 0.1, g: 0.05 };
            stage2(&f, &mut g, Batch::new(x, y), lr, losses, mode).unwrap();
            runs.push((f, g));
        }
        same_bits(
            &runs[0].0.store.named(),
            &runs[1].0.store.named(),
            "stage 1",
        );
        same_bits(&shared(&runs[0].1.net), &shared(&runs[1].1.net), "stage 2");
    }
}

/// [`fixture::iterations_match_pytorch`] on the weighted fixture's `sched.*` networks (with the
/// weight head) and losses (λ, μ, ν).
fn weighted_iterations_match_pytorch(name: &str, step: Iteration) {
    let fx = Fixture::load(WEIGHTED_STEP);
    let losses = losses_of(&fx, "sched");
    let nets = || fx.nets_at("sched.f.", "sched.g.", true);
    fixture::iterations_match_pytorch(&fx, name, step, nets, losses);
}

#[test]
fn two_weighted_interleaved_iterations_match_pytorch() {
    weighted_iterations_match_pytorch("interleaved", interleaved_step);
}

#[test]
fn two_weighted_fused_iterations_match_pytorch() {
    weighted_iterations_match_pytorch("fused", fused_step);
}

#[test]
fn a_fresh_weight_head_starts_every_image_at_one_and_draws_no_random_numbers() {
    let arch = fixture::arch();
    let h = maxl_core::hierarchy::Hierarchy::new(fixture::PSI.to_vec()).unwrap();
    tch::manual_seed(5);
    let plain = LabelGenerator::new(&arch, &h, Kind::Double, tch::Device::Cpu);
    let after_plain = Tensor::randn([4], (Kind::Double, tch::Device::Cpu));
    tch::manual_seed(5);
    let weighted = LabelGenerator::new_weighted(&arch, &h, Kind::Double, tch::Device::Cpu);
    let after_weighted = Tensor::randn([4], (Kind::Double, tch::Device::Cpu));
    same_bits(&plain.store.named(), &shared(&weighted), "initial θ2");
    assert!(
        after_plain.equal(&after_weighted),
        "the same random stream afterwards"
    );
    let x = Tensor::randn([5, 2, 8, 8], (Kind::Double, tch::Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 2]);
    let out = weighted.outputs(&x, &y, BatchNorm::Batch);
    assert!(out.weights.as_ref().unwrap().eq(1.0).all().int64_value(&[]) == 1);
    assert!(out.target().equal(&out.labels), "u = 1·t is t");
    assert!(plain.outputs(&x, &y, BatchNorm::Batch).weights.is_none());
}
