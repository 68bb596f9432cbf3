//! BatchNorm in training mode on the flex CPU backend, with its own backward pass.
//!
//! Burn 0.22 computes `batch_norm_train` and its backward with the backend defaults, which move
//! the channel axis to the front (`swap_dims(0, 1)` and a copy) for every reduction; flex does
//! not override them. Here the per-channel sums run over the `N` blocks of `H·W` values of the
//! NCHW layout directly, channels spread over the cores. Same statistics as Burn's: the mean and
//! the biased variance over `N·H·W`, `y = γ (x − μ) / √(σ² + ε) + β`; backward
//! `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ / √(σ² + ε) · (dy − dβ / M − x̂ · dγ / M)`.

use burn::nn::BatchNorm;
use burn::tensor::{DType, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use rayon::prelude::*;

use crate::flex::{Flex, FlexTensor, Train, flex_tensor, flex_values};

/// `[N, C, H·W]`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    n: usize,
    c: usize,
    hw: usize,
}

/// Per channel: `Σ f(c, a_i, b_i)` over the `N` blocks of channel `c` (`b = None`: `f` is given
/// `a_i` again as its third argument, for sums of `a` alone).
fn channel_sums(
    shape: Shape,
    a: &[f32],
    b: Option<&[f32]>,
    f: impl Fn(usize, f32, f32) -> f64 + Sync,
) -> Vec<f64> {
    (0..shape.c)
        .into_par_iter()
        .map(|c| {
            let mut sum = 0f64;
            for n in 0..shape.n {
                let start = (n * shape.c + c) * shape.hw;
                let block = &a[start..start + shape.hw];
                let other = b.map_or(block, |b| &b[start..start + shape.hw]);
                sum += lane_sum(block, other, |x, y| f(c, x, y));
            }
            sum
        })
        .collect()
}

/// Partial sums a block is added into, entry `i` into sum `i mod LANES`.
const LANES: usize = 8;

/// `Σ_i f(a_i, b_i)` in [`LANES`] interleaved partial sums, added pairwise at the end: the same
/// order on every run and thread count, and independent adds the CPU can overlap and vectorise,
/// where one running sum waits on each add in turn (docs/performance.md, "BatchNorm sums in
/// eight lanes").
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let (a_lanes, b_lanes) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_lanes.remainder(), b_lanes.remainder());
    for (xs, ys) in a_lanes.zip(b_lanes) {
        for ((s, x), y) in acc.iter_mut().zip(xs).zip(ys) {
            *s += f(*x, *y);
        }
    }
    for ((s, x), y) in acc.iter_mut().zip(a_rest).zip(b_rest) {
        *s += f(*x, *y);
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
}

#[derive(Debug)]
struct HostNormBackward;

impl Backward<Flex, 3> for HostNormBackward {
    /// `x`, `γ`, the means, `1 / √(σ² + ε)`, the shape.
    type State = (FlexTensor, Vec<f32>, Vec<f32>, Vec<f32>, Shape, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, mean, inv_std, shape, dims) = ops.state;
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let m = (shape.n * shape.hw) as f64;
        flex_values(&dy, |dy| {
            flex_values(&x, |x| {
                let xhat = |c: usize, v: f32| (v - mean[c]) * inv_std[c];
                let sum_dy = channel_sums(shape, dy, None, |_, g, _| f64::from(g));
                let sum_dy_xhat =
                    channel_sums(shape, dy, Some(x), |c, g, v| f64::from(g * xhat(c, v)));
                if let Some(node) = node_x {
                    let mut dx = vec![0.0f32; dy.len()];
                    dx.par_chunks_mut(shape.hw)
                        .enumerate()
                        .for_each(|(block, out)| {
                            let c = block % shape.c;
                            let start = block * shape.hw;
                            let (mean_dy, mean_dy_xhat) =
                                ((sum_dy[c] / m) as f32, (sum_dy_xhat[c] / m) as f32);
                            let scale = gamma[c] * inv_std[c];
                            let (mean_c, inv_std_c) = (mean[c], inv_std[c]);
                            let (dy, x) = (&dy[start..][..out.len()], &x[start..][..out.len()]);
                            for ((o, g), v) in out.iter_mut().zip(dy).zip(x) {
                                let xhat = (v - mean_c) * inv_std_c;
                                *o = scale * (g - mean_dy - xhat * mean_dy_xhat);
                            }
                        });
                    grads.register::<Flex>(node.id, flex_tensor(dx, dims));
                }
                let to_f32 = |v: &[f64]| v.iter().map(|s| *s as f32).collect::<Vec<_>>();
                if let Some(node) = node_gamma {
                    grads.register::<Flex>(node.id, flex_tensor(to_f32(&sum_dy_xhat), [shape.c]));
                }
                if let Some(node) = node_beta {
                    grads.register::<Flex>(node.id, flex_tensor(to_f32(&sum_dy), [shape.c]));
                }
            });
        });
    }
}

