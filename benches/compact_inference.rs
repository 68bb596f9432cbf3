//! Inference of ResNet-56 and VGG-16 (CIFAR, 3×32×32) on the default backend: the dense model
//! (Burn's convolution) against its compact form with 0 %, 50 % and 75 % of the stripes removed
//! at random, batch 1 and 64.
//!
//! ```text
//! cargo bench --bench compact_inference
//! cargo bench --bench compact_inference -- resnet56/64   # one model and batch
//! ```
//!
//! Before measuring it prints each compact model's dense/compact MAC ratio, so the measured
//! speedups can be read against the ideal one. `cargo run --release --example perf` prints the
//! same comparison as one table.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use texprune::burn::tensor::Device;
use texprune::zoo::resnet::ResNetConfig;
use texprune::zoo::vgg::VggConfig;
use texprune::{Classifier, Costed, Prunable};
use texprune_tools::perf::{random_stripe_masks, synthetic_batch};

// As in the `perf` example: glibc's allocator returns freed activations to the kernel and back,
// which costs compact inference about half its time on 2 cores (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn model_group<M: Prunable + Classifier + Costed>(
    group: &mut BenchmarkGroup<WallTime>,
    name: &str,
    model: M,
    device: &Device,
) {
    for batch in [1, 64] {
        let (x, _) = synthetic_batch(batch, [3, 32, 32], 10, 1, device);
        group.bench_function(format!("{name}/{batch}/dense"), |b| {
            b.iter(|| model.logits(x.clone()).into_data())
        });
        for removed in [0.0, 0.5, 0.75] {
            let masked = random_stripe_masks(model.clone(), removed, 7);
            let compact = texprune::compact(&masked, x.clone(), M::logits).unwrap();
            let ratio = masked.cost([32, 32]).macs() as f64 / compact.cost([32, 32]).macs() as f64;
            let id = format!("{name}/{batch}/compact_{:.0}pct_removed", removed * 100.0);
            println!("{id}: MAC ratio {ratio:.2}×");
            group.bench_function(id, |b| b.iter(|| compact.logits(x.clone()).into_data()));
        }
    }
}

fn bench(c: &mut Criterion) {
    let device = Device::default();
    device.seed(56);
    let mut group = c.benchmark_group("inference");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    model_group(
        &mut group,
        "resnet56",
        ResNetConfig::cifar(56).init(&device).unwrap(),
        &device,
    );
    model_group(
        &mut group,
        "vgg16",
        VggConfig::vgg16().init(&device).unwrap(),
        &device,
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
