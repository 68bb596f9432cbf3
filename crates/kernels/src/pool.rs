//! Pooling on host buffers.

use rayon::prelude::*;

/// 2×2 max pool with stride 2 (the output floors odd sizes) of `x [planes, H, W]`, planes in
/// parallel: `y[p, i, j] = max(x[p, 2i..2i+2, 2j..2j+2])`.
///
/// # Panics
/// If `x` is shorter than `planes · H · W`.
#[must_use]
pub fn max_pool_2x2(x: &[f32], [planes, h, w]: [usize; 3]) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut out = vec![0.0f32; planes * ho * wo];
    if ho == 0 || wo == 0 {
        return out;
    }
    out.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(out, x)| {
            for (i, row) in out.chunks_exact_mut(wo).enumerate() {
                let (top, bottom) = (&x[2 * i * w..][..w], &x[(2 * i + 1) * w..][..w]);
                for (j, y) in row.iter_mut().enumerate() {
                    *y = top[2 * j]
                        .max(top[2 * j + 1])
                        .max(bottom[2 * j])
                        .max(bottom[2 * j + 1]);
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_output_is_the_max_of_its_window_and_odd_edges_are_dropped() {
        // Two planes of 3×5: outputs 1×2 each; the last row and column are outside every window.
        let x: Vec<f32> = (0..30).map(|i| ((i * 7) % 11) as f32).collect();
        let y = max_pool_2x2(&x, [2, 3, 5]);
        let naive: Vec<f32> = (0..2)
            .flat_map(|p| {
                let x = &x;
                (0..2).map(move |j| {
                    let at = |r: usize, c: usize| x[p * 15 + r * 5 + c];
                    at(0, 2 * j)
                        .max(at(0, 2 * j + 1))
                        .max(at(1, 2 * j))
                        .max(at(1, 2 * j + 1))
                })
            })
            .collect();
        assert_eq!(y, naive);
    }
}
