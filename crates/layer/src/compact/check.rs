//! The compact model checked against the masked model before it is returned.
//!
//! Compaction trusts the declaration: who reads a conv's channels (`feeds`), which norm and
//! activation follow it. A declaration that does not match the model's forward (a conv declared
//! to feed a layer it does not feed, a wrong activation) can remove a channel that some layer
//! still reads, and the compact model would then compute something else, or panic on a channel
//! count. So [`compact`](super::compact) runs the model's forward once on an example, masked and
//! compact, and returns the compact model only when
//!
//! ```text
//! max |y_compact − y_masked| ≤ 1e-4 · max |y_masked|
//! ```
//!
//! (f32 sums in another order differ by ~1e-6 relative). A forward that panics is caught and
//! counts as a mismatch. On a mismatch it finds the declarations at fault: removing dead stripes
//! alone is exact for any declaration (a stripe is local to its conv), so each conv whose
//! channels the plan removes is tried alone — its `feeds` kept, every other conv's cleared —
//! and those whose compaction alone fails are named in the error.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use burn::tensor::Tensor;

use super::plan::CompactionPlan;
use super::rewrite::Rewrite;
use crate::{ModelError, Prunable, PrunableLayers};

/// Largest `max |y_compact − y_masked| / max |y_masked|` a compact model may show.
pub const TOLERANCE: f32 = 1e-4;

/// The compact model of `masked` under `plan` of `layers` (the declaration of `masked`).
pub(crate) fn rewrite<M: Prunable>(
    masked: &M,
    layers: &PrunableLayers,
    plan: &CompactionPlan,
) -> M {
    // `valid` gives fresh running statistics: the rewrite must not touch the caller's copies.
    masked.valid().map(&mut Rewrite::new(layers, plan))
}

/// What the compact model is compared against: the masked model's output on the example.
pub(crate) struct Reference<const DI: usize, const DO: usize> {
    example: Tensor<DI>,
    dims: [usize; DO],
    values: Vec<f32>,
    scale: f32,
}

impl<const DI: usize, const DO: usize> Reference<DI, DO> {
    /// Runs `forward` on `masked` (an inference model) and `example`.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the forward panics on the example or gives NaN or infinite
    /// values.
    pub fn new<M>(
        masked: &M,
        example: Tensor<DI>,
        forward: &impl Fn(&M, Tensor<DI>) -> Tensor<DO>,
    ) -> Result<Self, ModelError> {
        let example = example.without_autodiff();
        let input_error = |reason: String| ModelError::Input {
            found: example.dims().to_vec(),
            reason,
        };
        let output = quietly(|| forward(masked, example.clone()))
            .map_err(|m| input_error(format!("the model's forward panicked on it: {m}")))?;
        let dims = output.dims();
        let values: Vec<f32> = output.into_data().iter::<f32>().collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(input_error(
                "the model's output on it holds NaN or infinite values".into(),
            ));
        }
        let scale = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        Ok(Self {
            example,
            dims,
            values,
            scale,
        })
    }

    /// `Err(what differs)` when `compact`'s output is not the reference's.
    pub fn check<M>(
        &self,
        compact: &M,
        forward: &impl Fn(&M, Tensor<DI>) -> Tensor<DO>,
    ) -> Result<(), String> {
        let output = quietly(|| forward(compact, self.example.clone()))
            .map_err(|m| format!("panics in its forward ({m})"))?;
        if output.dims() != self.dims {
            return Err(format!(
                "gives an output of shape {:?} where the masked model's is {:?}",
                output.dims(),
                self.dims
            ));
        }
        let diff = output
            .into_data()
            .iter::<f32>()
            .zip(&self.values)
            .map(|(a, b)| (a - b).abs())
            // A NaN (a NaN or infinite output) counts as an infinite difference.
            .fold(
                0.0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        if diff > TOLERANCE * self.scale {
            return Err(format!(
                "differs from the masked model by {:.2e} relative (max |Δ| {diff:.3e}, \
                 max |y| {:.3e})",
                diff / self.scale.max(f32::MIN_POSITIVE),
                self.scale
            ));
        }
        Ok(())
    }
}

/// The declared convs whose channel removal alone makes the compact model differ from
/// `reference`: each conv that declares its readers is tried with every other conv's readers
/// cleared (so only its own channels can go).
pub(crate) fn culprits<M: Prunable, const DI: usize, const DO: usize>(
    masked: &M,
    layers: &PrunableLayers,
    reference: &Reference<DI, DO>,
    forward: &impl Fn(&M, Tensor<DI>) -> Tensor<DO>,
) -> Vec<String> {
    layers
        .iter()
        .enumerate()
        .filter(|(index, _)| layers.declares_readers(*index))
        .filter(|(index, _)| {
            let alone = layers.with_readers_of(*index);
            // A plan that cannot be made alone says nothing about this conv.
            CompactionPlan::of(&alone).is_ok_and(|plan| {
                reference
                    .check(&rewrite(masked, &alone, &plan), forward)
                    .is_err()
            })
        })
        .map(|(_, layer)| layer.name.clone())
        .collect()
}

thread_local! {
    /// Whether a panic on this thread is caught by [`quietly`] and must not be printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// `f()`, or the message of the panic it raised (one line); the panic is not printed. Used where
/// a user's forward pass runs on a model it may not fit (the compaction check, the ONNX export).
///
/// # Errors
/// The panic's message when `f` panics.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| panic_message(payload.as_ref()))
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    // Burn's shape errors span several lines.
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}
