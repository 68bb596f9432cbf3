//! ResNets built from skeleton convolutions: the CIFAR family of the reference code
//! (20/32/44/56/110) and the ImageNet family (18/34/50/101/152).
//!
//! - **CIFAR** (`ResNetStyle::Cifar`, depth `6n + 2`): 3×3 stem conv (→16) + BN + ReLU, three
//!   stages of `n` BasicBlocks with 16, 32 and 64 channels, stride 2 at the first block of
//!   stages 2 and 3, global average pool, linear.
//! - **ImageNet** (`ResNetStyle::ImageNet`): 7×7 stride-2 stem conv (→64) + BN + ReLU + 3×3
//!   stride-2 max pool, four stages of 64/128/256/512 channels (BasicBlocks for 18/34,
//!   Bottlenecks with expansion 4 for 50/101/152, stride on the 3×3 conv as torchvision v1.5),
//!   global average pool, linear.
//!
//! A block is a chain of conv + BN pairs with ReLU between them (`[3×3, 3×3]` for a BasicBlock,
//! `[1×1, 3×3, 1×1]` for a Bottleneck); it computes `relu(chain(x) + shortcut(x))`, the shortcut
//! being the identity or a 1×1 skeleton conv + BN where the shape changes. The inner width of each
//! block (the output of every conv but the last) is configurable, as the reference's `cfg`.
//!
//! Pruning rules (METHOD §4), declared through [`Prunable`]: every conv but the shortcut convs is
//! thresholded; the BN after each inner conv of a block is coupled and its channels, read only by
//! the next conv of the block, can be removed; the stem and each block's last conv feed the
//! residual stream (their channels are added to others and read by every later block), so their
//! BNs are not coupled and their channels stay. A block whose last conv has no live stripe adds
//! the constant `bn_last(0)`: compaction leaves that branch without a stripe to compute.
//! Paths follow the reference / torchvision (`conv1`, `layer2.0.conv1`, `layer2.0.downsample.0`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use texprune_kernels::output_size;
use texprune_layer::{
    Activation, ConvShape, CostReport, Costed, ModelError, Prunable, PrunableLayers, Shapes,
    SkeletonConv2d, SkeletonConv2dConfig,
};

/// Which ResNet family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetStyle {
    /// CIFAR ResNets (He et al. §4.2), depth `6n + 2`, BasicBlocks.
    Cifar,
    /// ImageNet ResNets, depth 18, 34, 50, 101 or 152.
    ImageNet,
}

/// The block type of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Two 3×3 convs; output width = stage width.
    Basic,
    /// 1×1, 3×3, 1×1 convs; output width = 4 × stage width.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per stage channel.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The shape of a ResNet, derived from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNetLayout {
    /// Block type.
    pub kind: BlockKind,
    /// Stem output channels.
    pub stem_width: usize,
    /// Width of each stage (block output = width × expansion).
    pub stage_widths: Vec<usize>,
    /// Blocks in each stage.
    pub stage_blocks: Vec<usize>,
}

/// Configuration of a [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Depth: `6n + 2` for CIFAR; 18, 34, 50, 101 or 152 for ImageNet.
    #[config(default = 56)]
    pub depth: usize,
    /// The family.
    #[config(default = "ResNetStyle::Cifar")]
    pub style: ResNetStyle,
    /// Inner width of each block (one entry per block); `None` means the stage width.
    #[config(default = "None")]
    pub widths: Option<Vec<usize>>,
    /// Number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Width of the stem and of the first stage; stage `s` is `base_width · 2^s` wide. `None`
    /// means the family's: 16 for CIFAR, 64 for ImageNet (a narrower torchvision ResNet-18, say,
    /// has `Some(8)`).
    #[config(default = "None")]
    pub base_width: Option<usize>,
    /// Declare the residual streams (opt-in; docs/compaction.md, "Coupled pruning"): every
    /// conv writing a stage's stream (the stem, each block's last conv, the projection
    /// shortcuts, then thresholded too) gets its norm coupled, and the stream its writers and
    /// readers, so that a stream channel dead in every writer is removed. Without it (the
    /// reference's rule) the stream keeps its channels.
    #[config(default = false)]
    pub residual_streams: bool,
}

impl ResNetConfig {
    /// A CIFAR ResNet of depth `6n + 2` (10 classes).
    pub fn cifar(depth: usize) -> Self {
        Self::new().with_depth(depth)
    }

    /// ImageNet ResNet-18 (1000 classes).
    pub fn resnet18() -> Self {
        Self::imagenet(18)
    }

