//! The DTC configuration.

use burn::config::Config;
use serde::{Deserialize, Serialize};

/// Configuration of the dynamic threshold container.
#[derive(Config, Debug, PartialEq)]
pub struct DtcConfig {
    /// Base threshold δ (the reference's `--threshold`).
    #[config(default = 0.01)]
    pub threshold: f64,
    /// How δ becomes a mask: DTC's per-filter thresholds, or a baseline's rule.
    #[config(default = "ThresholdRule::PerFilter")]
    pub rule: ThresholdRule,
}

/// How the base threshold δ becomes a stripe mask.
///
/// [`ThresholdRule::PerFilter`] is the method (METHOD §4); the other two are the baselines it is
/// measured against, through the same masks, controller and compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdRule {
    /// DTC: `T_f = δ · mean_g(‖S_g‖₁) / ‖S_f‖₁`, `mask = |S[f, i, j]| > T_f` — one threshold
    /// per filter, larger for weak filters.
    #[default]
    PerFilter,
    /// SWP (Meng et al., "Pruning Filter in Filter", NeurIPS 2020): one threshold for every
    /// stripe of every layer, `mask = |S[f, i, j]| > δ`.
    Global,
    /// L1-norm filter pruning (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017):
    /// in each layer the `k = min(⌊δ · Cout⌋, Cout − 1)` filters of smallest
    /// `‖W_f ⊙ S_f‖₁ = Σ_{c,i,j} |W[f, c, i, j] · S[f, i, j]|` lose every stripe (ties: the
    /// lower index first); δ is the fraction of filters removed per layer.
    FilterNorm,
}

/// A DTC configuration or state that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DtcError {
    /// δ is negative, NaN or infinite.
    #[error("DTC threshold must be finite and ≥ 0, got {0}")]
    InvalidThreshold(f64),
    /// A saved state does not fit the layers it is loaded for.
    #[error("DTC state for layer {layer}: expected skeleton shape {expected:?}, found {found:?}")]
    StateMismatch {
        /// Index of the layer.
        layer: usize,
        /// Shape of the model's skeleton.
        expected: Vec<usize>,
        /// Shape in the state.
        found: Vec<usize>,
    },
}

impl DtcConfig {
    /// Checks that δ is finite and non-negative.
    ///
    /// # Errors
    /// [`DtcError::InvalidThreshold`] when δ is negative or not finite.
    pub fn validate(&self) -> Result<(), DtcError> {
        if self.threshold.is_finite() && self.threshold >= 0.0 {
            Ok(())
        } else {
            Err(DtcError::InvalidThreshold(self.threshold))
        }
    }
}
