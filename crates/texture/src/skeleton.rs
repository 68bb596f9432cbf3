//! Skeleton texture: each filter skeleton row against the layer's mean row (METHOD §2).

use burn::tensor::Tensor;

use crate::numerics::{angular_similarity, safe_sqrt};

/// Added to the denominator of the skeleton `cos`, as in the reference.
pub const SKELETON_COS_EPS: f64 = 1e-7;

/// Per-filter texture statistics of a filter skeleton `S [Cout, kh, kw]`.
///
/// - `S̄ = mean_f S_f [kh, kw]`;
/// - `cos_f = <S_f, S̄> / (‖S_f‖ ‖S̄‖ + 1e-7)`, `sim_f = 1 - acos(cos_f) / π`.
#[derive(Debug, Clone)]
pub struct SkeletonTexture {
    /// `S̄ [kh, kw]`.
    pub mean_skeleton: Tensor<2>,
    /// `‖S_f‖ [Cout]`.
    pub skeleton_norm: Tensor<1>,
    /// `‖S̄‖ [1]`.
    pub mean_skeleton_norm: Tensor<1>,
    /// `<S_f, S̄> [Cout]`.
    pub dot: Tensor<1>,
    /// `cos_f [Cout]`.
    pub cos: Tensor<1>,
    /// `sim_f [Cout]`, the layer's skeleton texture distribution.
    pub similarity: Tensor<1>,
}

/// [`SkeletonTexture`]'s fields for `L` layers: `mean_skeleton [L, kh, kw]`,
/// `mean_skeleton_norm [L, 1]`, the others `[L, Cout]`.
struct Stacked {
    mean_skeleton: Tensor<3>,
    skeleton_norm: Tensor<2>,
    mean_skeleton_norm: Tensor<2>,
    dot: Tensor<2>,
    cos: Tensor<2>,
    similarity: Tensor<2>,
}

impl SkeletonTexture {
    /// Computes the statistics of `skeleton [Cout, kh, kw]`.
    pub fn new(skeleton: Tensor<3>) -> Self {
        let [cout, kh, kw] = skeleton.dims();
        let t = Self::stacked(skeleton.reshape([1, cout, kh, kw]));
        Self {
            mean_skeleton: t.mean_skeleton.reshape([kh, kw]),
            skeleton_norm: t.skeleton_norm.reshape([cout]),
            mean_skeleton_norm: t.mean_skeleton_norm.reshape([1]),
            dot: t.dot.reshape([cout]),
            cos: t.cos.reshape([cout]),
            similarity: t.similarity.reshape([cout]),
        }
    }

    /// The texture mass of each of `L` layers of one shape, stacked as `skeletons [L, Cout, kh,
    /// kw]`: `[L]`, each entry what [`SkeletonTexture::new`]`(S_l).mass()` gives, computed in a
    /// handful of tensor operations for all `L` layers.
    pub fn masses(skeletons: Tensor<4>) -> Tensor<1> {
        let [l, ..] = skeletons.dims();
        Self::stacked(skeletons).similarity.sum_dim(1).reshape([l])
    }

    fn stacked(skeletons: Tensor<4>) -> Stacked {
        let [l, cout, kh, kw] = skeletons.dims();
        let mean = skeletons.clone().sum_dim(1).mul_scalar(1.0 / cout as f64); // [L, 1, kh, kw]
        let dot = (skeletons.clone() * mean.clone())
            .sum_dims(&[2, 3])
            .reshape([l, cout]);
        let skeleton_norm = safe_sqrt(skeletons.square().sum_dims(&[2, 3]).reshape([l, cout]));
        let mean_skeleton = mean.reshape([l, kh, kw]);
        let mean_skeleton_norm = safe_sqrt(
            mean_skeleton
                .clone()
                .square()
                .sum_dims(&[1, 2])
                .reshape([l, 1]),
        );
        let cos = dot.clone()
            / (skeleton_norm.clone() * mean_skeleton_norm.clone()).add_scalar(SKELETON_COS_EPS);
        let similarity = angular_similarity(cos.clone());
        Stacked {
            mean_skeleton,
            skeleton_norm,
            mean_skeleton_norm,
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
    fn all_ones_skeleton_is_maximally_similar_with_finite_gradient() {
        // Every row equals the mean: cos = 9 / (9 + 1e-7) = 1 - 1.1e-8, sim ≈ 1 - 4.7e-5.
        let s = tensor(vec![1.0; 2 * 9], [2, 3, 3])
            .autodiff()
            .require_grad();
        let t = SkeletonTexture::new(s.clone());
        let sim = values(t.similarity.clone());
        let expected = 1.0 - (9.0f64 / (9.0 + 1e-7)).acos() / core::f64::consts::PI;
        assert!(
            (sim[0] - expected).abs() < 1e-12,
            "{} vs {expected}",
            sim[0]
        );
        let grads = t.mass().backward();
        assert!(
            values(s.grad(&grads).unwrap())
                .iter()
                .all(|g| g.is_finite())
        );
    }

    #[test]
    fn zero_row_has_finite_gradient() {
        // Row 1 is all zero: ‖S_1‖ = sqrt(0) whose plain gradient is NaN; ours is finite.
        let s = tensor(vec![1.0, 2.0, 0.0, 0.0], [2, 1, 2])
            .autodiff()
            .require_grad();
        let t = SkeletonTexture::new(s.clone());
        assert!((values(t.similarity.clone())[1] - 0.5).abs() < 1e-12); // cos 0 → 0.5
        let grads = t.mass().backward();
        assert!(
            values(s.grad(&grads).unwrap())
                .iter()
                .all(|g| g.is_finite())
        );
    }
}
