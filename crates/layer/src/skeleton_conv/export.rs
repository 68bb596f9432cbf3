//! The forward pass of a [`SkeletonConv2d`] while a model is recorded for an ONNX export
//! (Burn's capture device): standard convolutions with constant weights, nothing else.
//!
//! The weight of the recorded conv is computed on the host from the layer's parameters:
//! `W' = W ⊙ S`, with the BatchNorm of [`SkeletonConv2d::forward_norm`] (inference form) folded
//! in, `W'_f = W_f · γ_f / √(σ²_f + ε)` and `b' = bn(b)` ([`NormFold`], METHOD §5). A runtime
//! never sees the skeleton, the execution marker or a `Mul`; the file holds one `Conv` per layer.
//!
//! A stripe-wise (compacted) conv is written in one of two forms ([`ExportForm`](crate::ExportForm)):
//! - [`ExportForm::BoundingBox`]: one `Conv` over the bounding box of the live kernel positions,
//!   dead stripes inside it as zeros. The box is widened where cropping would need a negative
//!   padding, so the recorded conv pads the input and never slices it (a slice of a tensor with
//!   a dynamic batch axis cannot be exported).
//! - [`ExportForm::Stripes`]: the stripe decomposition, one 1×1 `Conv` per live kernel position
//!   `(i, j)` on the input shifted by `(d_h·i, d_w·j)`, summed:
//!   `y = b' + Σ_(i,j) conv1×1(pad(x)[.., d_h·i :: s_h, d_w·j :: s_w], W'[:, :, i, j])`.
//!   Its shifts are slices, so a model exported in this form has the example's batch size.

use std::ops::Range;

use burn::nn::BatchNorm;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Device, Slice, Tensor, TensorData};

use super::{SkeletonConv2d, stripes};
use crate::Activation;
use crate::capture::{ExportForm, export_form};
use crate::fold::{NormFold, host};

/// `act(norm(conv(x)) + residual)` recorded as standard convolutions (module documentation).
pub(crate) fn forward(
    conv: &SkeletonConv2d,
    input: Tensor<4>,
    norm: Option<&BatchNorm>,
    residual: Option<Tensor<4>>,
    activation: Activation,
) -> Tensor<4> {
    let device = input.device();
    let [cout, cin_group, kh, kw] = conv.weight_dims();
    let weight: Vec<f64> = conv.weight.val().into_data().iter::<f64>().collect();
    let skeleton = stripes::skeleton_values(conv);
    let layout = stripes::layout_of(conv, &skeleton);
    let bias = conv.bias.as_ref().map(|b| host(b.val()));
    let (scale, shift) = match norm {
        Some(n) => {
            let NormFold { scale, shift } = NormFold::of(n, bias.as_deref());
            (Some(scale), Some(shift))
        }
        None => (None, bias),
    };
    let filter_size = cin_group * kh * kw;
    let folded = |f: usize, c: usize, i: usize, j: usize| {
        let s = f64::from(skeleton[(f * kh + i) * kw + j]);
        let w = weight[f * filter_size + (c * kh + i) * kw + j] * s;
        scale.as_ref().map_or(w, |s| w * s[f])
    };
    let spec = conv.spec();
    let [_, _, h, w] = input.dims();
    let [(top, bottom), (left, right)] = spec.padding_at([h, w]);
    let shift = shift.map(|b| constant(b, [cout], &device));

    let stripe_wise = conv.is_stripe_wise();
    let form = export_form();
    let out = if stripe_wise && form == ExportForm::Stripes && !layout.positions.is_empty() {
        let [ho, wo] = spec.output_size([h, w]);
        let [sh, sw] = spec.stride;
        let [dh, dw] = spec.dilation;
        let padded = pad(input, [(top, bottom), (left, right)]);
        let options = ConvOptions::new([sh, sw], [0, 0], [1, 1], spec.groups);
        let mut sum = None;
        for [i, j] in layout.positions.iter().map(|p| p.offset) {
            let kernel: Vec<f64> = (0..cout)
                .flat_map(|f| (0..cin_group).map(move |c| (f, c)))
                .map(|(f, c)| folded(f, c, i, j))
                .collect();
            let kernel = constant(kernel, [cout, cin_group, 1, 1], &device);
            let shifted = padded.clone().slice([
                Slice::from(..),
                Slice::from(..),
                Slice::from(dh * i..dh * i + sh * (ho - 1) + 1),
                Slice::from(dw * j..dw * j + sw * (wo - 1) + 1),
            ]);
            let y = conv2d(shifted, kernel, None, options.clone());
            sum = Some(match sum {
                Some(s) => s + y,
                None => y,
            });
        }
        let sum = sum.expect("at least one live position");
        match shift {
            Some(b) => sum + b.reshape([1, cout, 1, 1]),
            None => sum,
        }
    } else {
        // The live box, widened where a crop would need a negative padding; the whole kernel
        // for a dense layer or one without live stripes.
        let [rows, cols] = match stripe_wise {
            true => layout.live_box().unwrap_or([0..kh, 0..kw]),
            false => [0..kh, 0..kw],
        };
        let [dh, dw] = spec.dilation;
        let rows = widen(rows, kh, [top, bottom], dh);
        let cols = widen(cols, kw, [left, right], dw);
        let kernel: Vec<f64> = (0..cout)
            .flat_map(|f| (0..cin_group).map(move |c| (f, c)))
            .flat_map(|(f, c)| {
                let cols = cols.clone();
                rows.clone()
                    .flat_map(move |i| cols.clone().map(move |j| (f, c, i, j)))
            })
            .map(|(f, c, i, j)| folded(f, c, i, j))
            .collect();
        let kernel = constant(kernel, [cout, cin_group, rows.len(), cols.len()], &device);
        let padding = [
            (top - dh * rows.start, bottom - dh * (kh - rows.end)),
            (left - dw * cols.start, right - dw * (kw - cols.end)),
        ];
        let (input, padding) = match padding.iter().all(|(a, b)| a == b) {
            true => (input, [padding[0].0, padding[1].0]),
            false => (pad(input, padding), [0, 0]),
        };
        let options = ConvOptions::new(spec.stride, padding, spec.dilation, spec.groups);
        conv2d(input, kernel, shift, options)
    };
    activation.forward(match residual {
        Some(r) => out + r,
        None => out,
    })
}

