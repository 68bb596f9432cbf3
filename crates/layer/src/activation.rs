//! What follows a conv and its norm before the conv's readers see its output.

use burn::tensor::Tensor;

/// The activation a layer's output (after its norm) goes through before its consumers read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// None: a silent channel is removable when `bn(0) = 0`.
    #[default]
    Identity,
    /// ReLU: a silent channel is removable when `relu(bn(0)) = 0`.
    Relu,
}

impl Activation {
    /// The activation of one value.
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Self::Identity => v,
            Self::Relu => v.max(0.0),
        }
    }

    /// The activation of a tensor.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Identity => x,
            Self::Relu => burn::tensor::activation::relu(x),
        }
    }
}
