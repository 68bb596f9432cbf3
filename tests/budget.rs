//! Pruning to a budget: the controller meets its target, the schedule's phases behave, a run
//! resumed mid-schedule is exact, and every term is finite from the default initialisation.

use std::path::Path;

use texprune::burn::data::dataset::Dataset;
use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use texprune::burn::tensor::{Device, Tensor};
use texprune::checkpoint;
use texprune::data::{ImageBatch, ImageBatcher, ImageSet, Normalization, Split, mnist};
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{
    CdpConfig, Classifier, Costed, DtcConfig, Phase, Prunable, PruneError, Pruner, PrunerConfig,
    Quantity, Schedule, StepSummary, Target,
};

const STEPS: u64 = 70;
const BATCH: usize = 32;

/// The repository's Fashion-MNIST test split, one fixed batch per step.
fn data() -> ImageSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    mnist(&dir, Split::Test)
        .unwrap()
        .take(STEPS as usize * BATCH)
}

fn batch(set: &ImageSet, step: u64, device: &Device) -> ImageBatch {
    let batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
    let start = step as usize * BATCH % set.len();
    let items: Vec<_> = (start..start + BATCH)
        .map(|i| set.get(i % set.len()).unwrap())
        .collect();
    batcher.images(&items, &mut texprune::data::SplitMix64(step), device)
}

fn model(device: &Device) -> Vgg {
    use VggLayer::{Conv as C, MaxPool as M};
    device.seed(5);
    VggConfig::new(vec![C(16), M, C(32), M, C(64), M])
        .with_in_channels(1)
        .with_input_size([28, 28])
        .init(device)
        .unwrap()
}

fn optimizer() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init()
}

fn schedule() -> Schedule {
    Schedule::new(10, 40).with_control_every(10)
}

/// Trains `model` from step `from` to `to` (exclusive), returning each step's summary.
fn train(
    set: &ImageSet,
    model: &mut Vgg,
    optim: &mut ModuleOptimizer,
    pruner: &mut Pruner,
    steps: std::ops::Range<u64>,
) -> Vec<StepSummary> {
    let device = Device::default().autodiff();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut summaries = Vec::new();
    for step in steps {
        let b = batch(set, step, &device);
        let loss = loss_fn.forward(model.logits(b.images), b.labels);
        let fit = pruner.fit(model, loss).unwrap();
        *model = pruner.apply_masks(optim.step(0.05, model.clone(), fit.grads));
        summaries.push(fit.summary);
    }
    summaries
}

/// FLOPs removed by compaction as the run report counts them: the model's own cost walk
/// (`Costed`: convs, norms, ReLUs, pools and classifier, the reference's convention) of the
/// compact model against the masked one, at the target's input size.
fn removed_flops(pruner: &Pruner, model: &Vgg) -> f64 {
    let masked = pruner.apply_masks(model.clone()).valid();
    let example = Tensor::<4>::ones([1, 1, 28, 28], &Device::default());
    let compact = pruner.compact(model, example, Vgg::forward).unwrap();
    1.0 - compact.cost([28, 28]).flops() as f64 / masked.cost([28, 28]).flops() as f64
}

#[test]
fn the_controller_meets_flops_and_stripe_targets_without_passing_the_ramp() {
    let set = data();
    for (quantity, remove) in [(Quantity::Flops, 0.5), (Quantity::Stripes, 0.3)] {
        let device = Device::default().autodiff();
        let mut model = model(&device);
        let target = Target::new(quantity, remove).with_input_size([28, 28]);
        let mut pruner = Pruner::new(PrunerConfig::targeted(target.clone(), schedule())).unwrap();
        let summaries = train(&set, &mut model, &mut optimizer(), &mut pruner, 0..STEPS);
        // Below the ramp until the last pruning step (49), which meets the target.
        for (step, s) in summaries.iter().enumerate().take(49) {
            let ceiling = remove * schedule().ramp(step as u64) + 1e-12;
            let removed = s.removed.unwrap();
            assert!(
                removed <= ceiling,
                "step {step}: {removed} > ramp {ceiling}"
            );
        }
        let last = summaries.last().unwrap();
        let removed = match quantity {
            Quantity::Flops => removed_flops(&pruner, &model),
            _ => 1.0 - last.live_stripes as f64 / last.total_stripes as f64,
        };
        // At least the target, and not more than a few stripes past it.
        assert!(
            removed >= remove && removed <= remove + 0.03,
            "{quantity:?}: removed {removed:.4}, target {remove}"
        );
        // What the controller measured is what the report of the compact model says.
        assert!(
            (last.removed.unwrap() - removed).abs() < 1e-9,
            "{quantity:?}: controller {:.6}, report {removed:.6}",
            last.removed.unwrap()
        );
    }
}

