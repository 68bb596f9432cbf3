//! The stripe-wise convolution as a CPU kernel on host memory (f32, NCHW), for the CPU
//! backends, where backend tensor ops spend more on window copies and indexed accumulation than
//! on the products themselves. Same arithmetic as the tensor path: per kernel position
//! `(i, j)`, `Y_ij = W_ij · x_ij`, added into the owning output channels.
//!
//! - stride 1: one GEMM `Z = W_all [S, Cin] · x [Cin, H·W]` over every live stripe at once (the
//!   shift commutes with a 1×1 product), then each row of `Z` is added, shifted by `(i − ph,
//!   j − pw)`, into its output channel: `S · Cin · H·W` MACs and no window copy;
//! - stride > 1: per position, the strided window `x_ij [Cin, Ho·Wo]` (only output positions),
//!   one GEMM `W_ij · x_ij`, and the rows added into their channels.
//!
//! Images are processed in parallel (rayon); each GEMM is ndarray's (matrixmultiply).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::StripeConvPlan;

/// Input geometry of one call.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    /// Input channels, height, width.
    pub input: [usize; 3],
    /// Output height and width.
    pub output: [usize; 2],
}

/// `out [N, Cout, Ho, Wo]` from `x [N, Cin, H, W]` and the stacked live-stripe weights
/// `w_all [S, Cin]` (rows in plan order: position by position, filters ascending).
pub(crate) fn stripe_conv(
    plan: &StripeConvPlan,
    x: &[f32],
    w_all: &[f32],
    geometry: Geometry,
) -> Vec<f32> {
    let [cin, h, w] = geometry.input;
    let [ho, wo] = geometry.output;
    let cout = plan.out_channels;
    let (in_size, out_size) = (cin * h * w, cout * ho * wo);
    let batch = x.len() / in_size.max(1);
    let mut out = vec![0.0f32; batch * out_size];
    if plan.positions.is_empty() || cin == 0 {
        return out;
    }
    out.par_chunks_mut(out_size)
        .zip(x.par_chunks(in_size))
        .for_each(|(out, x)| {
            if plan.stride == [1, 1] {
                stride_one(plan, x, w_all, geometry, out);
            } else {
                strided(plan, x, w_all, geometry, out);
            }
        });
    out
}

/// Adds row `src` (an `[Hs, Ws]` map) into `dst` (`[Ho, Wo]`) at offset `(di, dj)`:
/// `dst[y, x] += src[y + di, x + dj]` wherever the source index is inside the map.
fn add_shifted(
    dst: &mut [f32],
    [ho, wo]: [usize; 2],
    src: &[f32],
    [hs, ws]: [usize; 2],
    [di, dj]: [isize; 2],
) {
    let x_lo = (-dj).max(0) as usize;
    let x_hi = (ws as isize - dj).clamp(0, wo as isize) as usize;
    if x_lo >= x_hi {
        return;
    }
    for y in 0..ho {
        let sy = y as isize + di;
        if sy < 0 || sy >= hs as isize {
            continue;
        }
        let s0 = sy as usize * ws;
        let src_row = &src[(s0 as isize + x_lo as isize + dj) as usize..][..x_hi - x_lo];
        let dst_row = &mut dst[y * wo + x_lo..y * wo + x_hi];
        for (d, s) in dst_row.iter_mut().zip(src_row) {
            *d += *s;
        }
    }
}

fn stride_one(plan: &StripeConvPlan, x: &[f32], w_all: &[f32], g: Geometry, out: &mut [f32]) {
    let [cin, h, w] = g.input;
    let [ho, wo] = g.output;
    let stripes = plan.live_stripes();
    let mut z = vec![0.0f32; stripes * h * w];
    let a = ArrayView2::from_shape((stripes, cin), w_all).expect("weights match the plan");
    let b = ArrayView2::from_shape((cin, h * w), x).expect("input matches the geometry");
    let mut c = ArrayViewMut2::from_shape((stripes, h * w), &mut z).expect("sized above");
    general_mat_mul(1.0, &a, &b, 0.0, &mut c);
    let [ph, pw] = plan.padding.map(|p| p as isize);
    let mut row = 0;
    for position in &plan.positions {
        let [i, j] = position.offset.map(|o| o as isize);
        for &f in &position.filters {
            add_shifted(
                &mut out[f * ho * wo..(f + 1) * ho * wo],
                [ho, wo],
                &z[row * h * w..(row + 1) * h * w],
                [h, w],
                [i - ph, j - pw],
            );
            row += 1;
        }
    }
}

fn strided(plan: &StripeConvPlan, x: &[f32], w_all: &[f32], g: Geometry, out: &mut [f32]) {
    let [cin, h, w] = g.input;
    let [ho, wo] = g.output;
    let [sh, sw] = plan.stride;
    let [ph, pw] = plan.padding.map(|p| p as isize);
    let mut window = vec![0.0f32; cin * ho * wo];
    let mut row = 0;
    for position in &plan.positions {
        let [i, j] = position.offset.map(|o| o as isize);
        for c in 0..cin {
            for y in 0..ho {
                let iy = (y * sh) as isize + i - ph;
                let dst = &mut window[(c * ho + y) * wo..(c * ho + y + 1) * wo];
                if iy < 0 || iy >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &x[(c * h + iy as usize) * w..(c * h + iy as usize + 1) * w];
                for (xo, d) in dst.iter_mut().enumerate() {
                    let ix = (xo * sw) as isize + j - pw;
                    *d = if ix < 0 || ix >= w as isize {
                        0.0
                    } else {
                        src[ix as usize]
                    };
                }
            }
        }
        let n = position.filters.len();
        let mut y = vec![0.0f32; n * ho * wo];
        let a = ArrayView2::from_shape((n, cin), &w_all[row * cin..(row + n) * cin])
            .expect("weights match the plan");
        let b = ArrayView2::from_shape((cin, ho * wo), &window).expect("sized above");
        let mut c = ArrayViewMut2::from_shape((n, ho * wo), &mut y).expect("sized above");
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        for (r, &f) in position.filters.iter().enumerate() {
            let dst = &mut out[f * ho * wo..(f + 1) * ho * wo];
            for (d, s) in dst.iter_mut().zip(&y[r * ho * wo..(r + 1) * ho * wo]) {
                *d += *s;
            }
        }
        row += n;
    }
}
