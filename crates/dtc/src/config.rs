//! The DTC configuration.

use burn::config::Config;

/// Configuration of the dynamic threshold container.
#[derive(Config, Debug, PartialEq)]
pub struct DtcConfig {
    /// Base threshold δ (the reference's `--threshold`).
    #[config(default = 0.01)]
    pub threshold: f64,
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
    pub fn validate(&self) -> Result<(), DtcError> {
        if self.threshold.is_finite() && self.threshold >= 0.0 {
            Ok(())
        } else {
            Err(DtcError::InvalidThreshold(self.threshold))
        }
    }
}
