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
    /// exactly zero, with their BatchNorm entries and the consumers' input slices (METHOD §5).
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
}

/// The prunable layers of a model, in forward order, filled by [`Prunable::prunable_layers`].
#[derive(Debug, Clone, Default)]
pub struct PrunableLayers {
    layers: Vec<PrunableLayer>,
    linears: Vec<PrunableLinear>,
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
        });
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

    /// This declaration with the readers of every conv but the `index`-th cleared: only that
    /// conv's channels can be removed (compaction's check uses it to find a faulty declaration).
    pub(crate) fn with_readers_of(&self, index: usize) -> Self {
        let mut alone = self.clone();
        for (i, layer) in alone.layers.iter_mut().enumerate() {
            if i != index {
                layer.consumers.clear();
            }
        }
        alone
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
