//! A ResNet-56 training step (batch 64, 3×32×32: forward, cross-entropy, backward, SGD with
//! momentum) without and with the pruner (every CDP term on, DTC every step), on the default
//! backend.
//!
//! ```text
//! cargo bench --bench train_step
//! ```

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use texprune::burn::tensor::Device;
use texprune::zoo::resnet::{ResNet, ResNetConfig};
use texprune::{CdpConfig, DtcConfig, Pruner, PrunerConfig};
use texprune_tools::perf::synthetic_batch;

fn sgd() -> ModuleOptimizer {
    let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
    SgdConfig::new().with_momentum(Some(momentum)).init()
}

fn bench(c: &mut Criterion) {
    let device = Device::default().autodiff();
    device.seed(56);
    let (x, y) = synthetic_batch(64, [3, 32, 32], 10, 64, &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut group = c.benchmark_group("resnet56_train_step_batch64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));

    let mut model: Option<ResNet> = Some(ResNetConfig::cifar(56).init(&device).unwrap());
    let mut optim = sgd();
    group.bench_function("plain", |b| {
        b.iter(|| {
            let m = model.take().unwrap();
            let loss = loss_fn.forward(m.forward(x.clone()), y.clone());
            let _: f64 = loss.clone().into_scalar();
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            model = Some(optim.step(0.01, m, grads));
        })
    });

    let mut model: Option<ResNet> = Some(ResNetConfig::cifar(56).init(&device).unwrap());
    let mut optim = sgd();
    let every_term = CdpConfig::every_term(1e-4);
    let config = PrunerConfig::new(every_term, DtcConfig::new().with_threshold(0.01));
    let mut pruner = Pruner::new(config).unwrap();
    group.bench_function("pruner", |b| {
        b.iter(|| {
            let m = model.take().unwrap();
            let loss = loss_fn.forward(m.forward(x.clone()), y.clone());
            let fit = pruner.fit(&m, loss).unwrap();
            model = Some(pruner.apply_masks(optim.step(0.01, m, fit.grads)));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
