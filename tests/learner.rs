//! The pruner under burn-train's Learner: two devices give the masks and weights of one device
//! with the same global batch, the pruner's metrics are logged, its state is saved beside the
//! Learner's checkpoints, and replicas that diverge stop training.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use texprune::burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use texprune::burn::data::dataset::Dataset;
use texprune::burn::module::{Module, ModuleVisitor, Param};
use texprune::burn::optim::GradientsParams;
use texprune::burn::optim::SgdConfig;
use texprune::burn::tensor::{Device, Tensor};
use texprune::burn::train::checkpoint::KeepLastNCheckpoints;
use texprune::burn::train::metric::LossMetric;
use texprune::burn::train::{
    ExecutionStrategy, Learner, LearningResult, MultiDeviceOptim, SupervisedTraining, TrainStep,
};
use texprune::data::{
    DataError, ForLoader, ImageBatch, ImageBatcher, ImageItem, ImageSet, Normalization, Split,
    mnist,
};
use texprune::learner::{
    EpochLineRenderer, LiveStripesMetric, PenaltyMetric, PrunedModel, fingerprint,
    load_pruner_state,
};
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{CdpConfig, DtcConfig, PruneError, Pruner, PrunerConfig};

/// Images per device and step.
const BATCH: usize = 16;
/// Training images: 16 optimizer steps of 2 × 16 per epoch.
const ITEMS: usize = 512;
const EPOCHS: usize = 3;
const LR: f64 = 0.1;

fn fashion_mnist() -> ImageSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    mnist(&dir, Split::Test).unwrap()
}

fn model() -> Vgg {
    use VggLayer::{Conv as C, MaxPool as M};
    let device = Device::flex().autodiff();
    device.seed(9);
    VggConfig::new(vec![C(8), M, C(16), M])
        .with_in_channels(1)
        .with_input_size([28, 28])
        .init(&device)
        .unwrap()
}

fn pruner() -> Pruner {
    Pruner::new(PrunerConfig::new(
        CdpConfig::new().with_l1(0.07).with_adaptive(1e-3),
        DtcConfig::new().with_threshold(0.5),
    ))
    .unwrap()
}

fn loader(set: ImageSet) -> Arc<dyn DataLoader<ImageBatch>> {
    DataLoaderBuilder::new(ImageBatcher::new(Normalization::fashion_mnist(), None, 0))
        .batch_size(BATCH)
        .build(ForLoader(set))
}

