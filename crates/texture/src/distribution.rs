//! Plain-number summary of a texture distribution, for reports.

use serde::{Deserialize, Serialize};

/// Why a [`Distribution`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistributionError {
    /// No values were given.
    #[error("a distribution needs at least one value, got none")]
    Empty,
    /// A value was NaN or infinite.
    #[error("value {index} is not finite ({value})")]
    NotFinite {
        /// Position of the value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The histogram needs at least one bin over a non-empty range.
    #[error("histogram needs bins ≥ 1 and lo < hi, got {bins} bins over [{lo}, {hi}]")]
    BadHistogram {
        /// Requested bins.
        bins: usize,
        /// Lower edge.
        lo: f64,
        /// Upper edge.
        hi: f64,
    },
}

/// Count, moments, quantiles and histogram of a set of values (for example the per-filter
/// similarities of one layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Number of values.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation `sqrt(Σ (x - mean)² / n)`.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Quantiles at 10, 25, 50, 75 and 90 %, by linear interpolation between order statistics.
    pub quantiles: [f64; 5],
    /// Lower and upper edge of the histogram.
    pub range: (f64, f64),
    /// Counts per equal-width bin over `range`; values outside are clamped into the end bins.
    pub histogram: Vec<usize>,
}

/// The probabilities of [`Distribution::quantiles`].
pub const QUANTILE_LEVELS: [f64; 5] = [0.10, 0.25, 0.50, 0.75, 0.90];

impl Distribution {
    /// Summarises `values` with a histogram of `bins` bins over `[lo, hi]` (similarities live in
    /// `[0, 1]`).
    ///
    /// # Errors
    /// [`DistributionError::Empty`] for no values, [`DistributionError::NotFinite`] for a NaN or
    /// infinite value, [`DistributionError::BadHistogram`] for `bins = 0` or `lo ≥ hi`.
    pub fn new(values: &[f64], bins: usize, lo: f64, hi: f64) -> Result<Self, DistributionError> {
        if values.is_empty() {
            return Err(DistributionError::Empty);
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(DistributionError::NotFinite { index, value });
        }
        if bins == 0 || lo.partial_cmp(&hi) != Some(core::cmp::Ordering::Less) {
            return Err(DistributionError::BadHistogram { bins, lo, hi });
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let std = (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let quantile = |p: f64| {
            let pos = p * (n - 1) as f64;
            let (i, frac) = (pos.floor() as usize, pos.fract());
            let next = sorted[(i + 1).min(n - 1)];
            sorted[i] + frac * (next - sorted[i])
        };
        let mut histogram = vec![0; bins];
        for v in &sorted {
            let bin = ((v - lo) / (hi - lo) * bins as f64).floor();
            histogram[(bin.max(0.0) as usize).min(bins - 1)] += 1;
        }
        Ok(Self {
            count: n,
            mean,
            std,
            min: sorted[0],
            max: sorted[n - 1],
            quantiles: QUANTILE_LEVELS.map(quantile),
            range: (lo, hi),
            histogram,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_five_values() {
        // 0, .25, .5, .75, 1: mean .5, population variance .125; median .5; q10 at 0.4 · (1/4).
        let d = Distribution::new(&[1.0, 0.25, 0.0, 0.75, 0.5], 4, 0.0, 1.0).unwrap();
        assert_eq!(d.count, 5);
        assert_eq!(d.mean, 0.5);
        assert!((d.std - 0.125f64.sqrt()).abs() < 1e-15);
        assert_eq!((d.min, d.max), (0.0, 1.0));
        assert_eq!(d.quantiles, [0.1, 0.25, 0.5, 0.75, 0.9]);
        // bins [0,.25) [.25,.5) [.5,.75) [.75,1]: 1.0 is clamped into the last bin.
        assert_eq!(d.histogram, vec![1, 1, 1, 2]);
    }

    #[test]
    fn rejects_empty_nan_and_bad_bins() {
        assert_eq!(
            Distribution::new(&[], 4, 0.0, 1.0),
            Err(DistributionError::Empty)
        );
        assert!(matches!(
            Distribution::new(&[0.1, f64::NAN], 4, 0.0, 1.0),
            Err(DistributionError::NotFinite { index: 1, .. })
        ));
        assert!(Distribution::new(&[0.1], 0, 0.0, 1.0).is_err());
        assert!(Distribution::new(&[0.1], 3, 1.0, 1.0).is_err());
    }
}