#[test]
fn phases_prune_only_in_the_pruning_phase_and_freeze_the_masks_after() {
    let set = data();
    let device = Device::default().autodiff();
    let mut model = model(&device);
    let target = Target::flops(0.5, [28, 28]);
    let mut pruner = Pruner::new(PrunerConfig::targeted(target, schedule())).unwrap();
    let mut optim = optimizer();
    let warmup = train(&set, &mut model, &mut optim, &mut pruner, 0..10);
    for s in &warmup {
        assert_eq!(s.phase, Phase::Warmup);
        assert_eq!(s.live_stripes, s.total_stripes, "pruned in warm-up");
        assert!(s.penalty > 0.0);
    }
    assert!(pruner.container().masks(0).is_none());
    let pruning = train(&set, &mut model, &mut optim, &mut pruner, 10..50);
    assert!(pruning.iter().any(|s| s.phase == Phase::Prune));
    let end_of_pruning = pruner.state(&model).unwrap().dtc;
    let live = pruning.last().unwrap().live_stripes;
    assert!(live < pruning[0].total_stripes);
    let fine_tune = train(&set, &mut model, &mut optim, &mut pruner, 50..STEPS);
    for s in &fine_tune {
        assert_eq!(s.phase, Phase::FineTune);
        assert_eq!(s.penalty, 0.0, "penalty on in fine-tuning");
        assert_eq!(s.live_stripes, live);
    }
    assert_eq!(pruner.state(&model).unwrap().dtc, end_of_pruning);
    // The frozen masks hold in the model: as many zero skeleton entries as pruned stripes.
    let zeros: usize = model
        .collect_prunable()
        .iter()
        .map(|l| {
            let v: Vec<f32> = l.skeleton.to_data().iter::<f32>().collect();
            v.iter().filter(|x| **x == 0.0).count()
        })
        .sum();
    assert_eq!(zeros as u64, fine_tune[0].total_stripes - live);
}

