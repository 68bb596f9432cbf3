//! Params, FLOPs and MACs per layer and in total (METHOD §6), in the convention of the
//! reference's `flops.py`.
//!
//! - conv: `FLOPs = 2·kh·kw·Cin·Cout·Ho·Wo`, `MACs = kh·kw·Cin·Cout·Ho·Wo`;
//! - stripe-wise conv: `FLOPs = 2·stripes·Cin·Ho·Wo`, `MACs = stripes·Cin·Ho·Wo`;
//! - BatchNorm: `2·elements` FLOPs, `2·C` params (γ, β; running statistics are not params);
//! - ReLU: `elements` FLOPs; pooling: `k²·output elements` FLOPs — only where the reference's
//!   model has them as modules (VGG; the ResNets use functional ReLU and pooling, not counted);
//! - linear: `FLOPs = 2·weights + bias`, `MACs = weights`.
//!
//! `skeleton` counts the skeleton entries the reference keeps beside each conv (`Cout·kh·kw`,
//! after its pruning the boolean stripe mask of the kept filters); texprune's compact models fold
//! the skeleton into the weights and store none, so `params` is what they really hold and
//! `params + skeleton` is the reference's parameter total.

use core::fmt;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{ConvSpec, SkeletonConv2d};

/// A model that counts its params, FLOPs and MACs in its own convention (the zoo: the
/// reference's `flops.py`, METHOD §6), layer by layer in forward order.
///
/// The walk reads each prunable conv and linear layer through [`Shapes`]: as the model is
/// (`cost`), or as a compaction plan would leave it (the budget controller's candidate masks),
/// so that reports and the controller count with one convention. A model connects its walk to
/// the controller through [`Prunable::costed`].
pub trait Costed {
    /// The per-layer cost for one `[height, width]` input (batch 1), each prunable layer read
    /// through `shapes`.
    fn cost_of(&self, input_size: [usize; 2], shapes: Shapes<'_>) -> CostReport;

    /// The per-layer cost for one `[height, width]` input (batch 1), the model as it is.
    fn cost(&self, input_size: [usize; 2]) -> CostReport {
        self.cost_of(input_size, Shapes::Built)
    }
}

/// How a cost walk sees a prunable layer's shape.
#[derive(Debug, Clone, Copy)]
pub enum Shapes<'a> {
    /// As the model holds it (dense, or compacted and stripe-wise).
    Built,
    /// As compaction by a plan would leave it.
    Planned(&'a PlannedLayers),
}

impl Shapes<'_> {
    /// The shape of the conv declared as `name`.
    #[must_use]
    pub fn conv(&self, name: &str, conv: &SkeletonConv2d) -> ConvShape {
        // Only what the plan does not know is read from the conv (a stripe-wise conv's layout
        // is a device read, and the controller asks for every conv of every probe).
        match self {
            Self::Built => ConvShape::of(conv),
            Self::Planned(plan) => plan
                .convs
                .get(name)
                .cloned()
                .unwrap_or_else(|| ConvShape::of(conv)),
        }
    }

    /// The input features of the linear layer declared as `name` whose weight is
    /// `[d_in, d_out]` as built.
    #[must_use]
    pub fn linear_inputs(&self, name: &str, d_in: usize) -> usize {
        match self {
            Self::Built => d_in,
            Self::Planned(plan) => plan.linears.get(name).copied().unwrap_or(d_in),
        }
    }
}

/// A prunable conv's shape as the cost counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvShape {
    /// Input and output channels `[Cin, Cout]` (each filter reads `Cin / groups`).
    pub channels: [usize; 2],
    /// Kernel size, stride, dilation, groups and padding.
    pub spec: ConvSpec,
    /// Whether it has a bias.
    pub bias: bool,
    /// Live stripes (all `Cout·kh·kw` for a dense conv).
    pub live_stripes: usize,
    /// Whether it runs stripe-wise (counted as a stripe conv).
    pub stripe_wise: bool,
}

