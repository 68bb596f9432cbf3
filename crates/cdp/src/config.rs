//! Coefficients and formula variant of the CDP penalty.

use burn::config::Config;
use serde::{Deserialize, Serialize};

/// Which formulas the penalty uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Formula {
    /// The method as the paper states it: the L1 term is added, and the group part of the
    /// texture-adaptive term is the group lasso `G = Σ_f ‖S_f‖₂`.
    #[default]
    Corrected,
    /// The authors' code as written: the L1 term is computed but never added, and
    /// `G = Σ_f sqrt((Σ|S_f|)²) = ‖S‖₁`. With `history = false` this is the code as its
    /// training script runs it (the texture-adaptive term reduces to `2 · adaptive · ‖S‖₁`).
    Reference,
}

/// Coefficients of the CDP terms (reference flag names in brackets).
#[derive(Config, Debug, PartialEq)]
pub struct CdpConfig {
    /// Weight texture term (`--var`).
    #[config(default = 0.0)]
    pub weight_texture: f64,
    /// Skeleton texture term (`--var2`).
    #[config(default = 0.0)]
    pub skeleton_texture: f64,
    /// L1 norm of the skeleton (`--l1_value`).
    #[config(default = 0.0)]
    pub l1: f64,
    /// Frobenius norm of the skeleton (`--l2_value`).
    #[config(default = 0.0)]
    pub l2: f64,
    /// Group norm `sqrt(Σ_f ‖S_f‖₁²)` (`--gl_a`).
    #[config(default = 0.0)]
    pub group: f64,
    /// Texture-adaptive term (`--prop`).
    #[config(default = 0.0)]
    pub adaptive: f64,
    /// Which formulas to use.
    #[config(default = "Formula::Corrected")]
    pub formula: Formula,
    /// Whether the texture-adaptive term uses the previous step's texture mass `T_{t-1}`;
    /// without it the ratio is 1.
    #[config(default = true)]
    pub history: bool,
}

/// A CDP configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CdpError {
    /// A coefficient is negative, NaN or infinite.
    #[error("CDP coefficient `{name}` must be finite and ≥ 0, got {value}")]
    InvalidCoefficient {
        /// The field name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A saved state does not fit the layers it is loaded for.
    #[error("CDP state holds {found} layers, the model has {expected}")]
    StateMismatch {
        /// Layers of the model.
        expected: usize,
        /// Layers in the state.
        found: usize,
    },
}

impl CdpConfig {
    /// Every one of the six terms at the same `coefficient` (the other fields at their defaults).
    pub fn every_term(coefficient: f64) -> Self {
        Self::new()
            .with_weight_texture(coefficient)
            .with_skeleton_texture(coefficient)
            .with_l1(coefficient)
            .with_l2(coefficient)
            .with_group(coefficient)
            .with_adaptive(coefficient)
    }

    /// The coefficients a pruner aiming at a cost target uses when none are given: the two
    /// texture terms and the texture-adaptive term at 1e-4, no L1, L2 or group term. Chosen by
    /// measurement (docs/budget.md): 2-epoch Fashion-MNIST runs of the reference VGG pruned to
    /// 60 % of its FLOPs gave 88.8 % test accuracy with these, 88.6 % with no penalty, 87.8 % with
    /// every term at 1e-5 and 87.6 % with every term at 1e-4 (dense: 86.8 %).
    pub fn budget_default() -> Self {
        Self::new()
            .with_weight_texture(1e-4)
            .with_skeleton_texture(1e-4)
            .with_adaptive(1e-4)
    }

    /// The coefficients with their names, in the order of the table in the crate doc.
    pub fn coefficients(&self) -> [(&'static str, f64); 6] {
        [
            ("weight_texture", self.weight_texture),
            ("skeleton_texture", self.skeleton_texture),
            ("l1", self.l1),
            ("l2", self.l2),
            ("group", self.group),
            ("adaptive", self.adaptive),
        ]
    }

    /// Checks that every coefficient is finite and non-negative.
    ///
    /// # Errors
    /// [`CdpError::InvalidCoefficient`] naming the first coefficient that is negative or not finite.
    pub fn validate(&self) -> Result<(), CdpError> {
        match self
            .coefficients()
            .into_iter()
            .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        {
            Some((name, value)) => Err(CdpError::InvalidCoefficient { name, value }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_negative_and_nan_coefficients() {
        assert!(CdpConfig::new().with_l1(1e-4).validate().is_ok());
        assert_eq!(
            CdpConfig::new().with_group(-1.0).validate(),
            Err(CdpError::InvalidCoefficient {
                name: "group",
                value: -1.0
            })
        );
        assert!(CdpConfig::new().with_adaptive(f64::NAN).validate().is_err());
        assert!(CdpConfig::new().with_l2(f64::INFINITY).validate().is_err());
    }
}
