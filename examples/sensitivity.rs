//! Per-layer sensitivity of the quickstart's trained model, and whether its filter texture
//! distribution predicts it.
//!
//! ```text
//! cargo run --release --example quickstart     # trains and saves target/quickstart/model.bpk
//! cargo run --release --example sensitivity
//! ```
//!
//! Each thresholded layer alone is pruned with the DTC mask at a sweep of base thresholds and
//! the held-out accuracy is measured (layers in parallel). Prints the per-layer table and the
//! Spearman correlation of the texture statistics with the sensitivity; writes
//! `sensitivity.json`, `sensitivity.md` and `sensitivity.svg` into `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::ProgressBar;
use texprune::burn::module::Module;
use texprune::burn::tensor::Device;
use texprune::checkpoint::write_atomic;
use texprune::data::{ImageBatcher, Normalization, Split, mnist};
use texprune::sensitivity::{Sweep, analyze};
use texprune::zoo::vgg::VggConfig;

/// Sensitivity analysis of the quickstart's model.
#[derive(Parser, Debug)]
struct Args {
    /// The trained model (the quickstart's `model.bpk`).
    #[arg(long, default_value = "target/quickstart/model.bpk")]
    model: PathBuf,
    /// Fashion-MNIST folder (IDX files).
    #[arg(long, default_value = "data/fashion-mnist")]
    data: PathBuf,
    /// Seed of the quickstart's split (its held-out part is evaluated).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Base thresholds of the sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.03,0.05,0.1,0.2,0.3,0.5"
    )]
    thresholds: Vec<f64>,
    /// Accuracy drop tolerated (fraction).
    #[arg(long, default_value_t = 0.01)]
    tolerance: f64,
    /// Output folder.
    #[arg(long, default_value = "target/sensitivity")]
    out: PathBuf,
}

fn main() -> ExitCode {
    texprune_tools::cli::exit(run_main(Args::parse()))
}

fn run_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default();
    let (_, held_out) = mnist(&args.data, Split::Test)?.split(0.2, args.seed);
    let model = VggConfig::small()
        .init(&device)?
        .try_load_file(&args.model)
        .map_err(|e| {
            format!(
                "{}: {e} (run `cargo run --release --example quickstart` first)",
                args.model.display()
            )
        })?;
    let batcher = ImageBatcher::new(Normalization::fashion_mnist(), None, 0);
    let bar = ProgressBar::new(3).with_message("layers analysed");
    let report = analyze(
        &model,
        &held_out,
        &batcher,
        &device,
        &Sweep::new(args.thresholds.clone(), args.tolerance),
        |_| bar.inc(1),
    )?;
    bar.finish();
    println!("{report}");
    std::fs::create_dir_all(&args.out)?;
    write_atomic(
        &args.out.join("sensitivity.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    report.plot(&args.out.join("sensitivity.svg"))?;
    let page = format!(
        "# Sensitivity of {}\n\n{report}\n![sensitivity curves](sensitivity.svg)\n",
        args.model.display()
    );
    write_atomic(&args.out.join("sensitivity.md"), page.as_bytes())?;
    println!(
        "wrote sensitivity.json, sensitivity.md and sensitivity.svg into {}",
        args.out.display()
    );
    Ok(())
}
