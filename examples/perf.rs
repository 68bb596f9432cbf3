//! The performance table, measured side by side in one run:
//! - the pruner's overhead on a ResNet-56 training step (batch 64, forward + cross-entropy +
//!   backward + SGD), every CDP term on and DTC every step, against the same step without it,
//!   with `Pruner::fit`'s own time beside the plain backward, and the step with a pruner to a
//!   FLOPs target whose controller re-solves δ every step;
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

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use texprune::burn::tensor::{Device, Int, Tensor};
use texprune::checkpoint::write_atomic;
use texprune::onnx::{self, ExportForm, OnnxExport};
use texprune::zoo::resnet::{ResNet, ResNetConfig};
use texprune::zoo::vgg::VggConfig;
use texprune::{
    CdpConfig, Classifier, CompactOptions, Costed, DtcConfig, Prunable, Pruner, PrunerConfig,
    Schedule, Target,
};
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
    /// Which measurements: all, train (the step overhead) or inference; `device` only opens the
    /// backend's device (one line: ok, or why not); `suite` runs the backend-generic suite
    /// (`texprune_tools::backend_suite`, reference vectors from `TEXPRUNE_REFERENCE`).
    #[arg(long, value_enum, default_value = "all")]
    part: Part,
    /// Timed training steps of each kind (default 3 with `--quick`, 10 without).
    #[arg(long)]
    steps: Option<usize>,
    /// Also write every inference model as ONNX into this folder (`scripts/onnx_bench.py` times
    /// them in ONNX Runtime): `<model>_dense.onnx`, and per removal rate `<model>_<rate>_box.onnx`
    /// (dynamic batch), `<model>_<rate>_box16.onnx` (compacted with channel counts kept at
    /// multiples of 16) and `<model>_<rate>_stripes_b<batch>.onnx`.
    #[arg(long)]
    onnx_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    All,
    Train,
    Inference,
    Device,
    Suite,
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
    training: Option<Training>,
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

/// Median times (ms) of one ResNet-56 training step of each kind, interleaved step by step so
/// that all see the same machine load.
#[derive(Debug, Clone, Copy, Serialize)]
struct Training {
    /// The plain step: forward, loss, backward, SGD.
    plain_ms: f64,
    /// Its backward alone (`loss.backward()` and the gradients collected).
    plain_backward_ms: f64,
    /// The step with the pruner: forward, loss, `Pruner::fit`, SGD, `Pruner::apply_masks`.
    pruner_ms: f64,
    /// Its `Pruner::fit` alone (penalty, backward, DTC, masks, counts).
    pruner_fit_ms: f64,
    /// The step with a pruner to a 50 % FLOPs target whose controller re-solves δ every step
    /// (`control_every = 1`): the controller's worst case.
    targeted_ms: f64,
    /// Its `Pruner::fit` alone.
    targeted_fit_ms: f64,
}

/// The training part of the table: the plain step, the step with the pruner (every CDP term,
/// δ = 0.01, DTC every step) and the step with a pruner to a FLOPs target, interleaved.
fn training_steps(device: &Device, steps: usize) -> Result<Training, Box<dyn std::error::Error>> {
    let device = device.clone().autodiff();
    let (x, y) = batch(64, &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let init = || ResNetConfig::cifar(56).init(&device);
    let (mut plain, mut pruned, mut targeted): (ResNet, ResNet, ResNet) =
        (init()?, init()?, init()?);
    let (mut optim_plain, mut optim_pruned, mut optim_targeted) = (sgd(), sgd(), sgd());
    let every_term = CdpConfig::every_term(1e-4);
    let mut pruner = Pruner::new(PrunerConfig::new(
        every_term,
        DtcConfig::new().with_threshold(0.01),
    ))?;
    let mut controlled = Pruner::new(PrunerConfig::targeted(
        Target::flops(0.5, [32, 32]),
        Schedule::new(0, 1000).with_control_every(1),
    ))?;
    let mut times: [Vec<f64>; 6] = Default::default();
    let ms = |start: std::time::Instant| start.elapsed().as_secs_f64() * 1e3;
    // One warm-up step each, then `steps` timed ones.
    for step in 0..=steps {
        let start = std::time::Instant::now();
        let loss = loss_fn.forward(plain.forward(x.clone()), y.clone());
        let value: f64 = loss.clone().into_scalar();
        let backward = std::time::Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &plain);
        let plain_backward_ms = ms(backward);
        plain = optim_plain.step(0.01, plain, grads);
        let plain_ms = ms(start);

        let start = std::time::Instant::now();
        let loss = loss_fn.forward(pruned.forward(x.clone()), y.clone());
        let fit_start = std::time::Instant::now();
        let fit = pruner.fit(&pruned, loss)?;
        let pruner_fit_ms = ms(fit_start);
        pruned = pruner.apply_masks(optim_pruned.step(0.01, pruned, fit.grads));
        let pruner_ms = ms(start);

        let start = std::time::Instant::now();
        let loss = loss_fn.forward(targeted.forward(x.clone()), y.clone());
        let fit_start = std::time::Instant::now();
        let controlled_fit = controlled.fit(&targeted, loss)?;
        let targeted_fit_ms = ms(fit_start);
        targeted =
            controlled.apply_masks(optim_targeted.step(0.01, targeted, controlled_fit.grads));
        let targeted_ms = ms(start);
        if step > 0 {
            let row = [
                plain_ms,
                plain_backward_ms,
                pruner_ms,
                pruner_fit_ms,
                targeted_ms,
                targeted_fit_ms,
            ];
            for (series, t) in times.iter_mut().zip(row) {
                series.push(t);
            }
        }
        eprintln!(
            "train step {step}: plain {plain_ms:.0} ms (backward {plain_backward_ms:.0}, loss \
             {value:.3}), pruner {pruner_ms:.0} ms (fit {pruner_fit_ms:.0}; {}), targeted \
             {targeted_ms:.0} ms (fit {targeted_fit_ms:.0}; {})",
            fit.summary, controlled_fit.summary
        );
    }
    let [a, b, c, d, e, f] = times.map(median);
    Ok(Training {
        plain_ms: a,
        plain_backward_ms: b,
        pruner_ms: c,
        pruner_fit_ms: d,
        targeted_ms: e,
        targeted_fit_ms: f,
    })
}

