//! The network of the `own_model` example (also used by `tests/user_models.rs`): a model
//! written outside the zoo, declared for pruning in a few lines.

// `#[derive(Module)]` writes `burn::…` paths: in a crate whose only dependency is texprune,
// `burn` is texprune's re-export.
use texprune::burn;
use texprune::burn::module::Module;
use texprune::burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use texprune::burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use texprune::burn::tensor::activation::relu;
use texprune::burn::tensor::module::adaptive_avg_pool2d;
use texprune::burn::tensor::{Device, Tensor};
use texprune::{Prunable, PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig};

/// `stem → relu(x + block(x)) → pool → strided conv → 1×1 conv → global pool → linear`.
#[derive(Module, Debug)]
pub struct Net {
    pub stem: SkeletonConv2d,
    pub stem_bn: BatchNorm,
    pub inner: SkeletonConv2d,
    pub inner_bn: BatchNorm,
    pub outer: SkeletonConv2d,
    pub outer_bn: BatchNorm,
    pub pool: MaxPool2d,
    pub down: SkeletonConv2d,
    pub down_bn: BatchNorm,
    pub wide: SkeletonConv2d,
    pub wide_bn: BatchNorm,
    pub head: Linear,
}

impl Net {
    /// Widths `w` (stem, residual stream), `2w` (block, strided conv), `4w` (1×1 conv).
    pub fn new(w: usize, device: &Device) -> Result<Self, texprune::ModelError> {
        // Padding `k / 2` and no bias (a BatchNorm follows), as `Conv2dConfig` would say it.
        let conv = |cin, cout, k: usize, s| {
            let p = k / 2;
            SkeletonConv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(false)
                .init(device)
        };
        let norm = |c| BatchNormConfig::new(c).init(device);
        Ok(Self {
            stem: conv(1, w, 3, 1)?,
            stem_bn: norm(w),
            inner: conv(w, 2 * w, 3, 1)?,
            inner_bn: norm(2 * w),
            outer: conv(2 * w, w, 3, 1)?,
            outer_bn: norm(w),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            down: conv(w, 2 * w, 3, 2)?,
            down_bn: norm(2 * w),
            wide: conv(2 * w, 4 * w, 1, 1)?,
            wide_bn: norm(4 * w),
            head: LinearConfig::new(4 * w, 10).init(device),
        })
    }

    /// Logits of `[batch, 1, H, W]` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.stem_bn.forward(self.stem.forward(x)));
        let y = relu(self.inner_bn.forward(self.inner.forward(x.clone())));
        let x = relu(x + self.outer_bn.forward(self.outer.forward(y)));
        let x = self.pool.forward(x);
        let x = relu(self.down_bn.forward(self.down.forward(x)));
        let x = relu(self.wide_bn.forward(self.wide.forward(x)));
        self.head
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }
}

impl Prunable for Net {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        // `stem` and `outer` write the residual stream: no declared readers, channels kept.
        layers
            .conv("stem", &self.stem)
            .norm("stem_bn", &self.stem_bn);
        layers
            .conv("inner", &self.inner)
            .norm("inner_bn", &self.inner_bn)
            .relu()
            .feeds(["outer"]);
        layers
            .conv("outer", &self.outer)
            .norm("outer_bn", &self.outer_bn);
        layers
            .conv("down", &self.down)
            .norm("down_bn", &self.down_bn)
            .relu()
            .feeds(["wide"]);
        layers
            .conv("wide", &self.wide)
            .norm("wide_bn", &self.wide_bn)
            .relu()
            .feeds(["head"]);
        layers.linear("head", &self.head);
    }
}
