//! Checks texprune against reference files computed by the authors' PyTorch code.
//!
//! ```text
//! cargo run --release --example conformance -- tests/data/reference/*.json
//! ```
//!
//! Prints one line per failed check and ends with `N passed, M failed`; exits non-zero when a
//! check fails or a file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use texprune::burn::tensor::Device;
use texprune_tools::conformance::{TOLERANCE, check_file};

fn main() -> ExitCode {
    let files: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if files.is_empty() {
        eprintln!("usage: conformance FILE.json...");
        return ExitCode::from(2);
    }
    let device = Device::default();
    let (mut passed, mut failed, mut unreadable) = (0, 0, 0);
    for file in &files {
        match check_file(file, &device) {
            Ok(report) => {
                for line in &report.failures {
                    println!("FAIL {}: {line}", file.display());
                }
                for line in &report.notes {
                    println!("NOTE {line}");
                }
                passed += report.passed;
                failed += report.failures.len();
            }
            Err(e) => {
                eprintln!("error: {}", texprune_tools::cli::one_line(&e));
                unreadable += 1;
            }
        }
    }
    eprintln!("tolerance: |texprune - reference| <= {TOLERANCE:e} * (1 + |reference|)");
    println!("{passed} passed, {failed} failed");
    if failed == 0 && unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
