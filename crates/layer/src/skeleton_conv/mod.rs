//! The prunable convolution: a conv whose weight is scaled by a learnable filter skeleton.

use std::sync::{Arc, Mutex};

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Initializer, Module, ModuleDisplay, Param, ParamId};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::module::conv2d;
use burn::tensor::{Device, Int, Tensor};

use crate::fold::{NormFold, host};
use crate::{Activation, ConvSpec, ModelError};

#[cfg(test)]
mod execution_tests;
mod export;
#[cfg(test)]
mod parity_tests;
mod stripes;

/// Configuration of a [`SkeletonConv2d`], built with [`SkeletonConv2dConfig::init`]. It reads
/// like Burn's `Conv2dConfig` — the same fields, names and defaults (no padding, a bias) — so a
/// `Conv2dConfig` becomes a `SkeletonConv2dConfig` by a rename:
///
/// ```text
/// let conv = SkeletonConv2dConfig::new([3, 16], [3, 3])
///     .with_stride([2, 2])
///     .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
///     .with_bias(false)
///     .init(&device)?;
/// ```
#[derive(Config, Debug)]
pub struct SkeletonConv2dConfig {
    /// Input and output channels `[Cin, Cout]`.
    pub channels: [usize; 2],
    /// Kernel size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Stride `[sh, sw]`.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Dilation `[dh, dw]`.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Channel groups (`Cin` and `Cout` divisible by it; `groups = Cin = Cout` is depthwise).
    #[config(default = "1")]
    pub groups: usize,
    /// Zero padding, as Burn's `Conv2d` applies it ([`ConvSpec::padding_at`]).
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
    /// Whether the conv has a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the weight and the bias (the skeleton starts at ones).
    #[config(
        default = "Initializer::KaimingUniform{gain:1.0/num_traits::Float::sqrt(3.0),fan_out_only:false}"
    )]
    pub initializer: Initializer,
}

/// A 2-D convolution with a learnable filter skeleton (METHOD §1).
///
/// Forward: `y = conv2d(x, W ⊙ S[:, None, :, :]) + b`, with Burn's `Conv2d` stride, dilation,
/// groups and padding. A *stripe* is `W[f, :, i, j]`, filter `f`'s weights at kernel position
/// `(i, j)` across the input channels it reads (`Cin / groups` of them; one weight for a
/// depthwise filter); pruning it means `S[f, i, j] = 0`.
///
/// How the layer executes is a property of the layer: dense while it trains, stripe-wise once
/// compaction ([`compact`](crate::compact::compact)) has marked it — then an inference forward
/// (no autodiff) computes only the live stripes, position by position (METHOD §5), with the
/// same output. A training forward of a compacted layer stays dense, which is exact too: the
/// compacted weight is `W ⊙ S` and its skeleton the 0/1 indicator of the live stripes.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct SkeletonConv2d {
    /// Weight `W`, shape `[Cout, Cin / groups, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    /// Filter skeleton `S`, shape `[Cout, kh, kw]`, initialised to ones.
    pub skeleton: Param<Tensor<3>>,
    /// Optional bias, shape `[Cout]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Execution marker, shape `[1]`: 0 dense, 1 stripe-wise (set by compaction, recorded with
    /// the weights).
    pub execution: Param<Tensor<1, Int>>,
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Channel groups as built; [`groups`](Self::groups) is what the layer computes with (a
    /// depthwise conv that compaction narrowed has one group per kept channel).
    pub groups: usize,
    /// Zero padding.
    #[module(skip)]
    pub padding: PaddingConfig2d,
    /// What forward passes observed: the input size (for cost) and the marker's value.
    #[module(skip)]
    observed: Observed,
    /// The live stripes packed for the host kernel by the first stripe-wise forward pass.
    #[module(skip)]
    pub(crate) packed: stripes::PackCache,
}

/// What a layer's forward passes observed, shared by the layer's clones (the layer's structure
/// does not change between them).
#[derive(Debug, Clone, Default)]
struct Observed(Arc<Mutex<ObservedState>>);

#[derive(Debug, Default)]
struct ObservedState {
    input_size: Option<[usize; 2]>,
    /// The marker read for one marker id: compaction gives every marker it sets a fresh id, so
    /// an id always has the same value.
    execution: Option<(ParamId, bool)>,
}

