//! The CDP penalty (every term, forward + backward) and the DTC step (thresholds and masks) alone,
//! over the first 1, 10 and all 57 prunable convs of ResNet-56, on the default backend.
//!
//! ```text
//! cargo bench --bench penalty
//! ```

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use texprune::burn::tensor::Device;
use texprune::cdp::{Cdp, LayerParams};
use texprune::dtc::ThresholdContainer;
use texprune::zoo::resnet::ResNetConfig;
use texprune::{CdpConfig, DtcConfig, Prunable};

fn bench(c: &mut Criterion) {
    let device = Device::default().autodiff();
    device.seed(56);
    let layers = ResNetConfig::cifar(56)
        .init(&device)
        .unwrap()
        .collect_prunable()
        .into_vec();
    let every_term = CdpConfig::every_term(1e-4);
    let mut cdp = Cdp::new(every_term).unwrap();
    let mut group = c.benchmark_group("resnet56_layers");
    for n in [1, 10, layers.len()] {
        let params: Vec<LayerParams> = layers[..n]
            .iter()
            .map(|l| LayerParams {
                weight: l.weight.clone(),
                skeleton: l.skeleton.clone(),
            })
            .collect();
        // A texture-mass history, as after the first step.
        let first = cdp.evaluate(&params).unwrap();
        cdp.commit(first.masses);
        group.bench_with_input(
            BenchmarkId::new("penalty_forward_backward", n),
            &n,
            |b, _| b.iter(|| cdp.evaluate(&params).unwrap().total.backward()),
        );
        let mut dtc = ThresholdContainer::new(DtcConfig::new().with_threshold(0.01)).unwrap();
        group.bench_with_input(BenchmarkId::new("dtc_step", n), &n, |b, _| {
            b.iter(|| {
                for (i, l) in layers[..n].iter().enumerate() {
                    dtc.update(i, l.skeleton.clone());
                }
                dtc.masks(n - 1).unwrap().stripes.clone().into_data()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
