//! Exactness of compaction: for random weights, BatchNorm statistics and masks (with dead
//! stripes, dead filters, constant channels and dead blocks), the compact model's output equals
//! the masked model's.

use burn::module::{Module, Param, RunningState};
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor, TensorData};

use super::*;
use crate::resnet::{ResNet, ResNetConfig};
use crate::vgg::{Vgg, VggConfig, VggLayer};
use crate::{CostReport, Costed, SkeletonConv2d};

use texprune_data::SplitMix64 as Rng;

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// How a random mask is drawn.
#[derive(Clone, Copy)]
struct Masking {
    /// Probability that a stripe is dead.
    stripe: f32,
    /// Probability that a filter is dead.
    filter: f32,
    /// Probability that the whole layer is dead.
    layer: f32,
}

/// Random weight and a skeleton with random dead stripes, filters or the whole layer; returns
/// which filters are dead.
fn randomize_conv(conv: &mut SkeletonConv2d, masking: Masking, rng: &mut Rng) -> Vec<bool> {
    let device = conv.weight.val().device();
    let [cout, cin, kh, kw] = conv.weight_dims();
    let bound = (3.0 / (cin * kh * kw) as f32).sqrt();
    let weight = (0..cout * cin * kh * kw)
        .map(|_| rng.range(-bound, bound))
        .collect();
    let layer_dead = rng.chance(masking.layer);
    let mut dead = vec![false; cout];
    let mut skeleton = Vec::with_capacity(cout * kh * kw);
    for d in dead.iter_mut() {
        let filter_dead = layer_dead || rng.chance(masking.filter);
        let row: Vec<f32> = (0..kh * kw)
            .map(|_| {
                if filter_dead || rng.chance(masking.stripe) {
                    0.0
                } else {
                    rng.range(0.5, 1.5) * if rng.chance(0.5) { -1.0 } else { 1.0 }
                }
            })
            .collect();
        *d = row.iter().all(|v| *v == 0.0);
        skeleton.extend(row);
    }
    conv.weight = Param::from_tensor(tensor(weight, [cout, cin, kh, kw], &device));
    conv.skeleton = Param::from_tensor(tensor(skeleton, [cout, kh, kw], &device));
    dead
}

/// Random γ, β and running statistics; the channels in `zeroed` get `γ = β = 0`, as DTC leaves
/// a coupled BatchNorm of dead filters.
fn randomize_norm(norm: &mut BatchNorm, zeroed: &[bool], rng: &mut Rng) {
    let device = norm.gamma.val().device();
    let [c] = norm.gamma.dims();
    let mut draw = |lo, hi| (0..c).map(|_| rng.range(lo, hi)).collect::<Vec<_>>();
    let mut gamma = draw(0.5, 1.5);
    let mut beta = draw(-0.5, 0.5);
    let mean = draw(-0.5, 0.5);
    let var = draw(0.5, 2.0);
    for (f, _) in zeroed.iter().enumerate().filter(|(_, z)| **z) {
        (gamma[f], beta[f]) = (0.0, 0.0);
    }
    norm.gamma = Param::from_tensor(tensor(gamma, [c], &device));
    norm.beta = Param::from_tensor(tensor(beta, [c], &device));
    norm.running_mean = RunningState::new(tensor(mean, [c], &device));
    norm.running_var = RunningState::new(tensor(var, [c], &device));
}

/// Dead filters of a coupled conv get a zeroed BatchNorm, except with probability `keep`
/// (then their channel is the constant `relu(bn(0))`, which compaction must keep).
fn coupled(dead: &[bool], keep: f32, rng: &mut Rng) -> Vec<bool> {
    dead.iter().map(|&d| d && !rng.chance(keep)).collect()
}

fn randomize_vgg(mut model: Vgg, masking: Masking, rng: &mut Rng) -> Vgg {
    for (conv, norm) in model.convs.iter_mut().zip(model.norms.iter_mut()) {
        let dead = randomize_conv(conv, masking, rng);
        randomize_norm(norm, &coupled(&dead, 0.2, rng), rng);
    }
    model
}

