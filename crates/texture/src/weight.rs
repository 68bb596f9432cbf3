//! Weight texture: each filter against the reference's channel-mean filter (METHOD §2).

use burn::tensor::Tensor;

use crate::numerics::{angular_similarity, safe_sqrt};

/// Added to the denominator of the weight `cos`, as in the reference.
pub const WEIGHT_COS_EPS: f64 = 1e-8;

/// Per-filter texture statistics of a conv weight `W [Cout, Cin, kh, kw]`.
///
/// - `m_c = mean over (f, i, j) of W[f, c, i, j]`, broadcast to `M [Cin, kh, kw]`;
/// - `cos_f = <W_f, M> / (‖W_f‖ ‖M‖ + 1e-8)`, `sim_f = 1 - acos(cos_f) / π`.
///
/// Every field is a tensor on the weight's device and in its graph, so the texture mass can be
/// differentiated.
#[derive(Debug, Clone)]
pub struct WeightTexture {
    /// `m [Cin]`: the mean of each input channel over filters and positions.
    pub channel_mean: Tensor<1>,
    /// `‖W_f‖ [Cout]`.
    pub filter_norm: Tensor<1>,
    /// `‖M‖ [1]`, with `‖M‖² = kh · kw · Σ_c m_c²`.
    pub mean_filter_norm: Tensor<1>,
    /// `<W_f, M> [Cout]`.
    pub dot: Tensor<1>,
    /// `cos_f [Cout]`.
    pub cos: Tensor<1>,
    /// `sim_f [Cout]`, the layer's weight texture distribution.
    pub similarity: Tensor<1>,
}

impl WeightTexture {
    /// Computes the statistics of `weight [Cout, Cin, kh, kw]`.
    pub fn new(weight: Tensor<4>) -> Self {
        let [cout, cin, kh, kw] = weight.dims();
        let k = kh * kw;
        // `R [Cout, Cin]`: each filter's sum over positions. The channel means and the dots
        // need only R (`<W_f, M> = Σ_c R_fc · m_c`), so the full weight is read twice (R and
        // the norms) instead of being broadcast against M.
        let rows = weight.reshape([cout, cin, k]);
        let position_sums = rows.clone().sum_dim(2).reshape([cout, cin]);
        let channel_mean = position_sums
            .clone()
            .sum_dim(0)
            .mul_scalar(1.0 / (cout * k) as f64); // [1, Cin]
        let dot = position_sums
            .matmul(channel_mean.clone().transpose())
            .reshape([cout]);
        let filter_norm = safe_sqrt(
            rows.reshape([cout, cin * k])
                .square()
                .sum_dim(1)
                .reshape([cout]),
        );
        let channel_mean = channel_mean.reshape([cin]);
        let mean_filter_norm = safe_sqrt(channel_mean.clone().square().sum().mul_scalar(k as f64));
        let cos = dot.clone()
            / (filter_norm.clone() * mean_filter_norm.clone()).add_scalar(WEIGHT_COS_EPS);
        let similarity = angular_similarity(cos.clone());
        Self {
            channel_mean,
            filter_norm,
            mean_filter_norm,
            dot,
            cos,
            similarity,
        }
    }

    /// The texture mass `T = Σ_f sim_f`, shape `[1]`.
    pub fn mass(&self) -> Tensor<1> {
        self.similarity.clone().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{tensor, values};

    #[test]
    fn mean_filter_is_the_channel_mean_over_filters_and_positions() {
        // Two 1-channel 1×2 filters: [1, 3] and [-1, 1]. m = (1 + 3 - 1 + 1) / 4 = 1,
        // M = [1, 1], ‖M‖ = √2. Filter 0: dot 4, norm √10, cos = 4/√20 = 0.894427...
        // Filter 1: dot 0 → cos 0 → sim 0.5.
        let t = WeightTexture::new(tensor(vec![1.0, 3.0, -1.0, 1.0], [2, 1, 1, 2]));
        assert_eq!(values(t.channel_mean), vec![1.0]);
        assert!((values(t.mean_filter_norm)[0] - 2f64.sqrt()).abs() < 1e-12);
        let cos = values(t.cos);
        assert!((cos[0] - 4.0 / (20f64.sqrt() + 1e-8)).abs() < 1e-12);
        assert_eq!(cos[1], 0.0);
        let sim = values(t.similarity);
        assert!(
            (sim[0] - (1.0 - (4.0 / 20f64.sqrt()).acos() / core::f64::consts::PI)).abs() < 1e-8
        );
        assert!((sim[1] - 0.5).abs() < 1e-15);
    }
}
