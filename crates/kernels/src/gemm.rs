//! The kernels' matrix products, `C = A · B` on row-major `f32` slices, through the `gemm`
//! crate (the GEMM Burn's flex backend uses). Its kernels are chosen at run time for the CPU:
//! AVX-512 where the CPU has it (the crate's `x86-v4` feature, on in this crate), AVX2 + FMA
//! otherwise. One call runs on the calling thread: the host kernel already spreads images over
//! the threads.

/// `c [m, n] = a [m, k] · b [k, n]`, all row-major and contiguous; `c`'s previous contents are
/// ignored.
///
/// # Panics
/// If a slice's length is not its shape's.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], [m, k, n]: [usize; 3]) {
    assert!(
        a.len() == m * k && b.len() == k * n && c.len() == m * n,
        "matmul: slices do not match [{m}, {k}] · [{k}, {n}]"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    // SAFETY: the three slices are live, contiguous and of the lengths checked above; the
    // strides describe row-major `[m, k]`, `[k, n]` and `[m, n]` inside them (column stride 1,
    // row stride the width), so every index `gemm` forms is in bounds, and `c` is borrowed
    // mutably, so it aliases neither input. `read_dst = false`: `c` is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A row-major operand of [`matmul_strided`]: its values and its `[row, column]` strides (a
/// transposed matrix swaps them).
pub struct Operand<'a> {
    /// The matrix's values.
    pub values: &'a [f32],
    /// `[row, column]` strides in `values`.
    pub strides: [usize; 2],
}

/// `c [m, n] (+)= a [m, k] · b [k, n]` with `a` and `b` read through their strides (so either may
/// be a transposed view) and `c` row-major; `accumulate` adds to `c` instead of overwriting it.
///
/// # Panics
/// If a stride reaches outside its slice, or `c` is not `[m, n]`.
pub fn matmul_strided(
    a: Operand<'_>,
    b: Operand<'_>,
    c: &mut [f32],
    [m, k, n]: [usize; 3],
    accumulate: bool,
) {
    let last = |o: &Operand<'_>, rows: usize, cols: usize| {
        (rows.max(1) - 1) * o.strides[0] + (cols.max(1) - 1) * o.strides[1]
    };
    assert!(c.len() == m * n, "matmul_strided: c is not [{m}, {n}]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    assert!(
        last(&a, m, k) < a.values.len() && last(&b, k, n) < b.values.len(),
        "matmul_strided: strides reach outside the operands"
    );
    // SAFETY: every index `gemm` forms is `row · row_stride + col · col_stride` with row and col
    // inside the shape, at most the last index checked above for `a` and `b`, and inside the
    // row-major `[m, n]` `c` of the checked length; `c` is borrowed mutably, so it aliases
    // neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.values.as_ptr(),
            a.strides[1] as isize,
            a.strides[0] as isize,
            b.values.as_ptr(),
            b.strides[1] as isize,
            b.strides[0] as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the triple loop in f64, on the kernel's shapes (a few rows deep, long rows) and on
    /// edge shapes (empty, `k = 0`, one column).
    #[test]
    fn matmul_equals_the_triple_loop() {
        for [m, k, n] in [
            [16, 3, 1024],
            [144, 16, 256],
            [7, 64, 33],
            [1, 1, 1],
            [5, 0, 4],
            [0, 3, 4],
            [3, 5, 1],
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37) % 19) as f32 / 7.0 - 1.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53) % 23) as f32 / 11.0 - 1.0)
                .collect();
            let mut c = vec![f32::NAN; m * n];
            matmul(&a, &b, &mut c, [m, k, n]);
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                        .sum();
                    let got = f64::from(c[i * n + j]);
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                        "[{m}, {k}, {n}] at ({i}, {j}): {got} vs {exact}"
                    );
                }
            }
        }
    }
}
