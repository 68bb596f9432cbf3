//! CDP + DTC under burn-train's Learner, on one device or several: the same pruner, whichever
//! strategy Burn runs.
//!
//! ```text
//! cargo run --release --example train_ddp                                # 2 CPU workers
//! cargo run --release --example train_ddp -- --strategy single
//! cargo run --release --features cuda --example train_ddp -- --backend cuda --devices 4 --strategy ddp
//! cargo run --release --features cuda --example train_ddp -- --backend cuda --devices 4 --strategy multi
//! ```
//!
//! Trains on the repository's Fashion-MNIST (the first `--items` test images; the last 1,000
//! validate) with burn-train's `SupervisedTraining`: `single` (one device), `multi` (one replica
//! per device, gradients summed on the first, one optimizer step there), `sharded` (the same,
//! optimizer state sharded over the devices) or `ddp` (a replica per device, gradients
//! all-reduced inside the backward pass; Burn 0.22 implements the collective for CUDA only).
//! `--lr` is the learning rate of the mean gradient over the global batch: `multi` and `sharded`
//! sum the devices' gradients, so the example divides it by `--devices`; `ddp` all-reduces with
//! the mean. The pruner aims at `--target` of the FLOPs ([`PrunerConfig::targeted`]). Metrics (loss, accuracy, CDP penalty, live stripes) and checkpoints (with the
//! pruner's state, `checkpoint/pruner-<epoch>.json`) go to `--out`; at the end the model is
//! compacted and its cost reported.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use texprune::OutputLock;
use texprune::burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use texprune::burn::data::dataset::Dataset;
use texprune::burn::tensor::distributed::{DistributedConfig, ReduceOperation};
use texprune::burn::train::checkpoint::KeepLastNCheckpoints;
use texprune::burn::train::metric::{AccuracyMetric, LossMetric};
use texprune::burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use texprune::data::{
    ForLoader, ImageBatch, ImageBatcher, ImageSet, Normalization, Split, SplitMix64, mnist,
};
use texprune::learner::{EpochLineRenderer, LiveStripesMetric, PenaltyMetric, PrunedModel};
use texprune::report::accuracy;
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{Costed, Pruner, PrunerConfig, Quantity, Schedule, Target};
use texprune_tools::cli::Backend;
use texprune_tools::scaffold::sgd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Strategy {
    /// One device.
    Single,
    /// A replica per device; gradients summed and the optimizer run on the first device.
    Multi,
    /// As `multi`, with the optimizer sharded over the devices.
    Sharded,
    /// Distributed data parallel: gradients all-reduced between replicas (CUDA).
    Ddp,
}

/// Pruning under burn-train's Learner, on one device or several.
#[derive(Debug, Parser)]
struct Args {
    /// Execution strategy.
    #[arg(long, value_enum, default_value_t = Strategy::Multi)]
    strategy: Strategy,
    /// Devices (GPUs 0..N, or N worker threads on the CPU device).
    #[arg(long, default_value_t = 2, value_parser = texprune_tools::cli::positive)]
    devices: usize,
    /// Backend: cpu (= flex), ndarray, wgpu or cuda (the last three behind cargo features).
    #[arg(long, default_value = "cpu")]
    backend: Backend,
    /// Epochs.
    #[arg(long, default_value_t = 3, value_parser = texprune_tools::cli::positive)]
    epochs: usize,
    /// Training images (from the front of the set; the last 1,000 validate).
    #[arg(long, default_value_t = 4096, value_parser = texprune_tools::cli::positive)]
    items: usize,
    /// Batch per device and step.
    #[arg(long, default_value_t = 32, value_parser = texprune_tools::cli::positive)]
    batch: usize,
    /// Learning rate of the mean gradient over the global batch.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Fraction of the FLOPs to remove; the controller sets δ over the middle half of training
    /// (a quarter warm-up before, a quarter fine-tuning after).
    #[arg(long, default_value_t = 0.5)]
    target: f64,
    /// Replica fingerprint comparison every N steps (0: never).
    #[arg(long, default_value_t = 50)]
    check_every: u64,
    /// Seed of the initial weights and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (metrics, checkpoints).
    #[arg(long, default_value = "target/train_ddp")]
    out: PathBuf,
}

const VALID: usize = 1000;

