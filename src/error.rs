//! The facade's error type.

use texprune_cdp::CdpError;
use texprune_dtc::DtcError;
use texprune_layer::{ModelError, PrunableLayer};

/// Everything that can go wrong when pruning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PruneError {
    /// The CDP configuration or state is invalid.
    #[error(transparent)]
    Cdp(#[from] CdpError),
    /// The DTC configuration or state is invalid.
    #[error(transparent)]
    Dtc(#[from] DtcError),
    /// A model or layer that cannot be built, declared, compacted or costed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A layer name (exempt, scaled or masked) that the model does not declare.
    #[error("`{name}` is not a prunable layer of the model (it has: {known})")]
    UnknownLayer {
        /// The name given.
        name: String,
        /// The model's layer names, comma-separated.
        known: String,
    },
    /// A stripe mask whose shape is not its layer's skeleton's.
    #[error("the mask for `{name}` has shape {found:?}, the layer's skeleton {expected:?}")]
    MaskShape {
        /// The layer.
        name: String,
        /// The skeleton's shape `[Cout, kh, kw]`.
        expected: [usize; 3],
        /// The mask's shape.
        found: [usize; 3],
    },
    /// The model declares no prunable layer (or all are exempt).
    #[error("the model declares no prunable layer that is not exempt")]
    NoLayers,
    /// The loss does not carry gradients.
    #[error(
        "the loss is not tracked by autodiff: build the model on an autodiff device (`device.autodiff()`)"
    )]
    NotAutodiff,
    /// The task loss is NaN or infinite.
    #[error("the task loss is not finite at step {step}: {value}")]
    NonFiniteLoss {
        /// The pruner's step counter.
        step: u64,
        /// The loss value.
        value: f64,
    },
    /// The CDP penalty is NaN or infinite (weights or skeletons so large that their squares
    /// overflow the float type).
    #[error("the CDP penalty is not finite at step {step}: {value}")]
    NonFinitePenalty {
        /// The pruner's step counter.
        step: u64,
        /// The penalty value.
        value: f64,
    },
    /// The target or the schedule is invalid, or the model cannot count the target's quantity.
    #[error("pruning budget: {0}")]
    Budget(String),
    /// A saved pruner state does not fit this pruner or model.
    #[error("pruner state does not fit: {0}")]
    StateMismatch(String),
    /// Data-parallel replicas hold different masks or skeletons after the same step.
    #[error(
        "replicas diverged at step {step}: mask/skeleton fingerprint {found:016x}, another replica \
         has {expected:016x}"
    )]
    ReplicaDivergence {
        /// The step after which the fingerprints were taken.
        step: u64,
        /// The fingerprint the first replica recorded.
        expected: u64,
        /// This replica's fingerprint.
        found: u64,
    },
}

impl PruneError {
    /// [`PruneError::UnknownLayer`] for `name`, listing the names of `layers`.
    pub(crate) fn unknown_layer<'a>(
        name: String,
        layers: impl IntoIterator<Item = &'a PrunableLayer>,
    ) -> Self {
        let known: Vec<&str> = layers.into_iter().map(|l| l.name.as_str()).collect();
        Self::UnknownLayer {
            name,
            known: known.join(", "),
        }
    }
}
