//! The MobileNet-style network of the tests (`tests/common/mobilenet.rs`: an inverted residual
//! with a depthwise conv, a 4-group strided conv, a dilated conv, a concatenation read by a 1×1
//! conv), masked as the tests mask it (half the stripes and 30 % of the filters dead, a fifth of
//! the dead filters left a constant channel) and compacted: the masked model against its compact
//! form at batch 1 and 64, median of 10 after a warm-up, beside the whole-network MAC ratio.
//!
//! ```text
//! cargo bench --bench modern_compact
//! ```

use texprune::burn::tensor::{Device, Tensor};
use texprune::data::SplitMix64;
use texprune::{CostReport, compact};
use texprune_tools::perf::median_ms;

#[path = "../tests/common/mod.rs"]
mod common;

use common::mobilenet::MobileNet;

// As in the `perf` example (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let device = Device::default();
    println!(
        "| seed | channels kept (expand/depthwise, fuse input) | MAC ratio | batch | masked ms | compact ms | speedup | speedup / MAC ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for seed in [40, 41] {
        let mut rng = SplitMix64(seed);
        let mut model = MobileNet::new(&device);
        for (conv, norm) in [
            (&mut model.stem, &mut model.stem_bn),
            (&mut model.expand, &mut model.expand_bn),
            (&mut model.depthwise, &mut model.depthwise_bn),
            (&mut model.project, &mut model.project_bn),
            (&mut model.grouped, &mut model.grouped_bn),
            (&mut model.dilated, &mut model.dilated_bn),
            (&mut model.side, &mut model.side_bn),
            (&mut model.fuse, &mut model.fuse_bn),
        ] {
            let dead = common::randomize_conv(conv, &mut rng, false);
            common::randomize_norm(norm, &dead, &mut rng);
        }
        let one = common::images(1, &mut rng, &device);
        let compacted = compact(&model, one.clone(), MobileNet::forward).unwrap();
        let _ = compacted.forward(one.clone());
        let dense = common::cost_after_a_forward(MobileNet::new(&device), MobileNet::forward);
        if std::env::var("LAYERS").is_ok() {
            let c = CostReport::of_model(&compacted).unwrap();
            for (a, b) in dense.layers.iter().zip(&c.layers) {
                eprintln!("{} {} {} | {} {}", a.name, a.macs, a.shape, b.macs, b.shape);
            }
        }
        let ratio = dense.macs() as f64 / CostReport::of_model(&compacted).unwrap().macs() as f64;
        let kept = format!(
            "{}/{}, {}",
            compacted.expand.weight_dims()[0],
            compacted.depthwise.weight_dims()[0],
            compacted.fuse.in_channels()
        );
        for batch in [1, 64] {
            let x: Tensor<4> = common::images(batch, &mut rng, &device);
            let masked = median_ms(10, || {
                model.forward(x.clone()).into_data();
            });
            let small = median_ms(10, || {
                compacted.forward(x.clone()).into_data();
            });
            let speedup = masked / small;
            println!(
                "| {seed} | {kept} (of 32/32, 48) | {ratio:.2}× | {batch} | {masked:.2} | {small:.2} | {speedup:.2}× | {:.2} |",
                speedup / ratio
            );
        }
    }
}
