//! Pruning to a budget: a cost target, a schedule over the user's training length, and the
//! controller that sets the DTC base threshold δ online so the pruned cost follows a ramp to the
//! target.
//!
//! Phases, by training step `s` (0-based):
//!
//! - **warm-up** `s < warmup`: the CDP penalty shapes the skeletons, DTC masks nothing;
//! - **pruning** `warmup ≤ s < warmup + prune`: penalty on, DTC every step; with a target, every
//!   `control_every` steps (and on the last pruning step) the controller sets δ; without one, δ
//!   is the configured threshold or follows the schedule's [`ThresholdRamp`] from 0;
//! - **fine-tuning** afterwards, the target met: the masks are frozen (still
//!   applied to gradients and parameters), the penalty is off.
//!
//! The control rule: on pruning step `s` the goal is the ramp `r(s) = R·(1 − (1 − τ)³)`,
//! `τ = (s − warmup + 1) / prune`, where `R` is the fraction of the cost to remove (the cubic
//! ramp of gradual pruning: fast while the network is redundant, slow near the end). With the
//! current skeletons `S` and the masks in force `M`, the removed fraction
//! `p(δ) = 1 − cost(M ∧ mask(S, δ)) / cost₀` is non-decreasing in δ (each threshold
//! `T_f = δ · mean_g‖S_g‖₁ / ‖S_f‖₁` grows with δ). Every pruning step measures `p(δ)` for the δ
//! in force; when it would pass the ramp, and on every control step, a bracketing bisection
//! re-solves δ as the largest value with `p(δ) ≤ r(s)`, and DTC runs with it. On the last pruning
//! step the goal is `R` itself and δ is the smallest value found with `p(δ) ≥ R`, so the target
//! is met (by at most the cost of the stripes that cross the threshold together); then the masks
//! are frozen. The cost is measured on the compact model the masks give
//! (compaction's own plan under the candidate masks, `CostReport::of_plan`), so FLOPs, MACs and params are
//! exact, not estimated.
//!
//! Why it is stable: there is no gain to tune and nothing integrates. Masks only grow and `p` is
//! capped by the ramp at every step, so `p` is non-decreasing and never passes the target; δ is
//! re-solved from the current skeletons, so a skeleton distribution that drifts (the penalty
//! shrinks it, the task loss spreads it) moves δ with it instead of accumulating an error; a
//! step that finds the ramp already reached chooses `δ = 0` (no new pruning) until the ramp
//! catches up.

use burn::config::Config;
use burn::tensor::{Bool, Tensor};
use serde::{Deserialize, Serialize};
use texprune_dtc::LayerMasks;
use texprune_layer::compact::{CompactionPlan, LayerState, Wiring};
use texprune_layer::{
    CostReport, Costed, PlannedLayers, Prunable, Shapes, UndeclaredLayer, undeclared,
};

use crate::PruneError;
use crate::snapshot::Snapshot;

/// The quantity a [`Target`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quantity {
    /// Floating-point operations of the compact model (METHOD §6).
    Flops,
    /// Multiply-accumulates of the compact model.
    Macs,
    /// Parameters of the compact model.
    Params,
    /// Live stripes of the thresholded layers (needs no cost model).
    Stripes,
}

impl std::str::FromStr for Quantity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flops" => Ok(Self::Flops),
            "macs" => Ok(Self::Macs),
            "params" => Ok(Self::Params),
            "stripes" => Ok(Self::Stripes),
            other => Err(format!(
                "unknown quantity `{other}`: flops, macs, params or stripes"
            )),
        }
    }
}

impl Quantity {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flops => "FLOPs",
            Self::Macs => "MACs",
            Self::Params => "params",
            Self::Stripes => "stripes",
        }
    }
}

/// What to remove: at least a fraction of one [`Quantity`], measured at one input size.
#[derive(Config, Debug, PartialEq)]
pub struct Target {
    /// The quantity.
    pub quantity: Quantity,
    /// Fraction of it to remove, in `(0, 1)`.
    pub remove: f64,
    /// Input `[height, width]` the cost is counted at.
    #[config(default = "[32, 32]")]
    pub input_size: [usize; 2],
}

