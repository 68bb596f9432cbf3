//! Stripe-wise execution of a compacted [`SkeletonConv2d`] (METHOD §5).
//!
//! For each kernel position `(i, j)` with live stripes, one 1×1 product (a GEMM)
//! `W_ij [n_ij, Cin] · x[:, :, i + s·y, j + s·x]` on the padded input, shifted by `(i, j)` and
//! taken with the stride (only the output positions are computed), added into the `n_ij` output
//! channels that own those stripes. The cost is `Σ n_ij · Cin · Ho · Wo` MACs, the live fraction
//! of the dense conv's. The layout of the live stripes is the skeleton's non-zero pattern.

use std::sync::{Arc, Mutex};

use burn::module::ParamId;
use burn::nn::BatchNorm;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Slice, Tensor, TensorData};
use texprune_kernels::{Epilogue, Geometry, StripeLayout, runs_on_host, stripe_conv, with_values};

use super::SkeletonConv2d;
use crate::Activation;
use crate::fold::{self, NormFold, host};

impl SkeletonConv2d {
    /// The live stripes of this conv as it is: its non-zero skeleton entries.
    #[must_use]
    pub fn stripe_layout(&self) -> StripeLayout {
        layout_of(self, &skeleton_values(self))
    }
}

/// The layout of `conv` whose skeleton is `skeleton` (host copy).
pub(super) fn layout_of(conv: &SkeletonConv2d, skeleton: &[f32]) -> StripeLayout {
    StripeLayout::from_skeleton(conv.weight_dims(), conv.bias.is_some(), skeleton)
}

/// The layout and packed weights of a stripe-wise conv, keyed by the ids of the weight and
/// skeleton they were read from: the layout for every backend, the packed weights for the host
/// kernel. Each clone of a layer starts empty (a clone may be trained apart); a training
/// forward pass clears it.
#[derive(Debug, Default)]
pub(crate) struct PackCache(Mutex<Option<Packed>>);

#[derive(Debug)]
struct Packed {
    ids: [ParamId; 2],
    layout: Arc<StripeLayout>,
    weights: Option<Arc<Vec<f32>>>,
}

impl Clone for PackCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PackCache {
    pub(crate) fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Packed>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The layout of `conv`, read from its skeleton now if not yet.
    fn layout(&self, conv: &SkeletonConv2d) -> Arc<StripeLayout> {
        let ids = [conv.weight.id, conv.skeleton.id];
        if let Some(p) = self.lock().as_ref().filter(|p| p.ids == ids) {
            return p.layout.clone();
        }
        let layout = Arc::new(conv.stripe_layout());
        *self.lock() = Some(Packed {
            ids,
            layout: layout.clone(),
            weights: None,
        });
        layout
    }

    /// The layout and packed weights of `conv`, packed now if not yet.
    fn get(&self, conv: &SkeletonConv2d) -> (Arc<StripeLayout>, Arc<Vec<f32>>) {
        let ids = [conv.weight.id, conv.skeleton.id];
        if let Some(Packed {
            layout,
            weights: Some(weights),
            ..
        }) = self.lock().as_ref().filter(|p| p.ids == ids)
        {
            return (layout.clone(), weights.clone());
        }
        let skeleton = skeleton_values(conv);
        let layout = Arc::new(layout_of(conv, &skeleton));
        let weights = Arc::new(packed_weights(conv, &layout, &skeleton));
        *self.lock() = Some(Packed {
            ids,
            layout: layout.clone(),
            weights: Some(weights.clone()),
        });
        (layout, weights)
    }
}

/// `S` on the host, `[Cout·kh·kw]`.
pub(super) fn skeleton_values(conv: &SkeletonConv2d) -> Vec<f32> {
    conv.skeleton.val().into_data().iter::<f32>().collect()
}

/// The stripe-wise forward pass of `conv`: through the host CPU kernel for f32 inputs on the
/// CPU backends when the conv has one group and symmetric padding
/// ([`ConvSpec::stripe_padding`](crate::ConvSpec::stripe_padding)), through one backend conv over
/// the live positions elsewhere ([`forward_device`]). It computes `W ⊙ S` on the live stripes,
/// so it equals the dense pass for any weight and skeleton (compaction folds `S` into `W` and
/// leaves a 0/1 skeleton).
///
/// # Shapes
/// - `input`: `[batch, Cin, H, W]`
/// - output: `[batch, Cout, Ho, Wo]` as the dense conv
pub(crate) fn forward(conv: &SkeletonConv2d, input: Tensor<4>) -> Tensor<4> {
    forward_with(conv, input, None, None, Activation::Identity)
}

