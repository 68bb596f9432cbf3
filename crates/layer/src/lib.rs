//! The prunable convolution and everything that works on it, for any model (METHOD §1, §5, §6).
//!
//! - [`SkeletonConv2d`]: a convolution with a learnable per-filter skeleton `S [Cout, kh, kw]`,
//!   forward `conv2d(x, W ⊙ S[:, None])`, and its stripe-wise execution once compacted;
//! - [`Prunable`] / [`PrunableLayers`]: a model lists its prunable layers, which of them are
//!   thresholded, which BatchNorm each one drives, and who reads its channels — a few lines per
//!   model, no name matching;
//! - [`compact()`]: one generic pass that compacts any [`Prunable`] model into the same type,
//!   with stripe-wise convs and dead channels removed, and the same output (METHOD §5);
//! - [`CostReport`]: params, FLOPs and MACs per layer (METHOD §6), for any declared model
//!   ([`CostReport::of_model`]), or built layer by layer by a model's own [`Costed`];
//! - [`fold`]: a BatchNorm folded into the conv before it, in one place.
//!
//! The CPU kernels it runs on are `texprune-kernels`'; the models built from it are the zoo's.

#![warn(missing_docs, clippy::missing_errors_doc)]

mod activation;
mod capture;
pub mod compact;
mod compact_cost;
mod cost;
mod error;
pub mod fold;
mod inventory;
mod prunable;
mod skeleton_conv;
mod spec;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use activation::Activation;
pub use capture::{ExportForm, is_capture, with_export_form};
pub use compact::{CompactOptions, compact, compact_unchecked, compact_with};
pub use cost::{ConvShape, CostReport, Costed, LayerCost, LayerKind, PlannedLayers, Shapes, human};
pub use error::ModelError;
pub use inventory::{UndeclaredLayer, undeclared};
pub use prunable::{CoupledNorm, Prunable, PrunableLayer, PrunableLayers, PrunableLinear};
pub use skeleton_conv::{SkeletonConv2d, SkeletonConv2dConfig};
pub use spec::ConvSpec;
