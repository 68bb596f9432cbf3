//! The backend-generic suite, written once over a `Device`: `tests/backends.rs` runs it as
//! tests on the CPU backend (and on wgpu and CUDA when their cargo features are on), and
//! `perf --part suite` runs it on the backend it was given, on a GPU machine without the
//! repository (the reference vectors from `TEXPRUNE_REFERENCE`).
//!
//! Checks, with their tolerances:
//! - [`conformance`] with the reference vectors, float64, `|ours − ref| ≤ 1e-9·(1 + |ref|)` (not
//!   on wgpu: WGSL has no float64);
//! - [`compaction_is_exact`]: the compact model's logits equal the masked model's within
//!   `1e-4 · max|logit|` (f32), VGG and ResNet with random stripe masks;
//! - [`penalty_gradients_match_finite_differences`]: every penalty term's gradient matches
//!   float32 central differences (step 1e-2) within `2e-2 · (1 + |g|)`, 12 entries per tensor;
//! - [`fit_prunes_and_keeps_pruned`]: a short `Pruner::fit` loop prunes stripes, keeps pruned
//!   entries exactly 0 and never lets the live count grow; [`pruner_state_round_trips`]: the
//!   pruner's state round-trips through JSON.
//!
//! Each check panics on a failure, as a test does; [`run`] catches them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::SgdConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use texprune::cdp::{Cdp, LayerParams};
use texprune::data::SplitMix64;
use texprune::zoo::resnet::ResNetConfig;
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{CdpConfig, Classifier, DtcConfig, Prunable, PruneError, Pruner, PrunerConfig};

use crate::conformance::check_file;
use crate::perf::{random_stripe_masks, synthetic_batch};

/// A check of the suite.
pub type Check = fn(&Device);

/// The checks, by name; `float64`: whether the backend has float64 (all but wgpu), which the
/// conformance check needs.
#[must_use]
pub fn checks(float64: bool) -> Vec<(&'static str, Check)> {
    let mut checks: Vec<(&'static str, Check)> = Vec::new();
    if float64 {
        checks.push(("conformance", conformance));
    }
    checks.extend([
        ("compaction_is_exact", compaction_is_exact as Check),
        (
            "penalty_gradients_match_finite_differences",
            penalty_gradients_match_finite_differences,
        ),
        ("fit_prunes_and_keeps_pruned", fit_prunes_and_keeps_pruned),
        ("pruner_state_round_trips", pruner_state_round_trips),
    ]);
    checks
}

/// Runs every check on `device`, printing a line per check and a summary in the test
/// harness's words (`test NAME ... ok`, `test result: ok. N passed; M failed`); returns the
/// names of the failed checks.
pub fn run(device: &Device, float64: bool) -> Vec<&'static str> {
    let mut failed = Vec::new();
    let checks = checks(float64);
    for (name, check) in &checks {
        let outcome = catch_unwind(AssertUnwindSafe(|| check(device)));
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        checks.len() - failed.len(),
        failed.len()
    );
    failed
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Every reference file passes, in float64 on `device`, with every value of the file checked.
pub fn conformance(device: &Device) {
    // Where the repository is not (a GPU machine running prebuilt binaries), the folder is
    // given by TEXPRUNE_REFERENCE.
    let dir = std::env::var_os("TEXPRUNE_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/reference")
        });
    for (file, at_least) in [
        ("penalty.json", 400),
        ("dtc.json", 400),
        ("prune_vgg_small.json", 38),
        ("prune_resnet56_small.json", 204),
        ("prune_resnet56_full_structure.json", 166),
    ] {
        let report = check_file(&dir.join(file), device).unwrap();
        assert!(report.failures.is_empty(), "{file}: {:#?}", report.failures);
        // Every loss, intermediate, gradient, threshold and mask of the file is a check.
        assert!(
            report.passed >= at_least,
            "{file}: only {} checks",
            report.passed
        );
    }
}

/// Logits of `compact` equal those of `masked` on a fixed batch, within 1e-4 · max|logit|.
fn assert_same_logits<M: Prunable + Classifier>(what: &str, masked: M, device: &Device) {
    let (x, _) = synthetic_batch(3, [3, 32, 32], 10, 5, device);
    let compact = texprune::compact(&masked, x.clone(), M::logits).unwrap();
    let (dense, small) = (masked.logits(x.clone()), compact.logits(x));
    let scale = read(dense.clone().abs().max())[0].max(1.0);
    let err = read((dense - small).abs().max())[0];
    assert!(
        err <= 1e-4 * scale,
        "{what}: max difference {err} (scale {scale})"
    );
}

