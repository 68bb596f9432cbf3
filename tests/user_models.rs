//! Models written here, outside the zoo, get everything the zoo gets: exact compaction into
//! their own type (dead stripes, channels, BatchNorm entries and consumer slices removed), cost
//! from the declaration, a FLOPs target met through `Pruner::fit`, and a save/load round trip.

use std::sync::atomic::{AtomicUsize, Ordering};

use texprune::burn::module::{Module, Param};
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use texprune::burn::tensor::activation::relu;
use texprune::burn::tensor::module::adaptive_avg_pool2d;
use texprune::burn::tensor::{Bool, Device, Tensor, TensorData};
use texprune::data::SplitMix64;
use texprune::{
    Activation, CostReport, LayerKind, ModelError, Phase, Prunable, PrunableLayers, PruneError,
    Pruner, PrunerConfig, Schedule, SkeletonConv2d, SkeletonConv2dConfig, Target,
    apply_stripe_masks, compact_unchecked,
};

/// The example's residual network (stem → block → max pool → strided conv → 1×1 conv → global
/// pool → linear), written outside the zoo.
#[path = "../examples/own_model/net.rs"]
mod net;

mod common;

use common::{compare, images, randomize_conv, randomize_norm};

use net::Net as ResidualNet;

/// Width of the test network: stream 6, block and strided conv 12, 1×1 conv 24.
const WIDTH: usize = 6;

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> SkeletonConv2d {
    let p = k / 2;
    SkeletonConv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
        .unwrap()
}

/// Two strided convs, then a linear layer on the flattened `8×7×7` map.
#[derive(Module, Debug)]
struct FlattenNet {
    c1: SkeletonConv2d,
    bn1: BatchNorm,
    c2: SkeletonConv2d,
    bn2: BatchNorm,
    fc: Linear,
}

impl FlattenNet {
    fn new(device: &Device) -> Self {
        Self {
            c1: conv(1, 6, 3, 2, device),
            bn1: BatchNormConfig::new(6).init(device),
            c2: conv(6, 8, 3, 2, device),
            bn2: BatchNormConfig::new(8).init(device),
            fc: LinearConfig::new(8 * 7 * 7, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.bn1.forward(self.c1.forward(x)));
        let x = relu(self.bn2.forward(self.c2.forward(x)));
        self.fc.forward(x.flatten(1, 3))
    }
}

impl Prunable for FlattenNet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        layers
            .conv("c1", &self.c1)
            .norm("bn1", &self.bn1)
            .relu()
            .feeds(["c2"]);
        layers
            .conv("c2", &self.c2)
            .norm("bn2", &self.bn2)
            .relu()
            .feeds(["fc"]);
        layers.linear("fc", &self.fc);
    }
}

/// The minimum declaration: convs and norms, nothing about consumers.
#[derive(Module, Debug)]
struct MinimalNet {
    c1: SkeletonConv2d,
    c2: SkeletonConv2d,
    bn2: BatchNorm,
    fc: Linear,
}

impl MinimalNet {
    fn new(device: &Device) -> Self {
        Self {
            c1: conv(1, 4, 3, 1, device),
            c2: conv(4, 6, 3, 2, device),
            bn2: BatchNormConfig::new(6).init(device),
            fc: LinearConfig::new(6, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.c1.forward(x));
        let x = relu(self.bn2.forward(self.c2.forward(x)));
        self.fc
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }
}

impl Prunable for MinimalNet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        layers.conv("c1", &self.c1);
        layers.conv("c2", &self.c2).norm("bn2", &self.bn2);
    }
}

fn randomize_residual(model: &mut ResidualNet, rng: &mut SplitMix64, dead_inner: bool) {
    let pairs = [
        (&mut model.stem, &mut model.stem_bn, false),
        (&mut model.inner, &mut model.inner_bn, dead_inner),
        (&mut model.outer, &mut model.outer_bn, false),
        (&mut model.down, &mut model.down_bn, false),
        (&mut model.wide, &mut model.wide_bn, false),
    ];
    for (conv, norm, dead_layer) in pairs {
        let dead = randomize_conv(conv, rng, dead_layer);
        randomize_norm(norm, &dead, rng);
    }
}

