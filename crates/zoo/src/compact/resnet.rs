//! Compact ResNet (CIFAR and ImageNet styles).

use burn::module::{Module, Param};
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::conv_norm::{CompactedConv, compact_conv_norm, host, silent_output};
use super::{Compactable, StripeConv2d, StripeConvPlan};
use crate::ZooError;
use crate::cost::{CostReport, Costed, output_size};
use crate::resnet::{ResNet, block_path, stem_pool};

/// The structure of a [`CompactBlock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactBlockPlan {
    /// The convs of the residual branch; empty when it was folded into a constant.
    pub convs: Vec<StripeConvPlan>,
    /// Channels of the folded constant, if the branch is one and it is not zero.
    pub constant: Option<usize>,
    /// The projection shortcut's conv, if any.
    pub shortcut: Option<StripeConvPlan>,
}

/// The structure of a [`CompactResNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactResNetPlan {
    /// Stem conv.
    pub stem: StripeConvPlan,
    /// Whether the stem has the ImageNet max pool.
    pub stem_pool: bool,
    /// The blocks.
    pub blocks: Vec<CompactBlockPlan>,
    /// Classifier `[d_in, d_out]`.
    pub fc: [usize; 2],
    /// Blocks in each stage.
    pub stage_blocks: Vec<usize>,
}

fn norm_for(plan: &StripeConvPlan, device: &Device) -> BatchNorm {
    BatchNormConfig::new(plan.out_channels).init(device)
}

impl CompactResNetPlan {
    /// A model of this structure with zero weights (to load a record into).
    pub fn init(&self, device: &Device) -> CompactResNet {
        let blocks = self
            .blocks
            .iter()
            .map(|b| CompactBlock {
                convs: b.convs.iter().map(|p| p.init(device)).collect(),
                norms: b.convs.iter().map(|p| norm_for(p, device)).collect(),
                constant: b
                    .constant
                    .map(|c| Param::from_tensor(Tensor::zeros([c], device))),
                shortcut: b.shortcut.as_ref().map(|p| CompactShortcut {
                    conv: p.init(device),
                    norm: norm_for(p, device),
                }),
            })
            .collect();
        CompactResNet {
            conv1: self.stem.init(device),
            bn1: norm_for(&self.stem, device),
            pool: self.stem_pool.then(stem_pool),
            blocks,
            fc: LinearConfig::new(self.fc[0], self.fc[1]).init(device),
            stage_blocks: self.stage_blocks.clone(),
        }
    }
}

/// A compacted projection shortcut.
#[derive(Module, Debug)]
pub struct CompactShortcut {
    /// Its 1×1 conv.
    pub conv: StripeConv2d,
    /// Its BatchNorm.
    pub norm: BatchNorm,
}

/// A compacted block: `relu(shortcut(x) + branch(x))`, the branch being the compacted chain or
/// the constant `c = bn_last(0)` when the chain's output no longer depends on `x`.
#[derive(Module, Debug)]
pub struct CompactBlock {
    /// The branch's convs (empty when folded).
    pub convs: Vec<StripeConv2d>,
    /// The BatchNorm after each conv.
    pub norms: Vec<BatchNorm>,
    /// The folded branch, when it is a non-zero constant.
    pub constant: Option<Param<Tensor<1>>>,
    /// Projection shortcut; `None` is the identity.
    pub shortcut: Option<CompactShortcut>,
}

impl CompactBlock {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut out = match &self.shortcut {
            Some(s) => s.norm.forward(s.conv.forward(x.clone())),
            None => x.clone(),
        };
        if !self.convs.is_empty() {
            let last = self.convs.len() - 1;
            let mut y = x;
            for (k, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
                y = norm.forward(conv.forward(y));
                if k < last {
                    y = relu(y);
                }
            }
            out = y + out;
        }
        if let Some(c) = &self.constant {
            let [channels] = c.dims();
            out = out + c.val().reshape([1, channels, 1, 1]);
        }
        relu(out)
    }
}