/// Compaction is exact on `device` (the tensor-op path on GPUs, the host kernel on CPUs).
pub fn compaction_is_exact(device: &Device) {
    device.seed(9);
    for removed in [0.0, 0.5, 0.9] {
        let vgg = VggConfig::vgg11().init(device).unwrap();
        assert_same_logits("vgg11", random_stripe_masks(vgg, removed, 1), device);
        let resnet = ResNetConfig::cifar(20).init(device).unwrap();
        assert_same_logits("resnet20", random_stripe_masks(resnet, removed, 2), device);
    }
}

/// `n` numbers in [-1, 1) from a fixed stream.
fn numbers(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.range(-1.0, 1.0)).collect()
}

/// Every penalty term's gradient against f32 central differences on `device`.
pub fn penalty_gradients_match_finite_differences(device: &Device) {
    // Two layers, 3×3 and 1×1; skeleton entries kept away from 0 (|S| is not differentiable
    // there) by at least twice the step.
    let shapes = [[4, 3, 3, 3], [5, 4, 1, 1]];
    let point: Vec<(Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, &[cout, cin, kh, kw])| {
            let weight = numbers(cout * cin * kh * kw, i as u64);
            let skeleton = numbers(cout * kh * kw, 10 + i as u64)
                .into_iter()
                .map(|v| v.signum() * (0.05 + v.abs()))
                .collect();
            (weight, skeleton)
        })
        .collect();
    let params = |point: &[(Vec<f32>, Vec<f32>)], grad: bool| -> Vec<LayerParams> {
        point
            .iter()
            .zip(shapes)
            .map(|((w, s), [cout, cin, kh, kw])| {
                let mut weight = Tensor::<4>::from_data(
                    TensorData::new(w.clone(), [cout, cin, kh, kw]),
                    (device, DType::F32),
                );
                let mut skeleton = Tensor::<3>::from_data(
                    TensorData::new(s.clone(), [cout, kh, kw]),
                    (device, DType::F32),
                );
                if grad {
                    weight = weight.autodiff().require_grad();
                    skeleton = skeleton.autodiff().require_grad();
                }
                LayerParams { weight, skeleton }
            })
            .collect()
    };
    let h = 1e-2f32;
    let terms = [
        ("weight_texture", CdpConfig::new().with_weight_texture(1.0)),
        (
            "skeleton_texture",
            CdpConfig::new().with_skeleton_texture(1.0),
        ),
        ("l1", CdpConfig::new().with_l1(1.0)),
        ("l2", CdpConfig::new().with_l2(1.0)),
        ("group", CdpConfig::new().with_group(1.0)),
        ("adaptive", CdpConfig::new().with_adaptive(1.0)),
        ("every term", CdpConfig::every_term(0.5)),
    ];
    for (name, config) in terms {
        let cdp = Cdp::new(config).unwrap();
        let value =
            |p: &[(Vec<f32>, Vec<f32>)]| read(cdp.evaluate(&params(p, false)).unwrap().total)[0];
        let p = params(&point, true);
        let grads = cdp.evaluate(&p).unwrap().total.backward();
        for (layer, lp) in p.iter().enumerate() {
            let analytic = [
                lp.weight.grad(&grads).map(read).unwrap_or_default(),
                lp.skeleton.grad(&grads).map(read).unwrap_or_default(),
            ];
            for (which, analytic) in analytic.iter().enumerate() {
                let n = if which == 0 {
                    point[layer].0.len()
                } else {
                    point[layer].1.len()
                };
                for i in (0..n).step_by(n.div_ceil(12)) {
                    let shifted = |delta: f32| {
                        let mut q = point.clone();
                        let v = if which == 0 {
                            &mut q[layer].0[i]
                        } else {
                            &mut q[layer].1[i]
                        };
                        *v += delta;
                        value(&q)
                    };
                    let numeric = (shifted(h) - shifted(-h)) / (2.0 * f64::from(h));
                    let g = analytic.get(i).copied().unwrap_or(0.0);
                    assert!(
                        (numeric - g).abs() <= 2e-2 * (1.0 + g.abs()),
                        "{name}: layer {layer} {} [{i}]: numeric {numeric}, autodiff {g}",
                        ["weight", "skeleton"][which]
                    );
                }
            }
        }
    }
}

