//! The meta-gradient and both MAXL stages against independent references: the PyTorch fixture
//! written by `scripts/make_fixtures.py` (an independent float64 implementation) and central
//! finite differences. Also pins down batch-norm behaviour.

mod fixture;

use fixture::{
    Fixture, META_STEP, assert_close, finite_difference_error, grads_named, max_abs_diff,
};
use maxl_core::config::{MetaGradientMode, OptimizerConfig};
use maxl_train::meta::{
    AuxTarget, Batch, Generator, LearningRates, LossConfig, MetaPath, meta_gradient,
    multitask_loss, stage1, stage2,
};
use maxl_train::net::{BatchNorm, LabelGenerator, MultiTaskNet, ParamStore};
use maxl_train::optim::Sgd;
use tch::{Kind, Tensor};

/// Both ways of computing the exact meta-gradient; every test that checks it runs both.
const MODES: [MetaGradientMode; 2] = [MetaGradientMode::DoubleBackward, MetaGradientMode::Jvp];

#[test]
fn meta_gradient_matches_pytorch_for_lambda_0_and_0_2() {
    let fx = Fixture::load(META_STEP);
    let (f, g) = fx.nets();
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.get("alpha").double_value(&[0]));
    for mode in MODES {
        for (lambda, tag) in [(0.0, "lambda0"), (0.2, "lambda0.2")] {
            let tag_mode = format!("{tag} ({})", mode.name());
            let mg = meta_gradient(
                &f,
                &g,
                Batch::new(&x, &y),
                alpha,
                LossConfig {
                    gamma: 2.0,
                    lambda,
                    sample_entropy: 0.0,
                    weight_mean_penalty: 0.0,
                },
                mode,
            )
            .unwrap();
            let loss = mg.loss.double_value(&[]);
            let want_loss = fx.get(&format!("expected.{tag}.loss")).double_value(&[0]);
            assert!(
                (loss - want_loss).abs() < 1e-12,
                "{tag_mode}: L2 {loss} vs {want_loss}"
            );
            assert_close(
                &grads_named(&g, &mg.grads),
                &fx,
                &format!("expected.{tag}.grad."),
                1e-10,
            );
            let norm: f64 = mg
                .grads
                .iter()
                .map(|t| t.square().sum(Kind::Double).double_value(&[]))
                .sum();
            assert!(norm > 1e-8, "{tag_mode}: the meta-gradient must not vanish");
        }
    }
}

#[test]
fn jvp_equals_double_backward_to_rounding_in_f64() {
    let fx = Fixture::load(META_STEP);
    let (f, g) = fx.nets();
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.get("alpha").double_value(&[0]));
    for lambda in [0.0, 0.2] {
        for gamma in [0.0, 2.0] {
            let losses = LossConfig {
                gamma,
                lambda,
                sample_entropy: 0.0,
                weight_mean_penalty: 0.0,
            };
            let db = meta_gradient(
                &f,
                &g,
                Batch::new(&x, &y),
                alpha,
                losses,
                MetaGradientMode::DoubleBackward,
            )
            .unwrap();
            let jvp = meta_gradient(
                &f,
                &g,
                Batch::new(&x, &y),
                alpha,
                losses,
                MetaGradientMode::Jvp,
            )
            .unwrap();
            assert!((db.loss.double_value(&[]) - jvp.loss.double_value(&[])).abs() < 1e-14);
            for (a, b) in db.grads.iter().zip(&jvp.grads) {
                let d = max_abs_diff(a, b);
                assert!(d < 1e-10, "λ {lambda}, γ {gamma}: max |diff| {d:e}");
            }
        }
    }
}

/// L2(θ2) for the current generator weights.
fn meta_loss(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    x: &Tensor,
    y: &Tensor,
    alpha: f64,
    lambda: f64,
) -> f64 {
    meta_gradient(
        f,
        g,
        Batch::new(x, y),
        alpha,
        LossConfig {
            gamma: 2.0,
            lambda,
            sample_entropy: 0.0,
            weight_mean_penalty: 0.0,
        },
        MetaGradientMode::DoubleBackward,
    )
    .unwrap()
    .loss
    .double_value(&[])
}