/// A compacted [`ResNet`].
#[derive(Module, Debug)]
pub struct CompactResNet {
    /// Stem conv.
    pub conv1: StripeConv2d,
    /// Stem BatchNorm.
    pub bn1: BatchNorm,
    /// Stem max pool (ImageNet style).
    pub pool: Option<MaxPool2d>,
    /// The blocks.
    pub blocks: Vec<CompactBlock>,
    /// Classifier.
    pub fc: Linear,
    /// Blocks in each stage.
    #[module(skip)]
    pub stage_blocks: Vec<usize>,
}

impl CompactResNet {
    /// Logits, equal to those of the masked [`ResNet`] it came from.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(self.conv1.forward(input)));
        if let Some(pool) = &self.pool {
            x = pool.forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }

    /// The structure, to rebuild the model before loading a record.
    pub fn plan(&self) -> CompactResNetPlan {
        let [d_in, d_out] = self.fc.weight.dims();
        CompactResNetPlan {
            stem: self.conv1.plan.clone(),
            stem_pool: self.pool.is_some(),
            blocks: self
                .blocks
                .iter()
                .map(|b| CompactBlockPlan {
                    convs: b.convs.iter().map(|c| c.plan.clone()).collect(),
                    constant: b.constant.as_ref().map(|c| c.dims()[0]),
                    shortcut: b.shortcut.as_ref().map(|s| s.conv.plan.clone()),
                })
                .collect(),
            fc: [d_in, d_out],
            stage_blocks: self.stage_blocks.clone(),
        }
    }

    /// The convs with their reference paths (`conv1`, `layer1.0.conv1`, …,
    /// `layer2.0.downsample.0`), in forward order.
    pub fn named_convs(&self) -> Vec<(String, &StripeConv2d)> {
        let mut named = vec![("conv1".to_string(), &self.conv1)];
        for (i, block) in self.blocks.iter().enumerate() {
            let path = block_path(&self.stage_blocks, i);
            for (k, conv) in block.convs.iter().enumerate() {
                named.push((format!("{path}.conv{}", k + 1), conv));
            }
            if let Some(s) = &block.shortcut {
                named.push((format!("{path}.downsample.0"), &s.conv));
            }
        }
        named
    }

    /// Blocks whose residual branch was folded into a constant, by path.
    pub fn folded_blocks(&self) -> Vec<String> {
        (0..self.blocks.len())
            .filter(|&i| self.blocks[i].convs.is_empty())
            .map(|i| block_path(&self.stage_blocks, i))
            .collect()
    }
}

impl Compactable for ResNet {
    type Compact = CompactResNet;