#[test]
fn a_run_resumed_mid_schedule_is_exact() {
    let set = data();
    let device = Device::default().autodiff();
    let config = PrunerConfig::targeted(Target::flops(0.5, [28, 28]), schedule());

    // One initialisation for both runs (the backend's RNG is shared with concurrent tests).
    let init = model(&device);
    let mut straight = init.clone();
    let mut straight_pruner = Pruner::new(config.clone()).unwrap();
    let full = train(
        &set,
        &mut straight,
        &mut optimizer(),
        &mut straight_pruner,
        0..STEPS,
    );

    // Stop in the middle of the pruning phase, between two control steps.
    let dir = std::env::temp_dir().join(format!("texprune-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("last.ckpt");
    {
        let mut first = init.clone();
        let mut pruner = Pruner::new(config).unwrap();
        let mut optim = optimizer();
        train(&set, &mut first, &mut optim, &mut pruner, 0..27);
        checkpoint::save(&path, &27u64, &first, &optim, &pruner).unwrap();
    }
    let ck = checkpoint::load::<u64>(&path).unwrap();
    let mut resumed = ck.model(init).unwrap();
    let mut optim = ck.optimizer(optimizer()).unwrap();
    let mut pruner = ck.pruner(&resumed).unwrap();
    let rest = train(&set, &mut resumed, &mut optim, &mut pruner, ck.meta..STEPS);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(&rest[..], &full[27..]);
    assert_eq!(
        pruner.state(&resumed).unwrap(),
        straight_pruner.state(&straight).unwrap()
    );
    let x = batch(&set, 0, &Device::default()).images;
    assert_eq!(
        resumed.valid().logits(x.clone()).into_data(),
        straight.valid().logits(x).into_data()
    );
}

#[test]
fn every_term_is_finite_from_the_default_initialisation() {
    // All-ones skeletons make every filter's cos exactly 1 (acos' infinite at 1).
    let set = data();
    let device = Device::default().autodiff();
    for cdp in [CdpConfig::every_term(1e-4), CdpConfig::budget_default()] {
        let model = model(&device);
        let mut pruner = Pruner::new(PrunerConfig::new(cdp, DtcConfig::new())).unwrap();
        let b = batch(&set, 0, &device);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.logits(b.images), b.labels);
        let fit = pruner.fit(&model, loss).unwrap();
        assert!(fit.summary.penalty.is_finite() && fit.summary.penalty > 0.0);
        for layer in model.collect_prunable().iter() {
            for id in [layer.skeleton_id, layer.weight_id] {
                let grad = match id == layer.skeleton_id {
                    true => grad_values::<3>(&fit.grads, id),
                    false => grad_values::<4>(&fit.grads, id),
                };
                assert!(grad.iter().all(|g| g.is_finite()), "{}", layer.name);
            }
        }
    }
}

fn grad_values<const D: usize>(
    grads: &GradientsParams,
    id: texprune::burn::module::ParamId,
) -> Vec<f64> {
    let g: Tensor<D> = grads.get(id).expect("a gradient");
    g.into_data().iter::<f64>().collect()
}

#[test]
fn budget_errors_are_typed() {
    let target = Target::flops(0.5, [28, 28]);
    let no_schedule =
        PrunerConfig::new(CdpConfig::new(), DtcConfig::new()).with_target(Some(target));
    assert!(matches!(
        Pruner::new(no_schedule),
        Err(PruneError::Budget(_))
    ));
    let bad = PrunerConfig::targeted(Target::flops(1.5, [28, 28]), schedule());
    assert!(matches!(Pruner::new(bad), Err(PruneError::Budget(_))));
    let bad = PrunerConfig::targeted(Target::flops(0.5, [28, 28]), Schedule::new(0, 0));
    assert!(matches!(Pruner::new(bad), Err(PruneError::Budget(_))));
}

#[test]
fn gradients_then_advance_is_fit() {
    // The data-parallel form of a step: the read-only half on each replica, the mutating half
    // once on the combined gradients. With one replica it must be `fit`, bit for bit.
    let set = data();
    let device = Device::default().autodiff();
    let init = model(&device);
    let config = PrunerConfig::targeted(Target::flops(0.5, [28, 28]), schedule());
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut a, mut b) = (init.clone(), init);
    let (mut pa, mut pb) = (
        Pruner::new(config.clone()).unwrap(),
        Pruner::new(config).unwrap(),
    );
    let (mut oa, mut ob) = (optimizer(), optimizer());
    for step in 0..STEPS {
        let x = batch(&set, step, &device);
        let fit = pa
            .fit(
                &a,
                loss_fn.forward(a.logits(x.images.clone()), x.labels.clone()),
            )
            .unwrap();
        a = pa.apply_masks(oa.step(0.05, a, fit.grads));

        let before = pb.state(&b).unwrap();
        let mut half = pb
            .gradients(&b, loss_fn.forward(b.logits(x.images), x.labels))
            .unwrap();
        assert_eq!(
            pb.state(&b).unwrap(),
            before,
            "gradients changed the pruner"
        );
        assert_eq!(
            (half.summary.loss, half.summary.penalty),
            (fit.summary.loss, fit.summary.penalty)
        );
        pb.advance(&b, &mut half.grads).unwrap();
        b = pb.apply_masks(ob.step(0.05, b, half.grads));
    }
    assert_eq!(pa.state(&a).unwrap(), pb.state(&b).unwrap());
    let x = batch(&set, 0, &Device::default()).images;
    assert_eq!(
        a.valid().logits(x.clone()).into_data(),
        b.valid().logits(x).into_data()
    );
}