#[test]
fn meta_gradient_matches_central_finite_differences_at_lambda_0() {
    // λ = 0: the gradient flows into θ2 only through θ1⁺ = θ1 − αG, the second-order path.
    let fx = Fixture::load(META_STEP);
    let (f, g) = fx.nets();
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.get("alpha").double_value(&[0]));
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.0,
        sample_entropy: 0.0,
        weight_mean_penalty: 0.0,
    };
    let analytic = meta_gradient(
        &f,
        &g,
        Batch::new(&x, &y),
        alpha,
        losses,
        MetaGradientMode::DoubleBackward,
    )
    .unwrap()
    .grads;
    let jvp = meta_gradient(
        &f,
        &g,
        Batch::new(&x, &y),
        alpha,
        losses,
        MetaGradientMode::Jvp,
    )
    .unwrap()
    .grads;
    for (a, b) in analytic.iter().zip(&jvp) {
        assert!(max_abs_diff(a, b) < 1e-10, "jvp equals double-backward");
    }
    let rel = finite_difference_error(&g.store.params, &analytic, 1, || {
        meta_loss(&f, &g, &x, &y, alpha, 0.0)
    });
    assert!(
        rel < 1e-5,
        "relative error against finite differences: {rel:e}"
    );
}

#[test]
fn create_graph_is_what_carries_the_meta_gradient() {
    let fx = Fixture::load(META_STEP);
    let (f, g) = fx.nets();
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.get("alpha").double_value(&[0]));
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.0,
        sample_entropy: 0.0,
        weight_mean_penalty: 0.0,
    };
    let without = meta_gradient(
        &f,
        &g,
        Batch::new(&x, &y),
        alpha,
        losses,
        MetaPath::WithoutSecondOrder,
    )
    .unwrap()
    .grads;
    let with = meta_gradient(
        &f,
        &g,
        Batch::new(&x, &y),
        alpha,
        losses,
        MetaGradientMode::DoubleBackward,
    )
    .unwrap()
    .grads;
    let norm = |gs: &[Tensor]| {
        gs.iter()
            .map(|t| t.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt()
    };
    assert_eq!(
        norm(&without),
        0.0,
        "without create_graph G is a constant and θ2 gets no gradient at λ = 0"
    );
    assert!(norm(&with) > 1e-6);
    assert_close(
        &grads_named(&g, &with),
        &fx,
        "expected.lambda0.grad.",
        1e-10,
    );
}

#[test]
fn stage1_then_stage2_match_pytorch() {
    let fx = Fixture::load(META_STEP);
    for mode in MODES {
        let (f, g) = fx.nets();
        let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.get("alpha").double_value(&[0]));
        let mut opt_f = Sgd::new(
            OptimizerConfig {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 5e-4,
                backbone_lr_scale: 1.0,
            },
            f.store.params.len(),
        );
        let s = stage1(
            &f,
            &mut opt_f,
            AuxTarget::Generator(&g),
            Batch::new(&x, &y),
            0.1,
            LossConfig {
                gamma: 2.0,
                lambda: 0.0,
                sample_entropy: 0.0,
                weight_mean_penalty: 0.0,
            },
        );
        let want = fx.get("expected.stage1.loss").double_value(&[0]);
        let got = s.primary_loss.double_value(&[]) + s.aux_loss.unwrap().double_value(&[]);
        assert!((got - want).abs() < 1e-12, "L1 {got} vs {want}");
        // θ1 after the step and f's running statistics after exactly one update.
        assert_close(&f.store.named(), &fx, "expected.stage1.f.", 1e-10);
        // g's running statistics were updated by the stage-1 forward (its weights were not).
        let g_bufs: Vec<(String, Tensor)> = g
            .store
            .named()
            .into_iter()
            .filter(|(n, _)| n.contains("running"))
            .collect();
        assert_eq!(g_bufs.len(), 6);
        assert_close(&g_bufs, &fx, "expected.stage1.g.", 1e-12);
        let mut g = Generator::new(
            g,
            OptimizerConfig {
                lr: 1e-3,
                momentum: 0.0,
                weight_decay: 5e-4,
                backbone_lr_scale: 1.0,
            },
        );
        stage2(
            &f,
            &mut g,
            Batch::new(&x, &y),
            LearningRates { f: alpha, g: 1e-3 },
            LossConfig {
                gamma: 2.0,
                lambda: 0.2,
                sample_entropy: 0.0,
                weight_mean_penalty: 0.0,
            },
            mode,
        )
        .unwrap();
        let g_params: Vec<(String, Tensor)> = g
            .net
            .store
            .named()
            .into_iter()
            .filter(|(n, _)| !n.contains("running"))
            .collect();
        assert_close(&g_params, &fx, "expected.stage2.g.", 1e-12);
    }
}

fn buffers(store: &ParamStore) -> Vec<Tensor> {
    store.buffers.iter().map(|b| b.copy()).collect()
}

