//! `Pruner`: CDP + DTC driven from the user's own training loop.

use std::fmt;

use burn::config::Config;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, Transaction};
use serde::{Deserialize, Serialize};
use texprune_cdp::{Cdp, CdpConfig, CdpState};
use texprune_dtc::{
    DtcConfig, DtcState, LayerMasks, LayerValues, ThresholdContainer, ThresholdRule, couple_groups,
};
use texprune_layer::compact::Wiring;
use texprune_layer::{CostReport, ModelError, Prunable, PrunableLayer};

use crate::PruneError;
use crate::budget::{ControlState, Controller, CostProbe, Phase, Quantity, Schedule, Target};
use crate::masking::{MaskMapper, mask_gradient};
use crate::snapshot::Snapshot;

/// Version of [`PrunerState`]'s layout (2: the configuration gained `dtc.rule` and
/// `layer_scales`).
pub const STATE_VERSION: u32 = 2;

/// Configuration of a [`Pruner`].
#[derive(Config, Debug, PartialEq)]
pub struct PrunerConfig {
    /// CDP coefficients.
    pub cdp: CdpConfig,
    /// DTC base threshold.
    pub dtc: DtcConfig,
    /// Layers (by the names the model declares) left out of the penalty and the thresholds.
    #[config(default = "Vec::new()")]
    pub exempt: Vec<String>,
    /// Per-layer multipliers of δ, by the names the model declares (a layer not listed: 1).
    /// Below 1 spares a layer, above 1 prunes it harder; the target controller still sets δ,
    /// so the budget moves between layers (see [`crate::sensitivity::SensitivityReport::layer_scales`]).
    #[config(default = "Vec::new()")]
    pub layer_scales: Vec<(String, f64)>,
    /// What to remove; the controller then sets δ (`dtc.threshold` is only its starting point).
    /// Needs a `schedule`. None: the plain method, δ as configured.
    pub target: Option<Target>,
    /// Warm-up, pruning and fine-tuning phases. None: every step prunes, as in the paper.
    pub schedule: Option<Schedule>,
    /// Coupled channel pruning (opt-in): channels that compaction can only remove together —
    /// a declared residual stream's channel in every writer, a depthwise conv's channel with its
    /// producer's ([`Wiring::coupled_channels`](texprune_layer::compact::Wiring::coupled_channels))
    /// — are masked together: the group dies when its members' mean DTC strength
    /// `max |S_f| / T_f` is at most 1 ([`texprune_dtc::couple_groups`]). With the per-filter
    /// rule only. docs/compaction.md, "Coupled pruning".
    #[config(default = false)]
    pub coupled_channels: bool,
}

impl PrunerConfig {
    /// Pruning to `target` over `schedule` with the default coefficients for budgets
    /// ([`CdpConfig::budget_default`]); the controller sets δ.
    pub fn targeted(target: Target, schedule: Schedule) -> Self {
        Self::new(CdpConfig::budget_default(), DtcConfig::new())
            .with_target(Some(target))
            .with_schedule(Some(schedule))
    }

    /// The L1-norm filter baseline (Li et al., "Pruning Filters for Efficient ConvNets", ICLR
    /// 2017; Torch-Pruning's `MagnitudeImportance`) to `target` over `schedule`: no penalty; in
    /// every layer the same fraction of filters, those of smallest `‖W_f ⊙ S_f‖₁`, lose every
    /// stripe ([`ThresholdRule::FilterNorm`]); the controller sets the fraction, ramped over the
    /// pruning phase, and fine-tuning follows. The same masks and compaction as the method.
    pub fn l1_filter(target: Target, schedule: Schedule) -> Self {
        Self::new(
            CdpConfig::new(),
            DtcConfig::new().with_rule(ThresholdRule::FilterNorm),
        )
        .with_target(Some(target))
        .with_schedule(Some(schedule))
    }

