//! MobileNetV2 (Sandler et al., 2018) with skeleton convolutions, in torchvision's structure:
//! a 3×3 stem, 17 inverted residual blocks (1×1 expand → 3×3 depthwise → 1×1 linear project,
//! added to the input where the shape allows), a 1×1 conv to 1280 channels, global pooling,
//! dropout and a linear classifier; ReLU6 after every norm but the projections'.
//!
//! Widths follow torchvision's `width_mult` rounding (`_make_divisible` to a multiple of 8), and
//! [`TorchLayout`](crate::TorchLayout) gives torchvision's names (`features.N.conv.K`,
//! `classifier.1`), so `texprune::pytorch::load` reads a state dict written by
//! `torchvision.models.mobilenet_v2`. The CIFAR style keeps the 32×32 input larger for longer:
//! stride 1 in the stem and in the first 24-channel block (as CIFAR ports of MobileNetV2 do), the
//! same layers and names.
//!
//! The declaration: every conv is thresholded; an expand conv feeds its depthwise conv (which,
//! grouped, keeps every channel: METHOD §5 with groups), a depthwise conv feeds its projection,
//! and a projection feeds the next block's first conv only where neither block adds a residual
//! (a channel written into a residual stream stays); the last conv feeds the classifier.

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use texprune_layer::{
    Activation, ModelError, Prunable, PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig,
};

/// Where the network downsamples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MobileNetStyle {
    /// torchvision's: stride 2 in the stem and in the first block of the 24-, 32-, 64- and
    /// 160-channel stages (224×224 → 7×7).
    ImageNet,
    /// Stride 1 in the stem and in the first 24-channel block (32×32 → 4×4).
    Cifar,
}

/// torchvision's `inverted_residual_setting`: expansion `t`, output channels `c`, blocks `n`,
/// stride of the first block `s`.
const SETTING: [[usize; 4]; 7] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
];

/// torchvision's `_make_divisible(v, 8)`: `v` rounded to the nearest multiple of 8, at least 8,
/// and not below 90 % of `v`.
fn make_divisible(v: f64) -> usize {
    let divisor = 8.0;
    let rounded = (((v + divisor / 2.0) / divisor).floor() * divisor).max(divisor);
    let rounded = if rounded < 0.9 * v {
        rounded + divisor
    } else {
        rounded
    };
    rounded as usize
}

/// Configuration of a [`MobileNetV2`].
#[derive(Config, Debug)]
pub struct MobileNetV2Config {
    /// Width multiplier: every width is `make_divisible(width · width_mult)`; the last conv keeps
    /// 1280 channels unless `width_mult > 1`.
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Number of classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Where it downsamples.
    #[config(default = "MobileNetStyle::ImageNet")]
    pub style: MobileNetStyle,
    /// Dropout before the classifier (training only).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Declare the residual streams (opt-in; docs/compaction.md, "Coupled pruning"): the
    /// projections that write into a stage's stream and the convs that read it, so that a
    /// stream channel dead in every writer is removed. Without it the stream keeps its channels.
    #[config(default = false)]
    pub residual_streams: bool,
}

impl MobileNetV2Config {
    /// torchvision's `mobilenet_v2()`: 1000 classes, ImageNet strides.
    pub fn imagenet() -> Self {
        Self::new()
    }

    /// A CIFAR MobileNetV2: 10 classes, stride 1 in the stem and the first 24-channel block.
    pub fn cifar() -> Self {
        Self::new()
            .with_num_classes(10)
            .with_style(MobileNetStyle::Cifar)
    }

