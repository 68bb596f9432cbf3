//! `SkeletonConv2d` against Burn's own `Conv2d` holding the same weight `W ⊙ S`: forward pass,
//! input gradient and weight gradients, for grouped, depthwise and dilated convs, `Same`
//! padding with even kernels, strides 1 and 2; and the stripe-wise execution of each against
//! the dense one.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Tensor};

use crate::testing::{MASKINGS, SplitMix64 as Rng, random_input, randomize_conv};
use crate::{Activation, SkeletonConv2dConfig};

/// One conv shape: `[Cin, Cout]`, kernel, stride, dilation, groups, padding, input `[H, W]`.
type Case = (
    &'static str,
    [usize; 2],
    [usize; 2],
    usize,
    usize,
    usize,
    PaddingConfig2d,
    [usize; 2],
);

fn cases() -> Vec<Case> {
    use PaddingConfig2d::{Explicit, Same, Valid};
    vec![
        (
            "depthwise",
            [8, 8],
            [3, 3],
            1,
            1,
            8,
            Explicit(1, 1, 1, 1),
            [9, 9],
        ),
        ("depthwise s2 same", [8, 8], [3, 3], 2, 1, 8, Same, [9, 8]),
        (
            "depthwise ×2 multiplier",
            [4, 8],
            [3, 3],
            1,
            1,
            4,
            Same,
            [7, 7],
        ),
        (
            "4 groups",
            [8, 12],
            [3, 3],
            1,
            1,
            4,
            Explicit(1, 1, 1, 1),
            [8, 9],
        ),
        (
            "4 groups s2",
            [8, 12],
            [3, 3],
            2,
            1,
            4,
            Explicit(1, 1, 1, 1),
            [9, 9],
        ),
        (
            "dilation 2",
            [4, 6],
            [3, 3],
            1,
            2,
            1,
            Explicit(2, 2, 2, 2),
            [9, 9],
        ),
        (
            "dilation 2 s2 valid",
            [4, 6],
            [3, 3],
            2,
            2,
            1,
            Valid,
            [11, 10],
        ),
        (
            "dilated depthwise",
            [6, 6],
            [3, 3],
            1,
            2,
            6,
            Explicit(2, 2, 2, 2),
            [8, 8],
        ),
        ("same even kernel", [4, 5], [2, 2], 1, 1, 1, Same, [7, 8]),
        ("same even kernel s2", [4, 5], [4, 4], 2, 1, 1, Same, [9, 8]),
        ("same 3×3", [4, 5], [3, 3], 1, 1, 1, Same, [8, 8]),
        (
            "asymmetric explicit",
            [3, 4],
            [3, 2],
            1,
            1,
            1,
            Explicit(2, 0, 1, 1),
            [6, 7],
        ),
    ]
}

fn config(case: &Case) -> (SkeletonConv2dConfig, Conv2dConfig) {
    let (_, channels, kernel, stride, dilation, groups, padding, _) = case.clone();
    let ours = SkeletonConv2dConfig::new(channels, kernel)
        .with_stride([stride, stride])
        .with_dilation([dilation, dilation])
        .with_groups(groups)
        .with_padding(padding.clone());
    let burns = Conv2dConfig::new(channels, kernel)
        .with_stride([stride, stride])
        .with_dilation([dilation, dilation])
        .with_groups(groups)
        .with_padding(padding);
    (ours, burns)
}

/// `max |a − b| ≤ 1e-5 · max(1, max |b|)`.
fn assert_close<const D: usize>(a: Tensor<D>, b: Tensor<D>, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}");
    let a: Vec<f32> = a.into_data().iter::<f32>().collect();
    let b: Vec<f32> = b.into_data().iter::<f32>().collect();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff <= 1e-5 * scale, "{what}: {diff} of {scale}");
}

