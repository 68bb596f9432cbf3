//! Coupled channel groups masked whole (opt-in): channels that compaction can only remove
//! together — a residual stream's channel in every writer, a depthwise conv's channel with its
//! producer's — die together or not at all.
//!
//! DTC kills filter `f` alone when every stripe is at or under its threshold,
//! `max_ij |S[f, i, j]| ≤ T_f`; its *strength* is `r_f = max_ij |S[f, i, j]| / T_f` (`≤ 1`: dead,
//! `0` when `T_f = ∞`, a zero row). A group's score is its members' mean strength; the group dies
//! when it is at most 1 — DTC's rule applied to the stacked rows — and then every member filter
//! loses every stripe (its coupled norm channel follows through `alive`). A group that lives
//! keeps each member's own masks.

use burn::tensor::{Bool, Tensor, TensorData};

use crate::LayerMasks;

/// `r_f = max_ij |S[f, i, j]| / T_f` of `skeleton [Cout, kh, kw]` under `thresholds [Cout]`
/// (host values; 0 where `T_f = ∞`).
#[must_use]
pub fn filter_strengths(skeleton: Tensor<3>, thresholds: Tensor<1>) -> Vec<f64> {
    let cout = skeleton.dims()[0];
    let peaks: Vec<f64> = skeleton
        .abs()
        .max_dim(2)
        .max_dim(1)
        .reshape([cout])
        .into_data()
        .iter::<f64>()
        .collect();
    let thresholds: Vec<f64> = thresholds.into_data().iter::<f64>().collect();
    peaks
        .iter()
        .zip(&thresholds)
        .map(|(&peak, &t)| match t {
            t if t.is_infinite() => 0.0,
            t if t <= 0.0 => f64::INFINITY,
            t => peak / t,
        })
        .collect()
}

/// Masks each group of `groups` (lists of `(layer, filter)`) whole where its members' mean
/// strength is at most 1. `masks[l]` and `skeletons[l]` are layer `l`'s masks and skeleton; a
/// group with a member whose layer has no masks is left alone. Returns the number of groups
/// masked.
pub fn couple_groups(
    masks: &mut [Option<LayerMasks>],
    skeletons: &[Tensor<3>],
    groups: &[Vec<(usize, usize)>],
) -> usize {
    let mut strengths: Vec<Option<Vec<f64>>> = vec![None; masks.len()];
    let mut killed: Vec<Vec<bool>> = masks
        .iter()
        .map(|m| vec![false; m.as_ref().map_or(0, |m| m.alive.dims()[0])])
        .collect();
    let mut count = 0;
    for group in groups {
        if group
            .iter()
            .any(|&(l, _)| masks.get(l).is_none_or(Option::is_none))
        {
            continue;
        }
        let mut sum = 0.0;
        for &(l, f) in group {
            let layer = strengths[l].get_or_insert_with(|| {
                let m = masks[l].as_ref().expect("checked");
                filter_strengths(skeletons[l].clone(), m.thresholds.clone())
            });
            sum += layer[f];
        }
        if sum / group.len() as f64 <= 1.0 {
            for &(l, f) in group {
                killed[l][f] = true;
            }
            count += 1;
        }
    }
    for (m, killed) in masks.iter_mut().zip(&killed) {
        let Some(m) = m else { continue };
        if !killed.iter().any(|&k| k) {
            continue;
        }
        let [cout, kh, kw] = m.stripes.dims();
        let device = m.stripes.device();
        let keep: Vec<bool> = killed.iter().map(|&k| !k).collect();
        let keep = Tensor::<1, Bool>::from_data(TensorData::new(keep, [cout]), &device);
        m.alive = m.alive.clone().bool_and(keep.clone());
        m.stripes = m
            .stripes
            .clone()
            .bool_and(keep.reshape([cout, 1, 1]).expand([cout, kh, kw]));
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alive_filters;
    use crate::test_util::{bools, tensor};

    fn masks(skeleton: &Tensor<3>, thresholds: Vec<f64>) -> LayerMasks {
        let n = thresholds.len();
        let thresholds = tensor(thresholds, [n]);
        let stripes = crate::stripe_mask(skeleton.clone(), thresholds.clone());
        LayerMasks {
            alive: alive_filters(stripes.clone()),
            thresholds,
            stripes,
        }
    }

    /// Two layers of two 1×2 filters; group 0 = filter 0 of both, group 1 = filter 1 of both.
    #[test]
    fn a_group_dies_when_its_mean_strength_is_at_most_one() {
        // Layer 0: peaks 0.5 and 2; layer 1: peaks 1.2 and 0.2; thresholds 1 everywhere.
        let s0 = tensor(vec![0.5, 0.1, 2.0, 0.3], [2, 1, 2]);
        let s1 = tensor(vec![1.2, 0.0, 0.2, 0.1], [2, 1, 2]);
        let mut all = vec![
            Some(masks(&s0, vec![1.0, 1.0])),
            Some(masks(&s1, vec![1.0, 1.0])),
        ];
        // Alone, filter 0 of layer 0 and filter 1 of layer 1 die.
        assert_eq!(bools(all[0].clone().unwrap().alive), [false, true]);
        assert_eq!(bools(all[1].clone().unwrap().alive), [true, false]);
        let groups = vec![vec![(0, 0), (1, 0)], vec![(0, 1), (1, 1)]];
        // Group 0: (0.5 + 1.2) / 2 = 0.85 ≤ 1, dies whole; group 1: (2 + 0.2) / 2 = 1.1 lives,
        // its members keep their own masks (filter 1 of layer 1 stays dead).
        assert_eq!(couple_groups(&mut all, &[s0, s1], &groups), 1);
        let [a, b] = [0, 1].map(|l| all[l].clone().unwrap());
        assert_eq!(bools(a.alive), [false, true]);
        assert_eq!(bools(b.alive), [false, false]);
        assert_eq!(bools(b.stripes), [false, false, false, false]);
        assert_eq!(bools(a.stripes), [false, false, true, false]);
    }

    #[test]
    fn infinite_thresholds_count_as_dead_and_missing_masks_leave_a_group_alone() {
        let s = tensor(vec![0.0, 0.0, 3.0, 3.0], [2, 1, 2]);
        assert_eq!(
            filter_strengths(s.clone(), tensor(vec![f64::INFINITY, 1.5], [2])),
            [0.0, 2.0]
        );
        let mut all = vec![Some(masks(&s, vec![f64::INFINITY, 1.5])), None];
        let groups = vec![vec![(0, 1), (1, 0)]];
        assert_eq!(couple_groups(&mut all, &[s.clone(), s], &groups), 0);
    }
}
