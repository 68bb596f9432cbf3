//! Measuring a trained model: accuracy, latency, and the run report written next to it.

#[cfg(feature = "plots")]
use std::path::Path;
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use texprune_data::{DataError, ImageBatcher, ImageItem, SplitMix64};
use texprune_layer::{CostReport, Costed, ModelError};
use texprune_zoo::Classifier;

/// A measurement that cannot be made: the data cannot be read, or does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The data cannot be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The images do not fit the model.
    #[error(transparent)]
    Input(#[from] ModelError),
}

/// Top-1 accuracy and mean cross-entropy of `model` on `set`, in order, `batch_size` images at
/// a time.
///
/// # Errors
/// [`MeasureError::Data`] when an item cannot be read, [`MeasureError::Input`] when the images do
/// not fit `model`.
pub fn evaluate<M: Classifier>(
    model: &M,
    set: &impl Dataset<ImageItem, DataError>,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> Result<(f64, f64), MeasureError> {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let (mut correct, mut loss) = (0i64, 0.0f64);
    let mut rng = SplitMix64(0);
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let items = chunk
            .iter()
            .map(|&i| set.get(i))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = batcher.images(&items, &mut rng, device);
        model.check_input(batch.images.dims())?;
        let logits = model.logits(batch.images);
        let predicted = logits.clone().argmax(1).flatten::<1>(0, 1);
        let hits: i64 = predicted
            .equal(batch.labels.clone())
            .int()
            .sum()
            .into_scalar();
        let l: f64 = loss_fn.forward(logits, batch.labels).into_scalar();
        correct += hits;
        loss += l * chunk.len() as f64;
    }
    let n = set.len().max(1) as f64;
    Ok((correct as f64 / n, loss / n))
}

/// Top-1 accuracy of `model` on `set` (see [`evaluate`]).
///
/// # Errors
/// As [`evaluate`].
pub fn accuracy<M: Classifier>(
    model: &M,
    set: &impl Dataset<ImageItem, DataError>,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> Result<f64, MeasureError> {
    evaluate(model, set, batcher, batch_size, device).map(|(accuracy, _)| accuracy)
}

/// Median wall time of `runs` forward passes of `images` (after one warm-up), in milliseconds.
pub fn latency_ms<M: Classifier>(model: &M, images: &Tensor<4>, runs: usize) -> f64 {
    let forward = || {
        let _ = model.logits(images.clone()).into_data();
    };
    forward();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            forward();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// What a training run produced: the before/after numbers of the quickstart and the full recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Dataset and split trained on.
    pub dataset: String,
    /// The model trained (its name and configuration).
    pub model: String,
    /// Epochs trained.
    pub epochs: usize,
    /// Held-out accuracy of the masked model.
    pub accuracy_masked: f64,
    /// Held-out accuracy of the compact model.
    pub accuracy_compact: f64,
    /// Params of the dense model.
    pub params_dense: u64,
    /// Params of the compact model.
    pub params_compact: u64,
    /// FLOPs of the dense model (one image).
    pub flops_dense: u64,
    /// FLOPs of the compact model.
    pub flops_compact: u64,
    /// MACs of the dense model.
    pub macs_dense: u64,
    /// MACs of the compact model.
    pub macs_compact: u64,
    /// Median latency of the masked model on one evaluation batch.
    pub latency_masked_ms: f64,
    /// Median latency of the compact model on the same batch.
    pub latency_compact_ms: f64,
    /// Wall time of the whole run.
    pub wall_seconds: f64,
}

/// Where a trained model is measured.
pub struct Evaluation<'a, D> {
    /// Held-out images.
    pub test: &'a D,
    /// Their batcher (no augmentation).
    pub batcher: &'a ImageBatcher,
    /// Device of the inference models.
    pub device: &'a Device,
    /// `[height, width]` for the cost reports.
    pub input_size: [usize; 2],
    /// Images in the latency batch (the first of `test`).
    pub probe: usize,
    /// Timed runs per model.
    pub runs: usize,
}

impl<D: Dataset<ImageItem, DataError>> Evaluation<'_, D> {
    /// The first `n` held-out images (fewer when there are not as many), batched as the models
    /// read them.
    ///
    /// # Errors
    /// [`MeasureError::Data`] when an image cannot be read.
    pub fn first_images(&self, n: usize) -> Result<Tensor<4>, MeasureError> {
        let items = (0..self.test.len().min(n))
            .map(|i| self.test.get(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .batcher
            .images(&items, &mut SplitMix64(0), self.device)
            .images)
    }
}

impl RunReport {
    /// Measures the masked model against its compact form on `eval`: accuracy, cost, latency.
    /// `dataset`, `model`, `epochs` and `wall_seconds` are left for the caller to fill.
    ///
    /// # Errors
    /// As [`evaluate`], for either model; [`MeasureError::Input`] also when the test images do
    /// not fit one of them.
    pub fn measure<M, D>(
        masked: &M,
        compact: &M,
        eval: &Evaluation<D>,
    ) -> Result<(RunReport, CostReport, CostReport), MeasureError>
    where
        M: Classifier + Costed,
        D: Dataset<ImageItem, DataError>,
    {
        let (dense, small) = (masked.cost(eval.input_size), compact.cost(eval.input_size));
        let probe = eval.first_images(eval.probe)?;
        masked.check_input(probe.dims())?;
        compact.check_input(probe.dims())?;
        let report = RunReport {
            dataset: String::new(),
            model: String::new(),
            epochs: 0,
            accuracy_masked: accuracy(masked, eval.test, eval.batcher, 256, eval.device)?,
            accuracy_compact: accuracy(compact, eval.test, eval.batcher, 256, eval.device)?,
            params_dense: dense.params(),
            params_compact: small.params(),
            flops_dense: dense.flops(),
            flops_compact: small.flops(),
            macs_dense: dense.macs(),
            macs_compact: small.macs(),
            latency_masked_ms: latency_ms(masked, &probe, eval.runs),
            latency_compact_ms: latency_ms(compact, &probe, eval.runs),
            wall_seconds: 0.0,
        };
        Ok((report, dense, small))
    }