    /// A model with fresh weights.
    ///
    /// # Errors
    /// [`ModelError::Zero`] for zero classes or input channels, [`ModelError::Config`] for a
    /// width multiplier that is not positive and finite or a dropout outside `[0, 1)`.
    pub fn init(&self, device: &Device) -> Result<MobileNetV2, ModelError> {
        if self.num_classes == 0 {
            return Err(ModelError::Zero {
                what: "num_classes",
            });
        }
        if self.in_channels == 0 {
            return Err(ModelError::Zero {
                what: "in_channels",
            });
        }
        if !(self.width_mult.is_finite() && self.width_mult > 0.0) {
            return Err(ModelError::Config(format!(
                "width_mult must be positive and finite, got {}",
                self.width_mult
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        let cifar = self.style == MobileNetStyle::Cifar;
        let mut cin = make_divisible(32.0 * self.width_mult);
        let stem = ConvNorm::new(
            self.in_channels,
            cin,
            3,
            if cifar { 1 } else { 2 },
            1,
            device,
        )?;
        let mut blocks = Vec::new();
        for (stage, &[t, c, n, s]) in SETTING.iter().enumerate() {
            let out = make_divisible(c as f64 * self.width_mult);
            for i in 0..n {
                let stride = match (i, cifar && stage == 1) {
                    (0, false) => s,
                    _ => 1,
                };
                blocks.push(InvertedResidual::new(cin, out, stride, t, device)?);
                cin = out;
            }
        }
        let last_width = make_divisible(1280.0 * self.width_mult.max(1.0));
        Ok(MobileNetV2 {
            stem,
            blocks,
            last: ConvNorm::new(cin, last_width, 1, 1, 1, device)?,
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(last_width, self.num_classes).init(device),
            residual_streams: self.residual_streams,
        })
    }
}

/// A conv without bias and its BatchNorm (torchvision's `Conv2dNormActivation` without the
/// activation, which the forward applies).
#[derive(Module, Debug)]
pub struct ConvNorm {
    /// The conv: padding `(k − 1) / 2`, no bias.
    pub conv: SkeletonConv2d,
    /// Its BatchNorm.
    pub norm: BatchNorm,
}

impl ConvNorm {
    fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let p = (kernel - 1) / 2;
        Ok(Self {
            conv: SkeletonConv2dConfig::new([cin, cout], [kernel, kernel])
                .with_stride([stride, stride])
                .with_groups(groups)
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(false)
                .init(device)?,
            norm: BatchNormConfig::new(cout).init(device),
        })
    }

    fn forward(&self, x: Tensor<4>, residual: Option<Tensor<4>>, act: Activation) -> Tensor<4> {
        self.conv.forward_norm(x, &self.norm, residual, act)
    }
}

/// An inverted residual block: `project(depthwise(expand(x))) (+ x)`.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// 1×1 expansion to `t · Cin` channels, ReLU6 (absent where `t = 1`).
    pub expand: Option<ConvNorm>,
    /// 3×3 depthwise conv with the block's stride, ReLU6.
    pub depthwise: ConvNorm,
    /// 1×1 linear projection (no activation).
    pub project: ConvNorm,
    /// Whether the input is added to the output (stride 1, same width).
    #[module(skip)]
    pub residual: bool,
}

impl InvertedResidual {
    fn new(
        cin: usize,
        out: usize,
        stride: usize,
        expansion: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let hidden = cin * expansion;
        Ok(Self {
            expand: match expansion {
                1 => None,
                _ => Some(ConvNorm::new(cin, hidden, 1, 1, 1, device)?),
            },
            depthwise: ConvNorm::new(hidden, hidden, 3, stride, hidden, device)?,
            project: ConvNorm::new(hidden, out, 1, 1, 1, device)?,
            residual: stride == 1 && cin == out,
        })
    }

    /// The block's output.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = expand.forward(y, None, Activation::Relu6);
        }
        let y = self.depthwise.forward(y, None, Activation::Relu6);
        let residual = self.residual.then_some(x);
        self.project.forward(y, residual, Activation::Identity)
    }
}

/// MobileNetV2 with skeleton convolutions.
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    /// 3×3 stem, ReLU6.
    pub stem: ConvNorm,
    /// The inverted residual blocks.
    pub blocks: Vec<InvertedResidual>,
    /// 1×1 conv to the classifier's width, ReLU6.
    pub last: ConvNorm,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// The linear classifier on the pooled features.
    pub classifier: Linear,
    /// Whether the declaration names the residual streams
    /// ([`MobileNetV2Config::residual_streams`]).
    #[module(skip)]
    pub residual_streams: bool,
}

