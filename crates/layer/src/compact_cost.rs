//! The cost of a model as compaction would leave it, from its declaration and a
//! [`CompactionPlan`]: what the budget controller counts for every candidate mask, and what
//! [`CostReport::of_model`] counts for a model without a walk of its own.

use crate::compact::{CompactionPlan, ConvPlan};
use crate::cost::{ConvShape, CostReport, LayerKind, PlannedLayers};
use crate::inventory::{UndeclaredLayer, undeclared};
use crate::{ModelError, Prunable, PrunableLayer, PrunableLayers};

impl ConvShape {
    /// What `plan` leaves of the declared `layer`: a conv that keeps all its stripes and
    /// channels and is not marked stripe-wise stays the dense conv it is.
    #[must_use]
    pub fn planned(layer: &PrunableLayer, plan: &ConvPlan) -> Self {
        let [cout, _, kh, kw] = layer.weight_dims();
        let cin = layer.in_channels();
        let channels = [plan.inputs.len(), plan.kept.len()];
        let live_stripes = plan.live_stripes();
        let mut spec = layer.spec.clone();
        if layer.is_depthwise() {
            spec.groups = plan.kept.len();
        }
        Self {
            channels,
            spec,
            bias: layer.bias.is_some(),
            live_stripes,
            stripe_wise: layer.stripe_wise
                || channels != [cin, cout]
                || live_stripes != cout * kh * kw,
        }
    }
}

impl PlannedLayers {
    /// The shapes `plan` leaves of the layers `layers` declare.
    #[must_use]
    pub fn new(layers: &PrunableLayers, plan: &CompactionPlan) -> Self {
        Self {
            convs: layers
                .iter()
                .zip(&plan.convs)
                .map(|(layer, conv)| (layer.name.clone(), ConvShape::planned(layer, conv)))
                .collect(),
            linears: layers
                .linears()
                .iter()
                .zip(&plan.linears)
                .map(|(linear, plan)| (linear.name.clone(), plan.rows.len()))
                .collect(),
        }
    }
}

impl CostReport {
    /// The cost of the model `layers` declare once compacted by `plan`: every declared conv
    /// (at the input size of its last forward pass), its norm, and every declared linear layer.
    /// A conv that keeps all its stripes and channels and is not marked stripe-wise counts as
    /// the dense conv it is.
    ///
    /// # Errors
    /// [`ModelError::Unmeasured`] when a conv has not run a forward pass (its input size is unknown),
    /// [`ModelError::Declaration`] when `plan` is not a plan of `layers`.
    pub fn of_plan(layers: &PrunableLayers, plan: &CompactionPlan) -> Result<Self, ModelError> {
        let mut report = None;
        for (layer, conv) in layers.iter().zip(&plan.convs) {
            let hw = layer.input_size.ok_or_else(|| ModelError::Unmeasured {
                layer: layer.name.clone(),
            })?;
            let cin = layer.in_channels();
            let report = report.get_or_insert_with(|| Self::new([cin, hw[0], hw[1]]));
            let out = report.prunable_conv(&layer.name, &ConvShape::planned(layer, conv), hw);
            if let Some(norm) = &layer.norm {
                report.norm(&norm.name, conv.kept.len(), out);
            }
        }
        let mut report =
            report.ok_or(ModelError::Declaration("the model declares no conv".into()))?;
        for (linear, planned) in layers.linears().iter().zip(&plan.linears) {
            let [_, d_out] = linear.weight.dims();
            report.linear_layer(&linear.name, planned.rows.len(), d_out, linear.bias);
        }
        Ok(report)
    }

    /// The modules the declaration leaves out, after the declared layers: their parameters, no
    /// FLOPs (their input sizes are not known).
    pub fn undeclared(&mut self, layers: &[UndeclaredLayer]) {
        for layer in layers {
            self.push(
                &layer.name,
                LayerKind::Undeclared,
                format!("{}, not declared: FLOPs not counted", layer.module),
                [layer.params, 0, 0, 0],
            );
        }
    }

    /// The cost of `model` as compaction would leave it (for a compacted model: as it is),
    /// from its declaration; each conv counts at the input size of its last forward pass.
    /// Every module with parameters that the declaration leaves out is listed after the
    /// declared layers ([`LayerKind::Undeclared`](crate::LayerKind::Undeclared)): its
    /// parameters count, its FLOPs are unknown.
    ///
    /// # Errors
    /// What [`CompactionPlan::of`] and [`CostReport::of_plan`] return.
    pub fn of_model<M: Prunable>(model: &M) -> Result<Self, ModelError> {
        let layers = model.collect_prunable();
        let mut report = Self::of_plan(&layers, &CompactionPlan::of(&layers)?)?;
        report.undeclared(&undeclared(model, &layers));
        Ok(report)
    }
}
