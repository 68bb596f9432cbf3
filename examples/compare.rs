//! The equal-budget comparison of methods over seeds: the same VGG, optimiser, batch, schedule
//! and epochs, trained dense, with the baselines and with CDP + DTC, each pruned to the same
//! FLOPs target, on the full Fashion-MNIST.
//!
//! ```text
//! cargo run --release --example compare -- --jobs 2                  # every method, seeds 1–3, 60 %
//! cargo run --release --example compare -- --jobs 2 --seeds 1 --targets 0.8 \
//!     --methods l1-filter,swp,cdp-dtc,cdp-dtc-sensitive              # adds the 80 % runs
//! ```
//!
//! Methods (each at the target, through the same masks, controller and compaction):
//! - `dense`: no pruning;
//! - `l1-filter`: L1-norm filter pruning (Li et al., ICLR 2017), [`PrunerConfig::l1_filter`];
//! - `swp`: SWP (Meng et al., NeurIPS 2020), [`PrunerConfig::swp`];
//! - `cdp-dtc`: texprune's default for budgets, [`PrunerConfig::targeted`];
//! - `cdp-dtc-sensitive`: the same, and at the end of warm-up each layer's δ is scaled by its
//!   measured sensitivity ([`SensitivityReport::layer_scales`], on 2,000 training images), so the
//!   sensitive layers give up less of the budget.
//!
//! Data: Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`, 60,000 training
//! and 10,000 test images), zero-padded to 32×32 and repeated into 3 channels. Model: the
//! reference's VGG `[32, M, 64, M, 128, M, 256, M, 512, M]`. Optimiser: SGD, lr 0.1, momentum
//! 0.9, weight decay 1e-4, batch 64, 2 epochs; pruned runs: 10 % warm-up, 50 % pruning, 40 %
//! fine-tuning, the controller sets δ.
//!
//! Every run is written to `--out/runs/<method>-<target>-seed<seed>.json` as it ends and is not
//! run again (unless `--fresh`), so an interrupted comparison continues where it stopped and
//! several invocations add up. `--jobs N` runs N at a time, each in its own process (its log in
//! `runs/<name>.log`). At the end, every run in `runs/` is summarised: `compare.json` (the runs
//! and, per method and target, mean ± standard deviation over seeds), `compare.md` and
//! `compare.svg` (accuracy against FLOPs removed, with error bars).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use texprune::OutputLock;
use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::GradientsParams;
use texprune::checkpoint::write_atomic;
use texprune::data::{ImageBatcher, ImageSet, Normalization, Split, mnist};
use texprune::layer::human;
use texprune::plots::{MethodSeries, plot_methods};
use texprune::report::{Evaluation, RunReport};
use texprune::sensitivity::{SensitivityReport, Sweep, analyze};
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{
    Classifier, Costed, Phase, Prunable, Pruner, PrunerConfig, Quantity, Schedule, Target,
};
use texprune_tools::cli::Backend;
use texprune_tools::scaffold::{Batches, sgd};

/// A pruning method of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Method {
    /// No pruning.
    Dense,
    /// L1-norm filter pruning (Li et al., ICLR 2017).
    L1Filter,
    /// SWP (Meng et al., NeurIPS 2020): L1 on the skeleton, one global threshold.
    Swp,
    /// CDP + DTC with the default coefficients for budgets.
    CdpDtc,
    /// CDP + DTC with per-layer thresholds scaled by the measured sensitivity.
    CdpDtcSensitive,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::L1Filter => "l1-filter",
            Self::Swp => "swp",
            Self::CdpDtc => "cdp-dtc",
            Self::CdpDtcSensitive => "cdp-dtc-sensitive",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum LrSchedule {
    /// The same learning rate throughout.
    Constant,
    /// Cosine decay from `--lr` to 0.
    Cosine,
}

