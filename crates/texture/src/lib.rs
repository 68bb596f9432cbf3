//! Filter texture distribution statistics (METHOD §2).
//!
//! The *texture* of a filter is its angular similarity to the mean filter of its layer,
//! `sim(a, b) = 1 - acos(cos(a, b)) / π ∈ [0, 1]`. Per layer, the set of per-filter similarities
//! is the layer's *texture distribution* and its sum the *texture mass* `T = Σ_f sim_f`.
//!
//! Two flavours are computed, as differentiable tensors on any Burn backend:
//! - [`WeightTexture`]: the similarity of each conv filter `W_f` to the reference's channel-mean
//!   filter `M` (mean of `W[:, c, :, :]` over filters *and* spatial positions);
//! - [`SkeletonTexture`]: the similarity of each filter skeleton row `S_f` to the mean row `S̄`.
//!
//! [`Distribution`] summarises such a set of numbers for reports (quantiles, histogram).
//!
//! This crate knows nothing of penalties or masks; `texprune-cdp` builds the penalty on it.

#![warn(missing_docs, clippy::missing_errors_doc)]

mod distribution;
mod numerics;
mod skeleton;
mod weight;

pub use distribution::{Distribution, DistributionError};
pub use numerics::{angular_similarity, cos_clamp_epsilon, safe_sqrt};
pub use skeleton::SkeletonTexture;
pub use weight::WeightTexture;

#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::{DType, Device, Tensor, TensorData};

    pub fn device() -> Device {
        Device::default()
    }

    /// An f64 tensor from a flat vector, so tests compare against float64 arithmetic.
    pub fn tensor<const D: usize>(values: Vec<f64>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), (&device(), DType::F64))
    }

    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().iter::<f64>().collect()
    }
}