    /// ImageNet ResNet-50 (1000 classes).
    pub fn resnet50() -> Self {
        Self::imagenet(50)
    }

    /// An ImageNet ResNet of depth 18, 34, 50, 101 or 152 (1000 classes).
    pub fn imagenet(depth: usize) -> Self {
        Self::new()
            .with_depth(depth)
            .with_style(ResNetStyle::ImageNet)
            .with_num_classes(1000)
    }

    /// The stages and blocks this configuration describes.
    ///
    /// # Errors
    /// [`ModelError::Config`] when the depth, widths or strides describe no ResNet.
    pub fn layout(&self) -> Result<ResNetLayout, ModelError> {
        let mut layout = self.family_layout()?;
        if let Some(base) = self.base_width {
            if base == 0 {
                return Err(ModelError::Zero { what: "base_width" });
            }
            let too_wide = || ModelError::Config(format!("base width {base} is too large"));
            layout.stage_widths = (0..layout.stage_widths.len())
                .map(|s| base.checked_mul(1 << s).ok_or_else(too_wide))
                .collect::<Result<_, _>>()?;
            layout.stem_width = base;
        }
        Ok(layout)
    }

    /// The layout of the family at its own widths.
    fn family_layout(&self) -> Result<ResNetLayout, ModelError> {
        match self.style {
            ResNetStyle::Cifar => {
                if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
                    return Err(ModelError::Config(format!(
                        "CIFAR ResNet depth must be 6n + 2 with n ≥ 1, got {}",
                        self.depth
                    )));
                }
                let n = (self.depth - 2) / 6;
                Ok(ResNetLayout {
                    kind: BlockKind::Basic,
                    stem_width: 16,
                    stage_widths: vec![16, 32, 64],
                    stage_blocks: vec![n; 3],
                })
            }
            ResNetStyle::ImageNet => {
                let (kind, blocks) = match self.depth {
                    18 => (BlockKind::Basic, vec![2, 2, 2, 2]),
                    34 => (BlockKind::Basic, vec![3, 4, 6, 3]),
                    50 => (BlockKind::Bottleneck, vec![3, 4, 6, 3]),
                    101 => (BlockKind::Bottleneck, vec![3, 4, 23, 3]),
                    152 => (BlockKind::Bottleneck, vec![3, 8, 36, 3]),
                    d => {
                        return Err(ModelError::Config(format!(
                            "ImageNet ResNet depth must be 18, 34, 50, 101 or 152, got {d}"
                        )));
                    }
                };
                Ok(ResNetLayout {
                    kind,
                    stem_width: 64,
                    stage_widths: vec![64, 128, 256, 512],
                    stage_blocks: blocks,
                })
            }
        }
    }

    /// Builds the model.
    ///
    /// # Errors
    /// What [`ResNetConfig::layout`] returns, and [`ModelError::Zero`] for a zero size.
    pub fn init(&self, device: &Device) -> Result<ResNet, ModelError> {
        let layout = self.layout()?;
        if self.num_classes == 0 {
            return Err(ModelError::Zero {
                what: "num_classes",
            });
        }
        let stage_of: Vec<usize> = layout
            .stage_blocks
            .iter()
            .enumerate()
            .flat_map(|(s, &n)| vec![s; n])
            .collect();
        let widths = match &self.widths {
            Some(w) if w.len() != stage_of.len() => {
                return Err(ModelError::Config(format!(
                    "{} block widths given, depth {} has {} blocks",
                    w.len(),
                    self.depth,
                    stage_of.len()
                )));
            }
            Some(w) => w.clone(),
            None => stage_of.iter().map(|&s| layout.stage_widths[s]).collect(),
        };
        // The reference's convs: padding `k / 2`, no bias.
        let conv = |cin, cout, k: usize, stride: usize| {
            let p = k / 2;
            SkeletonConv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(false)
                .init(device)
        };
        let expansion = layout.kind.expansion();
        let mut blocks = Vec::with_capacity(widths.len());
        let mut cin = layout.stem_width;
        for (i, (&mid, &stage)) in widths.iter().zip(&stage_of).enumerate() {
            let out = layout.stage_widths[stage] * expansion;
            let first_of_stage = i == 0 || stage_of[i - 1] != stage;
            let stride = if first_of_stage && stage > 0 { 2 } else { 1 };
            let specs: Vec<(usize, usize, usize, usize)> = match layout.kind {
                BlockKind::Basic => vec![(cin, mid, 3, stride), (mid, out, 3, 1)],
                BlockKind::Bottleneck => {
                    vec![(cin, mid, 1, 1), (mid, mid, 3, stride), (mid, out, 1, 1)]
                }
            };
            let convs = specs
                .iter()
                .map(|&(i, o, k, s)| conv(i, o, k, s))
                .collect::<Result<Vec<_>, _>>()?;
            let norms = specs
                .iter()
                .map(|&(_, o, _, _)| BatchNormConfig::new(o).init(device))
                .collect();
            let shortcut = if stride != 1 || cin != out {
                Some(Shortcut {
                    conv: conv(cin, out, 1, stride)?,
                    norm: BatchNormConfig::new(out).init(device),
                })
            } else {
                None
            };
            blocks.push(Block {
                convs,
                norms,
                shortcut,
            });
            cin = out;
        }
        let (stem, pool) = match self.style {
            ResNetStyle::Cifar => (conv(self.in_channels, layout.stem_width, 3, 1)?, None),
            ResNetStyle::ImageNet => (
                conv(self.in_channels, layout.stem_width, 7, 2)?,
                Some(stem_pool()),
            ),
        };
        Ok(ResNet {
            conv1: stem,
            bn1: BatchNormConfig::new(layout.stem_width).init(device),
            pool,
            blocks,
            fc: LinearConfig::new(cin, self.num_classes).init(device),
            stage_blocks: layout.stage_blocks,
            residual_streams: self.residual_streams,
        })
    }
}

