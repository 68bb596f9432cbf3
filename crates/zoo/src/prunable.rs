//! How a model declares its prunable layers and their couplings.

use burn::module::{Module, ParamId};
use burn::nn::BatchNorm;
use burn::tensor::Tensor;

use crate::{CostReport, SkeletonConv2d, ZooError};

/// The BatchNorm that directly follows a prunable conv: its `γ` and `β` channels die with the
/// conv's filters (METHOD §4, step 3).
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
}

/// One prunable conv as the pruner sees it: its tensors (in the model's graph), their ids, and
/// its role.
#[derive(Debug, Clone)]
pub struct PrunableLayer {
    /// Path of the conv in the model.
    pub name: String,
    /// `W [Cout, Cin, kh, kw]`.
    pub weight: Tensor<4>,
    /// Id of `W`.
    pub weight_id: ParamId,
    /// `S [Cout, kh, kw]`.
    pub skeleton: Tensor<3>,
    /// Id of `S`.
    pub skeleton_id: ParamId,
    /// Whether DTC thresholds this layer (false: penalised only, like the reference's
    /// projection shortcuts).
    pub thresholded: bool,
    /// The BatchNorm whose channels follow this conv's filters, if its output channels can be
    /// removed.
    pub norm: Option<CoupledNorm>,
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
        });
        self
    }

    /// Keeps DTC off this layer: it is penalised but never thresholded.
    pub fn not_thresholded(&mut self) -> &mut Self {
        self.thresholded = false;
        self
    }
}

/// The prunable layers of a model, in forward order, filled by [`Prunable::prunable_layers`].
#[derive(Debug, Clone, Default)]
pub struct PrunableLayers {
    layers: Vec<PrunableLayer>,
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
            thresholded: true,
            norm: None,
        });
        self.layers.last_mut().expect("just pushed")
    }

    /// The layers, in the order they were declared.
    pub fn iter(&self) -> core::slice::Iter<'_, PrunableLayer> {
        self.layers.iter()
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether no layer was declared.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers, consumed.
    pub fn into_vec(self) -> Vec<PrunableLayer> {
        self.layers
    }
}

/// A model whose convolutions can be pruned.
///
/// Implement it by listing every [`SkeletonConv2d`] with its path, in forward order, coupling
/// the BatchNorm that follows a conv whose filters may be removed:
///
/// ```text
/// impl Prunable for Net {
///     fn prunable_layers(&self, layers: &mut PrunableLayers) {
///         layers.conv("conv1", &self.conv1).norm("bn1", &self.bn1);
///         layers.conv("conv2", &self.conv2);
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

    /// The cost of the compact model this model becomes as it is (zero skeleton entries
    /// removed, METHOD §5) for one `[height, width]` input, which lets a pruner aim at a FLOPs,
    /// MACs or params target. `None` (the default) when the model cannot tell: only stripe
    /// targets are available then. A [`Compactable`](crate::Compactable) model implements it as
    /// `Ok(Some(self.compact()?.cost(input_size)))`.
    fn compact_cost(&self, input_size: [usize; 2]) -> Result<Option<CostReport>, ZooError> {
        let _ = input_size;
        Ok(None)
    }
}
