//! How a model declares its prunable layers, their couplings and who reads their channels.

use burn::module::{Module, ModuleVisitor, Param, ParamId, RunningState};
use burn::nn::{BatchNorm, Linear};
use burn::tensor::Tensor;

use texprune_kernels::StripeLayout;

use crate::{Activation, ConvSpec, Costed, SkeletonConv2d};

/// The BatchNorm that directly follows a prunable conv: its `γ` and `β` channels die with the
/// conv's filters (METHOD §4, step 3), and compaction keeps only its live channels.
#[derive(Debug, Clone)]
pub struct CoupledNorm {
    /// Path of the norm in the model (for reports and state files).
    pub name: String,
    /// `γ`, shape `[Cout]`.
    pub gamma: Tensor<1>,
    /// Id of `γ`.
    pub gamma_id: ParamId,
    /// `β`, shape `[Cout]`.
    pub beta: Tensor<1>,
    /// Id of `β`.
    pub beta_id: ParamId,
    /// Running mean `μ`, shape `[Cout]`.
    pub running_mean: Tensor<1>,
    /// Id of `μ`.
    pub running_mean_id: ParamId,
    /// Running variance `σ²`, shape `[Cout]`.
    pub running_var: Tensor<1>,
    /// Id of `σ²`.
    pub running_var_id: ParamId,
    /// `ε`.
    pub epsilon: f64,
}

/// The id of a running statistic (which `RunningState` keeps private, but shows visitors).
fn running_id(state: &RunningState<Tensor<1>>) -> ParamId {
    struct Id(Option<ParamId>);
    impl ModuleVisitor for Id {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 = Some(param.id);
        }
    }
    let mut id = Id(None);
    state.visit(&mut id);
    id.0.expect("a running state visits its one tensor")
}

/// One prunable conv as the pruner sees it: its tensors (in the model's graph), their ids, and
/// its role.
#[derive(Debug, Clone)]
pub struct PrunableLayer {
    /// Path of the conv in the model.
    pub name: String,
    /// `W [Cout, Cin / groups, kh, kw]`.
    pub weight: Tensor<4>,
    /// Id of `W`.
    pub weight_id: ParamId,
    /// `S [Cout, kh, kw]`.
    pub skeleton: Tensor<3>,
    /// Id of `S`.
    pub skeleton_id: ParamId,
    /// The bias `[Cout]` and its id, if the conv has one.
    pub bias: Option<(Tensor<1>, ParamId)>,
    /// Whether compaction marked the conv stripe-wise.
    pub stripe_wise: bool,
    /// Id of the conv's execution marker.
    pub execution_id: ParamId,
    /// Kernel size, stride, dilation, groups and padding.
    pub spec: ConvSpec,
    /// The input `[height, width]` of the conv's last forward pass, if it ran.
    pub input_size: Option<[usize; 2]>,
    /// Whether DTC thresholds this layer (false: penalised only, like the reference's
    /// projection shortcuts).
    pub thresholded: bool,
    /// Whether the pruner touches this layer at all (false: counted in cost, read by
    /// compaction's wiring, never penalised nor thresholded — [`PrunableLayer::not_pruned`]).
    pub pruned: bool,
    /// The BatchNorm whose channels follow this conv's filters.
    pub norm: Option<CoupledNorm>,
    /// The activation after the norm.
    pub activation: Activation,
    /// Every layer (conv or linear, by name) that reads this conv's output channels. Empty: the
    /// output goes somewhere undeclared (a residual stream, the model's output), so compaction
    /// keeps every channel and removes dead stripes only.
    pub consumers: Vec<String>,
}

