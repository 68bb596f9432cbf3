//! Speed measurement: random stripe masks at a chosen removal rate (what DTC leaves, for timing
//! compaction without training a model first) and medians of timed runs.

use std::time::Instant;

use texprune::Prunable;
use texprune::burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use texprune::data::SplitMix64;

/// `model` with each stripe of every thresholded conv removed (its skeleton entry set to 0) with
/// probability `removed`, drawn from a SplitMix64 stream seeded with `seed`, and the BatchNorm
/// channels coupled to filters left without a live stripe zeroed, as DTC leaves them
/// ([`texprune::apply_stripe_masks`]).
pub fn random_stripe_masks<M: Prunable>(model: M, removed: f64, seed: u64) -> M {
    let mut rng = SplitMix64(seed);
    let masks: Vec<(String, Tensor<3, Bool>)> = model
        .collect_prunable()
        .iter()
        .filter(|l| l.thresholded)
        .map(|layer| {
            let [cout, kh, kw] = layer.skeleton.dims();
            let keep: Vec<bool> = (0..cout * kh * kw)
                .map(|_| !rng.chance(removed as f32))
                .collect();
            let data = TensorData::new(keep, [cout, kh, kw]);
            let stripes = Tensor::from_data(data, &layer.skeleton.device());
            (layer.name.clone(), stripes)
        })
        .collect();
    texprune::apply_stripe_masks(model, masks).expect("masks shaped from the model's own layers")
}

/// A fixed batch for timing: `n` images `[n, C, H, W]` uniform in [-1, 1) and labels in
/// `0..classes`, from a SplitMix64 stream seeded with `seed`.
pub fn synthetic_batch(
    n: usize,
    [c, h, w]: [usize; 3],
    classes: usize,
    seed: u64,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let mut rng = SplitMix64(seed);
    let pixels: Vec<f32> = (0..n * c * h * w).map(|_| rng.range(-1.0, 1.0)).collect();
    let labels: Vec<i64> = (0..n).map(|_| rng.below(classes) as i64).collect();
    (
        Tensor::from_data(TensorData::new(pixels, [n, c, h, w]), device),
        Tensor::from_data(TensorData::new(labels, [n]), device),
    )
}

/// Median wall time of `runs` calls of `f` (after one warm-up call), in milliseconds. `f` must
/// wait for its result (read it back) so that the time covers the work.
pub fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs.max(1))
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// The median of `values` (the upper one of an even count; NaN for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use texprune::burn::tensor::Device;
    use texprune::zoo::resnet::ResNetConfig;

    use super::*;

    #[test]
    fn random_masks_remove_the_asked_fraction_and_zero_dead_channels() {
        let model = ResNetConfig::cifar(8).init(&Device::default()).unwrap();
        let masked = random_stripe_masks(model, 0.75, 3);
        let (mut zeros, mut total) = (0usize, 0usize);
        for layer in masked.collect_prunable().iter().filter(|l| l.thresholded) {
            let values: Vec<f32> = layer.skeleton.clone().into_data().iter::<f32>().collect();
            zeros += values.iter().filter(|v| **v == 0.0).count();
            total += values.len();
        }
        let fraction = zeros as f64 / total as f64;
        assert!((fraction - 0.75).abs() < 0.03, "{fraction}");
        // Same seed, same masks.
        let again = random_stripe_masks(
            ResNetConfig::cifar(8).init(&Device::default()).unwrap(),
            0.75,
            3,
        );
        let skeletons = |m: &texprune::zoo::resnet::ResNet| -> Vec<f32> {
            m.collect_prunable()
                .iter()
                .flat_map(|l| {
                    l.skeleton
                        .clone()
                        .equal_elem(0.0)
                        .float()
                        .into_data()
                        .iter::<f32>()
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(skeletons(&masked), skeletons(&again));
    }

    #[test]
    fn median_of_values_and_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
        let mut calls = 0;
        let ms = median_ms(4, || calls += 1);
        assert_eq!(calls, 5);
        assert!(ms >= 0.0);
    }
}