#[test]
fn a_residual_net_compacts_into_its_own_type_exactly() {
    let device = Device::default();
    let mut removed_somewhere = false;
    for seed in 0..8 {
        let mut rng = SplitMix64(seed);
        let mut model = ResidualNet::new(WIDTH, &device).unwrap();
        randomize_residual(&mut model, &mut rng, false);
        let compacted: ResidualNet = compact_unchecked(model.clone()).unwrap();
        let x = images(4, &mut rng, &device);
        let (err, same) = compare(compacted.forward(x.clone()), model.forward(x));
        assert!(err <= 1e-5 && same, "seed {seed}: relative error {err}");
        // Channels of the residual stream stay; the block's inner channels and the head's
        // inputs lose the dead filters whose output is exactly zero.
        assert_eq!(compacted.stem.weight_dims()[0], WIDTH);
        assert_eq!(compacted.outer.weight_dims()[0], WIDTH);
        let inner = compacted.inner.weight_dims()[0];
        assert_eq!(compacted.outer.weight_dims()[1], inner);
        assert_eq!(compacted.inner_bn.gamma.dims()[0], inner);
        let wide = compacted.wide.weight_dims()[0];
        assert_eq!(compacted.head.weight.dims()[0], wide);
        removed_somewhere |= inner < 2 * WIDTH || compacted.down.weight_dims()[0] < 2 * WIDTH;
        let stripes = |c: &SkeletonConv2d| c.stripe_layout().live_stripes();
        assert!(stripes(&compacted.inner) < 2 * WIDTH * 9, "seed {seed}");
        assert!(compacted.wide.is_stripe_wise() && !model.wide.is_stripe_wise());
    }
    assert!(removed_somewhere, "no seed removed a channel");
}

#[test]
fn a_dead_residual_branch_adds_its_constant() {
    // Every filter of `inner` dies and DTC zeroed its norm: `outer` reads zeros, computes
    // nothing, and its norm adds the constant `outer_bn(0)` to the stream.
    let device = Device::default();
    let mut rng = SplitMix64(11);
    let mut model = ResidualNet::new(WIDTH, &device).unwrap();
    randomize_residual(&mut model, &mut rng, true);
    model.inner_bn.gamma = Param::from_tensor(Tensor::zeros([2 * WIDTH], &device));
    model.inner_bn.beta = Param::from_tensor(Tensor::zeros([2 * WIDTH], &device));
    let compacted = compact_unchecked(model.clone()).unwrap();
    let x = images(4, &mut rng, &device);
    let (err, same) = compare(compacted.forward(x.clone()), model.forward(x));
    assert!(err <= 1e-5 && same, "relative error {err}");
    assert_eq!(compacted.inner.stripe_layout().live_stripes(), 0);
    assert_eq!(compacted.outer.stripe_layout().live_stripes(), 0);
    let cost = CostReport::of_model(&compacted).unwrap();
    let macs = |name: &str| cost.layers.iter().find(|l| l.name == name).unwrap().macs;
    assert_eq!((macs("inner"), macs("outer")), (0, 0));
}

/// The residual net's forward pass written with `forward_norm`, as a user would for speed:
/// each conv → BatchNorm → (residual add) → ReLU step is one call.
fn fused_forward(m: &ResidualNet, x: Tensor<4>) -> Tensor<2> {
    let x = m.stem.forward_norm(x, &m.stem_bn, None, Activation::Relu);
    let y = m
        .inner
        .forward_norm(x.clone(), &m.inner_bn, None, Activation::Relu);
    let x = m
        .outer
        .forward_norm(y, &m.outer_bn, Some(x), Activation::Relu);
    let x = m.pool.forward(x);
    let x = m.down.forward_norm(x, &m.down_bn, None, Activation::Relu);
    let x = m.wide.forward_norm(x, &m.wide_bn, None, Activation::Relu);
    m.head.forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
}

