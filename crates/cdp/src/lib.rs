//! CDP: the multidimensional, texture-aware penalty on filter skeletons (METHOD §3).
//!
//! Per prunable layer with weight `W` and skeleton `S`, summed over layers, each term with its
//! own coefficient (0 switches it off):
//!
//! | term | formula |
//! |---|---|
//! | weight texture | `weight_texture · Σ_f sim(W_f, M)` |
//! | skeleton texture | `skeleton_texture · Σ_f sim(S_f, S̄)` |
//! | L1 | `l1 · ‖S‖₁` |
//! | L2 | `l2 · ‖S‖_F` |
//! | group | `group · sqrt(Σ_f ‖S_f‖₁²)` |
//! | texture-adaptive | `adaptive · ((T_t / T_{t-1}) · G + (T_{t-1} / T_t) · ‖S‖₁)` |
//!
//! `T` is the layer's skeleton texture mass (`texprune-texture`), `T_{t-1}` a detached snapshot
//! from the previous [`Cdp::commit`]. [`Formula::Reference`] reproduces the authors' code,
//! bugs included. The penalty is a scalar tensor in the parameters' graph: add it to the loss.
//!
//! Not here: masks and thresholds (`texprune-dtc`), layer discovery (`texprune-zoo`).

#![warn(missing_docs, clippy::missing_errors_doc)]

mod config;
mod penalty;

pub use config::{CdpConfig, CdpError, Formula};
pub use penalty::{Cdp, CdpState, LayerParams, Penalty, Term};
