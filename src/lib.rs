//! # texprune
//!
//! Texture-sensitive structured pruning for convolutional networks on Burn: the CDP penalty and
//! the DTC dynamic threshold container of Li, Wang, Wu and Kang, "Dynamic finegrained structured
//! pruning sensitive to filter texture distribution" (AI Communications, 2023).
//!
//! Add this crate as your one dependency. Build models from [`SkeletonConv2d`] (or take one from
//! [`zoo`]), implement [`Prunable`], and call [`Pruner::fit`] in your own training loop:
//!
//! ```rust,no_run
//! # use texprune::burn::{optim::{SgdConfig, Optimizer}, tensor::{Device, Int, Tensor}};
//! # use texprune::burn::nn::loss::CrossEntropyLossConfig;
//! use texprune::{Pruner, PrunerConfig, CdpConfig, Costed, DtcConfig, zoo::vgg::VggConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::default().autodiff();
//! let mut model = VggConfig::vgg11().init(&device)?;
//! let mut optim = SgdConfig::new().init();
//! let mut pruner = Pruner::new(PrunerConfig::new(
//!     CdpConfig::new().with_l1(1e-4).with_adaptive(1e-4),
//!     DtcConfig::new().with_threshold(0.01),
//! ))?;
//! # let batches: Vec<(Tensor<4>, Tensor<1, Int>)> = vec![];
//! for (images, labels) in batches {
//!     let logits = model.forward(images);
//!     let loss = CrossEntropyLossConfig::new().init(&device).forward(logits, labels);
//!     let step = pruner.fit(&model, loss)?; // + CDP penalty, backward, DTC masks
//!     model = pruner.apply_masks(optim.step(0.1, model, step.grads));
//!     println!("{}", step.summary);
//! }
//! // A smaller inference model with the same output (checked on an example), and what it saved:
//! # let example: Tensor<4> = Tensor::zeros([1, 3, 32, 32], &device);
//! let compact = pruner.compact(&model, example, |m, x| m.forward(x))?;
//! println!("{}", compact.cost([32, 32]));
//! # Ok(())
//! # }
//! ```
//!
//! To start from PyTorch weights (a `.pth` or safetensors state dict, the reference code's or
//! torchvision's names) and to write a compact model for PyTorch, see [`pytorch`].
//!
//! To train with burn-train's `Learner` instead, on one device or several (multi-device, DDP),
//! wrap the model in `learner::PrunedModel` (cargo feature `learner`).
//!
//! Cargo features: `flex` (default) and `ndarray` for the CPU, `wgpu` and `cuda` for GPUs;
//! `plots` for SVG plots of texture statistics, histories, sensitivity sweeps and run reports
//! (plotters); `learner` for the burn-train integration; `onnx` for ONNX export of any model
//! (`onnx`, burn-onnx).
//!
//! The pieces live in their own crates, re-exported here: [`texture`] (filter texture
//! statistics), [`cdp`] (the penalty), [`dtc`] (thresholds and masks), [`layer`] (the prunable
//! convolution, the [`Prunable`] declaration, compaction and cost) and [`zoo`] (the models).

#![warn(missing_docs, clippy::missing_errors_doc)]

pub use burn;
pub use texprune_cdp as cdp;
pub use texprune_data as data;
pub use texprune_dtc as dtc;
pub use texprune_layer as layer;
pub use texprune_texture as texture;
pub use texprune_zoo as zoo;

pub use texprune_cdp::{CdpConfig, CdpError, Formula};
pub use texprune_dtc::{DtcConfig, DtcError, ThresholdRule};
pub use texprune_layer::{
    Activation, CompactOptions, CostReport, Costed, LayerKind, ModelError, Prunable,
    PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig, compact, compact_unchecked, compact_with,
};
pub use texprune_zoo::{Classifier, TorchLayout};

mod error;
mod layer_texture;
mod masking;
mod pruner;
mod snapshot;

pub mod budget;
pub mod checkpoint;
pub mod history;
#[cfg(feature = "learner")]
pub mod learner;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod output_lock;
#[cfg(feature = "plots")]
pub mod plots;
pub mod pytorch;
pub mod report;
pub mod sensitivity;

pub use budget::{Phase, Quantity, Schedule, Target, ThresholdRamp};
pub use checkpoint::CheckpointError;
pub use error::PruneError;
pub use masking::apply_stripe_masks;
pub use output_lock::{LockError, OutputLock};
#[cfg(feature = "plots")]
pub use plots::PlotError;
pub use pruner::{Fit, Pruner, PrunerConfig, PrunerState, STATE_VERSION, StepSummary};
pub use pytorch::WeightsError;
pub use report::MeasureError;
pub use texprune_data::DataError;
pub use texprune_texture::DistributionError;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