impl PrunableLayer {
    /// Couples the BatchNorm `norm`, named `name`, to this layer's filters.
    pub fn norm(&mut self, name: impl Into<String>, norm: &BatchNorm) -> &mut Self {
        self.norm = Some(CoupledNorm {
            name: name.into(),
            gamma: norm.gamma.val(),
            gamma_id: norm.gamma.id,
            beta: norm.beta.val(),
            beta_id: norm.beta.id,
            running_mean: norm.running_mean.value(),
            running_mean_id: running_id(&norm.running_mean),
            running_var: norm.running_var.value(),
            running_var_id: running_id(&norm.running_var),
            epsilon: norm.epsilon,
        });
        self
    }

    /// Keeps DTC off this layer: it is penalised but never thresholded.
    pub fn not_thresholded(&mut self) -> &mut Self {
        self.thresholded = false;
        self
    }

    /// Keeps the pruner off this layer (no penalty, no threshold: a stem, a layer too sensitive
    /// to prune), while cost counts it and compaction still removes the input channels that a
    /// declared producer loses. The same as naming it in `PrunerConfig::exempt`.
    pub fn not_pruned(&mut self) -> &mut Self {
        self.pruned = false;
        self
    }

    /// A ReLU follows the norm (or the conv, without a norm).
    pub fn relu(&mut self) -> &mut Self {
        self.activation(Activation::Relu)
    }

    /// `activation` follows the norm (or the conv, without a norm).
    pub fn activation(&mut self, activation: Activation) -> &mut Self {
        self.activation = activation;
        self
    }

    /// Declares every layer that reads this conv's output channels, by name: the convs that
    /// take them as input channels, or a linear layer that takes them flattened (after a global
    /// pool, one row per channel; after a flatten of an `H×W` map, `H·W` rows per channel, in
    /// `[C, H, W]` order). Between them only per-channel operations that keep zero at zero may
    /// stand (max or average pooling, dropout).
    ///
    /// With the list complete, compaction removes the channels of dead filters whose output is
    /// exactly zero (or a constant every reader absorbs), with their BatchNorm entries and the
    /// consumers' input slices (METHOD §5, docs/compaction.md). A reader that takes several
    /// convs' outputs concatenated is declared with [`PrunableLayers::concat`], a tensor that
    /// several convs add into with [`PrunableLayers::residual_stream`].
    pub fn feeds<S: Into<String>>(&mut self, consumers: impl IntoIterator<Item = S>) -> &mut Self {
        self.consumers.extend(consumers.into_iter().map(Into::into));
        self
    }

    /// `[Cout, Cin / groups, kh, kw]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.weight.dims()
    }

    /// Input channels `Cin`.
    pub fn in_channels(&self) -> usize {
        self.weight_dims()[1] * self.spec.groups
    }

    /// Whether the conv is depthwise (`groups = Cin = Cout`): its channel `c` reads only input
    /// channel `c`, so its channels go with its input's (and its groups with its channels).
    pub fn is_depthwise(&self) -> bool {
        let [cout, per_filter, ..] = self.weight_dims();
        self.spec.groups > 1 && per_filter == 1 && cout == self.spec.groups
    }
}

/// A linear layer that reads a prunable conv's channels (declared with
/// [`PrunableLayers::linear`]), so compaction can remove its input rows and cost can count it.
#[derive(Debug, Clone)]
pub struct PrunableLinear {
    /// Path of the layer.
    pub name: String,
    /// `W [d_in, d_out]` (Burn's layout).
    pub weight: Tensor<2>,
    /// Id of `W`.
    pub weight_id: ParamId,
    /// Whether it has a bias.
    pub bias: bool,
    /// The bias `[d_out]` and its id, if it has one (compaction folds the constant channels it
    /// stops reading into it).
    pub bias_param: Option<(Tensor<1>, ParamId)>,
}

/// A residual stream (declared with [`PrunableLayers::residual_stream`]): a tensor that convs
/// write into by addition (`x ← act(x + bn(conv(…)))`, the first writer setting it) and that
/// layers read whole. Its channel `c` is exactly zero when every writer's channel `c` is zero
/// before the activation, and then it goes from every writer and every reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidualStream {
    /// A name for reports (`layer1`).
    pub name: String,
    /// The convs whose outputs (after their norms) are added into the stream, by name.
    pub writers: Vec<String>,
    /// The convs and linear layers that read the stream as their whole input, by name.
    pub readers: Vec<String>,
}