/// The 3×3, stride-2, padding-1 max pool after an ImageNet-style stem.
pub(crate) fn stem_pool() -> MaxPool2d {
    MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init()
}

/// The 1×1 projection shortcut of a block whose shape changes.
#[derive(Module, Debug)]
pub struct Shortcut {
    /// 1×1 conv with the block's stride.
    pub conv: SkeletonConv2d,
    /// Its BatchNorm.
    pub norm: BatchNorm,
}

/// A residual block: `relu(bn_K(conv_K(… relu(bn_1(conv_1(x))) …)) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct Block {
    /// The convs of the residual branch (2 for a BasicBlock, 3 for a Bottleneck).
    pub convs: Vec<SkeletonConv2d>,
    /// The BatchNorm after each conv.
    pub norms: Vec<BatchNorm>,
    /// Projection shortcut; `None` is the identity.
    pub shortcut: Option<Shortcut>,
}

impl Block {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut identity = Some(match &self.shortcut {
            Some(s) => s
                .conv
                .forward_norm(x.clone(), &s.norm, None, Activation::Identity),
            None => x.clone(),
        });
        let last = self.convs.len() - 1;
        let mut out = x;
        for (k, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
            // The last conv adds the shortcut before its ReLU.
            let residual = if k == last { identity.take() } else { None };
            out = conv.forward_norm(out, norm, residual, Activation::Relu);
        }
        out
    }

    /// After compaction, the constant `bn_last(bias)` the branch adds when its last conv has no
    /// live stripe (`None` while the branch computes something).
    pub fn folded_constant(&self) -> Option<Vec<f64>> {
        self.constant_if_dead(&ConvShape::of(self.convs.last()?))
    }

    /// The constant `bn_last(bias)` the branch adds when its last conv, of shape `last` (as
    /// built or as a plan leaves it), runs stripe-wise without a live stripe.
    fn constant_if_dead(&self, last: &ConvShape) -> Option<Vec<f64>> {
        let (conv, norm) = (self.convs.last()?, self.norms.last()?);
        (last.stripe_wise && last.live_stripes == 0).then(|| conv.norm_fold(norm).shift)
    }
}

/// ResNet with skeleton convolutions.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem conv.
    pub conv1: SkeletonConv2d,
    /// Stem BatchNorm.
    pub bn1: BatchNorm,
    /// Stem max pool (ImageNet style).
    pub pool: Option<MaxPool2d>,
    /// The blocks, stage after stage.
    pub blocks: Vec<Block>,
    /// The linear classifier on the pooled features.
    pub fc: Linear,
    /// Blocks in each stage.
    #[module(skip)]
    pub stage_blocks: Vec<usize>,
    /// Whether the declaration names the residual streams ([`ResNetConfig::residual_streams`]).
    #[module(skip)]
    pub residual_streams: bool,
}

impl ResNet {
    /// The class logits of a batch of images.
    ///
    /// # Shapes
    /// - `input`: `[batch, in_channels, H, W]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .conv1
            .forward_norm(input, &self.bn1, None, Activation::Relu);
        if let Some(pool) = &self.pool {
            x = pool.forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }

