//! CIFAR-style VGG built from skeleton convolutions, as in the reference code.
//!
//! `features`: for each entry of the layer list, a 3×3 [`SkeletonConv2d`] (padding 1, no bias)
//! + BatchNorm + ReLU, or a 2×2 max pool; then a linear classifier on the flattened features.
//!
//! Layer paths follow the reference's `nn.Sequential` indices (`features.0`, `features.1`, …), so
//! reports and state files line up with it. Every conv is thresholded and drives its BatchNorm;
//! each conv's channels are read by the next conv (through a max pool, which keeps zero channels
//! zero) or, for the last, by the classifier, so compaction removes dead channels everywhere.
//! The layer list keeps the widths the model was built with; a compacted model's widths are its
//! tensors'.

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use texprune_kernels::pool::max_pool_2x2;
use texprune_kernels::{output_size, runs_on_host, with_values};
use texprune_layer::{
    Activation, CostReport, Costed, ModelError, Prunable, PrunableLayers, Shapes, SkeletonConv2d,
    SkeletonConv2dConfig,
};

/// One entry of a VGG layer list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VggLayer {
    /// A 3×3 conv with this many output channels, followed by BatchNorm and ReLU.
    Conv(usize),
    /// A 2×2 max pool with stride 2.
    MaxPool,
}

/// Configuration of a [`Vgg`].
#[derive(Config, Debug)]
pub struct VggConfig {
    /// The layer list (the reference's `cfg`).
    pub layers: Vec<VggLayer>,
    /// Number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Input height and width.
    #[config(default = "[32, 32]")]
    pub input_size: [usize; 2],
}

impl VggConfig {
    /// The standard VGG layout for 32×32 inputs: five stages of 64, 128, 256, 512 and 512
    /// channels with `convs_per_stage[i]` convs each, every stage closed by a max pool.
    pub fn standard(convs_per_stage: [usize; 5]) -> Self {
        let layers = [64, 128, 256, 512, 512]
            .into_iter()
            .zip(convs_per_stage)
            .flat_map(|(width, n)| {
                core::iter::repeat_n(VggLayer::Conv(width), n).chain([VggLayer::MaxPool])
            })
            .collect();
        Self::new(layers)
    }

    /// The small network of the quickstart: `[32, M, 64, M, 128, M]` on 1×28×28 (Fashion-MNIST,
    /// MNIST).
    pub fn small() -> Self {
        use VggLayer::{Conv as C, MaxPool as M};
        Self::new(vec![C(32), M, C(64), M, C(128), M])
            .with_in_channels(1)
            .with_input_size([28, 28])
    }

    /// VGG-11 for 32×32 inputs.
    pub fn vgg11() -> Self {
        Self::standard([1, 1, 2, 2, 2])
    }

    /// VGG-13 for 32×32 inputs.
    pub fn vgg13() -> Self {
        Self::standard([2, 2, 2, 2, 2])
    }

    /// VGG-16 for 32×32 inputs.
    pub fn vgg16() -> Self {
        Self::standard([2, 2, 3, 3, 3])
    }

    /// VGG-19 for 32×32 inputs.
    pub fn vgg19() -> Self {
        Self::standard([2, 2, 4, 4, 4])
    }

    /// Builds the model.
    ///
    /// # Errors
    /// [`ModelError::Config`] for a layer list that describes no VGG, [`ModelError::Zero`] for a zero
    /// size.
    pub fn init(&self, device: &Device) -> Result<Vgg, ModelError> {
        if self.num_classes == 0 {
            return Err(ModelError::Zero {
                what: "num_classes",
            });
        }
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let (mut channels, [mut h, mut w]) = (self.in_channels, self.input_size);
        for layer in &self.layers {
            match *layer {
                VggLayer::Conv(out) => {
                    let conv = SkeletonConv2dConfig::new([channels, out], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_bias(false);
                    convs.push(conv.init(device)?);
                    norms.push(BatchNormConfig::new(out).init(device));
                    channels = out;
                }
                VggLayer::MaxPool => {
                    if h < 2 || w < 2 {
                        return Err(ModelError::Config(format!(
                            "max pool on a {h}×{w} feature map"
                        )));
                    }
                    (h, w) = (h / 2, w / 2);
                }
            }
        }
        if convs.is_empty() {
            return Err(ModelError::Config("VGG needs at least one conv".into()));
        }
        Ok(Vgg {
            convs,
            norms,
            pool: vgg_pool(),
            classifier: LinearConfig::new(channels * h * w, self.num_classes).init(device),
            layers: self.layers.clone(),
        })
    }
}

/// The 2×2, stride-2 max pool of a VGG.
pub(crate) fn vgg_pool() -> MaxPool2d {
    MaxPool2dConfig::new([2, 2]).init()
}

/// CIFAR VGG with skeleton convolutions.
#[derive(Module, Debug)]
pub struct Vgg {
    /// The convs, in order.
    pub convs: Vec<SkeletonConv2d>,
    /// The BatchNorm after each conv.
    pub norms: Vec<BatchNorm>,
    /// The 2×2 max pool.
    pub pool: MaxPool2d,
    /// The classifier on the flattened features.
    pub classifier: Linear,
    /// The layer list.
    #[module(skip)]
    pub layers: Vec<VggLayer>,
}

impl Vgg {
    /// The class logits of a batch of images.
    ///
    /// # Shapes
    /// - `input`: `[batch, in_channels, H, W]` (the configured input size)
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = input;
        let mut conv = 0;
        for layer in &self.layers {
            x = match layer {
                VggLayer::Conv(_) => {
                    let y =
                        self.convs[conv].forward_norm(x, &self.norms[conv], None, Activation::Relu);
                    conv += 1;
                    y
                }
                VggLayer::MaxPool => max_pool(&self.pool, x),
            };
        }
        self.classifier.forward(x.flatten(1, 3))
    }

