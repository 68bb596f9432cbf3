//! The equal-budget comparison: the same VGG, optimiser, batch, seed and epochs, trained dense and
//! pruned to a cost target, on the full Fashion-MNIST.
//!
//! ```text
//! cargo run --release --example compare                       # dense vs 60 % of FLOPs removed
//! cargo run --release --example compare -- --target 0.4 --target 0.8 --skip-dense
//! ```
//!
//! Data: Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`, 60,000 training
//! and 10,000 test images), zero-padded to 32×32 and repeated into 3 channels. Model: the
//! reference's VGG `[32, M, 64, M, 128, M, 256, M, 512, M]`. Optimiser: SGD, lr 0.1, momentum
//! 0.9, weight decay 1e-4, batch 64, 2 epochs. The pruned runs set only a target
//! ([`PrunerConfig::targeted`]): default coefficients, warm-up / pruning / fine-tuning phases
//! over the same steps, the controller sets the DTC threshold. Prints one table and writes
//! `compare.json` and `compare.md` into `--out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use texprune::burn::data::dataset::Dataset;
use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::decay::WeightDecayConfig;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::optim::{GradientsParams, SgdConfig};
use texprune::cli::Backend;
use texprune::data::{
    ImageBatcher, ImageItem, ImageSet, Normalization, Split, batch_rng, epoch_order, mnist,
};
use texprune::report::{Evaluation, RunReport, write_atomic};
use texprune::zoo::human;
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{Classifier, Costed, Pruner, PrunerConfig, Quantity, Schedule, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum LrSchedule {
    /// The same learning rate throughout.
    Constant,
    /// Cosine decay from `--lr` to 0.
    Cosine,
}

/// Dense vs pruned-to-a-target at the same training budget.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(about, args_override_self = true)]
struct Args {
    /// Fashion-MNIST folder (IDX files, plain or gzip).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data_dir: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = texprune::cli::positive)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Learning-rate schedule (the same for every run).
    #[arg(long, value_enum, default_value = "constant")]
    lr_schedule: LrSchedule,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Fraction of the target quantity to remove; repeat for several pruned runs.
    #[arg(long = "target", default_values_t = [0.6])]
    targets: Vec<f64>,
    /// The quantity the target counts: flops, macs, params or stripes.
    #[arg(long, default_value = "flops")]
    quantity: Quantity,
    /// Fraction of training spent in warm-up (penalty on, nothing pruned).
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Fraction of training spent pruning; fine-tuning follows.
    #[arg(long, default_value_t = 0.5)]
    prune: f64,
    /// CDP coefficients of the pruned runs, overriding `CdpConfig::budget_default` (weight
    /// texture, skeleton texture, L1, L2, group, texture-adaptive).
    #[arg(long)]
    weight_texture: Option<f64>,
    #[arg(long)]
    skeleton_texture: Option<f64>,
    #[arg(long)]
    l1: Option<f64>,
    #[arg(long)]
    l2: Option<f64>,
    #[arg(long)]
    group: Option<f64>,
    #[arg(long)]
    adaptive: Option<f64>,
    /// Seed of the initialisation and the data order (the same for every run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Leave out the dense run.
    #[arg(long)]
    skip_dense: bool,
    /// Output folder.
    #[arg(long, default_value = "target/compare")]
    out: PathBuf,
    /// Backend: cpu (= flex), ndarray, wgpu or cuda (the last three behind cargo features).
    #[arg(long, default_value = "cpu")]
    backend: Backend,
}

/// One trained run, measured.
#[derive(Debug, Clone, Serialize)]
struct RunRow {
    /// `dense` or `pruned 60 % FLOPs`.
    name: String,
    /// The target fraction (none for the dense run).
    target: Option<f64>,
    /// Test accuracy of the model as trained (masked for the pruned runs).
    accuracy: f64,
    /// Test accuracy of the compact model.
    accuracy_compact: f64,
    /// Params, FLOPs and MACs of the compact model.
    params: u64,
    flops: u64,
    macs: u64,
    /// Fraction of the dense model's FLOPs / params removed.
    flops_removed: f64,
    params_removed: f64,
    /// Live / total stripes of the thresholded convs.
    live_stripes: u64,
    total_stripes: u64,
    /// Training wall time.
    train_seconds: f64,
    /// Median latency of the model as trained and of the compact model, batch 64.
    latency_ms: f64,
    latency_compact_ms: f64,
    /// Final DTC threshold the controller set.
    threshold: Option<f64>,
}

/// `compare.json`.
#[derive(Debug, Serialize)]
struct Comparison {
    dense_accuracy: Option<f64>,
    pruned_accuracy: Option<f64>,
    flops_dense: u64,
    flops_compact: Option<u64>,
    params_dense: u64,
    params_compact: Option<u64>,
    epochs: usize,
    wall_seconds: f64,
    runs: Vec<RunRow>,
    args: Args,
}

fn reference_vgg() -> VggConfig {
    use VggLayer::{Conv as C, MaxPool as M};
    VggConfig::new(vec![C(32), M, C(64), M, C(128), M, C(256), M, C(512), M])
}

fn main() -> ExitCode {
    texprune::cli::exit(run_main(Args::parse()))
}

fn run_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let device = args.backend.device()?;
    let targets: Vec<Target> = args
        .targets
        .iter()
        .map(|&t| Target::new(args.quantity, t).with_input_size([32, 32]))
        .collect();
    for t in &targets {
        t.validate()?;
    }
    let load = |split, limit: Option<usize>| -> Result<ImageSet, Box<dyn std::error::Error>> {
        let set = mnist(&args.data_dir, split)?.padded_to([3, 32, 32])?;
        Ok(limit.map_or(set.clone(), |n| set.take(n)))
    };
    let train = load(Split::Train, args.limit_train)?;
    let test = load(Split::Test, args.limit_test)?;
    println!(
        "Fashion-MNIST from {}: {} training, {} test images, padded to 3×32×32",
        args.data_dir.display(),
        train.len(),
        test.len()
    );
    std::fs::create_dir_all(&args.out)?;

    let mut runs = Vec::new();
    if !args.skip_dense {
        runs.push(run(&args, None, &train, &test, &device)?);
    }
    for target in &targets {
        runs.push(run(&args, Some(target.clone()), &train, &test, &device)?);
    }
    let dense_cost = reference_vgg().init(&device)?.cost([32, 32]);
    let dense = runs.iter().find(|r| r.target.is_none());
    let pruned = runs.iter().find(|r| r.target.is_some());
    let comparison = Comparison {
        dense_accuracy: dense.map(|r| r.accuracy),
        pruned_accuracy: pruned.map(|r| r.accuracy),
        flops_dense: dense_cost.flops(),
        flops_compact: pruned.map(|r| r.flops),
        params_dense: dense_cost.params(),
        params_compact: pruned.map(|r| r.params),
        epochs: args.epochs,
        wall_seconds: start.elapsed().as_secs_f64(),
        runs,
        args: args.clone(),
    };
    let table = table(&comparison);
    println!("\n{table}");
    write_atomic(
        &args.out.join("compare.json"),
        serde_json::to_string_pretty(&comparison)?.as_bytes(),
    )?;
    write_atomic(&args.out.join("compare.md"), table.as_bytes())?;
    println!(
        "wrote compare.json and compare.md into {}",
        args.out.display()
    );
    Ok(())
}

