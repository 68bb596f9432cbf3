//! The pruner state beside the Learner's checkpoints: `pruner-<epoch>.json` next to
//! `model-<epoch>.bpk`, written atomically when the Learner saves, deleted when it deletes.

use std::path::{Path, PathBuf};

use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;

use super::Ledger;
use crate::PrunerState;
use crate::checkpoint::CheckpointError;
use crate::checkpoint::write_atomic;

/// The path of the pruner state for `epoch` in `directory`.
pub(crate) fn state_path(directory: &Path, epoch: usize) -> PathBuf {
    directory.join(format!("pruner-{epoch}.json"))
}

/// A burn-train checkpointing strategy that lets `inner` decide which epochs to keep and writes
/// the pruner state of the model's replicas for each epoch saved. Build it with
/// [`PrunedModel::checkpointing`](super::PrunedModel::checkpointing).
///
/// The strategy runs on the training thread right before the Learner writes its records, after
/// the epoch's last optimizer step, so the state written is that of the model saved.
pub struct PrunerCheckpointing<S> {
    inner: S,
    directory: PathBuf,
    ledger: Ledger,
}

impl<S> PrunerCheckpointing<S> {
    pub(crate) fn new(directory: &Path, inner: S, ledger: Ledger) -> Self {
        Self {
            inner,
            directory: directory.to_path_buf(),
            ledger,
        }
    }

    fn save(&self, epoch: usize) -> Result<(), CheckpointError> {
        let path = state_path(&self.directory, epoch);
        let Some(state) = self.ledger.state() else {
            return Ok(());
        };
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec(&state).map_err(|e| io(e.into()))?;
        write_atomic(&path, &json).map_err(io)
    }
}

impl<S: CheckpointingStrategy> CheckpointingStrategy for PrunerCheckpointing<S> {
    fn checkpointing(
        &mut self,
        epoch: usize,
        collector: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let actions = self.inner.checkpointing(epoch, collector);
        for action in &actions {
            match action {
                // Burn's own checkpointers stop training when a record cannot be written; the
                // pruner state is part of the checkpoint, so the same holds here.
                CheckpointingAction::Save => self
                    .save(epoch)
                    .unwrap_or_else(|e| panic!("texprune: cannot save the pruner state: {e}")),
                CheckpointingAction::Delete(old) => {
                    let _ = std::fs::remove_file(state_path(&self.directory, *old));
                }
            }
        }
        actions
    }
}

/// The pruner state [`PrunerCheckpointing`] saved for `epoch` in `directory`.
///
/// # Errors
/// [`CheckpointError::Io`] when the file cannot be read, [`CheckpointError::Corrupt`] when it is
/// not a pruner state.
pub fn load_pruner_state(directory: &Path, epoch: usize) -> Result<PrunerState, CheckpointError> {
    let path = state_path(directory, epoch);
    let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        path,
        reason: e.to_string(),
    })
}
