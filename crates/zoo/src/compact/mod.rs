//! Physical compaction (METHOD §5): a trained, masked model becomes a smaller inference model
//! whose output equals the masked model's.
//!
//! - dead filters go with their BatchNorm channels and the next layer's input channels, where a
//!   ReLU makes them exactly zero (see [`conv_norm`](self) for the exact rule);
//! - every conv becomes a [`StripeConv2d`] that computes only its live stripes;
//! - a residual branch whose output no longer depends on its input becomes the constant
//!   `c = bn_last(0)`, the block `relu(shortcut(x) + c)`.
//!
//! Compact models are Burn modules: they save and load as records. Their structure (which
//! stripes, which channels) is a serialisable plan: `model.plan()` gives it, `plan.init(&device)`
//! rebuilds an empty model of that structure to load a record into.

mod conv_norm;
mod host_kernel;
mod resnet;
mod stripe_conv;
mod vgg;

#[cfg(test)]
mod tests;

pub use resnet::{
    CompactBlock, CompactBlockPlan, CompactResNet, CompactResNetPlan, CompactShortcut,
};
pub use stripe_conv::{StripeConv2d, StripeConvPlan, StripePosition};
pub use vgg::{CompactVgg, CompactVggPlan};

use burn::module::Module;

use crate::{Classifier, Costed, Prunable, ZooError};

/// A model that can be compacted into a smaller model with the same output.
pub trait Compactable: Prunable + Costed {
    /// The compact inference model.
    type Compact: Module + Classifier + Costed;

    /// Compacts the model as it is: stripes whose skeleton entry is zero are removed, and
    /// whatever they leave exactly zero or constant (METHOD §5). Apply the pruner's masks first
    /// (`Pruner::compact` does).
    fn compact(&self) -> Result<Self::Compact, ZooError>;
}