#[test]
fn forward_norm_equals_the_steps_on_a_user_model_dense_and_compacted() {
    let device = Device::default();
    for seed in 0..6 {
        let mut rng = SplitMix64(100 + seed);
        let mut model = ResidualNet::new(WIDTH, &device).unwrap();
        // Seeds 0 and 3 kill the block's inner conv: the fused residual add then adds the
        // constant `outer_bn(0)`.
        randomize_residual(&mut model, &mut rng, seed % 3 == 0);
        let compacted = compact_unchecked(model.clone()).unwrap();
        let x = images(5, &mut rng, &device);
        let steps = model.forward(x.clone());
        for (what, y) in [
            ("dense", fused_forward(&model, x.clone())),
            ("compacted", fused_forward(&compacted, x.clone())),
        ] {
            let (err, same) = compare(y, steps.clone());
            assert!(
                err <= 1e-5 && same,
                "seed {seed}, {what}: relative error {err}"
            );
        }
    }
}

#[test]
fn a_linear_head_after_a_flatten_loses_the_rows_of_removed_channels() {
    let device = Device::default();
    for seed in 0..6 {
        let mut rng = SplitMix64(100 + seed);
        let mut model = FlattenNet::new(&device);
        for (conv, norm) in [
            (&mut model.c1, &mut model.bn1),
            (&mut model.c2, &mut model.bn2),
        ] {
            let dead = randomize_conv(conv, &mut rng, false);
            randomize_norm(norm, &dead, &mut rng);
        }
        let compacted = compact_unchecked(model.clone()).unwrap();
        let x = images(3, &mut rng, &device);
        let (err, same) = compare(compacted.forward(x.clone()), model.forward(x));
        assert!(err <= 1e-5 && same, "seed {seed}: relative error {err}");
        // One row per position of each kept channel of c2's 7×7 map.
        let kept = compacted.c2.weight_dims()[0];
        assert_eq!(compacted.fc.weight.dims(), [kept * 49, 10]);
        assert_eq!(compacted.c2.weight_dims()[1], compacted.c1.weight_dims()[0]);
    }
}

#[test]
fn the_minimum_declaration_removes_stripes_and_keeps_channels() {
    let device = Device::default();
    let mut rng = SplitMix64(5);
    let mut model = MinimalNet::new(&device);
    randomize_conv(&mut model.c1, &mut rng, false);
    let dead = randomize_conv(&mut model.c2, &mut rng, false);
    randomize_norm(&mut model.bn2, &dead, &mut rng);
    let compacted = compact_unchecked(model.clone()).unwrap();
    let x = images(3, &mut rng, &device);
    let (err, same) = compare(compacted.forward(x.clone()), model.forward(x));
    assert!(err <= 1e-5 && same, "relative error {err}");
    assert_eq!(compacted.c1.weight_dims(), model.c1.weight_dims());
    assert_eq!(compacted.c2.weight_dims(), model.c2.weight_dims());
    let (dense, small) = (
        CostReport::of_model(&model).unwrap(),
        CostReport::of_model(&compacted).unwrap(),
    );
    // Costs count the declared convs and norms: the dead stripes are gone from both the plan
    // of the masked model and the compacted model.
    assert_eq!(small.macs(), dense.macs());
    assert!(small.of_kind(LayerKind::StripeConv).count() == 2);
    let full = 4 * 9 * 28 * 28 + 6 * 4 * 9 * 14 * 14;
    assert!(small.macs() < full as u64, "{}", small.macs());
}

