//! An image folder: `root/<class>/<image>.{jpg,jpeg,png}`, classes in sorted order (the
//! ImageNet layout). Images are decoded when read, resized so the shorter side is `resize`, and
//! centre-cropped to `crop × crop`.

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use image::imageops::FilterType;

use crate::error::io;
use crate::{DataError, ImageItem};

/// A class-per-folder image dataset, decoded on demand.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// Class names (folder names), sorted; the label is the index.
    pub classes: Vec<String>,
    /// Every image with its label.
    pub items: Vec<(PathBuf, usize)>,
    /// Shorter side after resizing.
    pub resize: u32,
    /// Side of the centre crop.
    pub crop: u32,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    Ok(entries)
}

impl ImageFolder {
    /// Lists the images under `root` (nothing is decoded yet).
    ///
    /// # Errors
    /// [`DataError::Io`] when `root` or a class folder cannot be listed, [`DataError::Empty`] when
    /// it holds no images, [`DataError::Zero`] for a zero `resize` or `crop`.
    pub fn new(root: &Path, resize: u32, crop: u32) -> Result<Self, DataError> {
        if resize == 0 || crop == 0 {
            return Err(DataError::Zero {
                what: "the image resize and crop sizes",
            });
        }
        let mut classes = Vec::new();
        let mut items = Vec::new();
        for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let label = classes.len();
            classes.push(
                dir.file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            for file in sorted_entries(&dir)?.into_iter().filter(|p| is_image(p)) {
                items.push((file, label));
            }
        }
        if items.is_empty() {
            return Err(DataError::Empty {
                path: root.to_path_buf(),
            });
        }
        Ok(Self {
            classes,
            items,
            resize: resize.max(crop),
            crop,
        })
    }
}

/// The most memory one image may decode to: 32 MiB, about 11 megapixels in RGB. A header that
/// declares more (a damaged or hostile file, or a photo larger than training needs) is refused
/// with [`DataError::Image`] before anything that size is allocated; the decoders' own buffers
/// (a progressive JPEG keeps its coefficients, twice the pixels) stay under 64 MiB.
pub const MAX_DECODED_BYTES: u64 = 32 << 20;

/// Decodes `path` to RGB, resizes its shorter side to `resize` and centre-crops `crop × crop`.
///
/// The crop is cut from the decoded image first (the region that maps onto `crop × crop` after
/// the resize) and only that region is resized, so memory stays within the decoder's limit
/// ([`MAX_DECODED_BYTES`]) plus the crop, whatever the image's aspect ratio.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read, [`DataError::Image`] when it cannot be
/// decoded (or would decode to more than [`MAX_DECODED_BYTES`]), [`DataError::Zero`] for a zero
/// size.
pub fn load_image(path: &Path, resize: u32, crop: u32) -> Result<Vec<u8>, DataError> {
    if resize == 0 || crop == 0 {
        return Err(DataError::Zero {
            what: "the image resize and crop sizes",
        });
    }
    let image_error = |e: image::ImageError| DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(io(path))?
        .with_guessed_format()
        .map_err(io(path))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let decoded = reader.decode().map_err(image_error)?;
    let (w, h) = (decoded.width(), decoded.height());
    // Source pixels per output pixel; the crop covers `crop · step` source pixels per side.
    let step = w.min(h).max(1) as f64 / resize.max(crop) as f64;
    let side = |n: u32| ((crop as f64 * step).round() as u32).clamp(1, n.max(1));
    let (cw, ch) = (side(w), side(h));
    let rgb = decoded
        .crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch)
        .resize_exact(crop, crop, FilterType::Triangle)
        .to_rgb8();
    let plane = (crop * crop) as usize;
    let mut chw = vec![0u8; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = px[c];
        }
    }
    Ok(chw)
}

impl Dataset<ImageItem, DataError> for ImageFolder {
    fn get(&self, index: usize) -> Result<ImageItem, DataError> {
        let (path, label) = self.items.get(index).ok_or(DataError::Index {
            index,
            len: self.items.len(),
        })?;
        let c = self.crop as usize;
        Ok(ImageItem {
            pixels: load_image(path, self.resize, self.crop)?,
            shape: [3, c, c],
            label: *label,
        })
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}
