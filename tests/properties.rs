//! Property tests (proptest) of the pruning numerics. Random layer shapes (1–5 filters, 1–3
//! input channels, 1×1 and 3×3 kernels), ~30 % exact zeros, whole zero rows and layers, the
//! all-ones initial skeleton, magnitudes from 1e-30 to 1e15, in f32 and f64:
//! - texture statistics are finite, similarities lie in [0, 1], masses in [0, C_out], and their
//!   gradients are finite;
//! - the CDP penalty with random coefficients (every term, both formulas, with and without
//!   texture-mass history) and its gradients are finite;
//! - DTC thresholds are positive or +∞, never NaN; a stripe lives iff its |S| exceeds its filter's
//!   threshold and was alive before; masks only shrink, whatever the skeleton does next; masked
//!   values are exactly 0 even where the input held NaN.
//!
//! 1e15 is the magnitude bound: beyond it the squares in the L2 and texture terms overflow f32,
//! and `Pruner::fit` then returns `PruneError::NonFinitePenalty` instead of handing out
//! gradients (checked below).

use proptest::prelude::*;
use texprune::burn::module::{Module, ModuleMapper, Param};
use texprune::burn::tensor::{Bool, DType, Device, Tensor, TensorData};
use texprune::cdp::{Cdp, LayerParams};
use texprune::dtc::{ThresholdContainer, mask_stripes};
use texprune::texture::{SkeletonTexture, WeightTexture};
use texprune::zoo::vgg::{VggConfig, VggLayer};
use texprune::{CdpConfig, DtcConfig, Formula, Prunable, PruneError, Pruner, PrunerConfig};

/// One layer as plain numbers.
#[derive(Debug, Clone)]
struct Layer {
    shape: [usize; 4],
    weight: Vec<f64>,
    skeleton: Vec<f64>,
}

impl Layer {
    fn skeleton_shape(&self) -> [usize; 3] {
        let [cout, _, kh, kw] = self.shape;
        [cout, kh, kw]
    }
}

/// Values of one tensor: `n` entries of magnitude 10^e, ~30 % exact zeros; or all zeros; or all
/// ones (the skeleton's initial value).
fn values(n: usize) -> impl Strategy<Value = Vec<f64>> {
    let scaled = (-30i32..=15).prop_flat_map(move |e| {
        prop::collection::vec(
            prop_oneof![
                3 => Just(0.0),
                7 => (-1.0f64..1.0).prop_map(move |u| u * 10f64.powi(e)),
            ],
            n,
        )
    });
    prop_oneof![
        8 => scaled,
        1 => Just(vec![0.0; n]),
        1 => Just(vec![1.0; n]),
    ]
}

fn layer() -> impl Strategy<Value = Layer> {
    (1usize..=5, 1usize..=3, prop_oneof![Just(1usize), Just(3)]).prop_flat_map(|(cout, cin, k)| {
        (values(cout * cin * k * k), values(cout * k * k)).prop_map(move |(weight, skeleton)| {
            Layer {
                shape: [cout, cin, k, k],
                weight,
                skeleton,
            }
        })
    })
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F64)]
}

fn tensor<const D: usize>(values: &[f64], shape: [usize; D], dtype: DType) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), shape),
        (&Device::default(), dtype),
    )
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

fn bools<const D: usize>(t: Tensor<D, Bool>) -> Vec<bool> {
    t.into_data().iter::<bool>().collect()
}

fn params(layers: &[Layer], dtype: DType) -> Vec<LayerParams> {
    layers
        .iter()
        .map(|l| LayerParams {
            weight: tensor(&l.weight, l.shape, dtype).autodiff().require_grad(),
            skeleton: tensor(&l.skeleton, l.skeleton_shape(), dtype)
                .autodiff()
                .require_grad(),
        })
        .collect()
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

fn coefficient() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 1e-6f64..1.0]
}

