//! Cost of the whole network, declared or not, on a model written here: a layer the
//! declaration leaves out (a Burn `Conv2d` stem, a standalone `BatchNorm`) is listed in the cost
//! report with its parameters, counts in a params target, and makes a FLOPs target an error
//! naming it; declared `.not_pruned()`, the same stem counts in a FLOPs target of the whole
//! network and keeps every stripe.

use texprune::burn::module::Module;
use texprune::burn::nn::conv::{Conv2d, Conv2dConfig};
use texprune::burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use texprune::burn::tensor::activation::relu;
use texprune::burn::tensor::module::adaptive_avg_pool2d;
use texprune::burn::tensor::{Device, Tensor};
use texprune::data::SplitMix64;
use texprune::{
    Activation, CostReport, LayerKind, Prunable, PrunableLayers, PruneError, Quantity,
    SkeletonConv2d, SkeletonConv2dConfig, Target,
};

mod common;

use common::{compare, images};

/// stem (3×3, 1→8) → norm → ReLU → conv1 (3×3/2, 8→16) → conv2 (3×3/2, 16→32) → global pool →
/// linear. The stem is a Burn `Conv2d` left out of the declaration, or a `SkeletonConv2d`
/// declared `.not_pruned()`.
#[derive(Module, Debug)]
struct Net {
    burn_stem: Option<Conv2d>,
    stem: Option<SkeletonConv2d>,
    stem_bn: BatchNorm,
    conv1: SkeletonConv2d,
    bn1: BatchNorm,
    conv2: SkeletonConv2d,
    bn2: BatchNorm,
    head: Linear,
}

impl Net {
    fn new(burn_stem: bool, device: &Device) -> Self {
        let same = PaddingConfig2d::Same;
        let conv = |cin, cout| {
            SkeletonConv2dConfig::new([cin, cout], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device)
                .unwrap()
        };
        let (burn, skeleton) = match burn_stem {
            true => (
                Some(
                    Conv2dConfig::new([1, 8], [3, 3])
                        .with_padding(same)
                        .init(device),
                ),
                None,
            ),
            false => (
                None,
                Some(
                    SkeletonConv2dConfig::new([1, 8], [3, 3])
                        .with_padding(same)
                        .init(device)
                        .unwrap(),
                ),
            ),
        };
        Self {
            burn_stem: burn,
            stem: skeleton,
            stem_bn: BatchNormConfig::new(8).init(device),
            conv1: conv(8, 16),
            bn1: BatchNormConfig::new(16).init(device),
            conv2: conv(16, 32),
            bn2: BatchNormConfig::new(32).init(device),
            head: LinearConfig::new(32, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = match (&self.burn_stem, &self.stem) {
            (Some(stem), _) => relu(self.stem_bn.forward(stem.forward(x))),
            (_, Some(stem)) => stem.forward_norm(x, &self.stem_bn, None, Activation::Relu),
            _ => unreachable!("one stem"),
        };
        let x = self
            .conv1
            .forward_norm(x, &self.bn1, None, Activation::Relu);
        let x = self
            .conv2
            .forward_norm(x, &self.bn2, None, Activation::Relu);
        self.head
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }
}

impl Prunable for Net {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        if let Some(stem) = &self.stem {
            layers
                .conv("stem", stem)
                .norm("stem_bn", &self.stem_bn)
                .relu()
                .not_pruned()
                .feeds(["conv1"]);
        }
        layers
            .conv("conv1", &self.conv1)
            .norm("bn1", &self.bn1)
            .relu()
            .feeds(["conv2"]);
        layers
            .conv("conv2", &self.conv2)
            .norm("bn2", &self.bn2)
            .relu()
            .feeds(["head"]);
        layers.linear("head", &self.head);
    }
}

/// Whole-network cost of a fresh model after one forward pass.
fn fresh_cost(burn_stem: bool) -> CostReport {
    common::cost_after_a_forward(Net::new(burn_stem, &Device::default()), Net::forward)
}

#[test]
fn undeclared_layers_are_listed_with_their_parameters() {
    let report = fresh_cost(true);
    let undeclared: Vec<_> = report.of_kind(LayerKind::Undeclared).collect();
    let names: Vec<&str> = undeclared.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["burn_stem", "stem_bn"]);
    // 8·1·3·3 weights and 8 biases; γ and β (not the running statistics).
    assert_eq!(undeclared[0].params, 8 * 9 + 8);
    assert_eq!(undeclared[1].params, 2 * 8);
    assert!(
        undeclared[0].shape.starts_with("Conv2d"),
        "{}",
        undeclared[0].shape
    );
    let declared: u64 = report
        .layers
        .iter()
        .filter(|l| l.kind != LayerKind::Undeclared)
        .map(|l| l.params)
        .sum();
    assert_eq!(report.params(), declared + 8 * 9 + 8 + 2 * 8);
    assert!(report.to_string().contains("not declared"), "{report}");
    // Declared, the stem is counted as a conv and nothing is left out.
    let report = fresh_cost(false);
    assert_eq!(report.of_kind(LayerKind::Undeclared).count(), 0, "{report}");
    assert!(report.layers.iter().any(|l| l.name == "stem"));
}

#[test]
fn a_flops_target_with_an_undeclared_conv_is_an_error_naming_it() {
    let device = Device::default().autodiff();
    device.seed(5);
    let model = Net::new(true, &device);
    let err = common::prune_to(
        model,
        Net::forward,
        Target::flops(0.5, [28, 28]),
        0.05,
        &device,
    )
    .map(|_| ())
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PruneError::Budget(_)), "{message}");
    assert!(message.contains("`burn_stem` (Conv2d)"), "{message}");
}

#[test]
fn a_params_target_counts_the_undeclared_layers() {
    let device = Device::default().autodiff();
    device.seed(6);
    let model = Net::new(true, &device);
    let target = Target::new(Quantity::Params, 0.5).with_input_size([28, 28]);
    let (model, pruner, controller) =
        common::prune_to(model, Net::forward, target, 0.05, &device).unwrap();
    let x = images(8, &mut SplitMix64(1), &Device::default());
    let compacted = pruner.compact(&model, x, Net::forward).unwrap();
    let small = CostReport::of_model(&compacted).unwrap().params() as f64;
    let removed = 1.0 - small / fresh_cost(true).params() as f64;
    assert!(
        (controller - removed).abs() <= 1e-4,
        "controller {controller:.6}, whole network {removed:.6}"
    );
    assert!(removed >= 0.47, "removed {:.1} %", 100.0 * removed);
}

#[test]
fn a_stem_declared_not_pruned_counts_in_a_flops_target_and_keeps_its_stripes() {
    let device = Device::default().autodiff();
    device.seed(7);
    let model = Net::new(false, &device);
    let (model, pruner, controller) = common::prune_to_half_the_flops(model, Net::forward, &device);
    let x = images(8, &mut SplitMix64(1), &Device::default());
    let compacted = pruner.compact(&model, x.clone(), Net::forward).unwrap();
    let masked = pruner.apply_masks(model.valid());
    let (err, same) = compare(compacted.forward(x.clone()), masked.forward(x));
    assert!(err <= 1e-4 && same, "relative error {err}");
    let stem = compacted.stem.as_ref().unwrap();
    assert_eq!(
        stem.stripe_layout().live_stripes(),
        8 * 9,
        "the stem lost stripes"
    );
    let report = CostReport::of_model(&compacted).unwrap();
    let removed = 1.0 - report.flops() as f64 / fresh_cost(false).flops() as f64;
    common::assert_half_the_flops_removed(removed, controller);
}
