//! End-to-end tests of the facade: perturbed reference values fail the conformance checks,
//! float64 finite-difference gradients of every penalty term, the texture-mass history, the
//! pruner's errors, an epoch on real Fashion-MNIST, checkpoints, and the analysis tools. The
//! checks that run on every backend are in `backends.rs`.

use std::path::Path;

use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::{GradientsParams, SgdConfig, momentum::MomentumConfig};
use texprune::burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
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
    use texprune_tools::conformance::check_file;

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
        let all = CdpConfig::every_term(1e-4);
        let pruner = Pruner::new(PrunerConfig::new(all, DtcConfig::new())).unwrap();
        let penalty = pruner.penalty(&model).unwrap().unwrap();
        let grads = GradientsParams::from_grads(penalty.backward(), &model);
        for layer in pruner.layers(&model).unwrap() {
            let g = grads.get::<3>(layer.skeleton_id).unwrap();
            assert!(values(g).iter().all(|v| v.is_finite()), "{}", layer.name);
        }
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

/// Real data: a short epoch on Fashion-MNIST, on the split the repository ships (run by default)
/// and on the full training set (opt-in: it needs Debian's package).
mod recipe {
    use texprune::data::{ImageBatcher, ImageSet, Normalization, Split, batch_rng, mnist};
    use texprune::{Classifier, Prunable};

    use super::*;

    /// Where Debian's `dataset-fashion-mnist` puts the full dataset (60,000 training images).
    const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

    #[test]
    fn an_epoch_on_the_shipped_fashion_mnist_split_lowers_the_loss_and_prunes_stripes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
        an_epoch_lowers_the_loss_and_prunes_stripes(mnist(&dir, Split::Test).unwrap());
    }

    /// Opt-in (`cargo test --release --test pruning -- --ignored`, run by `.ci/run` after it
    /// installs the package): it reads files no fresh machine has.
    #[test]
    #[ignore = "needs Debian's package dataset-fashion-mnist (the 60,000 training images)"]
    fn an_epoch_on_the_full_fashion_mnist_training_set_lowers_the_loss_and_prunes_stripes() {
        let dir = Path::new(FASHION_MNIST);
        assert!(
            dir.join("train-images-idx3-ubyte.gz").exists(),
            "{FASHION_MNIST} is missing: install Debian's package `dataset-fashion-mnist`"
        );
        an_epoch_lowers_the_loss_and_prunes_stripes(mnist(dir, Split::Train).unwrap());
    }

    /// 64 steps of 32 images with CDP + DTC: the loss falls below 60 % of its start, stripes are
    /// pruned, and every pruned stripe is exactly zero in the model.
    fn an_epoch_lowers_the_loss_and_prunes_stripes(set: ImageSet) {
        let train = set.take(2048);
        assert_eq!(train.shape, [1, 28, 28]);
        let device = Device::default().autodiff();
        device.seed(3);
        let mut model: Vgg = VggConfig::new(vec![
            VggLayer::Conv(16),
            VggLayer::MaxPool,
            VggLayer::Conv(32),
            VggLayer::MaxPool,
        ])
        .with_in_channels(1)
        .with_input_size([28, 28])
        .init(&device)
        .unwrap();
        let mut pruner = Pruner::new(PrunerConfig::new(
            CdpConfig::new().with_l1(5e-2),
            DtcConfig::new().with_threshold(0.02),
        ))
        .unwrap();
        let mut optim = SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
            ))
            .init();
        let batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let mut losses = Vec::new();
        let mut last = None;
        let order: Vec<usize> = (0..train.len()).collect();
        for (b, chunk) in order.chunks(32).enumerate() {
            use texprune::burn::data::dataset::Dataset;
            let items: Vec<_> = chunk.iter().map(|&i| train.get(i).unwrap()).collect();
            let batch = batcher.images(&items, &mut batch_rng(0, 0, b), &device);
            let loss = loss_fn.forward(model.logits(batch.images), batch.labels);
            let fit = pruner.fit(&model, loss).unwrap();
            model = pruner.apply_masks(optim.step(0.05, model, fit.grads));
            losses.push(fit.summary.loss);
            last = Some(fit.summary);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, end) = (mean(&losses[..8]), mean(&losses[losses.len() - 8..]));
        assert!(end < 0.6 * first, "loss {first:.3} → {end:.3}");
        let summary = last.unwrap();
        assert!(
            summary.live_stripes < summary.total_stripes,
            "no stripe pruned: {summary}"
        );
        // Pruned means exactly zero in the model.
        let zeros: usize = model
            .collect_prunable()
            .iter()
            .map(|l| {
                values(l.skeleton.clone())
                    .iter()
                    .filter(|v| **v == 0.0)
                    .count()
            })
            .sum();
        assert_eq!(zeros as u64, summary.total_stripes - summary.live_stripes);
    }
}

