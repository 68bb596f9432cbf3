//! Training under burn-train's `Learner`, on one device or many.
//!
//! [`PrunedModel`] wraps a prunable model so that burn-train's own training loop adds the CDP
//! penalty and applies the DTC masks, under every execution strategy. The model's [`Task`] says
//! what it trains on (every [`Classifier`](texprune_zoo::Classifier) is a classification task;
//! implement [`Task`] for another one):
//!
//! - `TrainStep::step` (on each replica, on its shard of the batch): task loss + CDP penalty,
//!   backward, gradients masked with the masks in force ([`Pruner::gradients`]). Under DDP the
//!   all-reduce runs inside this backward, so the masking happens *after* it; masking is linear
//!   and every replica holds the same masks, so before or after gives the same gradient.
//! - `TrainStep::optimize` (once per optimizer step, on the combined gradients): the DTC step on
//!   the skeletons, the gradients masked with the new masks ([`Pruner::advance`]), the optimizer
//!   step, then the pruned entries set to exactly 0 ([`Pruner::apply_masks`]).
//!
//! The pruner travels with the model value: the multi-device strategy forks the main model, with
//! its pruner, to every worker at every step, and optimizes once; under DDP every replica advances
//! its own copy on the same all-reduced gradients and the same weights, so the masks agree, and
//! every `check_every` steps the replicas compare a fingerprint of masks and skeletons
//! ([`Ledger`]): a replica that differs stops training with [`PruneError::ReplicaDivergence`].

mod checkpoint;
mod ledger;
mod metrics;
mod renderer;
mod task;

pub use checkpoint::{PrunerCheckpointing, load_pruner_state};
pub use ledger::{Ledger, fingerprint};
pub use metrics::{LiveStripesInput, LiveStripesMetric, PenaltyInput, PenaltyMetric, PrunedOutput};
pub use renderer::EpochLineRenderer;
pub use task::Task;

use std::path::Path;

use burn::module::{Module, ModuleDisplay};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use texprune_layer::Prunable;

use crate::checkpoint::CheckpointError;
use crate::{PruneError, Pruner};

/// Default number of steps between two replica fingerprint comparisons.
pub const CHECK_EVERY: u64 = 50;

/// A prunable model and its [`Pruner`], trained on the model's [`Task`] by burn-train's
/// `Learner` (see the [module documentation](self)).
#[derive(Module, Debug)]
pub struct PrunedModel<M> {
    model: M,
    #[module(skip)]
    pruner: Pruner,
    #[module(skip)]
    ledger: Ledger,
    #[module(skip)]
    check_every: u64,
}

impl<M: Prunable> PrunedModel<M> {
    /// `model` pruned by `pruner`; replicas compare fingerprints every [`CHECK_EVERY`] steps.
    pub fn new(model: M, pruner: Pruner) -> Self {
        Self {
            model,
            pruner,
            ledger: Ledger::default(),
            check_every: CHECK_EVERY,
        }
    }

    /// Compare the replicas' fingerprints every `steps` optimizer steps (0: never).
    pub fn with_check_every(mut self, steps: u64) -> Self {
        self.check_every = steps;
        self
    }

    /// `model` with the pruner state saved by [`PrunerCheckpointing`] for `epoch` under
    /// `directory`; then resume the Learner with `.checkpoint(epoch)`.
    ///
    /// # Errors
    /// What [`load_pruner_state`] returns, [`CheckpointError::Mismatch`] when the state does not
    /// fit `model`.
    pub fn resume(model: M, directory: &Path, epoch: usize) -> Result<Self, CheckpointError> {
        let path = checkpoint::state_path(directory, epoch);
        let state = load_pruner_state(directory, epoch)?;
        let pruner = Pruner::from_state(&state, &model).map_err(|e| CheckpointError::Mismatch {
            path,
            reason: e.to_string(),
        })?;
        Ok(Self::new(model, pruner))
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The pruner.
    pub fn pruner(&self) -> &Pruner {
        &self.pruner
    }

    /// The model and its pruner, e.g. for [`Pruner::compact`] after training.
    pub fn into_parts(self) -> (M, Pruner) {
        (self.model, self.pruner)
    }

    /// The ledger the replicas of this model share (cloned models share it).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A checkpointing strategy that keeps the Learner's checkpoints (chosen by `inner`) and
    /// writes the pruner state beside each, into `directory` (the Learner's
    /// `<artifact dir>/checkpoint`).
    pub fn checkpointing<S>(
        &self,
        directory: impl AsRef<Path>,
        inner: S,
    ) -> PrunerCheckpointing<S> {
        PrunerCheckpointing::new(directory.as_ref(), inner, self.ledger.clone())
    }

    /// After the optimizer step: the pruned entries set to exactly 0, the state recorded for
    /// checkpoints and, on check steps, this replica's fingerprint compared.
    fn after_step(mut self) -> Self {
        self.model = self.pruner.apply_masks(self.model);
        or_stop(self.ledger.record_state(&self.pruner, || {
            Ok(self
                .pruner
                .layers(&self.model)?
                .into_iter()
                .map(|l| l.name)
                .collect())
        }));
        let step = self.pruner.step();
        if self.check_every > 0 && step.is_multiple_of(self.check_every) {
            or_stop(
                fingerprint(&self.pruner, &self.model).and_then(|f| self.ledger.check(step, f)),
            );
        }
        self
    }
}

/// Burn's training step cannot return an error: a refused step (non-finite loss or penalty,
/// diverged replicas) stops the worker with the error's message, which the Learner reports.
fn or_stop<T>(result: Result<T, PruneError>) -> T {
    result.unwrap_or_else(|error| panic!("texprune: {error}"))
}

impl<M: Prunable + Task + ModuleDisplay + 'static> TrainStep for PrunedModel<M> {
    type Input = M::Batch;
    type Output = PrunedOutput<M::Output>;

    fn step(&self, batch: M::Batch) -> TrainOutput<PrunedOutput<M::Output>> {
        let output = self.model.run(batch);
        let loss = M::loss(&output);
        // The worker's replica lives on its own device, where its loss is; the masks come along.
        let pruner = self.pruner.to_device(&loss.device());
        let fit = or_stop(pruner.gradients(&self.model, loss));
        TrainOutput {
            grads: fit.grads,
            item: PrunedOutput {
                output,
                summary: fit.summary,
            },
        }
    }

    fn optimize(
        mut self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        mut grads: GradientsParams,
    ) -> Self {
        or_stop(self.pruner.advance(&self.model, &mut grads));
        optim.step(lr, self, grads).after_step()
    }

    fn optimize_multi(
        mut self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        mut grads: MultiGradientsParams,
    ) -> Self {
        // Sharded optimizer: one DTC step, its masks applied to every device's gradients.
        let mut shards = grads.grads.iter_mut();
        match shards.next() {
            Some((first, _)) => or_stop(self.pruner.advance(&self.model, first)),
            None => or_stop(
                self.pruner
                    .advance(&self.model, &mut GradientsParams::new()),
            ),
        }
        for (shard, _) in shards {
            or_stop(self.pruner.mask_gradients(&self.model, shard));
        }
        optim.step_multi(lr, self, grads).after_step()
    }
}

impl<M: Prunable + Task + ModuleDisplay + 'static> InferenceStep for PrunedModel<M> {
    type Input = M::Batch;
    type Output = M::Output;

    fn step(&self, batch: M::Batch) -> M::Output {
        self.model.run(batch)
    }
}