impl ConvShape {
    /// `conv` as it is.
    #[must_use]
    pub fn of(conv: &SkeletonConv2d) -> Self {
        let [cout, _, kh, kw] = conv.weight_dims();
        let stripe_wise = conv.is_stripe_wise();
        Self {
            channels: [conv.in_channels(), cout],
            spec: conv.spec(),
            bias: conv.bias.is_some(),
            live_stripes: match stripe_wise {
                true => conv.stripe_layout().live_stripes(),
                false => cout * kh * kw,
            },
            stripe_wise,
        }
    }

    /// The input channels each filter reads, `Cin / groups`.
    #[must_use]
    pub fn group_inputs(&self) -> usize {
        self.channels[0] / self.spec.groups.max(1)
    }
}

/// The shapes a compaction plan leaves, by declared name: what [`Shapes::Planned`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlannedLayers {
    pub(crate) convs: HashMap<String, ConvShape>,
    pub(crate) linears: HashMap<String, usize>,
}

/// What a layer is, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    /// A dense convolution (a skeleton conv before compaction).
    Conv,
    /// A stripe-wise convolution (after compaction).
    StripeConv,
    /// A BatchNorm (γ and β per channel; a multiply and an add per element).
    BatchNorm,
    /// A ReLU (no params; one comparison per element).
    Relu,
    /// Max or average pooling.
    Pool,
    /// Linear layer.
    Linear,
    /// A residual branch folded into a per-channel constant.
    Constant,
    /// A module with parameters that the declaration leaves out
    /// ([`UndeclaredLayer`](crate::UndeclaredLayer)): its parameters count, its FLOPs and MACs
    /// are unknown (counted as 0).
    Undeclared,
}

/// The cost of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCost {
    /// Path of the layer.
    pub name: String,
    /// Layer type.
    pub kind: LayerKind,
    /// Short description of the shape (`16→32 3×3/2 @16×16`).
    pub shape: String,
    /// Parameters stored (weights, BN γ and β, biases, folded constants).
    pub params: u64,
    /// Skeleton entries the reference keeps beside this conv.
    pub skeleton: u64,
    /// Floating-point operations (2 per multiply-add).
    pub flops: u64,
    /// Multiply-accumulates.
    pub macs: u64,
}

/// Per-layer and total cost of a model at one input size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostReport {
    /// Input `[channels, height, width]` (batch 1).
    pub input: [usize; 3],
    /// The layers, in forward order.
    pub layers: Vec<LayerCost>,
}

