//! CIFAR ResNet (20/32/44/56/110) built from skeleton convolutions, as in the reference code.
//!
//! Stem: 3×3 conv (3→16) + BN + ReLU. Three stages of `n = (depth - 2) / 6` BasicBlocks with 16,
//! 32 and 64 output channels (stride 2 at the first block of stages 2 and 3). A block computes
//! `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`; the shortcut is the identity, or a 1×1
//! skeleton conv + BN where the shape changes. Each block's inner width (conv1's output) is
//! configurable, as the reference's `cfg`. Head: global average pool + linear.
//!
//! Pruning rules of the reference (METHOD §4): every conv but the shortcut convs is thresholded;
//! only a block's `conv1 → bn1` is coupled; shortcut convs are penalised but never thresholded.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};

use crate::{Prunable, PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig, ZooError};

/// Output channels of the stem and the three stages.
const STAGE_WIDTHS: [usize; 3] = [16, 32, 64];

/// Configuration of a CIFAR [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Depth `6n + 2`: 20, 32, 44, 56 or 110 (any `6n + 2` works).
    #[config(default = 56)]
    pub depth: usize,
    /// Inner width of each block (`3n` entries); `None` means the stage width.
    #[config(default = "None")]
    pub widths: Option<Vec<usize>>,
    /// Number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
}

impl ResNetConfig {
    /// Blocks per stage, `(depth - 2) / 6`.
    pub fn blocks_per_stage(&self) -> Result<usize, ZooError> {
        if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
            return Err(ZooError::Config(format!(
                "ResNet depth must be 6n + 2 with n ≥ 1, got {}",
                self.depth
            )));
        }
        Ok((self.depth - 2) / 6)
    }

    /// Builds the model.
    pub fn init(&self, device: &Device) -> Result<ResNet, ZooError> {
        let n = self.blocks_per_stage()?;
        if self.num_classes == 0 {
            return Err(ZooError::Zero {
                what: "num_classes",
            });
        }
        let widths = match &self.widths {
            Some(w) if w.len() != 3 * n => {
                return Err(ZooError::Config(format!(
                    "{} block widths given, depth {} has {} blocks",
                    w.len(),
                    self.depth,
                    3 * n
                )));
            }
            Some(w) => w.clone(),
            None => STAGE_WIDTHS.iter().flat_map(|&w| vec![w; n]).collect(),
        };
        let conv3 = |cin, cout, stride| {
            SkeletonConv2dConfig::new([cin, cout], [3, 3])
                .with_stride([stride, stride])
                .init(device)
        };
        let mut blocks = Vec::with_capacity(3 * n);
        let mut cin = STAGE_WIDTHS[0];
        for (i, &mid) in widths.iter().enumerate() {
            let planes = STAGE_WIDTHS[i / n];
            let stride = if i % n == 0 && i >= n { 2 } else { 1 };
            let shortcut = if stride != 1 || cin != planes {
                Some(Shortcut {
                    conv: SkeletonConv2dConfig::new([cin, planes], [1, 1])
                        .with_stride([stride, stride])
                        .init(device)?,
                    norm: BatchNormConfig::new(planes).init(device),
                })
            } else {
                None
            };
            blocks.push(BasicBlock {
                conv1: conv3(cin, mid, stride)?,
                bn1: BatchNormConfig::new(mid).init(device),
                conv2: conv3(mid, planes, 1)?,
                bn2: BatchNormConfig::new(planes).init(device),
                shortcut,
            });
            cin = planes;
        }
        Ok(ResNet {
            conv1: conv3(self.in_channels, STAGE_WIDTHS[0], 1)?,
            bn1: BatchNormConfig::new(STAGE_WIDTHS[0]).init(device),
            blocks,
            fc: LinearConfig::new(STAGE_WIDTHS[2], self.num_classes).init(device),
            blocks_per_stage: n,
        })
    }
}

/// The 1×1 projection shortcut of a block whose shape changes.
#[derive(Module, Debug)]
pub struct Shortcut {
    /// 1×1 conv with the block's stride.
    pub conv: SkeletonConv2d,
    /// Its BatchNorm.
    pub norm: BatchNorm,
}

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First 3×3 conv (carries the block's stride).
    pub conv1: SkeletonConv2d,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm,
    /// Second 3×3 conv.
    pub conv2: SkeletonConv2d,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm,
    /// Projection shortcut; `None` is the identity.
    pub shortcut: Option<Shortcut>,
}

impl BasicBlock {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let out = self.bn2.forward(self.conv2.forward(out));
        let identity = match &self.shortcut {
            Some(s) => s.norm.forward(s.conv.forward(x)),
            None => x,
        };
        relu(out + identity)
    }
}

/// CIFAR ResNet with skeleton convolutions.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem conv.
    pub conv1: SkeletonConv2d,
    /// Stem BatchNorm.
    pub bn1: BatchNorm,
    /// The `3n` blocks, stage after stage.
    pub blocks: Vec<BasicBlock>,
    /// Classifier.
    pub fc: Linear,
    /// Blocks per stage.
    pub blocks_per_stage: usize,
}

impl ResNet {
    /// Logits.
    ///
    /// # Shapes
    /// - `input`: `[batch, in_channels, H, W]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(self.conv1.forward(input)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }

    /// The reference's path of block `i`: `layer{stage}.{index}`.
    pub fn block_path(&self, i: usize) -> String {
        let n = self.blocks_per_stage.max(1);
        format!("layer{}.{}", i / n + 1, i % n)
    }
}

impl Prunable for ResNet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        layers.conv("conv1", &self.conv1);
        for (i, block) in self.blocks.iter().enumerate() {
            let path = self.block_path(i);
            layers
                .conv(format!("{path}.conv1"), &block.conv1)
                .norm(format!("{path}.bn1"), &block.bn1);
            layers.conv(format!("{path}.conv2"), &block.conv2);
            if let Some(s) = &block.shortcut {
                layers
                    .conv(format!("{path}.downsample.0"), &s.conv)
                    .not_thresholded();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet20_shapes_and_layer_roles() {
        let device = Device::default();
        let model = ResNetConfig::new().with_depth(20).init(&device).unwrap();
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

    #[test]
    fn custom_widths_and_bad_depths() {
        let device = Device::default();
        let widths: Vec<usize> = [3, 4, 5].iter().flat_map(|&w| vec![w; 9]).collect();
        let model = ResNetConfig::new()
            .with_widths(Some(widths))
            .init(&device)
            .unwrap();
        assert_eq!(model.blocks[9].conv1.weight_dims(), [4, 16, 3, 3]);
        assert_eq!(model.block_path(26), "layer3.8");
        assert!(ResNetConfig::new().with_depth(21).init(&device).is_err());
        assert!(
            ResNetConfig::new()
                .with_widths(Some(vec![3; 5]))
                .init(&device)
                .is_err()
        );
    }
}
