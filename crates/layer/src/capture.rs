//! Whether a forward pass is being recorded for an ONNX export (Burn's capture device), and
//! how a recorded stripe-wise conv is written ([`ExportForm`]). The layers that write
//! themselves differently while recorded ask here: the prunable conv (standard convolutions
//! with constant weights) and the activations (forms made of operations the exporter lowers).

use std::cell::Cell;

use burn::tensor::{Device, Tensor};

/// How a stripe-wise (compacted) conv is written to ONNX. Both are exact; docs/deployment.md
/// has them timed in ONNX Runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportForm {
    /// One `Conv` over the live positions' bounding box, dead stripes as zeros (dynamic batch).
    #[default]
    BoundingBox,
    /// One 1×1 `Conv` per live kernel position on a shifted input, summed (static batch).
    Stripes,
}

thread_local! {
    static FORM: Cell<ExportForm> = const { Cell::new(ExportForm::BoundingBox) };
}

/// Runs `record` with stripe-wise convs recorded in `form` on this thread, then restores the
/// previous form (also when `record` panics).
pub fn with_export_form<R>(form: ExportForm, record: impl FnOnce() -> R) -> R {
    struct Restore(ExportForm);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORM.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(FORM.with(|f| f.replace(form)));
    record()
}

/// Whether `device` records operations for an export instead of running them.
#[must_use]
pub fn is_capture(device: &Device) -> bool {
    #[cfg(feature = "onnx")]
    {
        matches!(
            device.as_dispatch(),
            burn::backend::DispatchDevice::Capture(_)
        )
    }
    #[cfg(not(feature = "onnx"))]
    {
        let _ = device;
        false
    }
}

/// Whether `x` is being recorded for an export; without the `onnx` feature, false without
/// asking for its device (the layers' forward passes ask on every call).
pub(crate) fn is_recorded<const D: usize>(x: &Tensor<D>) -> bool {
    cfg!(feature = "onnx") && is_capture(&x.device())
}

/// The form stripe-wise convs are recorded in on this thread ([`with_export_form`]).
pub(crate) fn export_form() -> ExportForm {
    FORM.with(Cell::get)
}