#[test]
fn declarations_that_do_not_fit_are_errors() {
    #[derive(Module, Debug)]
    struct Wrong {
        c1: SkeletonConv2d,
        c2: SkeletonConv2d,
    }
    impl Prunable for Wrong {
        fn prunable_layers(&self, layers: &mut PrunableLayers) {
            layers.conv("c1", &self.c1).feeds(["c3"]);
            layers.conv("c2", &self.c2);
        }
    }
    let device = Device::default();
    let model = Wrong {
        c1: conv(1, 4, 3, 1, &device),
        c2: conv(4, 4, 3, 1, &device),
    };
    let err = compact_unchecked(model).unwrap_err();
    assert!(
        matches!(&err, ModelError::Declaration(m) if m.contains("`c3`")),
        "{err}"
    );
    #[derive(Module, Debug)]
    struct Mismatch {
        c1: SkeletonConv2d,
        c2: SkeletonConv2d,
    }
    impl Prunable for Mismatch {
        fn prunable_layers(&self, layers: &mut PrunableLayers) {
            layers.conv("c1", &self.c1).feeds(["c2"]);
            layers.conv("c2", &self.c2);
        }
    }
    let model = Mismatch {
        c1: conv(1, 4, 3, 1, &device),
        c2: conv(5, 4, 3, 1, &device),
    };
    let err = compact_unchecked(model).unwrap_err().to_string();
    assert!(err.contains("5 input channels"), "{err}");
    // Cost needs one forward pass for the input sizes.
    let err = CostReport::of_model(&ResidualNet::new(WIDTH, &device).unwrap()).unwrap_err();
    assert!(matches!(err, ModelError::Unmeasured { .. }), "{err}");
}

