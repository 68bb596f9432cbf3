//! Training checkpoints: model, optimizer and pruner state, and the run's own metadata, in one
//! file written atomically.
//!
//! Layout: the magic `TXPCKPT1`, a little-endian `u64` header length, a JSON header
//! (`{ meta, pruner, model_bytes, optimizer_bytes }`), the model's Burn record, the optimizer's
//! Burn record. [`save`] writes a temporary file and renames it over the target, so a crash
//! leaves the previous checkpoint intact; [`load`] checks every length before using anything.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::report::write_atomic;
use crate::{Prunable, Pruner, PrunerState};

const MAGIC: &[u8; 8] = b"TXPCKPT1";

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a checkpoint, or is damaged.
    #[error("{}: not a valid texprune checkpoint: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record does not fit the model or optimizer it is loaded into.
    #[error("{}: {reason}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Header<T> {
    meta: T,
    pruner: PrunerState,
    model_bytes: u64,
    optimizer_bytes: u64,
}

/// A checkpoint read back: the metadata, the pruner state and the two records.
pub struct Checkpoint<T> {
    /// The run's metadata.
    pub meta: T,
    /// The pruner's state.
    pub pruner: PrunerState,
    path: PathBuf,
    model: Vec<u8>,
    optimizer: Vec<u8>,
}

/// Writes `model`, `optimizer`, the pruner's state and `meta` to `path`, atomically.
pub fn save<M: Prunable, T: Serialize>(
    path: &Path,
    meta: &T,
    model: &M,
    optimizer: &ModuleOptimizer,
    pruner: &Pruner,
) -> Result<(), CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    // Burn applies BatchNorm running-statistics updates lazily (on the next update or on
    // `valid()`); `valid()` flushes them into the state the model shares, so the record holds
    // the statistics of the last step.
    let _ = model.valid();
    let model_bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| corrupt(e.to_string()))?;
    let optimizer_bytes = optimizer.into_bytes().map_err(|e| corrupt(e.to_string()))?;
    let header = Header {
        meta,
        pruner: pruner.state(model).map_err(|e| corrupt(e.to_string()))?,
        model_bytes: model_bytes.len() as u64,
        optimizer_bytes: optimizer_bytes.len() as u64,
    };
    let header = serde_json::to_vec(&header).map_err(|e| corrupt(e.to_string()))?;
    let mut bytes =
        Vec::with_capacity(16 + header.len() + model_bytes.len() + optimizer_bytes.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&model_bytes);
    bytes.extend_from_slice(&optimizer_bytes);
    write_atomic(path, &bytes).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the checkpoint at `path`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Checkpoint<T>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: &str| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let header_len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()) as usize;
    let body = &bytes[16..];
    if header_len > body.len() {
        return Err(corrupt("truncated header"));
    }
    let header: Header<T> = serde_json::from_slice(&body[..header_len])
        .map_err(|e| corrupt(&format!("header: {e}")))?;
    let (m, o) = (header.model_bytes as usize, header.optimizer_bytes as usize);
    let records = &body[header_len..];
    if records.len() != m.saturating_add(o) {
        return Err(corrupt(&format!(
            "{} record bytes, the header says {}",
            records.len(),
            m.saturating_add(o)
        )));
    }
    Ok(Checkpoint {
        meta: header.meta,
        pruner: header.pruner,
        path: path.to_path_buf(),
        model: records[..m].to_vec(),
        optimizer: records[m..].to_vec(),
    })
}

impl<T> Checkpoint<T> {
    fn mismatch(&self, reason: impl ToString) -> CheckpointError {
        CheckpointError::Mismatch {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Loads the model record into `model` (a model of the same structure).
    pub fn model<M: Module>(&self, model: M) -> Result<M, CheckpointError> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.model.clone()))
            .map_err(|e| self.mismatch(e))?;
        model.try_load_record(record).map_err(|e| self.mismatch(e))
    }

    /// Loads the optimizer record into `optimizer`.
    pub fn optimizer(
        &self,
        optimizer: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, CheckpointError> {
        optimizer
            .from_bytes(Bytes::from_bytes_vec(self.optimizer.clone()))
            .map_err(|e| self.mismatch(e))
    }

    /// The pruner, restored for `model` (after [`Checkpoint::model`]).
    pub fn pruner<M: Prunable>(&self, model: &M) -> Result<Pruner, CheckpointError> {
        Pruner::from_state(&self.pruner, model).map_err(|e| self.mismatch(e))
    }
}
