//! Per-layer sensitivity to pruning, and whether the filter texture distribution predicts it.
//!
//! For each thresholded layer alone, the DTC mask at a sweep of base thresholds `δ` (by the DTC
//! container's rule, [`Sweep::rule`]: DTC's own `|S[f,i,j]| > δ · mean(L) / L_f`, METHOD §4, by
//! default) is applied to that layer only and the model is evaluated: accuracy and loss against
//! the unpruned baseline. A layer's *sensitivity* is its mean accuracy drop over the sweep; its
//! *tolerated threshold* the largest `δ` whose drop stays within the tolerance. Beside it, the layer's texture statistics (mean and spread of the filter
//! similarity to the layer mean, METHOD §2), and across layers the Spearman rank correlation of
//! each statistic with the sensitivity.

use burn::data::dataset::Dataset;
use burn::tensor::Device;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use texprune_data::{DataError, ImageBatcher, ImageItem};
use texprune_dtc::{DtcConfig, LayerValues, ThresholdContainer, ThresholdRule};
use texprune_layer::{Prunable, PrunableLayer};
use texprune_zoo::Classifier;

use crate::layer_texture::{mean_std, textures};
use crate::masking::MaskMapper;
use crate::report::{MeasureError, evaluate};

/// What [`analyze`] sweeps: the base thresholds `δ`, the accuracy-drop tolerance, and the rule
/// that turns `δ` into a layer's mask (the one the pruner is configured with, `DtcConfig::rule`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Base thresholds `δ`, ascending.
    pub thresholds: Vec<f64>,
    /// Largest accuracy drop a tolerated threshold may cost.
    pub tolerance: f64,
    /// How `δ` becomes a mask.
    pub rule: ThresholdRule,
}

impl Sweep {
    /// `thresholds` and `tolerance` with DTC's per-filter rule.
    #[must_use]
    pub fn new(thresholds: Vec<f64>, tolerance: f64) -> Self {
        Self {
            thresholds,
            tolerance,
            rule: ThresholdRule::PerFilter,
        }
    }

    /// With another threshold rule.
    #[must_use]
    pub fn with_rule(mut self, rule: ThresholdRule) -> Self {
        self.rule = rule;
        self
    }
}

/// One point of a layer's sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Base threshold `δ`.
    pub threshold: f64,
    /// Live-stripe fraction of the layer at `δ`.
    pub live_fraction: f64,
    /// Accuracy with only this layer pruned.
    pub accuracy: f64,
    /// Mean cross-entropy with only this layer pruned.
    pub loss: f64,
}

/// Texture statistics of a layer (filter similarity to the layer mean, of `W ⊙ S`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextureSummary {
    /// Mean similarity.
    pub mean: f64,
    /// Standard deviation of the similarity.
    pub std: f64,
}

/// One layer's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSensitivity {
    /// Layer path.
    pub name: String,
    /// Texture statistics before pruning.
    pub texture: TextureSummary,
    /// The sweep.
    pub points: Vec<SweepPoint>,
    /// Mean accuracy drop over the sweep.
    pub sensitivity: f64,
    /// Largest threshold whose accuracy drop is within the tolerance (`None`: even the smallest
    /// exceeds it).
    pub tolerated_threshold: Option<f64>,
}

/// The analysis of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityReport {
    /// Accuracy of the model as given.
    pub baseline_accuracy: f64,
    /// Its mean cross-entropy.
    pub baseline_loss: f64,
    /// Accuracy-drop tolerance.
    pub tolerance: f64,
    /// Per layer, in forward order.
    pub layers: Vec<LayerSensitivity>,
    /// Spearman correlation of each texture statistic with the sensitivity, across layers.
    pub correlations: Vec<(String, f64)>,
}