fn cdp_config() -> impl Strategy<Value = CdpConfig> {
    (
        [
            coefficient(),
            coefficient(),
            coefficient(),
            coefficient(),
            coefficient(),
            coefficient(),
        ],
        prop_oneof![Just(Formula::Corrected), Just(Formula::Reference)],
        any::<bool>(),
    )
        .prop_map(|([wt, st, l1, l2, g, a], formula, history)| {
            CdpConfig::new()
                .with_weight_texture(wt)
                .with_skeleton_texture(st)
                .with_l1(l1)
                .with_l2(l2)
                .with_group(g)
                .with_adaptive(a)
                .with_formula(formula)
                .with_history(history)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn texture_statistics_are_finite_and_bounded(layer in layer(), dtype in dtype()) {
        let [cout, ..] = layer.shape;
        let p = params(std::slice::from_ref(&layer), dtype).remove(0);
        let weight = WeightTexture::new(p.weight.clone());
        let skeleton = SkeletonTexture::new(p.skeleton.clone());
        for (name, sim) in [("weight", &weight.similarity), ("skeleton", &skeleton.similarity)] {
            let sim = read(sim.clone());
            prop_assert!(sim.iter().all(|s| (0.0..=1.0).contains(s)), "{name}: {sim:?}");
        }
        let mass = weight.mass() + skeleton.mass();
        let total = read(mass.clone())[0];
        prop_assert!(total.is_finite() && (0.0..=2.0 * cout as f64).contains(&total));
        let grads = mass.backward();
        let gw = read(p.weight.grad(&grads).unwrap());
        let gs = read(p.skeleton.grad(&grads).unwrap());
        prop_assert!(all_finite(&gw) && all_finite(&gs), "{gw:?} {gs:?}");
    }

    #[test]
    fn penalty_and_its_gradients_are_finite(
        layers in prop::collection::vec(layer(), 1..=3),
        config in cdp_config(),
        dtype in dtype(),
    ) {
        let mut cdp = Cdp::new(config.clone()).unwrap();
        // Twice: the second evaluation has a texture-mass history (ratio ≠ 1 in general).
        for pass in 0..2 {
            let mut layers = layers.clone();
            if pass == 1 {
                for l in &mut layers {
                    l.skeleton.iter_mut().step_by(2).for_each(|v| *v *= 0.5);
                }
            }
            let p = params(&layers, dtype);
            let Some(penalty) = cdp.evaluate(&p) else {
                // No active term: every coefficient 0, or only the L1 term, which the
                // reference formula drops.
                let active = |(name, c): &(&str, f64)| *c != 0.0
                    && !(*name == "l1" && config.formula == Formula::Reference);
                prop_assert!(!config.coefficients().iter().any(active));
                return Ok(());
            };
            let value = read(penalty.total.clone())[0];
            prop_assert!(value.is_finite() && value >= 0.0, "penalty {value}");
            let grads = penalty.total.backward();
            for lp in &p {
                let gw = lp.weight.grad(&grads).map(read).unwrap_or_default();
                let gs = lp.skeleton.grad(&grads).map(read).unwrap_or_default();
                for g in [gw, gs] {
                    prop_assert!(all_finite(&g), "pass {pass}: {g:?}");
                }
            }
            cdp.commit(penalty.masses);
        }
    }

    #[test]
    fn dtc_masks_are_consistent_and_only_shrink(
        first in layer(),
        next in values(45),
        delta in prop_oneof![Just(0.0), 0.0f64..0.5],
        dtype in dtype(),
    ) {
        let shape = first.skeleton_shape();
        let n = first.skeleton.len();
        let mut dtc = ThresholdContainer::new(DtcConfig::new().with_threshold(delta)).unwrap();
        let masks = dtc.update(0, tensor(&first.skeleton, shape, dtype)).clone();
        let thresholds = read(masks.thresholds);
        prop_assert!(thresholds.iter().all(|t| *t >= 0.0), "{thresholds:?}");
        let alive = bools(masks.stripes.clone());
        let per_filter = n / shape[0];
        for (i, (&s, &a)) in first.skeleton.iter().zip(&alive).enumerate() {
            // Compare in the tensor's precision.
            let s = if dtype == DType::F32 { f64::from(s as f32) } else { s };
            let t = thresholds[i / per_filter];
            prop_assert_eq!(a, s.abs() > t, "entry {} |S| {} T {}", i, s, t);
        }
        let filters = bools(masks.alive.clone());
        for (f, &live) in filters.iter().enumerate() {
            prop_assert_eq!(live, alive[f * per_filter..(f + 1) * per_filter].iter().any(|a| *a));
        }
        // Whatever the skeleton becomes (revived entries, NaN), pruned stays pruned and masked
        // values are exactly 0.
        let mut later: Vec<f64> = next[..n].to_vec();
        later[0] = f64::NAN;
        let again = dtc.update(0, tensor(&later, shape, dtype)).clone();
        let alive2 = bools(again.stripes.clone());
        prop_assert!(alive2.iter().zip(&alive).all(|(b, a)| !b || *a));
        let masked = read(mask_stripes(tensor(&later, shape, dtype), again.stripes));
        for (v, a) in masked.iter().zip(&alive2) {
            prop_assert!(if *a { v.is_finite() } else { *v == 0.0 }, "{v} alive {a}");
        }
    }
}

/// Multiplies every 4-d parameter (the conv weights) by a factor.
struct ScaleWeights(f64);

impl ModuleMapper for ScaleWeights {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D == 4 {
            let factor = self.0;
            param.map(|t| t.mul_scalar(factor))
        } else {
            param
        }
    }
}

/// Weights so large that their squares overflow f32: `fit` refuses the step instead of handing
/// out non-finite gradients, and the pruner is unchanged.
#[test]
fn an_overflowing_penalty_is_an_error_not_a_gradient() {
    let device = Device::default().autodiff();
    let model = VggConfig::new(vec![VggLayer::Conv(4)])
        .with_input_size([4, 4])
        .init(&device)
        .unwrap()
        .map(&mut ScaleWeights(1e30));
    let mut pruner = Pruner::new(PrunerConfig::new(
        CdpConfig::new().with_weight_texture(1e-4),
        DtcConfig::new(),
    ))
    .unwrap();
    // A finite, tracked task loss that does not run the overflowing convolution.
    let skeleton = model.collect_prunable().into_vec()[0].skeleton.clone();
    let loss = skeleton.sum().mul_scalar(0.0).add_scalar(1.0);
    let err = pruner.fit(&model, loss).unwrap_err();
    assert!(
        matches!(err, PruneError::NonFinitePenalty { step: 1, .. }),
        "{err}"
    );
    assert_eq!(pruner.step(), 0);
    let state = pruner.state(&model).unwrap();
    assert!(
        state.dtc.layers.iter().all(Option::is_none),
        "the failed step left masks"
    );
}
