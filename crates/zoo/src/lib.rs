//! The model zoo, built from texprune's prunable layer (`texprune-layer`): CIFAR VGG, CIFAR
//! ResNet (as in the reference code), ImageNet ResNet-18/34/50/101/152 and MobileNetV2
//! (torchvision's, ImageNet or CIFAR strides, any `width_mult`), each declaring the
//! reference's thresholding and coupling rules (METHOD §4) and its cost in the reference's
//! convention.
//!
//! - [`vgg`], [`resnet`] and [`mobilenet`]: the models;
//! - [`Classifier`]: logits and an input check, for the evaluation and training helpers;
//! - [`TorchLayout`]: the PyTorch name of each module (and the zoo's [`Architecture`]), for
//!   reading PyTorch weights and writing compact models for PyTorch.
//!
//! The zoo knows its models, not the pruner.

#![warn(missing_docs, clippy::missing_errors_doc)]

mod classifier;
pub mod mobilenet;
pub mod resnet;
mod torch_layout;
pub mod vgg;

pub use classifier::Classifier;
pub use torch_layout::{Architecture, TorchLayout};
