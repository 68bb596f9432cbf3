//! Errors of reading datasets.

use std::path::{Path, PathBuf};

/// A dataset file that cannot be read, with the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not start with the format's magic number.
    #[error("{}: bad magic number {found:#010x} ({expected})", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes.
        found: u32,
        /// What was expected.
        expected: &'static str,
    },
    /// The file is shorter or longer than its header or format says.
    #[error("{}: {found} bytes, expected {expected}", path.display())]
    Size {
        /// The file.
        path: PathBuf,
        /// Bytes expected.
        expected: String,
        /// Bytes found.
        found: usize,
    },
    /// A label is outside the class range.
    #[error("{}: record {record} has label {label}, the dataset has {classes} classes", path.display())]
    Label {
        /// The file.
        path: PathBuf,
        /// Index of the record.
        record: usize,
        /// The label.
        label: usize,
        /// Number of classes.
        classes: usize,
    },
    /// Images and labels do not match.
    #[error("{}: {what}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not match.
        what: String,
    },
    /// An image cannot be decoded.
    #[error("{}: cannot decode image: {message}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A dataset has no items.
    #[error("{}: no images found", path.display())]
    Empty {
        /// The folder or file.
        path: PathBuf,
    },
    /// A size that must be positive is zero.
    #[error("{what} must be ≥ 1, got 0")]
    Zero {
        /// Which size.
        what: &'static str,
    },
    /// An index past the end of a dataset.
    #[error("index {index} out of range for a dataset of {len} items")]
    Index {
        /// The index.
        index: usize,
        /// The dataset's length.
        len: usize,
    },
    /// Images cannot be padded to a shape (smaller, or other channels than 1 or the same).
    #[error("cannot pad [C, H, W] = {from:?} images to {to:?}")]
    Shape {
        /// The images' shape.
        from: [usize; 3],
        /// The shape asked for.
        to: [usize; 3],
    },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}