    /// The SWP baseline (Meng et al., "Pruning Filter in Filter", NeurIPS 2020; METHOD §7) to
    /// `target` over `schedule`: L1 on the skeleton at SWP's published `sr = 1e-5` and one
    /// threshold for every stripe of every layer ([`ThresholdRule::Global`]), set by the
    /// controller.
    pub fn swp(target: Target, schedule: Schedule) -> Self {
        Self::new(
            CdpConfig::new().with_l1(1e-5),
            DtcConfig::new().with_rule(ThresholdRule::Global),
        )
        .with_target(Some(target))
        .with_schedule(Some(schedule))
    }

    /// Checks the coefficients, the threshold, the target and the schedule.
    ///
    /// # Errors
    /// [`PruneError::Cdp`] or [`PruneError::Dtc`] for an invalid coefficient or threshold,
    /// [`PruneError::Budget`] for a layer scale that is not finite and positive, an invalid target
    /// or schedule, or a target without a schedule.
    pub fn validate(&self) -> Result<(), PruneError> {
        self.cdp.validate()?;
        self.dtc.validate()?;
        if let Some((name, scale)) = self
            .layer_scales
            .iter()
            .find(|(_, s)| !(s.is_finite() && *s > 0.0))
        {
            return Err(PruneError::Budget(format!(
                "layer scale of {name} must be finite and > 0, got {scale}"
            )));
        }
        if let Some(schedule) = &self.schedule {
            schedule.validate()?;
        }
        if let Some(target) = &self.target {
            target.validate()?;
            match &self.schedule {
                None => {
                    return Err(PruneError::Budget(
                        "a target needs a schedule (warm-up, pruning and fine-tuning steps)".into(),
                    ));
                }
                Some(s) if s.threshold_ramp.is_some() => {
                    return Err(PruneError::Budget(
                        "a target sets δ itself: the schedule cannot also ramp it".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.coupled_channels && self.dtc.rule != ThresholdRule::PerFilter {
            return Err(PruneError::Budget(format!(
                "coupled channel pruning scores groups by DTC's per-filter thresholds; the {:?} \
                 rule has none",
                self.dtc.rule
            )));
        }
        Ok(())
    }
}

/// What [`Pruner::fit`] hands back for the optimizer step.
#[derive(Debug)]
pub struct Fit {
    /// Gradients of task loss + penalty, masked by DTC; pass them to `optim.step`.
    pub grads: GradientsParams,
    /// The step's numbers, for logs and progress bars.
    pub summary: StepSummary,
}

/// The numbers of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// Steps done, this one included.
    pub step: u64,
    /// Task loss.
    pub loss: f64,
    /// CDP penalty (0 when every coefficient is 0).
    pub penalty: f64,
    /// Stripes alive in the thresholded layers.
    pub live_stripes: u64,
    /// Stripes of the thresholded layers.
    pub total_stripes: u64,
    /// Filters alive in the thresholded layers.
    pub live_filters: u64,
    /// Filters of the thresholded layers.
    pub total_filters: u64,
    /// The phase this step ran in.
    pub phase: Phase,
    /// The DTC base threshold δ in force.
    pub threshold: f64,
    /// With a target: the fraction of the target's quantity removed at the last control step.
    pub removed: Option<f64>,
}

impl fmt::Display for StepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} loss {:.4} penalty {:.4} stripes {}/{} filters {}/{}",
            self.step,
            self.loss,
            self.penalty,
            self.live_stripes,
            self.total_stripes,
            self.live_filters,
            self.total_filters
        )?;
        if let Some(removed) = self.removed {
            write!(
                f,
                " δ {:.3e} removed {:.1} %",
                self.threshold,
                100.0 * removed
            )?;
        }
        Ok(())
    }
}

/// Everything a [`Pruner`] needs to continue where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunerState {
    /// [`STATE_VERSION`] when written.
    pub version: u32,
    /// The configuration.
    pub config: PrunerConfig,
    /// Steps done.
    pub step: u64,
    /// Names of the layers the state's vectors are indexed by.
    pub layers: Vec<String>,
    /// Texture-mass history.
    pub cdp: CdpState,
    /// Stripe masks in force.
    pub dtc: DtcState,
    /// The target controller's state.
    #[serde(default)]
    pub control: ControlState,
}

