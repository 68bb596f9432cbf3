//! A MobileNetV2-style network written here, outside the zoo, with `SkeletonConv2d`
//! everywhere — an inverted residual (1×1 expand → 3×3 depthwise → 1×1 project, added to its
//! input), a grouped strided conv, a dilated conv — and ReLU6, SiLU and Hardswish after its
//! norms: compacted exactly into its own type, and pruned to a FLOPs target through
//! `Pruner::fit`, its depthwise conv losing stripes; declared wrong, a typed error from
//! compaction's check, never a broken model.

use texprune::burn::module::{Module, Param, RunningState};
use texprune::burn::nn::BatchNorm;
use texprune::burn::tensor::{Device, Tensor};
use texprune::data::SplitMix64;
use texprune::{
    Activation, CdpConfig, CostReport, DtcConfig, ModelError, Prunable, PrunableLayers, PruneError,
    Pruner, PrunerConfig, SkeletonConv2d, compact, compact_unchecked,
};

mod common;

use common::mobilenet::{MobileNet, WIDTH};
use common::{compare, images};
use texprune::layer::testing::tensor;

/// Random weights, half the stripes dead and a third of the filters; dead filters' norms
/// zeroed as DTC leaves them, but one in five left a constant channel.
fn randomize(conv: &mut SkeletonConv2d, norm: &mut BatchNorm, rng: &mut SplitMix64) {
    let dead = common::randomize_conv(conv, rng, false);
    common::randomize_norm(norm, &dead, rng);
}

fn randomize_all(m: &mut MobileNet, rng: &mut SplitMix64) {
    for (conv, norm) in [
        (&mut m.stem, &mut m.stem_bn),
        (&mut m.expand, &mut m.expand_bn),
        (&mut m.depthwise, &mut m.depthwise_bn),
        (&mut m.project, &mut m.project_bn),
        (&mut m.grouped, &mut m.grouped_bn),
        (&mut m.dilated, &mut m.dilated_bn),
        (&mut m.side, &mut m.side_bn),
        (&mut m.fuse, &mut m.fuse_bn),
    ] {
        randomize(conv, norm, rng);
    }
}

#[test]
fn grouped_depthwise_and_dilated_convs_compact_exactly() {
    let device = Device::default();
    for seed in 0..4 {
        let mut rng = SplitMix64(40 + seed);
        let mut model = MobileNet::new(&device);
        randomize_all(&mut model, &mut rng);
        let compacted: MobileNet = compact_unchecked(model.clone()).unwrap();
        let x = images(6, &mut rng, &device);
        let (err, same) = compare(compacted.forward(x.clone()), model.forward(x));
        assert!(err <= 1e-5 && same, "seed {seed}: relative error {err}");
        // The 4-group conv keeps its channels and loses its dead stripes; the depthwise conv
        // loses the channels the expand conv loses (its channel c reads channel c only), one
        // group per channel left; the dilated and side convs lose their dead channels and
        // the fuse conv the slices of its concatenated input; the fuse conv, read by the head
        // only, loses its silent channels and the head its rows.
        assert_eq!(compacted.grouped.weight_dims()[0], 4 * WIDTH, "seed {seed}");
        let kept = compacted.expand.weight_dims()[0];
        assert_eq!(compacted.depthwise.weight_dims(), [kept, 1, 3, 3]);
        assert_eq!(compacted.depthwise.groups(), kept);
        assert_eq!(compacted.project.in_channels(), kept);
        for conv in [&compacted.depthwise, &compacted.grouped, &compacted.expand] {
            assert!(conv.is_stripe_wise());
        }
        let live = compacted.depthwise.stripe_layout().live_stripes();
        assert!(live < 4 * WIDTH * 9, "seed {seed}: {live} live stripes");
        let concatenated = compacted.dilated.weight_dims()[0] + compacted.side.weight_dims()[0];
        assert!(concatenated < 6 * WIDTH, "seed {seed}");
        assert_eq!(compacted.fuse.in_channels(), concatenated, "seed {seed}");
        let kept = compacted.fuse.weight_dims()[0];
        assert_eq!(compacted.head.weight.dims(), [kept, 10], "seed {seed}");
        // The cost counts the depthwise conv's stripes at one weight each.
        let cost = CostReport::of_model(&compacted).unwrap();
        let depthwise = cost.layers.iter().find(|l| l.name == "depthwise").unwrap();
        assert_eq!(depthwise.macs, (live * 28 * 28) as u64, "seed {seed}");
    }
}

