//! What the replicas of a [`PrunedModel`](super::PrunedModel) share: the latest pruner state
//! (for checkpoints) and their fingerprints of masks and skeletons, compared per step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::tensor::Transaction;
use texprune_layer::Prunable;

use crate::checkpoint::fnv1a;
use crate::{PruneError, Pruner, PrunerState};

/// Fingerprints kept, in steps, for replicas that lag behind.
const KEPT: usize = 64;

/// Shared by every clone of a [`PrunedModel`](super::PrunedModel), hence by all its replicas in
/// one process.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    inner: Arc<Mutex<Entries>>,
}

#[derive(Debug, Default)]
struct Entries {
    latest: Option<(Pruner, Vec<String>)>,
    fingerprints: BTreeMap<u64, u64>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `pruner` if it is at least as far as the one kept; the names of its layers come
    /// from `layers` the first time only (they are the model's, and do not change).
    pub(crate) fn record_state(
        &self,
        pruner: &Pruner,
        layers: impl FnOnce() -> Result<Vec<String>, PruneError>,
    ) -> Result<(), PruneError> {
        let mut entries = self.lock();
        let names = match entries.latest.take() {
            Some((kept, names)) if kept.step() > pruner.step() => {
                entries.latest = Some((kept, names));
                return Ok(());
            }
            Some((_, names)) => names,
            None => layers()?,
        };
        entries.latest = Some((pruner.clone(), names));
        Ok(())
    }

    /// The state of the furthest pruner recorded (reads the device).
    pub fn state(&self) -> Option<PrunerState> {
        let latest = self.lock().latest.clone();
        latest.map(|(pruner, layers)| pruner.state_of_layers(layers))
    }

    /// Records a replica's `fingerprint` after `step`; fails when another replica recorded a
    /// different one for the same step.
    ///
    /// # Errors
    /// [`PruneError::ReplicaDivergence`] when another replica recorded another fingerprint for
    /// `step`.
    pub fn check(&self, step: u64, fingerprint: u64) -> Result<(), PruneError> {
        let mut entries = self.lock();
        let expected = *entries.fingerprints.entry(step).or_insert(fingerprint);
        while entries.fingerprints.len() > KEPT {
            entries.fingerprints.pop_first();
        }
        match expected == fingerprint {
            true => Ok(()),
            false => Err(PruneError::ReplicaDivergence {
                step,
                expected,
                found: fingerprint,
            }),
        }
    }
}

/// FNV-1a over the bytes of every thresholded layer's stripe mask, filter mask and skeleton, in
/// layer order: equal on two replicas exactly when they hold the same masks and bit-identical
/// skeletons (up to hash collisions). Reads the device once.
///
/// # Errors
/// What [`Pruner::layers`] returns.
pub fn fingerprint<M: Prunable>(pruner: &Pruner, model: &M) -> Result<u64, PruneError> {
    let layers = pruner.layers(model)?;
    let mut tx = Transaction::default();
    for (index, layer) in layers.iter().enumerate().filter(|(_, l)| l.thresholded) {
        tx = tx.register(layer.skeleton.clone().detach());
        if let Some(masks) = pruner.container().masks(index) {
            tx = tx
                .register(masks.stripes.clone().int())
                .register(masks.alive.clone().int());
        }
    }
    let bytes: Vec<u8> = tx
        .execute()
        .iter()
        .flat_map(|data| data.as_bytes().to_vec())
        .collect();
    Ok(fnv1a(&bytes))
}
