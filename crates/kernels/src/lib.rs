//! The CPU kernels of texprune, on host `f32` buffers in NCHW order. They know Burn's tensors
//! and nothing of texprune's layers: callers describe a convolution by its [`Geometry`] and, for
//! the stripe-wise kernel, its [`StripeLayout`].
//!
//! - [`stripe_conv`]: the stripe-wise convolution of a compacted layer (METHOD §5), one GEMM per
//!   group of images over every live stripe, with the bias, a folded BatchNorm, a residual and a
//!   ReLU fused into its output pass ([`Epilogue`]);
//! - [`train_conv`] and [`train_norm`] (cargo feature `flex`): the dense convolution and the
//!   BatchNorm of training on `Autodiff<Flex>`, each with its own backward pass;
//! - [`gemm`]: the matrix products they share; [`pool`]: 2×2 max pooling;
//! - [`geometry`]: the one description of a convolution's shapes; [`values`]: a tensor's values
//!   on the host, borrowed where the backend allows.

#![warn(missing_docs)]

#[cfg(feature = "flex")]
mod flex;
pub mod gemm;
pub mod geometry;
pub mod layout;
pub mod pool;
mod scratch;
pub mod stripe_conv;
#[cfg(feature = "flex")]
pub mod train_conv;
#[cfg(feature = "flex")]
pub mod train_norm;
pub mod values;

pub use geometry::{Geometry, output_size};
pub use layout::{StripeLayout, StripePosition};
pub use scratch::Scratch;
pub use stripe_conv::{Epilogue, stripe_conv};
pub use values::{runs_on_host, with_values};
