//! The stripe-wise execution's two paths (the host kernel and one backend conv over the live
//! box) against each other and against the dense conv, on random layers.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::tensor::Device;

use super::stripes;
use crate::testing::random_input as input;
use crate::testing::{
    MASKINGS, Masking, SplitMix64 as Rng, randomize_conv, randomize_norm, tensor,
};

/// The host kernel and the device path (one conv over the live box) compute the same conv, for
/// every stride, kernel and padding the zoo uses, with dead positions and dead filters.
#[test]
fn host_kernel_equals_device_path() {
    use crate::{Activation, SkeletonConv2dConfig};
    let device = Device::default();
    let mut rng = Rng(3);
    for (k, stride, padding, size) in [
        (3, 1, 1, 9),
        (3, 2, 1, 9),
        (3, 2, 1, 8),
        (1, 1, 0, 7),
        (1, 2, 0, 7),
        (7, 2, 3, 16),
        (3, 1, 0, 6),
        (3, 3, 2, 10),
    ] {
        for masking in MASKINGS {
            let mut conv = SkeletonConv2dConfig::new([5, 6], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
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
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
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
                .with_padding(PaddingConfig2d::Explicit(
                    padding[0], padding[1], padding[0], padding[1],
                ))
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