fn loader(set: ImageSet, batch: usize, seed: u64) -> Arc<dyn DataLoader<ImageBatch>> {
    DataLoaderBuilder::new(ImageBatcher::new(
        Normalization::fashion_mnist(),
        None,
        seed,
    ))
    .batch_size(batch)
    .shuffle(seed)
    .build(ForLoader(set))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.strategy == Strategy::Ddp && !args.backend.has_collectives() {
        return Err(format!(
            "--strategy ddp needs collective operations, which Burn 0.22 implements for CUDA \
             only (backend {}); use --strategy multi or sharded here",
            args.backend
        )
        .into());
    }
    let count = match args.strategy {
        Strategy::Single => 1,
        _ => args.devices,
    };
    let devices = args.backend.devices(count)?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    let set = mnist(&data, Split::Test)?;
    if args.items + VALID > set.len() {
        return Err(format!(
            "--items {} leaves no {VALID} images to validate ({} in all)",
            args.items,
            set.len()
        )
        .into());
    }
    let train = set.take(args.items);
    let valid = set.select(&(set.len() - VALID..set.len()).collect::<Vec<_>>(), "valid");

    use VggLayer::{Conv as C, MaxPool as M};
    let device = devices[0].clone().autodiff();
    device.seed(args.seed);
    let model = VggConfig::new(vec![C(16), M, C(32), M, C(64), M])
        .with_in_channels(1)
        .with_input_size([28, 28])
        .init(&device)?;
    let steps = (args.epochs * args.items.div_ceil(count * args.batch)) as u64;
    let pruner = Pruner::new(PrunerConfig::targeted(
        Target::new(Quantity::Flops, args.target).with_input_size([28, 28]),
        Schedule::fractions(steps, 0.25, 0.5),
    ))?;
    let dense = model.cost([28, 28]);
    let model = PrunedModel::new(model, pruner).with_check_every(args.check_every);

    let (strategy, lr) = match args.strategy {
        Strategy::Single => (ExecutionStrategy::single(devices[0].clone()), args.lr),
        Strategy::Multi => (
            ExecutionStrategy::multi(devices.clone(), MultiDeviceOptim::OptimMainDevice),
            args.lr / count as f64,
        ),
        Strategy::Sharded => (
            ExecutionStrategy::multi(devices.clone(), MultiDeviceOptim::OptimSharded),
            args.lr / count as f64,
        ),
        Strategy::Ddp => (
            ExecutionStrategy::ddp(
                devices.clone(),
                DistributedConfig {
                    all_reduce_op: ReduceOperation::Mean,
                },
            ),
            args.lr,
        ),
    };
    println!(
        "{:?} on {count} {} device(s), global batch {}, lr {lr}",
        args.strategy,
        args.backend,
        count * args.batch
    );
    // A fresh run: the folder is locked, then emptied of an earlier run's files (the lock
    // file stays, it is this run's).
    let _lock = OutputLock::acquire(&args.out)?;
    for entry in std::fs::read_dir(&args.out)? {
        let path = entry?.path();
        if path.file_name() == Some(texprune::output_lock::LOCK_FILE.as_ref()) {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    let checkpointing =
        model.checkpointing(args.out.join("checkpoint"), KeepLastNCheckpoints::new(2));
    let optim = sgd(0.9, 0.0);
    let training = SupervisedTraining::new(
        &args.out,
        loader(train, args.batch, args.seed),
        loader(valid.clone(), args.batch, args.seed),
    )
    .with_training_strategy(strategy.into())
    .metric_train_numeric(LossMetric::new())
    .metric_valid_numeric(LossMetric::new())
    .metric_valid_numeric(AccuracyMetric::new())
    .metric_train_numeric(PenaltyMetric::new())
    .metric_train_numeric(LiveStripesMetric::new())
    .with_default_checkpointers()
    .with_checkpointing_strategy(checkpointing)
    .with_application_logger(None)
    .num_epochs(args.epochs);
    // Burn's terminal UI on a terminal (cargo feature `tui`), one line per epoch otherwise.
    let training = match cfg!(feature = "tui") && std::io::stdout().is_terminal() {
        true => training,
        false => training.renderer(Box::new(EpochLineRenderer::new())),
    };
    let result = training.launch(Learner::new(model, optim, lr));
    if let Some(error) = result.error {
        return Err(error.to_string().into());
    }

    let (model, pruner) = result.model.into_parts();
    let batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
    let device = devices[0].clone();
    let masked = accuracy(&model, &valid, &batcher, 256, &device)?;
    let items = (0..valid.len().min(8))
        .map(|i| valid.get(i))
        .collect::<Result<Vec<_>, _>>()?;
    let example = batcher.images(&items, &mut SplitMix64(0), &device).images;
    let compact = pruner.compact(&model, example, Vgg::forward)?;
    let compact_accuracy = accuracy(&compact, &valid, &batcher, 256, &device)?;
    let cost = compact.cost([28, 28]);
    println!(
        "steps {}  validation accuracy {:.2} % (compact {:.2} %)  FLOPs {} -> {} ({:.1} % removed)",
        pruner.step(),
        100.0 * masked,
        100.0 * compact_accuracy,
        dense.flops(),
        cost.flops(),
        100.0 * (1.0 - cost.flops() as f64 / dense.flops() as f64)
    );
    println!(
        "metrics and checkpoints (pruner state included) in {}",
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    texprune_tools::cli::exit(run(Args::parse()))
}