/// `act(norm(conv(x)) + residual)` stripe-wise. On the host kernel the bias, the norm (in
/// inference form), the residual and the activation are the kernel's output pass
/// ([`Epilogue`]); elsewhere the norm is folded into one conv ([`forward_device`]). The caller
/// checks that `norm` has `Cout` channels and `residual` the output's shape.
pub(crate) fn forward_with(
    conv: &SkeletonConv2d,
    input: Tensor<4>,
    norm: Option<&BatchNorm>,
    residual: Option<Tensor<4>>,
    activation: Activation,
) -> Tensor<4> {
    let [_, _, h, w] = input.dims();
    if let Some(padding) = conv.spec().stripe_padding([h, w])
        && runs_on_host(&input)
        && residual.as_ref().is_none_or(runs_on_host)
    {
        let (layout, weights) = conv.packed.get(conv);
        let geometry = layout
            .geometry(input.dims(), conv.stride, padding)
            .with_dilation(conv.dilation);
        let epilogue = epilogue(conv, norm, activation);
        let out = forward_host(&layout, &weights, input, geometry, &epilogue, residual);
        return match epilogue.relu || activation == Activation::Identity {
            true => out,
            false => activation.forward(out),
        };
    }
    forward_device(
        conv,
        &conv.packed.layout(conv),
        input,
        norm,
        residual,
        activation,
    )
}

/// The host kernel's output pass for `conv` followed by `norm` (inference form) and
/// `activation`: `scale = γ / √(σ² + ε)` and `shift = bn(b)`, computed in f64.
fn epilogue(conv: &SkeletonConv2d, norm: Option<&BatchNorm>, activation: Activation) -> Epilogue {
    let cout = conv.weight_dims()[0];
    let affine = match norm {
        Some(n) => {
            let NormFold { scale, shift } = conv.norm_fold(n);
            Some((scale, shift))
        }
        None => conv.bias.as_ref().map(|b| (vec![1.0; cout], host(b.val()))),
    };
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    Epilogue {
        affine: affine.map(|(scale, shift)| (to_f32(scale), to_f32(shift))),
        relu: activation == Activation::Relu,
    }
}

/// The forward pass in a handful of backend tensor ops, for the GPU backends (and any device
/// the host kernel does not serve): `act(conv2d(x, W', b') + residual)`, where `W'` is
/// `W ⊙ S` cropped to the bounding box of the live kernel positions with the BatchNorm (in
/// inference form) folded in, `W'_f = W_f · γ_f / √(σ²_f + ε)`, and `b' = bn(b)`.
///
/// One large convolution instead of a product and an indexed add per kernel position: a GPU
/// runs a dense conv over the compacted channels at its full rate, and dead stripes inside the
/// box cost it less than launching a kernel per position would. The crop moves the padding:
/// rows `s·y − p_top + d·i` for `i ∈ [i0, i1]` are rows `s·y − (p_top − d·i0) + d·i'` of the
/// cropped kernel, so the padding before is `p_top − d·i0` and after is
/// `p_bottom − d·(kh − 1 − i1)`; when one is negative the input is sliced (and padded)
/// explicitly and the conv has none. Groups and dilation are the conv's own.
/// A conv without live stripes keeps its full (zero) kernel: the output is the bias alone.
pub(crate) fn forward_device(
    conv: &SkeletonConv2d,
    layout: &StripeLayout,
    input: Tensor<4>,
    norm: Option<&BatchNorm>,
    residual: Option<Tensor<4>>,
    activation: Activation,
) -> Tensor<4> {
    let [cout, cin_group, kh, kw] = conv.weight_dims();
    let [rows, cols] = layout.live_box().unwrap_or([0..kh, 0..kw]);
    let weight = (conv.weight.val() * conv.skeleton.val().unsqueeze_dim(1)).slice([
        0..cout,
        0..cin_group,
        rows.clone(),
        cols.clone(),
    ]);
    let bias = conv.bias.as_ref().map(|b| b.val());
    let (weight, bias) = match norm {
        Some(n) => {
            let (scale, shift) = fold::on_device(n, bias);
            (weight * scale.reshape([cout, 1, 1, 1]), Some(shift))
        }
        None => (weight, bias),
    };
    // Padding before and after each spatial axis, for the cropped kernel.
    let spec = conv.spec();
    let [_, _, h, w] = input.dims();
    let [(top, bottom), (left, right)] = spec.padding_at([h, w]);
    let [dh, dw] = spec.dilation.map(|d| d as isize);
    let shift = |p: usize, d: isize, skipped: usize| p as isize - d * skipped as isize;
    let before = [shift(top, dh, rows.start), shift(left, dw, cols.start)];
    let after = [
        shift(bottom, dh, kh - rows.end),
        shift(right, dw, kw - cols.end),
    ];
    let (input, padding) = if before.iter().chain(&after).all(|&p| p >= 0) {
        let p = |a: usize| (before[a] as usize, after[a] as usize);
        (input, [p(0), p(1)])
    } else {
        (pad_or_crop(input, before, after), [(0, 0), (0, 0)])
    };
    let options = ConvOptions::new_with_padding(spec.stride, padding, spec.dilation, spec.groups);
    let out = conv2d(input, weight, bias, options);
    activation.forward(match residual {
        Some(r) => out + r,
        None => out,
    })
}

