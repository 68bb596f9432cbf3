//! DTC: the dynamic threshold container (METHOD §4).
//!
//! Every training step, for each thresholded skeleton `S [Cout, kh, kw]` with base threshold δ:
//! 1. `L_f = ‖S_f‖₁`, `T_f = δ · mean_g(L_g) / L_f` — one threshold per filter, larger for weak
//!    filters; `L_f = 0` gives `T_f = +∞` (the reference's NaN for an all-zero layer is `+∞` here);
//! 2. `mask[f, i, j] = |S[f, i, j]| > T_f` (strict), and-ed with the previous mask so a pruned
//!    stripe stays pruned;
//! 3. `alive_f = any(mask[f])`, the mask of the BatchNorm channels coupled to the layer.
//!
//! Masks are applied with `mask_fill`, so a NaN in a masked gradient entry never survives
//! (the reference multiplies by 0 and keeps it).
//!
//! The same container applies the baselines' rules ([`ThresholdRule`]): SWP's one global
//! threshold and L1-norm filter pruning's per-layer fraction of smallest filters.
//!
//! This crate stands alone: norms, thresholds and masks on plain tensors. Which parameters they
//! apply to is the facade's business.

#![warn(missing_docs, clippy::missing_errors_doc)]

mod config;
mod container;
mod coupling;
mod masks;

pub use config::{DtcConfig, DtcError, ThresholdRule};
pub use container::{DtcState, LayerMasks, LayerValues, ThresholdContainer};
pub use coupling::{couple_groups, filter_strengths};
pub use masks::{
    alive_filters, filter_norms, filter_thresholds, global_thresholds, mask_stripes,
    skeleton_norms, smallest_norm_thresholds, stripe_mask,
};

#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::{Bool, DType, Device, Tensor, TensorData};

    pub fn tensor<const D: usize>(values: Vec<f64>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(
            TensorData::new(values, shape),
            (&Device::default(), DType::F64),
        )
    }

    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().iter::<f64>().collect()
    }

    pub fn bools<const D: usize>(t: Tensor<D, Bool>) -> Vec<bool> {
        t.into_data().iter::<bool>().collect()
    }
}