    fn compact(&self) -> Result<CompactResNet, ZooError> {
        let model = self.valid();
        let all = |n: usize| (0..n).collect::<Vec<_>>();
        let stem_in = model.conv1.weight_dims()[1];
        let stem = compact_conv_norm(
            "conv1",
            &model.conv1,
            &model.bn1,
            &all(stem_in),
            false,
            false,
        )?;
        let mut blocks = Vec::with_capacity(model.blocks.len());
        for (i, block) in model.blocks.iter().enumerate() {
            let path = model.block_path(i);
            let width = block.convs[0].weight_dims()[1];
            let last = block.convs.len() - 1;
            let (mut inputs, mut inputs_zero) = (all(width), false);
            let mut chain: Vec<CompactedConv> = Vec::with_capacity(block.convs.len());
            for (k, (conv, norm)) in block.convs.iter().zip(&block.norms).enumerate() {
                let c = compact_conv_norm(
                    &format!("{path}.conv{}", k + 1),
                    conv,
                    norm,
                    &inputs,
                    inputs_zero,
                    k < last,
                )?;
                (inputs, inputs_zero) = (c.kept.clone(), c.output_zero);
                chain.push(c);
            }
            let folded = chain.last().is_some_and(|c| c.silent);
            let (convs, norms, constant) = if folded {
                let c = silent_output(&block.convs[last], &block.norms[last]);
                let nonzero = host(c.clone()).iter().any(|v| *v != 0.0);
                (
                    Vec::new(),
                    Vec::new(),
                    nonzero.then(|| Param::from_tensor(c)),
                )
            } else {
                let (convs, norms) = chain.into_iter().map(|c| (c.conv, c.norm)).unzip();
                (convs, norms, None)
            };
            let shortcut = match &block.shortcut {
                Some(s) => {
                    let c = compact_conv_norm(
                        &format!("{path}.downsample.0"),
                        &s.conv,
                        &s.norm,
                        &all(width),
                        false,
                        false,
                    )?;
                    Some(CompactShortcut {
                        conv: c.conv,
                        norm: c.norm,
                    })
                }
                None => None,
            };
            blocks.push(CompactBlock {
                convs,
                norms,
                constant,
                shortcut,
            });
        }
        Ok(CompactResNet {
            conv1: stem.conv,
            bn1: stem.norm,
            pool: model.pool.clone(),
            blocks,
            fc: model.fc.clone(),
            stage_blocks: model.stage_blocks.clone(),
        })
    }
}

impl Costed for CompactResNet {
    /// Params, FLOPs and MACs for a `[height, width]` input.
    fn cost(&self, [h, w]: [usize; 2]) -> CostReport {
        let mut report = CostReport::new([self.conv1.plan.in_channels, h, w]);
        let mut hw = report.compact_conv("conv1", &self.conv1, [h, w]);
        report.norm("bn1", self.conv1.plan.out_channels, hw);
        if self.pool.is_some() {
            hw = output_size(hw, [3, 3], [2, 2], [1, 1]);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let path = block_path(&self.stage_blocks, i);
            let mut out = hw;
            for (k, conv) in block.convs.iter().enumerate() {
                out = report.compact_conv(&format!("{path}.conv{}", k + 1), conv, out);
                report.norm(&format!("{path}.bn{}", k + 1), conv.plan.out_channels, out);
            }
            if let Some(c) = &block.constant {
                report.constant(&format!("{path}.constant"), c.dims()[0]);
            }
            if let Some(s) = &block.shortcut {
                out = report.compact_conv(&format!("{path}.downsample.0"), &s.conv, hw);
                report.norm(
                    &format!("{path}.downsample.1"),
                    s.conv.plan.out_channels,
                    out,
                );
            }
            hw = out;
        }
        let [d_in, d_out] = self.fc.weight.dims();
        report.linear("fc", d_in, d_out);
        report
    }
}

impl Costed for ResNet {
    fn cost(&self, [h, w]: [usize; 2]) -> CostReport {
        let mut report = CostReport::new([self.conv1.weight_dims()[1], h, w]);
        let mut hw = report.skeleton_conv("conv1", &self.conv1, [h, w]);
        report.norm("bn1", self.conv1.weight_dims()[0], hw);
        if self.pool.is_some() {
            hw = output_size(hw, [3, 3], [2, 2], [1, 1]);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let path = self.block_path(i);
            let mut out = hw;
            for (k, conv) in block.convs.iter().enumerate() {
                out = report.skeleton_conv(&format!("{path}.conv{}", k + 1), conv, out);
                report.norm(&format!("{path}.bn{}", k + 1), conv.weight_dims()[0], out);
            }
            if let Some(s) = &block.shortcut {
                let o = report.skeleton_conv(&format!("{path}.downsample.0"), &s.conv, hw);
                report.norm(&format!("{path}.downsample.1"), s.conv.weight_dims()[0], o);
            }
            hw = out;
        }
        let [d_in, d_out] = self.fc.weight.dims();
        report.linear("fc", d_in, d_out);
        report
    }
}