fn randomize_resnet(mut model: ResNet, masking: Masking, rng: &mut Rng) -> ResNet {
    randomize_conv(&mut model.conv1, masking, rng);
    randomize_norm(&mut model.bn1, &[], rng);
    for block in &mut model.blocks {
        let last = block.convs.len() - 1;
        for (k, (conv, norm)) in block
            .convs
            .iter_mut()
            .zip(block.norms.iter_mut())
            .enumerate()
        {
            let dead = randomize_conv(conv, masking, rng);
            let zeroed = if k < last {
                coupled(&dead, 0.2, rng)
            } else {
                vec![]
            };
            randomize_norm(norm, &zeroed, rng);
        }
        if let Some(s) = &mut block.shortcut {
            let dense = Masking {
                stripe: 0.0,
                filter: 0.0,
                layer: 0.0,
            };
            randomize_conv(&mut s.conv, dense, rng);
            randomize_norm(&mut s.norm, &[], rng);
        }
    }
    model
}

fn input(shape: [usize; 4], rng: &mut Rng, device: &Device) -> Tensor<4> {
    let n = shape.iter().product();
    tensor(
        (0..n).map(|_| rng.range(-2.0, 2.0)).collect(),
        shape,
        device,
    )
}

/// `max |a − b| / max |b|`.
fn relative_error(a: Tensor<2>, b: Tensor<2>) -> f32 {
    let diff: f32 = (a - b.clone()).abs().max().into_scalar();
    let scale: f32 = b.abs().max().into_scalar();
    let scale = scale.max(1e-6);
    diff / scale
}

const MASKINGS: [Masking; 3] = [
    Masking {
        stripe: 0.5,
        filter: 0.2,
        layer: 0.1,
    },
    Masking {
        stripe: 0.8,
        filter: 0.4,
        layer: 0.25,
    },
    Masking {
        stripe: 0.2,
        filter: 0.05,
        layer: 0.0,
    },
];

fn check_vgg(config: VggConfig, seeds: u64, size: usize) {
    let device = Device::default();
    for seed in 0..seeds {
        let mut rng = Rng(seed);
        let masking = MASKINGS[seed as usize % MASKINGS.len()];
        let model = randomize_vgg(config.init(&device).unwrap(), masking, &mut rng);
        let compact = compact(model.clone()).unwrap();
        assert!(compact.convs.iter().all(SkeletonConv2d::is_stripe_wise));
        let x = input([2, 3, size, size], &mut rng, &device);
        let err = relative_error(compact.forward(x.clone()), model.forward(x));
        assert!(err <= 1e-5, "seed {seed}: relative error {err}");
        let (dense, small) = (model.cost([size, size]), compact.cost([size, size]));
        assert!(small.macs() <= dense.macs() && small.params() <= dense.params());
        // The generic cost (from the declaration) agrees with the zoo's on the convs.
        let generic = CostReport::of_model(&compact).unwrap();
        let convs = |r: &CostReport| {
            r.of_kind(crate::LayerKind::StripeConv)
                .map(|l| l.macs)
                .sum::<u64>()
        };
        assert_eq!(convs(&generic), convs(&small), "seed {seed}");
    }
}

/// Returns how many blocks were folded over all seeds.
fn check_resnet(config: ResNetConfig, seeds: u64, size: usize) -> usize {
    let device = Device::default();
    let mut folded = 0;
    for seed in 0..seeds {
        let mut rng = Rng(1000 + seed);
        let masking = MASKINGS[seed as usize % MASKINGS.len()];
        let model = randomize_resnet(config.init(&device).unwrap(), masking, &mut rng);
        let compact = compact(model.clone()).unwrap();
        folded += compact.folded_blocks().len();
        let x = input([2, 3, size, size], &mut rng, &device);
        let err = relative_error(compact.forward(x.clone()), model.forward(x));
        assert!(err <= 1e-5, "seed {seed}: relative error {err}");
        let (dense, small) = (model.cost([size, size]), compact.cost([size, size]));
        assert!(small.macs() <= dense.macs());
    }
    folded
}

#[test]
fn compact_vgg11_equals_masked() {
    check_vgg(VggConfig::vgg11(), 6, 32);
}

#[test]
fn compact_vgg16_equals_masked() {
    check_vgg(VggConfig::vgg16(), 6, 32);
}

