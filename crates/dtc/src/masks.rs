//! Thresholds and masks on plain tensors.

use burn::tensor::{Bool, Tensor, TensorData};

/// Per-filter thresholds `T_f = δ · mean_g(‖S_g‖₁) / ‖S_f‖₁` of `skeleton [Cout, kh, kw]`,
/// shape `[Cout]`; `+∞` where `‖S_f‖₁ = 0`.
pub fn filter_thresholds(skeleton: Tensor<3>, delta: f64) -> Tensor<1> {
    let cout = skeleton.dims()[0];
    let l1 = skeleton_norms(skeleton);
    let zero = l1.clone().equal_elem(0.0);
    let scaled_mean = l1.clone().mean().mul_scalar(delta).expand([cout]);
    (scaled_mean / l1).mask_fill(zero, f64::INFINITY)
}

/// `L_f = ‖S_f‖₁` of `skeleton [Cout, kh, kw]`, shape `[Cout]`.
pub fn skeleton_norms(skeleton: Tensor<3>) -> Tensor<1> {
    let cout = skeleton.dims()[0];
    skeleton.abs().sum_dims(&[1, 2]).reshape([cout])
}

/// SWP's thresholds: `T_f = δ` for every filter of `skeleton [Cout, kh, kw]`, shape `[Cout]`.
pub fn global_thresholds(skeleton: Tensor<3>, delta: f64) -> Tensor<1> {
    let cout = skeleton.dims()[0];
    skeleton
        .sum_dims(&[1, 2])
        .reshape([cout])
        .zeros_like()
        .add_scalar(delta)
}

/// `‖W_f ⊙ S_f‖₁ = Σ_{c,i,j} |W[f, c, i, j] · S[f, i, j]|` of `weight [Cout, Cin, kh, kw]` and
/// `skeleton [Cout, kh, kw]`, shape `[Cout]`: the L1 norm of each filter as the layer applies it.
pub fn filter_norms(weight: Tensor<4>, skeleton: Tensor<3>) -> Tensor<1> {
    let [cout, cin, kh, kw] = weight.dims();
    let effective = weight
        * skeleton
            .reshape([cout, 1, kh, kw])
            .expand([cout, cin, kh, kw]);
    effective.abs().sum_dims(&[1, 2, 3]).reshape([cout])
}

/// L1-norm filter pruning's thresholds from `norms [Cout]`: `+∞` for the
/// `k = min(⌊fraction · Cout⌋, Cout − 1)` filters of smallest norm (ties: the lower index first),
/// 0 for the others, so that `|S| > T_f` removes exactly those filters (and nothing but exact
/// zeros of the others). Reads the norms on the host.
pub fn smallest_norm_thresholds(norms: Tensor<1>, fraction: f64) -> Tensor<1> {
    let (device, dtype) = (norms.device(), norms.dtype());
    let values: Vec<f64> = norms.into_data().iter::<f64>().collect();
    let cout = values.len();
    let k = if fraction.is_finite() && fraction > 0.0 {
        ((fraction * cout as f64).floor() as usize).min(cout.saturating_sub(1))
    } else {
        0
    };
    let mut order: Vec<usize> = (0..cout).collect();
    // NaN norms sort last (kept): a filter that is not a number is not the smallest.
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    let mut thresholds = vec![0.0; cout];
    for &f in &order[..k] {
        thresholds[f] = f64::INFINITY;
    }
    Tensor::from_data(TensorData::new(thresholds, [cout]), (&device, dtype))
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
    fn global_threshold_is_one_value_for_every_stripe() {
        // SWP: |S| > 0.6 everywhere, whatever the filter's norm.
        let s = tensor(vec![1.0, -0.5, 0.7, 0.6], [2, 1, 2]);
        assert_eq!(values(global_thresholds(s.clone(), 0.6)), vec![0.6, 0.6]);
        let mask = stripe_mask(s.clone(), global_thresholds(s, 0.6));
        assert_eq!(bools(mask), vec![true, false, true, false]);
    }

    #[test]
    fn filter_norms_weigh_the_weight_by_the_skeleton() {
        // Filter 0: |1·2| + |−3·2| + |0.5·1| + |1·1| = 9.5 (Cin 2, 1×1 kernel → S broadcast).
        let w = tensor(vec![1.0, -3.0, 0.5, 1.0], [2, 2, 1, 1]);
        let s = tensor(vec![2.0, -1.0], [2, 1, 1]);
        assert_eq!(values(filter_norms(w, s)), vec![8.0, 1.5]);
    }

    #[test]
    fn smallest_filters_are_removed_by_rank() {
        // A planted ranking: norms 5, 1, 4, 2, 3 → order 1, 3, 4, 2, 0.
        let norms = tensor(vec![5.0, 1.0, 4.0, 2.0, 3.0], [5]);
        let inf = f64::INFINITY;
        let t = |fraction| values(smallest_norm_thresholds(norms.clone(), fraction));
        assert_eq!(t(0.0), vec![0.0; 5]);
        // ⌊0.45·5⌋ = 2: filters 1 and 3.
        assert_eq!(t(0.45), vec![0.0, inf, 0.0, inf, 0.0]);
        // ⌊0.6·5⌋ = 3: and filter 4.
        assert_eq!(t(0.6), vec![0.0, inf, 0.0, inf, inf]);
        // Never the whole layer: at most Cout − 1.
        assert_eq!(t(7.0), vec![0.0, inf, inf, inf, inf]);
        // Ties go to the lower index.
        let tied = tensor(vec![1.0, 1.0, 1.0], [3]);
        assert_eq!(
            values(smallest_norm_thresholds(tied, 0.4)),
            vec![inf, 0.0, 0.0]
        );
    }

    #[test]
    fn masking_clears_nan() {
        let g = tensor(vec![f64::NAN, 2.0], [1, 1, 2]);
        let mask = tensor(vec![0.0, 1.0], [1, 1, 2]).greater_elem(0.5);
        assert_eq!(values(mask_stripes(g, mask)), vec![0.0, 2.0]);
    }
}
