//! What the training examples share: the SGD of the recipes, one progress bar per epoch, the
//! epoch's batches, and the end of a run (compact, measure, write the report).

use std::error::Error;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use texprune::burn::data::dataset::Dataset;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::optim::{ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use texprune::burn::tensor::Device;
use texprune::data::{DataError, ImageBatch, ImageBatcher, ImageItem, batch_rng, epoch_order};
use texprune::history::TextureHistory;
use texprune::plots::plot_texture;
use texprune::report::{Evaluation, RunReport};
use texprune::{Classifier, CostReport, Costed, Prunable, Pruner};

/// SGD with `momentum` (no dampening) and L2 weight decay `weight_decay` (none at 0), as in the
/// reference's recipes.
pub fn sgd(momentum: f64, weight_decay: f64) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(momentum)
                .with_dampening(0.0),
        ))
        .with_weight_decay(
            (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
        )
        .init()
}

/// The training batches of a set: each epoch a shuffle seeded by `(seed, epoch)` cut into
/// batches of `batch` images, augmented by the batcher with a stream seeded by
/// `(seed, epoch, batch index)`, so a run resumed at any batch sees the same images.
pub struct Batches<'a, D> {
    set: &'a D,
    batcher: &'a ImageBatcher,
    batch: usize,
    seed: u64,
}

impl<'a, D: Dataset<ImageItem, DataError>> Batches<'a, D> {
    /// Batches of `batch` images of `set`.
    pub fn new(set: &'a D, batcher: &'a ImageBatcher, batch: usize, seed: u64) -> Self {
        Self {
            set,
            batcher,
            batch,
            seed,
        }
    }

    /// Batches per epoch.
    pub fn per_epoch(&self) -> usize {
        self.set.len().div_ceil(self.batch)
    }

    /// The batches of `epoch` from batch `skip` on, on `device`, with their index.
    pub fn epoch<'b>(
        &'b self,
        epoch: usize,
        skip: usize,
        device: &'b Device,
    ) -> impl Iterator<Item = Result<(usize, ImageBatch), DataError>> + 'b {
        let order = epoch_order(self.set.len(), self.seed, epoch);
        (skip..self.per_epoch()).map(move |b| {
            let chunk = &order[b * self.batch..((b + 1) * self.batch).min(order.len())];
            let items = chunk
                .iter()
                .map(|&i| self.set.get(i))
                .collect::<Result<Vec<_>, _>>()?;
            let mut rng = batch_rng(self.seed, epoch, b);
            Ok((b, self.batcher.images(&items, &mut rng, device)))
        })
    }
}

/// A progress bar for epoch `epoch` (0-based) of `epochs`, `steps` long.
///
/// # Errors
/// None in practice: the template is fixed (indicatif checks it).
pub fn epoch_bar(epoch: usize, epochs: usize, steps: usize) -> Result<ProgressBar, Box<dyn Error>> {
    let style = ProgressStyle::with_template(
        "epoch {prefix} {bar:30} {pos}/{len} {elapsed_precise} {msg}",
    )?;
    Ok(ProgressBar::new(steps as u64)
        .with_style(style)
        .with_prefix(format!("{}/{epochs}", epoch + 1)))
}

/// The start of a training run: creates `out`, draws `texture-start.svg` of `model` into it, and
/// returns the texture history with its first record (step 0).
///
/// # Errors
/// The folder or the plot cannot be written.
pub fn begin<M: Prunable>(model: &M, out: &Path) -> Result<TextureHistory, Box<dyn Error>> {
    std::fs::create_dir_all(out)?;
    plot_texture(
        model,
        &out.join("texture-start.svg"),
        "texture at initialisation",
    )?;
    let mut history = TextureHistory::default();
    history.record(0, model);
    Ok(history)
}

/// The end of a training run: the trained (masked) model for inference, its compact form, and
/// both measured on the held-out set.
pub struct Finished<M> {
    /// The trained model, masked, for inference.
    pub masked: M,
    /// The compact model.
    pub compact: M,
    /// Accuracy, cost and latency of both (dataset, model, epochs and wall time left empty).
    pub report: RunReport,
    /// Cost of the masked model.
    pub dense_cost: CostReport,
    /// Cost of the compact model, per layer.
    pub compact_cost: CostReport,
}

/// Draws `texture-end.svg` of `model` into `out`, compacts it under `pruner`'s masks and
/// measures both on `eval`.
///
/// # Errors
/// A plot that cannot be written, a model that cannot be compacted or measured.
pub fn finish<M, D>(
    model: &M,
    pruner: &Pruner,
    eval: &Evaluation<D>,
    out: &Path,
) -> Result<Finished<M>, Box<dyn Error>>
where
    M: Prunable + Classifier + Costed,
    D: Dataset<ImageItem, DataError>,
{
    plot_texture(
        model,
        &out.join("texture-end.svg"),
        "texture after training",
    )?;
    let masked = model.valid();
    let compact = pruner.compact(&masked, eval.first_images(8)?, M::logits)?;
    let (report, dense_cost, compact_cost) = RunReport::measure(&masked, &compact, eval)?;
    Ok(Finished {
        masked,
        compact,
        report,
        dense_cost,
        compact_cost,
    })
}
