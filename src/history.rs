//! The texture distribution and live stripes of every layer over training: recorded every few
//! steps (one device read per record), written as JSON and drawn as plots over time.

#[cfg(feature = "plots")]
use std::path::Path;

use serde::{Deserialize, Serialize};
use texprune_layer::Prunable;

use crate::layer_texture::{mean_std, textures};
#[cfg(feature = "plots")]
use crate::plots::{PlotError, plot_lines};

/// One record: per layer (in [`TextureHistory::layers`] order), the mean and standard deviation
/// of the filter similarity to the layer mean, and the live-stripe fraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextureRecord {
    /// Training step.
    pub step: u64,
    /// Mean similarity per layer.
    pub mean: Vec<f64>,
    /// Standard deviation of the similarity per layer.
    pub std: Vec<f64>,
    /// Live-stripe fraction per layer.
    pub live: Vec<f64>,
}

/// Texture statistics over training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextureHistory {
    /// Layer paths.
    pub layers: Vec<String>,
    /// The records, in step order.
    pub records: Vec<TextureRecord>,
}

impl TextureHistory {
    /// Records `model`'s layers at `step`.
    pub fn record<M: Prunable>(&mut self, step: u64, model: &M) {
        let layers = textures(model);
        if self.layers.is_empty() {
            self.layers = layers.iter().map(|l| l.name.clone()).collect();
        }
        let (mean, std): (Vec<f64>, Vec<f64>) =
            layers.iter().map(|l| mean_std(&l.similarity)).unzip();
        self.records.push(TextureRecord {
            step,
            mean,
            std,
            live: layers.iter().map(|l| l.live).collect(),
        });
    }

    /// Per layer, the values `f(record)[layer]` over the records.
    #[cfg(feature = "plots")]
    fn series(&self, f: impl Fn(&TextureRecord) -> &Vec<f64>) -> Vec<Vec<f64>> {
        (0..self.layers.len())
            .map(|i| self.records.iter().map(|r| f(r)[i]).collect())
            .collect()
    }

    /// Draws the mean similarity and the live-stripe fraction of every layer over the steps
    /// (cargo feature `plots`).
    ///
    /// # Errors
    /// [`PlotError`] when the chart cannot be drawn or the file written.
    #[cfg(feature = "plots")]
    pub fn plot(&self, path: &Path) -> Result<(), PlotError> {
        let steps: Vec<f64> = self.records.iter().map(|r| r.step as f64).collect();
        let mean = self.series(|r| &r.mean);
        let live = self.series(|r| &r.live);
        plot_lines(
            path,
            "texture over training",
            &self.layers,
            &steps,
            "step",
            &[
                ("mean filter similarity to the layer mean", &mean, 0.0..1.0),
                ("live-stripe fraction", &live, 0.0..1.05),
            ],
        )
    }
}