impl CostReport {
    /// An empty report for a `[channels, height, width]` input, to which a model's [`Costed`]
    /// adds its layers in forward order.
    #[must_use]
    pub fn new(input: [usize; 3]) -> Self {
        Self {
            input,
            layers: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, name: &str, kind: LayerKind, shape: String, costs: [u64; 4]) {
        let [params, skeleton, flops, macs] = costs;
        self.layers.push(LayerCost {
            name: name.to_string(),
            kind,
            shape,
            params,
            skeleton,
            flops,
            macs,
        });
    }

    /// A prunable conv of shape `shape` (from [`Shapes::conv`]) on an `hw` input, dense or
    /// stripe-wise; returns its output size. Each stripe is a filter's `Cin / groups` weights at
    /// one kernel position: `MACs = stripes · (Cin / groups) · Ho · Wo` (all `Cout · kh · kw`
    /// stripes for a dense conv).
    pub fn prunable_conv(&mut self, name: &str, shape: &ConvShape, hw: [usize; 2]) -> [usize; 2] {
        let out = shape.spec.output_size(hw);
        let [cin, cout] = shape.channels;
        let [kh, kw] = shape.spec.kernel_size;
        let all = cout * kh * kw;
        let stripes = if shape.stripe_wise {
            shape.live_stripes
        } else {
            all
        };
        let per_stripe = shape.group_inputs() as u64;
        let macs = stripes as u64 * per_stripe * (out[0] * out[1]) as u64;
        let bias = if shape.bias { cout as u64 } else { 0 };
        let params = stripes as u64 * per_stripe + bias;
        let spec = &shape.spec;
        let mut extra = String::new();
        if spec.groups > 1 {
            extra += &format!(" g{}", spec.groups);
        }
        if spec.dilation != [1, 1] {
            extra += &format!(" d{}", spec.dilation[0]);
        }
        let geometry = format!("{kh}×{kw}/{}{extra} @{}×{}", spec.stride[0], out[0], out[1]);
        let (kind, description) = if shape.stripe_wise {
            let live = format!("{stripes}/{all} stripes");
            (
                LayerKind::StripeConv,
                format!("{cin}→{cout} {live} {geometry}"),
            )
        } else {
            (LayerKind::Conv, format!("{cin}→{cout} {geometry}"))
        };
        self.push(
            name,
            kind,
            description,
            [params, all as u64, 2 * macs, macs],
        );
        out
    }

    /// BatchNorm over `channels` maps of size `hw`.
    pub fn norm(&mut self, name: &str, channels: usize, hw: [usize; 2]) {
        let elements = (channels * hw[0] * hw[1]) as u64;
        self.push(
            name,
            LayerKind::BatchNorm,
            format!("{channels}"),
            [2 * channels as u64, 0, 2 * elements, 0],
        );
    }

    /// ReLU over `channels` maps of size `hw`.
    pub fn relu(&mut self, name: &str, channels: usize, hw: [usize; 2]) {
        let elements = (channels * hw[0] * hw[1]) as u64;
        self.push(
            name,
            LayerKind::Relu,
            format!("{channels}"),
            [0, 0, elements, 0],
        );
    }

    /// A `kernel × kernel` pool producing `channels` maps of size `out`.
    pub fn pool(&mut self, name: &str, kernel: usize, channels: usize, out: [usize; 2]) {
        let elements = (channels * out[0] * out[1]) as u64;
        self.push(
            name,
            LayerKind::Pool,
            format!("{kernel}×{kernel} → {channels}@{}×{}", out[0], out[1]),
            [0, 0, (kernel * kernel) as u64 * elements, 0],
        );
    }

    /// A linear layer `d_in → d_out` with bias.
    pub fn linear(&mut self, name: &str, d_in: usize, d_out: usize) {
        self.linear_layer(name, d_in, d_out, true);
    }

    /// A linear layer `d_in → d_out`, with or without a bias.
    pub(crate) fn linear_layer(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) {
        let weights = (d_in * d_out) as u64;
        let bias = if bias { d_out as u64 } else { 0 };
        self.push(
            name,
            LayerKind::Linear,
            format!("{d_in}→{d_out}"),
            [weights + bias, 0, 2 * weights + bias, weights],
        );
    }

    /// A residual branch folded into a constant of `channels` values.
    pub fn constant(&mut self, name: &str, channels: usize) {
        self.push(
            name,
            LayerKind::Constant,
            format!("{channels}"),
            [channels as u64, 0, 0, 0],
        );
    }

    /// Total parameters stored.
    pub fn params(&self) -> u64 {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Total skeleton entries, as the reference counts them.
    pub fn skeleton(&self) -> u64 {
        self.layers.iter().map(|l| l.skeleton).sum()
    }

    /// Total FLOPs.
    pub fn flops(&self) -> u64 {
        self.layers.iter().map(|l| l.flops).sum()
    }

    /// Total MACs.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// The layers of one kind, in order.
    pub fn of_kind(&self, kind: LayerKind) -> impl Iterator<Item = &LayerCost> {
        self.layers.iter().filter(move |l| l.kind == kind)
    }
}

/// `12.3M`-style rendering.
pub fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl fmt::Display for CostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_width = self
            .layers
            .iter()
            .map(|l| l.name.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let [c, h, w] = self.input;
        writeln!(f, "input 1×{c}×{h}×{w}")?;
        writeln!(
            f,
            "{:<name_width$}  {:<11} {:>9} {:>9} {:>9}  shape",
            "layer", "kind", "params", "FLOPs", "MACs"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<name_width$}  {:<11} {:>9} {:>9} {:>9}  {}",
                l.name,
                format!("{:?}", l.kind),
                human(l.params),
                human(l.flops),
                human(l.macs),
                l.shape
            )?;
        }
        write!(
            f,
            "{:<name_width$}  {:<11} {:>9} {:>9} {:>9}  (+{} skeleton entries in the reference's count)",
            "total",
            "",
            human(self.params()),
            human(self.flops()),
            human(self.macs()),
            self.skeleton()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_of_each_layer_kind() {
        let mut r = CostReport::new([3, 32, 32]);
        let mut spec = ConvSpec::new([3, 3]);
        spec.padding = burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1);
        let dense = ConvShape {
            channels: [3, 16],
            spec: spec.clone(),
            bias: false,
            live_stripes: 16 * 9,
            stripe_wise: false,
        };
        assert_eq!(r.prunable_conv("c", &dense, [32, 32]), [32, 32]);
        spec.stride = [2, 2];
        let stripes = ConvShape {
            channels: [16, 16],
            spec,
            bias: false,
            live_stripes: 100,
            stripe_wise: true,
        };
        assert_eq!(r.prunable_conv("s", &stripes, [32, 32]), [16, 16]);
        r.norm("bn", 16, [32, 32]);
        r.relu("relu", 16, [32, 32]);
        r.pool("pool", 2, 16, [16, 16]);
        r.linear("fc", 64, 10);
        r.constant("k", 16);
        let flops: Vec<u64> = r.layers.iter().map(|l| l.flops).collect();
        assert_eq!(
            flops,
            [
                2 * 9 * 3 * 16 * 1024,
                2 * 100 * 16 * 256,
                2 * 16 * 1024,
                16 * 1024,
                4 * 16 * 256,
                2 * 640 + 10,
                0
            ]
        );
        assert_eq!(r.params(), 9 * 48 + 1600 + 32 + 650 + 16);
        assert_eq!(r.skeleton(), 16 * 9 + 16 * 9);
        assert_eq!(r.macs(), 9 * 48 * 1024 + 100 * 16 * 256 + 640);
        let table = r.to_string();
        assert!(table.contains("StripeConv"));
        assert!(table.lines().last().unwrap().starts_with("total"));
    }