/// Methods against each other at the same training budget and cost target, over seeds.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(about, args_override_self = true)]
struct Args {
    /// Fashion-MNIST folder (IDX files, plain or gzip).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data_dir: PathBuf,
    /// Methods to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Method::Dense, Method::L1Filter, Method::Swp, Method::CdpDtc, Method::CdpDtcSensitive])]
    methods: Vec<Method>,
    /// Seeds of the initialisation and the data order, comma-separated (one run per seed).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    seeds: Vec<u64>,
    /// Fractions of the target quantity to remove, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.6])]
    targets: Vec<f64>,
    /// The quantity the targets count: flops, macs, params or stripes.
    #[arg(long, default_value = "flops")]
    quantity: Quantity,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = texprune_tools::cli::positive)]
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
    /// Fraction of training spent in warm-up (penalty on, nothing pruned).
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Fraction of training spent pruning; fine-tuning follows.
    #[arg(long, default_value_t = 0.5)]
    prune: f64,
    /// CDP coefficients of the `cdp-dtc` methods, overriding `CdpConfig::budget_default` (weight
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
    /// Use only the first N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Runs at a time, each in its own process.
    #[arg(long, default_value_t = 1, value_parser = texprune_tools::cli::positive)]
    jobs: usize,
    /// Run again the runs whose results are already in `--out/runs`.
    #[arg(long)]
    fresh: bool,
    /// Only summarise the runs already in `--out/runs`.
    #[arg(long)]
    summarize: bool,
    /// Output folder.
    #[arg(long, default_value = "target/compare")]
    out: PathBuf,
    /// Backend: cpu (= flex), ndarray, wgpu or cuda (the last three behind cargo features).
    #[arg(long, default_value = "cpu")]
    backend: Backend,
    /// Run exactly this one run, `METHOD:SEED:TARGET` (what `--jobs` hands its processes).
    #[arg(long, hide = true)]
    only: Option<String>,
}

/// One run to do.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RunKey {
    method: Method,
    seed: u64,
    /// None for the dense run.
    target: Option<f64>,
}

impl RunKey {
    /// The file stem of its results: `cdp-dtc-60-seed1`, `dense-seed2`.
    fn stem(&self) -> String {
        match self.target {
            Some(t) => format!(
                "{}-{}-seed{}",
                self.method.name(),
                (100.0 * t).round(),
                self.seed
            ),
            None => format!("{}-seed{}", self.method.name(), self.seed),
        }
    }

    fn spec(&self) -> String {
        format!(
            "{}:{}:{}",
            self.method.name(),
            self.seed,
            self.target.unwrap_or(0.0)
        )
    }

    fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let [method, seed, target] = parts[..] else {
            return Err(format!("--only {spec}: expected METHOD:SEED:TARGET"));
        };
        let method = Method::from_str(method, false)?;
        let seed = seed
            .parse()
            .map_err(|e| format!("--only seed {seed}: {e}"))?;
        let target: f64 = target
            .parse()
            .map_err(|e| format!("--only target {target}: {e}"))?;
        Ok(Self {
            method,
            seed,
            target: (method != Method::Dense).then_some(target),
        })
    }
}

/// One trained run, measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRow {
    method: Method,
    seed: u64,
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
    /// Per thresholded conv, its live-stripe fraction.
    layers: Vec<(String, f64)>,
    /// The per-layer multipliers of δ (the sensitivity-aware method).
    layer_scales: Vec<(String, f64)>,
    /// Training wall time (the sensitivity measurement included).
    train_seconds: f64,
    /// Median latency of the model as trained and of the compact model, batch 64.
    latency_ms: f64,
    latency_compact_ms: f64,
    /// Final δ the controller set.
    threshold: Option<f64>,
}

/// Mean and sample standard deviation over the seeds of one method at one target.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    method: Method,
    target: Option<f64>,
    seeds: Vec<u64>,
    accuracy: (f64, f64),
    /// Mean accuracy minus the dense runs' mean accuracy.
    delta_vs_dense: Option<f64>,
    /// Per seed, accuracy minus the dense run's of the same seed (same initialisation and data
    /// order): mean and standard deviation over the seeds that have both.
    paired_delta: Option<(f64, f64)>,
    flops: (f64, f64),
    flops_removed: (f64, f64),
    params: (f64, f64),
    latency_compact_ms: (f64, f64),
    /// Mean live-stripe fraction per layer.
    layers: Vec<(String, f64)>,
}

/// `compare.json`.
#[derive(Debug, Serialize)]
struct Comparison {
    flops_dense: u64,
    params_dense: u64,
    /// Wall time of this invocation.
    wall_seconds: f64,
    /// Sum of the runs' training times.
    train_seconds_total: f64,
    summary: Vec<Summary>,
    runs: Vec<RunRow>,
    args: Args,
}