impl Target {
    /// Remove `fraction` of the FLOPs at `input_size`.
    pub fn flops(fraction: f64, input_size: [usize; 2]) -> Self {
        Self::new(Quantity::Flops, fraction).with_input_size(input_size)
    }

    /// Checks the fractions.
    ///
    /// # Errors
    /// [`PruneError::Budget`] for a fraction outside `(0, 1)` or not finite, or a zero input size.
    pub fn validate(&self) -> Result<(), PruneError> {
        let valid = |v: f64, hi: f64| v.is_finite() && v > 0.0 && v < hi;
        if !valid(self.remove, 1.0) {
            return Err(PruneError::Budget(format!(
                "the target must remove a fraction in (0, 1), got {}",
                self.remove
            )));
        }
        if self.input_size.contains(&0) {
            return Err(PruneError::Budget("the target's input size is zero".into()));
        }
        Ok(())
    }
}

/// The phases of training, in steps.
#[derive(Config, Debug, PartialEq)]
pub struct Schedule {
    /// Steps of warm-up: penalty on, nothing pruned.
    pub warmup_steps: u64,
    /// Steps of pruning: penalty on, DTC (and the controller) every step; fine-tuning follows.
    pub prune_steps: u64,
    /// Steps between two control steps of the target controller.
    #[config(default = 25)]
    pub control_every: u64,
    /// Without a target: how δ rises from the first pruning step (None: δ as configured). With
    /// a target the controller sets δ, and a ramp is an error.
    #[config(default = "None")]
    pub threshold_ramp: Option<ThresholdRamp>,
}

/// Without a target, the DTC base threshold over the pruning phase: on pruning step `s`,
/// `δ(s) = to · min(1, (s − warmup) / steps)`, rising linearly from 0 (nothing pruned) to `to`,
/// then held. Masks only grow, so a slow start keeps early, noisy skeletons from deciding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRamp {
    /// The final δ.
    pub to: f64,
    /// Steps to reach it, counted from the first pruning step (≥ 1).
    pub steps: u64,
}

impl ThresholdRamp {
    /// δ rising to `to` over `steps` steps.
    pub fn new(to: f64, steps: u64) -> Self {
        Self { to, steps }
    }

    /// δ on the pruning step `offset` steps after the first.
    pub fn at(&self, offset: u64) -> f64 {
        self.to * (offset as f64 / self.steps.max(1) as f64).min(1.0)
    }
}

/// Where a step falls in the [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Penalty on, nothing pruned.
    Warmup,
    /// Penalty on, DTC masks updated.
    Prune,
    /// Masks frozen, penalty off.
    FineTune,
}

impl Schedule {
    /// Fractions of `total_steps`: warm-up for the first `warmup`, pruning for the next `prune`,
    /// fine-tuning for the rest.
    pub fn fractions(total_steps: u64, warmup: f64, prune: f64) -> Self {
        let steps = |f: f64| (total_steps as f64 * f.clamp(0.0, 1.0)).round() as u64;
        Self::new(steps(warmup), steps(prune).max(1))
    }

    /// Checks the lengths and the ramp.
    ///
    /// # Errors
    /// [`PruneError::Budget`] for a pruning phase of zero steps, `control_every = 0`, or a ramp
    /// of zero steps or to a δ that is negative or not finite.
    pub fn validate(&self) -> Result<(), PruneError> {
        if self.prune_steps == 0 || self.control_every == 0 {
            return Err(PruneError::Budget(
                "the schedule needs at least one pruning step and control_every ≥ 1".into(),
            ));
        }
        if let Some(ramp) = &self.threshold_ramp
            && (ramp.steps == 0 || !(ramp.to.is_finite() && ramp.to >= 0.0))
        {
            return Err(PruneError::Budget(format!(
                "the threshold ramp needs at least one step and a finite δ ≥ 0, got {} steps to {}",
                ramp.steps, ramp.to
            )));
        }
        Ok(())
    }

