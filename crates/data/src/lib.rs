//! Image datasets for texprune, read from their real formats, with typed errors that name the
//! file and what is wrong:
//!
//! - [`cifar10`] / [`cifar100`]: the CIFAR binary format;
//! - [`mnist`] / [`read_idx`]: the IDX format (MNIST, Fashion-MNIST), gzip or not;
//! - [`ImageFolder`]: class-per-folder JPEG/PNG (ImageNet layout), resized and centre-cropped;
//! - [`ImageBatcher`]: augmentation (pad + random crop + flip) and normalisation into
//!   `[B, C, H, W]` tensors; [`ImageSet`] and [`ImageFolder`] implement Burn's `Dataset`, the
//!   batcher Burn's `Batcher`.
//!
//! Shuffles and augmentations draw from [`SplitMix64`] seeded by the position in training
//! ([`epoch_order`], [`batch_rng`]), so a resumed run sees the same data as an uninterrupted one.

#![warn(missing_docs, clippy::missing_errors_doc)]

mod batch;
mod cifar;
mod error;
mod folder;
mod idx;
mod loader;
mod rng;
mod set;

pub use batch::{Augmentation, ImageBatch, ImageBatcher, Normalization, batch_rng, epoch_order};
pub use cifar::{Cifar100Labels, Split, cifar10, cifar100};
pub use error::DataError;
pub use folder::{ImageFolder, MAX_DECODED_BYTES, load_image};
pub use idx::{IdxArray, mnist, read_idx};
pub use loader::ForLoader;
pub use rng::SplitMix64;
pub use set::{ImageItem, ImageSet};