fn reference_vgg() -> VggConfig {
    use VggLayer::{Conv as C, MaxPool as M};
    VggConfig::new(vec![C(32), M, C(64), M, C(128), M, C(256), M, C(512), M])
}

fn main() -> ExitCode {
    texprune_tools::cli::exit(run_main(Args::parse()))
}

fn run_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    for &t in &args.targets {
        Target::new(args.quantity, t).validate()?;
    }
    // The comparison holds its folder; its `--only` workers write one run file each inside it.
    let _lock = match args.only {
        None => Some(OutputLock::acquire(&args.out)?),
        Some(_) => None,
    };
    let runs_dir = args.out.join("runs");
    std::fs::create_dir_all(&runs_dir)?;
    if let Some(spec) = &args.only {
        let key = RunKey::parse(spec)?;
        let (train, test) = load(&args)?;
        let row = run(&args, key, &train, &test)?;
        return save(&runs_dir, &key, &row);
    }
    if !args.summarize {
        let todo: Vec<RunKey> = keys(&args)
            .into_iter()
            .filter(|k| args.fresh || !runs_dir.join(format!("{}.json", k.stem())).exists())
            .collect();
        println!("{} runs to do, {} at a time", todo.len(), args.jobs);
        if args.jobs == 1 {
            let (train, test) = load(&args)?;
            for key in todo {
                let row = run(&args, key, &train, &test)?;
                save(&runs_dir, &key, &row)?;
            }
        } else {
            run_in_processes(&args, &runs_dir, todo)?;
        }
    }
    summarize(&args, &runs_dir, start)
}

/// Every run the arguments ask for: per seed, the dense run and each pruned method per target.
fn keys(args: &Args) -> Vec<RunKey> {
    let mut keys = Vec::new();
    for &seed in &args.seeds {
        for &method in &args.methods {
            match method {
                Method::Dense => keys.push(RunKey {
                    method,
                    seed,
                    target: None,
                }),
                _ => keys.extend(args.targets.iter().map(|&t| RunKey {
                    method,
                    seed,
                    target: Some(t),
                })),
            }
        }
    }
    keys
}

fn load(args: &Args) -> Result<(ImageSet, ImageSet), Box<dyn std::error::Error>> {
    let load = |split, limit: Option<usize>| -> Result<ImageSet, Box<dyn std::error::Error>> {
        let set = mnist(&args.data_dir, split)?.padded_to([3, 32, 32])?;
        Ok(limit.map_or(set.clone(), |n| set.take(n)))
    };
    let (train, test) = (
        load(Split::Train, args.limit_train)?,
        load(Split::Test, args.limit_test)?,
    );
    println!(
        "Fashion-MNIST from {}: {} training, {} test images, padded to 3×32×32",
        args.data_dir.display(),
        train.len(),
        test.len()
    );
    Ok((train, test))
}

fn save(runs_dir: &Path, key: &RunKey, row: &RunRow) -> Result<(), Box<dyn std::error::Error>> {
    let path = runs_dir.join(format!("{}.json", key.stem()));
    write_atomic(&path, serde_json::to_string_pretty(row)?.as_bytes())?;
    Ok(())
}

