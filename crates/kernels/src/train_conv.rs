//! The dense convolution of training on the flex CPU backend, with its own backward pass.
//!
//! Burn 0.22's flex backend differentiates `conv2d` with the backend defaults: the weight
//! gradient is a convolution of the input with the output gradient as its kernel (a GEMM nine
//! columns wide over an `N·Ho·Wo`-deep im2col) and the passes run mostly on one core
//! (docs/performance.md). Here the three products of a convolution are GEMMs per image, spread over
//! the cores, as PyTorch's CPU convolution does:
//!
//! - forward `Y_n = W · cols(X_n)`, `W [Cout, Cin·kh·kw]`, `cols(X_n) [Cin·kh·kw, Ho·Wo]`;
//! - weight gradient `dW = Σ_n dY_n · cols(X_n)ᵀ`, summed over fixed chunks of 8 images and the
//!   chunks' partial sums added in a fixed tree, so the result does not depend on the threads;
//! - input gradient `dX_n = col2im(Wᵀ · dY_n)`.
//!
//! It is taken for f32 tensors on `Autodiff<Flex>` (the default training device); every other
//! backend and type keeps Burn's `conv2d`.

use burn::tensor::{DType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use rayon::prelude::*;

use crate::flex::{Flex, FlexTensor, Train, flex_tensor, flex_values};
use crate::gemm::{Operand, matmul_strided};
use crate::geometry::Geometry;
use crate::scratch::Scratch;

/// Images per weight-gradient partial sum.
const CHUNK: usize = 8;

impl Geometry {
    /// `Cin · kh · kw`.
    fn k(&self) -> usize {
        let [_, cin, kh, kw] = self.weight;
        cin * kh * kw
    }

    /// `Ho · Wo`.
    fn p(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The output columns `x0..x1` whose input column `x · sw + j − pw` is inside the image,
    /// and that input column for `x0`.
    fn columns(&self, j: usize) -> (usize, usize, usize) {
        let (w, wo) = (self.input[3], self.output[1]);
        let (sw, pw) = (self.stride[1], self.padding[1]);
        let x0 = pw.saturating_sub(j).div_ceil(sw).min(wo);
        let x1 = (w + pw).saturating_sub(j).div_ceil(sw).min(wo).max(x0);
        (x0, x1, (x0 * sw + j).saturating_sub(pw))
    }

    /// The input row read by output row `y` at kernel row `i`, if it is inside the image.
    fn input_row(&self, y: usize, i: usize) -> Option<usize> {
        (y * self.stride[0] + i)
            .checked_sub(self.padding[0])
            .filter(|&v| v < self.input[2])
    }

    /// The im2col matrix of one image `[Cin·kh·kw, Ho·Wo]` (zero where the kernel reads padding):
    /// [`Geometry::im2col_flat`] where the output rows are as wide as the input rows at stride
    /// 1 (every "same"-padded conv, and the input gradient's transposed conv of one), row by row
    /// otherwise.
    fn im2col(&self, image: &[f32], cols: &mut [f32]) {
        if self.stride == [1, 1] && self.output[1] == self.input[3] {
            self.im2col_flat(image, cols);
        } else {
            self.im2col_rows(image, cols);
        }
    }

    /// im2col when `Wo = W` at stride 1: entry `(y, x)` of row `(c, i, j)` is input entry
    /// `(y + i − ph, x + j − pw)`, a flat offset `off = (i − ph)·W + (j − pw)` from `y·W + x`, so
    /// each row is one contiguous copy of the plane shifted by `off`; then the entries whose
    /// input column falls outside the image (`x < x0` or `x ≥ x1`, read from the neighbouring
    /// row by the flat copy) and the rows outside it are set to zero.
    fn im2col_flat(&self, image: &[f32], cols: &mut [f32]) {
        let [_, cin, h, w] = self.input;
        let [_, _, kh, kw] = self.weight;
        let ho = self.output[0];
        let [ph, pw] = self.padding;
        let plane_len = h * w;
        for c in 0..cin {
            let plane = &image[c * plane_len..][..plane_len];
            for i in 0..kh {
                // Output rows whose input row `y + i − ph` is inside the image.
                let y0 = ph.saturating_sub(i).min(ho);
                let y1 = (h + ph).saturating_sub(i).min(ho).max(y0);
                for j in 0..kw {
                    let (x0, x1, _) = self.columns(j);
                    let row = &mut cols[((c * kh + i) * kw + j) * ho * w..][..ho * w];
                    let off = (i as isize - ph as isize) * w as isize + j as isize - pw as isize;
                    // The part of `[y0·W, y1·W)` whose source `d + off` is inside the plane
                    // (empty where the kernel reaches past a plane shorter than it).
                    let (first, end) = ((y0 * w) as isize, (y1 * w) as isize);
                    let lo = (-off).clamp(first, end);
                    let hi = (plane_len as isize - off).clamp(lo, end);
                    let (lo, hi) = (lo as usize, hi as usize);
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                    if hi > lo {
                        let src = (lo as isize + off) as usize;
                        row[lo..hi].copy_from_slice(&plane[src..src + (hi - lo)]);
                    }
                    // Column by column down the rows: one or two entries a row, which as
                    // per-row slices would each be a `memset` call.
                    for x in (0..x0).chain(x1..w) {
                        for y in y0..y1 {
                            row[y * w + x] = 0.0;
                        }
                    }
                }
            }
        }
    }

    /// im2col row by row (any stride and padding).
    fn im2col_rows(&self, image: &[f32], cols: &mut [f32]) {
        let [_, cin, h, w] = self.input;
        let [_, _, kh, kw] = self.weight;
        let [ho, wo] = self.output;
        let sw = self.stride[1];
        for c in 0..cin {
            let plane = &image[c * h * w..][..h * w];
            for i in 0..kh {
                for j in 0..kw {
                    let (x0, x1, xi) = self.columns(j);
                    let row = &mut cols[((c * kh + i) * kw + j) * ho * wo..][..ho * wo];
                    for (y, out) in row.chunks_exact_mut(wo).enumerate() {
                        let Some(yi) = self.input_row(y, i) else {
                            out.fill(0.0);
                            continue;
                        };
                        let src = &plane[yi * w + xi..];
                        out[..x0].fill(0.0);
                        out[x1..].fill(0.0);
                        let inside = &mut out[x0..x1];
                        if sw == 1 {
                            inside.copy_from_slice(&src[..inside.len()]);
                        } else {
                            for (o, v) in inside.iter_mut().zip(src.iter().step_by(sw)) {
                                *o = *v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds the im2col-shaped `cols` back into one image's gradient (the adjoint of `im2col`).
    fn col2im_add(&self, cols: &[f32], image: &mut [f32]) {
        let [_, cin, h, w] = self.input;
        let [_, _, kh, kw] = self.weight;
        let [ho, wo] = self.output;
        let sw = self.stride[1];
        for c in 0..cin {
            let plane = &mut image[c * h * w..][..h * w];
            for i in 0..kh {
                for j in 0..kw {
                    let (x0, x1, xi) = self.columns(j);
                    let row = &cols[((c * kh + i) * kw + j) * ho * wo..][..ho * wo];
                    for (y, grad) in row.chunks_exact(wo).enumerate() {
                        let Some(yi) = self.input_row(y, i) else {
                            continue;
                        };
                        let dst = &mut plane[yi * w + xi..];
                        for (d, g) in dst.iter_mut().step_by(sw).zip(&grad[x0..x1]) {
                            *d += g;
                        }
                    }
                }
            }
        }
    }

    /// `Y [N, Cout, Ho, Wo]`.
    fn forward(&self, x: &[f32], weight: &[f32]) -> Vec<f32> {
        let [n, cin, h, w] = self.input;
        let cout = self.weight[0];
        let (k, p) = (self.k(), self.p());
        let mut y = vec![0.0; n * cout * p];
        y.par_chunks_mut(cout * p)
            .zip(x.par_chunks(cin * h * w))
            .for_each(|(out, image)| {
                // The thread's scratch: im2col writes every entry.
                let mut scratch = Scratch::take(k * p);
                let cols = &mut scratch.0[..k * p];
                self.im2col(image, cols);
                matmul_strided(
                    Operand {
                        values: weight,
                        strides: [k, 1],
                    },
                    Operand {
                        values: cols,
                        strides: [p, 1],
                    },
                    out,
                    [cout, k, p],
                    false,
                );
            });
        y
    }

    /// `dX [N, Cin, H, W]`. At stride 1 it is the convolution of `dY`, padded by `k − 1 − p`,
    /// with the flipped, transposed kernel `W' [Cin, Cout, kh, kw]`, `W'[c, o, i, j] =
    /// W[o, c, kh − 1 − i, kw − 1 − j]` (the forward pass's kernel, no scatter); otherwise
    /// `col2im(Wᵀ · dY_n)`.
    fn input_grad(&self, dy: &[f32], weight: &[f32]) -> Vec<f32> {
        let [n, cin, h, w] = self.input;
        let [cout, _, kh, kw] = self.weight;
        let [ph, pw] = self.padding;
        if self.stride == [1, 1] && ph < kh && pw < kw {
            let mut flipped = vec![0.0; weight.len()];
            for o in 0..cout {
                for c in 0..cin {
                    for i in 0..kh {
                        for j in 0..kw {
                            flipped[((c * cout + o) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] =
                                weight[((o * cin + c) * kh + i) * kw + j];
                        }
                    }
                }
            }
            let transposed = Geometry {
                input: [n, cout, self.output[0], self.output[1]],
                weight: [cin, cout, kh, kw],
                stride: [1, 1],
                padding: [kh - 1 - ph, kw - 1 - pw],
                dilation: [1, 1],
                output: [h, w],
            };
            return transposed.forward(dy, &flipped);
        }
        let (k, p) = (self.k(), self.p());
        let mut dx = vec![0.0; n * cin * h * w];
        dx.par_chunks_mut(cin * h * w)
            .zip(dy.par_chunks(cout * p))
            .for_each(|(image, grad)| {
                // The product below overwrites the scratch.
                let mut scratch = Scratch::take(k * p);
                let cols = &mut scratch.0[..k * p];
                // Wᵀ [k, Cout]: W read with swapped strides.
                matmul_strided(
                    Operand {
                        values: weight,
                        strides: [1, k],
                    },
                    Operand {
                        values: grad,
                        strides: [p, 1],
                    },
                    cols,
                    [k, cout, p],
                    false,
                );
                self.col2im_add(cols, image);
            });
        dx
    }

    /// `dW [Cout, Cin, kh, kw]`.
    fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let [n, cin, h, w] = self.input;
        let cout = self.weight[0];
        let (k, p) = (self.k(), self.p());
        let image = cin * h * w;
        let chunks: Vec<usize> = (0..n.div_ceil(CHUNK)).collect();
        // Each chunk's `dWᵀ [k, Cout] = Σ cols_i [k, P] · dY_iᵀ [P, Cout]`: the long im2col rows
        // are the contiguous operand, which the GEMM reads fastest.
        let partials: Vec<Vec<f32>> = chunks
            .par_iter()
            .map(|&chunk| {
                let mut dwt = vec![0.0; k * cout];
                let mut scratch = Scratch::take(k * p);
                let cols = &mut scratch.0[..k * p];
                for i in chunk * CHUNK..((chunk + 1) * CHUNK).min(n) {
                    self.im2col(&x[i * image..][..image], cols);
                    matmul_strided(
                        Operand {
                            values: cols,
                            strides: [p, 1],
                        },
                        Operand {
                            values: &dy[i * cout * p..][..cout * p],
                            strides: [1, p],
                        },
                        &mut dwt,
                        [k, p, cout],
                        true,
                    );
                }
                dwt
            })
            .collect();
        let dwt = tree_sum(partials).unwrap_or_else(|| vec![0.0; k * cout]);
        let mut dw = vec![0.0; cout * k];
        for (q, row) in dwt.chunks_exact(cout).enumerate() {
            for (o, v) in row.iter().enumerate() {
                dw[o * k + q] = *v;
            }
        }
        dw
    }
}

/// The sum of `parts`, added pairwise in a fixed tree.
fn tree_sum(mut parts: Vec<Vec<f32>>) -> Option<Vec<f32>> {
    while parts.len() > 1 {
        let mut next = Vec::with_capacity(parts.len().div_ceil(2));
        let mut it = parts.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            }
            next.push(a);
        }
        parts = next;
    }
    parts.pop()
}

#[derive(Debug)]
struct HostConvBackward;

impl Backward<Flex, 2> for HostConvBackward {
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, g) = ops.state;
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        flex_values(&dy, |dy| {
            if let Some(node) = node_x {
                let dx = flex_values(&weight, |w| g.input_grad(dy, w));
                grads.register::<Flex>(node.id, flex_tensor(dx, g.input));
            }
            if let Some(node) = node_w {
                let dw = flex_values(&x, |x| g.weight_grad(x, dy));
                grads.register::<Flex>(node.id, flex_tensor(dw, g.weight));
            }
        });
    }
}

/// `conv2d(input, weight)` (no bias, no dilation, one group) through this module's kernels when
/// both tensors are f32 on `Autodiff<Flex>`; `None` otherwise (the caller uses Burn's).
#[must_use]
pub fn conv2d(
    input: &Tensor<4>,
    weight: &Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<Tensor<4>> {
    if input.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    let [n, cin, h, w] = input.dims();
    let [cout, wcin, kh, kw] = weight.dims();
    let fits = |size: usize, k: usize, pad: usize| size + 2 * pad >= k;
    if wcin != cin || !fits(h, kh, padding[0]) || !fits(w, kw, padding[1]) || stride.contains(&0) {
        return None;
    }
    let x = input.clone().try_into_primitive::<Train>().ok()?;
    let wt = weight.clone().try_into_primitive::<Train>().ok()?;
    let g = Geometry::new([n, cin, h, w], [cout, cin, kh, kw], stride, padding);
    let output = g.output;
    let guards = [x.node(), wt.node()];
    let (x, wt) = (x.into_primitive(), wt.into_primitive());
    let y = flex_values(&x, |x| flex_values(&wt, |w| g.forward(x, w)));
    let y = flex_tensor(y, [n, cout, output[0], output[1]]);
    let out = match HostConvBackward
        .prepare::<burn_autodiff::checkpoint::strategy::NoCheckpointing>(guards)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x, wt, g), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<Train>(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Distribution};

    /// Output, input gradient and weight gradient equal Burn's `conv2d` on 3×3, 1×1 and
    /// rectangular kernels, strides 1 and 2, with and without padding, a batch over two chunks.
    #[test]
    fn equals_burns_conv2d_forward_and_backward() {
        let device = Device::default().autodiff();
        device.seed(3);
        for (input, weight, stride, padding) in [
            ([3, 4, 9, 9], [5, 4, 3, 3], [1, 1], [1, 1]),
            ([10, 4, 9, 8], [6, 4, 3, 3], [2, 2], [1, 1]),
            ([2, 3, 7, 7], [4, 3, 1, 1], [2, 2], [0, 0]),
            ([17, 2, 6, 5], [3, 2, 3, 2], [1, 2], [0, 1]),
            ([2, 2, 1, 3], [3, 2, 5, 5], [1, 1], [2, 2]),
        ] {
            let x =
                Tensor::<4>::random(input, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let w =
                Tensor::<4>::random(weight, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let ours = conv2d(&x, &w, stride, padding).expect("flex autodiff f32");
            let theirs = burn_conv2d(
                x.clone(),
                w.clone(),
                None,
                ConvOptions::new(stride, padding, [1, 1], 1),
            );
            assert_eq!(ours.dims(), theirs.dims());
            let probe = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let (ga, gb) = (
                (ours.clone() * probe.clone()).sum().backward(),
                (theirs.clone() * probe).sum().backward(),
            );
            let close = |a: Tensor<4>, b: Tensor<4>, what: &str| {
                let a: Vec<f32> = a.into_data().iter::<f32>().collect();
                let b: Vec<f32> = b.into_data().iter::<f32>().collect();
                let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                let diff = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    diff <= 1e-5 * scale,
                    "{what} {input:?} {weight:?}: {diff} of {scale}"
                );
            };
            close(ours.inner(), theirs.inner(), "output");
            close(x.grad(&ga).unwrap(), x.grad(&gb).unwrap(), "input gradient");
            close(
                w.grad(&ga).unwrap(),
                w.grad(&gb).unwrap(),
                "weight gradient",
            );
        }
    }

    /// The flat im2col equals the row-by-row one wherever it is taken: "same" and partial
    /// padding, square and rectangular kernels, planes smaller than the kernel's reach.
    #[test]
    fn flat_im2col_equals_rows() {
        for (input, weight, padding) in [
            ([1, 3, 9, 9], [1, 3, 3, 3], [1, 1]),
            ([1, 2, 8, 5], [1, 2, 5, 5], [2, 2]),
            ([1, 2, 6, 7], [1, 2, 3, 3], [0, 1]),
            ([1, 2, 6, 7], [1, 2, 1, 3], [0, 1]),
            ([1, 2, 6, 7], [1, 2, 3, 1], [1, 0]),
            ([1, 1, 2, 2], [1, 1, 3, 3], [1, 1]),
            ([1, 1, 1, 3], [1, 1, 3, 3], [2, 1]),
            ([1, 1, 1, 3], [1, 1, 5, 5], [2, 2]),
            ([1, 1, 1, 2], [1, 1, 4, 3], [2, 1]),
            ([1, 4, 4, 4], [1, 4, 1, 1], [0, 0]),
        ] {
            let [_, _, h, w] = input;
            let [_, _, kh, kw] = weight;
            let output = [h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1];
            let g = Geometry {
                input,
                weight,
                stride: [1, 1],
                padding,
                dilation: [1, 1],
                output,
            };
            assert_eq!(output[1], w, "{input:?} {weight:?}: the flat path applies");
            let image: Vec<f32> = (0..input.iter().product::<usize>())
                .map(|v| v as f32 + 1.0)
                .collect();
            let (mut flat, mut rows) = (vec![f32::NAN; g.k() * g.p()], vec![0.0; g.k() * g.p()]);
            g.im2col_flat(&image, &mut flat);
            g.im2col_rows(&image, &mut rows);
            assert_eq!(flat, rows, "{input:?} {weight:?} {padding:?}");
        }
    }

    #[test]
    fn other_types_and_devices_keep_burns_conv() {
        let device = Device::default();
        let x = Tensor::<4>::zeros([1, 2, 4, 4], &device);
        let w = Tensor::<4>::zeros([3, 2, 3, 3], &device);
        assert!(conv2d(&x, &w, [1, 1], [1, 1]).is_none(), "no autodiff");
    }
}
