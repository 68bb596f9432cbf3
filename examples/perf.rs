//! The performance table, measured side by side in one run:
//! - the pruner's overhead on a ResNet-56 training step (batch 64, forward + cross-entropy +
//!   backward + SGD), every CDP term on and DTC every step, against the same step without it;
//! - compact against dense inference for ResNet-56 and VGG-16 (CIFAR, 3×32×32) with 0 %, 50 %
//!   and 75 % of the stripes removed at random (`texprune_tools::perf::random_stripe_masks`), batch 1
//!   and 64.
//!
//! ```text
//! cargo run --release --example perf -- --quick     # under 3 minutes on 2 cores
//! cargo run --release --example perf                # more runs per number
//! ```
//!
//! Prints one table and writes `perf.json` (`--out`). Times are medians. `speedup` is
//! dense / compact time, `mac_ratio` dense / compact MACs; `speedup_over_mac_ratio` ≥ 1 means the
//! compact model gained at least what the removed MACs promise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use texprune::burn::tensor::{Device, Int, Tensor};
use texprune::checkpoint::write_atomic;
use texprune::zoo::resnet::{ResNet, ResNetConfig};
use texprune::zoo::vgg::VggConfig;
use texprune::{CdpConfig, Classifier, Costed, DtcConfig, Prunable, Pruner, PrunerConfig};
use texprune_tools::cli::Backend;
use texprune_tools::perf::{median, median_ms, random_stripe_masks, synthetic_batch};

// mimalloc keeps freed memory for reuse; glibc's allocator hands freed activations back to the
// kernel and maps them again, and the TLB shootdowns between the two cores cost compact inference
// about half its time at batch 64 (docs/performance.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The performance table: the pruner's overhead on a training step, and compact against dense
/// inference.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Fewer runs per number (the whole table in under 3 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Backend: cpu (= flex), ndarray, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: Backend,
    /// Where to write the numbers.
    #[arg(long, default_value = "perf.json")]
    out: PathBuf,
    /// Which measurements: all, train (the step overhead) or inference.
    #[arg(long, value_enum, default_value = "all")]
    part: Part,
    /// Timed training steps of each kind (default 3 with `--quick`, 10 without).
    #[arg(long)]
    steps: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    All,
    Train,
    Inference,
}

/// One inference row.
#[derive(Debug, Serialize)]
struct Inference {
    model: String,
    batch: usize,
    stripes_removed: f64,
    dense_ms: f64,
    compact_ms: f64,
    mac_ratio: f64,
    speedup: f64,
    speedup_over_mac_ratio: f64,
}

#[derive(Debug, Serialize)]
struct Perf {
    backend: String,
    quick: bool,
    step_plain_ms: Option<f64>,
    step_pruner_ms: Option<f64>,
    overhead_ratio: Option<f64>,
    inference: Vec<Inference>,
}

fn batch(n: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    synthetic_batch(n, [3, 32, 32], 10, n as u64, device)
}

fn sgd() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init()
}

/// Median step times (ms) of plain training and of training with the pruner, interleaved step
/// by step so that both see the same machine load.
fn training_steps(device: &Device, steps: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let device = device.clone().autodiff();
    let (x, y) = batch(64, &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let init = || ResNetConfig::cifar(56).init(&device);
    let (mut plain, mut pruned): (ResNet, ResNet) = (init()?, init()?);
    let (mut optim_plain, mut optim_pruned) = (sgd(), sgd());
    let every_term = CdpConfig::every_term(1e-4);
    let mut pruner = Pruner::new(PrunerConfig::new(
        every_term,
        DtcConfig::new().with_threshold(0.01),
    ))?;
    let (mut t_plain, mut t_pruner) = (Vec::new(), Vec::new());
    // One warm-up step each, then `steps` timed ones.
    for step in 0..=steps {
        let start = std::time::Instant::now();
        let loss = loss_fn.forward(plain.forward(x.clone()), y.clone());
        let value: f64 = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &plain);
        plain = optim_plain.step(0.01, plain, grads);
        let plain_ms = start.elapsed().as_secs_f64() * 1e3;

        let start = std::time::Instant::now();
        let loss = loss_fn.forward(pruned.forward(x.clone()), y.clone());
        let fit = pruner.fit(&pruned, loss)?;
        pruned = pruner.apply_masks(optim_pruned.step(0.01, pruned, fit.grads));
        let pruner_ms = start.elapsed().as_secs_f64() * 1e3;
        if step > 0 {
            t_plain.push(plain_ms);
            t_pruner.push(pruner_ms);
        }
        eprintln!(
            "train step {step}: plain {plain_ms:.0} ms (loss {value:.3}), pruner {pruner_ms:.0} ms ({})",
            fit.summary
        );
    }
    Ok((median(t_plain), median(t_pruner)))
}

