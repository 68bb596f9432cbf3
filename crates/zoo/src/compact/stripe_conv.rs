//! The stripe-wise convolution of a compacted layer (METHOD §5).

use burn::module::{Module, Param};
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Device, IndexingUpdateOp, Int, Slice, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::host_kernel::{self, Geometry};
use crate::cost::output_size;

/// The live stripes at one kernel position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripePosition {
    /// Kernel position `(i, j)`.
    pub offset: [usize; 2],
    /// Output channels that keep their stripe at this position, ascending.
    pub filters: Vec<usize>,
}

/// The structure of a [`StripeConv2d`]: everything but the weights. Serialisable, so a compact
/// model can be rebuilt (with [`StripeConvPlan::init`]) before its record is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeConvPlan {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size of the original conv.
    pub kernel_size: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding.
    pub padding: [usize; 2],
    /// Whether the conv has a bias.
    pub bias: bool,
    /// The kernel positions that have live stripes, in row-major order.
    pub positions: Vec<StripePosition>,
}

impl StripeConvPlan {
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

    /// A layer of this structure with zero weights (to load a record into).
    pub fn init(&self, device: &Device) -> StripeConv2d {
        let weights = self
            .positions
            .iter()
            .map(|p| Tensor::zeros([p.filters.len(), self.in_channels], device))
            .collect();
        let bias = self
            .bias
            .then(|| Tensor::zeros([self.out_channels], device));
        StripeConv2d::new(self.clone(), weights, bias)
    }
}

/// A convolution that computes only its live stripes.
///
/// For each kernel position `(i, j)` with live stripes, one 1×1 product (a GEMM)
/// `W_ij [n_ij, Cin] · x[:, :, i + s·y, j + s·x]` on the padded input, shifted by `(i, j)` and
/// taken with the stride (only the output positions are computed), added into the `n_ij`
/// output channels that own those stripes. The cost is `Σ n_ij · Cin · Ho · Wo` MACs, the live
/// fraction of the dense conv's.
#[derive(Module, Debug)]
pub struct StripeConv2d {
    /// `W_ij [n_ij, Cin]` of each position of the plan (skeleton folded in).
    pub weights: Vec<Param<Tensor<2>>>,
    /// Optional bias `[Cout]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Output channels of each position, as index tensors.
    filters: Vec<Tensor<1, Int>>,
    /// The structure.
    #[module(skip)]
    pub plan: StripeConvPlan,
}

impl StripeConv2d {
    /// Builds the layer from its plan and the weights of each position.
    pub(crate) fn new(
        plan: StripeConvPlan,
        weights: Vec<Tensor<2>>,
        bias: Option<Tensor<1>>,
    ) -> Self {
        let device = weights
            .first()
            .map(Tensor::device)
            .or_else(|| bias.as_ref().map(Tensor::device));
        let filters = match device {
            Some(device) => plan
                .positions
                .iter()
                .map(|p| {
                    let idx: Vec<i64> = p.filters.iter().map(|&f| f as i64).collect();
                    Tensor::from_data(TensorData::new(idx, [p.filters.len()]), &device)
                })
                .collect(),
            None => Vec::new(),
        };
        Self {
            weights: weights.into_iter().map(Param::from_tensor).collect(),
            bias: bias.map(Param::from_tensor),
            filters,
            plan,
        }
    }

    /// Applies the conv: through the host CPU kernel for f32 inputs on the CPU backend (no
    /// autodiff), through [`forward_tensor_ops`](Self::forward_tensor_ops) elsewhere.
    ///
    /// # Shapes
    /// - `input`: `[batch, Cin, H, W]`
    /// - output: `[batch, Cout, Ho, Wo]` as the dense conv it came from
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        if runs_on_host(&input) {
            self.forward_host(input)
        } else {
            self.forward_tensor_ops(input)
        }
    }

    /// The forward pass with backend tensor ops only (strided slice, 1×1 conv, indexed add):
    /// runs on every backend, with autodiff.
    pub fn forward_tensor_ops(&self, input: Tensor<4>) -> Tensor<4> {
        let [batch, _, h, w] = input.dims();
        let [ho, wo] = self.plan.output_size([h, w]);
        let cout = self.plan.out_channels;
        let device = input.device();
        let mut out = Tensor::<4>::zeros([batch, cout, ho, wo], (&device, input.dtype()));
        let [ph, pw] = self.plan.padding;
        let [sh, sw] = self.plan.stride;
        let input = if ph + pw > 0 && !self.weights.is_empty() {
            input.pad([(ph, ph), (pw, pw)], PadMode::Constant(0.0))
        } else {
            input
        };
        for ((position, weight), filters) in self
            .plan
            .positions
            .iter()
            .zip(&self.weights)
            .zip(&self.filters)
        {
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
                weight.val().reshape([n, cin, 1, 1]),
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            );
            out = if n == cout {
                out + y
            } else {
                out.select_assign(1, filters.clone(), y, IndexingUpdateOp::Add)
            };
        }
        self.add_bias(out)
    }

    fn add_bias(&self, out: Tensor<4>) -> Tensor<4> {
        match &self.bias {
            Some(b) => out + b.val().reshape([1, self.plan.out_channels, 1, 1]),
            None => out,
        }
    }

    /// The forward pass through [`host_kernel`] (f32 on a CPU backend, no autodiff).
    fn forward_host(&self, input: Tensor<4>) -> Tensor<4> {
        let device = input.device();
        let [batch, cin, h, w] = input.dims();
        let [ho, wo] = self.plan.output_size([h, w]);
        let x: Vec<f32> = input.into_data().try_into_vec().unwrap_or_default();
        let w_all: Vec<f32> = if self.weights.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(self.weights.iter().map(Param::val).collect(), 0)
                .into_data()
                .try_into_vec()
                .unwrap_or_default()
        };
        let geometry = Geometry {
            input: [cin, h, w],
            output: [ho, wo],
        };
        let out = host_kernel::stripe_conv(&self.plan, &x, &w_all, geometry);
        let out = Tensor::from_data(
            TensorData::new(out, [batch, self.plan.out_channels, ho, wo]),
            &device,
        );
        self.add_bias(out)
    }
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