/// Trains one run (dense when `target` is None) and measures it.
fn run(
    args: &Args,
    target: Option<Target>,
    train: &ImageSet,
    test: &ImageSet,
    device: &texprune::burn::tensor::Device,
) -> Result<RunRow, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let train_device = device.clone().autodiff();
    train_device.seed(args.seed);
    let mut model: Vgg = reference_vgg().init(&train_device)?;
    let steps_per_epoch = train.len().div_ceil(args.batch);
    let total_steps = (args.epochs * steps_per_epoch) as u64;
    let mut pruner = match &target {
        Some(t) => {
            let mut config = PrunerConfig::targeted(
                t.clone(),
                Schedule::fractions(total_steps, args.warmup, args.prune),
            );
            let cdp = &mut config.cdp;
            for (field, value) in [
                (&mut cdp.weight_texture, args.weight_texture),
                (&mut cdp.skeleton_texture, args.skeleton_texture),
                (&mut cdp.l1, args.l1),
                (&mut cdp.l2, args.l2),
                (&mut cdp.group, args.group),
                (&mut cdp.adaptive, args.adaptive),
            ] {
                *field = value.unwrap_or(*field);
            }
            Some(Pruner::new(config)?)
        }
        None => None,
    };
    let name = match &target {
        Some(t) => format!("pruned {:.0} % {}", 100.0 * t.remove, t.quantity.name()),
        None => "dense".to_string(),
    };
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(args.momentum)
                .with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(args.weight_decay as f32)))
        .init();
    let normalization = Normalization {
        mean: vec![0.2860; 3],
        std: vec![0.3530; 3],
    };
    let batcher = ImageBatcher::new(normalization.clone(), None, args.seed);
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let style = ProgressStyle::with_template(
        "{prefix:>18} epoch {msg:.dim} {bar:25} {pos}/{len} {elapsed_precise}",
    )?;
    let mut step = 0u64;
    let mut last = None;
    for epoch in 0..args.epochs {
        let bar = ProgressBar::new(steps_per_epoch as u64)
            .with_style(style.clone())
            .with_prefix(name.clone());
        let order = epoch_order(train.len(), args.seed, epoch);
        for (b, chunk) in order.chunks(args.batch).enumerate() {
            let items: Vec<ImageItem> = chunk
                .iter()
                .map(|&i| train.get(i))
                .collect::<Result<_, _>>()?;
            let batch = batcher.images(&items, &mut batch_rng(args.seed, epoch, b), &train_device);
            let lr = match args.lr_schedule {
                LrSchedule::Constant => args.lr,
                LrSchedule::Cosine => {
                    let progress = step as f64 / total_steps as f64;
                    args.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            };
            let loss = loss_fn.forward(model.logits(batch.images), batch.labels);
            model = match &mut pruner {
                Some(pruner) => {
                    let fit = pruner.fit(&model, loss)?;
                    bar.set_message(format!("{}/{} {}", epoch + 1, args.epochs, fit.summary));
                    last = Some(fit.summary);
                    pruner.apply_masks(optim.step(lr, model, fit.grads))
                }
                None => {
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    optim.step(lr, model, grads)
                }
            };
            step += 1;
            bar.inc(1);
        }
        bar.finish();
    }
    let train_seconds = started.elapsed().as_secs_f64();

    let masked = model.valid();
    let compact = match &pruner {
        Some(p) => p.compact(masked.clone())?,
        None => texprune::compact(masked.clone())?,
    };
    let eval_batcher = ImageBatcher::new(normalization, None, 0);
    let eval = Evaluation {
        test,
        batcher: &eval_batcher,
        device,
        input_size: [32, 32],
        probe: 64,
        runs: 20,
    };
    let (report, _, _) = RunReport::measure(&masked, &compact, &eval)?;
    let total_stripes: u64 = masked
        .cost([32, 32])
        .layers
        .iter()
        .map(|l| l.skeleton)
        .sum();
    let row = RunRow {
        name,
        target: target.as_ref().map(|t| t.remove),
        accuracy: report.accuracy_masked,
        accuracy_compact: report.accuracy_compact,
        params: report.params_compact,
        flops: report.flops_compact,
        macs: report.macs_compact,
        flops_removed: report.flops_removed(),
        params_removed: report.params_removed(),
        live_stripes: last.as_ref().map_or(total_stripes, |s| s.live_stripes),
        total_stripes: last.as_ref().map_or(total_stripes, |s| s.total_stripes),
        train_seconds,
        latency_ms: report.latency_masked_ms,
        latency_compact_ms: report.latency_compact_ms,
        threshold: last.as_ref().map(|s| s.threshold),
    };
    println!(
        "{}: test accuracy {:.2} %, {} FLOPs ({:.1} % removed), {:.0} s",
        row.name,
        100.0 * row.accuracy,
        human(row.flops),
        100.0 * row.flops_removed,
        row.train_seconds
    );
    Ok(row)
}

/// The Markdown table of the runs.
fn table(c: &Comparison) -> String {
    let mut out = format!(
        "VGG [32, M, 64, M, 128, M, 256, M, 512, M] on Fashion-MNIST (3×32×32), {} epochs, \
         dense {} FLOPs, {} params\n\n\
         | run | test accuracy | Δ vs dense | params | FLOPs | FLOPs removed | MACs | live stripes \
         | train time | latency (b64, as trained → compact) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        c.epochs,
        human(c.flops_dense),
        human(c.params_dense)
    );
    for r in &c.runs {
        let delta = c.dense_accuracy.map_or("–".into(), |d| {
            format!("{:+.2} pt", 100.0 * (r.accuracy - d))
        });
        out += &format!(
            "| {} | {:.2} % | {} | {} | {} | {:.1} % | {} | {}/{} | {:.0} s | {:.1} → {:.1} ms |\n",
            r.name,
            100.0 * r.accuracy,
            delta,
            human(r.params),
            human(r.flops),
            100.0 * r.flops_removed,
            human(r.macs),
            r.live_stripes,
            r.total_stripes,
            r.train_seconds,
            r.latency_ms,
            r.latency_compact_ms
        );
    }
    out
}
