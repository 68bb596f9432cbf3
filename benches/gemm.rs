//! The compact kernel's matrix product `Z [S, Cin] · X [Cin, columns]` on one thread, on the
//! shapes compact ResNet-56 and VGG-16 run at 75 % and 0 % of the stripes removed (batch 64,
//! 3×32×32): `matrixmultiply` (what ndarray's product calls) against the kernels' own
//! `texprune_kernels::gemm::matmul` (the `gemm` crate, which flex calls too; with its `x86-v4`
//! feature it runs AVX-512 kernels where the CPU has them).
//! Criterion's throughput is in floating-point operations (`2 · S · Cin · columns`), so
//! "elem/s" reads as FLOP/s.
//!
//! ```text
//! cargo bench --bench gemm
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use texprune_kernels::gemm::matmul;

/// `[S, Cin, columns]`: stripe rows, input channels, columns of one GEMM.
const SHAPES: [[usize; 3]; 7] = [
    [36, 16, 1024],   // ResNet-56 stage 1, 75 % removed (one 32×32 image)
    [144, 16, 1024],  // stage 1, dense
    [72, 32, 256],    // stage 2, 75 % removed (one 16×16 image)
    [288, 32, 256],   // stage 2, dense
    [144, 64, 256],   // stage 3, 75 % removed (four 8×8 images)
    [576, 64, 256],   // stage 3, dense
    [1152, 512, 256], // VGG-16's 512-channel convs, 75 % removed (64 2×2 images)
];

fn matrixmultiply_product(a: &[f32], b: &[f32], c: &mut [f32], [m, k, n]: [usize; 3]) {
    // SAFETY: row-major `[m, k]`, `[k, n]`, `[m, n]` in slices of exactly those lengths.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("stripe_gemm");
    for shape @ [m, k, n] in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let mut out = vec![0.0f32; m * n];
        let mut check = vec![0.0f32; m * n];
        matrixmultiply_product(&a, &b, &mut out, shape);
        matmul(&a, &b, &mut check, shape);
        let worst = out
            .iter()
            .zip(&check)
            .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{shape:?}: the two products differ by {worst}"
        );
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let id = format!("{m}x{k}x{n}");
        group.bench_with_input(
            BenchmarkId::new("matrixmultiply", &id),
            &shape,
            |bench, &s| bench.iter(|| matrixmultiply_product(&a, &b, &mut out, s)),
        );
        group.bench_with_input(BenchmarkId::new("gemm", &id), &shape, |bench, &s| {
            bench.iter(|| matmul(&a, &b, &mut out, s))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