#[test]
fn batch_norm_running_statistics_follow_the_method() {
    let fx = Fixture::load(META_STEP);
    let (f, g) = fx.nets();
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.get("alpha").double_value(&[0]));
    let (f0, g0) = (buffers(&f.store), buffers(&g.store));

    // Stage 2 (the functional forward at θ1⁺, the recomputation at θ1 and the dual forward of
    // the jvp path) never touches them.
    for mode in MODES {
        meta_gradient(
            &f,
            &g,
            Batch::new(&x, &y),
            alpha,
            LossConfig {
                gamma: 2.0,
                lambda: 0.2,
                sample_entropy: 0.0,
                weight_mean_penalty: 0.0,
            },
            mode,
        )
        .unwrap();
    }
    for (a, b) in f0
        .iter()
        .zip(&f.store.buffers)
        .chain(g0.iter().zip(&g.store.buffers))
    {
        assert_eq!(
            max_abs_diff(a, b),
            0.0,
            "stage 2 changed a running statistic"
        );
    }

    // Stage 1 updates them exactly once per batch: layer 0's running mean moves by
    // momentum · (batch mean − old), with the batch mean of the first conv's output.
    let w = f.store.params[0].detach();
    let b = f.store.params[1].detach();
    let batch_mean = x.conv2d(&w, Some(&b), [1, 1], [1, 1], [1, 1], 1).mean_dim(
        &[0i64, 2, 3][..],
        false,
        Kind::Double,
    );
    let mut opt = Sgd::new(
        OptimizerConfig {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            backbone_lr_scale: 1.0,
        },
        f.store.params.len(),
    );
    stage1(
        &f,
        &mut opt,
        AuxTarget::Generator(&g),
        Batch::new(&x, &y),
        0.1,
        LossConfig {
            gamma: 2.0,
            lambda: 0.0,
            sample_entropy: 0.0,
            weight_mean_penalty: 0.0,
        },
    );
    let want = &f0[0] * 0.9 + &batch_mean * 0.1;
    assert!(
        max_abs_diff(&f.store.buffers[0], &want) < 1e-12,
        "exactly one momentum update"
    );
    assert!(
        max_abs_diff(&g.store.buffers[0], &g0[0]) > 0.0,
        "g's stage-1 forward updates g's statistics"
    );

    // Evaluation uses them: each image's output is independent of the rest of the batch, and
    // changing the running statistics changes the output of a Running forward only.
    let eval = |xx: &Tensor| tch::no_grad(|| f.forward(xx, BatchNorm::Running).primary);
    let batch = |xx: &Tensor| {
        tch::no_grad(|| {
            f.forward_with(xx, &f.store.params, BatchNorm::Batch, false)
                .primary
        })
    };
    let full = eval(&x);
    assert!(max_abs_diff(&full.narrow(0, 0, 1), &eval(&x.narrow(0, 0, 1))) < 1e-12);
    let (e0, b0) = (eval(&x), batch(&x));
    tch::no_grad(|| {
        let _ = f.store.buffers[0]
            .shallow_clone()
            .f_add_scalar_(0.5)
            .unwrap();
    });
    assert!(
        max_abs_diff(&eval(&x), &e0) > 1e-6,
        "Running forward reads the running mean"
    );
    assert_eq!(
        max_abs_diff(&batch(&x), &b0),
        0.0,
        "Batch forward ignores it"
    );
    let stats_before = buffers(&f.store);
    let _ = eval(&x);
    for (a, b) in stats_before.iter().zip(&f.store.buffers) {
        assert_eq!(
            max_abs_diff(a, b),
            0.0,
            "evaluation must not update statistics"
        );
    }
}