impl Observed {
    fn lock(&self) -> std::sync::MutexGuard<'_, ObservedState> {
        // A poisoned lock only means a forward pass panicked elsewhere; the state is plain data.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A dense execution marker.
fn dense_marker(device: &Device) -> Param<Tensor<1, Int>> {
    Param::initialized(ParamId::new(), Tensor::zeros([1], device))
}

impl SkeletonConv2dConfig {
    fn check(&self) -> Result<(), ModelError> {
        let sizes = [
            ("input channels", self.channels[0]),
            ("output channels", self.channels[1]),
            ("kernel height", self.kernel_size[0]),
            ("kernel width", self.kernel_size[1]),
            ("stride", self.stride[0].min(self.stride[1])),
            ("dilation", self.dilation[0].min(self.dilation[1])),
            ("groups", self.groups),
        ];
        if let Some((what, _)) = sizes.into_iter().find(|(_, v)| *v == 0) {
            return Err(ModelError::Zero { what });
        }
        let [cin, cout] = self.channels;
        if !(cin.is_multiple_of(self.groups) && cout.is_multiple_of(self.groups)) {
            return Err(ModelError::Config(format!(
                "{cin} input and {cout} output channels do not split into {} groups",
                self.groups
            )));
        }
        Ok(())
    }

    /// `[Cout, Cin / groups, kh, kw]`.
    fn weight_shape(&self) -> [usize; 4] {
        let [cin, cout] = self.channels;
        let [kh, kw] = self.kernel_size;
        [cout, cin / self.groups, kh, kw]
    }

    /// Builds the layer with a freshly initialised weight (and bias) and an all-ones skeleton,
    /// initialised as Burn's `Conv2d` is (fan-in `Cin / groups · kh · kw`).
    ///
    /// # Errors
    /// [`ModelError::Zero`] for zero channels, kernel size, stride, dilation or groups,
    /// [`ModelError::Config`] for channels that do not split into the groups.
    pub fn init(&self, device: &Device) -> Result<SkeletonConv2d, ModelError> {
        self.check()?;
        let shape = self.weight_shape();
        let [cout, cin_group, kh, kw] = shape;
        let fan_in = Some(cin_group * kh * kw);
        let fan_out = Some(cout * kh * kw / self.groups);
        let weight = self.initializer.init_with(shape, fan_in, fan_out, device);
        let bias = self
            .bias
            .then(|| self.initializer.init_with([cout], fan_in, fan_out, device));
        let skeleton = Param::from_tensor(Tensor::ones([cout, kh, kw], device));
        Ok(self.layer(weight, skeleton, bias, device))
    }

    fn layer(
        &self,
        weight: Param<Tensor<4>>,
        skeleton: Param<Tensor<3>>,
        bias: Option<Param<Tensor<1>>>,
        device: &Device,
    ) -> SkeletonConv2d {
        SkeletonConv2d {
            weight,
            skeleton,
            bias,
            execution: dense_marker(device),
            stride: self.stride,
            dilation: self.dilation,
            groups: self.groups,
            padding: self.padding.clone(),
            observed: Observed::default(),
            packed: stripes::PackCache::default(),
        }
    }

    /// Builds the layer from given tensors (pretrained weights, a saved skeleton), checking
    /// their shapes against the configuration.
    ///
    /// # Errors
    /// What [`SkeletonConv2dConfig::init`] returns, [`ModelError::Shape`] for a tensor whose
    /// shape is not the configuration's.
    pub fn init_from(
        &self,
        weight: Tensor<4>,
        skeleton: Tensor<3>,
        bias: Option<Tensor<1>>,
    ) -> Result<SkeletonConv2d, ModelError> {
        self.check()?;
        let shape = self.weight_shape();
        let [cout, _, kh, kw] = shape;
        let expect = |what, expected: Vec<usize>, found: Vec<usize>| {
            if expected == found {
                Ok(())
            } else {
                Err(ModelError::Shape {
                    what,
                    expected,
                    found,
                })
            }
        };
        expect("weight", shape.to_vec(), weight.dims().to_vec())?;
        expect("skeleton", vec![cout, kh, kw], skeleton.dims().to_vec())?;
        if let Some(b) = &bias {
            expect("bias", vec![cout], b.dims().to_vec())?;
        }
        let device = weight.device();
        Ok(self.layer(
            Param::from_tensor(weight),
            Param::from_tensor(skeleton),
            bias.map(Param::from_tensor),
            &device,
        ))
    }
}

impl SkeletonConv2d {
    /// `conv2d(x, W ⊙ S[:, None])`: dense, or stripe-wise for a compacted layer outside
    /// autodiff (same output).
    ///
    /// # Shapes
    /// - `input`: `[batch, Cin, H, W]`
    /// - output: `[batch, Cout, Ho, Wo]`, [`ConvSpec::output_size`]
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = input.dims();
        self.observed.lock().input_size = Some([h, w]);
        if crate::capture::is_recorded(&input) {
            return export::forward(self, input, None, None, Activation::Identity);
        }
        if input.is_autodiff() {
            // Training changes the weights: what was packed from them is stale.
            self.packed.clear();
        } else if self.is_stripe_wise() {
            return stripes::forward(self, input);
        }
        self.forward_dense(input)
    }