#[test]
fn a_compacted_model_is_rebuilt_from_the_masked_record() {
    let device = Device::default();
    let mut rng = SplitMix64(21);
    let mut masked = ResidualNet::new(WIDTH, &device).unwrap();
    randomize_residual(&mut masked, &mut rng, false);
    let x = images(2, &mut rng, &device);
    let expected = compact_unchecked(masked.clone())
        .unwrap()
        .forward(x.clone())
        .into_data();
    let dir = std::env::temp_dir().join(format!("texprune-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("masked.bpk");
    masked.save_file(&path).unwrap();
    let reloaded = ResidualNet::new(WIDTH, &device)
        .unwrap()
        .try_load_file(&path)
        .unwrap();
    let rebuilt = compact_unchecked(reloaded).unwrap();
    assert_eq!(rebuilt.forward(x).into_data(), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_flops_target_on_a_user_model_is_met_through_fit() {
    let device = Device::default().autodiff();
    device.seed(3);
    let model = ResidualNet::new(WIDTH, &device).unwrap();
    let (model, pruner, controller) =
        common::prune_to_half_the_flops(model, ResidualNet::forward, &device);
    let valid = model.valid();
    let x = images(8, &mut SplitMix64(1), &Device::default());
    let masked_logits = valid.forward(x.clone());
    let compacted = pruner
        .compact(&model, x.clone(), ResidualNet::forward)
        .unwrap();
    let (err, same) = compare(compacted.forward(x), masked_logits);
    assert!(err <= 1e-4 && same, "relative error {err}");
    let small = CostReport::of_model(&compacted).unwrap().flops() as f64;
    let fresh = ResidualNet::new(WIDTH, &Device::default()).unwrap();
    let full = common::cost_after_a_forward(fresh, ResidualNet::forward).flops() as f64;
    // The reported removal (the declaration's cost of the compact model, as `CostReport::of_model`
    // reports a model without a cost walk of its own) is the controller's, within 0.01 points.
    common::assert_half_the_flops_removed(1.0 - small / full, controller);
}

/// How often `CountedNet`'s declaration was collected.
static DECLARATIONS: AtomicUsize = AtomicUsize::new(0);

/// `MinimalNet`, counting the collections of its declaration.
#[derive(Module, Debug)]
struct CountedNet {
    net: MinimalNet,
}

impl Prunable for CountedNet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        DECLARATIONS.fetch_add(1, Ordering::SeqCst);
        self.net.prunable_layers(layers);
        // A FLOPs target counts the whole network: the head is declared too.
        layers.linear("fc", &self.net.fc);
    }
}

/// One pruning step reads the model's declaration once, shared by the penalty, the gradient
/// masks, the target controller (which re-solves δ on every step here, probing the cost a few
/// dozen times) and DTC.
#[test]
fn fit_collects_the_declaration_once_per_step() {
    let device = Device::default().autodiff();
    device.seed(5);
    let model = CountedNet {
        net: MinimalNet::new(&device),
    };
    let schedule = Schedule::new(1, 4).with_control_every(1);
    let config = PrunerConfig::targeted(Target::flops(0.5, [9, 9]), schedule);
    let mut pruner = Pruner::new(config).unwrap();
    let labels = Tensor::<1, texprune::burn::tensor::Int>::from_data([1, 3], &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut phases = Vec::new();
    for step in 0..6 {
        let x = images(2, &mut SplitMix64(step), &device).slice([0..2, 0..1, 0..9, 0..9]);
        let loss = loss_fn.forward(model.net.forward(x), labels.clone());
        let before = DECLARATIONS.load(Ordering::SeqCst);
        let fit = pruner.fit(&model, loss).unwrap();
        assert_eq!(
            DECLARATIONS.load(Ordering::SeqCst),
            before + 1,
            "step {step}"
        );
        phases.push(fit.summary.phase);
    }
    assert!(phases.contains(&Phase::Prune) && phases.contains(&Phase::FineTune));
    assert!(pruner.control().removed > 0.0);
}

#[test]
fn masks_from_outside_a_pruner_are_written_as_dtc_writes_them() {
    let device = Device::default();
    let model = ResidualNet::new(WIDTH, &device).unwrap();
    let cout = 2 * WIDTH;
    // `inner`: filter 0 keeps no stripe, filter 1 only its centre, the rest all nine.
    let mut keep = vec![true; cout * 9];
    keep[..18].fill(false);
    keep[9 + 4] = true;
    let stripes =
        Tensor::<3, Bool>::from_data(TensorData::new(keep.clone(), [cout, 3, 3]), &device);
    let masked =
        apply_stripe_masks(model.clone(), [("inner".to_string(), stripes.clone())]).unwrap();

    let values = |t: Tensor<1>| -> Vec<f32> { t.into_data().iter::<f32>().collect() };
    let expected: Vec<f32> = keep.iter().map(|k| f32::from(u8::from(*k))).collect();
    assert_eq!(values(masked.inner.skeleton.val().flatten(0, 2)), expected);
    // The coupled BatchNorm loses the channel of the dead filter only; γ starts at 1.
    let gamma = values(masked.inner_bn.gamma.val());
    assert_eq!(gamma[0], 0.0);
    assert!(gamma[1..].iter().all(|g| *g == 1.0), "{gamma:?}");
    assert!(values(masked.inner_bn.beta.val())[0] == 0.0);
    // Layers not named are untouched.
    assert!(
        values(masked.stem.skeleton.val().flatten(0, 2))
            .iter()
            .all(|s| *s == 1.0)
    );
    // The compact model drops the dead filter and equals the masked one.
    let compacted: ResidualNet = compact_unchecked(masked.clone()).unwrap();
    assert_eq!(compacted.inner.weight_dims()[0], cout - 1);
    let x = images(2, &mut SplitMix64(5), &device);
    let (err, same) = compare(compacted.forward(x.clone()), masked.forward(x));
    assert!(err <= 1e-5 && same, "relative error {err}");

    // Bad input: a name the model does not declare, a mask of the wrong shape.
    match apply_stripe_masks(model.clone(), [("middle".to_string(), stripes)]) {
        Err(PruneError::UnknownLayer { name, known }) => {
            assert_eq!(name, "middle");
            assert_eq!(known, "stem, inner, outer, down, wide");
        }
        other => panic!("expected UnknownLayer, got {:?}", other.map(|_| ())),
    }
    let small = Tensor::<3, Bool>::from_data(TensorData::new(vec![true; 9], [1, 3, 3]), &device);
    let err = apply_stripe_masks(model, [("outer".to_string(), small)])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err,
        PruneError::MaskShape {
            name: "outer".into(),
            expected: [WIDTH, 3, 3],
            found: [1, 3, 3],
        }
    );
    assert!(err.to_string().contains("`outer`"), "{err}");
}