/// `x [N, C, H, W]` with `before[a]` rows (`a = 0`) or columns (`a = 1`) of zeros added before
/// and `after[a]` after, a negative count removing that many instead.
fn pad_or_crop(x: Tensor<4>, before: [isize; 2], after: [isize; 2]) -> Tensor<4> {
    let grow = |p: isize| p.max(0) as usize;
    let x = if before.iter().chain(&after).any(|&p| p > 0) {
        x.pad(
            [
                (grow(before[0]), grow(after[0])),
                (grow(before[1]), grow(after[1])),
            ],
            PadMode::Constant(0.0),
        )
    } else {
        x
    };
    let [_, _, h, w] = x.dims();
    let cut = |p: isize| (-p).max(0) as usize;
    x.slice([
        Slice::from(..),
        Slice::from(..),
        Slice::from(cut(before[0])..h - cut(after[0])),
        Slice::from(cut(before[1])..w - cut(after[1])),
    ])
}

/// The forward pass through the host kernel ([`stripe_conv`]: f32 on a CPU backend, no
/// autodiff), with its
/// output pass.
fn forward_host(
    layout: &StripeLayout,
    w_all: &[f32],
    input: Tensor<4>,
    geometry: Geometry,
    epilogue: &Epilogue,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    let device = input.device();
    let [batch, _, _, _] = geometry.input;
    let [ho, wo] = geometry.output;
    let conv = |x: &[f32], r: Option<&[f32]>| stripe_conv(layout, x, w_all, geometry, epilogue, r);
    let out = with_values(input, |x| match residual {
        Some(r) => with_values(r, |r| conv(x, Some(r))),
        None => conv(x, None),
    });
    Tensor::from_data(
        TensorData::new(out, [batch, layout.out_channels, ho, wo]),
        &device,
    )
}

/// The live-stripe weights `W ⊙ S` stacked `[S, Cin]` in layout order (position by position,
/// filters ascending), read from `W [Cout, Cin, kh, kw]` on the host.
fn packed_weights(conv: &SkeletonConv2d, layout: &StripeLayout, skeleton: &[f32]) -> Vec<f32> {
    let [_, cin, kh, kw] = conv.weight_dims();
    if layout.positions.is_empty() {
        return Vec::new();
    }
    let weight: Vec<f32> = conv
        .weight
        .val()
        .into_data()
        .try_into_vec()
        .unwrap_or_default();
    let mut packed = Vec::with_capacity(layout.live_stripes() * cin);
    for p in &layout.positions {
        let [i, j] = p.offset;
        for &f in &p.filters {
            let s = skeleton[(f * kh + i) * kw + j];
            packed.extend((0..cin).map(|c| weight[((f * cin + c) * kh + i) * kw + j] * s));
        }
    }
    packed
}