    /// The phase of step `step` (0-based).
    pub fn phase(&self, step: u64) -> Phase {
        if step < self.warmup_steps {
            Phase::Warmup
        } else if step < self.warmup_steps + self.prune_steps {
            Phase::Prune
        } else {
            Phase::FineTune
        }
    }

    /// δ on step `step` by the schedule's [`ThresholdRamp`], if it has one.
    pub fn ramped_threshold(&self, step: u64) -> Option<f64> {
        let ramp = self.threshold_ramp.as_ref()?;
        Some(ramp.at(step.saturating_sub(self.warmup_steps)))
    }

    /// Whether the controller runs at pruning step `step`: every `control_every` steps from the
    /// first pruning step, and on the last one.
    pub fn is_control_step(&self, step: u64) -> bool {
        let Some(offset) = step.checked_sub(self.warmup_steps) else {
            return false;
        };
        offset < self.prune_steps
            && (offset.is_multiple_of(self.control_every) || offset + 1 == self.prune_steps)
    }

    /// The ramp `1 − (1 − τ)³`, `τ = (step − warmup + 1) / prune` clamped to `[0, 1]`: the
    /// fraction of the target to have removed by the end of step `step`.
    pub fn ramp(&self, step: u64) -> f64 {
        let done = (step + 1).saturating_sub(self.warmup_steps) as f64;
        let tau = (done / self.prune_steps as f64).clamp(0.0, 1.0);
        1.0 - (1.0 - tau).powi(3)
    }
}

/// The controller's state, saved with the pruner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ControlState {
    /// The cost with nothing pruned (measured at the first control step).
    pub baseline: Option<f64>,
    /// The removed fraction after the last pruning step.
    pub removed: f64,
}

/// The boundary of a monotone predicate: `(lo, hi)` with `feasible(lo)` and not `feasible(hi)`,
/// for a `feasible` that holds at 0 and, once false, stays false for every larger `x`. Brackets
/// from `start` by factors of 4, then bisects `iterations` times (geometrically once the bracket
/// is positive). `(0, 0)` when `feasible(0)` is false; `hi` is infinite when no bracket was found.
pub(crate) fn boundary<E>(
    start: f64,
    iterations: usize,
    mut feasible: impl FnMut(f64) -> Result<bool, E>,
) -> Result<(f64, f64), E> {
    if !feasible(0.0)? {
        return Ok((0.0, 0.0));
    }
    let (mut lo, mut hi) = (0.0, start.max(f64::MIN_POSITIVE));
    // Bracket: 4^60 ≈ 1e36 above `start` is beyond any threshold that leaves a stripe.
    let mut bracketed = false;
    for _ in 0..60 {
        if !feasible(hi)? {
            bracketed = true;
            break;
        }
        (lo, hi) = (hi, hi * 4.0);
    }
    if !bracketed {
        return Ok((lo, f64::INFINITY));
    }
    for _ in 0..iterations {
        let mid = if lo > 0.0 {
            (lo * hi).sqrt()
        } else {
            hi / 16.0
        };
        if feasible(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((lo, hi))
}

/// The target controller (see the module's rule): sets δ on a pruning step from the target, the
/// schedule's ramp and a measure of the target's quantity under candidate thresholds. It knows
/// no model and no mask: the pruner hands it the measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Controller<'a> {
    target: &'a Target,
    schedule: &'a Schedule,
}

/// What the controller decided on one pruning step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// The δ DTC runs with.
    pub threshold: f64,
    /// The controller's state after the step (baseline, fraction removed with `threshold`).
    pub state: ControlState,
}

impl<'a> Controller<'a> {
    /// The controller of `target` over `schedule`.
    pub(crate) fn new(target: &'a Target, schedule: &'a Schedule) -> Self {
        Self { target, schedule }
    }

