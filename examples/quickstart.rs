//! Train, prune and compact a small CNN on Fashion-MNIST, on the CPU, in a few minutes, offline.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The 10,000 test images of Fashion-MNIST ship with the repository (`data/fashion-mnist`); they
//! are split into 8,000 training and 2,000 held-out images. A VGG-style network from the zoo is
//! trained with CDP + DTC (penalty during the first half, then fine-tuning under the masks),
//! compacted, and measured before and after: held-out accuracy, params, FLOPs, MACs and latency.
//! Writes `report.json`, `report.md`, the trained model `model.bpk` (for the `sensitivity`
//! example) and the texture plots at the start, at the end and over training into `--out`
//! (default `target/quickstart`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::optim::{GradientsParams, SgdConfig, decay::WeightDecayConfig};
use texprune::burn::tensor::Device;
use texprune::data::{
    Augmentation, ImageBatcher, ImageItem, ImageSet, Normalization, Split, batch_rng, epoch_order,
    mnist,
};
use texprune::history::TextureHistory;
use texprune::plots::plot_texture;
use texprune::report::{Evaluation, RunReport, accuracy, write_run};
use texprune::zoo::vgg::{Vgg, VggConfig};
use texprune::{CdpConfig, Classifier, DtcConfig, Pruner, PrunerConfig};

/// Quickstart: CDP + DTC on Fashion-MNIST, then compaction.
#[derive(Parser, Debug)]
struct Args {
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = texprune_tools::cli::positive)]
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
    /// Fraction of training with the CDP penalty on; the rest fine-tunes the pruned network
    /// (DTC keeps pruned entries at zero).
    #[arg(long, default_value_t = 0.5)]
    penalty_until: f64,
    /// Final DTC base threshold (reached linearly over the first half of training).
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

fn items(set: &ImageSet, indices: &[usize]) -> Vec<ImageItem> {
    use texprune::burn::data::dataset::Dataset;
    indices.iter().filter_map(|&i| set.get(i).ok()).collect()
}

fn main() -> ExitCode {
    texprune_tools::cli::exit(run_main(Args::parse()))
}

fn run_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let device = Device::default();
    let train_device = device.clone().autodiff();
    train_device.seed(args.seed);

    let all = mnist(&args.data, Split::Test)?;
    let (train, held_out) = all.split(0.2, args.seed);
    println!(
        "Fashion-MNIST test split from {}: {} training, {} held-out images",
        args.data.display(),
        train.len(),
        held_out.len()
    );
    let train_batcher = ImageBatcher::new(
        Normalization::fashion_mnist(),
        Some(Augmentation { pad: 2, flip: true }),
        args.seed,
    );
    let eval_batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);

    let mut model: Vgg = VggConfig::small().init(&train_device)?;
    let mut pruner = Pruner::new(PrunerConfig::new(
        CdpConfig::new()
            .with_l1(args.l1)
            .with_adaptive(args.adaptive),
        DtcConfig::new().with_threshold(0.0),
    ))?;
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    std::fs::create_dir_all(&args.out)?;
    plot_texture(
        &model,
        &args.out.join("texture-start.svg"),
        "texture at initialisation",
    )?;

    let steps_per_epoch = train.len().div_ceil(args.batch);
    let total_steps = (args.epochs * steps_per_epoch) as f64;
    let style = ProgressStyle::with_template(
        "epoch {prefix} {bar:30} {pos}/{len} {elapsed_precise} {msg}",
    )?;
    let mut step = 0usize;
    let mut history = TextureHistory::default();
    history.record(0, &model);
    for epoch in 0..args.epochs {
        let bar = ProgressBar::new(steps_per_epoch as u64)
            .with_style(style.clone())
            .with_prefix(format!("{}/{}", epoch + 1, args.epochs));
        let order = epoch_order(train.len(), args.seed, epoch);
        for (b, chunk) in order.chunks(args.batch).enumerate() {
            let progress = step as f64 / total_steps;
            if progress >= args.penalty_until && pruner.config().cdp != CdpConfig::new() {
                // Fine-tuning: same masks, no penalty.
                let mut state = pruner.state(&model)?;
                state.config.cdp = CdpConfig::new();
                pruner = Pruner::from_state(&state, &model)?;
            }
            pruner.set_threshold(args.threshold * (2.0 * progress).min(1.0))?;
            let lr = args.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            let batch = train_batcher.images(
                &items(&train, chunk),
                &mut batch_rng(args.seed, epoch, b),
                &train_device,
            );
            let loss = loss_fn.forward(model.logits(batch.images), batch.labels);
            let fit = pruner.fit(&model, loss)?;
            let grads: GradientsParams = fit.grads;
            model = pruner.apply_masks(optim.step(lr, model, grads));
            bar.set_message(fit.summary.to_string());
            bar.inc(1);
            step += 1;
            if step.is_multiple_of(25) {
                history.record(step as u64, &model);
            }
        }
        let acc = accuracy(&model.valid(), &held_out, &eval_batcher, 500, &device)?;
        bar.finish_with_message(format!(
            "{}  held-out accuracy {:.2} %",
            bar.message(),
            100.0 * acc
        ));
    }
    plot_texture(
        &model,
        &args.out.join("texture-end.svg"),
        "texture after training",
    )?;

    let masked = model.valid();
    let compact = pruner.compact(masked.clone())?;
    // The trained model, for `cargo run --release --example sensitivity`.
    masked.clone().save_file(args.out.join("model.bpk"))?;
    let eval = Evaluation {
        test: &held_out,
        batcher: &eval_batcher,
        device: &device,
        input_size: [28, 28],
        probe: 256,
        runs: 20,
    };
    let (measured, _, compact_cost) = RunReport::measure(&masked, &compact, &eval)?;
    let report = RunReport {
        dataset: "fashion-mnist (test split: 8,000 train / 2,000 held-out)".into(),
        model: "VGG [32, M, 64, M, 128, M] on 1×28×28".into(),
        epochs: args.epochs,
        wall_seconds: start.elapsed().as_secs_f64(),
        ..measured
    };
    println!("\nper layer, after compaction:\n{compact_cost}\n");
    println!("{report}");
    println!(
        "removed: {:.1} % of params, {:.1} % of FLOPs",
        100.0 * report.params_removed(),
        100.0 * report.flops_removed()
    );
    write_run(
        &args.out,
        "texprune quickstart",
        &report,
        &compact_cost,
        &history,
    )?;
    println!(
        "wrote report.json, report.md, model.bpk and the texture plots into {}",
        args.out.display()
    );
    Ok(())
}