    /// A grouped conv's filters read `Cin / groups` channels each: a depthwise 3×3 over 32
    /// channels is `9 · 32 · Ho · Wo` MACs, 4 groups a quarter of the dense conv's.
    #[test]
    fn grouped_convs_count_their_groups() {
        let mut r = CostReport::new([32, 8, 8]);
        let mut spec = ConvSpec::new([3, 3]);
        spec.padding = burn::nn::PaddingConfig2d::Same;
        for groups in [1, 4, 32] {
            spec.groups = groups;
            let shape = ConvShape {
                channels: [32, 32],
                spec: spec.clone(),
                bias: true,
                live_stripes: 32 * 9,
                stripe_wise: false,
            };
            r.prunable_conv(&format!("g{groups}"), &shape, [8, 8]);
        }
        let macs: Vec<u64> = r.layers.iter().map(|l| l.macs).collect();
        assert_eq!(macs, [9 * 32 * 32 * 64, 9 * 8 * 32 * 64, 9 * 32 * 64]);
        let params: Vec<u64> = r.layers.iter().map(|l| l.params).collect();
        assert_eq!(params, [9 * 32 * 32 + 32, 9 * 8 * 32 + 32, 9 * 32 + 32]);
        assert!(r.layers[2].shape.contains("g32"), "{}", r.layers[2].shape);
    }
}