mod checkpoints {
    use texprune::checkpoint::{self, CheckpointError};

    use super::*;

    fn setup() -> (Vgg, texprune::burn::optim::ModuleOptimizer, Pruner) {
        let device = Device::default().autodiff();
        let model = VggConfig::new(vec![
            VggLayer::Conv(4),
            VggLayer::MaxPool,
            VggLayer::Conv(6),
        ])
        .with_input_size([8, 8])
        .init(&device)
        .unwrap();
        let pruner = Pruner::new(PrunerConfig::new(CdpConfig::new(), DtcConfig::new())).unwrap();
        (model, SgdConfig::new().init(), pruner)
    }

    /// Two threads saving checkpoints to one path at once: every save succeeds (each writes its
    /// own temporary file), the file left is one of them whole, and no temporary file remains.
    #[test]
    fn two_threads_saving_to_one_path_never_collide() {
        let dir =
            std::env::temp_dir().join(format!("texprune-ckpt-threads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("last.ckpt");
        std::thread::scope(|scope| {
            for thread in 0..2u64 {
                let path = &path;
                scope.spawn(move || {
                    let (model, optim, pruner) = setup();
                    for i in 0..20u64 {
                        checkpoint::save(path, &(thread, i), &model, &optim, &pruner).unwrap();
                    }
                });
            }
        });
        let (model, _, _) = setup();
        let ck = checkpoint::load::<(u64, u64)>(&path).unwrap();
        assert_eq!(ck.meta.1, 19);
        ck.model(model).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["last.ckpt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn round_trip_and_damaged_files() {
        let dir = std::env::temp_dir().join(format!("texprune-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("last.ckpt");
        let (model, optim, pruner) = setup();
        checkpoint::save(&path, &7u32, &model, &optim, &pruner).unwrap();
        let ck = checkpoint::load::<u32>(&path).unwrap();
        assert_eq!(ck.meta, 7);
        let (fresh, optim2, _) = setup();
        let restored = ck.model(fresh).unwrap();
        let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Default, &Device::default());
        assert_eq!(
            restored.valid().forward(x.clone()).into_data(),
            model.valid().forward(x).into_data()
        );
        ck.optimizer(optim2).unwrap();
        ck.pruner(&restored).unwrap();

        // Truncated, wrong magic, wrong model: typed errors naming the file.
        let bytes = std::fs::read(&path).unwrap();
        let damaged = dir.join("damaged.ckpt");
        std::fs::write(&damaged, &bytes[..bytes.len() - 10]).unwrap();
        let err = checkpoint::load::<u32>(&damaged).err().unwrap();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("damaged.ckpt"));
        std::fs::write(&damaged, b"PK\x03\x04 a zip file").unwrap();
        assert!(matches!(
            checkpoint::load::<u32>(&damaged),
            Err(CheckpointError::Corrupt { .. })
        ));
        let other = VggConfig::new(vec![VggLayer::Conv(5)])
            .with_input_size([8, 8])
            .init(&Device::default())
            .unwrap();
        assert!(matches!(
            ck.model(other),
            Err(CheckpointError::Mismatch { .. })
        ));

        // A save that fails (its target is a folder) leaves the previous checkpoint intact.
        let blocked = dir.join("blocked.ckpt");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(matches!(
            checkpoint::save(&blocked, &1u32, &model, &optim, &pruner),
            Err(CheckpointError::Io { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Sensitivity analysis, texture history and the run page.
mod analysis {
    use texprune::burn::data::dataset::Dataset;
    use texprune::burn::module::Param;
    use texprune::data::{ImageBatcher, Normalization, Split, SplitMix64, mnist};
    use texprune::history::TextureHistory;
    use texprune::report::{RunReport, write_run};
    use texprune::sensitivity::{Sweep, analyze};
    use texprune::zoo::resnet::ResNetConfig;
    use texprune::{Classifier, Costed};

    use super::*;

    /// Replaces every weight and skeleton with values from a fixed SplitMix64 stream (the
    /// device's generator is shared by the tests running beside this one): conv and linear
    /// weights uniform in ±sqrt(3 / fan-in), skeletons uniform in [0.05, 1), biases 0; BatchNorm
    /// keeps γ = 1, β = 0.
    struct Deterministic(SplitMix64);

    impl texprune::burn::module::ModuleMapper for Deterministic {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dims = param.dims();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = match D {
                3 => (0..n).map(|_| self.0.range(0.05, 1.0)).collect(),
                4 | 2 => {
                    let fan_in = if D == 4 { n / dims[0] } else { dims[0] };
                    let b = (3.0 / fan_in as f32).sqrt();
                    (0..n).map(|_| self.0.range(-b, b)).collect()
                }
                _ => return param,
            };
            param.map(|t| Tensor::from_data(TensorData::new(values, dims), &t.device()))
        }
    }

    /// A ResNet-8 whose `layer2.0` residual branch is multiplied by zero (its BatchNorm's γ and β
    /// are 0): pruning its convs cannot matter, pruning the stem does.
    #[test]
    fn a_planted_insensitive_block_ranks_below_the_stem() {
        let device = Device::default();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let images = mnist(&repo.join("data/fashion-mnist"), Split::Test).unwrap();
        let batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
        // A briefly trained ResNet-8 (40 SGD steps on the last 1,280 images), so that its
        // predictions depend on the input.
        let train_device = device.clone().autodiff();
        let mut model = ResNetConfig::cifar(8)
            .with_in_channels(1)
            .init(&train_device)
            .unwrap()
            .map(&mut Deterministic(SplitMix64(11)));
        model.fc.bias = None;
        let mut optim = SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
            ))
            .init();
        let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
        for step in 0..40 {
            let items: Vec<_> = (0..32)
                .map(|i| images.get(10_000 - 1_280 + step * 32 + i).unwrap())
                .collect();
            let batch = batcher.images(&items, &mut SplitMix64(0), &train_device);
            let loss = loss_fn.forward(model.logits(batch.images), batch.labels);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.05, model, grads);
        }
        let mut model = model.valid();
        let planted = &mut model.blocks[1].norms[1];
        planted.gamma = Param::from_tensor(planted.gamma.val().zeros_like());
        planted.beta = Param::from_tensor(planted.beta.val().zeros_like());

        // Real images, labelled with the model's own predictions: baseline accuracy 100 %.
        let mut set = images.take(300);
        let items: Vec<_> = (0..set.len()).map(|i| set.get(i).unwrap()).collect();
        let batch = batcher.images(&items, &mut SplitMix64(0), &device);
        let predicted = model.logits(batch.images).argmax(1).flatten::<1>(0, 1);
        set.labels = predicted
            .into_data()
            .iter::<i64>()
            .map(|l| l as usize)
            .collect();

        let mut classes = set.labels.clone();
        classes.sort_unstable();
        classes.dedup();
        assert!(classes.len() > 1, "the model predicts one class only");
        // δ = 3 prunes every stripe of a layer (all entries are below 3 · mean(L) / L_f).
        let report = analyze(
            &model,
            &set,
            &batcher,
            &device,
            &Sweep::new(vec![0.5, 1.0, 3.0], 0.01),
            |_| {},
        )
        .unwrap();
        eprintln!("{report}");
        assert_eq!(report.baseline_accuracy, 1.0);
        assert_eq!(report.layers.len(), 7);
        let sensitivity = |name: &str| {
            report
                .layers
                .iter()
                .find(|l| l.name == name)
                .unwrap()
                .sensitivity
        };
        assert_eq!(sensitivity("layer2.0.conv1"), 0.0);
        assert_eq!(sensitivity("layer2.0.conv2"), 0.0);
        assert!(sensitivity("conv1") > 0.05, "{report}");
        // The analysis ranks the planted convs least sensitive of all.
        let mut ranked: Vec<_> = report.layers.iter().collect();
        ranked.sort_by(|a, b| a.sensitivity.total_cmp(&b.sensitivity));
        let mut least: Vec<&str> = ranked[..2].iter().map(|l| l.name.as_str()).collect();
        least.sort_unstable();
        assert_eq!(least, ["layer2.0.conv1", "layer2.0.conv2"]);
        assert!(ranked[2].sensitivity > 0.05);
        let stem = &report.layers[0];
        assert!(stem.points.last().unwrap().live_fraction < stem.points[0].live_fraction);
        // A sweep point is what DTC's masks give the layer: one layer alone pruned by a pruner
        // at the same δ (every other layer exempt) evaluates to the same accuracy and loss.
        let names: Vec<String> = texprune::Prunable::collect_prunable(&model)
            .iter()
            .map(|l| l.name.clone())
            .collect();
        let name = "layer1.0.conv2";
        let others: Vec<String> = names.iter().filter(|n| *n != name).cloned().collect();
        let mut dtc = Pruner::new(
            PrunerConfig::new(CdpConfig::new(), DtcConfig::new().with_threshold(3.0))
                .with_exempt(others),
        )
        .unwrap();
        dtc.threshold_step(&model, &mut GradientsParams::new())
            .unwrap();
        let masked = dtc.apply_masks(model.clone());
        let (accuracy, loss) =
            texprune::report::evaluate(&masked, &set, &batcher, 256, &device).unwrap();
        let layer = report.layers.iter().find(|l| l.name == name).unwrap();
        let point = &layer.points[2];
        assert_eq!((point.threshold, point.live_fraction), (3.0, 0.0));
        assert_eq!((point.accuracy, point.loss), (accuracy, loss));
        assert_eq!(report.correlations.len(), 2);
        // With another rule the sweep follows it: the smallest-norm rule's point at δ = 0.5 is
        // the pruner's with that rule, and not the per-filter rule's point at the same δ.
        let rule = texprune::ThresholdRule::FilterNorm;
        let by_norm = analyze(
            &model,
            &set,
            &batcher,
            &device,
            &Sweep::new(vec![0.5], 0.01).with_rule(rule),
            |_| {},
        )
        .unwrap();
        let others: Vec<String> = names.iter().filter(|n| *n != name).cloned().collect();
        let mut dtc = Pruner::new(
            PrunerConfig::new(
                CdpConfig::new(),
                DtcConfig::new().with_threshold(0.5).with_rule(rule),
            )
            .with_exempt(others),
        )
        .unwrap();
        dtc.threshold_step(&model, &mut GradientsParams::new())
            .unwrap();
        let masked = dtc.apply_masks(model.clone());
        let expected = texprune::report::evaluate(&masked, &set, &batcher, 256, &device).unwrap();
        let by_norm = &by_norm
            .layers
            .iter()
            .find(|l| l.name == name)
            .unwrap()
            .points[0];
        assert_eq!((by_norm.accuracy, by_norm.loss), expected);
        assert_ne!(by_norm.live_fraction, layer.points[0].live_fraction);

        let dir = std::env::temp_dir().join(format!("texprune-analysis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = serde_json::to_string(&report).unwrap();
        let back: texprune::sensitivity::SensitivityReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.layers.len(), report.layers.len());
        report.plot(&dir.join("s.svg")).unwrap();
        assert!(
            std::fs::read_to_string(dir.join("s.svg"))
                .unwrap()
                .contains("<svg")
        );

        let mut history = TextureHistory::default();
        history.record(0, &model);
        history.record(10, &model);
        assert_eq!(history.layers.len(), 9);
        assert_eq!(history.records[1].live.len(), 9);
        history.plot(&dir.join("h.svg")).unwrap();
        // Every layer is named: in the history's legends and under its bar of the live-stripe
        // chart (an axis label of its own, beside the histogram's caption).
        assert_eq!(names, history.layers);
        let legend = std::fs::read_to_string(dir.join("h.svg")).unwrap();
        texprune::plots::plot_texture(&model, &dir.join("t.svg"), "texture").unwrap();
        let texture = std::fs::read_to_string(dir.join("t.svg")).unwrap();
        // plotters writes each text's body on a line of its own; the histograms' captions read
        // "name (live …)", so a line that is the name alone is a label.
        let labels = |svg: &str| -> Vec<String> { svg.lines().map(str::to_string).collect() };
        let (legend, texture) = (labels(&legend), labels(&texture));
        for name in &names {
            assert!(legend.contains(name), "{name} in the legend");
            assert!(texture.contains(name), "{name} on the axis");
        }
        let parsed: TextureHistory =
            serde_json::from_str(&serde_json::to_string(&history).unwrap()).unwrap();
        assert_eq!(parsed, history);

        // The run page and its files.
        let run = RunReport {
            dataset: "fashion-mnist".into(),
            model: "resnet8".into(),
            epochs: 1,
            accuracy_masked: 0.9,
            accuracy_compact: 0.9,
            params_dense: 10,
            params_compact: 5,
            flops_dense: 10,
            flops_compact: 4,
            macs_dense: 5,
            macs_compact: 2,
            latency_masked_ms: 2.0,
            latency_compact_ms: 1.0,
            wall_seconds: 1.0,
        };
        let cost = model.cost([28, 28]);
        write_run(&dir, "planted", &run, &cost, &history).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let back: RunReport = serde_json::from_str(&read("report.json")).unwrap();
        assert_eq!(back, run);
        let page = read("report.md");
        assert!(page.starts_with("# planted"));
        assert!(page.contains("| accuracy | 90.00 % | 90.00 % |"));
        assert!(page.contains("| params | 10 | 5 (-50.0 %) |"));
        assert!(page.contains("| layer | kind | shape | params | FLOPs | MACs |"));
        for l in &cost.layers {
            assert!(page.contains(&format!("| {} |", l.name)), "{}", l.name);
        }
        assert!(page.contains("![Texture over training](texture-history.svg)"));
        let _: TextureHistory = serde_json::from_str(&read("texture-history.json")).unwrap();
        assert!(read("texture-history.svg").contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
