//! The flex backend's tensors as the training kernels read and write them.

use burn::backend::ops::FloatTensorOps;
use burn::tensor::TensorData;

/// Burn's default CPU backend.
pub(crate) type Flex = burn_flex::Flex;
/// Its autodiff wrapper, the default training backend.
pub(crate) type Train = burn_autodiff::Autodiff<Flex>;
/// A flex float tensor.
pub(crate) type FlexTensor = <Flex as burn::backend::BackendTypes>::FloatTensorPrimitive;

/// Runs `f` on the values of a flex tensor, row-major (borrowed when the tensor is contiguous).
pub(crate) fn flex_values<R>(tensor: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
    match tensor.as_slice::<f32>() {
        Some(v) => f(v),
        None => f(tensor.to_contiguous().as_slice::<f32>().unwrap_or_default()),
    }
}

/// A flex tensor of `shape` holding `values`.
pub(crate) fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    Flex::float_from_data(TensorData::new(values, shape), &burn_flex::FlexDevice)
}
