//! Inference latency of the compact ResNet-56 against the masked (dense) one, batch 64, on the
//! default backend, with about 50 % and 75 % of the thresholded convs' stripes removed, and with
//! none removed (the compact kernel against the dense conv at equal MACs).
//!
//! ```text
//! cargo bench --bench compaction
//! ```
//!
//! Before measuring it prints, for each mask, the live-stripe fraction and the dense/compact MAC
//! ratio, so the measured speedup can be read against the ideal one.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use texprune::burn::module::Param;
use texprune::burn::tensor::{Device, Distribution, Tensor};
use texprune::zoo::resnet::{ResNet, ResNetConfig};
use texprune::zoo::{SkeletonConv2d, compact::CompactResNet};
use texprune::{Compactable, Costed, Prunable};

const BATCH: usize = 64;

/// Removes each stripe with probability `removed`, as DTC would leave the skeleton.
fn mask(conv: &mut SkeletonConv2d, removed: f64, device: &Device) {
    let keep = Tensor::<3>::random(
        conv.skeleton.dims(),
        Distribution::Bernoulli(1.0 - removed),
        device,
    );
    conv.skeleton = Param::from_tensor(conv.skeleton.val() * keep);
}

/// ResNet-56 with random masks on every thresholded conv, and dead block-inner filters'
/// BatchNorm channels zeroed (what DTC does to the coupled BatchNorm).
fn masked_resnet56(removed: f64, device: &Device) -> ResNet {
    let mut model = ResNetConfig::cifar(56).init(device).expect("valid config");
    mask(&mut model.conv1, removed, device);
    for block in &mut model.blocks {
        for conv in &mut block.convs {
            mask(conv, removed, device);
        }
        let alive = block.convs[0]
            .skeleton
            .val()
            .abs()
            .sum_dim(2)
            .sum_dim(1)
            .flatten::<1>(0, 2)
            .greater_elem(0.0)
            .float();
        let bn = &mut block.norms[0];
        bn.gamma = Param::from_tensor(bn.gamma.val() * alive.clone());
        bn.beta = Param::from_tensor(bn.beta.val() * alive);
    }
    model
}

fn live_fraction(model: &ResNet) -> f64 {
    let (live, total) = model
        .collect_prunable()
        .iter()
        .filter(|l| l.thresholded)
        .fold((0.0, 0.0), |(live, total), l| {
            let s = l.skeleton.clone();
            let n = s.dims().iter().product::<usize>() as f64;
            let nz: f64 = s.not_equal_elem(0.0).float().sum().into_scalar();
            (live + nz, total + n)
        });
    live / total
}

fn bench(c: &mut Criterion) {
    let device = Device::default();
    device.seed(56);
    let x = Tensor::<4>::random([BATCH, 3, 32, 32], Distribution::Default, &device);
    let mut group = c.benchmark_group("resnet56_batch64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    let dense = masked_resnet56(0.5, &device);
    group.bench_function("masked_dense", |b| {
        b.iter(|| dense.forward(x.clone()).into_data())
    });
    for removed in [0.0, 0.5, 0.75] {
        let model = masked_resnet56(removed, &device);
        let compact: CompactResNet = model.compact().expect("finite model");
        let (dense_cost, compact_cost) = (model.cost([32, 32]), compact.cost([32, 32]));
        println!(
            "{:.0} % stripes removed: live fraction {:.3}, MACs {} → {} (ratio {:.2}×), params {} → {}",
            removed * 100.0,
            live_fraction(&model),
            dense_cost.macs(),
            compact_cost.macs(),
            dense_cost.macs() as f64 / compact_cost.macs() as f64,
            dense_cost.params(),
            compact_cost.params(),
        );
        group.bench_function(format!("compact_{:.0}pct_removed", removed * 100.0), |b| {
            b.iter(|| compact.forward(x.clone()).into_data())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