/// A tiny ResNet (2 stages of width 4, CIFAR stem, a downsample block), both f and g.
fn tiny_resnet() -> maxl_core::arch::Architecture {
    let yaml = "input: {channels: 3, height: 6, width: 6, mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3]}\nresnet: {block: basic, layers: [1, 1], widths: [4, 4], stem: cifar}\nhead_hidden: 5\n";
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn meta_gradient_on_residual_nets_matches_finite_differences() {
    // f's stage-1 gradient and g's meta-gradient on ResNets; f and g are both ResNets; λ = 0 so θ2 reaches L2 only through θ1⁺ = θ1 − α s⊙G, with the
    // backbone's learning-rate scale s = 0.5 (the heads' 1) in the inner step.
    tch::manual_seed(11);
    let arch = tiny_resnet();
    arch.validate().unwrap();
    let h = maxl_core::hierarchy::Hierarchy::new(vec![2, 3]).unwrap();
    let mut f = MultiTaskNet::new(&arch, 2, h.num_aux(), Kind::Double, tch::Device::Cpu);
    f.store.set_backbone_lr_scale(0.5);
    let g = LabelGenerator::new(&arch, &h, Kind::Double, tch::Device::Cpu);
    let x = Tensor::randn([6, 3, 6, 6], (Kind::Double, tch::Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 1, 0, 1, 0]);
    let alpha = 0.3;
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.0,
        sample_entropy: 0.0,
        weight_mean_penalty: 0.0,
    };
    let grads = |f: &MultiTaskNet, mode| {
        meta_gradient(f, &g, Batch::new(&x, &y), alpha, losses, mode)
            .unwrap()
            .grads
    };
    let (db, jvp) = (
        grads(&f, MetaGradientMode::DoubleBackward),
        grads(&f, MetaGradientMode::Jvp),
    );
    for (a, b) in db.iter().zip(&jvp) {
        assert!(max_abs_diff(a, b) < 1e-10, "jvp equals double-backward");
    }
    let loss = || {
        meta_gradient(
            &f,
            &g,
            Batch::new(&x, &y),
            alpha,
            losses,
            MetaGradientMode::DoubleBackward,
        )
        .unwrap()
        .loss
        .double_value(&[])
    };
    // Every third entry of every tensor: the stem, both stages, the downsample, the head.
    let rel = finite_difference_error(&g.store.params, &db, 3, loss);
    assert!(
        rel < 1e-5,
        "relative error against finite differences: {rel:e}"
    );
    // f's side: G = ∂L1/∂θ1 through the residual blocks against finite differences of L1.
    let t = tch::no_grad(|| g.forward(&x, &y, BatchNorm::Batch));
    let l1 = |f: &MultiTaskNet| {
        multitask_loss(
            f,
            &f.store.params,
            BatchNorm::Batch,
            Batch::new(&x, &y),
            Some(&t),
            2.0,
        )
    };
    let grad1 = Tensor::run_backward(&[&l1(&f).total], &f.store.params, false, false);
    let rel = finite_difference_error(&f.store.params, &grad1, 3, || {
        tch::no_grad(|| l1(&f).total.double_value(&[]))
    });
    assert!(rel < 1e-5, "G against finite differences: {rel:e}");
    // The scale is part of the algorithm: without it the meta-gradient differs.
    f.store.set_backbone_lr_scale(1.0);
    let unscaled = grads(&f, MetaGradientMode::Jvp);
    let d: f64 = unscaled
        .iter()
        .zip(&jvp)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0.0, f64::max);
    assert!(d > 1e-8, "the backbone's scale changes θ1⁺");
}

#[test]
fn the_per_image_entropy_term_matches_finite_differences_in_both_modes() {
    let fx = Fixture::load(META_STEP);
    let (f, g) = fx.nets();
    let (x, y, alpha) = (fx.get("x"), fx.get("y"), fx.get("alpha").double_value(&[0]));
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.2,
        sample_entropy: 0.5,
        weight_mean_penalty: 0.0,
    };
    let run = |losses: LossConfig, mode| {
        meta_gradient(&f, &g, Batch::new(&x, &y), alpha, losses, mode).unwrap()
    };
    let db = run(losses, MetaGradientMode::DoubleBackward);
    let jvp = run(losses, MetaGradientMode::Jvp);
    assert!((db.loss.double_value(&[]) - jvp.loss.double_value(&[])).abs() < 1e-14);
    for (a, b) in db.grads.iter().zip(&jvp.grads) {
        assert!(max_abs_diff(a, b) < 1e-10, "jvp equals double-backward");
    }
    // L2 = primary at θ1⁺ + λR + μ·mean_i H(t_i), with t = g's output.
    let t = g.forward(&x, &y, BatchNorm::Batch);
    let h = maxl_train::loss::mean_sample_entropy(&t).double_value(&[]);
    let l2 = db.primary_at_fast.double_value(&[]) + 0.2 * db.regulariser.double_value(&[]);
    assert!((db.loss.double_value(&[]) - (l2 + 0.5 * h)).abs() < 1e-12);
    // The term changes the meta-gradient…
    let paper = run(
        LossConfig {
            sample_entropy: 0.0,
            weight_mean_penalty: 0.0,
            ..losses
        },
        MetaGradientMode::DoubleBackward,
    );
    let change = db
        .grads
        .iter()
        .zip(&paper.grads)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0.0, f64::max);
    assert!(change > 1e-6, "μ must change the meta-gradient: {change:e}");
    // …and the whole gradient is L2's.
    let rel = finite_difference_error(&g.store.params, &db.grads, 1, || {
        run(losses, MetaGradientMode::DoubleBackward)
            .loss
            .double_value(&[])
    });
    assert!(
        rel < 1e-5,
        "relative error against finite differences: {rel:e}"
    );
}