/// `norm.forward(input)` in training mode through this module's kernels, running statistics
/// updated as Burn's `BatchNorm` updates them, when the input is f32 on `Autodiff<Flex>` and the
/// norm is training; `None` otherwise (the caller uses Burn's).
#[must_use]
pub fn batch_norm_train(norm: &BatchNorm, input: &Tensor<4>) -> Option<Tensor<4>> {
    let dims = input.dims();
    let [n, c, h, w] = dims;
    if input.dtype() != DType::F32 || !norm.training.is_enabled() || norm.gamma.dims() != [c] {
        return None;
    }
    let device = input.device();
    let x = input.clone().try_into_primitive::<Train>().ok()?;
    let gamma = norm.gamma.val().try_into_primitive::<Train>().ok()?;
    let beta = norm.beta.val().try_into_primitive::<Train>().ok()?;
    let shape = Shape { n, c, hw: h * w };
    let m = (n * h * w) as f64;
    let guards = [x.node(), gamma.node(), beta.node()];
    let (x, gamma, beta) = (
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    );
    let (gamma, beta) = (
        flex_values(&gamma, <[f32]>::to_vec),
        flex_values(&beta, <[f32]>::to_vec),
    );
    let (y, mean, variance, inv_std) = flex_values(&x, |xs| {
        let mean: Vec<f32> = channel_sums(shape, xs, None, |_, v, _| f64::from(v))
            .into_iter()
            .map(|s| (s / m) as f32)
            .collect();
        let variance: Vec<f32> = channel_sums(shape, xs, None, |c, v, _| {
            let d = f64::from(v - mean[c]);
            d * d
        })
        .into_iter()
        .map(|s| (s / m) as f32)
        .collect();
        let inv_std: Vec<f32> = variance
            .iter()
            .map(|v| 1.0 / (v + norm.epsilon as f32).sqrt())
            .collect();
        let mut y = vec![0.0f32; xs.len()];
        y.par_chunks_mut(shape.hw)
            .enumerate()
            .for_each(|(block, out)| {
                let c = block % shape.c;
                let (scale, shift) = (
                    gamma[c] * inv_std[c],
                    beta[c] - gamma[c] * inv_std[c] * mean[c],
                );
                for (o, v) in out.iter_mut().zip(&xs[block * shape.hw..][..shape.hw]) {
                    *o = v * scale + shift;
                }
            });
        (y, mean, variance, inv_std)
    });
    let y = flex_tensor(y, dims);
    let out = match HostNormBackward
        .prepare::<NoCheckpointing>(guards)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x, gamma, mean.clone(), inv_std, shape, dims), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    // The running statistics, as `BatchNorm::forward` in training updates them.
    let stat = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [c]), &device);
    let momentum = norm.momentum;
    let running_mean = norm.running_mean.value_sync().to_device(&device);
    let running_var = norm.running_var.value_sync().to_device(&device);
    norm.running_mean.update(
        (running_mean.mul_scalar(1.0 - momentum) + stat(mean).mul_scalar(momentum)).detach(),
    );
    norm.running_var.update(
        (running_var.mul_scalar(1.0 - momentum) + stat(variance).mul_scalar(momentum)).detach(),
    );
    Some(Tensor::from_primitive::<Train>(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, Distribution};

    /// Every entry counted once, remainders included: exact on values whose sums f64 holds
    /// exactly, for block lengths around multiples of the lane count.
    #[test]
    fn lane_sum_counts_every_entry_once() {
        for len in 0..=41 {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..len).map(|i| (i % 7) as f32 + 1.0).collect();
            let plain: f64 = a.iter().map(|x| f64::from(*x)).sum();
            let product: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert_eq!(lane_sum(&a, &a, |x, _| f64::from(x)), plain, "length {len}");
            assert_eq!(
                lane_sum(&a, &b, |x, y| f64::from(x * y)),
                product,
                "length {len}"
            );
        }
    }

    /// Output, the three gradients and the running statistics equal Burn's `BatchNorm`.
    #[test]
    fn equals_burns_batch_norm_in_training() {
        let device = Device::default().autodiff();
        device.seed(5);
        for dims in [[6, 4, 5, 5], [3, 7, 2, 3]] {
            let c = dims[1];
            let theirs_norm = BatchNormConfig::new(c).init(&device);
            let theirs_norm = BatchNorm {
                gamma: burn::module::Param::from_tensor(Tensor::random(
                    [c],
                    Distribution::Uniform(0.5, 1.5),
                    &device,
                )),
                beta: burn::module::Param::from_tensor(Tensor::random(
                    [c],
                    Distribution::Uniform(-0.5, 0.5),
                    &device,
                )),
                ..theirs_norm
            };
            let ours_norm = theirs_norm.clone();
            let x = (Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device) * 3.0
                + 1.0)
                .detach()
                .require_grad();
            let ours = batch_norm_train(&ours_norm, &x).expect("flex autodiff f32");
            let theirs = theirs_norm.forward(x.clone());
            let probe = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
            let ga = (ours.clone() * probe.clone()).sum().backward();
            let gb = (theirs.clone() * probe).sum().backward();
            let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                let diff = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(diff <= 2e-5 * scale, "{what} {dims:?}: {diff} of {scale}");
            };
            let v = |t: Tensor<4>| t.into_data().iter::<f32>().collect::<Vec<_>>();
            let v1 = |t: Tensor<1>| t.into_data().iter::<f32>().collect::<Vec<_>>();
            close(v(ours.inner()), v(theirs.inner()), "output");
            close(
                v(x.grad(&ga).unwrap()),
                v(x.grad(&gb).unwrap()),
                "input gradient",
            );
            close(
                v1(ours_norm.gamma.val().grad(&ga).unwrap()),
                v1(theirs_norm.gamma.val().grad(&gb).unwrap()),
                "gamma gradient",
            );
            close(
                v1(ours_norm.beta.val().grad(&ga).unwrap()),
                v1(theirs_norm.beta.val().grad(&gb).unwrap()),
                "beta gradient",
            );
            close(
                v1(ours_norm.running_mean.value()),
                v1(theirs_norm.running_mean.value()),
                "running mean",
            );
            close(
                v1(ours_norm.running_var.value()),
                v1(theirs_norm.running_var.value()),
                "running variance",
            );
        }
    }
}
