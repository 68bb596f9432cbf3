//! Physical compaction (METHOD §5), one generic pass over any [`Prunable`] model: the trained,
//! masked model becomes the same type with smaller tensors and stripe-wise convs, whose output
//! equals the masked model's.
//!
//! - [`plan`]: what is kept, from the declaration and host copies of the skeletons, biases and
//!   norms (the rule is stated there): dead stripes go; dead channels go with their BatchNorm
//!   entries and their consumers' input slices where the declaration says who reads them and
//!   the channel is exactly zero; unused convs lose every stripe;
//! - the rewrite: the plan written into the model's own parameters by id — `W ← (W ⊙ S)` over
//!   the kept channels, `S ←` the 0/1 live-stripe indicator, norms and linear rows sliced — and
//!   every [`SkeletonConv2d`](crate::SkeletonConv2d) marked stripe-wise;
//! - [`stripes`]: how a marked conv executes (the live stripes per kernel position, on the host
//!   CPU kernel or with backend tensor ops).
//!
//! The model's `forward` is unchanged. A compacted model saves as a Burn record of its own type;
//! its tensor shapes differ from a freshly built model's, so to rebuild it, save the masked
//! model (`pruner.apply_masks(model)`), load that record into a fresh model and compact again:
//! compaction is a pure function of the masked weights.

pub mod plan;
mod rewrite;

pub use plan::{CompactionPlan, ConvPlan, LayerState, Wiring};
pub use texprune_kernels::{StripeLayout, StripePosition};

use crate::{ModelError, Prunable};

/// Compacts `model` as it is: stripes whose skeleton entry is zero are removed, and whatever
/// they leave exactly zero (METHOD §5). Apply the pruner's masks first (`Pruner::compact` does).
/// The result is an inference model (no autodiff) of the same type.
///
/// # Errors
/// What [`CompactionPlan::of`] returns: [`ModelError::NonFinite`] for NaN or infinite skeletons,
/// biases or norms, [`ModelError::Declaration`] for an inconsistent declaration.
pub fn compact<M: Prunable>(model: M) -> Result<M, ModelError> {
    // `valid` gives fresh running statistics: the rewrite must not touch the caller's copies.
    let model = model.valid();
    let layers = model.collect_prunable();
    let plan = CompactionPlan::of(&layers)?;
    Ok(model.map(&mut rewrite::Rewrite::new(&layers, &plan)))
}
