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
use burn::tensor::{Device, IndexingUpdateOp, Int, Slice, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::host_buffer::with_values;
use super::host_kernel::{self, Epilogue, Geometry};
use super::plan::{host, norm_of_bias, norm_values};
use crate::cost::output_size;
use crate::{Activation, PrunableLayer, SkeletonConv2d};

/// The live stripes at one kernel position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripePosition {
    /// Kernel position `(i, j)`.
    pub offset: [usize; 2],
    /// Output channels that keep their stripe at this position, ascending.
    pub filters: Vec<usize>,
}

/// Which stripes of a conv are live, position by position: what a stripe-wise conv computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeLayout {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel_size: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding.
    pub padding: [usize; 2],
    /// Whether the conv has a bias.
    pub bias: bool,
    /// The kernel positions that have live stripes, in row-major order.
    pub positions: Vec<StripePosition>,
}

impl StripeLayout {
    /// The layout of a declared layer as it is: its non-zero skeleton entries.
    pub fn of_layer(layer: &PrunableLayer) -> Self {
        let skeleton: Vec<f32> = layer.skeleton.clone().into_data().iter::<f32>().collect();
        let geometry = (layer.stride, layer.padding);
        Self::from_skeleton(
            layer.weight_dims(),
            geometry,
            layer.bias.is_some(),
            &skeleton,
        )
    }

    /// The layout of `conv` as it is: its non-zero skeleton entries.
    pub fn of(conv: &SkeletonConv2d) -> Self {
        Self::of_values(conv, &skeleton_values(conv))
    }

    /// The layout of `conv` whose skeleton is `skeleton` (host copy).
    fn of_values(conv: &SkeletonConv2d, skeleton: &[f32]) -> Self {
        let (geometry, bias) = ((conv.stride, conv.padding), conv.bias.is_some());
        Self::from_skeleton(conv.weight_dims(), geometry, bias, skeleton)
    }

    /// The non-zero entries of `skeleton [Cout, kh, kw]` (row-major) for a conv of this
    /// geometry.
    fn from_skeleton(
        [cout, cin, kh, kw]: [usize; 4],
        (stride, padding): ([usize; 2], [usize; 2]),
        bias: bool,
        skeleton: &[f32],
    ) -> Self {
        let positions = (0..kh * kw)
            .filter_map(|p| {
                let filters: Vec<usize> = (0..cout)
                    .filter(|&f| skeleton[f * kh * kw + p] != 0.0)
                    .collect();
                (!filters.is_empty()).then_some(StripePosition {
                    offset: [p / kw, p % kw],
                    filters,
                })
            })
            .collect();
        Self {
            in_channels: cin,
            out_channels: cout,
            kernel_size: [kh, kw],
            stride,
            padding,
            bias,
            positions,
        }
    }

    /// Number of live stripes.
    pub fn live_stripes(&self) -> usize {
        self.positions.iter().map(|p| p.filters.len()).sum()
    }

    /// The live-stripe mask `[out_channels, kh, kw]`, row-major.
    pub fn stripe_mask(&self) -> Vec<bool> {
        let [kh, kw] = self.kernel_size;
        let mut mask = vec![false; self.out_channels * kh * kw];
        for p in &self.positions {
            let [i, j] = p.offset;
            for &f in &p.filters {
                mask[(f * kh + i) * kw + j] = true;
            }
        }
        mask
    }

    /// Output size for an input of size `hw`.
    pub fn output_size(&self, hw: [usize; 2]) -> [usize; 2] {
        output_size(hw, self.kernel_size, self.stride, self.padding)
    }
}

/// The layout and packed weights of a stripe-wise conv, for the host kernel, keyed by the ids of
/// the weight and skeleton they were read from. Each clone of a layer starts empty (a clone may
/// be trained apart); a training forward pass clears it.
#[derive(Debug, Default)]
pub(crate) struct PackCache(Mutex<Option<Packed>>);

#[derive(Debug)]
struct Packed {
    ids: [ParamId; 2],
    layout: Arc<StripeLayout>,
    weights: Arc<Vec<f32>>,
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

    /// The packed layout and weights of `conv`, packed now if not yet.
    fn get(&self, conv: &SkeletonConv2d) -> (Arc<StripeLayout>, Arc<Vec<f32>>) {
        let ids = [conv.weight.id, conv.skeleton.id];
        if let Some(p) = self.lock().as_ref().filter(|p| p.ids == ids) {
            return (p.layout.clone(), p.weights.clone());
        }
        let skeleton = skeleton_values(conv);
        let layout = Arc::new(StripeLayout::of_values(conv, &skeleton));
        let weights = Arc::new(packed_weights(conv, &layout, &skeleton));
        *self.lock() = Some(Packed {
            ids,
            layout: layout.clone(),
            weights: weights.clone(),
        });
        (layout, weights)
    }
}

/// `S` on the host, `[Cout·kh·kw]`.
fn skeleton_values(conv: &SkeletonConv2d) -> Vec<f32> {
    conv.skeleton.val().into_data().iter::<f32>().collect()
}

