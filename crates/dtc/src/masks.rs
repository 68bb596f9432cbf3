//! Thresholds and masks on plain tensors.

use burn::tensor::{Bool, Tensor};

/// Per-filter thresholds `T_f = δ · mean_g(‖S_g‖₁) / ‖S_f‖₁` of `skeleton [Cout, kh, kw]`,
/// shape `[Cout]`; `+∞` where `‖S_f‖₁ = 0`.
pub fn filter_thresholds(skeleton: Tensor<3>, delta: f64) -> Tensor<1> {
    let cout = skeleton.dims()[0];
    let l1 = skeleton.abs().sum_dims(&[1, 2]).reshape([cout]);
    let zero = l1.clone().equal_elem(0.0);
    let scaled_mean = l1.clone().mean().mul_scalar(delta).expand([cout]);
    (scaled_mean / l1).mask_fill(zero, f64::INFINITY)
}

/// `|S[f, i, j]| > T_f`, shape `[Cout, kh, kw]`.
pub fn stripe_mask(skeleton: Tensor<3>, thresholds: Tensor<1>) -> Tensor<3, Bool> {
    let [cout, kh, kw] = skeleton.dims();
    skeleton
        .abs()
        .greater(thresholds.reshape([cout, 1, 1]).expand([cout, kh, kw]))
}

/// `alive_f = any_{i,j} mask[f, i, j]`, shape `[Cout]`.
pub fn alive_filters(stripes: Tensor<3, Bool>) -> Tensor<1, Bool> {
    let cout = stripes.dims()[0];
    stripes.any_dim(2).any_dim(1).reshape([cout])
}

/// Zeroes the entries of `t` where `mask` is false, whatever they hold (NaN included).
pub fn mask_stripes(t: Tensor<3>, mask: Tensor<3, Bool>) -> Tensor<3> {
    t.mask_fill(mask.bool_not(), 0.0)
}

/// Zeroes the channels of `t [C]` where `alive` is false (NaN included).
pub fn mask_channels(t: Tensor<1>, alive: Tensor<1, Bool>) -> Tensor<1> {
    t.mask_fill(alive.bool_not(), 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{bools, tensor, values};

    #[test]
    fn thresholds_scale_with_filter_weakness() {
        // Row L1s 4 and 1 (1×2 kernels): mean 2.5; δ = 0.4 → T = 0.4·2.5/4 = 0.25, 0.4·2.5/1 = 1.
        let s = tensor(vec![1.0, -3.0, 0.5, 0.5], [2, 1, 2]);
        assert_eq!(values(filter_thresholds(s.clone(), 0.4)), vec![0.25, 1.0]);
        // |S| > T: row 0 keeps both, row 1 keeps none (0.5 < 1) and is dead.
        let mask = stripe_mask(s.clone(), filter_thresholds(s, 0.4));
        assert_eq!(bools(mask.clone()), vec![true, true, false, false]);
        assert_eq!(bools(alive_filters(mask)), vec![true, false]);
    }

    #[test]
    fn mask_is_strict() {
        // One filter [1, 1]: T = δ·2/2 = δ = 1 → |1| > 1 is false.
        let s = tensor(vec![1.0, 1.0], [1, 1, 2]);
        assert_eq!(
            bools(stripe_mask(s.clone(), filter_thresholds(s, 1.0))),
            vec![false, false]
        );
    }

    #[test]
    fn zero_rows_and_zero_layers_get_infinite_thresholds() {
        let s = tensor(vec![1.0, 0.0, 0.0, 0.0], [2, 1, 2]);
        assert_eq!(values(filter_thresholds(s, 0.5)), vec![0.25, f64::INFINITY]);
        let zero = tensor(vec![0.0; 4], [2, 1, 2]);
        let t = filter_thresholds(zero.clone(), 0.5);
        assert_eq!(values(t.clone()), vec![f64::INFINITY; 2]);
        assert_eq!(bools(stripe_mask(zero, t)), vec![false; 4]);
    }

    #[test]
    fn masking_clears_nan() {
        let g = tensor(vec![f64::NAN, 2.0], [1, 1, 2]);
        let mask = tensor(vec![0.0, 1.0], [1, 1, 2]).greater_elem(0.5);
        assert_eq!(values(mask_stripes(g, mask)), vec![0.0, 2.0]);
    }
}
