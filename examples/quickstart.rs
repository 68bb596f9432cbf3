//! Train, prune and compact a small CNN on Fashion-MNIST, on the CPU, in a few minutes, offline.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The 10,000 test images of Fashion-MNIST ship with the repository (`data/fashion-mnist`); they
//! are split into 8,000 training and 2,000 held-out images. A VGG-style network from the zoo is
//! trained with CDP + DTC (penalty and a δ ramp during the first half, then fine-tuning under
//! the frozen masks), compacted, and measured before and after: held-out accuracy, params,
//! FLOPs, MACs and latency. Writes `report.json`, `report.md`, the trained model `model.bpk` (for
//! the `sensitivity` example), the masked and the compact model as ONNX (`masked.onnx`,
//! `compact.onnx`) and the texture plots at the start, at the end and over training into `--out`
//! (default `target/quickstart`).

use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use texprune::OutputLock;
use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::tensor::Device;
use texprune::data::{Augmentation, ImageBatcher, Normalization, Split, mnist};
use texprune::report::{Evaluation, RunReport, accuracy, write_run};
use texprune::zoo::vgg::{Vgg, VggConfig};
use texprune::{
    CdpConfig, Classifier, CompactOptions, DtcConfig, Pruner, PrunerConfig, Schedule, ThresholdRamp,
};
use texprune_tools::cli::{exit, positive};
use texprune_tools::scaffold::{Batches, begin, epoch_bar, finish, sgd};

/// Quickstart: CDP + DTC on Fashion-MNIST, then compaction.
#[derive(Parser, Debug)]
struct Args {
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    batch: usize,
    /// Peak learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// L1 coefficient on the skeleton.
    #[arg(long, default_value_t = 3.5e-3)]
    l1: f64,
    /// Texture-adaptive coefficient.
    #[arg(long, default_value_t = 2e-4)]
    adaptive: f64,
    /// Fraction of training with the CDP penalty on and δ rising from 0 to `--threshold`; the
    /// rest fine-tunes the pruned network under the frozen masks.
    #[arg(long, default_value_t = 0.5)]
    penalty_until: f64,
    /// Final DTC base threshold δ.
    #[arg(long, default_value_t = 0.02)]
    threshold: f64,
    /// Seed of the split, the initialisation, the shuffles and the augmentation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fashion-MNIST folder (IDX files).
    #[arg(long, default_value = "data/fashion-mnist")]
    data: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "target/quickstart")]
    out: PathBuf,
}

fn main() -> ExitCode {
    exit(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let _lock = OutputLock::acquire(&args.out)?;
    let device = Device::default();
    let train_device = device.clone().autodiff();
    train_device.seed(args.seed);
    let (train, held_out) = mnist(&args.data, Split::Test)?.split(0.2, args.seed);
    println!(
        "Fashion-MNIST test split: {} training, {} held-out images",
        train.len(),
        held_out.len()
    );
    let augmentation = Some(Augmentation { pad: 2, flip: true });
    let train_batcher = ImageBatcher::new(Normalization::fashion_mnist(), augmentation, args.seed);
    let eval_batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
    let batches = Batches::new(&train, &train_batcher, args.batch, args.seed);

    let total = (args.epochs * batches.per_epoch()) as u64;
    let pruning = ((total as f64 * args.penalty_until).round() as u64).max(1);
    let schedule = Schedule::new(0, pruning)
        .with_threshold_ramp(Some(ThresholdRamp::new(args.threshold, pruning)));
    let cdp = CdpConfig::new()
        .with_l1(args.l1)
        .with_adaptive(args.adaptive);
    let config = PrunerConfig::new(cdp, DtcConfig::new()).with_schedule(Some(schedule));
    let mut pruner = Pruner::new(config)?;
    let mut model = VggConfig::small().init(&train_device)?;
    let mut optim = sgd(0.9, 5e-4);
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let mut history = begin(&model, &args.out)?; // texture-start.svg

    for epoch in 0..args.epochs {
        let bar = epoch_bar(epoch, args.epochs, batches.per_epoch())?;
        for batch in batches.epoch(epoch, 0, &train_device) {
            let (_, batch) = batch?;
            let lr = args.lr * 0.5 * (1.0 + (PI * pruner.step() as f64 / total as f64).cos());
            let loss = loss_fn.forward(model.logits(batch.images), batch.labels);
            let fit = pruner.fit(&model, loss)?; // + CDP penalty, backward, DTC masks
            model = pruner.apply_masks(optim.step(lr, model, fit.grads));
            bar.set_message(fit.summary.to_string());
            bar.inc(1);
            if pruner.step().is_multiple_of(25) {
                history.record(pruner.step(), &model);
            }
        }
        let acc = accuracy(&model.valid(), &held_out, &eval_batcher, 500, &device)?;
        bar.finish_with_message(format!(
            "{}  held-out accuracy {:.2} %",
            bar.message(),
            100.0 * acc
        ));
    }

    let eval = Evaluation {
        test: &held_out,
        batcher: &eval_batcher,
        device: &device,
        input_size: [28, 28],
        probe: 256,
        runs: 20,
    };
    let done = finish(&model, &pruner, &eval, &args.out)?;
    // The trained model, for `cargo run --release --example sensitivity`.
    done.masked.clone().save_file(args.out.join("model.bpk"))?;
    // The masked (dense) and the compact model as ONNX, for any ONNX runtime
    // (`scripts/onnx_check.py --time` runs and times them in ONNX Runtime). For ONNX the kept
    // channel counts are rounded up to multiples of 16, which ONNX Runtime's fastest CPU
    // convolutions need (docs/deployment.md).
    let example = eval.first_images(1)?;
    let logits = |m: &Vgg, x| m.logits(x);
    texprune::onnx::export(&done.masked, example.clone(), logits)?
        .save(args.out.join("masked.onnx"))?;
    let options = CompactOptions::default().with_channel_multiple(16);
    let for_onnx = texprune::compact_with(&done.masked, example.clone(), logits, options)?;
    texprune::onnx::export(&for_onnx, example, logits)?.save(args.out.join("compact.onnx"))?;
    let report = RunReport {
        dataset: "fashion-mnist (test split: 8,000 train / 2,000 held-out)".into(),
        model: "VGG [32, M, 64, M, 128, M] on 1×28×28".into(),
        epochs: args.epochs,
        wall_seconds: start.elapsed().as_secs_f64(),
        ..done.report
    };
    println!(
        "\nper layer, after compaction:\n{}\n\n{report}",
        done.compact_cost
    );
    write_run(
        &args.out,
        "texprune quickstart",
        &report,
        &done.compact_cost,
        &history,
    )?;
    println!(
        "wrote report.json, report.md, model.bpk, masked.onnx, compact.onnx and the plots into {}",
        args.out.display()
    );
    Ok(())
}
