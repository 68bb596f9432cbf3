//! Which stripes of a convolution are live, kernel position by kernel position: what the
//! stripe-wise kernel computes (METHOD §5). A stripe is filter `f`'s weights at one kernel
//! position `(i, j)` across every input channel; a compacted layer keeps the stripes whose
//! skeleton entry `S[f, i, j]` is non-zero.

use serde::{Deserialize, Serialize};

use crate::geometry::Geometry;

/// The live stripes at one kernel position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripePosition {
    /// Kernel position `(i, j)`.
    pub offset: [usize; 2],
    /// Output channels that keep their stripe at this position, ascending.
    pub filters: Vec<usize>,
}

/// Which stripes of a conv are live, position by position: what a stripe-wise conv computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeLayout {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel_size: [usize; 2],
    /// Whether the conv has a bias.
    pub bias: bool,
    /// The kernel positions that have live stripes, in row-major order.
    pub positions: Vec<StripePosition>,
}

impl StripeLayout {
    /// The non-zero entries of `skeleton [Cout, kh, kw]` (row-major) for a conv of weight shape
    /// `[Cout, Cin, kh, kw]`.
    ///
    /// # Panics
    /// If `skeleton` is shorter than `Cout · kh · kw`.
    #[must_use]
    pub fn from_skeleton([cout, cin, kh, kw]: [usize; 4], bias: bool, skeleton: &[f32]) -> Self {
        let positions = (0..kh * kw)
            .filter_map(|p| {
                let filters: Vec<usize> = (0..cout)
                    .filter(|&f| skeleton[f * kh * kw + p] != 0.0)
                    .collect();
                (!filters.is_empty()).then_some(StripePosition {
                    offset: [p / kw, p % kw],
                    filters,
                })
            })
            .collect();
        Self {
            in_channels: cin,
            out_channels: cout,
            kernel_size: [kh, kw],
            bias,
            positions,
        }
    }

    /// Number of live stripes.
    #[must_use]
    pub fn live_stripes(&self) -> usize {
        self.positions.iter().map(|p| p.filters.len()).sum()
    }

    /// The live-stripe mask `[out_channels, kh, kw]`, row-major.
    #[must_use]
    pub fn stripe_mask(&self) -> Vec<bool> {
        let [kh, kw] = self.kernel_size;
        let mut mask = vec![false; self.out_channels * kh * kw];
        for p in &self.positions {
            let [i, j] = p.offset;
            for &f in &p.filters {
                mask[(f * kh + i) * kw + j] = true;
            }
        }
        mask
    }

    /// The bounding box `[rows, columns]` of the kernel positions with live stripes; `None`
    /// when no stripe is live.
    #[must_use]
    pub fn live_box(&self) -> Option<[std::ops::Range<usize>; 2]> {
        let span = |axis: usize| {
            let along = self.positions.iter().map(|p| p.offset[axis]);
            Some(along.clone().min()?..along.max()? + 1)
        };
        Some([span(0)?, span(1)?])
    }

    /// The geometry of this conv over `input [N, Cin, H, W]` with `stride` and symmetric
    /// `padding`.
    #[must_use]
    pub fn geometry(&self, input: [usize; 4], stride: [usize; 2], padding: [usize; 2]) -> Geometry {
        let [kh, kw] = self.kernel_size;
        let weight = [self.out_channels, self.in_channels, kh, kw];
        Geometry::new(input, weight, stride, padding)
    }
}
