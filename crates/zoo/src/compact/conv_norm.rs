//! Compacting one skeleton conv and the BatchNorm after it: the step every compact model is
//! built from.
//!
//! A stripe `(f, i, j)` is live when `S[f, i, j] ≠ 0` and the conv still has an input that is not
//! identically zero. Output channel `f` is *silent* when it has no live stripe and no bias: the
//! conv writes exactly 0 there and the BatchNorm turns it into the constant `bn(0)_f`. A silent
//! channel can be removed, with the next layer's input channel, only when a ReLU follows and
//! `relu(bn(0)_f) = 0` — then the channel is exactly zero (DTC zeroes `γ_f, β_f` of dead filters,
//! which gives `bn(0)_f = 0`). Every other channel is kept, so compaction is exact whatever the
//! state of the model.

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};

use crate::compact::{StripeConv2d, StripeConvPlan, StripePosition};
use crate::{SkeletonConv2d, ZooError};

/// A compacted conv + BatchNorm.
pub(crate) struct CompactedConv {
    /// The stripe-wise conv over the kept input channels, producing the kept output channels.
    pub conv: StripeConv2d,
    /// The BatchNorm of the kept channels.
    pub norm: BatchNorm,
    /// Original indices of the kept output channels.
    pub kept: Vec<usize>,
    /// Whether every kept channel is exactly zero after `relu(bn(·))`.
    pub output_zero: bool,
    /// Whether every output channel of the conv (before the BatchNorm) is exactly zero.
    pub silent: bool,
}

pub(crate) fn host(t: Tensor<1>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

pub(crate) fn index_tensor(indices: &[usize], like: &Tensor<1>) -> Tensor<1, Int> {
    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(idx, [indices.len()]), &like.device())
}

/// The BatchNorm restricted to `channels`.
pub(crate) fn select_norm(norm: &BatchNorm, channels: &[usize]) -> BatchNorm {
    let gamma = norm.gamma.val();
    let idx = index_tensor(channels, &gamma);
    BatchNorm {
        gamma: Param::from_tensor(gamma.select(0, idx.clone())),
        beta: Param::from_tensor(norm.beta.val().select(0, idx.clone())),
        training: norm.training.clone(),
        running_mean: RunningState::new(norm.running_mean.value().select(0, idx.clone())),
        running_var: RunningState::new(norm.running_var.value().select(0, idx)),
        momentum: norm.momentum,
        epsilon: norm.epsilon,
    }
}

/// `bn(conv(0))` per channel: the BatchNorm applied to the conv's bias (or to zero).
pub(crate) fn silent_output(conv: &SkeletonConv2d, norm: &BatchNorm) -> Tensor<1> {
    let gamma = norm.gamma.val();
    let [cout] = gamma.dims();
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => gamma.zeros_like(),
    };
    norm.forward(bias.reshape([1, cout, 1, 1])).reshape([cout])
}

/// Compacts `conv` + `norm` given the kept input channels `inputs` (original indices) and
/// whether those inputs are all exactly zero. `removable`: a ReLU follows, so silent channels
/// with `relu(bn(0)) = 0` are removed.
pub(crate) fn compact_conv_norm(
    name: &str,
    conv: &SkeletonConv2d,
    norm: &BatchNorm,
    inputs: &[usize],
    inputs_zero: bool,
    removable: bool,
) -> Result<CompactedConv, ZooError> {
    let skeleton = conv.skeleton.val();
    let [cout, kh, kw] = skeleton.dims();
    let s: Vec<f64> = skeleton.clone().into_data().iter::<f64>().collect();
    if s.iter().any(|v| !v.is_finite()) {
        return Err(ZooError::NonFinite {
            layer: name.to_string(),
            what: "skeleton",
        });
    }
    let bias = conv.bias.as_ref().map(|b| host(b.val()));
    let live = |f: usize, i: usize, j: usize| {
        !inputs_zero && !inputs.is_empty() && s[(f * kh + i) * kw + j] != 0.0
    };
    let silent: Vec<bool> = (0..cout)
        .map(|f| {
            let no_stripe = (0..kh).all(|i| (0..kw).all(|j| !live(f, i, j)));
            no_stripe && bias.as_ref().is_none_or(|b| b[f] == 0.0)
        })
        .collect();
    let constant = silent_output(conv, norm);
    let after_relu = host(relu(constant));
    if after_relu.iter().any(|v| !v.is_finite()) {
        return Err(ZooError::NonFinite {
            layer: name.to_string(),
            what: "BatchNorm parameters",
        });
    }
    let zero_after = |f: usize| silent[f] && after_relu[f] == 0.0;
    let mut kept: Vec<usize> = (0..cout)
        .filter(|&f| !(removable && zero_after(f)))
        .collect();
    if kept.is_empty() {
        // Keep one (exactly zero) channel rather than a zero-width tensor.
        kept.push(0);
    }

    let weight = conv.weight.val() * skeleton.unsqueeze_dim(1);
    let like = conv.skeleton.val().flatten::<1>(0, 2);
    let weight = weight
        .select(0, index_tensor(&kept, &like))
        .select(1, index_tensor(inputs, &like));
    let mut positions = Vec::new();
    let mut weights = Vec::new();
    for i in 0..kh {
        for j in 0..kw {
            let local: Vec<usize> = kept
                .iter()
                .enumerate()
                .filter(|&(_, &f)| live(f, i, j))
                .map(|(n, _)| n)
                .collect();
            if local.is_empty() {
                continue;
            }
            let at = weight
                .clone()
                .slice([0..kept.len(), 0..inputs.len(), i..i + 1, j..j + 1])
                .reshape([kept.len(), inputs.len()]);
            weights.push(at.select(0, index_tensor(&local, &like)));
            positions.push(StripePosition {
                offset: [i, j],
                filters: local,
            });
        }
    }
    let plan = StripeConvPlan {
        in_channels: inputs.len(),
        out_channels: kept.len(),
        kernel_size: [kh, kw],
        stride: conv.stride,
        padding: conv.padding,
        bias: conv.bias.is_some(),
        positions,
    };
    let bias = conv
        .bias
        .as_ref()
        .map(|b| b.val().select(0, index_tensor(&kept, &like)));
    Ok(CompactedConv {
        conv: StripeConv2d::new(plan, weights, bias),
        norm: select_norm(norm, &kept),
        output_zero: kept.iter().all(|&f| zero_after(f)),
        silent: silent.iter().all(|&z| z),
        kept,
    })
}
