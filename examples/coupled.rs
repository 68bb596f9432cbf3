//! Coupled channel pruning against the plain method, at a 50 % FLOPs target on the shipped
//! Fashion-MNIST split with the quickstart's schedule (8,000 training and 2,000 held-out images,
//! 10 epochs, batch 64, SGD 0.05 with cosine decay, pad-and-flip augmentation): one run of one
//! model, one seed, coupled or not; prints one JSON line with the held-out accuracy, the FLOPs
//! removed, the output channels kept per resolution (stage), the residual streams' widths and the
//! CPU latency of the masked and the compact model at batch 1 and 64 (median of 10).
//!
//! ```text
//! cargo run --release --example coupled -- --model resnet20 --seed 1 --coupled
//! cargo run --release --example coupled -- --model mobilenet --seed 1
//! ```
//!
//! Coupled: the model declares its residual streams (`ResNetConfig::residual_streams`,
//! `MobileNetV2Config::residual_streams`) and the pruner masks each coupled channel group whole
//! (`PrunerConfig::coupled_channels`). Plain: neither (the reference's rule). docs/compaction.md,
//! "Coupled pruning", has the table.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use texprune::burn::data::dataset::Dataset;
use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::tensor::{Device, Tensor};
use texprune::data::{Augmentation, ImageBatcher, Normalization, Split, mnist};
use texprune::report::{accuracy, latency_ms};
use texprune::zoo::mobilenet::MobileNetV2Config;
use texprune::zoo::resnet::ResNetConfig;
use texprune::{Classifier, CostReport, Prunable, Pruner, PrunerConfig, Schedule, Target};
use texprune_tools::cli::exit;
use texprune_tools::scaffold::{Batches, sgd};

// As in the `perf` example (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Model {
    /// The CIFAR ResNet-20 on 1×28×28 images.
    Resnet20,
    /// MobileNetV2, CIFAR strides, width 0.25, on 1×28×28 images.
    Mobilenet,
}

/// One run: coupled or plain pruning to 50 % FLOPs.
#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    model: Model,
    /// Seed of the split, the initialisation, the shuffles and the augmentation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Declare the residual streams and mask coupled channel groups whole.
    #[arg(long)]
    coupled: bool,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Fashion-MNIST folder (IDX files).
    #[arg(long, default_value = "data/fashion-mnist")]
    data: PathBuf,
    /// Also save the trained, masked model (a Burn record) to this file.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Measure a model saved with `--save` instead of training one.
    #[arg(long)]
    load: Option<PathBuf>,
}

