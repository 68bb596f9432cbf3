//! Per-thread scratch space for the kernels' products and windows, reused across calls:
//! allocating them afresh cost page faults and zeroing on every image.

use std::cell::Cell;

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// This thread's scratch buffer, taken out of the thread-local slot for the caller's use and
/// put back when dropped. A guard rather than a closure, so that the work on it is compiled in
/// the caller's body, with the caller's vector instructions (see the stripe-wise kernel's
/// per-instruction-set paths).
pub struct Scratch(pub Vec<f32>);

impl Scratch {
    /// At least `len` floats (contents unspecified).
    #[inline(always)]
    #[must_use]
    pub fn take(len: usize) -> Self {
        let mut buffer = SCRATCH.take();
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        Self(buffer)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH.set(std::mem::take(&mut self.0));
    }
}
