//! The filter texture statistics of one layer (weight and skeleton similarity to the layer mean,
//! METHOD §2), value only and value + gradient, for a small, a middle and a large conv, on the
//! default backend.
//!
//! ```text
//! cargo bench --bench texture_stats
//! ```

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use texprune::burn::tensor::{Device, Distribution, Tensor};
use texprune::texture::{SkeletonTexture, WeightTexture};

fn bench(c: &mut Criterion) {
    let device = Device::default().autodiff();
    device.seed(3);
    let mut group = c.benchmark_group("texture_stats");
    for [cout, cin] in [[16, 16], [64, 64], [512, 512]] {
        let label = format!("{cout}x{cin}x3x3");
        let weight = Tensor::<4>::random([cout, cin, 3, 3], Distribution::Default, &device);
        let skeleton = Tensor::<3>::random([cout, 3, 3], Distribution::Default, &device);
        let (w, s) = (weight.clone().inner(), skeleton.clone().inner());
        group.bench_with_input(BenchmarkId::new("value", &label), &label, |b, _| {
            b.iter(|| {
                let mass =
                    WeightTexture::new(w.clone()).mass() + SkeletonTexture::new(s.clone()).mass();
                mass.into_data()
            })
        });
        let (w, s) = (weight.require_grad(), skeleton.require_grad());
        group.bench_with_input(
            BenchmarkId::new("value_and_gradient", &label),
            &label,
            |b, _| {
                b.iter(|| {
                    let mass = WeightTexture::new(w.clone()).mass()
                        + SkeletonTexture::new(s.clone()).mass();
                    let grads = mass.backward();
                    w.grad(&grads).unwrap().into_data()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
