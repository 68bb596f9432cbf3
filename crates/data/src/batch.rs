//! From images to tensors: epoch order, augmentation (pad + random crop + horizontal flip) and
//! per-channel normalisation (METHOD §7).

use std::sync::Mutex;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::{ImageItem, SplitMix64};

/// Per-channel `(x / 255 − mean) / std`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// Mean of each channel, in `[0, 1]` units.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel.
    pub std: Vec<f32>,
}

impl Normalization {
    /// The reference's CIFAR statistics.
    pub fn cifar() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2023, 0.1994, 0.2010],
        }
    }

    /// Fashion-MNIST training-set statistics.
    pub fn fashion_mnist() -> Self {
        Self {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// The usual ImageNet statistics.
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }
}

/// Training augmentation: zero-pad by `pad`, crop back to the original size at a random offset,
/// flip horizontally with probability ½ when `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augmentation {
    /// Padding on each side.
    pub pad: usize,
    /// Random horizontal flip.
    pub flip: bool,
}

impl Augmentation {
    /// The reference's CIFAR augmentation: pad 4, random 32×32 crop, horizontal flip.
    pub fn cifar() -> Self {
        Self { pad: 4, flip: true }
    }

    /// Applies the augmentation to `[C, H, W]` pixels.
    pub fn apply(&self, pixels: &[u8], [c, h, w]: [usize; 3], rng: &mut SplitMix64) -> Vec<u8> {
        let dy = rng.below(2 * self.pad + 1) as isize - self.pad as isize;
        let dx = rng.below(2 * self.pad + 1) as isize - self.pad as isize;
        let flip = self.flip && rng.chance(0.5);
        let mut out = vec![0u8; c * h * w];
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    if sx >= 0 && sx < w as isize {
                        out[(ch * h + y) * w + x] =
                            pixels[(ch * h + sy as usize) * w + sx as usize];
                    }
                }
            }
        }
        out
    }
}

/// A batch of images `[B, C, H, W]` and labels `[B]`.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Normalised images.
    pub images: Tensor<4>,
    /// Class indices.
    pub labels: Tensor<1, Int>,
}

/// Turns items into a normalised (and, for training, augmented) batch.
#[derive(Debug)]
pub struct ImageBatcher {
    /// Per-channel mean and standard deviation subtracted and divided out.
    pub normalization: Normalization,
    /// Augmentation (training only).
    pub augmentation: Option<Augmentation>,
    rng: Mutex<SplitMix64>,
}

impl ImageBatcher {
    /// A batcher; `seed` drives the augmentation when it is used through Burn's [`Batcher`].
    pub fn new(
        normalization: Normalization,
        augmentation: Option<Augmentation>,
        seed: u64,
    ) -> Self {
        Self {
            normalization,
            augmentation,
            rng: Mutex::new(SplitMix64(seed)),
        }
    }

    /// The batch of `items`, augmented with `rng` (when augmentation is on).
    pub fn images(&self, items: &[ImageItem], rng: &mut SplitMix64, device: &Device) -> ImageBatch {
        let shape = items.first().map_or([0, 0, 0], |i| i.shape);
        let [c, h, w] = shape;
        let plane = h * w;
        let mut values = Vec::with_capacity(items.len() * c * plane);
        for item in items {
            let pixels = match &self.augmentation {
                Some(a) => a.apply(&item.pixels, shape, rng),
                None => item.pixels.clone(),
            };
            for (ch, chunk) in pixels.chunks(plane).enumerate() {
                let mean = self.normalization.mean.get(ch).copied().unwrap_or(0.0);
                let std = self.normalization.std.get(ch).copied().unwrap_or(1.0);
                values.extend(chunk.iter().map(|&p| (f32::from(p) / 255.0 - mean) / std));
            }
        }
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        ImageBatch {
            images: Tensor::from_data(TensorData::new(values, [items.len(), c, h, w]), device),
            labels: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
        }
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let mut rng = match self.rng.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.images(&items, &mut rng, device)
    }
}

/// The order in which epoch `epoch` visits `len` items: a shuffle seeded by `(seed, epoch)`, so a
/// run resumed at any epoch sees the same order.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    SplitMix64(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407)).shuffle(&mut order);
    order
}

/// The generator for batch `batch` of epoch `epoch`: augmentation depends only on the position in
/// training, not on what ran before.
pub fn batch_rng(seed: u64, epoch: usize, batch: usize) -> SplitMix64 {
    let mut rng = SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B);
    rng.0 ^= (epoch as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25);
    rng.0 ^= (batch as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    rng
}