    /// The reference's path of block `i`: `layer{stage}.{index}`.
    pub fn block_path(&self, mut i: usize) -> String {
        for (stage, &n) in self.stage_blocks.iter().enumerate() {
            if i < n {
                return format!("layer{}.{i}", stage + 1);
            }
            i -= n;
        }
        format!("block{i}")
    }

    /// Paths of the blocks whose residual branch compaction folded into a constant.
    pub fn folded_blocks(&self) -> Vec<String> {
        (0..self.blocks.len())
            .filter(|&i| self.blocks[i].folded_constant().is_some())
            .map(|i| self.block_path(i))
            .collect()
    }
}

impl Prunable for ResNet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        let streams = self.residual_streams;
        let stem = layers.conv("conv1", &self.conv1);
        if streams {
            stem.norm("bn1", &self.bn1).relu();
        }
        // The stream being written: its writers and readers.
        let mut stream = (vec!["conv1".to_string()], Vec::new());
        let mut done = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let path = self.block_path(i);
            let last = block.convs.len() - 1;
            for (k, (conv, norm)) in block.convs.iter().zip(&block.norms).enumerate() {
                let layer = layers.conv(format!("{path}.conv{}", k + 1), conv);
                if k < last {
                    layer
                        .norm(format!("{path}.bn{}", k + 1), norm)
                        .relu()
                        .feeds([format!("{path}.conv{}", k + 2)]);
                } else if streams {
                    layer.norm(format!("{path}.bn{}", k + 1), norm).relu();
                }
            }
            stream.1.push(format!("{path}.conv1"));
            if let Some(s) = &block.shortcut {
                let name = format!("{path}.downsample.0");
                let layer = layers.conv(name.clone(), &s.conv);
                if streams {
                    layer.norm(format!("{path}.downsample.1"), &s.norm);
                } else {
                    layer.not_thresholded();
                }
                stream.1.push(name.clone());
                done.push(std::mem::replace(&mut stream, (vec![name], Vec::new())));
            }
            stream.0.push(format!("{path}.conv{}", last + 1));
        }
        layers.linear("fc", &self.fc);
        if streams {
            stream.1.push("fc".into());
            done.push(stream);
            for (s, (writers, readers)) in done.into_iter().enumerate() {
                layers.residual_stream(format!("stream{}", s + 1), writers, readers);
            }
        }
    }

    fn costed(&self) -> Option<&dyn Costed> {
        Some(self)
    }
}