    /// δ for pruning step `step`, with `current` the δ in force and `state` the state before the
    /// step. `quantity(None)` is the target's quantity with nothing pruned (read once, for the
    /// baseline); `quantity(Some(δ))` the quantity if DTC ran now with δ (non-increasing in δ).
    ///
    /// Keeps `current` unless its masks would remove more than the ramp allows; on control steps
    /// (or when it would) the largest δ whose masks stay at or below the ramp; on the last
    /// pruning step the smallest δ found that meets the target.
    pub(crate) fn decide(
        &self,
        step: u64,
        current: f64,
        state: &ControlState,
        mut quantity: impl FnMut(Option<f64>) -> Result<f64, PruneError>,
    ) -> Result<Decision, PruneError> {
        let baseline = match state.baseline {
            Some(b) => b,
            None => quantity(None)?,
        };
        let mut removed_at = |delta: f64| -> Result<f64, PruneError> {
            let value = quantity(Some(delta))?;
            Ok(if baseline > 0.0 {
                1.0 - value / baseline
            } else {
                0.0
            })
        };
        let schedule = self.schedule;
        let goal = self.target.remove * schedule.ramp(step);
        let last = step + 1 == schedule.warmup_steps + schedule.prune_steps;
        let kept = match schedule.is_control_step(step) {
            true => None,
            false => Some(removed_at(current)?),
        };
        let (threshold, removed) = match kept {
            Some(removed) if removed <= goal && !last => (current, removed),
            _ => {
                let mut tried = Vec::new();
                let start = if current > 0.0 { current } else { 1e-2 };
                let (lo, hi) = boundary(start, 16, |delta| {
                    let removed = removed_at(delta)?;
                    tried.push((delta, removed));
                    Ok::<_, PruneError>(removed <= goal)
                })?;
                // On the last step, meet the target: the smallest δ found past it.
                let delta = if last && hi.is_finite() && hi > 0.0 {
                    hi
                } else {
                    lo
                };
                let removed = match tried.iter().find(|(d, _)| *d == delta) {
                    Some(&(_, removed)) => removed,
                    None => removed_at(delta)?,
                };
                (delta, removed)
            }
        };
        Ok(Decision {
            threshold,
            state: ControlState {
                baseline: Some(baseline),
                removed,
            },
        })
    }
}

/// The cost of the compact model under candidate masks, from the declaration (its wiring
/// resolved once) and host copies of the skeletons, biases and norms read once (no weight is
/// read or built): what the controller evaluates for every δ it tries. A model with a cost walk
/// of its own ([`Prunable::costed`](texprune_layer::Prunable::costed)) is counted by that walk
/// over the plan's shapes at the target's input size, as its reports count it; any other by its
/// declaration ([`CostReport::of_plan`]).
pub(crate) struct CostProbe<'a> {
    quantity: Quantity,
    costed: Option<&'a dyn Costed>,
    /// Without a cost walk of the model's own: the modules its declaration leaves out (their
    /// parameters count; their FLOPs are unknown).
    undeclared: Vec<UndeclaredLayer>,
    input_size: [usize; 2],
    snapshot: &'a Snapshot,
    /// None for stripes.
    wiring: Option<Wiring>,
    states: Vec<LayerState>,
}

impl<'p> CostProbe<'p> {
    /// A probe of `quantity` on `model`, whose declaration `snapshot` holds: resolves the
    /// wiring and reads the states of the declaration, and (without a cost walk of the model's
    /// own) finds the modules it leaves out, unless `quantity` is stripes (which needs none of
    /// it). `input_size` is what a model's own cost walk counts at.
    pub(crate) fn new<M: Prunable>(
        model: &'p M,
        snapshot: &'p Snapshot,
        quantity: Quantity,
        input_size: [usize; 2],
    ) -> Result<Self, PruneError> {
        let declaration = &snapshot.declaration;
        let costed = model.costed();
        let undeclared = match (quantity, costed) {
            (Quantity::Stripes, _) | (_, Some(_)) => Vec::new(),
            _ => undeclared(model, declaration),
        };
        let (wiring, states) = match quantity {
            Quantity::Stripes => (None, Vec::new()),
            _ => (
                Some(Wiring::resolve(declaration)?),
                declaration
                    .iter()
                    .map(LayerState::read)
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            quantity,
            costed,
            undeclared,
            input_size,
            snapshot,
            wiring,
            states,
        })
    }