/// The rows (or columns) `range` of a kernel of `size`, widened so that cropping the kernel to
/// them keeps both paddings `[before, after]` non-negative: `start ≤ before / d` and
/// `size − end ≤ after / d`.
fn widen(range: Range<usize>, size: usize, [before, after]: [usize; 2], d: usize) -> Range<usize> {
    range.start.min(before / d)..range.end.max(size.saturating_sub(after / d))
}

/// `x` with zeros added around its spatial axes (unchanged when there are none to add).
fn pad(x: Tensor<4>, [(top, bottom), (left, right)]: [(usize, usize); 2]) -> Tensor<4> {
    match top + bottom + left + right {
        0 => x,
        _ => x.pad([(top, bottom), (left, right)], PadMode::Constant(0.0)),
    }
}

/// A constant f32 tensor of `shape` from host values.
fn constant<const D: usize>(values: Vec<f64>, shape: [usize; D], device: &Device) -> Tensor<D> {
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crop keeps both paddings non-negative: `p_before − d·start ≥ 0` and
    /// `p_after − d·(size − end) ≥ 0`.
    #[test]
    fn the_box_is_widened_only_where_a_padding_would_go_negative() {
        // 3×3, padding 1: the middle row alone keeps padding 0 on both sides.
        assert_eq!(widen(1..2, 3, [1, 1], 1), 1..2);
        // No padding: nothing can be cropped without changing the output size.
        assert_eq!(widen(2..3, 3, [0, 0], 1), 0..3);
        // Padding 2 with dilation 2 allows one row off each side, not two.
        assert_eq!(widen(2..3, 5, [2, 2], 2), 1..4);
        // Asymmetric padding (Same with an even kernel): 0 before, 1 after.
        assert_eq!(widen(1..2, 2, [0, 1], 1), 0..2);
        assert_eq!(widen(0..1, 2, [0, 1], 1), 0..1);
        for (range, size, pads, d) in [
            (0..1, 3, [1, 1], 1),
            (2..3, 7, [3, 3], 1),
            (1..2, 5, [4, 4], 2),
        ] {
            let r = widen(range.clone(), size, pads, d);
            assert!(r.start <= range.start && r.end >= range.end);
            assert!(pads[0] >= d * r.start && pads[1] >= d * (size - r.end));
        }
    }
}
