//! The prunable convolution, the trait through which models declare their prunable layers, and
//! the model zoo built from them (METHOD §1, §4).
//!
//! - [`SkeletonConv2d`]: a convolution with a learnable per-filter skeleton `S [Cout, kh, kw]`,
//!   forward `conv2d(x, W ⊙ S[:, None])`;
//! - [`Prunable`] / [`PrunableLayers`]: a model lists its prunable layers, which of them are
//!   thresholded, which BatchNorm each one drives, and who reads its channels — a few lines per
//!   model, no name matching;
//! - [`compact()`]: one generic pass that compacts any [`Prunable`] model into the same type,
//!   with stripe-wise convs and dead channels removed, and the same output (METHOD §5);
//! - [`CostReport`]: params, FLOPs and MACs per layer (METHOD §6), for any declared model
//!   ([`CostReport::of_model`]) or in the reference's convention for the zoo ([`Costed`]);
//! - [`TorchLayout`]: the PyTorch name of each module (and the zoo's [`Architecture`]), for
//!   reading PyTorch weights and writing compact models for PyTorch;
//! - [`vgg`] and [`resnet`]: CIFAR VGG, CIFAR ResNet (as in the reference code) and ImageNet
//!   ResNet-18/34/50/101/152, declaring the reference's thresholding and coupling rules.
//!
//! The zoo knows layers and couplings, not the pruner.

#![warn(missing_docs, clippy::missing_errors_doc)]

mod classifier;
pub mod compact;
mod cost;
mod error;
mod prunable;
pub mod resnet;
mod skeleton_conv;
mod torch_layout;
pub mod vgg;

pub use classifier::Classifier;
pub use compact::compact;
pub use cost::{CostReport, Costed, LayerCost, LayerKind, human};
pub use error::ZooError;
pub use prunable::{
    Activation, CoupledNorm, Prunable, PrunableLayer, PrunableLayers, PrunableLinear,
};
pub use skeleton_conv::{SkeletonConv2d, SkeletonConv2dConfig};
pub use torch_layout::{Architecture, TorchLayout};
