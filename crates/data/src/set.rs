//! An in-memory labelled image set, and the item every loader yields.

use burn::data::dataset::Dataset;

use crate::{DataError, SplitMix64};

/// One image: 8-bit pixels in `[C, H, W]` order, and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// Pixels, `C·H·W` bytes.
    pub pixels: Vec<u8>,
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// Class index.
    pub label: usize,
}

/// Images of one shape held in memory (CIFAR, MNIST-like sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// Name, for reports (`"fashion-mnist/t10k"`).
    pub name: String,
    /// `[C, H, W]` of every image.
    pub shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// All pixels, image after image.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<usize>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize], name: impl Into<String>) -> ImageSet {
        let size = self.image_size();
        let mut pixels = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * size..(i + 1) * size]);
        }
        ImageSet {
            name: name.into(),
            shape: self.shape,
            classes: self.classes,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Splits off a random `held_out` fraction: `(rest, held_out)`, shuffled with `seed`.
    pub fn split(&self, held_out: f64, seed: u64) -> (ImageSet, ImageSet) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        SplitMix64(seed).shuffle(&mut order);
        let n = ((self.len() as f64) * held_out.clamp(0.0, 1.0)).round() as usize;
        let (held, rest) = order.split_at(n);
        (
            self.select(rest, format!("{}/train", self.name)),
            self.select(held, format!("{}/held-out", self.name)),
        )
    }

    /// Every image zero-padded, centred, to `[channels, height, width]`, a one-channel image
    /// repeated into every channel (Fashion-MNIST's 1×28×28 as 3×32×32 for CIFAR models).
    ///
    /// # Errors
    /// [`DataError::Shape`] when `shape` is smaller than the images or has a channel count other
    /// than 1 or theirs.
    pub fn padded_to(&self, shape: [usize; 3]) -> Result<ImageSet, DataError> {
        let [c, h, w] = self.shape;
        let [tc, th, tw] = shape;
        if th < h || tw < w || (c != tc && c != 1) || c * h * w == 0 {
            return Err(DataError::Shape {
                from: self.shape,
                to: shape,
            });
        }
        let (top, left) = ((th - h) / 2, (tw - w) / 2);
        let size = self.image_size();
        let mut pixels = vec![0u8; self.len() * tc * th * tw];
        for (image, out) in self
            .pixels
            .chunks_exact(size)
            .zip(pixels.chunks_exact_mut(tc * th * tw))
        {
            for ch in 0..tc {
                let source = &image[(ch % c) * h * w..][..h * w];
                for (y, row) in source.chunks_exact(w).enumerate() {
                    let start = (ch * th + top + y) * tw + left;
                    out[start..start + w].copy_from_slice(row);
                }
            }
        }
        Ok(ImageSet {
            name: self.name.clone(),
            shape,
            classes: self.classes,
            pixels,
            labels: self.labels.clone(),
        })
    }

    /// The first `n` images.
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        self.select(&(0..n).collect::<Vec<_>>(), self.name.clone())
    }
}

impl Dataset<ImageItem, DataError> for ImageSet {
    fn get(&self, index: usize) -> Result<ImageItem, DataError> {
        let size = self.image_size();
        let label = *self.labels.get(index).ok_or(DataError::Index {
            index,
            len: self.len(),
        })?;
        Ok(ImageItem {
            pixels: self.pixels[index * size..(index + 1) * size].to_vec(),
            shape: self.shape,
            label,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_centres_and_repeats_grey_channels() {
        let set = ImageSet {
            name: "t".into(),
            shape: [1, 2, 2],
            classes: 2,
            pixels: vec![1, 2, 3, 4, 5, 6, 7, 8],
            labels: vec![0, 1],
        };
        let padded = set.padded_to([3, 4, 4]).unwrap();
        assert_eq!(padded.shape, [3, 4, 4]);
        assert_eq!(padded.labels, vec![0, 1]);
        let plane = [0, 0, 0, 0, 0, 5, 6, 0, 0, 7, 8, 0, 0, 0, 0, 0];
        assert_eq!(padded.pixels[48..64], plane);
        assert_eq!(padded.pixels[80..96], plane);
        assert!(matches!(
            set.padded_to([3, 1, 4]),
            Err(DataError::Shape { .. })
        ));
        assert!(padded.padded_to([2, 4, 4]).is_err());
    }
}