    /// Fraction of params removed.
    pub fn params_removed(&self) -> f64 {
        1.0 - self.params_compact as f64 / self.params_dense.max(1) as f64
    }

    /// Fraction of FLOPs removed.
    pub fn flops_removed(&self) -> f64 {
        1.0 - self.flops_compact as f64 / self.flops_dense.max(1) as f64
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use texprune_layer::human;
        writeln!(
            f,
            "{} on {}, {} epochs",
            self.model, self.dataset, self.epochs
        )?;
        writeln!(
            f,
            "{:<12} {:>12} {:>12} {:>9}",
            "", "masked", "compact", "change"
        )?;
        let pct =
            |a: f64, b: f64| format!("{:+.1} %", 100.0 * (b / a.max(f64::MIN_POSITIVE) - 1.0));
        writeln!(
            f,
            "{:<12} {:>11.2}% {:>11.2}% {:>9}",
            "accuracy",
            100.0 * self.accuracy_masked,
            100.0 * self.accuracy_compact,
            format!(
                "{:+.2} pt",
                100.0 * (self.accuracy_compact - self.accuracy_masked)
            )
        )?;
        for (name, a, b) in [
            ("params", self.params_dense, self.params_compact),
            ("FLOPs", self.flops_dense, self.flops_compact),
            ("MACs", self.macs_dense, self.macs_compact),
        ] {
            writeln!(
                f,
                "{name:<12} {:>12} {:>12} {:>9}",
                human(a),
                human(b),
                pct(a as f64, b as f64)
            )?;
        }
        write!(
            f,
            "{:<12} {:>10.1}ms {:>10.1}ms {:>9}",
            "latency",
            self.latency_masked_ms,
            self.latency_compact_ms,
            format!(
                "{:.2}×",
                self.latency_masked_ms / self.latency_compact_ms.max(1e-9)
            )
        )
    }
}

/// A Markdown page for a run: the before/after table, the per-layer table of the compact model
/// and the plots (`(caption, file name relative to the page)`).
pub fn markdown(
    title: &str,
    run: &RunReport,
    compact: &CostReport,
    plots: &[(&str, &str)],
) -> String {
    let mut page = format!(
        "# {title}\n\n{} on {}, {} epochs, {:.0} s\n\n",
        run.model, run.dataset, run.epochs, run.wall_seconds
    );
    page += "| | masked | compact |\n|---|---|---|\n";
    page += &format!(
        "| accuracy | {:.2} % | {:.2} % |\n",
        100.0 * run.accuracy_masked,
        100.0 * run.accuracy_compact
    );
    for (name, a, b) in [
        ("params", run.params_dense, run.params_compact),
        ("FLOPs", run.flops_dense, run.flops_compact),
        ("MACs", run.macs_dense, run.macs_compact),
    ] {
        page += &format!(
            "| {name} | {a} | {b} ({:+.1} %) |\n",
            100.0 * (b as f64 / a.max(1) as f64 - 1.0)
        );
    }
    page += &format!(
        "| latency | {:.1} ms | {:.1} ms |\n\n## Compact model, per layer\n\n",
        run.latency_masked_ms, run.latency_compact_ms
    );
    page += "| layer | kind | shape | params | FLOPs | MACs |\n|---|---|---|---|---|---|\n";
    for l in &compact.layers {
        page += &format!(
            "| {} | {:?} | {} | {} | {} | {} |\n",
            l.name, l.kind, l.shape, l.params, l.flops, l.macs
        );
    }
    for (caption, file) in plots {
        page += &format!("\n## {caption}\n\n![{caption}]({file})\n");
    }
    page
}

/// Writes a run's outputs into `out`, each file atomically: `report.json`,
/// `texture-history.json`, `texture-history.svg` and `report.md` (which shows `texture-start.svg`
/// and `texture-end.svg` too, drawn by the caller). Cargo feature `plots`.
///
/// # Errors
/// The I/O error of writing a file, or of drawing a plot (as [`std::io::ErrorKind::Other`]).
#[cfg(feature = "plots")]
pub fn write_run(
    out: &Path,
    title: &str,
    run: &RunReport,
    compact: &CostReport,
    history: &crate::history::TextureHistory,
) -> std::io::Result<()> {
    crate::checkpoint::write_atomic(&out.join("report.json"), pretty(run)?.as_bytes())?;
    crate::checkpoint::write_atomic(
        &out.join("texture-history.json"),
        pretty(history)?.as_bytes(),
    )?;
    history
        .plot(&out.join("texture-history.svg"))
        .map_err(std::io::Error::other)?;
    let page = markdown(
        title,
        run,
        compact,
        &[
            ("Texture at initialisation", "texture-start.svg"),
            ("Texture after training", "texture-end.svg"),
            ("Texture over training", "texture-history.svg"),
        ],
    );
    crate::checkpoint::write_atomic(&out.join("report.md"), page.as_bytes())
}

/// Pretty JSON of `value`, as an I/O result.
#[cfg(feature = "plots")]
fn pretty<T: Serialize>(value: &T) -> std::io::Result<String> {
    serde_json::to_string_pretty(value).map_err(std::io::Error::other)
}
