//! The IDX format of MNIST and Fashion-MNIST, gzip-compressed or not.
//!
//! Header: two zero bytes, a type byte (`0x08` = unsigned byte), the number of dimensions `d`,
//! then `d` big-endian `u32` sizes; then the data, row-major.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cifar::Split;
use crate::error::io;
use crate::{DataError, ImageSet};

/// An IDX array of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of the dimensions.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (gzip-compressed when it starts with `1f 8b`).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw = std::fs::read(path).map_err(io(path))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io(path))?;
        out
    } else {
        raw
    };
    let magic = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: if bytes.len() >= 4 { magic(&bytes) } else { 0 },
            expected: "00 00 08 d: an IDX file of unsigned bytes in d dimensions",
        });
    }
    let d = usize::from(bytes[3]);
    let header = 4 + 4 * d;
    if bytes.len() < header {
        return Err(DataError::Size {
            path: path.to_path_buf(),
            expected: format!("at least {header} (the header of {d} dimensions)"),
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = (0..d)
        .map(|i| magic(&bytes[4 + 4 * i..]) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(DataError::Size {
            path: path.to_path_buf(),
            expected: format!("{} (header + {dims:?} values)", header + n),
            found: bytes.len(),
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// `name` or `name.gz` in `dir`, whichever exists (the plain name if neither).
fn find(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if !plain.exists() && gz.exists() {
        gz
    } else {
        plain
    }
}

/// MNIST or Fashion-MNIST from the folder holding `{train,t10k}-{images-idx3,labels-idx1}-ubyte`
/// (each possibly `.gz`).
pub fn mnist(dir: &Path, split: Split) -> Result<ImageSet, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"));
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"));
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    let [n, h, w] = images.dims[..] else {
        return Err(DataError::Mismatch {
            path: images_path,
            what: format!("images must have 3 dimensions, found {:?}", images.dims),
        });
    };
    if labels.dims != [n] {
        return Err(DataError::Mismatch {
            path: labels_path,
            what: format!("{:?} labels for {n} images", labels.dims),
        });
    }
    let labels: Vec<usize> = labels.data.iter().map(|&l| usize::from(l)).collect();
    if let Some((record, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= 10) {
        return Err(DataError::Label {
            path: labels_path,
            record,
            label,
            classes: 10,
        });
    }
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mnist".into());
    Ok(ImageSet {
        name: format!("{name}/{prefix}"),
        shape: [1, h, w],
        classes: 10,
        pixels: images.data,
        labels,
    })
}