/// The prunable layers of a model, in forward order, filled by [`Prunable::prunable_layers`].
#[derive(Debug, Clone, Default)]
pub struct PrunableLayers {
    layers: Vec<PrunableLayer>,
    linears: Vec<PrunableLinear>,
    /// `(reader, sources)`: a layer whose input is the concatenation of convs' outputs.
    concats: Vec<(String, Vec<String>)>,
    streams: Vec<ResidualStream>,
    /// Set by [`with_readers_of`](Self::with_readers_of): only this conv's channels may go.
    pub(crate) only: Option<usize>,
}

impl PrunableLayers {
    /// Adds a thresholded conv named `name` (no coupled norm until [`PrunableLayer::norm`]).
    pub fn conv(&mut self, name: impl Into<String>, conv: &SkeletonConv2d) -> &mut PrunableLayer {
        self.layers.push(PrunableLayer {
            name: name.into(),
            weight: conv.weight.val(),
            weight_id: conv.weight.id,
            skeleton: conv.skeleton.val(),
            skeleton_id: conv.skeleton.id,
            bias: conv.bias.as_ref().map(|b| (b.val(), b.id)),
            stripe_wise: conv.is_stripe_wise(),
            execution_id: conv.execution.id,
            spec: conv.spec(),
            input_size: conv.last_input_size(),
            thresholded: true,
            pruned: true,
            norm: None,
            activation: Activation::Identity,
            consumers: Vec::new(),
        });
        self.layers.last_mut().expect("just pushed")
    }

    /// Adds a linear layer named `name` that a conv [`feeds`](PrunableLayer::feeds) (or that
    /// only counts in the cost).
    pub fn linear(&mut self, name: impl Into<String>, linear: &Linear) {
        self.linears.push(PrunableLinear {
            name: name.into(),
            weight: linear.weight.val(),
            weight_id: linear.weight.id,
            bias: linear.bias.is_some(),
            bias_param: linear.bias.as_ref().map(|b| (b.val(), b.id)),
        });
    }

    /// Declares that the layer `reader` (a declared conv or linear layer) reads the
    /// concatenation, along channels and in this order, of the outputs of the declared convs
    /// `sources` (`torch.cat([a, b], dim=1)` → `["a", "b"]`): its input channel `o_k + c` is
    /// channel `c` of the `k`-th source, `o_k` the channels of the sources before it. Between
    /// a source and the concatenation only per-channel operations may stand (pooling,
    /// upsampling, dropout). A DenseNet layer, a U-Net decoder conv after its skip connection,
    /// an Inception-style merge.
    ///
    /// With it compaction removes a source's dead channels from the reader's input slices, at
    /// their offsets; a source need not also name the reader in [`PrunableLayer::feeds`].
    pub fn concat<S: Into<String>>(
        &mut self,
        reader: impl Into<String>,
        sources: impl IntoIterator<Item = S>,
    ) {
        let sources = sources.into_iter().map(Into::into).collect();
        self.concats.push((reader.into(), sources));
    }

    /// Declares a residual stream: the convs `writers` add their outputs (after their norms)
    /// into one tensor, `x ← act(x + bn(conv(…)))` with `act(0) = 0` (every [`Activation`]), the
    /// first writer setting it; the convs and linear layers `readers` read that tensor whole
    /// (a ResNet stage: the stem or the projection shortcut and every block's last conv write,
    /// every block's first conv and the next stage's shortcut or the classifier read).
    ///
    /// A stream channel is exactly zero when every writer's channel is zero before the
    /// activation (a dead filter whose coupled norm DTC zeroed); compaction then removes it from
    /// every writer, every norm and every reader. Identity shortcuts need no declaration: they
    /// carry the stream.
    pub fn residual_stream<S: Into<String>, R: Into<String>>(
        &mut self,
        name: impl Into<String>,
        writers: impl IntoIterator<Item = S>,
        readers: impl IntoIterator<Item = R>,
    ) {
        self.streams.push(ResidualStream {
            name: name.into(),
            writers: writers.into_iter().map(Into::into).collect(),
            readers: readers.into_iter().map(Into::into).collect(),
        });
    }

