//! Grouped, depthwise and dilated convs, forward + backward at batch 64: `SkeletonConv2d` (its
//! skeleton product and Burn's convolution underneath) against Burn's own `Conv2d` on the same
//! shapes, on the default training backend.
//!
//! ```text
//! cargo bench --bench grouped_conv
//! ```

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use texprune::SkeletonConv2dConfig;
use texprune::burn::nn::PaddingConfig2d;
use texprune::burn::nn::conv::Conv2dConfig;
use texprune::burn::tensor::{Device, Distribution, Tensor};

/// `(name, [Cin, Cout], groups, dilation, stride, input side)`, padding keeping the size.
type Shape = (&'static str, [usize; 2], usize, usize, usize, usize);

const SHAPES: [Shape; 3] = [
    ("depthwise_3x3_c64_32x32", [64, 64], 64, 1, 1, 32),
    ("grouped4_3x3_c64_16x16", [64, 64], 4, 1, 1, 16),
    ("dilated2_3x3_c32_32x32", [32, 32], 1, 2, 1, 32),
];

fn bench(c: &mut Criterion) {
    let device = Device::default().autodiff();
    device.seed(7);
    let mut group = c.benchmark_group("conv_fwd_bwd_batch64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, channels, groups, dilation, stride, side) in SHAPES {
        let p = dilation;
        let padding = PaddingConfig2d::Explicit(p, p, p, p);
        let x = Tensor::<4>::random(
            [64, channels[0], side, side],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let ours = SkeletonConv2dConfig::new(channels, [3, 3])
            .with_groups(groups)
            .with_dilation([dilation, dilation])
            .with_stride([stride, stride])
            .with_padding(padding.clone())
            .init(&device)
            .unwrap();
        let burns = Conv2dConfig::new(channels, [3, 3])
            .with_groups(groups)
            .with_dilation([dilation, dilation])
            .with_stride([stride, stride])
            .with_padding(padding)
            .init(&device);
        group.bench_function(format!("{name}/skeleton_conv"), |b| {
            b.iter(|| {
                let x = x.clone().require_grad();
                let grads = ours.forward(x.clone()).sum().backward();
                x.grad(&grads).unwrap()
            })
        });
        group.bench_function(format!("{name}/burn_conv2d"), |b| {
            b.iter(|| {
                let x = x.clone().require_grad();
                let grads = burns.forward(x.clone()).sum().backward();
                x.grad(&grads).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