fn artifacts(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("texprune-learner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The lines an [`EpochLineRenderer`] wrote into `log`.
fn rendered(log: &Mutex<Vec<u8>>) -> Vec<String> {
    let bytes = log.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Trains `model` for [`EPOCHS`] epochs on `train` with `strategy`, plain SGD at [`LR`]; with a
/// `log`, progress is rendered into it by [`EpochLineRenderer`].
fn train(
    model: PrunedModel<Vgg>,
    train: ImageSet,
    strategy: ExecutionStrategy,
    accumulation: Option<usize>,
    resume: Option<usize>,
    dir: &Path,
    log: Option<Arc<Mutex<Vec<u8>>>>,
) -> LearningResult<PrunedModel<Vgg>> {
    let valid = fashion_mnist().select(&(ITEMS..ITEMS + 32).collect::<Vec<_>>(), "valid");
    let checkpointing = model.checkpointing(dir.join("checkpoint"), KeepLastNCheckpoints::new(2));
    let mut training = SupervisedTraining::new(dir, loader(train), loader(valid))
        .with_training_strategy(strategy.into())
        .metric_train_numeric(LossMetric::new())
        .metric_train_numeric(PenaltyMetric::new())
        .metric_train_numeric(LiveStripesMetric::new())
        .with_default_checkpointers()
        .with_checkpointing_strategy(checkpointing)
        .with_application_logger(None)
        .num_epochs(EPOCHS);
    if let Some(steps) = accumulation {
        training = training.grads_accumulation(steps);
    }
    if let Some(epoch) = resume {
        training = training.checkpoint(epoch);
    }
    if let Some(log) = log {
        training = training.renderer(Box::new(EpochLineRenderer::to_buffer(log)));
    }
    training.launch(Learner::new(model, SgdConfig::new().init(), LR))
}

/// The values of every trained float parameter, in visiting order. BatchNorm running statistics
/// are left out: they are not trained, and under the multi-device strategy each worker's replica
/// updates them from its own shard, so they follow another sequence of batch statistics than a
/// one-device run (they only serve evaluation).
#[derive(Default)]
struct Values(Vec<Vec<f32>>, Vec<String>);

impl ModuleVisitor for Values {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.1.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.1.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.1.last().map(String::as_str).unwrap_or_default();
        if !name.starts_with("running_") {
            self.0.push(param.val().to_data().iter::<f32>().collect());
        }
    }
}

fn values<M: Module>(model: &M) -> Vec<Vec<f32>> {
    let mut visitor = Values::default();
    model.visit(&mut visitor);
    assert!(!visitor.0.is_empty(), "no parameter visited");
    visitor.0
}

fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "parameter counts differ");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// The multi-device strategy splits the dataset into one contiguous half per device and sums the
/// two devices' gradients before one optimizer step. One device with gradient accumulation over
/// two batches, fed the same batches in the same order, is the single-device run with the same
/// global batch (2 × 16) and the same update. Both multi-device optimizers (on the main device,
/// sharded) must end with the one-device masks and weights.
#[test]
fn two_devices_prune_like_one() {
    let set = fashion_mnist();
    let half = ITEMS / 2;
    let natural: Vec<usize> = (0..ITEMS).collect();
    let interleaved: Vec<usize> = (0..half / BATCH)
        .flat_map(|k| {
            let first = k * BATCH..(k + 1) * BATCH;
            let second = half + k * BATCH..half + (k + 1) * BATCH;
            first.chain(second)
        })
        .collect();
    let initial = model();
    let log = Arc::new(Mutex::new(Vec::new()));

    let one_dir = artifacts("one");
    let one = train(
        PrunedModel::new(initial.clone(), pruner()),
        set.select(&interleaved, "train"),
        ExecutionStrategy::single(Device::flex()),
        Some(2),
        None,
        &one_dir,
        Some(log.clone()),
    );
    assert!(one.error.is_none(), "{:?}", one.error);
    // One readable line per epoch, every training metric in it.
    let lines = rendered(&log);
    println!("{}", lines.join("\n"));
    assert_eq!(lines.len(), EPOCHS, "{lines:?}");
    for (k, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("epoch {}/{EPOCHS}  train ", k + 1)),
            "{line}"
        );
        for metric in ["Loss", "CDP penalty", "Live stripes"] {
            assert!(line.contains(metric), "{metric} in {line}");
        }
    }

    let (one_model, one_pruner) = one.model.into_parts();
    let steps = (EPOCHS * ITEMS / (2 * BATCH)) as u64;
    assert_eq!(one_pruner.step(), steps);
    let masks = one_pruner.state(&one_model).unwrap().dtc;
    let live: usize = masks
        .layers
        .iter()
        .flatten()
        .map(|(_, stripes)| stripes.iter().filter(|s| **s).count())
        .sum();
    let total: usize = masks
        .layers
        .iter()
        .flatten()
        .map(|(_, stripes)| stripes.len())
        .sum();
    println!("live stripes after {steps} steps: {live} of {total}");
    assert!(
        0 < live && live < total,
        "something pruned, not everything: {live} of {total}"
    );

    let mut dirs = vec![one_dir];
    for (name, optim) in [
        ("main-device", MultiDeviceOptim::OptimMainDevice),
        ("sharded", MultiDeviceOptim::OptimSharded),
    ] {
        let dir = artifacts(name);
        let two = train(
            PrunedModel::new(initial.clone(), pruner()),
            set.select(&natural, "train"),
            ExecutionStrategy::multi(vec![Device::flex(), Device::flex()], optim),
            None,
            None,
            &dir,
            None,
        );
        assert!(two.error.is_none(), "{name}: {:?}", two.error);
        let (two_model, two_pruner) = two.model.into_parts();
        assert_eq!(two_pruner.step(), steps, "{name}");
        // Same masks, bit for bit; same weights within 1e-6 (measured: equal).
        assert_eq!(
            two_pruner.state(&two_model).unwrap().dtc,
            masks,
            "{name}: masks differ"
        );
        let difference = max_difference(&values(&one_model), &values(&two_model));
        println!("{name}: max |one device - two devices| over the parameters: {difference:e}");
        assert!(difference <= 1e-6, "{name}: weights differ by {difference}");
        assert_eq!(
            fingerprint(&one_pruner, &one_model).unwrap(),
            fingerprint(&two_pruner, &two_model).unwrap(),
            "{name}"
        );
        dirs.push(dir);
    }
    let two_dir = dirs[1].clone();

    // The pruner's metrics were logged per step.
    let log = two_dir.join("train/epoch-1/Live_stripes.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let logged: Vec<f64> = text
        .lines()
        .map(|l| l.split(',').next().unwrap().trim().parse().unwrap())
        .collect();
    assert!(!logged.is_empty(), "{} is empty", log.display());
    assert!(
        logged.iter().all(|v| (0.0..=100.0).contains(v)),
        "{logged:?}"
    );
    assert!(two_dir.join("train/epoch-1/CDP_penalty.log").exists());

    // The pruner state was saved beside the Learner's checkpoints (the last two epochs), and a
    // resumed model gets it back.
    let checkpoints = two_dir.join("checkpoint");
    for epoch in 1..=EPOCHS {
        let kept = epoch + 2 > EPOCHS;
        assert_eq!(
            checkpoints.join(format!("pruner-{epoch}.json")).exists(),
            kept,
            "pruner state of epoch {epoch}"
        );
        assert_eq!(
            checkpoints.join(format!("model-{epoch}.bpk")).exists(),
            kept
        );
    }
    let earlier = load_pruner_state(&checkpoints, EPOCHS - 1).unwrap();
    assert_eq!(earlier.step, steps / EPOCHS as u64 * (EPOCHS as u64 - 1));
    let resumed = PrunedModel::resume(initial.clone(), &checkpoints, EPOCHS).unwrap();
    assert_eq!(resumed.pruner().step(), steps);
    assert_eq!(resumed.pruner().state(&initial).unwrap().dtc, masks);

    // Resuming the Learner at epoch 2 (model, optimizer and pruner) and running the last epoch
    // again ends where the uninterrupted run ended.
    let resumed_log = Arc::new(Mutex::new(Vec::new()));
    let again = train(
        PrunedModel::resume(initial.clone(), &checkpoints, EPOCHS - 1).unwrap(),
        set.select(&natural, "train"),
        ExecutionStrategy::multi(
            vec![Device::flex(), Device::flex()],
            MultiDeviceOptim::OptimMainDevice,
        ),
        None,
        Some(EPOCHS - 1),
        &two_dir,
        Some(resumed_log.clone()),
    );
    assert!(again.error.is_none(), "resumed: {:?}", again.error);
    // The resumed run renders only the epoch it ran, numbered as the run's last.
    let lines = rendered(&resumed_log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("epoch {EPOCHS}/{EPOCHS}  train ")),
        "{lines:?}"
    );
    let (again_model, again_pruner) = again.model.into_parts();
    assert_eq!(again_pruner.step(), steps);
    assert_eq!(
        again_pruner.state(&again_model).unwrap().dtc,
        masks,
        "resumed: masks differ"
    );
    let difference = max_difference(&values(&one_model), &values(&again_model));
    println!(
        "resumed at epoch {}: max difference {difference:e}",
        EPOCHS - 1
    );
    assert!(
        difference <= 1e-6,
        "resumed: weights differ by {difference}"
    );
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Two replicas that share a ledger (clones of one model, as under DDP) and hold different
/// skeletons: the second one's optimizer step stops training with a divergence error.
#[test]
fn diverged_replicas_stop_training() {
    let first = PrunedModel::new(model(), pruner()).with_check_every(1);
    let second = first.clone();
    let set = fashion_mnist();
    let items: Vec<ImageItem> = (0..8)
        .map(|i| Dataset::<ImageItem, DataError>::get(&set, i).unwrap())
        .collect();
    let batch = ImageBatcher::new(Normalization::fashion_mnist(), None, 0).images(
        &items,
        &mut texprune::data::SplitMix64(0),
        &Device::flex().autodiff(),
    );
    let mut optim = SgdConfig::new().init();
    let grads = TrainStep::step(&first, batch.clone()).grads;
    let first = first.optimize(&mut optim, LR.into(), grads);
    // The second replica steps with other gradients: its skeletons and masks differ.
    let other = TrainStep::step(&second, batch.clone()).grads;
    let other = scale(other, &second, 10.0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        second.optimize(&mut SgdConfig::new().init(), LR.into(), other)
    }));
    let message = result
        .err()
        .and_then(|e| e.downcast::<String>().ok())
        .expect("the diverged replica must stop");
    assert!(message.contains("replicas diverged at step 1"), "{message}");
    // The first replica's ledger entry is the one compared against.
    let expected = fingerprint(first.pruner(), first.model()).unwrap();
    let error = first.ledger().check(1, expected ^ 1).unwrap_err();
    assert!(matches!(
        error,
        PruneError::ReplicaDivergence { step: 1, .. }
    ));
}

