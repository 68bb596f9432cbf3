//! CIFAR-10 and CIFAR-100 in their binary format.
//!
//! - CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` (train) and `test_batch.bin`; each record
//!   is 1 label byte then 3072 pixel bytes (`[3, 32, 32]`, red plane first).
//! - CIFAR-100: `train.bin` and `test.bin`; each record is a coarse label byte, a fine label
//!   byte, then 3072 pixel bytes.

use std::path::Path;

use crate::error::io;
use crate::{DataError, ImageSet};

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The test images.
    Test,
}

/// Which CIFAR-100 labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 fine classes.
    Fine,
    /// The 20 superclasses.
    Coarse,
}

const SHAPE: [usize; 3] = [3, 32, 32];
const PIXELS: usize = 3 * 32 * 32;

/// Reads one binary file: records of `label_bytes` label bytes then 3072 pixels; the label is
/// byte `label_at` of the record.
fn read_file(
    path: &Path,
    label_bytes: usize,
    label_at: usize,
    classes: usize,
    set: &mut ImageSet,
) -> Result<(), DataError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::Size {
            path: path.to_path_buf(),
            expected: format!("a positive multiple of {record} (one record per image)"),
            found: bytes.len(),
        });
    }
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = usize::from(r[label_at]);
        if label >= classes {
            return Err(DataError::Label {
                path: path.to_path_buf(),
                record: i,
                label,
                classes,
            });
        }
        set.labels.push(label);
        set.pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok(())
}

fn empty(name: String, classes: usize) -> ImageSet {
    ImageSet {
        name,
        shape: SHAPE,
        classes,
        pixels: Vec::new(),
        labels: Vec::new(),
    }
}

/// CIFAR-10 from the folder holding `data_batch_*.bin` and `test_batch.bin`.
///
/// # Errors
/// [`DataError::Io`] when a batch file cannot be read, [`DataError::Size`] when its length is
/// not a whole number of records, [`DataError::Label`] for a label outside the classes.
pub fn cifar10(dir: &Path, split: Split) -> Result<ImageSet, DataError> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let mut set = empty(format!("cifar10/{split:?}").to_lowercase(), 10);
    for f in files {
        read_file(&dir.join(f), 1, 0, 10, &mut set)?;
    }
    Ok(set)
}

/// CIFAR-100 from the folder holding `train.bin` and `test.bin`.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read, [`DataError::Size`] when its length is not a
/// whole number of records, [`DataError::Label`] for a label outside the classes.
pub fn cifar100(dir: &Path, split: Split, labels: Cifar100Labels) -> Result<ImageSet, DataError> {
    let file = match split {
        Split::Train => "train.bin",
        Split::Test => "test.bin",
    };
    let (at, classes) = match labels {
        Cifar100Labels::Coarse => (0, 20),
        Cifar100Labels::Fine => (1, 100),
    };
    let mut set = empty(format!("cifar100/{split:?}").to_lowercase(), classes);
    read_file(&dir.join(file), 2, at, classes, &mut set)?;
    Ok(set)
}