/// Forward pass and both gradients equal Burn's `Conv2d` with weight `W ⊙ S`:
/// `∂L/∂x` equal, `∂L/∂W = S ⊙ ∂L/∂W'` and `∂L/∂S = Σ_c W ⊙ ∂L/∂W'` where `W' = W ⊙ S`.
#[test]
fn dense_pass_and_gradients_equal_burns_conv2d() {
    let device = Device::default().autodiff();
    let mut rng = Rng(5);
    for case in cases() {
        let name = case.0;
        let (ours, burns) = config(&case);
        let mut conv = ours.init(&device).unwrap();
        randomize_conv(&mut conv, MASKINGS[2], &mut rng);
        conv.weight = Param::from_tensor(conv.weight.val().require_grad());
        conv.skeleton = Param::from_tensor(conv.skeleton.val().require_grad());
        let effective = (conv.weight.val() * conv.skeleton.val().unsqueeze_dim(1))
            .detach()
            .require_grad();
        let mut burn_conv = burns.init(&device);
        burn_conv.weight = Param::from_tensor(effective.clone());
        let bias = conv.bias.as_ref().unwrap().val().detach().require_grad();
        burn_conv.bias = Some(Param::from_tensor(bias.clone()));
        conv.bias = Some(Param::from_tensor(bias.clone()));

        let [cin, _] = case.1;
        let [h, w] = case.7;
        let x = random_input([3, cin, h, w], &mut rng, &device).require_grad();
        let x_burn = x.clone().detach().require_grad();
        let y = conv.forward(x.clone());
        let y_burn = burn_conv.forward(x_burn.clone());
        assert_eq!(y.dims(), y_burn.dims(), "{name}");
        assert_eq!(
            conv.spec().output_size([h, w]),
            [y.dims()[2], y.dims()[3]],
            "{name}"
        );
        let probe = random_input(y.dims(), &mut rng, &device);
        let grads = (y.clone() * probe.clone()).sum().backward();
        let grads_burn = (y_burn.clone() * probe).sum().backward();
        assert_close(y.inner(), y_burn.inner(), &format!("{name}: output"));
        assert_close(
            x.grad(&grads).unwrap(),
            x_burn.grad(&grads_burn).unwrap(),
            &format!("{name}: input gradient"),
        );
        let g_effective = effective.grad(&grads_burn).unwrap();
        let skeleton = conv.skeleton.val().inner().unsqueeze_dim(1);
        assert_close(
            conv.weight.val().grad(&grads).unwrap(),
            g_effective.clone() * skeleton,
            &format!("{name}: weight gradient"),
        );
        let from_weight: Tensor<3> = (g_effective * conv.weight.val().inner())
            .sum_dim(1)
            .squeeze_dim(1);
        assert_close(
            conv.skeleton.val().grad(&grads).unwrap(),
            from_weight,
            &format!("{name}: skeleton gradient"),
        );
        assert_close(
            bias.grad(&grads).unwrap(),
            bias.grad(&grads_burn).unwrap(),
            &format!("{name}: bias gradient"),
        );
    }
}

/// The stripe-wise execution (host kernel for plain convs, one backend conv over the live box
/// otherwise) equals the dense pass, with dead stripes, filters and layers, alone and fused
/// with a norm and every activation.
#[test]
fn stripe_wise_execution_equals_the_dense_pass() {
    use burn::nn::BatchNormConfig;
    let device = Device::default();
    let mut rng = Rng(8);
    for case in cases() {
        let name = case.0;
        let [cin, cout] = case.1;
        let [h, w] = case.7;
        for masking in MASKINGS {
            let mut conv = config(&case).0.init(&device).unwrap();
            let dead = randomize_conv(&mut conv, masking, &mut rng);
            let mut norm = BatchNormConfig::new(cout).init(&device);
            crate::testing::randomize_norm(&mut norm, &dead, &mut rng);
            let x = random_input([2, cin, h, w], &mut rng, &device);
            let compact = conv.clone().with_stripe_execution(true);
            assert_close(
                compact.forward(x.clone()),
                conv.forward(x.clone()),
                &format!("{name} {masking:?}"),
            );
            for activation in Activation::ALL {
                let steps = activation.forward(norm.forward(conv.forward(x.clone())));
                let fused = compact.forward_norm(x.clone(), &norm, None, activation);
                assert_close(fused, steps, &format!("{name} {masking:?} {activation:?}"));
            }
        }
    }
}
