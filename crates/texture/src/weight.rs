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

/// [`WeightTexture`]'s fields for `L` layers: `channel_mean [L, Cin]`, `mean_filter_norm [L, 1]`,
/// the others `[L, Cout]`.
struct Stacked {
    channel_mean: Tensor<2>,
    filter_norm: Tensor<2>,
    mean_filter_norm: Tensor<2>,
    dot: Tensor<2>,
    cos: Tensor<2>,
    similarity: Tensor<2>,
}

impl WeightTexture {
    /// Computes the statistics of `weight [Cout, Cin, kh, kw]`.
    pub fn new(weight: Tensor<4>) -> Self {
        let [cout, cin, kh, kw] = weight.dims();
        let t = Self::stacked(weight.reshape([1, cout, cin, kh, kw]));
        Self {
            channel_mean: t.channel_mean.reshape([cin]),
            filter_norm: t.filter_norm.reshape([cout]),
            mean_filter_norm: t.mean_filter_norm.reshape([1]),
            dot: t.dot.reshape([cout]),
            cos: t.cos.reshape([cout]),
            similarity: t.similarity.reshape([cout]),
        }
    }

    /// The texture mass of each of `L` layers of one shape, stacked as `weights [L, Cout, Cin,
    /// kh, kw]`: `[L]`, each entry what [`WeightTexture::new`]`(W_l).mass()` gives, computed in
    /// a handful of tensor operations for all `L` layers.
    pub fn masses(weights: Tensor<5>) -> Tensor<1> {
        let [l, ..] = weights.dims();
        Self::stacked(weights).similarity.sum_dim(1).reshape([l])
    }

    /// The statistics of stacked weights, with a leading layer dimension on every field.
    fn stacked(weights: Tensor<5>) -> Stacked {
        let [l, cout, cin, kh, kw] = weights.dims();
        let k = kh * kw;
        // `R [L, Cout, Cin]`: each filter's sum over positions. The channel means and the dots
        // need only R (`<W_f, M> = Σ_c R_fc · m_c`), so the full weight is read twice (R and
        // the norms) instead of being broadcast against M.
        let rows = weights.reshape([l, cout, cin, k]);
        let position_sums = rows.clone().sum_dim(3).reshape([l, cout, cin]);
        let channel_mean = position_sums
            .clone()
            .sum_dim(1)
            .mul_scalar(1.0 / (cout * k) as f64); // [L, 1, Cin]
        let dot = position_sums
            .matmul(channel_mean.clone().swap_dims(1, 2))
            .reshape([l, cout]);
        let filter_norm = safe_sqrt(
            rows.reshape([l, cout, cin * k])
                .square()
                .sum_dim(2)
                .reshape([l, cout]),
        );
        let channel_mean = channel_mean.reshape([l, cin]);
        let mean_filter_norm = safe_sqrt(
            channel_mean
                .clone()
                .square()
                .sum_dim(1)
                .mul_scalar(k as f64),
        ); // [L, 1]
        let cos = dot.clone()
            / (filter_norm.clone() * mean_filter_norm.clone()).add_scalar(WEIGHT_COS_EPS);
        let similarity = angular_similarity(cos.clone());
        Stacked {
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