#[test]
fn compact_small_vgg_with_pools_at_the_end_equals_masked() {
    use VggLayer::{Conv as C, MaxPool as M};
    check_vgg(
        VggConfig::new(vec![C(6), M, C(8), M, C(12), M, M, M]),
        20,
        32,
    );
}

#[test]
fn compact_resnet20_equals_masked_and_folds_blocks() {
    assert!(check_resnet(ResNetConfig::cifar(20), 12, 32) > 0);
}

#[test]
fn compact_resnet56_equals_masked() {
    assert!(check_resnet(ResNetConfig::cifar(56), 6, 32) > 0);
}

#[test]
fn compact_resnet18_equals_masked() {
    check_resnet(ResNetConfig::resnet18().with_num_classes(10), 3, 64);
}

#[test]
fn compact_resnet50_equals_masked() {
    check_resnet(ResNetConfig::resnet50().with_num_classes(10), 3, 64);
}

#[test]
fn all_dead_vgg_still_runs_and_matches() {
    let device = Device::default();
    let mut rng = Rng(7);
    let dead = Masking {
        stripe: 1.0,
        filter: 1.0,
        layer: 1.0,
    };
    use VggLayer::{Conv as C, MaxPool as M};
    let model = randomize_vgg(
        VggConfig::new(vec![C(4), M, C(6)]).init(&device).unwrap(),
        dead,
        &mut rng,
    );
    let compact = compact(model.clone()).unwrap();
    assert_eq!(compact.convs[1].stripe_layout().live_stripes(), 0);
    // Every channel is dead: each conv keeps one exactly-zero channel, the classifier its rows.
    assert_eq!(compact.convs[1].weight_dims()[..2], [1, 1]);
    assert_eq!(compact.classifier.weight.dims()[0], 32 * 32 / 4);
    let x = input([2, 3, 32, 32], &mut rng, &device);
    assert!(relative_error(compact.forward(x.clone()), model.forward(x)) <= 1e-5);
}

