//! A network written here, not taken from the zoo, pruned to a FLOPs target in a plain training
//! loop and compacted into its own type; prints the FLOPs removed, the agreement of the masked
//! and compact logits, and their latency at batch 64; writes the compact model as ONNX
//! (`target/own_model.onnx`).
//!
//! ```sh
//! cargo run --release --example own_model            # 50 % FLOPs, 300 steps
//! cargo run --release --example own_model -- 0.7 600 # 70 % FLOPs, 600 steps
//! ```
//!
//! Data: the repository's Fashion-MNIST test split (`data/fashion-mnist`), 10,000 images.

use std::path::Path;
use std::time::Instant;

use texprune::burn::data::dataset::Dataset;
use texprune::burn::module::Module;
use texprune::burn::nn::loss::CrossEntropyLossConfig;
use texprune::burn::optim::SgdConfig;
use texprune::burn::optim::momentum::MomentumConfig;
use texprune::burn::tensor::Device;
use texprune::data::{ImageBatcher, Normalization, Split, SplitMix64, mnist};
use texprune::{CostReport, Pruner, PrunerConfig, Schedule, Target};

mod net;

use net::Net;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let remove: f64 = args.next().map_or(Ok(0.5), |a| a.parse())?;
    let steps: u64 = args.next().map_or(Ok(300), |a| a.parse())?;
    let device = Device::default().autodiff();
    device.seed(1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    let set = mnist(&dir, Split::Test)?;
    let batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
    let mut model = Net::new(32, &device)?;
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let schedule = Schedule::fractions(steps, 0.1, 0.5);
    let target = Target::flops(remove, [28, 28]);
    let mut pruner = Pruner::new(PrunerConfig::targeted(target, schedule))?;
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let started = Instant::now();
    for step in 0..steps as usize {
        let items = (0..64)
            .map(|i| set.get((step * 64 + i) % set.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let b = batcher.images(&items, &mut SplitMix64(step as u64), &device);
        let loss = loss_fn.forward(model.forward(b.images), b.labels);
        let fit = pruner.fit(&model, loss)?;
        if step % 50 == 0 {
            println!("{}", fit.summary);
        }
        model = pruner.apply_masks(optim.step(0.05, model, fit.grads));
    }
    println!(
        "trained {steps} steps in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let items = (0..64).map(|i| set.get(i)).collect::<Result<Vec<_>, _>>()?;
    let x = batcher
        .images(&items, &mut SplitMix64(0), &Device::default())
        .images;
    let masked = pruner.apply_masks(model.valid());
    // Checked on the batch: a declaration that does not match `forward` gives an error.
    let compact: Net = pruner.compact(&model, x.clone(), Net::forward)?;
    let (a, b) = (masked.forward(x.clone()), compact.forward(x.clone()));
    let diff: f32 = (a.clone() - b.clone()).abs().max().into_scalar();
    let scale: f32 = a.clone().abs().max().into_scalar();
    let same = a.argmax(1).equal(b.argmax(1)).all().into_scalar::<bool>();
    // The unpruned model's cost, once a forward pass has given its input sizes.
    let fresh = Net::new(32, &Device::default())?;
    let _ = fresh.forward(x.clone());
    let (dense, small) = (
        CostReport::of_model(&fresh)?,
        CostReport::of_model(&compact)?,
    );
    let masked_ms = median_ms(20, || {
        let _ = masked.forward(x.clone()).into_data();
    });
    let compact_ms = median_ms(20, || {
        let _ = compact.forward(x.clone()).into_data();
    });
    println!("\n{small}\n");
    println!(
        "FLOPs {} → {} ({:.1} % removed, target {:.0} %)",
        dense.flops(),
        small.flops(),
        100.0 * (1.0 - small.flops() as f64 / dense.flops() as f64),
        100.0 * remove
    );
    println!(
        "logits: max |compact − masked| / max |masked| = {:.1e}, same argmax: {same}",
        diff / scale
    );
    println!(
        "batch 64 on the CPU: masked {masked_ms:.1} ms, compact {compact_ms:.1} ms ({:.2}× faster)",
        masked_ms / compact_ms
    );
    // The compact model as ONNX (cargo feature `onnx`) for ONNX Runtime, tract, TensorRT…
    let file = Path::new("target/own_model.onnx");
    texprune::onnx::export(&compact, x, Net::forward)?.save(file)?;
    println!("wrote {}", file.display());
    Ok(())
}

/// The median of `runs` timed calls of `f` in milliseconds, after one warm-up call.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
