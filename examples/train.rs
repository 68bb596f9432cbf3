//! The full training recipe: CDP + DTC on CIFAR-10/100, Fashion-MNIST or an image folder, with
//! the reference's schedule as defaults, checkpoints, exact resume, compaction and a report.
//!
//! ```text
//! cargo run --release --example train -- --dataset cifar10 --data-dir cifar-10-batches-bin \
//!     --model resnet56 --l1 1e-5 --threshold 0.01
//! cargo run --release --example train -- --dataset fashion-mnist --model small --epochs 10
//! cargo run --release --example train -- ... --resume       # continue from the last checkpoint
//! cargo run --release --example train -- --dataset fashion-mnist --cifar-shape --model resnet20 \
//!     --init-from tests/data/torch/resnet20_reference.pth --target 0.5 --epochs 5
//! ```
//!
//! `--init-from` starts from PyTorch weights (`.pth`, `.pt` or `.safetensors`: a state dict in
//! the reference code's or torchvision's names, `texprune::pytorch`) instead of a fresh
//! initialisation; `--model` must have their shapes.
//!
//! Defaults follow the reference (METHOD §7): 160 epochs, batch 64, SGD lr 0.1, momentum 0.9,
//! weight decay 1e-4 (skeletons included), lr × 0.1 at 60 %, 75 % and 90 % of the epochs (when
//! there are more than 20), pad-4 crop + flip augmentation on CIFAR. After every epoch the model
//! is evaluated and `last.ckpt` (and `best.ckpt` when the accuracy improves) are written
//! atomically into `--out`, with the model, the optimizer's momentum, the pruner's state and the
//! position (also every `--checkpoint-every` steps). `--resume` continues from `last.ckpt` at the
//! batch after it; data order and augmentation depend only on the seed and the position in
//! training, so a resumed run repeats the uninterrupted one, bit for bit. A resumed run takes the
//! same arguments (only `--data-dir`, `--out`, `--checkpoint-every` and `--backend` may change);
//! other arguments are refused. Bad input (a negative coefficient, a damaged dataset or
//! checkpoint) ends the program with one line of error and status 1, before any file is written.
//! At the end
//! the model is compacted and `masked.bpk` (the trained model's record), `report.json`,
//! `report.md`, `structure.json`, `cost.json`, the texture plots at the start and the end, the
//! texture history (`texture-history.json`, `.svg`) and the compact model for PyTorch are
//! written: `compact.safetensors` and `compact.json` (`texprune::pytorch::export`), with
//! `probe.safetensors`, eight test images and the compact model's logits on them, for
//! `scripts/read_compact.py` to check its rebuild against.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::{Deserialize, Serialize};
use texprune::OutputLock;
use texprune::burn::data::dataset::Dataset;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::ModuleOptimizer;
use texprune::burn::tensor::Device;
use texprune::burn::tensor::TensorData;
use texprune::checkpoint;
use texprune::checkpoint::write_atomic;
use texprune::data::{
    Augmentation, Cifar100Labels, DataError, ImageBatcher, ImageFolder, ImageItem, ImageSet,
    Normalization, Split, cifar10, cifar100, mnist,
};
use texprune::history::TextureHistory;
use texprune::pytorch;
use texprune::report::{Evaluation, RunReport, accuracy, write_run};
use texprune::zoo::resnet::ResNetConfig;
use texprune::zoo::vgg::VggConfig;
use texprune::{
    CdpConfig, Classifier, Costed, DtcConfig, Formula, Prunable, Pruner, PrunerConfig, Quantity,
    Schedule, Target, ThresholdRamp, TorchLayout,
};
use texprune_tools::cli::Backend;
use texprune_tools::scaffold::{Batches, Finished, begin, epoch_bar, sgd};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DatasetKind {
    Cifar10,
    Cifar100,
    FashionMnist,
    Imagefolder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ModelKind {
    /// The quickstart's VGG `[32, M, 64, M, 128, M]`.
    Small,
    Vgg11,
    Vgg13,
    Vgg16,
    Vgg19,
    Resnet20,
    Resnet32,
    Resnet44,
    Resnet56,
    Resnet110,
    Resnet18,
    Resnet34,
    Resnet50,
}

/// A zoo model's configuration, before the dataset's classes and image shape are set.
enum Architecture {
    Vgg(VggConfig),
    ResNet(ResNetConfig),
}

impl ModelKind {
    /// The configuration `--model` names.
    fn architecture(self) -> Architecture {
        use Architecture::{ResNet, Vgg};
        match self {
            Self::Small => Vgg(VggConfig::small()),
            Self::Vgg11 => Vgg(VggConfig::vgg11()),
            Self::Vgg13 => Vgg(VggConfig::vgg13()),
            Self::Vgg16 => Vgg(VggConfig::vgg16()),
            Self::Vgg19 => Vgg(VggConfig::vgg19()),
            Self::Resnet20 => ResNet(ResNetConfig::cifar(20)),
            Self::Resnet32 => ResNet(ResNetConfig::cifar(32)),
            Self::Resnet44 => ResNet(ResNetConfig::cifar(44)),
            Self::Resnet56 => ResNet(ResNetConfig::cifar(56)),
            Self::Resnet110 => ResNet(ResNetConfig::cifar(110)),
            Self::Resnet18 => ResNet(ResNetConfig::imagenet(18)),
            Self::Resnet34 => ResNet(ResNetConfig::imagenet(34)),
            Self::Resnet50 => ResNet(ResNetConfig::imagenet(50)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FormulaKind {
    Corrected,
    Reference,
}

/// CDP + DTC training with checkpoints, then compaction.
#[derive(Parser, Debug, Clone, Serialize, Deserialize)]
#[command(version, about, args_override_self = true)]
struct Args {
    /// Dataset.
    #[arg(long, value_enum, default_value = "cifar10")]
    dataset: DatasetKind,
    /// Dataset folder (CIFAR `.bin` files, IDX files, or an image folder with `train/` and
    /// `val/`). Fashion-MNIST defaults to Debian's `/usr/share/datasets/fashion-mnist`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Model.
    #[arg(long, value_enum, default_value = "resnet56")]
    model: ModelKind,
    /// Start from these PyTorch weights (`.pth`, `.pt` or `.safetensors`) instead of a fresh
    /// initialisation; `--model` (and the dataset's classes and channels) must fit them.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Fashion-MNIST as 3×32×32 (zero-padded, the grey channel repeated), for CIFAR models and
    /// their pretrained weights.
    #[arg(long)]
    cifar_shape: bool,
    /// Epochs.
    #[arg(long, default_value_t = 160)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = texprune_tools::cli::positive)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay (also on the skeletons, as the reference).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// CDP: weight texture coefficient.
    #[arg(long, default_value_t = 0.0)]
    weight_texture: f64,
    /// CDP: skeleton texture coefficient.
    #[arg(long, default_value_t = 0.0)]
    skeleton_texture: f64,
    /// CDP: L1 coefficient on the skeleton (SWP's published setting: 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    l1: f64,
    /// CDP: L2 coefficient on the skeleton.
    #[arg(long, default_value_t = 0.0)]
    l2: f64,
    /// CDP: group coefficient.
    #[arg(long, default_value_t = 0.0)]
    group: f64,
    /// CDP: texture-adaptive coefficient.
    #[arg(long, default_value_t = 0.0)]
    adaptive: f64,
    /// CDP formulas: as the paper (`corrected`) or as the reference code.
    #[arg(long, value_enum, default_value = "corrected")]
    formula: FormulaKind,
    /// DTC base threshold.
    #[arg(long, default_value_t = 0.01)]
    threshold: f64,
    /// Epochs over which the threshold rises linearly from 0 (0: from the start; ignored with
    /// `--target`).
    #[arg(long, default_value_t = 0)]
    threshold_warmup: usize,
    /// Prune to a budget: remove at least this fraction of `--quantity`; the DTC threshold is
    /// then set by the controller (docs/budget.md).
    #[arg(long)]
    target: Option<f64>,
    /// The quantity `--target` counts: flops, macs, params or stripes.
    #[arg(long, default_value = "flops")]
    quantity: Quantity,
    /// With `--target`: fraction of training spent in warm-up (penalty on, nothing pruned).
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// With `--target`: fraction of training spent pruning; fine-tuning follows.
    #[arg(long, default_value_t = 0.5)]
    prune: f64,
    /// Seed of the initialisation, the data order and the augmentation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Image folder: side of the centre crop (the resize is 8/7 of it).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(1..))]
    image_size: u32,
    /// Output folder: checkpoints, report, plots.
    #[arg(long, default_value = "target/train")]
    out: PathBuf,
    /// Also write the compact model as ONNX to this file (`texprune::onnx`; batch axis dynamic).
    #[arg(long)]
    #[serde(default)]
    export_onnx: Option<PathBuf>,
    /// Record the per-layer texture statistics every N steps (`texture-history.json/.svg`).
    #[arg(long, default_value_t = 50)]
    history_every: usize,
    /// Also write `last.ckpt` every N training steps (0: only after each epoch).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Continue from `<out>/last.ckpt`.
    #[arg(long)]
    resume: bool,
    /// Backend: cpu (= flex), ndarray, wgpu or cuda (the last three behind cargo features).
    #[arg(long, default_value = "cpu")]
    backend: Backend,
}

/// Arguments a resumed run may change: where the data and the outputs are, how often to
/// checkpoint, the backend. Every other argument must match the checkpoint's run.
const MAY_CHANGE_ON_RESUME: [&str; 5] =
    ["data_dir", "out", "resume", "checkpoint_every", "backend"];

/// Fails unless `now` continues the run that wrote `saved`.
fn check_same_run(saved: &Args, now: &Args) -> Result<(), String> {
    let (saved, now) = (
        serde_json::to_value(saved).map_err(|e| e.to_string())?,
        serde_json::to_value(now).map_err(|e| e.to_string())?,
    );
    let (Some(saved), Some(now)) = (saved.as_object(), now.as_object()) else {
        return Err("arguments are not a JSON object".into());
    };
    for (key, value) in saved {
        let given = now.get(key).unwrap_or(&serde_json::Value::Null);
        if !MAY_CHANGE_ON_RESUME.contains(&key.as_str()) && given != value {
            let shown = |v: &serde_json::Value| v.as_str().map_or(v.to_string(), str::to_owned);
            return Err(format!(
                "the checkpoint was written by a run with --{} {}, this run has {}: \
                 resume with the same arguments",
                key.replace('_', "-"),
                shown(value),
                shown(given)
            ));
        }
    }
    Ok(())
}

/// What a checkpoint records besides the model, optimizer and pruner.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    /// Epochs completed.
    epochs_done: usize,
    /// Batches completed in the epoch under way.
    batches_done: usize,
    /// Best held-out accuracy so far.
    best_accuracy: f64,
    /// Steps completed.
    steps: usize,
    /// Texture statistics recorded so far.
    history: TextureHistory,
    /// The arguments of the run.
    args: Args,
}

type Items = Box<dyn Dataset<ImageItem, DataError>>;

fn limit(set: ImageSet, n: Option<usize>) -> ImageSet {
    match n {
        Some(n) => set.take(n),
        None => set,
    }
}

/// The data of a run.
struct Data {
    train: Items,
    test: Items,
    /// Input `[C, H, W]`.
    shape: [usize; 3],
    classes: usize,
    normalization: Normalization,
    augmentation: Option<Augmentation>,
}

fn datasets(args: &Args) -> Result<Data, DataError> {
    let dir = |default: &str| {
        args.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(default))
    };
    match args.dataset {
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let dir = dir("cifar-10-batches-bin");
            let (train, test) = if args.dataset == DatasetKind::Cifar10 {
                (cifar10(&dir, Split::Train)?, cifar10(&dir, Split::Test)?)
            } else {
                (
                    cifar100(&dir, Split::Train, Cifar100Labels::Fine)?,
                    cifar100(&dir, Split::Test, Cifar100Labels::Fine)?,
                )
            };
            Ok(Data {
                classes: train.classes,
                train: Box::new(limit(train, args.limit_train)),
                test: Box::new(limit(test, args.limit_test)),
                shape: [3, 32, 32],
                normalization: Normalization::cifar(),
                augmentation: Some(Augmentation::cifar()),
            })
        }
        DatasetKind::FashionMnist => {
            let dir = dir("/usr/share/datasets/fashion-mnist");
            let (mut train, mut test) = (mnist(&dir, Split::Train)?, mnist(&dir, Split::Test)?);
            let mut normalization = Normalization::fashion_mnist();
            if args.cifar_shape {
                (train, test) = (train.padded_to([3, 32, 32])?, test.padded_to([3, 32, 32])?);
                normalization.mean = vec![normalization.mean[0]; 3];
                normalization.std = vec![normalization.std[0]; 3];
            }
            Ok(Data {
                shape: train.shape,
                train: Box::new(limit(train, args.limit_train)),
                test: Box::new(limit(test, args.limit_test)),
                classes: 10,
                normalization,
                augmentation: Some(Augmentation { pad: 2, flip: true }),
            })
        }
        DatasetKind::Imagefolder => {
            let root = dir("imagenet");
            let (crop, resize) = (args.image_size, args.image_size * 8 / 7);
            let mut train = ImageFolder::new(&root.join("train"), resize, crop)?;
            let mut test = ImageFolder::new(&root.join("val"), resize, crop)?;
            if let Some(n) = args.limit_train {
                train.items.truncate(n);
            }
            if let Some(n) = args.limit_test {
                test.items.truncate(n);
            }
            let c = crop as usize;
            Ok(Data {
                classes: train.classes.len(),
                train: Box::new(train),
                test: Box::new(test),
                shape: [3, c, c],
                normalization: Normalization::imagenet(),
                augmentation: Some(Augmentation { pad: 0, flip: true }),
            })
        }
    }
}

fn learning_rate(args: &Args, epoch: usize) -> f64 {
    if args.epochs <= 20 {
        return args.lr;
    }
    let drops = [0.6, 0.75, 0.9]
        .iter()
        .filter(|&&f| epoch as f64 >= f * args.epochs as f64)
        .count();
    args.lr * 0.1f64.powi(drops as i32)
}

/// The pruner of the run, for `total_steps` of training on `input_size` images.
fn pruner_config(args: &Args, total_steps: u64, input_size: [usize; 2]) -> PrunerConfig {
    let config = PrunerConfig::new(
        CdpConfig::new()
            .with_weight_texture(args.weight_texture)
            .with_skeleton_texture(args.skeleton_texture)
            .with_l1(args.l1)
            .with_l2(args.l2)
            .with_group(args.group)
            .with_adaptive(args.adaptive)
            .with_formula(match args.formula {
                FormulaKind::Corrected => Formula::Corrected,
                FormulaKind::Reference => Formula::Reference,
            }),
        DtcConfig::new().with_threshold(args.threshold),
    );
    match args.target {
        Some(remove) => config
            .with_target(Some(
                Target::new(args.quantity, remove).with_input_size(input_size),
            ))
            .with_schedule(Some(Schedule::fractions(
                total_steps,
                args.warmup,
                args.prune,
            ))),
        // δ rises from 0 over the first `--threshold-warmup` epochs, then every step prunes.
        None if args.threshold_warmup > 0 => {
            let per_epoch = total_steps / args.epochs.max(1) as u64;
            let steps = (args.threshold_warmup as u64 * per_epoch).max(1);
            let ramp = ThresholdRamp::new(args.threshold, steps);
            let schedule = Schedule::new(0, total_steps.max(1)).with_threshold_ramp(Some(ramp));
            config.with_schedule(Some(schedule))
        }
        None => config,
    }
}

fn main() -> ExitCode {
    texprune_tools::cli::exit(run_main(Args::parse()))
}

fn run_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.backend.device()?;
    // A bad configuration fails here, before any data is read or any file is written (the
    // schedule's length and the input size are placeholders until the data is known).
    Pruner::new(pruner_config(&args, 1, [32, 32]))?;
    // One run per output folder, until this one ends (a killed run's lock goes with it).
    let _lock = OutputLock::acquire(&args.out)?;
    let data = datasets(&args)?;
    let ([c, h, w], classes) = (data.shape, data.classes);
    println!(
        "{:?}: {} training, {} test images of {c}×{h}×{w}, {classes} classes",
        args.dataset,
        data.train.len(),
        data.test.len()
    );
    let train_device = device.clone().autodiff();
    train_device.seed(args.seed);
    match args.model.architecture() {
        Architecture::Vgg(config) => {
            let config = config.with_num_classes(classes).with_in_channels(c);
            let model = config.with_input_size([h, w]).init(&train_device)?;
            run(&args, model, data, &device)
        }
        Architecture::ResNet(config) => {
            let config = config.with_num_classes(classes).with_in_channels(c);
            run(&args, config.init(&train_device)?, data, &device)
        }
    }
}

fn run<M>(
    args: &Args,
    model: M,
    data: Data,
    device: &Device,
) -> Result<(), Box<dyn std::error::Error>>
where
    M: Prunable + Classifier + Costed + TorchLayout,
{
    let start = Instant::now();
    let model = match &args.init_from {
        Some(path) if !args.resume => {
            let (model, loaded) = pytorch::load(model, path)?;
            let ones = match loaded.skeletons_at_ones.len() {
                0 => String::new(),
                n => format!(", {n} skeletons at ones"),
            };
            println!(
                "initialised from {}: {} tensors{ones}",
                path.display(),
                loaded.tensors
            );
            model
        }
        _ => model,
    };
    let last_path = args.out.join("last.ckpt");
    let best_path = args.out.join("best.ckpt");
    let mut optim: ModuleOptimizer = sgd(args.momentum, args.weight_decay);
    let (mut model, mut pruner, mut progress) = if args.resume {
        let ck = checkpoint::load::<Progress>(&last_path)?;
        check_same_run(&ck.meta.args, args).map_err(|e| format!("{}: {e}", last_path.display()))?;
        let model = ck.model(model)?;
        optim = ck.optimizer(optim)?;
        let pruner = ck.pruner(&model)?;
        println!(
            "resumed from {} at epoch {}, batch {} (step {})",
            last_path.display(),
            ck.meta.epochs_done + 1,
            ck.meta.batches_done,
            ck.meta.steps
        );
        (model, pruner, ck.meta)
    } else {
        let history = begin(&model, &args.out)?;
        let total_steps = (args.epochs * data.train.len().div_ceil(args.batch)) as u64;
        let [_, h, w] = data.shape;
        let pruner = Pruner::new(pruner_config(args, total_steps, [h, w]))?;
        let progress = Progress {
            epochs_done: 0,
            batches_done: 0,
            best_accuracy: 0.0,
            history,
            steps: 0,
            args: args.clone(),
        };
        (model, pruner, progress)
    };
    let Data {
        train,
        test,
        shape: [_, h, w],
        normalization,
        augmentation,
        ..
    } = data;
    let train_batcher = ImageBatcher::new(normalization.clone(), augmentation, args.seed);
    let eval_batcher = ImageBatcher::new(normalization, None, 0);
    let loss_fn = CrossEntropyLossConfig::new().init(&device.clone().autodiff());
    let train_device = device.clone().autodiff();
    let batches = Batches::new(&train, &train_batcher, args.batch, args.seed);
    for epoch in progress.epochs_done..args.epochs {
        let bar = epoch_bar(epoch, args.epochs, batches.per_epoch())?;
        let lr = learning_rate(args, epoch);
        let skip = std::mem::take(&mut progress.batches_done);
        bar.inc(skip as u64);
        for batch in batches.epoch(epoch, skip, &train_device) {
            let (b, batch) = batch?;
            let loss = loss_fn.forward(model.logits(batch.images), batch.labels);
            let fit = pruner.fit(&model, loss)?;
            model = pruner.apply_masks(optim.step(lr, model, fit.grads));
            bar.set_message(format!("lr {lr:.0e}  {}", fit.summary));
            bar.inc(1);
            progress.steps += 1;
            if progress.steps.is_multiple_of(args.history_every.max(1)) {
                progress.history.record(progress.steps as u64, &model);
            }
            if args.checkpoint_every > 0 && progress.steps.is_multiple_of(args.checkpoint_every) {
                progress.batches_done = b + 1;
                checkpoint::save(&last_path, &progress, &model, &optim, &pruner)?;
                progress.batches_done = 0;
            }
        }
        let acc = accuracy(&model.valid(), &test, &eval_batcher, 256, device)?;
        bar.finish_with_message(format!(
            "{}  test accuracy {:.2} %",
            bar.message(),
            100.0 * acc
        ));
        progress.epochs_done = epoch + 1;
        let improved = acc > progress.best_accuracy;
        progress.best_accuracy = progress.best_accuracy.max(acc);
        checkpoint::save(&last_path, &progress, &model, &optim, &pruner)?;
        if improved {
            checkpoint::save(&best_path, &progress, &model, &optim, &pruner)?;
        }
    }
    let eval = Evaluation {
        test: &test,
        batcher: &eval_batcher,
        device,
        input_size: [h, w],
        probe: 64,
        runs: 5,
    };
    finish(args, &model, &pruner, &eval, &progress.history, start)
}

fn finish<M>(
    args: &Args,
    model: &M,
    pruner: &Pruner,
    eval: &Evaluation<Items>,
    history: &TextureHistory,
    start: Instant,
) -> Result<(), Box<dyn std::error::Error>>
where
    M: Prunable + Classifier + Costed + TorchLayout,
{
    let Finished {
        masked,
        compact,
        report,
        dense_cost,
        compact_cost,
        ..
    } = texprune_tools::scaffold::finish(model, pruner, eval, &args.out)?;
    // The trained (masked) model, to reload with the same model configuration.
    masked.clone().save_file(args.out.join("masked.bpk"))?;
    let report = RunReport {
        dataset: format!("{:?}", args.dataset).to_lowercase(),
        model: format!("{:?}", args.model).to_lowercase(),
        epochs: args.epochs,
        wall_seconds: start.elapsed().as_secs_f64(),
        ..report
    };
    let structure = structure(&masked);
    let title = format!("texprune: {} on {}", report.model, report.dataset);
    write_run(&args.out, &title, &report, &compact_cost, history)?;
    write_atomic(
        &args.out.join("structure.json"),
        serde_json::to_string(&structure)?.as_bytes(),
    )?;
    write_atomic(
        &args.out.join("cost.json"),
        serde_json::to_string_pretty(&(dense_cost, &compact_cost))?.as_bytes(),
    )?;
    export_compact(&compact, eval, &args.out)?;
    if let Some(file) = &args.export_onnx {
        texprune::onnx::export(&compact, eval.first_images(1)?, M::logits)?.save(file)?;
        println!("wrote the compact model as ONNX to {}", file.display());
    }
    println!("\n{compact_cost}\n\n{report}");
    println!(
        "wrote report.json, report.md and the plots into {}",
        args.out.display()
    );
    Ok(())
}

/// The live-stripe mask of every prunable layer, by name: what compaction keeps.
fn structure<M: Prunable>(model: &M) -> Vec<(String, Vec<bool>)> {
    model
        .collect_prunable()
        .iter()
        .map(|l| {
            let mask = l
                .skeleton
                .clone()
                .into_data()
                .iter::<f64>()
                .map(|v| v != 0.0)
                .collect();
            (l.name.clone(), mask)
        })
        .collect()
}

/// The compact model for PyTorch (`compact.safetensors`, `compact.json`) and `probe.safetensors`:
/// eight test images as the model reads them (`input`) and its logits on them (`logits`).
fn export_compact<M>(
    compact: &M,
    eval: &Evaluation<Items>,
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>>
where
    M: Prunable + Classifier + Costed + TorchLayout,
{
    pytorch::export(
        compact,
        out.join("compact.safetensors"),
        out.join("compact.json"),
    )?;
    let images = eval.first_images(8)?;
    let logits = compact.logits(images.clone());
    let tensor = |t: TensorData| {
        let shape = t.shape().to_vec();
        (t.convert::<f32>().into_bytes().to_vec(), shape)
    };
    let (input, input_shape) = tensor(images.into_data());
    let (output, output_shape) = tensor(logits.into_data());
    let views = [
        ("input", TensorView::new(Dtype::F32, input_shape, &input)?),
        (
            "logits",
            TensorView::new(Dtype::F32, output_shape, &output)?,
        ),
    ];
    write_atomic(
        &out.join("probe.safetensors"),
        &safetensors::serialize(views, None)?,
    )?;
    Ok(())
}