/// A compacted model is rebuilt from the masked model's record: load it into a fresh model and
/// compact again.
#[test]
fn compacting_a_reloaded_masked_model_gives_the_same_model() {
    let device = Device::default();
    let mut rng = Rng(42);
    let config = ResNetConfig::cifar(20);
    let masked = randomize_resnet(config.init(&device).unwrap(), MASKINGS[1], &mut rng);
    let x = input([2, 3, 32, 32], &mut rng, &device);
    let expected = compact(masked.clone())
        .unwrap()
        .forward(x.clone())
        .into_data();
    let dir = std::env::temp_dir().join(format!("texprune-compact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet20.bpk");
    masked.save_file(&path).unwrap();
    let reloaded = config.init(&device).unwrap().try_load_file(&path).unwrap();
    assert_eq!(compact(reloaded).unwrap().forward(x).into_data(), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_skeleton_is_an_error() {
    let device = Device::default();
    let mut model = VggConfig::new(vec![VggLayer::Conv(4)])
        .init(&device)
        .unwrap();
    model.convs[0].skeleton = Param::from_tensor(Tensor::full([4, 3, 3], f32::NAN, &device));
    let err = compact(model).unwrap_err();
    assert!(err.to_string().contains("features.0"), "{err}");
}

/// The host kernel and the device path (one conv over the live box) compute the same conv, for
/// every stride, kernel and padding the zoo uses, with dead positions and dead filters.
#[test]
fn host_kernel_equals_device_path() {
    use crate::{Activation, SkeletonConv2dConfig};
    let device = Device::default();
    let mut rng = Rng(3);
    for (k, stride, padding, size) in [
        (3, 1, None, 9),
        (3, 2, None, 9),
        (3, 2, None, 8),
        (1, 1, None, 7),
        (1, 2, None, 7),
        (7, 2, None, 16),
        (3, 1, Some([0, 0]), 6),
        (3, 3, Some([2, 2]), 10),
    ] {
        for masking in MASKINGS {
            let mut conv = SkeletonConv2dConfig::new([5, 6], [k, k])
                .with_stride([stride, stride])
                .with_padding(padding)
                .init(&device)
                .unwrap();
            randomize_conv(&mut conv, masking, &mut rng);
            let x = input([5, 5, size, size], &mut rng, &device);
            let dense = conv.forward(x.clone());
            let compact = conv.with_stripe_execution(true);
            let layout = compact.stripe_layout();
            // The host kernel groups images per GEMM by thread count: one thread puts all five
            // images in one group, three threads make groups of 2, 2 and 1.
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| compact.forward(x.clone()))
            };
            let (host_1, host_3) = (on(1), on(3));
            let device_path =
                stripes::forward_device(&compact, &layout, x, None, None, Activation::Identity);
            assert_eq!(host_1.dims(), dense.dims());
            let scale: f32 = dense.clone().abs().max().into_scalar();
            for (what, y) in [
                ("host, 1 thread", host_1),
                ("host, 3 threads", host_3),
                ("device path", device_path),
            ] {
                let err: f32 = (y - dense.clone()).abs().max().into_scalar();
                assert!(err <= 1e-5 * scale.max(1.0), "k{k} s{stride} {what}: {err}");
            }
        }
    }
}

/// The host kernel reads its input in place; a shared input (a residual block's, held by the
/// shortcut too) and a non-contiguous one (a transposed view) give the dense conv's output.
#[test]
fn host_kernel_reads_shared_and_strided_inputs() {
    use crate::SkeletonConv2dConfig;
    let device = Device::default();
    let mut rng = Rng(5);
    let mut conv = SkeletonConv2dConfig::new([4, 6], [3, 3])
        .init(&device)
        .unwrap();
    randomize_conv(&mut conv, MASKINGS[0], &mut rng);
    let x = input([3, 4, 7, 9], &mut rng, &device);
    let before: Vec<f32> = x.to_data().iter::<f32>().collect();
    let transposed = x.clone().swap_dims(2, 3);
    let compact = conv.clone().with_stripe_execution(true);
    for (what, x) in [("shared", x.clone()), ("transposed", transposed)] {
        let dense = conv.forward(x.clone());
        let scale: f32 = dense.clone().abs().max().into_scalar();
        let err: f32 = (compact.forward(x) - dense).abs().max().into_scalar();
        assert!(err <= 1e-5 * scale.max(1.0), "{what}: {err}");
    }
    let after: Vec<f32> = x.into_data().iter::<f32>().collect();
    assert_eq!(after, before, "the shared input is untouched");
}

/// `forward_norm` on a compacted conv (the host kernel's output pass: bias, BatchNorm in
/// inference form, residual, activation) and the device path (the BatchNorm folded into the
/// conv) equal the steps written out, for strides 1 and 2,
/// with and without bias, residual and ReLU, and on a conv whose every stripe is dead.
#[test]
fn fused_norm_residual_activation_equals_the_steps() {
    use crate::{Activation, SkeletonConv2dConfig};
    use burn::nn::BatchNormConfig;
    let device = Device::default();
    let mut rng = Rng(21);
    for (stride, bias, all_dead) in [(1, false, false), (2, true, false), (1, true, true)] {
        let mut conv = SkeletonConv2dConfig::new([5, 6], [3, 3])
            .with_stride([stride, stride])
            .with_bias(bias)
            .init(&device)
            .unwrap();
        let masking = if all_dead {
            Masking {
                stripe: 1.0,
                ..MASKINGS[0]
            }
        } else {
            MASKINGS[0]
        };
        randomize_conv(&mut conv, masking, &mut rng);
        if let Some(b) = &conv.bias {
            conv.bias = Some(Param::from_tensor(b.val() + 0.3));
        }
        let mut norm = BatchNormConfig::new(6).init(&device);
        randomize_norm(&mut norm, &[], &mut rng);
        let x = input([3, 5, 9, 9], &mut rng, &device);
        let compact = conv.clone().with_stripe_execution(true);
        let y = conv.forward(x.clone());
        let residual = input(y.dims(), &mut rng, &device);
        for with_residual in [false, true] {
            for activation in [Activation::Identity, Activation::Relu] {
                let r = with_residual.then(|| residual.clone());
                let steps = norm.forward(conv.forward(x.clone()));
                let steps = activation.forward(match &r {
                    Some(r) => steps + r.clone(),
                    None => steps,
                });
                let layout = compact.stripe_layout();
                let fused = compact.forward_norm(x.clone(), &norm, r.clone(), activation);
                let folded = stripes::forward_device(
                    &compact,
                    &layout,
                    x.clone(),
                    Some(&norm),
                    r,
                    activation,
                );
                let scale: f32 = steps.clone().abs().max().into_scalar();
                for (path, y) in [("host kernel", fused), ("device path", folded)] {
                    let err: f32 = (y - steps.clone()).abs().max().into_scalar();
                    let what =
                        format!("stride {stride} bias {bias} dead {all_dead} {activation:?}");
                    assert!(
                        err <= 1e-5 * scale.max(1.0),
                        "{path}: {what} residual {with_residual}: {err}"
                    );
                }
            }
        }
    }
}

/// The device path crops the kernel to the live positions' bounding box and moves the padding:
/// a centred box (padding shrinks evenly), a corner or an edge (uneven: padded or sliced
/// explicitly), a box that is the whole kernel, no live position; strides 1 and 2, padding 0,
/// 1 and 2, square and rectangular kernels — each equal to the dense conv.
#[test]
fn device_path_crops_to_the_live_box() {
    use crate::{Activation, SkeletonConv2dConfig};
    let device = Device::default();
    let mut rng = Rng(34);
    let patterns: [&[[usize; 2]]; 6] = [
        &[[1, 1]],
        &[[0, 0]],
        &[[2, 1], [2, 2]],
        &[[0, 2], [2, 0]],
        &[[1, 0], [1, 1]],
        &[],
    ];
    for ([kh, kw], stride, padding) in [
        ([3, 3], 1, [1, 1]),
        ([3, 3], 2, [1, 1]),
        ([3, 3], 1, [0, 0]),
        ([3, 3], 2, [2, 2]),
        ([3, 5], 1, [1, 2]),
    ] {
        for pattern in patterns {
            let mut conv = SkeletonConv2dConfig::new([4, 5], [kh, kw])
                .with_stride([stride, stride])
                .with_padding(Some(padding))
                .init(&device)
                .unwrap();
            randomize_conv(
                &mut conv,
                Masking {
                    stripe: 0.0,
                    filter: 0.0,
                    layer: 0.0,
                },
                &mut rng,
            );
            // Every filter keeps the pattern's positions but filter 0, which keeps none.
            let skeleton: Vec<f32> = (0..5 * kh * kw)
                .map(|e| {
                    let (f, p) = (e / (kh * kw), e % (kh * kw));
                    let live = f > 0 && pattern.contains(&[p / kw, p % kw]);
                    if live { rng.range(0.5, 1.5) } else { 0.0 }
                })
                .collect();
            conv.skeleton = Param::from_tensor(tensor(skeleton, [5, kh, kw], &device));
            let x = input([2, 4, 8, 7], &mut rng, &device);
            let dense = conv.forward(x.clone());
            let compact = conv.with_stripe_execution(true);
            let layout = compact.stripe_layout();
            let y = stripes::forward_device(&compact, &layout, x, None, None, Activation::Identity);
            let what = format!("k{kh}x{kw} s{stride} p{padding:?} {pattern:?}");
            assert_eq!(y.dims(), dense.dims(), "{what}");
            let scale: f32 = dense.clone().abs().max().into_scalar();
            let err: f32 = (y - dense).abs().max().into_scalar();
            assert!(err <= 1e-5 * scale.max(1.0), "{what}: {err}");
        }
    }
}

#[test]
fn host_max_pool_equals_burns() {
    let device = Device::default();
    let mut rng = Rng(8);
    for size in [8, 7, 3, 1] {
        let x = input([2, 3, size, size], &mut rng, &device);
        let burn = burn::nn::pool::MaxPool2dConfig::new([2, 2])
            .init()
            .forward(x.clone());
        let data: Vec<f32> = x.into_data().iter::<f32>().collect();
        let host = texprune_kernels::pool::max_pool_2x2(&data, [6, size, size]);
        let expected: Vec<f32> = burn.clone().into_data().iter::<f32>().collect();
        assert_eq!(burn.dims(), [2, 3, size / 2, size / 2]);
        assert_eq!(host, expected, "size {size}");
    }
}