/// CDP penalty + DTC thresholds for a [`Prunable`] model (METHOD §3–4).
#[derive(Debug, Clone)]
pub struct Pruner {
    pub(crate) config: PrunerConfig,
    pub(crate) cdp: Cdp,
    pub(crate) dtc: ThresholdContainer,
    pub(crate) control: ControlState,
    pub(crate) step: u64,
}

impl Pruner {
    /// A pruner with empty state; fails on an invalid configuration.
    ///
    /// # Errors
    /// What [`PrunerConfig::validate`] returns.
    pub fn new(config: PrunerConfig) -> Result<Self, PruneError> {
        config.validate()?;
        Ok(Self {
            cdp: Cdp::new(config.cdp.clone())?,
            dtc: ThresholdContainer::new(config.dtc.clone())?,
            control: ControlState::default(),
            config,
            step: 0,
        })
    }

    /// The phase the next step runs in ([`Phase::Prune`] without a schedule).
    pub fn phase(&self) -> Phase {
        self.config
            .schedule
            .as_ref()
            .map_or(Phase::Prune, |s| s.phase(self.step))
    }

    /// The target controller's state.
    pub fn control(&self) -> &ControlState {
        &self.control
    }

    /// The configuration.
    pub fn config(&self) -> &PrunerConfig {
        &self.config
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// This pruner with its masks and texture-mass history on `device`: what a replica on
    /// another device masks its gradients with.
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            config: self.config.clone(),
            cdp: self.cdp.to_device(device),
            dtc: self.dtc.to_device(device),
            control: self.control.clone(),
            step: self.step,
        }
    }

    /// The DTC container (thresholds and masks in force).
    pub fn container(&self) -> &ThresholdContainer {
        &self.dtc
    }

    /// Sets the DTC base threshold δ for the following steps.
    ///
    /// # Errors
    /// [`PruneError::Dtc`] when `threshold` is negative or not finite.
    pub fn set_threshold(&mut self, threshold: f64) -> Result<(), PruneError> {
        self.dtc.set_threshold(threshold)?;
        self.config.dtc = self.dtc.config().clone();
        Ok(())
    }

    /// Without a target, the schedule's ramped δ for the step about to run, if it has a ramp.
    fn ramped_threshold(&self) -> Option<f64> {
        match &self.config.target {
            Some(_) => None,
            None => self.config.schedule.as_ref()?.ramped_threshold(self.step),
        }
    }

    /// The model's prunable layers minus the exempt ones.
    ///
    /// # Errors
    /// [`PruneError::UnknownLayer`] when an exempt or scaled layer name is not one of `model`'s,
    /// [`PruneError::NoLayers`] when it declares no prunable layer left to prune.
    pub fn layers<M: Prunable>(&self, model: &M) -> Result<Vec<PrunableLayer>, PruneError> {
        Ok(self.snapshot(model)?.layers)
    }

    /// `model`'s declaration, collected once for a step (see [`Snapshot`]).
    fn snapshot<M: Prunable>(&self, model: &M) -> Result<Snapshot, PruneError> {
        Snapshot::collect(model, &self.config.exempt, &self.config.layer_scales)
    }

    /// The CDP penalty of `model` alone, a scalar in the model's graph (`None` when every
    /// coefficient is 0). Does not advance the texture-mass history.
    ///
    /// # Errors
    /// What [`Pruner::layers`] returns, [`PruneError::Cdp`] when the penalty cannot be evaluated.
    pub fn penalty<M: Prunable>(&self, model: &M) -> Result<Option<Tensor<1>>, PruneError> {
        let snapshot = self.snapshot(model)?;
        Ok(self.cdp.evaluate(&snapshot.params()).map(|p| p.total))
    }

    /// One training step's pruning work: adds the CDP penalty to `loss`, back-propagates,
    /// applies the DTC step to the gradients and returns them for the optimizer
    /// ([`Pruner::gradients`] then [`Pruner::advance`], with the model's declaration collected
    /// once and the gradients masked once).
    ///
    /// Then call [`Pruner::apply_masks`] on the model the optimizer returns, so pruned entries
    /// are exactly 0 whatever the optimizer's momentum does:
    /// `model = pruner.apply_masks(optim.step(lr, model, fit.grads))`.
    ///
    /// Fails when the loss is not tracked by autodiff, or when the task loss or the penalty is
    /// not finite (no gradient is handed out then); the pruner is then unchanged: step counter,
    /// masks and texture-mass history.
    ///
    /// # Errors
    /// [`PruneError::NotAutodiff`] when `loss` is not tracked by autodiff,
    /// [`PruneError::NonFiniteLoss`] / [`PruneError::NonFinitePenalty`] for a NaN or infinite loss
    /// or penalty, what [`Pruner::layers`] returns, and [`PruneError::Budget`] when the target
    /// controller finds no threshold that meets the target.
    pub fn fit<M: Prunable>(&mut self, model: &M, loss: Tensor<1>) -> Result<Fit, PruneError> {
        let snapshot = self.snapshot(model)?;
        let (mut grads, mut summary, masses) = self.backward(&snapshot, model, loss)?;
        self.advance_with(&snapshot, model, masses)?;
        // Masks only grow, so the masks now in force cover those of the step's start.
        self.finish(&snapshot, &mut grads, &mut summary);
        summary.threshold = self.dtc.config().threshold;
        summary.removed = self.config.target.as_ref().map(|_| self.control.removed);
        Ok(Fit { grads, summary })
    }

    /// The read-only half of [`Pruner::fit`], for data-parallel training where several replicas
    /// compute gradients on their shards: task loss + CDP penalty (per the phase), backward, and
    /// the gradients masked with the masks *in force*. The summary's live counts are those of
    /// the masks in force. Combine the replicas' gradients, then call [`Pruner::advance`] once.
    ///
    /// # Errors
    /// As [`Pruner::fit`], except the controller's.
    pub fn gradients<M: Prunable>(&self, model: &M, loss: Tensor<1>) -> Result<Fit, PruneError> {
        let snapshot = self.snapshot(model)?;
        let (mut grads, mut summary, _) = self.backward(&snapshot, model, loss)?;
        self.finish(&snapshot, &mut grads, &mut summary);
        Ok(Fit { grads, summary })
    }

    /// The mutating half of [`Pruner::fit`], once per optimizer step on the combined gradients:
    /// the target controller (with a target), the DTC step on `model`'s skeletons, the gradients
    /// masked with the new masks, the texture-mass history and the step counter. On an error
    /// the pruner is unchanged.
    ///
    /// # Errors
    /// What [`Pruner::layers`] returns, and [`PruneError::Budget`] when the target controller finds
    /// no threshold that meets the target.
    pub fn advance<M: Prunable>(
        &mut self,
        model: &M,
        grads: &mut GradientsParams,
    ) -> Result<(), PruneError> {
        let snapshot = self.snapshot(model)?;
        let phase = self.phase();
        let masses = match phase {
            Phase::FineTune => None,
            Phase::Warmup | Phase::Prune => self.cdp.evaluate(&snapshot.params()).map(|p| p.masses),
        };
        self.advance_with(&snapshot, model, masses)?;
        if phase == Phase::Prune {
            self.mask_layers(&snapshot.layers, grads);
        }
        Ok(())
    }

    /// Task loss + penalty (per the phase), backward, and the scalars read and checked: the
    /// unmasked gradients, the summary (live counts not yet counted) and the texture masses.
    fn backward<M: Prunable>(
        &self,
        snapshot: &Snapshot,
        model: &M,
        loss: Tensor<1>,
    ) -> Result<(GradientsParams, StepSummary, Option<Vec<Tensor<1>>>), PruneError> {
        if !loss.is_tracked() {
            return Err(PruneError::NotAutodiff);
        }
        let phase = self.phase();
        let penalty = match phase {
            Phase::FineTune => None,
            Phase::Warmup | Phase::Prune => self.cdp.evaluate(&snapshot.params()),
        };
        let total = match &penalty {
            Some(p) => loss.clone() + p.total.clone(),
            None => loss.clone(),
        };
        let grads = GradientsParams::from_grads(total.backward(), model);
        let step = self.step + 1;
        let (loss, penalty_value) = read_scalars(loss, penalty.as_ref().map(|p| p.total.clone()));
        if !loss.is_finite() {
            return Err(PruneError::NonFiniteLoss { step, value: loss });
        }
        if !penalty_value.is_finite() {
            return Err(PruneError::NonFinitePenalty {
                step,
                value: penalty_value,
            });
        }
        let (total_stripes, total_filters) = snapshot.totals();
        let summary = StepSummary {
            step,
            loss,
            penalty: penalty_value,
            live_stripes: total_stripes,
            total_stripes,
            live_filters: total_filters,
            total_filters,
            phase,
            threshold: match phase {
                Phase::Prune => self.ramped_threshold(),
                Phase::Warmup | Phase::FineTune => None,
            }
            .unwrap_or(self.dtc.config().threshold),
            removed: self.config.target.as_ref().map(|_| self.control.removed),
        };
        Ok((grads, summary, penalty.map(|p| p.masses)))
    }

    /// Masks `grads` with the masks in force and counts them into `summary`.
    fn finish(&self, snapshot: &Snapshot, grads: &mut GradientsParams, summary: &mut StepSummary) {
        self.mask_layers(&snapshot.layers, grads);
        (summary.live_stripes, summary.live_filters) =
            snapshot.live_counts(|index| self.dtc.masks(index));
    }

    /// On a pruning step the ramped or controlled δ and the DTC step; then the texture-mass
    /// history and the step counter. On an error the pruner is unchanged.
    fn advance_with<M: Prunable>(
        &mut self,
        snapshot: &Snapshot,
        model: &M,
        masses: Option<Vec<Tensor<1>>>,
    ) -> Result<(), PruneError> {
        if self.phase() == Phase::Prune {
            if let Some(delta) = self.ramped_threshold() {
                self.set_threshold(delta)?;
            }
            let groups = self.coupled_groups(snapshot)?;
            self.control_threshold(snapshot, model, &groups)?;
            self.threshold_layers(&snapshot.layers, &groups);
        }
        if let Some(masses) = masses {
            self.cdp.commit(masses);
        }
        self.step += 1;
        Ok(())
    }

    /// With a target, the controller's δ for this pruning step (see [`crate::budget`]): measured
    /// on the compact model that DTC's masks under each candidate δ would give. Changes nothing
    /// on an error.
    fn control_threshold<M: Prunable>(
        &mut self,
        snapshot: &Snapshot,
        model: &M,
        groups: &[Vec<(usize, usize)>],
    ) -> Result<(), PruneError> {
        let (Some(target), Some(schedule)) = (&self.config.target, &self.config.schedule) else {
            return Ok(());
        };
        let controller = Controller::new(target, schedule);
        let probe = CostProbe::new(model, snapshot, target.quantity, target.input_size)?;
        // A FLOPs or MACs target is a fraction of the whole network: an undeclared conv or
        // linear layer (whose input size is unknown) would leave its cost out of both sides.
        if let Some(layer) = probe.uncounted() {
            return Err(PruneError::Budget(format!(
                "a {} target counts the whole network, and `{}` ({}) is not declared, so its \
                 cost is unknown: declare it (a SkeletonConv2d with `layers.conv(…)`, \
                 `.not_pruned()` to keep the pruner off it; a Burn Conv2d becomes a \
                 SkeletonConv2d with the same config; a Linear with `layers.linear(…)`)",
                match target.quantity {
                    Quantity::Macs => "MACs",
                    _ => "FLOPs",
                },
                layer.name,
                layer.module
            )));
        }
        let decision = controller.decide(
            self.step,
            self.dtc.config().threshold,
            &self.control,
            |delta| match delta {
                None => probe.measure(|_| None),
                Some(delta) => {
                    let masks = self.preview(&snapshot.layers, delta, groups);
                    probe.measure(|index| masks[index].as_ref())
                }
            },
        )?;
        self.set_threshold(decision.threshold)?;
        self.control = decision.state;
        Ok(())
    }

    /// The masks DTC would give each thresholded layer with base threshold `delta`, coupled
    /// `groups` masked whole.
    fn preview(
        &self,
        layers: &[PrunableLayer],
        delta: f64,
        groups: &[Vec<(usize, usize)>],
    ) -> Vec<Option<LayerMasks>> {
        let mut masks: Vec<Option<LayerMasks>> = layers
            .iter()
            .enumerate()
            .map(|(index, l)| {
                l.thresholded
                    .then(|| self.dtc.preview(index, self.values(l), delta))
            })
            .collect();
        if !groups.is_empty() {
            couple_groups(&mut masks, &skeletons(layers), groups);
        }
        masks
    }

    /// With [`PrunerConfig::coupled_channels`], the coupled channel groups of the declaration as
    /// `(pruner layer, filter)` lists: those whose every member is a thresholded layer (empty
    /// otherwise).
    fn coupled_groups(&self, snapshot: &Snapshot) -> Result<Vec<Vec<(usize, usize)>>, PruneError> {
        if !self.config.coupled_channels {
            return Ok(Vec::new());
        }
        let wiring = Wiring::resolve(&snapshot.declaration)?;
        let layer_of =
            |declared: usize| snapshot.index[declared].filter(|&l| snapshot.layers[l].thresholded);
        Ok(wiring
            .coupled_channels()
            .into_iter()
            .filter_map(|group| {
                group
                    .into_iter()
                    .map(|(declared, f)| layer_of(declared).map(|l| (l, f)))
                    .collect::<Option<Vec<_>>>()
            })
            .collect())
    }

    /// The DTC step alone (METHOD §4): recomputes every thresholded layer's thresholds and masks
    /// from `model`'s skeletons and masks `grads` (skeletons and coupled BatchNorm `γ`, `β`).
    /// [`Pruner::fit`] calls it; use it directly when the gradients come from elsewhere.
    ///
    /// # Errors
    /// What [`Pruner::layers`] returns.
    pub fn threshold_step<M: Prunable>(
        &mut self,
        model: &M,
        grads: &mut GradientsParams,
    ) -> Result<(), PruneError> {
        let snapshot = self.snapshot(model)?;
        let groups = self.coupled_groups(&snapshot)?;
        self.threshold_layers(&snapshot.layers, &groups);
        self.mask_layers(&snapshot.layers, grads);
        Ok(())
    }

    /// The DTC step on `layers`' skeletons: new thresholds and masks for every thresholded
    /// layer, coupled `groups` masked whole.
    fn threshold_layers(&mut self, layers: &[PrunableLayer], groups: &[Vec<(usize, usize)>]) {
        for (index, layer) in layers.iter().enumerate().filter(|(_, l)| l.thresholded) {
            let values = self.values(layer);
            self.dtc.update(index, values);
        }
        if groups.is_empty() {
            return;
        }
        let mut masks: Vec<Option<LayerMasks>> = (0..layers.len())
            .map(|i| self.dtc.masks(i).cloned())
            .collect();
        if couple_groups(&mut masks, &skeletons(layers), groups) > 0 {
            for (index, m) in masks.into_iter().enumerate() {
                if let Some(m) = m {
                    self.dtc.set_masks(index, m);
                }
            }
        }
    }

    /// What the threshold rule reads of `layer`: its skeleton, its weight (for
    /// [`ThresholdRule::FilterNorm`]) and its scale from [`PrunerConfig::layer_scales`].
    pub(crate) fn values(&self, layer: &PrunableLayer) -> LayerValues {
        let mut values =
            LayerValues::new(layer.skeleton.clone()).with_scale(self.scale(&layer.name));
        if self.dtc.config().rule == ThresholdRule::FilterNorm {
            values = values.with_weight(layer.weight.clone());
        }
        values
    }

    /// The multiplier of δ of the layer named `name`.
    fn scale(&self, name: &str) -> f64 {
        self.config
            .layer_scales
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1.0, |(_, s)| *s)
    }

    /// Sets the per-layer multipliers of δ for the following steps (see
    /// [`PrunerConfig::layer_scales`]); fails on a scale that is not finite and positive. Names
    /// are checked against the model at the next step.
    ///
    /// # Errors
    /// [`PruneError::Budget`] for a scale that is not finite and positive.
    pub fn set_layer_scales(&mut self, scales: Vec<(String, f64)>) -> Result<(), PruneError> {
        let config = self.config.clone().with_layer_scales(scales);
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Masks `grads` (skeletons and coupled BatchNorm channels) with the masks in force, without
    /// a DTC step: for gradients combined elsewhere, such as the per-device shards of a sharded
    /// optimizer.
    ///
    /// # Errors
    /// What [`Pruner::layers`] returns.
    pub fn mask_gradients<M: Prunable>(
        &self,
        model: &M,
        grads: &mut GradientsParams,
    ) -> Result<(), PruneError> {
        let snapshot = self.snapshot(model)?;
        self.mask_layers(&snapshot.layers, grads);
        Ok(())
    }

    /// Masks `grads` with the masks in force, without a DTC step.
    fn mask_layers(&self, layers: &[PrunableLayer], grads: &mut GradientsParams) {
        for (index, layer) in layers.iter().enumerate().filter(|(_, l)| l.thresholded) {
            let Some(masks) = self.dtc.masks(index) else {
                continue;
            };
            mask_gradient(grads, layer.skeleton_id, &masks.stripes);
            if let Some(norm) = &layer.norm {
                mask_gradient(grads, norm.gamma_id, &masks.alive);
                mask_gradient(grads, norm.beta_id, &masks.alive);
            }
        }
    }

    /// Sets every pruned skeleton entry and every dead coupled BatchNorm channel of `model` to
    /// exactly 0, with the masks in force.
    pub fn apply_masks<M: Prunable>(&self, model: M) -> M {
        let Ok(snapshot) = self.snapshot(&model) else {
            return model;
        };
        let mut mapper = MaskMapper::default();
        for (index, layer) in snapshot.layers.iter().enumerate() {
            let Some(masks) = self.dtc.masks(index).filter(|_| layer.thresholded) else {
                continue;
            };
            mapper.insert_layer(layer, masks.stripes.clone(), masks.alive.clone());
        }
        model.map(&mut mapper)
    }

    /// The compact inference model of `model` under the masks in force, of `model`'s own type:
    /// the masks are applied, then dead stripes, channels and branches are removed physically
    /// and every conv runs stripe-wise ([`texprune_layer::compact()`], METHOD §5). Before it is
    /// returned, `forward` runs on `example` through the masked and the compact model, and the
    /// two outputs must agree (≤ 1e-4 relative): a declaration that does not match the model's
    /// forward gives an error, never a broken model. `model` is not changed.
    ///
    /// ```text
    /// let compact = pruner.compact(&model, images, Net::forward)?;
    /// ```
    ///
    /// # Errors
    /// [`PruneError::Model`] for what [`texprune_layer::compact()`] refuses: NaN or infinite
    /// skeletons, biases or norms, an inconsistent declaration, an example the model's forward
    /// panics on, a compact model that does not compute what the masked model computes
    /// ([`ModelError::Mismatch`], naming the declarations at fault).
    pub fn compact<M: Prunable, const DI: usize, const DO: usize>(
        &self,
        model: &M,
        example: Tensor<DI>,
        forward: impl Fn(&M, Tensor<DI>) -> Tensor<DO>,
    ) -> Result<M, PruneError> {
        let masked = self.apply_masks(model.valid());
        Ok(texprune_layer::compact(&masked, example, forward)?)
    }

    /// The cost of the compact model `model` gives under the masks in force, as a FLOPs, MACs or
    /// params target counts it: by the model's own cost walk ([`Prunable::costed`]) at the
    /// target's input size (without a target: the first declared conv's last input size), or
    /// else from its declaration (each conv at the input size of its last forward pass).
    ///
    /// # Errors
    /// What [`Pruner::layers`] returns, [`PruneError::Model`] for an inconsistent declaration or a
    /// conv that has not run a forward pass.
    pub fn compact_cost<M: Prunable>(&self, model: &M) -> Result<CostReport, PruneError> {
        let snapshot = self.snapshot(model)?;
        let first = &snapshot.layers[0];
        let input_size = match &self.config.target {
            Some(target) => target.input_size,
            None => first.input_size.ok_or_else(|| ModelError::Unmeasured {
                layer: first.name.clone(),
            })?,
        };
        let probe = CostProbe::new(model, &snapshot, Quantity::Flops, input_size)?;
        probe.cost(|index| self.dtc.masks(index))
    }

    /// The pruner's state as plain data (reads the device), for checkpoints.
    ///
    /// # Errors
    /// What [`Pruner::layers`] returns.
    pub fn state<M: Prunable>(&self, model: &M) -> Result<PrunerState, PruneError> {
        let layers = self.layers(model)?.into_iter().map(|l| l.name).collect();
        Ok(self.state_of_layers(layers))
    }

    /// The state, its vectors indexed by `layers` (the names [`Pruner::layers`] gave).
    pub(crate) fn state_of_layers(&self, layers: Vec<String>) -> PrunerState {
        PrunerState {
            version: STATE_VERSION,
            config: self.config.clone(),
            step: self.step,
            layers,
            cdp: self.cdp.state(),
            dtc: self.dtc.state(),
            control: self.control.clone(),
        }
    }

    /// A pruner restored from `state` for `model`, after checking the version, the layer names
    /// and the mask shapes.
    ///
    /// # Errors
    /// [`PruneError::StateMismatch`] for another state version or other layer names,
    /// [`PruneError::Cdp`] / [`PruneError::Dtc`] for a history or masks of other shapes, and what
    /// [`Pruner::new`] (for the saved configuration) and [`Pruner::layers`] return.
    pub fn from_state<M: Prunable>(state: &PrunerState, model: &M) -> Result<Self, PruneError> {
        if state.version != STATE_VERSION {
            return Err(PruneError::StateMismatch(format!(
                "format version {} (this build reads {STATE_VERSION})",
                state.version
            )));
        }
        let mut pruner = Self::new(state.config.clone())?;
        let layers = pruner.layers(model)?;
        let names: Vec<_> = layers.iter().map(|l| l.name.clone()).collect();
        if names != state.layers {
            return Err(PruneError::StateMismatch(format!(
                "the state is for layers [{}], the model has [{}]",
                state.layers.join(", "),
                names.join(", ")
            )));
        }
        let skeletons: Vec<_> = layers.iter().map(|l| l.skeleton.clone()).collect();
        let like = skeletons[0].clone().flatten::<1>(0, 2);
        pruner.cdp.load_state(&state.cdp, layers.len(), &like)?;
        pruner.dtc.load_state(&state.dtc, &skeletons)?;
        pruner.control = state.control.clone();
        pruner.step = state.step;
        Ok(pruner)
    }
}

/// Reads the loss and the penalty (0 when absent) in one transaction.
/// The layers' skeletons, outside autodiff.
fn skeletons(layers: &[PrunableLayer]) -> Vec<Tensor<3>> {
    layers.iter().map(|l| l.skeleton.clone().detach()).collect()
}

fn read_scalars(loss: Tensor<1>, penalty: Option<Tensor<1>>) -> (f64, f64) {
    let mut tx = Transaction::default().register(loss.detach());
    if let Some(p) = &penalty {
        tx = tx.register(p.clone().detach());
    }
    let data = tx.execute();
    let value = |i: usize| {
        data.get(i)
            .and_then(|d| d.iter::<f64>().next())
            .unwrap_or(f64::NAN)
    };
    (value(0), if penalty.is_some() { value(1) } else { 0.0 })
}