impl Costed for ResNet {
    /// In the reference's convention: a folded block counts its constant (params only) instead
    /// of its branch; ReLU and pooling are functional there, so not counted.
    fn cost_of(&self, [h, w]: [usize; 2], shapes: Shapes<'_>) -> CostReport {
        let stem = shapes.conv("conv1", &self.conv1);
        let mut report = CostReport::new([stem.channels[0], h, w]);
        let mut hw = report.prunable_conv("conv1", &stem, [h, w]);
        report.norm("bn1", stem.channels[1], hw);
        if self.pool.is_some() {
            hw = output_size(hw, [3, 3], [2, 2], [1, 1]);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let path = self.block_path(i);
            let name = |k: usize| format!("{path}.conv{}", k + 1);
            let branch: Vec<_> = (block.convs.iter().enumerate())
                .map(|(k, conv)| shapes.conv(&name(k), conv))
                .collect();
            let mut out = hw;
            let folded = branch
                .last()
                .and_then(|last| Some((last, block.constant_if_dead(last)?)));
            match folded {
                // A branch whose last conv has no live stripe adds the constant `bn_last(b)`.
                Some((last, constant)) => {
                    if constant.iter().any(|c| *c != 0.0) {
                        report.constant(&format!("{path}.constant"), last.channels[1]);
                    }
                    // The branch's output size, for the blocks after it.
                    for shape in &branch {
                        out = shape.spec.output_size(out);
                    }
                }
                _ => {
                    for (k, shape) in branch.iter().enumerate() {
                        out = report.prunable_conv(&name(k), shape, out);
                        report.norm(&format!("{path}.bn{}", k + 1), shape.channels[1], out);
                    }
                }
            }
            if let Some(s) = &block.shortcut {
                let conv = format!("{path}.downsample.0");
                let shape = shapes.conv(&conv, &s.conv);
                let o = report.prunable_conv(&conv, &shape, hw);
                report.norm(&format!("{path}.downsample.1"), shape.channels[1], o);
            }
            hw = out;
        }
        let [d_in, d_out] = self.fc.weight.dims();
        report.linear("fc", shapes.linear_inputs("fc", d_in), d_out);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet20_shapes_and_layer_roles() {
        let device = Device::default();
        let model = ResNetConfig::cifar(20).init(&device).unwrap();
        assert_eq!(
            model.forward(Tensor::zeros([2, 3, 32, 32], &device)).dims(),
            [2, 10]
        );
        let layers = model.collect_prunable();
        // stem + 9 blocks × 2 convs + 2 shortcut convs.
        assert_eq!(layers.len(), 1 + 18 + 2);
        let shortcuts: Vec<_> = layers
            .iter()
            .filter(|l| !l.thresholded)
            .map(|l| l.name.clone())
            .collect();
        assert_eq!(
            shortcuts,
            ["layer2.0.downsample.0", "layer3.0.downsample.0"]
        );
        let coupled = layers.iter().filter(|l| l.norm.is_some()).count();
        assert_eq!(coupled, 9);
    }

    /// With `residual_streams`, each stage's stream: the stem or the projection shortcut and
    /// every block's last conv write it, every block's first conv and the next stage's
    /// shortcut (or the classifier) read it; the declaration resolves.
    #[test]
    fn resnet20_declares_its_residual_streams() {
        let device = burn::tensor::Device::default();
        let model = ResNetConfig::cifar(20)
            .with_residual_streams(true)
            .init(&device)
            .unwrap();
        let layers = model.collect_prunable();
        let streams = layers.streams();
        assert_eq!(streams.len(), 3);
        assert_eq!(
            streams[0].writers,
            [
                "conv1",
                "layer1.0.conv2",
                "layer1.1.conv2",
                "layer1.2.conv2"
            ]
        );
        assert_eq!(
            streams[0].readers,
            [
                "layer1.0.conv1",
                "layer1.1.conv1",
                "layer1.2.conv1",
                "layer2.0.conv1",
                "layer2.0.downsample.0"
            ]
        );
        assert_eq!(streams[1].writers[0], "layer2.0.downsample.0");
        assert_eq!(streams[2].readers.last().unwrap(), "fc");
        let wiring = texprune_layer::compact::Wiring::resolve(&layers).unwrap();
        // Every stream channel is one coupled group (16 + 32 + 64); no inner channel is.
        assert_eq!(wiring.coupled_channels().len(), 112);
    }

    #[test]
    fn custom_widths_and_bad_depths() {
        let device = Device::default();
        let widths: Vec<usize> = [3, 4, 5].iter().flat_map(|&w| vec![w; 9]).collect();
        let model = ResNetConfig::new()
            .with_widths(Some(widths))
            .init(&device)
            .unwrap();
        assert_eq!(model.blocks[9].convs[0].weight_dims(), [4, 16, 3, 3]);
        assert_eq!(model.block_path(26), "layer3.8");
        assert!(ResNetConfig::cifar(21).init(&device).is_err());
        assert!(ResNetConfig::imagenet(20).init(&device).is_err());
        assert!(
            ResNetConfig::new()
                .with_widths(Some(vec![3; 5]))
                .init(&device)
                .is_err()
        );
    }

    #[test]
    fn imagenet_resnets_have_torchvision_shapes() {
        let device = Device::default();
        let r18 = ResNetConfig::resnet18()
            .with_num_classes(7)
            .init(&device)
            .unwrap();
        assert_eq!(r18.blocks.len(), 8);
        assert_eq!(
            r18.forward(Tensor::zeros([1, 3, 64, 64], &device)).dims(),
            [1, 7]
        );
        let layers = r18.collect_prunable();
        // stem + 8 × 2 + 3 downsample convs.
        assert_eq!(layers.len(), 1 + 16 + 3);
        let r50 = ResNetConfig::resnet50()
            .with_num_classes(5)
            .init(&device)
            .unwrap();
        assert_eq!(r50.blocks.len(), 16);
        assert_eq!(r50.blocks[3].convs[1].weight_dims(), [128, 128, 3, 3]);
        assert_eq!(r50.blocks[3].convs[1].stride, [2, 2]);
        assert_eq!(r50.block_path(3), "layer2.0");
        let layers = r50.collect_prunable();
        // stem + 16 × 3 + 4 downsample convs (layer1.0 changes 64 → 256).
        assert_eq!(layers.len(), 1 + 48 + 4);
        assert_eq!(layers.iter().filter(|l| l.norm.is_some()).count(), 32);
        assert_eq!(
            r50.forward(Tensor::zeros([1, 3, 64, 64], &device)).dims(),
            [1, 5]
        );
    }
}