    /// The reference's `Sequential` index `N` of each conv (`features.N`; its BatchNorm is
    /// `N + 1`, its ReLU `N + 2`), in order.
    pub(crate) fn conv_indices(&self) -> Vec<usize> {
        let mut index = 0;
        let mut indices = Vec::new();
        for layer in &self.layers {
            match layer {
                VggLayer::Conv(_) => {
                    indices.push(index);
                    index += 3;
                }
                VggLayer::MaxPool => index += 1,
            }
        }
        indices
    }
}

/// The 2×2 max pool: on host memory on the CPU backends outside autodiff (Burn's pool also
/// computes the argmax indices a backward pass would need: 17 % of a compact VGG-16's time),
/// Burn's elsewhere.
fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    if !runs_on_host(&x) {
        return pool.forward(x);
    }
    let device = x.device();
    let [n, c, h, w] = x.dims();
    let out = with_values(x, |x| max_pool_2x2(x, [n * c, h, w]));
    Tensor::from_data(TensorData::new(out, [n, c, h / 2, w / 2]), &device)
}

impl Prunable for Vgg {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        // Reference Sequential indices: conv i, bn i+1, relu i+2; a pool takes one index.
        let indices = self.conv_indices();
        for (k, index) in indices.iter().enumerate() {
            let next = match indices.get(k + 1) {
                Some(next) => format!("features.{next}"),
                None => "classifier".to_string(),
            };
            layers
                .conv(format!("features.{index}"), &self.convs[k])
                .norm(format!("features.{}", index + 1), &self.norms[k])
                .relu()
                .feeds([next]);
        }
        layers.linear("classifier", &self.classifier);
    }

    fn costed(&self) -> Option<&dyn Costed> {
        Some(self)
    }
}

impl Costed for Vgg {
    /// Names follow the reference's `Sequential` indices, which end with an `AvgPool2d(1)` (an
    /// identity that `flops.py` counts); ReLU and pools are counted as its modules are.
    fn cost_of(&self, [h, w]: [usize; 2], shapes: Shapes<'_>) -> CostReport {
        let in_channels = self.convs[0].weight_dims()[1];
        let mut report = CostReport::new([in_channels, h, w]);
        let (mut index, mut k, mut hw, mut channels) = (0, 0, [h, w], in_channels);
        for layer in &self.layers {
            match *layer {
                VggLayer::Conv(_) => {
                    let name = format!("features.{index}");
                    let shape = shapes.conv(&name, &self.convs[k]);
                    hw = report.prunable_conv(&name, &shape, hw);
                    channels = shape.channels[1];
                    report.norm(&format!("features.{}", index + 1), channels, hw);
                    report.relu(&format!("features.{}", index + 2), channels, hw);
                    (index, k) = (index + 3, k + 1);
                }
                VggLayer::MaxPool => {
                    hw = output_size(hw, [2, 2], [2, 2], [0, 0]);
                    report.pool(&format!("features.{index}"), 2, channels, hw);
                    index += 1;
                }
            }
        }
        report.pool(&format!("features.{index}"), 1, channels, hw);
        let [d_in, d_out] = self.classifier.weight.dims();
        report.linear(
            "classifier",
            shapes.linear_inputs("classifier", d_in),
            d_out,
        );
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VggLayer::{Conv as C, MaxPool as M};

    #[test]
    fn small_vgg_runs_and_names_layers_like_the_reference() {
        let device = Device::default();
        let model = VggConfig::new(vec![C(4), M, C(6), M, C(5)])
            .init(&device)
            .unwrap();
        let y = model.forward(Tensor::zeros([2, 3, 32, 32], &device));
        assert_eq!(y.dims(), [2, 10]);
        let names: Vec<_> = model
            .collect_prunable()
            .iter()
            .map(|l| (l.name.clone(), l.norm.as_ref().map(|n| n.name.clone())))
            .collect();
        assert_eq!(
            names,
            [
                ("features.0".into(), Some("features.1".into())),
                ("features.4".into(), Some("features.5".into())),
                ("features.8".into(), Some("features.9".into())),
            ]
        );
    }

    #[test]
    fn vgg16_has_13_convs_and_rejects_too_many_pools() {
        let device = Device::default();
        let vgg16 = VggConfig::vgg16();
        assert_eq!(vgg16.layers.iter().filter(|l| **l != M).count(), 13);
        assert_eq!(vgg16.layers[..3], [C(64), C(64), M]);
        assert_eq!(VggConfig::vgg19().layers.len(), 16 + 5);
        assert_eq!(vgg16.init(&device).unwrap().convs.len(), 13);
        let err = VggConfig::new(vec![C(4), M, M])
            .with_input_size([2, 2])
            .init(&device);
        assert!(matches!(err, Err(ModelError::Config(_))));
    }
}
