//! Compact VGG.

use burn::module::{Module, Param};
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::conv_norm::{compact_conv_norm, index_tensor};
use super::host_kernel;
use super::stripe_conv::runs_on_host;
use super::{Compactable, StripeConv2d, StripeConvPlan};
use crate::cost::{CostReport, Costed, output_size};
use crate::vgg::{Vgg, VggLayer, vgg_pool};
use crate::{Prunable, ZooError};

/// The structure of a [`CompactVgg`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactVggPlan {
    /// The layer list, with the kept channels of each conv.
    pub layers: Vec<VggLayer>,
    /// The plan of each conv.
    pub convs: Vec<StripeConvPlan>,
    /// Classifier `[d_in, d_out]`.
    pub classifier: [usize; 2],
}

impl CompactVggPlan {
    /// A model of this structure with zero weights (to load a record into).
    pub fn init(&self, device: &Device) -> CompactVgg {
        CompactVgg {
            convs: self.convs.iter().map(|p| p.init(device)).collect(),
            norms: self
                .convs
                .iter()
                .map(|p| BatchNormConfig::new(p.out_channels).init(device))
                .collect(),
            pool: vgg_pool(),
            classifier: LinearConfig::new(self.classifier[0], self.classifier[1]).init(device),
            layers: self.layers.clone(),
        }
    }
}

/// A compacted [`Vgg`]: stripe-wise convs over the kept channels.
#[derive(Module, Debug)]
pub struct CompactVgg {
    /// The convs, in order.
    pub convs: Vec<StripeConv2d>,
    /// The BatchNorm after each conv (kept channels).
    pub norms: Vec<BatchNorm>,
    /// The 2×2 max pool.
    pub pool: MaxPool2d,
    /// The classifier on the kept features.
    pub classifier: Linear,
    /// The layer list, with the kept channels of each conv.
    #[module(skip)]
    pub layers: Vec<VggLayer>,
}

/// The 2×2 max pool: on host memory on the CPU backends (Burn's pool also computes the argmax
/// indices a backward pass would need: 17 % of a compact VGG-16's time), Burn's elsewhere.
fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    if !runs_on_host(&x) {
        return pool.forward(x);
    }
    let device = x.device();
    let [n, c, h, w] = x.dims();
    let data: Vec<f32> = x.into_data().try_into_vec().unwrap_or_default();
    let out = host_kernel::max_pool_2x2(&data, [n * c, h, w]);
    Tensor::from_data(TensorData::new(out, [n, c, h / 2, w / 2]), &device)
}

impl CompactVgg {
    /// Logits, equal to those of the masked [`Vgg`] it came from.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = input;
        let mut conv = 0;
        for layer in &self.layers {
            x = match layer {
                VggLayer::Conv(_) => {
                    let y = self.norms[conv].forward(self.convs[conv].forward(x));
                    conv += 1;
                    relu(y)
                }
                VggLayer::MaxPool => max_pool(&self.pool, x),
            };
        }
        self.classifier.forward(x.flatten(1, 3))
    }

    /// The structure, to rebuild the model before loading a record.
    pub fn plan(&self) -> CompactVggPlan {
        let [d_in, d_out] = self.classifier.weight.dims();
        CompactVggPlan {
            layers: self.layers.clone(),
            convs: self.convs.iter().map(|c| c.plan.clone()).collect(),
            classifier: [d_in, d_out],
        }
    }

    /// The convs with their reference paths (`features.N`), in forward order.
    pub fn named_convs(&self) -> Vec<(String, &StripeConv2d)> {
        let mut index = 0;
        let mut convs = self.convs.iter();
        let mut named = Vec::new();
        for layer in &self.layers {
            match layer {
                VggLayer::Conv(_) => {
                    named.extend(convs.next().map(|c| (format!("features.{index}"), c)));
                    index += 3;
                }
                VggLayer::MaxPool => index += 1,
            }
        }
        named
    }
}

