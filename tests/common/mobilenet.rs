//! A MobileNetV2-style network written in the tests, outside the zoo, with `SkeletonConv2d`
//! everywhere: the model of `tests/modern_models.rs` (compaction, a FLOPs target through `fit`,
//! declaration errors) and of `tests/onnx.rs` (export).

use texprune::burn::module::Module;
use texprune::burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use texprune::burn::tensor::module::adaptive_avg_pool2d;
use texprune::burn::tensor::{Device, Tensor};
use texprune::{Activation, Prunable, PrunableLayers, SkeletonConv2d};

/// stem (3×3, ReLU6) → expand (1×1, ReLU6) → depthwise (3×3, ReLU6) → project (1×1) + stem →
/// grouped (3×3, 4 groups, stride 2, SiLU) → dilated (3×3, dilation 2, Hardswish), beside it
/// side (1×1, stride 2, ReLU) on the same input → fuse (1×1, ReLU) on the concatenation
/// [dilated, side] → global pool → linear.
#[derive(Module, Debug)]
pub struct MobileNet {
    pub stem: SkeletonConv2d,
    pub stem_bn: BatchNorm,
    pub expand: SkeletonConv2d,
    pub expand_bn: BatchNorm,
    pub depthwise: SkeletonConv2d,
    pub depthwise_bn: BatchNorm,
    pub project: SkeletonConv2d,
    pub project_bn: BatchNorm,
    pub grouped: SkeletonConv2d,
    pub grouped_bn: BatchNorm,
    pub dilated: SkeletonConv2d,
    pub dilated_bn: BatchNorm,
    pub side: SkeletonConv2d,
    pub side_bn: BatchNorm,
    pub fuse: SkeletonConv2d,
    pub fuse_bn: BatchNorm,
    pub head: Linear,
}

/// The width of the stem; the expanded block is four times as wide.
pub const WIDTH: usize = 8;

impl MobileNet {
    pub fn new(device: &Device) -> Self {
        let w = WIDTH;
        let conv =
            |cin, cout, k, configure| super::skeleton_conv([cin, cout], k, configure, device);
        let norm = |c| BatchNormConfig::new(c).init(device);
        Self {
            stem: conv(1, w, 3, |c| c.with_padding(PaddingConfig2d::Same)),
            stem_bn: norm(w),
            expand: conv(w, 4 * w, 1, |c| c),
            expand_bn: norm(4 * w),
            depthwise: conv(4 * w, 4 * w, 3, |c| {
                c.with_groups(4 * WIDTH).with_padding(PaddingConfig2d::Same)
            }),
            depthwise_bn: norm(4 * w),
            project: conv(4 * w, w, 1, |c| c),
            project_bn: norm(w),
            grouped: conv(w, 4 * w, 3, |c| {
                c.with_groups(4)
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            }),
            grouped_bn: norm(4 * w),
            dilated: conv(4 * w, 4 * w, 3, |c| {
                c.with_dilation([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            }),
            dilated_bn: norm(4 * w),
            side: conv(w, 2 * w, 1, |c| c.with_stride([2, 2])),
            side_bn: norm(2 * w),
            fuse: conv(6 * w, 4 * w, 1, |c| c),
            fuse_bn: norm(4 * w),
            head: LinearConfig::new(4 * w, 10).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        use Activation::{Hardswish, Identity, Relu, Relu6, Silu};
        let x = self.stem.forward_norm(x, &self.stem_bn, None, Relu6);
        let y = self
            .expand
            .forward_norm(x.clone(), &self.expand_bn, None, Relu6);
        let y = self
            .depthwise
            .forward_norm(y, &self.depthwise_bn, None, Relu6);
        let x = self
            .project
            .forward_norm(y, &self.project_bn, Some(x), Identity);
        let side = self.side.forward_norm(x.clone(), &self.side_bn, None, Relu);
        let x = self.grouped.forward_norm(x, &self.grouped_bn, None, Silu);
        let x = self
            .dilated
            .forward_norm(x, &self.dilated_bn, None, Hardswish);
        let x = self
            .fuse
            .forward_norm(Tensor::cat(vec![x, side], 1), &self.fuse_bn, None, Relu);
        self.head
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }
}

impl Prunable for MobileNet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        // The stem and the project conv write the residual stream (which the 4-group conv
        // reads, so its channels stay).
        layers
            .conv("stem", &self.stem)
            .norm("stem_bn", &self.stem_bn)
            .activation(Activation::Relu6);
        layers
            .conv("expand", &self.expand)
            .norm("expand_bn", &self.expand_bn)
            .activation(Activation::Relu6)
            .feeds(["depthwise"]);
        layers
            .conv("depthwise", &self.depthwise)
            .norm("depthwise_bn", &self.depthwise_bn)
            .activation(Activation::Relu6)
            .feeds(["project"]);
        layers
            .conv("project", &self.project)
            .norm("project_bn", &self.project_bn);
        layers
            .conv("grouped", &self.grouped)
            .norm("grouped_bn", &self.grouped_bn)
            .activation(Activation::Silu)
            .feeds(["dilated"]);
        layers
            .conv("dilated", &self.dilated)
            .norm("dilated_bn", &self.dilated_bn)
            .activation(Activation::Hardswish);
        layers
            .conv("side", &self.side)
            .norm("side_bn", &self.side_bn)
            .relu();
        layers
            .conv("fuse", &self.fuse)
            .norm("fuse_bn", &self.fuse_bn)
            .relu()
            .feeds(["head"]);
        layers.linear("head", &self.head);
        layers.residual_stream("stream", ["stem", "project"], ["expand", "grouped", "side"]);
        layers.concat("fuse", ["dilated", "side"]);
    }
}