    /// `act(norm(conv(x)) + residual)`: the conv → BatchNorm → (residual add) → activation
    /// sequence of most CNNs in one call, equal to writing the steps out
    /// (`act(norm.forward(conv.forward(x)) + r)`). For a compacted layer in inference on the CPU
    /// it is one pass of the host kernel, whose output pass applies the bias, the BatchNorm in
    /// inference form (`γ (y − μ) / √(σ² + ε) + β`), the residual and the activation while the
    /// output is in cache, instead of five or six passes over the activation.
    ///
    /// # Shapes
    /// - `input`: `[batch, Cin, H, W]`; `norm`: `Cout` channels
    /// - `residual`: the output's shape
    /// - output: as [`forward`](Self::forward)
    pub fn forward_norm(
        &self,
        input: Tensor<4>,
        norm: &BatchNorm,
        residual: Option<Tensor<4>>,
        activation: Activation,
    ) -> Tensor<4> {
        let [batch, _, h, w] = input.dims();
        let cout = self.weight_dims()[0];
        let [ho, wo] = self.spec().output_size([h, w]);
        let fits = norm.gamma.dims() == [cout]
            && residual
                .as_ref()
                .is_none_or(|r| r.dims() == [batch, cout, ho, wo]);
        if fits && crate::capture::is_recorded(&input) {
            self.observed.lock().input_size = Some([h, w]);
            return export::forward(self, input, Some(norm), residual, activation);
        }
        if fits && !input.is_autodiff() && self.is_stripe_wise() {
            self.observed.lock().input_size = Some([h, w]);
            return stripes::forward_with(self, input, Some(norm), residual, activation);
        }
        let y = self.forward(input);
        // Training on flex: BatchNorm's statistics without layout changes (`texprune_kernels::train_norm`).
        #[cfg(feature = "flex")]
        let y = match texprune_kernels::train_norm::batch_norm_train(norm, &y) {
            Some(normed) => normed,
            None => norm.forward(y),
        };
        #[cfg(not(feature = "flex"))]
        let y = norm.forward(y);
        activation.forward(match residual {
            Some(r) => y + r,
            None => y,
        })
    }

    /// The dense forward pass `conv2d(x, W ⊙ S[:, None]) + b`, whatever the marker says.
    pub fn forward_dense(&self, input: Tensor<4>) -> Tensor<4> {
        let weight = self.weight.val() * self.skeleton.val().unsqueeze_dim(1);
        let [_, _, h, w] = input.dims();
        let spec = self.spec();
        // Training on flex: the host GEMMs with their own backward pass
        // (`texprune_kernels::train_conv`), for plain convs.
        #[cfg(feature = "flex")]
        if let Some(padding) = spec.host_padding([h, w])
            && let Some(y) =
                texprune_kernels::train_conv::conv2d(&input, &weight, self.stride, padding)
        {
            return match &self.bias {
                Some(b) => y + b.val().reshape([1, self.weight_dims()[0], 1, 1]),
                None => y,
            };
        }
        conv2d(
            input,
            weight,
            self.bias.as_ref().map(Param::val),
            spec.options([h, w]),
        )
    }

    /// Kernel size, stride, dilation, groups and padding.
    #[must_use]
    pub fn spec(&self) -> ConvSpec {
        let [_, _, kh, kw] = self.weight_dims();
        ConvSpec {
            kernel_size: [kh, kw],
            stride: self.stride,
            dilation: self.dilation,
            groups: self.groups(),
            padding: self.padding.clone(),
        }
    }

    /// The channel groups the layer computes with: the built `groups`, except for a depthwise
    /// conv (one input channel per filter and `groups = Cin = Cout` as built), which compaction
    /// may narrow to fewer channels: its groups follow its filters, `min(groups, Cout)`. A
    /// grouped conv with a channel multiplier (`Cout = m·groups`, `m > 1`) keeps `Cout ≥ groups`
    /// and its groups.
    pub fn groups(&self) -> usize {
        let [cout, per_filter, ..] = self.weight_dims();
        match per_filter {
            1 => self.groups.min(cout),
            _ => self.groups,
        }
    }