/// The cost walk shared by the dense and the compact VGG. `conv` records conv `k` named `name`
/// on an input of size `hw` and returns its output size. Names follow the reference's
/// `Sequential` indices, which end with an `AvgPool2d(1)` (an identity that `flops.py` counts).
pub(crate) fn vgg_cost(
    layers: &[VggLayer],
    in_channels: usize,
    [h, w]: [usize; 2],
    [d_in, d_out]: [usize; 2],
    mut conv: impl FnMut(&mut CostReport, &str, usize, [usize; 2]) -> [usize; 2],
) -> CostReport {
    let mut report = CostReport::new([in_channels, h, w]);
    let (mut index, mut k, mut hw, mut channels) = (0, 0, [h, w], in_channels);
    for layer in layers {
        match *layer {
            VggLayer::Conv(out) => {
                hw = conv(&mut report, &format!("features.{index}"), k, hw);
                report.norm(&format!("features.{}", index + 1), out, hw);
                report.relu(&format!("features.{}", index + 2), out, hw);
                (channels, index, k) = (out, index + 3, k + 1);
            }
            VggLayer::MaxPool => {
                hw = output_size(hw, [2, 2], [2, 2], [0, 0]);
                report.pool(&format!("features.{index}"), 2, channels, hw);
                index += 1;
            }
        }
    }
    report.pool(&format!("features.{index}"), 1, channels, hw);
    report.linear("classifier", d_in, d_out);
    report
}

impl Compactable for Vgg {
    type Compact = CompactVgg;

    fn compact(&self) -> Result<CompactVgg, ZooError> {
        let model = self.valid();
        let [in_channels] = [model.convs[0].weight_dims()[1]];
        let mut inputs: Vec<usize> = (0..in_channels).collect();
        let mut inputs_zero = false;
        let (mut convs, mut norms, mut layers) = (Vec::new(), Vec::new(), Vec::new());
        let mut k = 0;
        let names: Vec<String> = model
            .collect_prunable()
            .iter()
            .map(|l| l.name.clone())
            .collect();
        for layer in &model.layers {
            match layer {
                VggLayer::Conv(_) => {
                    let c = compact_conv_norm(
                        &names[k],
                        &model.convs[k],
                        &model.norms[k],
                        &inputs,
                        inputs_zero,
                        true,
                    )?;
                    layers.push(VggLayer::Conv(c.kept.len()));
                    (inputs, inputs_zero) = (c.kept, c.output_zero);
                    convs.push(c.conv);
                    norms.push(c.norm);
                    k += 1;
                }
                VggLayer::MaxPool => layers.push(VggLayer::MaxPool),
            }
        }
        // The classifier reads the flattened [C, h, w] map: keep the rows of the kept channels.
        let weight = model.classifier.weight.val();
        let [d_in, _] = weight.dims();
        let cout = model.convs[k - 1].weight_dims()[0];
        let area = d_in / cout;
        let rows: Vec<usize> = inputs
            .iter()
            .flat_map(|&c| c * area..(c + 1) * area)
            .collect();
        let like = model.norms[0].gamma.val();
        let classifier = Linear {
            weight: Param::from_tensor(weight.select(0, index_tensor(&rows, &like))),
            bias: model.classifier.bias.clone(),
        };
        Ok(CompactVgg {
            convs,
            norms,
            pool: vgg_pool(),
            classifier,
            layers,
        })
    }
}

impl Costed for CompactVgg {
    fn cost(&self, input_size: [usize; 2]) -> CostReport {
        let in_channels = self.convs[0].plan.in_channels;
        let classifier = self.classifier.weight.dims();
        vgg_cost(
            &self.layers,
            in_channels,
            input_size,
            classifier,
            |r, name, k, hw| r.compact_conv(name, &self.convs[k], hw),
        )
    }
}

impl Costed for Vgg {
    fn cost(&self, input_size: [usize; 2]) -> CostReport {
        let in_channels = self.convs[0].weight_dims()[1];
        let classifier = self.classifier.weight.dims();
        vgg_cost(
            &self.layers,
            in_channels,
            input_size,
            classifier,
            |r, name, k, hw| r.skeleton_conv(name, &self.convs[k], hw),
        )
    }
}