/// Dense against compact inference of `model` at each removal rate and batch size.
fn inference<M>(
    name: &str,
    model: M,
    device: &Device,
    runs: [usize; 2],
    rows: &mut Vec<Inference>,
) -> Result<(), Box<dyn std::error::Error>>
where
    M: Prunable + Classifier + Costed,
{
    let dense = model.valid();
    for (batch_size, runs) in [1, 64].into_iter().zip(runs) {
        let (x, _) = batch(batch_size, device);
        let dense_ms = median_ms(runs, || {
            let _ = dense.logits(x.clone()).into_data();
        });
        for removed in [0.0, 0.5, 0.75] {
            let masked = random_stripe_masks(dense.clone(), removed, 7);
            let compact = texprune::compact(masked.clone())?;
            compact.check_input(x.dims())?;
            let compact_ms = median_ms(runs, || {
                let _ = compact.logits(x.clone()).into_data();
            });
            let mac_ratio =
                masked.cost([32, 32]).macs() as f64 / compact.cost([32, 32]).macs() as f64;
            let speedup = dense_ms / compact_ms;
            eprintln!(
                "{name} batch {batch_size} {:.0} % removed: dense {dense_ms:.1} ms, compact {compact_ms:.1} ms",
                removed * 100.0
            );
            rows.push(Inference {
                model: name.into(),
                batch: batch_size,
                stripes_removed: removed,
                dense_ms,
                compact_ms,
                mac_ratio,
                speedup,
                speedup_over_mac_ratio: speedup / mac_ratio,
            });
        }
    }
    Ok(())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.backend.device()?;
    device.seed(56);
    let (steps, runs) = if args.quick {
        (3, [10, 3])
    } else {
        (10, [50, 10])
    };
    let steps = args.steps.unwrap_or(steps).max(1);
    let train = if args.part == Part::Inference {
        None
    } else {
        Some(training_steps(&device, steps)?)
    };
    let mut rows = Vec::new();
    if args.part != Part::Train {
        let resnet = ResNetConfig::cifar(56).init(&device)?;
        inference("resnet56", resnet, &device, runs, &mut rows)?;
        inference(
            "vgg16",
            VggConfig::vgg16().init(&device)?,
            &device,
            runs,
            &mut rows,
        )?;
    }
    let perf = Perf {
        backend: args.backend.to_string(),
        quick: args.quick,
        step_plain_ms: train.map(|t| t.0),
        step_pruner_ms: train.map(|t| t.1),
        overhead_ratio: train.map(|(plain, pruner)| pruner / plain),
        inference: rows,
    };
    println!(
        "backend {}{}",
        perf.backend,
        if args.quick { " (quick)" } else { "" }
    );
    if let (Some(plain), Some(pruner), Some(ratio)) =
        (perf.step_plain_ms, perf.step_pruner_ms, perf.overhead_ratio)
    {
        println!(
            "ResNet-56 training step, batch 64: plain {plain:.0} ms, with pruner {pruner:.0} ms, \
             overhead ratio {ratio:.3}"
        );
    }
    println!(
        "\n| model | batch | stripes removed | dense ms | compact ms | MAC ratio | speedup | speedup / MAC ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &perf.inference {
        println!(
            "| {} | {} | {:.0} % | {:.1} | {:.1} | {:.2}× | {:.2}× | {:.2} |",
            r.model,
            r.batch,
            r.stripes_removed * 100.0,
            r.dense_ms,
            r.compact_ms,
            r.mac_ratio,
            r.speedup,
            r.speedup_over_mac_ratio
        );
    }
    // The targets of docs/performance.md.
    let overhead_ok = perf.overhead_ratio.is_none_or(|r| r <= 1.05);
    let batch64 = perf
        .inference
        .iter()
        .filter(|r| r.batch == 64 && r.stripes_removed > 0.0);
    let speedup_ok = batch64.clone().all(|r| r.speedup_over_mac_ratio >= 0.8);
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "\ntargets: overhead ratio ≤ 1.05 {}; speedup ≥ 0.8 × MAC ratio at batch 64 ({} rows) {}",
        mark(overhead_ok),
        batch64.count(),
        mark(speedup_ok)
    );
    write_atomic(&args.out, serde_json::to_string_pretty(&perf)?.as_bytes())?;
    println!("\nwrote {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    texprune_tools::cli::exit(run(Args::parse()))
}