    /// Input channels `Cin` (the weight holds `Cin / groups` per filter).
    pub fn in_channels(&self) -> usize {
        self.weight_dims()[1] * self.groups()
    }

    /// `[Cout, Cin / groups, kh, kw]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.weight.dims()
    }

    /// This layer marked to execute stripe-wise (or dense) outside autodiff; the output is the
    /// same either way. Compaction marks every conv it compacts.
    #[cfg(test)]
    pub(crate) fn with_stripe_execution(mut self, stripe_wise: bool) -> Self {
        let device = self.weight.val().device();
        let marker = Tensor::<1, Int>::zeros([1], &device) + i64::from(stripe_wise);
        self.execution = Param::initialized(ParamId::new(), marker);
        self
    }

    /// `norm`, following this conv, folded into it in inference form ([`NormFold`]): its scale
    /// and `shift = bn(b)`, this conv's bias read to the host.
    #[must_use]
    pub fn norm_fold(&self, norm: &BatchNorm) -> NormFold {
        let bias = self.bias.as_ref().map(|b| host(b.val()));
        NormFold::of(norm, bias.as_deref())
    }

    /// Whether compaction marked the layer stripe-wise.
    pub fn is_stripe_wise(&self) -> bool {
        let id = self.execution.id;
        if let Some((seen, value)) = self.observed.lock().execution
            && seen == id
        {
            return value;
        }
        let value = self.execution.val().into_scalar::<i64>() != 0;
        self.observed.lock().execution = Some((id, value));
        value
    }

    /// The input `[height, width]` of the last forward pass, if one ran.
    pub fn last_input_size(&self) -> Option<[usize; 2]> {
        self.observed.lock().input_size
    }
}

impl ModuleDisplay for SkeletonConv2d {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let [cout, _, kh, kw] = self.weight.dims();
        content
            .add("ch_in", &self.in_channels())
            .add("ch_out", &cout)
            .add("kernel_size", &format!("{:?}", [kh, kw]))
            .add("stride", &format!("{:?}", self.stride))
            .add("dilation", &format!("{:?}", self.dilation))
            .add("groups", &self.groups())
            .add("padding", &format!("{:?}", self.padding))
            .add("stripe_wise", &self.is_stripe_wise())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn all_ones_skeleton_is_a_plain_conv() {
        let device = Device::default();
        let conv = SkeletonConv2dConfig::new([3, 4], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device)
            .unwrap();
        let mut plain = Conv2dConfig::new([3, 4], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        plain.weight = Param::from_tensor(conv.weight.val());
        plain.bias = conv.bias.as_ref().map(|b| Param::from_tensor(b.val()));
        let x = Tensor::<4>::random([2, 3, 9, 9], Distribution::Default, &device);
        let y = conv.forward(x.clone());
        assert_eq!(y.dims(), [2, 4, 5, 5]);
        y.into_data()
            .assert_approx_eq::<f32>(&plain.forward(x).into_data(), Tolerance::default());
    }

    #[test]
    fn zero_skeleton_entry_removes_its_stripe() {
        // 1 input channel, 1 filter, 1×2 kernel [2, 3], skeleton [1, 0], no padding:
        // y = 2 · x[.., j] (the second tap is pruned).
        let device = Device::default();
        let config = SkeletonConv2dConfig::new([1, 1], [1, 2]).with_bias(false);
        let conv = config
            .init_from(
                Tensor::from_data([[[[2.0, 3.0]]]], &device),
                Tensor::from_data([[[1.0, 0.0]]], &device),
                None,
            )
            .unwrap();
        let y = conv.forward(Tensor::from_data([[[[1.0, 10.0, 100.0]]]], &device));
        assert_eq!(
            y.into_data().iter::<f32>().collect::<Vec<_>>(),
            vec![2.0, 20.0]
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        let device = Device::default();
        assert_eq!(
            SkeletonConv2dConfig::new([0, 4], [3, 3])
                .init(&device)
                .unwrap_err(),
            ModelError::Zero {
                what: "input channels"
            }
        );
        assert!(
            SkeletonConv2dConfig::new([3, 4], [3, 3])
                .with_stride([0, 1])
                .init(&device)
                .is_err()
        );
        let err = SkeletonConv2dConfig::new([1, 1], [1, 2])
            .init_from(
                Tensor::zeros([1, 1, 1, 2], &device),
                Tensor::zeros([2, 1, 2], &device),
                None,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            ModelError::Shape {
                what: "skeleton",
                ..
            }
        ));
    }
}