/// Runs `todo`, `args.jobs` at a time, each as this program with `--only`; every process writes
/// its own result and log. Fails after all have ended if any failed.
fn run_in_processes(
    args: &Args,
    runs_dir: &Path,
    mut todo: Vec<RunKey>,
) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let passed: Vec<String> = std::env::args().skip(1).collect();
    todo.reverse();
    let mut running: Vec<(RunKey, Child, Instant)> = Vec::new();
    let mut failed = Vec::new();
    while !todo.is_empty() || !running.is_empty() {
        while running.len() < args.jobs
            && let Some(key) = todo.pop()
        {
            let log = std::fs::File::create(runs_dir.join(format!("{}.log", key.stem())))?;
            let child = Command::new(&exe)
                .args(&passed)
                .args(["--jobs", "1", "--only", &key.spec()])
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()?;
            println!("started {}", key.stem());
            running.push((key, child, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut i = 0;
        while i < running.len() {
            match running[i].1.try_wait()? {
                Some(status) => {
                    let (key, _, started) = running.swap_remove(i);
                    let seconds = started.elapsed().as_secs_f64();
                    if status.success() {
                        println!("finished {} in {seconds:.0} s", key.stem());
                    } else {
                        println!("FAILED {} ({status}), see its log", key.stem());
                        failed.push(key.stem());
                    }
                }
                None => i += 1,
            }
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(format!("runs failed: {}", failed.join(", ")).into()),
    }
}

/// Trains one run and measures it.
fn run(
    args: &Args,
    key: RunKey,
    train: &ImageSet,
    test: &ImageSet,
) -> Result<RunRow, Box<dyn std::error::Error>> {
    let device = args.backend.device()?;
    let started = Instant::now();
    let train_device = device.clone().autodiff();
    train_device.seed(key.seed);
    let mut model: Vgg = reference_vgg().init(&train_device)?;
    let steps_per_epoch = train.len().div_ceil(args.batch);
    let total_steps = (args.epochs * steps_per_epoch) as u64;
    let schedule = Schedule::fractions(total_steps, args.warmup, args.prune);
    let mut pruner = match key.target {
        Some(t) => {
            let target = Target::new(args.quantity, t).with_input_size([32, 32]);
            let config = match key.method {
                Method::L1Filter => PrunerConfig::l1_filter(target, schedule.clone()),
                Method::Swp => PrunerConfig::swp(target, schedule.clone()),
                _ => {
                    let mut config = PrunerConfig::targeted(target, schedule.clone());
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
                    config
                }
            };
            Some(Pruner::new(config)?)
        }
        None => None,
    };
    let name = key.stem();
    let mut optim = sgd(args.momentum, args.weight_decay);
    let normalization = Normalization {
        mean: vec![0.2860; 3],
        std: vec![0.3530; 3],
    };
    let batcher = ImageBatcher::new(normalization.clone(), None, key.seed);
    let eval_batcher = ImageBatcher::new(normalization, None, 0);
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let style = ProgressStyle::with_template(
        "{prefix:>24} epoch {msg:.dim} {bar:25} {pos}/{len} {elapsed_precise}",
    )?;
    let batches = Batches::new(train, &batcher, args.batch, key.seed);
    let mut step = 0u64;
    let mut last = None;
    let mut layer_scales = Vec::new();
    for epoch in 0..args.epochs {
        let bar = ProgressBar::new(steps_per_epoch as u64)
            .with_style(style.clone())
            .with_prefix(name.clone());
        for batch in batches.epoch(epoch, 0, &train_device) {
            let (_, batch) = batch?;
            if let Some(p) = &mut pruner
                && key.method == Method::CdpDtcSensitive
                && p.phase() == Phase::Prune
                && layer_scales.is_empty()
            {
                let report = sensitivity(&model.valid(), train, &eval_batcher, &device)?;
                layer_scales = report.layer_scales();
                println!("\nlayer scales from the sensitivity: {layer_scales:?}");
                p.set_layer_scales(layer_scales.clone())?;
            }
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
    let eval = Evaluation {
        test,
        batcher: &eval_batcher,
        device: &device,
        input_size: [32, 32],
        probe: 64,
        runs: 20,
    };
    let example = eval.first_images(8)?;
    let compact = match &pruner {
        Some(p) => p.compact(&masked, example, Vgg::forward)?,
        None => texprune::compact(&masked, example, Vgg::forward)?,
    };
    let (report, _, _) = RunReport::measure(&masked, &compact, &eval)?;
    let layers: Vec<(String, f64)> = masked
        .collect_prunable()
        .iter()
        .filter(|l| l.thresholded)
        .map(|l| {
            let s: Vec<f64> = l.skeleton.clone().into_data().iter::<f64>().collect();
            let live = s.iter().filter(|v| **v != 0.0).count();
            (l.name.clone(), live as f64 / s.len().max(1) as f64)
        })
        .collect();
    let total_stripes: u64 = masked
        .cost([32, 32])
        .layers
        .iter()
        .map(|l| l.skeleton)
        .sum();
    let row = RunRow {
        method: key.method,
        seed: key.seed,
        target: key.target,
        accuracy: report.accuracy_masked,
        accuracy_compact: report.accuracy_compact,
        params: report.params_compact,
        flops: report.flops_compact,
        macs: report.macs_compact,
        flops_removed: report.flops_removed(),
        params_removed: report.params_removed(),
        live_stripes: last.as_ref().map_or(total_stripes, |s| s.live_stripes),
        total_stripes: last.as_ref().map_or(total_stripes, |s| s.total_stripes),
        layers,
        layer_scales,
        train_seconds,
        latency_ms: report.latency_masked_ms,
        latency_compact_ms: report.latency_compact_ms,
        threshold: last.as_ref().map(|s| s.threshold),
    };
    println!(
        "{name}: test accuracy {:.2} %, {} FLOPs ({:.1} % removed), {:.0} s",
        100.0 * row.accuracy,
        human(row.flops),
        100.0 * row.flops_removed,
        row.train_seconds
    );
    Ok(row)
}

/// Each layer's sensitivity on the last 2,000 training images (the DTC mask of that layer alone
/// at δ = 0.03 … 0.5).
fn sensitivity(
    model: &Vgg,
    train: &ImageSet,
    batcher: &ImageBatcher,
    device: &texprune::burn::tensor::Device,
) -> Result<SensitivityReport, Box<dyn std::error::Error>> {
    let n = train.len().min(2000);
    let held = train.select(&(train.len() - n..train.len()).collect::<Vec<_>>(), "held");
    Ok(analyze(
        model,
        &held,
        batcher,
        device,
        &Sweep::new(vec![0.03, 0.05, 0.1, 0.2, 0.3, 0.5], 0.01),
        |_| {},
    )?)
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let var = match values.len() {
        0 | 1 => 0.0,
        _ => values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0),
    };
    (mean, var.sqrt())
}

/// Reads every run in `runs_dir`, summarises them per method and target, and writes
/// `compare.json`, `compare.md` and `compare.svg`.
fn summarize(
    args: &Args,
    runs_dir: &Path,
    start: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(runs_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let text = std::fs::read_to_string(&path)?;
        let row: RunRow =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        runs.push(row);
    }
    let mut groups: BTreeMap<(Method, Option<u64>), Vec<&RunRow>> = BTreeMap::new();
    for r in &runs {
        let target = r.target.map(|t| (t * 1e6).round() as u64);
        groups.entry((r.method, target)).or_default().push(r);
    }
    let stat = |rows: &[&RunRow], f: fn(&RunRow) -> f64| {
        mean_std(&rows.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let dense_mean = groups
        .get(&(Method::Dense, None))
        .map(|rows| stat(rows, |r| r.accuracy).0);
    let dense_of_seed = |seed: u64| {
        runs.iter()
            .find(|r| r.method == Method::Dense && r.seed == seed)
            .map(|r| r.accuracy)
    };
    let summary: Vec<Summary> = groups
        .iter()
        .map(|(&(method, _), rows)| {
            let accuracy = stat(rows, |r| r.accuracy);
            let paired: Vec<f64> = rows
                .iter()
                .filter_map(|r| dense_of_seed(r.seed).map(|d| r.accuracy - d))
                .collect();
            let names: Vec<String> = rows[0].layers.iter().map(|(n, _)| n.clone()).collect();
            let layers = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let live: Vec<f64> = rows
                        .iter()
                        .filter_map(|r| r.layers.get(i).map(|l| l.1))
                        .collect();
                    (n.clone(), mean_std(&live).0)
                })
                .collect();
            Summary {
                method,
                target: rows[0].target,
                seeds: rows.iter().map(|r| r.seed).collect(),
                accuracy,
                delta_vs_dense: dense_mean.map(|d| accuracy.0 - d),
                paired_delta: (!paired.is_empty()).then(|| mean_std(&paired)),
                flops: stat(rows, |r| r.flops as f64),
                flops_removed: stat(rows, |r| r.flops_removed),
                params: stat(rows, |r| r.params as f64),
                latency_compact_ms: stat(rows, |r| r.latency_compact_ms),
                layers,
            }
        })
        .collect();
    let dense_cost = reference_vgg()
        .init(&args.backend.device()?)?
        .cost([32, 32]);
    let comparison = Comparison {
        flops_dense: dense_cost.flops(),
        params_dense: dense_cost.params(),
        wall_seconds: start.elapsed().as_secs_f64(),
        train_seconds_total: runs.iter().map(|r| r.train_seconds).sum(),
        summary,
        runs: runs.clone(),
        args: args.clone(),
    };
    let table = table(&comparison);
    println!("\n{table}");
    write_atomic(
        &args.out.join("compare.json"),
        serde_json::to_string_pretty(&comparison)?.as_bytes(),
    )?;
    write_atomic(&args.out.join("compare.md"), table.as_bytes())?;
    plot(&comparison, &args.out.join("compare.svg"))?;
    println!(
        "wrote compare.json, compare.md and compare.svg into {}",
        args.out.display()
    );
    Ok(())
}

/// Accuracy (%) against FLOPs removed (%), one line per method; the dense runs are each
/// method's point at 0.
fn plot(c: &Comparison, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dense = c.summary.iter().find(|s| s.method == Method::Dense);
    let point = |s: &Summary| {
        (
            100.0 * s.flops_removed.0,
            100.0 * s.accuracy.0,
            100.0 * s.accuracy.1,
        )
    };
    let mut series: Vec<MethodSeries> = Vec::new();
    for s in c.summary.iter().filter(|s| s.method != Method::Dense) {
        match series.iter_mut().find(|m| m.name == s.method.name()) {
            Some(m) => m.points.push(point(s)),
            None => series.push(MethodSeries {
                name: s.method.name().to_string(),
                points: dense.map(point).into_iter().chain([point(s)]).collect(),
            }),
        }
    }
    for m in &mut series {
        m.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    if series.is_empty()
        && let Some(d) = dense
    {
        series.push(MethodSeries {
            name: "dense".into(),
            points: vec![point(d)],
        });
    }
    plot_methods(
        path,
        "VGG on Fashion-MNIST: test accuracy at equal FLOPs (mean ± std over seeds)",
        "FLOPs removed (%)",
        "test accuracy (%)",
        &series,
    )?;
    Ok(())
}

/// The Markdown tables: the summary, then every run.
fn table(c: &Comparison) -> String {
    let pm = |(m, s): (f64, f64), scale: f64, digits: usize| {
        format!(
            "{:.digits$} ± {:.digits$}",
            m * scale,
            s * scale,
            digits = digits
        )
    };
    let mut out = format!(
        "VGG [32, M, 64, M, 128, M, 256, M, 512, M] on Fashion-MNIST (3×32×32), {} epochs, \
         dense {} FLOPs, {} params; mean ± standard deviation over seeds\n\n\
         | method | target | seeds | test accuracy (%) | Δ vs dense (pt) | Δ vs dense, paired by seed (pt) \
         | FLOPs removed (%) | params | compact latency b64 (ms) | live stripes per layer (%) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        c.args.epochs,
        human(c.flops_dense),
        human(c.params_dense)
    );
    for s in &c.summary {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.method.name(),
            s.target
                .map_or("–".into(), |t| format!("{:.0} %", 100.0 * t)),
            s.seeds.len(),
            pm(s.accuracy, 100.0, 2),
            s.delta_vs_dense
                .map_or("–".into(), |d| format!("{:+.2}", 100.0 * d)),
            s.paired_delta.map_or("–".into(), |(m, sd)| {
                format!("{:+.2} ± {:.2}", 100.0 * m, 100.0 * sd)
            }),
            pm(s.flops_removed, 100.0, 1),
            human(s.params.0.round() as u64),
            pm(s.latency_compact_ms, 1.0, 1),
            s.layers
                .iter()
                .map(|(_, l)| format!("{:.0}", 100.0 * l))
                .collect::<Vec<_>>()
                .join(" / "),
        );
    }
    out += "\n| run | test accuracy | compact accuracy | FLOPs | FLOPs removed | params | \
            live stripes | train time | latency b64 (as trained → compact) |\n\
            |---|---|---|---|---|---|---|---|---|\n";
    for r in &c.runs {
        let key = RunKey {
            method: r.method,
            seed: r.seed,
            target: r.target,
        };
        out += &format!(
            "| {} | {:.2} % | {:.2} % | {} | {:.1} % | {} | {}/{} | {:.0} s | {:.1} → {:.1} ms |\n",
            key.stem(),
            100.0 * r.accuracy,
            100.0 * r.accuracy_compact,
            human(r.flops),
            100.0 * r.flops_removed,
            human(r.params),
            r.live_stripes,
            r.total_stripes,
            r.train_seconds,
            r.latency_ms,
            r.latency_compact_ms
        );
    }
    out
}