fn main() -> ExitCode {
    exit(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default();
    let train_device = device.clone().autodiff();
    train_device.seed(args.seed);
    match args.model {
        Model::Resnet20 => {
            let config = ResNetConfig::cifar(20)
                .with_in_channels(1)
                .with_residual_streams(args.coupled);
            let fresh = config.init(&device)?;
            train(&args, config.init(&train_device)?, fresh, &device)
        }
        Model::Mobilenet => {
            let config = MobileNetV2Config::cifar()
                .with_width_mult(0.25)
                .with_in_channels(1)
                .with_residual_streams(args.coupled);
            let fresh = config.init(&device)?;
            train(&args, config.init(&train_device)?, fresh, &device)
        }
    }
}

/// Output channels of the declared convs per input resolution, `(kept, built)`.
fn channels_per_stage<M: Prunable>(compact: &M, fresh: &M) -> BTreeMap<String, (usize, usize)> {
    let mut stages = BTreeMap::new();
    for (c, f) in compact
        .collect_prunable()
        .iter()
        .zip(fresh.collect_prunable().iter())
    {
        let [h, w] = c.input_size.unwrap_or([0, 0]);
        let entry = stages.entry(format!("{h}x{w}")).or_insert((0, 0));
        entry.0 += c.weight_dims()[0];
        entry.1 += f.weight_dims()[0];
    }
    stages
}

fn train<M>(
    args: &Args,
    mut model: M,
    fresh: M,
    device: &Device,
) -> Result<(), Box<dyn std::error::Error>>
where
    M: Module + Prunable + Classifier,
{
    let start = Instant::now();
    let (train_set, held_out) = mnist(&args.data, Split::Test)?.split(0.2, args.seed);
    let augmentation = Some(Augmentation { pad: 2, flip: true });
    let train_batcher = ImageBatcher::new(Normalization::fashion_mnist(), augmentation, args.seed);
    let eval_batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
    let batches = Batches::new(&train_set, &train_batcher, 64, args.seed);
    let total = (args.epochs * batches.per_epoch()) as u64;
    let schedule = Schedule::fractions(total, 0.1, 0.5);
    let config = PrunerConfig::targeted(Target::flops(0.5, [28, 28]), schedule)
        .with_coupled_channels(args.coupled);
    let mut pruner = Pruner::new(config)?;
    let mut optim = sgd(0.9, 5e-4);
    let train_device = device.clone().autodiff();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let epochs = match &args.load {
        Some(path) => {
            model = model.load_file(path);
            0
        }
        None => args.epochs,
    };
    for epoch in 0..epochs {
        for batch in batches.epoch(epoch, 0, &train_device) {
            let (_, batch) = batch?;
            let lr = 0.05 * 0.5 * (1.0 + (PI * pruner.step() as f64 / total as f64).cos());
            let loss = loss_fn.forward(model.logits(batch.images), batch.labels);
            let fit = pruner.fit(&model, loss)?;
            model = pruner.apply_masks(optim.step(lr, model, fit.grads));
        }
        eprintln!(
            "epoch {} done at {:.0} s",
            epoch + 1,
            start.elapsed().as_secs_f64()
        );
    }
    let masked = pruner.apply_masks(model.valid());
    if let Some(path) = &args.save {
        masked.clone().save_file(path)?;
    }
    let acc = accuracy(&masked, &held_out, &eval_batcher, 500, device)?;
    // The compaction check runs on held-out images, as the quickstart's does.
    let items = (0..16)
        .map(|i| held_out.get(i))
        .collect::<Result<Vec<_>, _>>()?;
    let probe = eval_batcher
        .images(&items, &mut texprune::data::SplitMix64(0), device)
        .images;
    // A network that collapsed (logits near zero) can fail the check on f32 noise alone; the
    // run then reports the failure and measures the unchecked compaction.
    let (compact, check) = match pruner.compact(&masked, probe.clone(), |m: &M, x| m.logits(x)) {
        Ok(compact) => (compact, "passed".to_string()),
        Err(e) => (
            texprune::compact_unchecked(masked.clone())?,
            format!("failed: {e}"),
        ),
    };
    let compact_acc = accuracy(&compact, &held_out, &eval_batcher, 500, device)?;
    let one = Tensor::<4>::zeros([1, 1, 28, 28], device);
    let _ = fresh.logits(one.clone());
    let _ = compact.logits(one);
    let flops = |m: &M| CostReport::of_model(m).map(|r| r.flops() as f64);
    let removed = 1.0 - flops(&compact)? / flops(&fresh)?;
    let stages = channels_per_stage(&compact, &fresh);
    let layers = compact.collect_prunable();
    let streams: Vec<usize> = layers
        .streams()
        .iter()
        .map(|s| {
            let writer = layers.iter().find(|l| l.name == s.writers[0]);
            writer.map_or(0, |l| l.weight_dims()[0])
        })
        .collect();
    let mut latency = Vec::new();
    for batch in [1, 64] {
        let x = Tensor::<4>::ones([batch, 1, 28, 28], device);
        let dense = latency_ms(&masked, &x, 10);
        let small = latency_ms(&compact, &x, 10);
        latency.push(serde_json::json!({"batch": batch, "masked_ms": dense, "compact_ms": small}));
    }
    let line = serde_json::json!({
        "model": format!("{:?}", args.model),
        "seed": args.seed,
        "coupled": args.coupled,
        "accuracy": acc,
        "compact_accuracy": compact_acc,
        "check": check,
        "flops_removed": removed,
        "channels_per_stage": stages,
        "stream_widths": streams,
        "latency": latency,
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{line}");
    Ok(())
}