#[test]
fn a_flops_target_on_a_mobilenet_style_model_is_met_through_fit() {
    let device = Device::default().autodiff();
    device.seed(4);
    let model = MobileNet::new(&device);
    let (model, pruner, controller) =
        common::prune_to_half_the_flops(model, MobileNet::forward, &device);
    let valid = model.valid();
    let x = images(8, &mut SplitMix64(1), &Device::default());
    let masked_logits = valid.forward(x.clone());
    let compacted = pruner
        .compact(&model, x.clone(), MobileNet::forward)
        .unwrap();
    let (err, same) = compare(compacted.forward(x), masked_logits);
    assert!(err <= 1e-4 && same, "relative error {err}");
    let fresh = MobileNet::new(&Device::default());
    let full = common::cost_after_a_forward(fresh, MobileNet::forward).flops() as f64;
    let small = CostReport::of_model(&compacted).unwrap().flops() as f64;
    common::assert_half_the_flops_removed(1.0 - small / full, controller);
    let live = compacted.depthwise.stripe_layout().live_stripes();
    assert!(
        live < 4 * WIDTH * 9,
        "the depthwise conv kept all {live} stripes"
    );
}

/// The network of this file declared as a user might get it wrong: the expand conv declared to
/// feed the project conv across the depthwise conv (the channel counts line up, so the
/// declaration is consistent in itself), and the dilated conv's Hardswish declared as a ReLU.
#[derive(Module, Debug)]
struct Miswired {
    net: MobileNet,
    /// Which mistake the declaration makes.
    mistake: usize,
}

const ACROSS_THE_DEPTHWISE: usize = 0;
const WRONG_ACTIVATION: usize = 1;

impl Miswired {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.net.forward(x)
    }
}

impl Prunable for Miswired {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        let n = &self.net;
        let (expand_feeds, depthwise_feeds, dilated_activation) = match self.mistake {
            ACROSS_THE_DEPTHWISE => (vec!["project"], vec![], Activation::Hardswish),
            _ => (vec!["depthwise"], vec!["project"], Activation::Relu),
        };
        layers.conv("stem", &n.stem).norm("stem_bn", &n.stem_bn);
        layers
            .conv("expand", &n.expand)
            .norm("expand_bn", &n.expand_bn)
            .activation(Activation::Relu6)
            .feeds(expand_feeds);
        layers
            .conv("depthwise", &n.depthwise)
            .norm("depthwise_bn", &n.depthwise_bn)
            .activation(Activation::Relu6)
            .feeds(depthwise_feeds);
        layers
            .conv("project", &n.project)
            .norm("project_bn", &n.project_bn);
        layers
            .conv("grouped", &n.grouped)
            .norm("grouped_bn", &n.grouped_bn)
            .activation(Activation::Silu)
            .feeds(["dilated"]);
        layers
            .conv("dilated", &n.dilated)
            .norm("dilated_bn", &n.dilated_bn)
            .activation(dilated_activation);
        layers
            .conv("side", &n.side)
            .norm("side_bn", &n.side_bn)
            .relu();
        layers
            .conv("fuse", &n.fuse)
            .norm("fuse_bn", &n.fuse_bn)
            .relu()
            .feeds(["head"]);
        layers.linear("head", &n.head);
        layers.concat("fuse", ["dilated", "side"]);
    }
}

