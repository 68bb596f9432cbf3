//! Numerically safe building blocks shared by the statistics and the penalty.

use burn::tensor::{DType, Tensor};

/// Added under every square root: `safe_sqrt(x) = sqrt(x + η)`, η = 1e-30.
///
/// `sqrt'(0)` is infinite, so the plain norm of an all-zero skeleton row has a NaN gradient
/// (`∞ · 0`); with η the gradient at 0 is exactly 0 and the value moves by at most
/// `η / (2 sqrt(x))`, far below float precision for any norm that is not itself ~1e-15.
const SQRT_SHIFT: f64 = 1e-30;

/// `sqrt(x + 1e-30)`: a square root whose gradient is finite everywhere on `x ≥ 0`.
pub fn safe_sqrt<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.add_scalar(SQRT_SHIFT).sqrt()
}

/// The ε of the `cos` clamp for a float type: its machine epsilon
/// (2.2e-16 for f64, 1.2e-7 for f32, 9.8e-4 for f16, 7.8e-3 for bf16).
///
/// `1 - ε` is the largest representable number below 1 in that type (to within a factor 2),
/// so clamping into `[-1 + ε, 1 - ε]` changes no `cos` that the type can tell apart from ±1,
/// and keeps `acos'` finite. In f64 the similarity moves by at most `acos(1 - ε) / π ≈ 7e-9`.
pub fn cos_clamp_epsilon(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON,
        DType::F16 => 9.765_625e-4,
        DType::BF16 => 7.812_5e-3,
        _ => f32::EPSILON as f64,
    }
}

/// Angular similarity `sim = 1 - acos(clamp(cos, -1 + ε, 1 - ε)) / π`, elementwise, in `[0, 1]`.
///
/// Scales by `mul_scalar(1/π)`: in Burn 0.22 the backward of `div_scalar` rounds the scalar to
/// f32, which costs f64 gradients 1e-8 of relative accuracy.
///
/// ε is [`cos_clamp_epsilon`] of the tensor's float type. Inside the clamp range the gradient is
/// the exact `1 / (π sqrt(1 - cos²))`; outside it is 0, never infinite.
pub fn angular_similarity<const D: usize>(cos: Tensor<D>) -> Tensor<D> {
    let eps = cos_clamp_epsilon(cos.dtype());
    cos.clamp(-1.0 + eps, 1.0 - eps)
        .acos()
        .mul_scalar(core::f64::consts::FRAC_1_PI)
        .neg()
        .add_scalar(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{tensor, values};

    #[test]
    fn similarity_of_known_angles() {
        // cos = 1 → 0 rad → 1 (clamped: acos(1 - 2.2e-16)/π ≈ 6.7e-9); cos = 0 → π/2 → 0.5;
        // cos = -1 → π → 0; cos = 0.5 → π/3 → 2/3.
        let sim = values(angular_similarity(tensor(vec![1.0, 0.0, -1.0, 0.5], [4])));
        let expected = [1.0, 0.5, 0.0, 2.0 / 3.0];
        for (s, e) in sim.iter().zip(expected) {
            assert!((s - e).abs() < 1e-8, "{s} vs {e}");
        }
    }

    #[test]
    fn similarity_gradient_is_finite_at_the_ends() {
        let cos = tensor(vec![1.0, -1.0, 0.0], [3]).autodiff().require_grad();
        let grads = angular_similarity(cos.clone()).sum().backward();
        let g = values(cos.grad(&grads).unwrap());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        // d sim / d cos at 0 = 1 / (π · sqrt(1 - 0)) = 1/π.
        assert!((g[2] - 1.0 / core::f64::consts::PI).abs() < 1e-12);
    }

    #[test]
    fn safe_sqrt_has_zero_gradient_at_zero() {
        let x = tensor(vec![0.0, 4.0], [2]).autodiff().require_grad();
        // d/dx sqrt(x²) at x=0 is 0 with the shift (NaN without it); at x=4 it is 1.
        let grads = safe_sqrt(x.clone().square()).sum().backward();
        assert_eq!(values(x.grad(&grads).unwrap()), vec![0.0, 1.0]);
    }
}
