//! A BatchNorm in inference form folded into the conv before it (METHOD §5), the one place every
//! path computes it: the compaction plan (the constant a silent channel emits), the host kernel's
//! output pass, the GPU path's folded weights, and a dead residual branch's constant.
//!
//! For `y_f = conv_f(x) + b_f`, `bn(y)_f = γ_f (y_f − μ_f) / √(σ²_f + ε) + β_f
//! = scale_f · conv_f(x) + shift_f` with `scale_f = γ_f / √(σ²_f + ε)` and
//! `shift_f = bn(b)_f = γ_f (b_f − μ_f) / √(σ²_f + ε) + β_f` (`b = 0` without a bias).

use burn::nn::BatchNorm;
use burn::tensor::Tensor;

/// `scale` and `shift` per channel, computed in f64 on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NormFold {
    /// `γ_f / √(σ²_f + ε)`.
    pub scale: Vec<f64>,
    /// `bn(b)_f`: what the conv, norm pair gives where the conv's product is 0.
    pub shift: Vec<f64>,
}

impl NormFold {
    /// `norm` (its running statistics) after a conv with bias `bias` (host copy; `None`: 0).
    #[must_use]
    pub fn of(norm: &BatchNorm, bias: Option<&[f64]>) -> Self {
        let values = [
            norm.gamma.val(),
            norm.beta.val(),
            norm.running_mean.value(),
            norm.running_var.value(),
        ]
        .map(host);
        Self::of_values(values.each_ref().map(Vec::as_slice), norm.epsilon, bias)
    }

    /// From host copies `[γ, β, μ, σ²]`, `ε` and the bias (`None`: 0).
    ///
    /// # Panics
    /// If `β`, `μ`, `σ²` or the bias is shorter than `γ`.
    #[must_use]
    pub fn of_values(
        [gamma, beta, mean, var]: [&[f64]; 4],
        epsilon: f64,
        bias: Option<&[f64]>,
    ) -> Self {
        let channels = 0..gamma.len();
        Self {
            scale: channels
                .clone()
                .map(|f| gamma[f] / (var[f] + epsilon).sqrt())
                .collect(),
            shift: channels
                .map(|f| {
                    let b = bias.map_or(0.0, |b| b[f]);
                    gamma[f] * (b - mean[f]) / (var[f] + epsilon).sqrt() + beta[f]
                })
                .collect(),
        }
    }
}

/// The fold as tensors on the norm's device, `(scale [C], shift [C])`, for backends that run
/// the conv as a tensor op (no host read-back).
pub(crate) fn on_device(norm: &BatchNorm, bias: Option<Tensor<1>>) -> (Tensor<1>, Tensor<1>) {
    let scale = norm.gamma.val() / (norm.running_var.value() + norm.epsilon).sqrt();
    let centred = match bias {
        Some(b) => b - norm.running_mean.value(),
        None => -norm.running_mean.value(),
    };
    let shift = centred * scale.clone() + norm.beta.val();
    (scale, shift)
}

/// A `[n]` tensor on the host, in f64.
pub(crate) fn host(t: Tensor<1>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, TensorData};

    /// The host fold and the device fold give the norm's own output where the conv's product is
    /// 0 (`conv(x) = b`): a BatchNorm in inference mode on the bias.
    #[test]
    fn both_folds_equal_the_norm_on_the_bias() {
        let device = Device::default();
        let mut norm = BatchNormConfig::new(3).init(&device);
        let t = |v: [f32; 3]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [3]), &device);
        norm.gamma = norm.gamma.map(|_| t([1.5, -0.5, 2.0]));
        norm.beta = norm.beta.map(|_| t([0.1, 0.2, -0.3]));
        norm.running_mean = burn::module::RunningState::new(t([0.5, -1.0, 0.0]));
        norm.running_var = burn::module::RunningState::new(t([4.0, 0.25, 1.0]));
        let bias = [1.0, 2.0, -1.0];
        let expected: Vec<f64> = norm
            .forward(
                t(bias.map(|b| b as f32))
                    .reshape([1, 3, 1, 1])
                    .expand([1, 3, 1, 1]),
            )
            .into_data()
            .iter::<f64>()
            .collect();
        let fold = NormFold::of(&norm, Some(&bias));
        let (scale, shift) = on_device(&norm, Some(t(bias.map(|b| b as f32))));
        let (scale, shift) = (host(scale), host(shift));
        for (f, e) in expected.iter().enumerate() {
            assert!((fold.shift[f] - e).abs() < 1e-6, "{f}");
            assert!((shift[f] - e).abs() < 1e-6, "{f}");
            assert!((scale[f] - fold.scale[f]).abs() < 1e-6, "{f}");
        }
        assert_eq!(
            NormFold::of(&norm, None).shift,
            NormFold::of(&norm, Some(&[0.0; 3])).shift
        );
    }
}