/// Filter `f` of `conv` dead (its skeleton row zero), its norm giving `bn(0) = shift`.
fn kill(conv: &mut SkeletonConv2d, norm: &mut BatchNorm, f: usize, shift: f32) {
    let device = conv.weight.val().device();
    let [cout, kh, kw] = conv.skeleton.dims();
    let mut skeleton: Vec<f32> = conv.skeleton.val().into_data().iter::<f32>().collect();
    skeleton[f * kh * kw..(f + 1) * kh * kw].fill(0.0);
    conv.skeleton = Param::from_tensor(tensor(skeleton, [cout, kh, kw], &device));
    let set = |t: Tensor<1>, v: f32| {
        let mut values: Vec<f32> = t.into_data().iter::<f32>().collect();
        values[f] = v;
        tensor(values, [cout], &device)
    };
    norm.gamma = Param::from_tensor(set(norm.gamma.val(), 1.0));
    norm.beta = Param::from_tensor(set(norm.beta.val(), shift));
    norm.running_mean = RunningState::new(set(norm.running_mean.value(), 0.0));
    norm.running_var = RunningState::new(set(norm.running_var.value(), 1.0 - 1e-5));
}

/// The miswired network, randomized, with a dead expand filter (an exactly-zero channel) and a
/// dead dilated filter whose norm gives `−1` (ReLU: 0; Hardswish: −1/3).
fn miswired(mistake: usize, seed: u64) -> Miswired {
    let device = Device::default();
    let mut rng = SplitMix64(seed);
    let mut net = MobileNet::new(&device);
    randomize_all(&mut net, &mut rng);
    kill(&mut net.expand, &mut net.expand_bn, 0, 0.0);
    kill(&mut net.dilated, &mut net.dilated_bn, 0, -1.0);
    Miswired { net, mistake }
}

