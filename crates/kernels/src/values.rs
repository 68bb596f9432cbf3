//! Reading a CPU tensor's `f32` values in place, for the host kernels, and which tensors they
//! serve.
//!
//! On `flex`, Burn's default CPU backend, the tensor's own buffer is borrowed through
//! [`Tensor::try_into_primitive`] (Burn's backend-extension API): no copy, even when the tensor
//! is shared, as a residual block's input is with its identity shortcut. Elsewhere the values
//! are read through [`Tensor::into_data`], which copies when the tensor is shared.

use burn::tensor::{Device, Tensor};

/// Runs `f` on the values of `tensor`, row-major.
pub fn with_values<const D: usize, R>(tensor: Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    #[cfg(feature = "flex")]
    // A clone shares the buffer (a reference count), which is all reading needs.
    if let Ok(primitive) = tensor.clone().try_into_primitive::<burn_flex::Flex>() {
        return match primitive.as_slice::<f32>() {
            Some(values) => f(values),
            None => f(primitive
                .to_contiguous()
                .as_slice::<f32>()
                .unwrap_or_default()),
        };
    }
    let data = tensor.into_data().convert::<f32>();
    f(data.as_slice::<f32>().unwrap_or_default())
}

/// Whether `input` is an f32 tensor of a CPU backend without autodiff, where
/// the host kernels are faster than backend tensor ops.
#[must_use]
pub fn runs_on_host(input: &Tensor<4>) -> bool {
    let device = input.device();
    input.dtype() == burn::tensor::DType::F32 && !device.is_autodiff() && is_cpu(&device)
}

/// Whether `device` is one of Burn's CPU backends compiled in (`flex`, `ndarray`).
fn is_cpu(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if *device == Device::ndarray() {
        return true;
    }
    let _ = device;
    false
}
