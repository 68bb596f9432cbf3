//! The IDX format of MNIST and Fashion-MNIST, gzip-compressed or not.
//!
//! Header: two zero bytes, a type byte (`0x08` = unsigned byte), the number of dimensions `d`,
//! then `d` big-endian `u32` sizes; then the data, row-major.

use std::io::{BufReader, Read, Seek, SeekFrom};
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

/// The largest IDX payload read, 4 GiB: a header that declares more is rejected before anything
/// is allocated (MNIST's training images are 47 MB).
pub const MAX_IDX_BYTES: usize = 1 << 32;

/// Reads an IDX file of unsigned bytes (gzip-compressed when it starts with `1f 8b`).
///
/// Memory is bounded by what the header declares (at most `MAX_IDX_BYTES`, 4 GiB), whatever the
/// file holds: a compressed file that inflates past its header's size is an error, not an
/// allocation.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read or inflated, [`DataError::BadMagic`] when it is
/// not an IDX file of unsigned bytes, [`DataError::Size`] when it is shorter than its header
/// says, [`DataError::Mismatch`] when it is longer or the header declares more than
/// `MAX_IDX_BYTES` (4 GiB).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut signature = [0u8; 2];
    let gz = file.read(&mut signature).map_err(io(path))? == 2 && signature == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let size = |expected: String, found: usize| DataError::Size {
        path: path.to_path_buf(),
        expected,
        found,
    };
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(io(path))?;
    if got < 4 || magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: if got == 4 {
                u32::from_be_bytes(magic)
            } else {
                0
            },
            expected: "00 00 08 d: an IDX file of unsigned bytes in d dimensions",
        });
    }
    let d = usize::from(magic[3]);
    let mut sizes = vec![0u8; 4 * d];
    let got = read_up_to(&mut reader, &mut sizes).map_err(io(path))?;
    if got < sizes.len() {
        return Err(size(
            format!("at least {} (the header of {d} dimensions)", 4 + 4 * d),
            4 + got,
        ));
    }
    let dims: Vec<usize> = sizes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| DataError::Mismatch {
            path: path.to_path_buf(),
            what: format!("the header declares {dims:?} values, more than {MAX_IDX_BYTES}"),
        })?;
    // Read one byte more than declared, to tell an exact file from a longer one.
    let mut data = Vec::new();
    reader
        .take(n as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io(path))?;
    let header = 4 + 4 * d;
    if data.len() < n {
        return Err(size(
            format!("{} (header + {dims:?} values)", header + n),
            header + data.len(),
        ));
    }
    if data.len() > n {
        return Err(DataError::Mismatch {
            path: path.to_path_buf(),
            what: format!(
                "longer than the {} bytes its header declares ({dims:?} values)",
                header + n
            ),
        });
    }
    Ok(IdxArray { dims, data })
}

/// Fills `buf` as far as the reader goes; the number of bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            k => filled += k,
        }
    }
    Ok(filled)
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
///
/// # Errors
/// What [`read_idx`] returns for either file, [`DataError::Mismatch`] when images and labels
/// differ in count or the images are not `[n, H, W]`, [`DataError::Label`] for a label past 9.
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
    if h == 0 || w == 0 {
        return Err(DataError::Mismatch {
            path: images_path,
            what: format!("images of {h}×{w} pixels"),
        });
    }
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