impl MobileNetV2 {
    /// The class logits of a batch of images.
    ///
    /// # Shapes
    /// - `input`: `[batch, in_channels, H, W]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(input, None, Activation::Relu6);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.last.forward(x, None, Activation::Relu6);
        let x = adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3);
        self.classifier.forward(self.dropout.forward(x))
    }

    /// Every conv with its norm, in forward order, under its Burn and torchvision paths.
    fn named_layers(&self) -> Vec<Named<'_>> {
        let named = |module: String, conv: String, norm: String, layer, activation| Named {
            module,
            conv,
            norm,
            layer,
            activation,
            adds_residual: false,
            input_added: false,
        };
        let relu6 = Activation::Relu6;
        let stem = named(
            "stem".into(),
            "features.0.0".into(),
            "features.0.1".into(),
            &self.stem,
            relu6,
        );
        let mut layers = vec![stem];
        for (i, block) in self.blocks.iter().enumerate() {
            // torchvision's `conv` sequence: [expand (conv, norm, act)], depthwise (conv, norm,
            // act), project conv, project norm.
            let (burn, torch) = (format!("blocks.{i}"), format!("features.{}.conv", i + 1));
            let first = layers.len();
            let d = usize::from(block.expand.is_some());
            if let Some(expand) = &block.expand {
                let (conv, norm) = (format!("{torch}.0.0"), format!("{torch}.0.1"));
                layers.push(named(format!("{burn}.expand"), conv, norm, expand, relu6));
            }
            let (conv, norm) = (format!("{torch}.{d}.0"), format!("{torch}.{d}.1"));
            layers.push(named(
                format!("{burn}.depthwise"),
                conv,
                norm,
                &block.depthwise,
                relu6,
            ));
            let (conv, norm) = (format!("{torch}.{}", d + 1), format!("{torch}.{}", d + 2));
            let project = &block.project;
            let mut project = named(
                format!("{burn}.project"),
                conv,
                norm,
                project,
                Activation::Identity,
            );
            project.adds_residual = block.residual;
            layers.push(project);
            layers[first].input_added = block.residual;
        }
        let last = format!("features.{}", self.blocks.len() + 1);
        let (conv, norm) = (format!("{last}.0"), format!("{last}.1"));
        layers.push(named("last".into(), conv, norm, &self.last, relu6));
        layers
    }

    /// `(Burn path, torchvision path)` of every conv and norm, and of the classifier.
    pub(crate) fn torch_paths(&self) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> = self
            .named_layers()
            .into_iter()
            .flat_map(|n| {
                [
                    (format!("{}.conv", n.module), n.conv),
                    (format!("{}.norm", n.module), n.norm),
                ]
            })
            .collect();
        names.push(("classifier".into(), "classifier.1".into()));
        names
    }
}

/// A conv and its norm as the declaration and the PyTorch names see them.
struct Named<'a> {
    /// Burn path of the [`ConvNorm`] (`blocks.3.depthwise`).
    module: String,
    /// torchvision's path of the conv.
    conv: String,
    /// torchvision's path of the norm.
    norm: String,
    layer: &'a ConvNorm,
    activation: Activation,
    /// Whether its output is added to the block's input (a residual block's projection).
    adds_residual: bool,
    /// Whether its input is also added to its block's output (a residual block's first conv).
    input_added: bool,
}

impl Prunable for MobileNetV2 {
    /// Declared under torchvision's names (see the module's declaration rule): each conv feeds
    /// the next one (the last conv, the classifier) unless its output is a residual stream —
    /// written into by a residual block's projection, or added to the output of the residual
    /// block it enters.
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        let named = self.named_layers();
        for (k, n) in named.iter().enumerate() {
            let next = named.get(k + 1);
            let readers: Vec<String> = match next {
                _ if n.adds_residual => Vec::new(),
                Some(next) if next.input_added => Vec::new(),
                Some(next) => vec![next.conv.clone()],
                None => vec!["classifier.1".into()],
            };
            layers
                .conv(n.conv.clone(), &n.layer.conv)
                .norm(n.norm.clone(), &n.layer.norm)
                .activation(n.activation)
                .feeds(readers);
        }
        layers.linear("classifier.1", &self.classifier);
        if self.residual_streams {
            for (s, (writers, readers)) in streams(&named).into_iter().enumerate() {
                layers.residual_stream(format!("stream{}", s + 1), writers, readers);
            }
        }
    }
}

