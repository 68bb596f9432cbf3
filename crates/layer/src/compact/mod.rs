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
//! - [`check`]: the compact model's output on an example compared with the masked model's
//!   before it is returned, and the declarations at fault named when they differ;
//! - [`stripes`]: how a marked conv executes (the live stripes per kernel position, on the host
//!   CPU kernel or with backend tensor ops).
//!
//! The model's `forward` is unchanged. A compacted model saves as a Burn record of its own type;
//! its tensor shapes differ from a freshly built model's, so to rebuild it, save the masked
//! model (`pruner.apply_masks(model)`), load that record into a fresh model and compact again:
//! compaction is a pure function of the masked weights.

pub mod check;
pub mod plan;
mod rewrite;

pub use plan::{CompactionPlan, ConvPlan, LayerState, LinearPlan, Wiring};
pub use texprune_kernels::{StripeLayout, StripePosition};

use burn::tensor::Tensor;

use crate::{ModelError, Prunable};

/// Compacts `model` as it is — stripes whose skeleton entry is zero are removed, and whatever
/// they leave exactly zero (METHOD §5) — and checks the result: `forward` runs on `example`
/// through `model` and through the compact model, and the compact model is returned only when
/// the two outputs agree ([`check`]). Apply the pruner's masks first (`Pruner::compact` does).
/// The result is an inference model (no autodiff) of the same type; `model` is not changed.
///
/// `example` is any input the model takes (one image at the training size is enough); on an
/// autodiff device it is used without autodiff.
///
/// ```text
/// let compact = compact(&model, images, |m: &Net, x| m.forward(x))?;
/// ```
///
/// # Errors
/// [`ModelError::NonFinite`] for NaN or infinite skeletons, biases or norms,
/// [`ModelError::Declaration`] for a declaration inconsistent in itself,
/// [`ModelError::Input`] for an example the model's forward panics on,
/// [`ModelError::Mismatch`] for a compact model that does not compute what `model` computes (a
/// declaration that does not match the model's forward), naming the declarations at fault.
pub fn compact<M: Prunable, const DI: usize, const DO: usize>(
    model: &M,
    example: Tensor<DI>,
    forward: impl Fn(&M, Tensor<DI>) -> Tensor<DO>,
) -> Result<M, ModelError> {
    compact_with(model, example, forward, CompactOptions::default())
}

/// How [`compact_with`] compacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOptions {
    /// Each conv whose channels can go keeps a multiple of this many (at most all of them):
    /// 1 (the default) removes every channel it can; 16 suits ONNX Runtime on AVX-512 CPUs
    /// (its NCHWc convolutions need channel counts that are multiples of 16; 8 with AVX2),
    /// where a compact model with odd channel counts falls back to slower convolutions
    /// (docs/deployment.md). The channels kept back are exactly zero: the output is the same.
    pub channel_multiple: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            channel_multiple: 1,
        }
    }
}

impl CompactOptions {
    /// These options with kept channel counts rounded up to multiples of `multiple` (0 counts
    /// as 1).
    #[must_use]
    pub fn with_channel_multiple(mut self, multiple: usize) -> Self {
        self.channel_multiple = multiple.max(1);
        self
    }
}

/// [`compact`] with `options` (kept channel counts rounded to a multiple, for export).
///
/// # Errors
/// As [`compact`].
pub fn compact_with<M: Prunable, const DI: usize, const DO: usize>(
    model: &M,
    example: Tensor<DI>,
    forward: impl Fn(&M, Tensor<DI>) -> Tensor<DO>,
    options: CompactOptions,
) -> Result<M, ModelError> {
    let masked = model.valid();
    let reference = check::Reference::new(&masked, example, &forward)?;
    let layers = masked.collect_prunable();
    let plan = CompactionPlan::rounded(&layers, options.channel_multiple)?;
    let compact = check::rewrite(&masked, &layers, &plan);
    match reference.check(&compact, &forward) {
        Ok(()) => Ok(compact),
        Err(found) => Err(ModelError::Mismatch {
            found,
            layers: check::culprits(&masked, &layers, &reference, &forward),
        }),
    }
}

/// [`compact`] without the check: exact when the declaration matches the model's forward (the
/// zoo's models, a declaration tested once with [`compact`]); a declaration that does not can
/// give a model that computes something else or panics. For benchmarks and tools that compare
/// the outputs themselves.
///
/// # Errors
/// What [`CompactionPlan::of`] returns: [`ModelError::NonFinite`] for NaN or infinite skeletons,
/// biases or norms, [`ModelError::Declaration`] for an inconsistent declaration.
pub fn compact_unchecked<M: Prunable>(model: M) -> Result<M, ModelError> {
    let layers = model.collect_prunable();
    let plan = CompactionPlan::of(&layers)?;
    Ok(check::rewrite(&model, &layers, &plan))
}