/// Average ranks (ties share the mean rank).
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            ranks[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation: the Pearson correlation of the ranks (NaN when either side is
/// constant).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Sweeps every thresholded layer of `model` alone over `sweep`'s thresholds on `set`, each
/// mask made by the DTC container with `sweep.rule`, layers in parallel (rayon). `progress` is
/// called after each layer with its name.
///
/// # Errors
/// As [`crate::report::evaluate`], on the held-out set, for any point of the sweep.
pub fn analyze<M, D>(
    model: &M,
    set: &D,
    batcher: &ImageBatcher,
    device: &Device,
    sweep: &Sweep,
    progress: impl Fn(&str) + Sync,
) -> Result<SensitivityReport, MeasureError>
where
    M: Prunable + Classifier + Sync,
    D: Dataset<ImageItem, DataError>,
{
    let (baseline_accuracy, baseline_loss) = evaluate(model, set, batcher, 256, device)?;
    let textures = textures(model);
    let candidates: Vec<PrunableLayer> = model
        .collect_prunable()
        .into_vec()
        .into_iter()
        .filter(|l| l.thresholded)
        .collect();
    let layers = candidates
        .par_iter()
        .map(|layer| -> Result<LayerSensitivity, MeasureError> {
            let (mean, std) = textures
                .iter()
                .find(|t| t.name == layer.name)
                .map_or((f64::NAN, f64::NAN), |t| mean_std(&t.similarity));
            // A container of its own per layer: no mask in force, so each point is the rule's
            // mask at that δ alone.
            let dtc = ThresholdContainer::new(DtcConfig::new().with_rule(sweep.rule))
                .expect("the default DTC configuration is valid");
            let mut points = Vec::with_capacity(sweep.thresholds.len());
            for &threshold in &sweep.thresholds {
                let values =
                    LayerValues::new(layer.skeleton.clone()).with_weight(layer.weight.clone());
                let mask = dtc.preview(0, values, threshold).stripes;
                let live: i64 = mask.clone().int().sum().into_scalar();
                let live_fraction = live as f64 / mask.dims().iter().product::<usize>() as f64;
                let mut mapper = MaskMapper::default();
                mapper.insert_stripes(layer, mask);
                let pruned = model.clone().map(&mut mapper);
                let (accuracy, loss) = evaluate(&pruned, set, batcher, 256, device)?;
                points.push(SweepPoint {
                    threshold,
                    live_fraction,
                    accuracy,
                    loss,
                });
            }
            let drops: Vec<f64> = points
                .iter()
                .map(|p| baseline_accuracy - p.accuracy)
                .collect();
            progress(&layer.name);
            Ok(LayerSensitivity {
                name: layer.name.clone(),
                texture: TextureSummary { mean, std },
                sensitivity: drops.iter().sum::<f64>() / drops.len().max(1) as f64,
                tolerated_threshold: points
                    .iter()
                    .zip(&drops)
                    .take_while(|(_, d)| **d <= sweep.tolerance)
                    .last()
                    .map(|(p, _)| p.threshold),
                points,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sensitivity: Vec<f64> = layers.iter().map(|l| l.sensitivity).collect();
    let stat = |f: fn(&TextureSummary) -> f64| -> Vec<f64> {
        layers.iter().map(|l| f(&l.texture)).collect()
    };
    let correlations = vec![
        (
            "texture mean".to_string(),
            spearman(&stat(|t| t.mean), &sensitivity),
        ),
        (
            "texture std".to_string(),
            spearman(&stat(|t| t.std), &sensitivity),
        ),
    ];
    Ok(SensitivityReport {
        baseline_accuracy,
        baseline_loss,
        tolerance: sweep.tolerance,
        layers,
        correlations,
    })
}

impl SensitivityReport {
    /// Per-layer multipliers of δ that give each layer a share of the budget by its measured
    /// sensitivity, for [`crate::PrunerConfig::layer_scales`]:
    /// `s_l = clamp(mean_k(σ_k) / σ_l, 1/4, 4)` with `σ = max(sensitivity, 0)`, so a layer twice
    /// as sensitive as the average is thresholded at half the base δ (and a layer that loses
    /// nothing at 4×). All 1 when no layer is sensitive.
    pub fn layer_scales(&self) -> Vec<(String, f64)> {
        let sigma: Vec<f64> = self.layers.iter().map(|l| l.sensitivity.max(0.0)).collect();
        let mean = sigma.iter().sum::<f64>() / sigma.len().max(1) as f64;
        self.layers
            .iter()
            .zip(&sigma)
            .map(|(l, &s)| {
                let scale = match (mean > 0.0, s > 0.0) {
                    (false, _) => 1.0,
                    (true, false) => 4.0,
                    (true, true) => (mean / s).clamp(0.25, 4.0),
                };
                (l.name.clone(), scale)
            })
            .collect()
    }

    /// Draws, per layer, the accuracy and the live-stripe fraction against the threshold (cargo
    /// feature `plots`).
    ///
    /// # Errors
    /// [`PlotError`](crate::plots::PlotError) when the chart cannot be drawn or the file written.
    #[cfg(feature = "plots")]
    pub fn plot(&self, path: &std::path::Path) -> Result<(), crate::plots::PlotError> {
        let names: Vec<String> = self.layers.iter().map(|l| l.name.clone()).collect();
        let xs: Vec<f64> = self
            .layers
            .first()
            .map(|l| l.points.iter().map(|p| p.threshold).collect())
            .unwrap_or_default();
        let series = |f: fn(&SweepPoint) -> f64| -> Vec<Vec<f64>> {
            self.layers
                .iter()
                .map(|l| l.points.iter().map(f).collect())
                .collect()
        };
        let (accuracy, live) = (series(|p| p.accuracy), series(|p| p.live_fraction));
        crate::plots::plot_lines(
            path,
            "accuracy with one layer pruned",
            &names,
            &xs,
            "DTC base threshold δ",
            &[
                ("held-out accuracy", &accuracy, 0.0..1.0),
                ("live-stripe fraction of the pruned layer", &live, 0.0..1.05),
            ],
        )
    }
}

impl std::fmt::Display for SensitivityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "baseline accuracy {:.2} %, loss {:.4}; tolerance {:.1} pt",
            100.0 * self.baseline_accuracy,
            self.baseline_loss,
            100.0 * self.tolerance
        )?;
        writeln!(
            f,
            "| layer | texture mean | texture std | sensitivity (pt) | tolerated δ | accuracy at each δ |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        for l in &self.layers {
            let sweep: Vec<String> = l
                .points
                .iter()
                .map(|p| format!("{}: {:.1} %", p.threshold, 100.0 * p.accuracy))
                .collect();
            writeln!(
                f,
                "| {} | {:.4} | {:.4} | {:.2} | {} | {} |",
                l.name,
                l.texture.mean,
                l.texture.std,
                100.0 * l.sensitivity,
                l.tolerated_threshold
                    .map_or("none".to_string(), |t| t.to_string()),
                sweep.join(", ")
            )?;
        }
        for (stat, rho) in &self.correlations {
            writeln!(f, "Spearman ρ({stat}, sensitivity) = {rho:.3}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_reversed_and_tied_data() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 35.0, 90.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0, 2.0]), [2.5, 0.0, 2.5, 1.0]);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    fn report(sensitivities: &[f64]) -> SensitivityReport {
        SensitivityReport {
            baseline_accuracy: 0.9,
            baseline_loss: 0.3,
            tolerance: 0.01,
            layers: sensitivities
                .iter()
                .enumerate()
                .map(|(i, &sensitivity)| LayerSensitivity {
                    name: format!("conv{i}"),
                    texture: TextureSummary {
                        mean: 0.5,
                        std: 0.1,
                    },
                    points: Vec::new(),
                    sensitivity,
                    tolerated_threshold: None,
                })
                .collect(),
            correlations: Vec::new(),
        }
    }

    #[test]
    fn layer_scales_spare_the_sensitive_layers() {
        // Mean σ = 0.2 (the negative one counts as 0): 0.2/0.6, 0.2/0.2, clamp(0.2/0.01), 4, 4.
        let scales = report(&[0.6, 0.2, 0.01, 0.19, -0.05]).layer_scales();
        let values: Vec<f64> = scales.iter().map(|(_, s)| *s).collect();
        let expected = [1.0 / 3.0, 1.0, 4.0, 0.2 / 0.19, 4.0];
        assert!(
            values
                .iter()
                .zip(expected)
                .all(|(v, e)| (v - e).abs() < 1e-12),
            "{values:?}"
        );
        assert_eq!(scales[0].0, "conv0");
        let flat = report(&[0.0, -0.1]).layer_scales();
        assert!(flat.iter().all(|(_, s)| *s == 1.0));
    }
}