    /// For a FLOPs or MACs probe, the first undeclared conv or linear layer: its cost is
    /// unknown, so the probe cannot count a fraction of the whole network.
    pub(crate) fn uncounted(&self) -> Option<&UndeclaredLayer> {
        let counts_operations = matches!(self.quantity, Quantity::Flops | Quantity::Macs);
        self.undeclared
            .iter()
            .find(|l| l.weighted)
            .filter(|_| counts_operations)
    }

    /// The cost under `masks` (per pruner layer index; None: unmasked).
    ///
    /// # Panics
    /// On a probe of stripes (which reads no state).
    pub(crate) fn cost<'a>(
        &self,
        masks: impl Fn(usize) -> Option<&'a LayerMasks>,
    ) -> Result<CostReport, PruneError> {
        let wiring = self
            .wiring
            .as_ref()
            .expect("a cost probe resolves the wiring");
        let host = |t: Tensor<1, Bool>| -> Vec<bool> { t.into_data().iter::<bool>().collect() };
        let layers = &self.snapshot.layers;
        let states: Vec<LayerState> = self
            .states
            .iter()
            .zip(&self.snapshot.index)
            .map(
                |(state, index)| match index.filter(|&i| layers[i].thresholded).and_then(&masks) {
                    Some(m) => state.masked(
                        &host(m.stripes.clone().flatten(0, 2)),
                        &host(m.alive.clone()),
                    ),
                    None => state.clone(),
                },
            )
            .collect();
        let declaration = &self.snapshot.declaration;
        let plan = CompactionPlan::with_wiring(declaration, wiring, &states)?;
        Ok(match self.costed {
            Some(model) => {
                let planned = PlannedLayers::new(declaration, &plan);
                model.cost_of(self.input_size, Shapes::Planned(&planned))
            }
            None => {
                let mut report = CostReport::of_plan(declaration, &plan)?;
                report.undeclared(&self.undeclared);
                report
            }
        })
    }

    /// The probe's quantity under `masks` (per pruner layer index; None: unmasked).
    pub(crate) fn measure<'a>(
        &self,
        masks: impl Fn(usize) -> Option<&'a LayerMasks>,
    ) -> Result<f64, PruneError> {
        if self.quantity == Quantity::Stripes {
            return Ok(self.snapshot.live_counts(masks).0 as f64);
        }
        let cost = self.cost(masks)?;
        Ok(match self.quantity {
            Quantity::Flops => cost.flops(),
            Quantity::Macs => cost.macs(),
            Quantity::Params => cost.params(),
            Quantity::Stripes => unreachable!("counted above"),
        } as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_control_steps() {
        let s = Schedule::new(10, 20).with_control_every(8);
        assert_eq!(s.phase(9), Phase::Warmup);
        assert_eq!(s.phase(10), Phase::Prune);
        assert_eq!(s.phase(29), Phase::Prune);
        assert_eq!(s.phase(30), Phase::FineTune);
        let controls: Vec<u64> = (0..40).filter(|&t| s.is_control_step(t)).collect();
        assert_eq!(controls, vec![10, 18, 26, 29]);
        assert_eq!(s.ramp(9), 0.0);
        assert_eq!(s.ramp(29), 1.0);
        // τ = 10/20 → 1 − 0.5³.
        assert_eq!(s.ramp(19), 0.875);
        assert!((0..40).all(|t| s.ramp(t) <= s.ramp(t + 1)));
        assert_eq!(Schedule::fractions(1000, 0.1, 0.5), Schedule::new(100, 500));
    }

    #[test]
    fn boundary_brackets_the_switch() {
        let (lo, hi) = boundary::<()>(1e-3, 60, |x| Ok(x <= 0.37)).unwrap();
        assert!(lo <= 0.37 && hi > 0.37 && hi - lo < 1e-9, "{lo} {hi}");
        assert_eq!(
            boundary::<()>(1.0, 60, |x| Ok(x < 0.0)).unwrap(),
            (0.0, 0.0)
        );
        // A boundary far above the start is bracketed.
        let (lo, hi) = boundary::<()>(1e-3, 80, |x| Ok(x <= 5e4)).unwrap();
        assert!((lo / 5e4 - 1.0).abs() < 1e-9 && hi > 5e4, "{lo} {hi}");
        assert_eq!(
            boundary::<()>(1.0, 4, |_| Ok(true)).unwrap().1,
            f64::INFINITY
        );
    }

    #[test]
    fn targets_are_validated() {
        assert!(Target::flops(0.6, [32, 32]).validate().is_ok());
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(Target::flops(bad, [32, 32]).validate().is_err(), "{bad}");
        }
        assert!(Target::flops(0.6, [0, 32]).validate().is_err());
        assert!(Schedule::new(0, 0).validate().is_err());
        for (to, steps) in [(0.02, 0), (-0.1, 5), (f64::NAN, 5)] {
            let ramp = Some(ThresholdRamp::new(to, steps));
            let schedule = Schedule::new(0, 10).with_threshold_ramp(ramp);
            assert!(schedule.validate().is_err(), "{to} {steps}");
        }
    }

    #[test]
    fn the_threshold_ramp_rises_linearly_then_holds() {
        let ramp = ThresholdRamp::new(0.02, 4);
        let deltas: Vec<f64> = (0..6).map(|s| ramp.at(s)).collect();
        assert_eq!(deltas, [0.0, 0.005, 0.01, 0.015, 0.02, 0.02]);
    }

    /// The controller alone, on a measure with 100 stripes of 10 FLOPs each that fall at
    /// `δ = 0.01, 0.02, …`: each step stays at or under the ramp, the last one meets the target
    /// with the smallest δ that does, and the baseline is read once.
    #[test]
    fn the_controller_follows_the_ramp_and_meets_the_target() {
        let target = Target::flops(0.45, [32, 32]);
        let schedule = Schedule::new(2, 10).with_control_every(3);
        let controller = Controller::new(&target, &schedule);
        let flops = |delta: f64| {
            1000.0 - 10.0 * (1..=100).filter(|i| 0.01 * f64::from(*i) < delta).count() as f64
        };
        let (mut state, mut threshold, mut baselines) = (ControlState::default(), 0.0, 0);
        for step in 2..12 {
            let decision = controller
                .decide(step, threshold, &state, |delta| {
                    Ok(match delta {
                        None => {
                            baselines += 1;
                            1000.0
                        }
                        Some(delta) => flops(delta),
                    })
                })
                .unwrap();
            (threshold, state) = (decision.threshold, decision.state);
            assert_eq!(
                state.removed,
                1.0 - flops(threshold) / 1000.0,
                "step {step}"
            );
            let goal = target.remove * schedule.ramp(step);
            if step < 11 {
                assert!(
                    state.removed <= goal,
                    "step {step}: {} > {goal}",
                    state.removed
                );
                // Control steps take the largest δ under the ramp: one more stripe passes it.
                if schedule.is_control_step(step) {
                    assert!(
                        1.0 - flops(threshold + 0.0101) / 1000.0 > goal,
                        "step {step}"
                    );
                }
            } else {
                assert!(state.removed >= 0.45, "{}", state.removed);
                assert!(1.0 - flops(threshold * 0.999) / 1000.0 < 0.45 + 1e-12);
            }
        }
        assert_eq!(state.baseline, Some(1000.0));
        assert_eq!(baselines, 1);
    }
}
