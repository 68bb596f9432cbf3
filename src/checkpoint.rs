//! Training checkpoints: model, optimizer and pruner state, and the run's own metadata, in one
//! file written atomically.
//!
//! Layout: the magic `TXPCKPT1`, a little-endian `u64` header length, a JSON header
//! (`{ version, meta, pruner, model_bytes, optimizer_bytes }`), the model's Burn record, the
//! optimizer's Burn record, and a trailing little-endian `u64` FNV-1a hash of all the bytes before
//! it, so that any damage (a flipped bit in a weight included) is detected. [`save`] writes a temporary file, fsyncs it and renames it over the
//! target, so a crash or a kill leaves either the previous checkpoint or the new one; [`load`]
//! checks the version and every length before using anything.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Prunable, Pruner, PrunerState};

const MAGIC: &[u8; 8] = b"TXPCKPT1";

/// Version of the checkpoint layout written by [`save`]; [`load`] reads this version only.
pub const CHECKPOINT_VERSION: u32 = 1;

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
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
    /// The checkpoint was written in another format version.
    #[error("{}: checkpoint format version {found}, this build reads version {supported}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file (0 when it has none).
        found: u32,
        /// [`CHECKPOINT_VERSION`].
        supported: u32,
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
    version: u32,
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
///
/// # Errors
/// [`CheckpointError::Io`] when the file cannot be written, [`CheckpointError::Corrupt`] when the
/// model, the optimizer or the pruner state cannot be recorded.
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
        version: CHECKPOINT_VERSION,
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
    let checksum = fnv1a(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    write_atomic(path, &bytes).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the checkpoint at `path`.
///
/// # Errors
/// [`CheckpointError::Io`] when the file cannot be read, [`CheckpointError::Corrupt`] when it is
/// not a texprune checkpoint, [`CheckpointError::Version`] for another format version.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Checkpoint<T>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: &str| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let (content, trailer) = bytes.split_at(bytes.len() - 8);
    if fnv1a(content).to_le_bytes() != trailer {
        return Err(corrupt(
            "checksum mismatch: the file is damaged or truncated",
        ));
    }
    let header_len = u64::from_le_bytes(content[8..16].try_into().unwrap_or_default()) as usize;
    let body = &content[16..];
    if header_len > body.len() {
        return Err(corrupt("truncated header"));
    }
    #[derive(Deserialize)]
    struct Version {
        #[serde(default)]
        version: u32,
    }
    let version: Version = serde_json::from_slice(&body[..header_len])
        .map_err(|e| corrupt(&format!("header: {e}")))?;
    if version.version != CHECKPOINT_VERSION {
        return Err(CheckpointError::Version {
            path: path.to_path_buf(),
            found: version.version,
            supported: CHECKPOINT_VERSION,
        });
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

/// Writes `bytes` to `path` atomically: a temporary file of a unique name in the same folder
/// (`.<name>.<random>.tmp`, so that writers in several threads or processes never share one),
/// flushed to disk, then renamed over `path`. A crash leaves either the old file or the new one,
/// never a mix; of concurrent writers of one path, the last rename wins whole.
///
/// # Errors
/// The I/O error of creating, writing, flushing or renaming the temporary file (which is removed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // The mode `File::create` gives (0o666 less the umask), not the temporary file's 0o600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// FNV-1a, 64 bits: `h = (h ^ byte) · 0x100000001b3` from `0xcbf29ce484222325`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
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
    ///
    /// # Errors
    /// [`CheckpointError::Mismatch`] when the record does not fit `model`.
    pub fn model<M: Module>(&self, model: M) -> Result<M, CheckpointError> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.model.clone()))
            .map_err(|e| self.mismatch(e))?;
        model.try_load_record(record).map_err(|e| self.mismatch(e))
    }

    /// Loads the optimizer record into `optimizer`.
    ///
    /// # Errors
    /// [`CheckpointError::Mismatch`] when the record cannot be read.
    pub fn optimizer(
        &self,
        optimizer: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, CheckpointError> {
        optimizer
            .from_bytes(Bytes::from_bytes_vec(self.optimizer.clone()))
            .map_err(|e| self.mismatch(e))
    }

    /// The pruner, restored for `model` (after [`Checkpoint::model`]).
    ///
    /// # Errors
    /// [`CheckpointError::Mismatch`] with what [`Pruner::from_state`] refuses.
    pub fn pruner<M: Prunable>(&self, model: &M) -> Result<Pruner, CheckpointError> {
        Pruner::from_state(&self.pruner, model).map_err(|e| self.mismatch(e))
    }
}
