//! End-to-end tests of the facade: conformance with the reference vectors, float64
//! finite-difference gradients of every penalty term, DTC invariants under a real optimizer, and
//! the pruner's errors and state.

use std::path::Path;

use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::{GradientsParams, SgdConfig, momentum::MomentumConfig};
use texprune::burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};
use texprune::cdp::{Cdp, LayerParams};
use texprune::texture::SkeletonTexture;
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{CdpConfig, DtcConfig, Formula, PruneError, Pruner, PrunerConfig};

fn f64_tensor<const D: usize>(values: Vec<f64>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(values, shape),
        (&Device::default(), DType::F64),
    )
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Deterministic pseudo-random numbers in [-1, 1) (no dependency on a backend's RNG).
fn numbers(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

mod conformance {
    use super::*;
    use texprune::conformance::check_file;

    #[test]
    fn reference_vectors_pass() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference");
        let device = Device::default();
        for (file, at_least) in [
            ("penalty.json", 400),
            ("dtc.json", 400),
            ("prune_vgg_small.json", 38),
            ("prune_resnet56_small.json", 204),
            ("prune_resnet56_full_structure.json", 166),
        ] {
            let report = check_file(&dir.join(file), &device).unwrap();
            assert!(report.failures.is_empty(), "{file}: {:#?}", report.failures);
            // Every loss, intermediate, gradient, threshold and mask of the file is a check.
            assert!(
                report.passed >= at_least,
                "{file}: only {} checks",
                report.passed
            );
        }
    }

    #[test]
    fn a_perturbed_reference_value_fails() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference");
        let text = std::fs::read_to_string(dir.join("dtc.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let t = &mut json["layer_cases"][0]["Skeleton_skeleton"][0];
        *t = serde_json::json!(t.as_f64().unwrap() * (1.0 + 1e-7));
        let path =
            std::env::temp_dir().join(format!("texprune-perturbed-{}.json", std::process::id()));
        std::fs::write(&path, json.to_string()).unwrap();
        let report = check_file(&path, &Device::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    }

    /// The pruning checks compare the structure: one stripe more or less, or a FLOP count off
    /// by one multiply-add, fails.
    #[test]
    fn a_perturbed_pruning_reference_fails() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference");
        let text = std::fs::read_to_string(dir.join("prune_resnet56_full_structure.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let case = &mut json["case"]["pruned"];
        case["flops"] = serde_json::json!(case["flops"].as_u64().unwrap() + 2);
        let bit = &mut case["structure"][5]["stripe_mask"][0][0][0];
        *bit = serde_json::json!(!bit.as_bool().unwrap());
        let path = std::env::temp_dir().join(format!("texprune-prune-{}.json", std::process::id()));
        std::fs::write(&path, json.to_string()).unwrap();
        let report = check_file(&path, &Device::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
        assert!(report.notes.is_empty());
    }
}

mod finite_differences {
    use super::*;

    /// A layer as plain numbers: weight values and shape, skeleton values and shape.
    type RawLayer = (Vec<f64>, [usize; 4], Vec<f64>, [usize; 3]);

    /// Two layers, 3×3 and 1×1 kernels, with ~20 % exact zeros in the skeleton.
    fn layers(seed: u64) -> Vec<RawLayer> {
        [([3, 2, 3, 3], seed), ([4, 3, 1, 1], seed + 1)]
            .into_iter()
            .map(|(shape, s)| {
                let [cout, cin, kh, kw] = shape;
                let w = numbers(cout * cin * kh * kw, s);
                let sk: Vec<f64> = numbers(cout * kh * kw, s + 100)
                    .into_iter()
                    .map(|v| if v.abs() < 0.2 { 0.0 } else { v })
                    .collect();
                (w, shape, sk, [cout, kh, kw])
            })
            .collect()
    }

    fn params(layers: &[RawLayer], grad: bool) -> Vec<LayerParams> {
        layers
            .iter()
            .map(|(w, ws, s, ss)| {
                let (mut weight, mut skeleton) =
                    (f64_tensor(w.clone(), *ws), f64_tensor(s.clone(), *ss));
                if grad {
                    weight = weight.autodiff().require_grad();
                    skeleton = skeleton.autodiff().require_grad();
                }
                LayerParams { weight, skeleton }
            })
            .collect()
    }

    /// Central differences with step 1e-6 against the autodiff gradient, every element.
    fn check(cdp: &Cdp, what: &str) {
        let point = layers(7);
        let value = |l: &[RawLayer]| values(cdp.evaluate(&params(l, false)).unwrap().total)[0];
        let p = params(&point, true);
        let grads = cdp.evaluate(&p).unwrap().total.backward();
        let h = 1e-6;
        for (li, lp) in p.iter().enumerate() {
            let analytic = [
                lp.weight.grad(&grads).map(values).unwrap_or_default(),
                lp.skeleton.grad(&grads).map(values).unwrap_or_default(),
            ];
            for (which, analytic) in analytic.iter().enumerate() {
                let n = if which == 0 {
                    point[li].0.len()
                } else {
                    point[li].2.len()
                };
                for i in 0..n {
                    let mut plus = point.clone();
                    let mut minus = point.clone();
                    let (a, b) = if which == 0 {
                        (&mut plus[li].0[i], &mut minus[li].0[i])
                    } else {
                        (&mut plus[li].2[i], &mut minus[li].2[i])
                    };
                    let (x0, x1) = (*a, *b);
                    *a = x0 + h;
                    *b = x1 - h;
                    let numeric = (value(&plus) - value(&minus)) / (2.0 * h);
                    let g = analytic.get(i).copied().unwrap_or(0.0);
                    // |S| is not differentiable at 0: its one-sided slopes are ±1, and autodiff
                    // takes 0. Skip skeleton entries that sit exactly at 0.
                    if which == 1 && point[li].2[i] == 0.0 {
                        continue;
                    }
                    assert!(
                        (numeric - g).abs() <= 1e-6 * (1.0 + g.abs()),
                        "{what}: layer {li} {} [{i}]: numeric {numeric}, autodiff {g}",
                        ["weight", "skeleton"][which]
                    );
                }
            }
        }
    }

    #[test]
    fn every_term_alone_and_combined() {
        let terms = [
            ("weight_texture", CdpConfig::new().with_weight_texture(0.7)),
            (
                "skeleton_texture",
                CdpConfig::new().with_skeleton_texture(0.7),
            ),
            ("l1", CdpConfig::new().with_l1(0.7)),
            ("l2", CdpConfig::new().with_l2(0.7)),
            ("group", CdpConfig::new().with_group(0.7)),
            ("adaptive", CdpConfig::new().with_adaptive(0.7)),
            (
                "combined",
                CdpConfig::new()
                    .with_weight_texture(0.3)
                    .with_skeleton_texture(0.2)
                    .with_l1(0.1)
                    .with_l2(0.4)
                    .with_group(0.5)
                    .with_adaptive(0.6),
            ),
        ];
        for (name, config) in terms {
            check(&Cdp::new(config).unwrap(), name);
        }
    }

    #[test]
    fn adaptive_term_with_history_and_reference_formula() {
        for formula in [Formula::Corrected, Formula::Reference] {
            let mut cdp =
                Cdp::new(CdpConfig::new().with_adaptive(0.9).with_formula(formula)).unwrap();
            // History from another point, so T_t / T_{t-1} ≠ 1.
            let masses = cdp.evaluate(&params(&layers(99), false)).unwrap().masses;
            cdp.commit(masses);
            check(&cdp, &format!("adaptive with history ({formula:?})"));
        }
    }
}

mod adaptive_history {
    use super::*;

    #[test]
    fn ratio_is_one_first_then_follows_the_texture_mass() {
        // One 2×1×1×2 layer. G = Σ_f ‖S_f‖₂, L1 = ‖S‖₁, prop = 1.
        let w = f64_tensor(vec![1.0, 2.0, 3.0, -1.0], [2, 1, 1, 2]);
        let s0 = f64_tensor(vec![1.0, 2.0, -1.0, 1.0], [2, 1, 2]);
        let s1 = f64_tensor(vec![1.0, 0.5, 2.0, 1.0], [2, 1, 2]);
        let mut cdp = Cdp::new(CdpConfig::new().with_adaptive(1.0)).unwrap();
        let layer = |s: &Tensor<3>| {
            vec![LayerParams {
                weight: w.clone(),
                skeleton: s.clone(),
            }]
        };
        // First step: no history → G + L1 = (√5 + √2) + 5.
        let first = cdp.evaluate(&layer(&s0)).unwrap();
        let expected = 5f64.sqrt() + 2f64.sqrt() + 5.0;
        assert!((values(first.total)[0] - expected).abs() < 1e-12);
        cdp.commit(first.masses);
        // Second step: r = T(s1)/T(s0); term = r·G(s1) + L1(s1)/r.
        let mass = |s: &Tensor<3>| values(SkeletonTexture::new(s.clone()).mass())[0];
        let r = mass(&s1) / mass(&s0);
        assert!(
            (r - 1.0).abs() > 1e-3,
            "the test needs the mass to move (r = {r})"
        );
        let expected = r * (1.25f64.sqrt() + 5f64.sqrt()) + 4.5 / r;
        let second = values(cdp.evaluate(&layer(&s1)).unwrap().total)[0];
        assert!((second - expected).abs() < 1e-12, "{second} vs {expected}");
        // Without history the ratio stays 1.
        let flat = Cdp::new(CdpConfig::new().with_adaptive(1.0).with_history(false)).unwrap();
        let none = values(flat.evaluate(&layer(&s1)).unwrap().total)[0];
        assert!((none - (1.25f64.sqrt() + 5f64.sqrt() + 4.5)).abs() < 1e-12);
    }

    #[test]
    fn default_all_ones_skeleton_with_every_term_is_finite() {
        let device = Device::default().autodiff();
        let model = VggConfig::new(vec![
            VggLayer::Conv(4),
            VggLayer::MaxPool,
            VggLayer::Conv(8),
        ])
        .with_input_size([8, 8])
        .init(&device)
        .unwrap();
        let all = CdpConfig::new()
            .with_weight_texture(1e-4)
            .with_skeleton_texture(1e-4)
            .with_l1(1e-4)
            .with_l2(1e-4)
            .with_group(1e-4)
            .with_adaptive(1e-4);
        let pruner = Pruner::new(PrunerConfig::new(all, DtcConfig::new())).unwrap();
        let penalty = pruner.penalty(&model).unwrap().unwrap();
        let grads = GradientsParams::from_grads(penalty.backward(), &model);
        for layer in pruner.layers(&model).unwrap() {
            let g = grads.get::<3>(layer.skeleton_id).unwrap();
            assert!(values(g).iter().all(|v| v.is_finite()), "{}", layer.name);
        }
    }
}

mod training {
    use super::*;

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
        let x = f64_tensor(numbers(16 * 3 * 8 * 8, step as u64), [16, 3, 8, 8])
            .cast(DType::F32)
            .to_device(device);
        let labels: Vec<i64> = (0..16).map(|i| ((i * 7 + step) % 4) as i64).collect();
        (x, Tensor::from_data(TensorData::new(labels, [16]), device))
    }

    #[test]
    fn fit_with_sgd_drives_stripes_to_zero_and_keeps_them_there() {
        let device = Device::default().autodiff();
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
            // Pruned entries are exactly 0, and once pruned stay pruned.
            let now: Vec<Vec<bool>> = pruner
                .layers(&model)
                .unwrap()
                .iter()
                .map(|l| {
                    values(l.skeleton.clone())
                        .iter()
                        .map(|v| *v == 0.0)
                        .collect()
                })
                .collect();
            for (before, after) in pruned_before.iter().zip(&now) {
                for (b, a) in before.iter().zip(after) {
                    assert!(!b || *a, "a pruned entry came back at step {step}");
                }
            }
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

    #[test]
    fn state_round_trips() {
        let device = Device::default().autodiff();
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
}

mod errors {
    use super::*;

    #[test]
    fn bad_configs_and_inputs_are_typed_errors() {
        assert!(matches!(
            Pruner::new(PrunerConfig::new(
                CdpConfig::new(),
                DtcConfig::new().with_threshold(-1.0)
            )),
            Err(PruneError::Dtc(_))
        ));
        assert!(matches!(
            Pruner::new(PrunerConfig::new(
                CdpConfig::new().with_l2(f64::NAN),
                DtcConfig::new()
            )),
            Err(PruneError::Cdp(_))
        ));
        let device = Device::default().autodiff();
        let model = VggConfig::new(vec![VggLayer::Conv(4)])
            .with_input_size([4, 4])
            .init(&device)
            .unwrap();
        let exempt = PrunerConfig::new(CdpConfig::new(), DtcConfig::new())
            .with_exempt(vec!["features.7".into()]);
        let pruner = Pruner::new(exempt).unwrap();
        assert!(matches!(
            pruner.layers(&model),
            Err(PruneError::UnknownLayer { .. })
        ));

        let mut pruner = Pruner::new(PrunerConfig::new(
            CdpConfig::new().with_l1(1e-3),
            DtcConfig::new(),
        ))
        .unwrap();
        let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Default, &device);
        let nan = model.forward(x.clone()).sum().mul_scalar(f64::NAN);
        assert!(matches!(
            pruner.fit(&model, nan),
            Err(PruneError::NonFiniteLoss { step: 1, .. })
        ));
        assert_eq!(pruner.step(), 0);
        let plain = model.valid().forward(x.without_autodiff()).sum();
        assert!(matches!(
            pruner.fit(&model, plain),
            Err(PruneError::NotAutodiff)
        ));
    }
}