/// `grads` times `factor`, for every parameter of `model`.
fn scale<M: Module>(grads: GradientsParams, model: &M, factor: f64) -> GradientsParams {
    struct Scale {
        grads: GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut visitor = Scale { grads, factor };
    model.visit(&mut visitor);
    visitor.grads
}

/// A regression task written outside the zoo: one prunable conv, global pooling and a linear head
/// predict a number from an 8×8 image.
mod regression {
    use texprune::burn::data::dataloader::batcher::Batcher;
    use texprune::burn::data::dataset::InMemDataset;
    use texprune::burn::nn::loss::{MseLoss, Reduction};
    use texprune::burn::nn::{Linear, LinearConfig, PaddingConfig2d};
    use texprune::burn::tensor::TensorData;
    use texprune::burn::tensor::activation::relu;
    use texprune::burn::tensor::module::adaptive_avg_pool2d;
    use texprune::burn::train::RegressionOutput;
    use texprune::data::SplitMix64;
    use texprune::learner::Task;
    use texprune::{Prunable, PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig};

    use super::*;

    #[derive(Module, Debug)]
    pub struct Regressor {
        conv: SkeletonConv2d,
        head: Linear,
    }

    impl Regressor {
        /// Skeleton entries spread over [0.1, 1.5), so that DTC prunes some from the first steps.
        pub fn new(device: &Device) -> Self {
            let mut conv = SkeletonConv2dConfig::new([1, 8], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device)
                .unwrap();
            let mut rng = SplitMix64(7);
            let spread: Vec<f32> = (0..72).map(|_| rng.range(0.1, 1.5)).collect();
            conv.skeleton = conv.skeleton.map(|s| {
                let inner = s.inner();
                let data = TensorData::new(spread, [8, 3, 3]);
                Tensor::from_data(data, &inner.device())
                    .autodiff()
                    .require_grad()
            });
            Self {
                conv,
                head: LinearConfig::new(8, 1).init(device),
            }
        }

        pub fn conv(&self) -> &SkeletonConv2d {
            &self.conv
        }
    }

    impl Prunable for Regressor {
        fn prunable_layers(&self, layers: &mut PrunableLayers) {
            layers.conv("conv", &self.conv).relu().feeds(["head"]);
            layers.linear("head", &self.head);
        }
    }

    #[derive(Debug, Clone)]
    pub struct Sample {
        pixels: Vec<f32>,
        target: f32,
    }

    #[derive(Debug, Clone)]
    pub struct Samples {
        inputs: Tensor<4>,
        targets: Tensor<2>,
    }

    pub struct SampleBatcher;

    impl Batcher<Sample, Samples> for SampleBatcher {
        fn batch(&self, items: Vec<Sample>, device: &Device) -> Samples {
            let n = items.len();
            let pixels: Vec<f32> = items.iter().flat_map(|s| s.pixels.clone()).collect();
            let targets: Vec<f32> = items.iter().map(|s| s.target).collect();
            Samples {
                inputs: Tensor::from_data(TensorData::new(pixels, [n, 1, 8, 8]), device),
                targets: Tensor::from_data(TensorData::new(targets, [n, 1]), device),
            }
        }
    }

    impl Task for Regressor {
        type Batch = Samples;
        type Output = RegressionOutput;

        fn run(&self, batch: Samples) -> RegressionOutput {
            let x = relu(self.conv.forward(batch.inputs));
            let output = self
                .head
                .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3));
            let loss =
                MseLoss::new().forward(output.clone(), batch.targets.clone(), Reduction::Mean);
            RegressionOutput {
                loss,
                output,
                targets: batch.targets,
            }
        }

        fn loss(output: &RegressionOutput) -> Tensor<1> {
            output.loss.clone()
        }
    }

    /// `count` images uniform in [-1, 1), each with the mean of its left half as the target.
    pub fn samples(count: usize, seed: u64) -> Vec<Sample> {
        let mut rng = SplitMix64(seed);
        (0..count)
            .map(|_| {
                let pixels: Vec<f32> = (0..64).map(|_| rng.range(-1.0, 1.0)).collect();
                let left: f32 = (0..64).filter(|i| i % 8 < 4).map(|i| pixels[i]).sum();
                Sample {
                    pixels,
                    target: left / 32.0,
                }
            })
            .collect()
    }

    pub fn loader(items: Vec<Sample>) -> Arc<dyn DataLoader<Samples>> {
        DataLoaderBuilder::new(SampleBatcher)
            .batch_size(BATCH)
            .build(InMemDataset::new(items))
    }
}