    /// The declared concatenations, `(reader, sources)`.
    pub fn concats(&self) -> &[(String, Vec<String>)] {
        &self.concats
    }

    /// The declared residual streams.
    pub fn streams(&self) -> &[ResidualStream] {
        &self.streams
    }

    /// The convs, in the order they were declared.
    pub fn iter(&self) -> core::slice::Iter<'_, PrunableLayer> {
        self.layers.iter()
    }

    /// The linear layers, in the order they were declared.
    pub fn linears(&self) -> &[PrunableLinear] {
        &self.linears
    }

    /// Number of convs.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether no conv was declared.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// This declaration with only the channels of the `index`-th conv removable (and those tied
    /// to them: its depthwise readers', its residual stream's), as compaction's check uses it to
    /// find a faulty declaration.
    pub(crate) fn with_readers_of(&self, index: usize) -> Self {
        Self {
            only: Some(index),
            ..self.clone()
        }
    }

    /// Whether the `index`-th conv declares who reads its output (its [`feeds`](PrunableLayer::feeds),
    /// a concatenation or a residual stream it is part of).
    pub(crate) fn declares_readers(&self, index: usize) -> bool {
        let Some(layer) = self.layers.get(index) else {
            return false;
        };
        let name = &layer.name;
        !layer.consumers.is_empty()
            || self
                .concats
                .iter()
                .any(|(_, sources)| sources.contains(name))
            || self.streams.iter().any(|s| s.writers.contains(name))
    }

    /// The convs, consumed.
    pub fn into_vec(self) -> Vec<PrunableLayer> {
        self.layers
    }
}

/// A model whose convolutions can be pruned and compacted.
///
/// Implement it by listing every [`SkeletonConv2d`] with its path, in forward order, with the
/// BatchNorm that follows it. That is enough for the penalty, the masks and a compaction that
/// removes dead stripes. Declaring the activation and the consumers of a conv's output lets
/// compaction remove dead channels too, and declaring the linear head lets cost count it:
///
/// ```text
/// impl Prunable for Net {
///     fn prunable_layers(&self, layers: &mut PrunableLayers) {
///         layers.conv("conv1", &self.conv1).norm("bn1", &self.bn1).relu().feeds(["conv2"]);
///         layers.conv("conv2", &self.conv2).norm("bn2", &self.bn2).relu().feeds(["fc"]);
///         layers.linear("fc", &self.fc);
///     }
/// }
/// ```
pub trait Prunable: Module {
    /// Declares the prunable layers.
    fn prunable_layers(&self, layers: &mut PrunableLayers);

    /// The declared layers, collected.
    fn collect_prunable(&self) -> PrunableLayers {
        let mut layers = PrunableLayers::default();
        self.prunable_layers(&mut layers);
        layers
    }

    /// The model's own cost walk, if it has one (`Some(self)` for a model that implements
    /// [`Costed`]): the budget controller then counts a target in that walk's convention, the
    /// one its reports use. `None` (the default): the declaration's convention,
    /// [`CostReport::of_plan`](crate::CostReport::of_plan).
    fn costed(&self) -> Option<&dyn Costed> {
        None
    }
}

impl PrunableLayer {
    /// The live stripes of this declared layer as it is: its non-zero skeleton entries.
    #[must_use]
    pub fn stripe_layout(&self) -> StripeLayout {
        let skeleton: Vec<f32> = self.skeleton.clone().into_data().iter::<f32>().collect();
        StripeLayout::from_skeleton(self.weight_dims(), self.bias.is_some(), &skeleton)
    }
}