/// The stripe-wise forward pass of `conv`: through the host CPU kernel for f32 inputs on the
/// CPU backends, through backend tensor ops elsewhere. It computes `W ⊙ S` on the live stripes,
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
/// ([`host_kernel::Epilogue`]); elsewhere they are the same ops after the conv. The caller
/// checks that `norm` has `Cout` channels and `residual` the output's shape.
pub(crate) fn forward_with(
    conv: &SkeletonConv2d,
    input: Tensor<4>,
    norm: Option<&BatchNorm>,
    residual: Option<Tensor<4>>,
    activation: Activation,
) -> Tensor<4> {
    if runs_on_host(&input) && residual.as_ref().is_none_or(runs_on_host) {
        let (layout, weights) = conv.packed.get(conv);
        let epilogue = epilogue(conv, norm, activation);
        return forward_host(&layout, &weights, input, &epilogue, residual);
    }
    let cout = conv.weight_dims()[0];
    let mut out = forward_tensor_ops(conv, &StripeLayout::of(conv), input);
    if let Some(b) = &conv.bias {
        out = out + b.val().reshape([1, cout, 1, 1]);
    }
    if let Some(norm) = norm {
        out = norm.forward(out);
    }
    if let Some(r) = residual {
        out = out + r;
    }
    activation.forward(out)
}

/// The host kernel's output pass for `conv` followed by `norm` (inference form) and
/// `activation`: `scale = γ / √(σ² + ε)` and `shift = bn(b)`, computed in f64.
fn epilogue(conv: &SkeletonConv2d, norm: Option<&BatchNorm>, activation: Activation) -> Epilogue {
    let cout = conv.weight_dims()[0];
    let bias = conv.bias.as_ref().map(|b| host(b.val()));
    let affine = match norm {
        Some(n) => {
            let values = norm_values(n);
            let [gamma, beta, mean, var] = values.each_ref().map(Vec::as_slice);
            let scale = (0..cout)
                .map(|c| gamma[c] / (var[c] + n.epsilon).sqrt())
                .collect();
            let shift = norm_of_bias([gamma, beta, mean, var], n.epsilon, bias.as_deref());
            Some((scale, shift))
        }
        None => bias.map(|b| (vec![1.0; cout], b)),
    };
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    Epilogue {
        affine: affine.map(|(scale, shift)| (to_f32(scale), to_f32(shift))),
        relu: activation == Activation::Relu,
    }
}

/// `(W ⊙ S)_ij [n_ij, Cin]` of every position of `layout`.
fn position_weights(conv: &SkeletonConv2d, layout: &StripeLayout) -> Vec<Tensor<2>> {
    let [cout, cin, ..] = conv.weight_dims();
    let weight = conv.weight.val() * conv.skeleton.val().unsqueeze_dim(1);
    let device = weight.device();
    layout
        .positions
        .iter()
        .map(|p| {
            let [i, j] = p.offset;
            let at = weight
                .clone()
                .slice([0..cout, 0..cin, i..i + 1, j..j + 1])
                .reshape([cout, cin]);
            if p.filters.len() == cout {
                at
            } else {
                at.select(0, index_tensor(&p.filters, &device))
            }
        })
        .collect()
}

/// Indices as an int tensor on `device`.
pub(crate) fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(idx, [indices.len()]), device)
}

/// The forward pass with backend tensor ops only (strided slice, 1×1 conv, indexed add): runs
/// on every backend.
pub(crate) fn forward_tensor_ops(
    conv: &SkeletonConv2d,
    layout: &StripeLayout,
    input: Tensor<4>,
) -> Tensor<4> {
    let [batch, _, h, w] = input.dims();
    let [ho, wo] = layout.output_size([h, w]);
    let cout = layout.out_channels;
    let device = input.device();
    let mut out = Tensor::<4>::zeros([batch, cout, ho, wo], (&device, input.dtype()));
    if layout.positions.is_empty() {
        return out;
    }
    let [ph, pw] = layout.padding;
    let [sh, sw] = layout.stride;
    let input = if ph + pw > 0 {
        input.pad([(ph, ph), (pw, pw)], PadMode::Constant(0.0))
    } else {
        input
    };
    let weights = position_weights(conv, layout);
    for (position, weight) in layout.positions.iter().zip(weights) {
        let [i, j] = position.offset;
        let window = input.clone().slice([
            Slice::from(..),
            Slice::from(..),
            Slice::from_range_stepped(i..i + sh * (ho - 1) + 1, sh as isize),
            Slice::from_range_stepped(j..j + sw * (wo - 1) + 1, sw as isize),
        ]);
        let [n, cin] = weight.dims();
        let y = conv2d(
            window,
            weight.reshape([n, cin, 1, 1]),
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        out = if n == cout {
            out + y
        } else {
            out.select_assign(
                1,
                index_tensor(&position.filters, &device),
                y,
                IndexingUpdateOp::Add,
            )
        };
    }
    out
}

/// The forward pass through [`host_kernel`] (f32 on a CPU backend, no autodiff), with its
/// output pass.
fn forward_host(
    layout: &StripeLayout,
    w_all: &[f32],
    input: Tensor<4>,
    epilogue: &Epilogue,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    let device = input.device();
    let [batch, cin, h, w] = input.dims();
    let [ho, wo] = layout.output_size([h, w]);
    let geometry = Geometry {
        input: [cin, h, w],
        output: [ho, wo],
    };
    let conv = |x: &[f32], r: Option<&[f32]>| {
        host_kernel::stripe_conv(layout, x, w_all, geometry, epilogue, r)
    };
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

/// Whether `input` is an f32 tensor of a CPU backend without autodiff, where
/// [`host_kernel`] is faster than backend tensor ops.
pub(crate) fn runs_on_host(input: &Tensor<4>) -> bool {
    let device = input.device();
    input.dtype() == burn::tensor::DType::F32 && !device.is_autodiff() && is_cpu(&device)
}

/// Whether `device` is one of Burn's CPU backends compiled in (`flex`, `ndarray`).
fn is_cpu(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if *device == Device::ndarray() {
        return true;
    }
    let _ = device;
    false
}
