//! Random layers for tests (cargo feature `testing`): weights, skeletons with dead stripes,
//! filters or whole layers, BatchNorm statistics as DTC leaves them, and inputs, all drawn from
//! a seeded [`SplitMix64`] so that every run draws the same values. The compaction tests of this
//! crate and of the zoo build their random models from these.

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor, TensorData};
pub use texprune_data::SplitMix64;

use crate::SkeletonConv2d;

/// A tensor of `shape` holding `values`.
///
/// # Panics
/// If `values` does not have `shape`'s length.
pub fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// How a random mask is drawn.
#[derive(Debug, Clone, Copy)]
pub struct Masking {
    /// Probability that a stripe is dead.
    pub stripe: f32,
    /// Probability that a filter is dead.
    pub filter: f32,
    /// Probability that the whole layer is dead.
    pub layer: f32,
}

/// Three maskings from light to heavy, each with some dead stripes, filters and layers (the
/// last with no dead layer).
pub const MASKINGS: [Masking; 3] = [
    Masking {
        stripe: 0.5,
        filter: 0.2,
        layer: 0.1,
    },
    Masking {
        stripe: 0.8,
        filter: 0.4,
        layer: 0.25,
    },
    Masking {
        stripe: 0.2,
        filter: 0.05,
        layer: 0.0,
    },
];

/// Random weight (uniform in `±√(3 / fan-in)`) and a skeleton with random dead stripes, filters
/// or the whole layer (live entries `±[0.5, 1.5)`); returns which filters are dead.
pub fn randomize_conv(
    conv: &mut SkeletonConv2d,
    masking: Masking,
    rng: &mut SplitMix64,
) -> Vec<bool> {
    let device = conv.weight.val().device();
    let [cout, cin, kh, kw] = conv.weight_dims();
    let bound = (3.0 / (cin * kh * kw) as f32).sqrt();
    let weight = (0..cout * cin * kh * kw)
        .map(|_| rng.range(-bound, bound))
        .collect();
    let layer_dead = rng.chance(masking.layer);
    let mut dead = vec![false; cout];
    let mut skeleton = Vec::with_capacity(cout * kh * kw);
    for d in dead.iter_mut() {
        let filter_dead = layer_dead || rng.chance(masking.filter);
        let row: Vec<f32> = (0..kh * kw)
            .map(|_| {
                if filter_dead || rng.chance(masking.stripe) {
                    0.0
                } else {
                    rng.range(0.5, 1.5) * if rng.chance(0.5) { -1.0 } else { 1.0 }
                }
            })
            .collect();
        *d = row.iter().all(|v| *v == 0.0);
        skeleton.extend(row);
    }
    conv.weight = Param::from_tensor(tensor(weight, [cout, cin, kh, kw], &device));
    conv.skeleton = Param::from_tensor(tensor(skeleton, [cout, kh, kw], &device));
    dead
}

/// Random `γ ∈ [0.5, 1.5)`, `β, μ ∈ [−0.5, 0.5)`, `σ² ∈ [0.5, 2)`; the channels in `zeroed` get
/// `γ = β = 0`, as DTC leaves a coupled BatchNorm of dead filters.
pub fn randomize_norm(norm: &mut BatchNorm, zeroed: &[bool], rng: &mut SplitMix64) {
    let device = norm.gamma.val().device();
    let [c] = norm.gamma.dims();
    let mut draw = |lo, hi| (0..c).map(|_| rng.range(lo, hi)).collect::<Vec<_>>();
    let mut gamma = draw(0.5, 1.5);
    let mut beta = draw(-0.5, 0.5);
    let mean = draw(-0.5, 0.5);
    let var = draw(0.5, 2.0);
    for (f, _) in zeroed.iter().enumerate().filter(|(_, z)| **z) {
        (gamma[f], beta[f]) = (0.0, 0.0);
    }
    norm.gamma = Param::from_tensor(tensor(gamma, [c], &device));
    norm.beta = Param::from_tensor(tensor(beta, [c], &device));
    norm.running_mean = RunningState::new(tensor(mean, [c], &device));
    norm.running_var = RunningState::new(tensor(var, [c], &device));
}

/// An input of `shape`, uniform in `[−2, 2)`.
pub fn random_input(shape: [usize; 4], rng: &mut SplitMix64, device: &Device) -> Tensor<4> {
    let n = shape.iter().product();
    tensor(
        (0..n).map(|_| rng.range(-2.0, 2.0)).collect(),
        shape,
        device,
    )
}