fn small_vgg(device: &Device) -> Vgg {
    VggConfig::new(vec![
        VggLayer::Conv(8),
        VggLayer::MaxPool,
        VggLayer::Conv(16),
        VggLayer::MaxPool,
    ])
    .with_input_size([8, 8])
    .with_num_classes(4)
    .init(device)
    .unwrap()
}

fn batch(device: &Device, step: usize) -> (Tensor<4>, Tensor<1, Int>) {
    let x = Tensor::<4>::from_data(
        TensorData::new(numbers(16 * 3 * 8 * 8, step as u64), [16, 3, 8, 8]),
        device,
    );
    let labels: Vec<i64> = (0..16).map(|i| ((i * 7 + step) % 4) as i64).collect();
    (x, Tensor::from_data(TensorData::new(labels, [16]), device))
}

/// Forty SGD steps with the pruner: stripes get pruned, pruned entries are exactly 0 and stay
/// so, the live count never grows.
pub fn fit_prunes_and_keeps_pruned(device: &Device) {
    let device = device.clone().autodiff();
    device.seed(4);
    let mut model = small_vgg(&device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let mut pruner = Pruner::new(PrunerConfig::new(
        CdpConfig::new()
            .with_l1(0.2)
            .with_adaptive(1e-2)
            .with_skeleton_texture(1e-3),
        DtcConfig::new().with_threshold(0.5),
    ))
    .unwrap();
    let ce = CrossEntropyLossConfig::new().init(&device);
    let mut live = Vec::new();
    let mut pruned_before: Vec<Vec<bool>> = Vec::new();
    for step in 0..40 {
        let (x, y) = batch(&device, step);
        let loss = ce.forward(model.forward(x), y);
        let fit = pruner.fit(&model, loss).unwrap();
        model = pruner.apply_masks(optim.step(0.05, model, fit.grads));
        live.push(fit.summary.live_stripes);
        let now: Vec<Vec<bool>> = pruner
            .layers(&model)
            .unwrap()
            .iter()
            .map(|l| read(l.skeleton.clone()).iter().map(|v| *v == 0.0).collect())
            .collect();
        for (before, after) in pruned_before.iter().zip(&now) {
            for (b, a) in before.iter().zip(after) {
                assert!(!b || *a, "a pruned entry came back at step {step}");
            }
        }
        let zeros: usize = now.iter().flatten().filter(|z| **z).count();
        assert_eq!(
            zeros as u64,
            fit.summary.total_stripes - fit.summary.live_stripes,
            "step {step}: zeros in the model against the masks"
        );
        pruned_before = now;
    }
    let total = 8 * 9 + 16 * 9;
    assert!(
        *live.last().unwrap() < total,
        "nothing was pruned: {live:?}"
    );
    assert!(
        live.windows(2).all(|w| w[1] <= w[0]),
        "live stripes must not grow: {live:?}"
    );
    assert_eq!(pruner.step(), 40);
}

/// The pruner's state survives JSON and is refused for another model's layers.
pub fn pruner_state_round_trips(device: &Device) {
    let device = device.clone().autodiff();
    let model = small_vgg(&device);
    let mut pruner = Pruner::new(PrunerConfig::new(
        CdpConfig::new().with_adaptive(1e-2),
        DtcConfig::new().with_threshold(0.5),
    ))
    .unwrap();
    let (x, y) = batch(&device, 0);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(model.forward(x), y);
    pruner.fit(&model, loss).unwrap();
    let state = pruner.state(&model).unwrap();
    let json = serde_json::to_string(&state).unwrap();
    let restored = Pruner::from_state(&serde_json::from_str(&json).unwrap(), &model).unwrap();
    assert_eq!(restored.state(&model).unwrap(), state);
    let mut other = state.clone();
    other.layers[0] = "elsewhere".into();
    assert!(matches!(
        Pruner::from_state(&other, &model),
        Err(PruneError::StateMismatch(_))
    ));
}
