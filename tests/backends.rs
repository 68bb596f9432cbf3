//! The backend-generic suite (`texprune_tools::backend_suite`, where the checks and their
//! tolerances are listed), run as tests on the CPU backend (flex, always) and on wgpu and CUDA
//! when their cargo features are on:
//!
//! ```text
//! cargo test --release --test backends                     # flex
//! cargo test --release --features wgpu --test backends     # + wgpu (needs a GPU)
//! cargo test --release --features cuda --test backends     # + CUDA (needs a GPU)
//! ```
//!
//! On a GPU machine without the repository, `perf --backend cuda --part suite` runs the same
//! checks (`scripts/gpu-check.sh`).

/// The suite's tests for one backend.
macro_rules! backend {
    ($name:ident, $device:expr, [$($check:ident),*]) => {
        mod $name {
            fn device() -> texprune::burn::tensor::Device {
                $device
            }
            $(
                #[test]
                fn $check() {
                    texprune_tools::backend_suite::$check(&device());
                }
            )*
        }
    };
}
#[cfg(feature = "flex")]
backend!(
    flex,
    // Not `Device::default()`: with a GPU feature on, the default device is the GPU's.
    texprune::burn::tensor::Device::flex(),
    [
        conformance,
        compaction_is_exact,
        penalty_gradients_match_finite_differences,
        fit_prunes_and_keeps_pruned,
        pruner_state_round_trips
    ]
);

// WGSL has no float64: the float64 conformance checks run on the CPU and CUDA only.
#[cfg(feature = "wgpu")]
backend!(
    wgpu,
    texprune_tools::cli::Backend::Wgpu
        .device()
        .expect("a wgpu device"),
    [
        compaction_is_exact,
        penalty_gradients_match_finite_differences,
        fit_prunes_and_keeps_pruned,
        pruner_state_round_trips
    ]
);

#[cfg(feature = "cuda")]
backend!(
    cuda,
    texprune_tools::cli::Backend::Cuda
        .device()
        .expect("a CUDA device"),
    [
        conformance,
        compaction_is_exact,
        penalty_gradients_match_finite_differences,
        fit_prunes_and_keeps_pruned,
        pruner_state_round_trips
    ]
);