/// The residual streams of `named` as `(writers, readers)`: a stream starts at the conv whose
/// output the next residual block adds (a stage's first projection), gains each residual
/// block's projection as a writer and its first conv as a reader, and ends at the conv after
/// its last block.
fn streams(named: &[Named<'_>]) -> Vec<(Vec<String>, Vec<String>)> {
    let mut done = Vec::new();
    let mut open: Option<(Vec<String>, Vec<String>)> = None;
    for (k, n) in named.iter().enumerate() {
        if n.input_added
            && let Some(stream) = &mut open
        {
            stream.1.push(n.conv.clone());
        }
        if n.adds_residual
            && let Some(stream) = &mut open
        {
            stream.0.push(n.conv.clone());
        }
        let next_adds = named.get(k + 1).is_some_and(|next| next.input_added);
        let writes = open.as_ref().is_some_and(|s| s.0.contains(&n.conv));
        if next_adds && open.is_none() {
            open = Some((vec![n.conv.clone()], Vec::new()));
        } else if writes
            && !next_adds
            && let Some(mut stream) = open.take()
        {
            let reader = match named.get(k + 1) {
                Some(next) => next.conv.clone(),
                None => "classifier.1".into(),
            };
            stream.1.push(reader);
            done.push(stream);
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `residual_streams`, one stream per run of residual blocks. At CIFAR width 0.25 the
    /// stem and the first three blocks are 8 channels wide at stride 1, so the first stream
    /// starts at the stem and its first reader is block 1's depthwise conv (block 1 has no
    /// expand); the 8-, 16-, 24- and 40-channel stages after a stride or a widening each open
    /// one at their first projection: five streams. The declaration resolves.
    #[test]
    fn mobilenet_v2_declares_its_residual_streams() {
        let device = burn::tensor::Device::default();
        let model = MobileNetV2Config::cifar()
            .with_width_mult(0.25)
            .with_residual_streams(true)
            .init(&device)
            .unwrap();
        let layers = model.collect_prunable();
        let streams = layers.streams();
        assert_eq!(streams.len(), 5);
        assert_eq!(
            streams[0].writers,
            [
                "features.0.0",
                "features.1.conv.1",
                "features.2.conv.2",
                "features.3.conv.2"
            ]
        );
        assert_eq!(
            streams[0].readers,
            [
                "features.1.conv.0.0",
                "features.2.conv.0.0",
                "features.3.conv.0.0",
                "features.4.conv.0.0"
            ]
        );
        assert_eq!(
            streams[1].writers,
            [
                "features.4.conv.2",
                "features.5.conv.2",
                "features.6.conv.2"
            ]
        );
        assert_eq!(streams[4].readers.last().unwrap(), "features.17.conv.0.0");
        texprune_layer::compact::Wiring::resolve(&layers).unwrap();
    }

    #[test]
    fn widths_follow_torchvisions_rounding() {
        assert_eq!(make_divisible(32.0), 32);
        assert_eq!(make_divisible(32.0 * 0.25), 8);
        assert_eq!(make_divisible(24.0 * 0.25), 8);
        assert_eq!(make_divisible(96.0 * 0.35), 32);
        assert_eq!(make_divisible(160.0 * 0.75), 120);
        assert_eq!(make_divisible(1280.0 * 1.4), 1792);
    }

    #[test]
    fn imagenet_and_cifar_styles_downsample_where_they_should() {
        let device = Device::default();
        for (config, size, out) in [
            (MobileNetV2Config::imagenet().with_width_mult(0.25), 64, 2),
            (MobileNetV2Config::cifar().with_width_mult(0.25), 32, 4),
        ] {
            let model = config.init(&device).unwrap();
            assert_eq!(model.blocks.len(), 17);
            let x = Tensor::<4>::zeros([1, 3, size, size], &device);
            assert_eq!(model.forward(x).dims(), [1, config.num_classes]);
            let sizes: Vec<_> = model
                .collect_prunable()
                .iter()
                .map(|l| l.input_size.unwrap())
                .collect();
            assert_eq!(*sizes.last().unwrap(), [out, out]);
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let device = Device::default();
        for config in [
            MobileNetV2Config::new().with_width_mult(0.0),
            MobileNetV2Config::new().with_width_mult(f64::NAN),
            MobileNetV2Config::new().with_dropout(1.0),
            MobileNetV2Config::new().with_num_classes(0),
            MobileNetV2Config::new().with_in_channels(0),
        ] {
            assert!(config.init(&device).is_err(), "{config:?}");
        }
    }
}