#[test]
fn a_declaration_across_the_depthwise_conv_is_an_error_not_a_panic() {
    for seed in 0..3 {
        let model = miswired(ACROSS_THE_DEPTHWISE, 60 + seed);
        let x = images(4, &mut SplitMix64(seed), &Device::default());
        let before = model.forward(x.clone());
        // Without the check the compact model breaks: the expand conv lost channels that the
        // depthwise conv still reads.
        let broken = compact_unchecked(model.clone()).unwrap();
        assert!(
            broken.net.expand.weight_dims()[0] < 4 * WIDTH,
            "seed {seed}"
        );
        match compact(&model, x.clone(), Miswired::forward) {
            Err(ModelError::Mismatch { found, layers }) => {
                assert_eq!(layers, ["expand"], "seed {seed}: {found}");
                assert!(found.contains("panics"), "seed {seed}: {found}");
            }
            other => panic!("seed {seed}: {:?}", other.map(|_| ())),
        }
        // The same through the pruner, as a typed error; the model is unchanged.
        let pruner = Pruner::new(PrunerConfig::new(CdpConfig::new(), DtcConfig::new())).unwrap();
        let err = pruner
            .compact(&model, x.clone(), Miswired::forward)
            .unwrap_err();
        assert!(
            matches!(err, PruneError::Model(ModelError::Mismatch { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("`expand`"), "{err}");
        let (diff, _) = compare(model.forward(x), before);
        assert_eq!(diff, 0.0, "seed {seed}");
    }
}

#[test]
fn a_wrong_activation_is_found_by_the_output_check() {
    let model = miswired(WRONG_ACTIVATION, 70);
    let x = images(4, &mut SplitMix64(7), &Device::default());
    match compact(&model, x.clone(), Miswired::forward) {
        Err(ModelError::Mismatch { found, layers }) => {
            assert_eq!(layers, ["dilated"], "{found}");
            assert!(found.contains("differs"), "{found}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Declared right, the same weights compact, checked: the dilated channel carries
    // hardswish(−1) = −1/3, which the 1×1 fuse conv folds into its norm.
    let right = Miswired {
        mistake: ACROSS_THE_DEPTHWISE,
        ..model
    };
    let net = right.net.clone();
    let compacted = compact(&net, x.clone(), MobileNet::forward).unwrap();
    let (err, same) = compare(compacted.forward(x.clone()), net.forward(x));
    assert!(err <= 1e-5 && same, "relative error {err}");
}

#[test]
fn an_example_the_model_cannot_take_is_an_input_error() {
    let model = miswired(WRONG_ACTIVATION, 71);
    let x = Tensor::<4>::zeros([1, 3, 28, 28], &Device::default());
    let err = compact(&model.net, x, MobileNet::forward).unwrap_err();
    assert!(matches!(err, ModelError::Input { .. }), "{err}");
}

/// The zoo's MobileNetV2 (CIFAR strides, a quarter of the width, one input channel) through
/// `Pruner::fit` to a 50 % FLOPs target of the whole network, compacted and checked.
///
/// What holds: the controller counts the compact model's whole-network FLOPs exactly, the
/// target is met, the compact model computes the masked model's logits, depthwise filters lose
/// stripes. What does not, in 90 steps from scratch: ±3 points. A 1×1 filter is one stripe, and
/// every 1×1 conv's skeleton is still ≈ 1 in all filters, so DTC's `T_f = δ · mean_g L_g / L_f`
/// kills all its filters at one δ (≈ 1): the removal jumps from ~20 % to ~60 % between two
/// adjacent δ, the last pruning step must take the jump, and whole blocks go with their
/// projections (docs/budget.md, "Where the controller cannot follow the ramp").
#[test]
fn the_zoos_mobilenet_v2_is_counted_and_compacted_exactly_through_fit() {
    use texprune::zoo::mobilenet::{MobileNetV2, MobileNetV2Config};
    let config = MobileNetV2Config::cifar()
        .with_width_mult(0.25)
        .with_in_channels(1);
    let device = Device::default().autodiff();
    device.seed(8);
    let model = config.init(&device).unwrap();
    // A deep, narrow network from scratch: SGD at 0.05 diverges within the 90 steps here.
    let target = texprune::Target::flops(0.5, [28, 28]);
    let (model, pruner, controller) =
        common::prune_to(model, MobileNetV2::forward, target, 0.01, &device).unwrap();
    let x = images(8, &mut SplitMix64(1), &Device::default());
    let compacted = pruner
        .compact(&model, x.clone(), MobileNetV2::forward)
        .unwrap();
    let masked = pruner.apply_masks(model.valid());
    let (err, _) = compare(compacted.forward(x.clone()), masked.forward(x));
    assert!(err <= 1e-4, "relative error {err}");
    let fresh = config.init(&Device::default()).unwrap();
    let full = common::cost_after_a_forward(fresh, MobileNetV2::forward).flops() as f64;
    let small = CostReport::of_model(&compacted).unwrap();
    let removed = 1.0 - small.flops() as f64 / full;
    assert!(
        removed >= 0.5,
        "removed {:.1} % of the FLOPs",
        100.0 * removed
    );
    // The controller counted at its last control step; the model trained on under fixed masks
    // after it, and which dead channels are exactly zero or a folded constant follows the norms'
    // trained values (a run in parallel with other tests takes another trajectory: 0.984904
    // against 0.984738 seen), so the count agrees to 0.1 point, not exactly.
    assert!(
        (controller - removed).abs() <= 1e-3,
        "controller {controller:.6}, report {removed:.6}"
    );
    let depthwise = |f: fn(&SkeletonConv2d) -> usize| -> usize {
        compacted.blocks.iter().map(|b| f(&b.depthwise.conv)).sum()
    };
    let live = depthwise(|c| c.stripe_layout().live_stripes());
    let all = depthwise(|c| c.weight_dims()[0] * 9);
    assert!(live < all, "no depthwise stripe removed");
    eprintln!(
        "zoo MobileNetV2 0.25: {:.1} % of the FLOPs removed, depthwise stripes {live}/{all}",
        100.0 * removed
    );
}