/// `PrunedModel` trains any task: a user-written regression model under the Learner gets the
/// penalty, the masks (pruned skeleton entries exactly 0 after every step) and the pruner's
/// metrics, as a classifier does.
#[test]
fn a_regression_task_is_pruned_under_the_learner() {
    use regression::{Regressor, loader, samples};
    let device = Device::flex().autodiff();
    device.seed(3);
    let model = PrunedModel::new(Regressor::new(&device), pruner());
    let dir = artifacts("regression");
    let log = Arc::new(Mutex::new(Vec::new()));
    let result = SupervisedTraining::new(&dir, loader(samples(256, 1)), loader(samples(64, 2)))
        .metric_train_numeric(LossMetric::new())
        .metric_train_numeric(PenaltyMetric::new())
        .metric_train_numeric(LiveStripesMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .with_application_logger(None)
        .renderer(Box::new(EpochLineRenderer::to_buffer(log.clone())))
        .num_epochs(2)
        .launch(Learner::new(model, SgdConfig::new().init(), LR));
    assert!(result.error.is_none(), "{:?}", result.error);
    let lines = rendered(&log);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for metric in ["Loss", "CDP penalty", "Live stripes"] {
        assert!(lines[1].contains(metric), "{metric} in {}", lines[1]);
    }
    let (model, pruner) = result.model.into_parts();
    // 2 epochs of 256 / 16 batches, one DTC step each.
    assert_eq!(pruner.step(), 32);
    let skeleton: Vec<f32> = model
        .conv()
        .skeleton
        .val()
        .into_data()
        .iter::<f32>()
        .collect();
    let zeros = skeleton.iter().filter(|s| **s == 0.0).count();
    assert!(
        zeros > 0 && zeros < skeleton.len(),
        "{zeros} of {}",
        skeleton.len()
    );
    // The Learner's last step left the masks applied: masking again changes nothing.
    assert_eq!(values(&pruner.apply_masks(model.clone())), values(&model));
    let _ = std::fs::remove_dir_all(&dir);
}
