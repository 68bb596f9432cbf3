//! What follows a conv and its norm before the conv's readers see its output.

use burn::tensor::Tensor;
use burn::tensor::activation as act;

/// The activation a layer's output (after its norm) goes through before its consumers read it.
///
/// Compaction needs the value each one takes at a silent channel (METHOD §5): a channel whose
/// stripes are all dead outputs `act(bn(b))` everywhere, which [`apply`](Self::apply) computes
/// in f64. A channel is removable outright when that value is zero (ReLU, ReLU6, LeakyReLU,
/// SiLU, GELU, Hardswish and Tanh map zero to zero; Sigmoid does not: `σ(0) = ½`), otherwise its
/// constant is folded into its readers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// `x`.
    #[default]
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x ≥ 0`, `negative_slope · x` otherwise.
    LeakyRelu {
        /// The slope below zero (PyTorch's default is 0.01).
        negative_slope: f64,
    },
    /// SiLU (Swish): `x · σ(x)`.
    Silu,
    /// GELU, exact: `x · ½ (1 + erf(x / √2))`.
    Gelu,
    /// Hardswish: `x · min(max(x / 6 + ½, 0), 1)`.
    Hardswish,
    /// `σ(x) = 1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
}

impl Activation {
    /// The activation of one value, in f64.
    #[must_use]
    pub fn apply(self, v: f64) -> f64 {
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        match self {
            Self::Identity => v,
            Self::Relu => v.max(0.0),
            Self::Relu6 => v.clamp(0.0, 6.0),
            Self::LeakyRelu { negative_slope } => match v >= 0.0 {
                true => v,
                false => negative_slope * v,
            },
            Self::Silu => v * sigmoid(v),
            Self::Gelu => v * 0.5 * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
            Self::Hardswish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
            Self::Sigmoid => sigmoid(v),
            Self::Tanh => v.tanh(),
        }
    }

    /// The activation of a tensor: Burn's own ops, or the forms an ONNX export can record when
    /// `x` is on Burn's capture device.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if crate::capture::is_recorded(&x) {
            return self.recorded(x);
        }
        self.forward_eager(x)
    }

    /// The activation written with the operations an ONNX export can record (burn-onnx lowers
    /// `Relu`, `Sigmoid`, `Tanh` and arithmetic, not `Clamp`, `Gelu` or `Erf`):
    /// `relu6(x) = relu(x) − relu(x − 6)`, `leaky(x) = relu(x) − a·relu(−x)`,
    /// `silu(x) = x·σ(x)`, `hardswish(x) = x·relu6(x + 3)/6`. GELU (exact, with `erf`) has no
    /// such form and stays as it is, which the export reports as an unsupported operation.
    fn recorded<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        let relu6 = |x: Tensor<D>| act::relu(x.clone()) - act::relu(x - 6.0);
        match self {
            Self::Relu6 => relu6(x),
            Self::LeakyRelu { negative_slope } => {
                act::relu(x.clone()) - act::relu(-x) * negative_slope
            }
            Self::Silu => x.clone() * act::sigmoid(x),
            Self::Hardswish => x.clone() * relu6(x + 3.0) / 6.0,
            other => other.forward_eager(x),
        }
    }

    fn forward_eager<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Identity => x,
            Self::Relu => act::relu(x),
            Self::Relu6 => act::relu6(x),
            Self::LeakyRelu { negative_slope } => act::leaky_relu(x, negative_slope),
            Self::Silu => act::silu(x),
            Self::Gelu => act::gelu(x),
            Self::Hardswish => act::hard_swish(x),
            Self::Sigmoid => act::sigmoid(x),
            Self::Tanh => act::tanh(x),
        }
    }

    /// Every kind, LeakyReLU with PyTorch's default slope: for tests and tables.
    pub const ALL: [Self; 9] = [
        Self::Identity,
        Self::Relu,
        Self::Relu6,
        Self::LeakyRelu {
            negative_slope: 0.01,
        },
        Self::Silu,
        Self::Gelu,
        Self::Hardswish,
        Self::Sigmoid,
        Self::Tanh,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// `apply` (f64) equals Burn's tensor op (f32) on values around every kink and the
    /// saturations, so the constant compaction folds is the one the masked model computes.
    #[test]
    fn the_value_at_a_point_is_the_tensor_ops() {
        let device = Device::default();
        let xs: Vec<f32> = vec![
            -8.0, -6.5, -3.0, -2.9, -1.0, -0.3, -1e-3, 0.0, 1e-3, 0.25, 1.0, 2.9, 3.0, 3.1, 5.9,
            6.0, 6.1, 9.0,
        ];
        for activation in Activation::ALL {
            let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
            let y: Vec<f32> = activation.forward(x).into_data().iter::<f32>().collect();
            for (&x, &y) in xs.iter().zip(&y) {
                let expected = activation.apply(f64::from(x));
                assert!(
                    (f64::from(y) - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
                    "{activation:?}({x}) = {y}, apply gives {expected}"
                );
            }
        }
    }

    #[test]
    fn zero_stays_zero_except_for_the_sigmoid() {
        for activation in Activation::ALL {
            let expected = match activation {
                Activation::Sigmoid => 0.5,
                _ => 0.0,
            };
            assert_eq!(activation.apply(0.0), expected, "{activation:?}");
        }
    }
}