/// Dense against compact inference of `model` at each removal rate and batch size.
fn inference<M>(
    name: &str,
    model: M,
    device: &Device,
    runs: [usize; 2],
    onnx_dir: Option<&Path>,
    rows: &mut Vec<Inference>,
) -> Result<(), Box<dyn std::error::Error>>
where
    M: Prunable + Classifier + Costed,
{
    let dense = model.valid();
    if let Some(dir) = onnx_dir {
        let (x, _) = batch(1, device);
        onnx::export(&dense, x, M::logits)?.save(dir.join(format!("{name}_dense.onnx")))?;
    }
    for (batch_size, runs) in [1, 64].into_iter().zip(runs) {
        let (x, _) = batch(batch_size, device);
        let dense_ms = median_ms(runs, || {
            let _ = dense.logits(x.clone()).into_data();
        });
        for removed in [0.0, 0.5, 0.75] {
            let masked = random_stripe_masks(dense.clone(), removed, 7);
            masked.check_input(x.dims())?;
            let compact = texprune::compact(&masked, x.clone(), M::logits)?;
            if let Some(dir) = onnx_dir
                && removed > 0.0
            {
                let rate = (removed * 100.0).round();
                let stripes = OnnxExport::default().with_form(ExportForm::Stripes);
                stripes
                    .export(&compact, x.clone(), M::logits)?
                    .save(dir.join(format!("{name}_{rate}_stripes_b{batch_size}.onnx")))?;
                if batch_size == 1 {
                    onnx::export(&compact, x.clone(), M::logits)?
                        .save(dir.join(format!("{name}_{rate}_box.onnx")))?;
                    // Channel counts kept at multiples of 16 (ONNX Runtime's NCHWc block on
                    // AVX-512).
                    let options = CompactOptions::default().with_channel_multiple(16);
                    let rounded = texprune::compact_with(&masked, x.clone(), M::logits, options)?;
                    onnx::export(&rounded, x.clone(), M::logits)?
                        .save(dir.join(format!("{name}_{rate}_box16.onnx")))?;
                }
            }
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
    match args.part {
        Part::Device => {
            println!("backend {}: {device:?} ok", args.backend);
            return Ok(());
        }
        Part::Suite => {
            // WGSL has no float64: the conformance check runs everywhere else.
            let float64 = args.backend != Backend::Wgpu;
            let failed = texprune_tools::backend_suite::run(&device, float64);
            return match failed.is_empty() {
                true => Ok(()),
                false => Err(format!("backend suite: {} failed", failed.join(", ")).into()),
            };
        }
        _ => {}
    }
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
        let onnx_dir = args.onnx_dir.as_deref();
        inference("resnet56", resnet, &device, runs, onnx_dir, &mut rows)?;
        inference(
            "vgg16",
            VggConfig::vgg16().init(&device)?,
            &device,
            runs,
            onnx_dir,
            &mut rows,
        )?;
    }
    let perf = Perf {
        backend: args.backend.to_string(),
        quick: args.quick,
        training: train,
        overhead_ratio: train.map(|t| t.pruner_ms / t.plain_ms),
        inference: rows,
    };
    println!(
        "backend {}{}",
        perf.backend,
        if args.quick { " (quick)" } else { "" }
    );
    if let Some(t) = &perf.training {
        println!(
            "ResNet-56 training step, batch 64 (medians): plain {:.0} ms (backward {:.0}), with \
             pruner {:.0} ms (fit {:.0}), overhead ratio {:.3}; to a FLOPs target, δ re-solved \
             every step {:.0} ms (fit {:.0}), ratio {:.3}",
            t.plain_ms,
            t.plain_backward_ms,
            t.pruner_ms,
            t.pruner_fit_ms,
            t.pruner_ms / t.plain_ms,
            t.targeted_ms,
            t.targeted_fit_ms,
            t.targeted_ms / t.plain_ms
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
