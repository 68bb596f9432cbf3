//! The stripe-wise convolution as a CPU kernel on host memory (f32, NCHW), for the CPU
//! backends, where backend tensor ops spend more on window copies and indexed accumulation than
//! on the products themselves. Same arithmetic as the tensor path: per kernel position
//! `(i, j)`, `Y_ij = W_ij · x_ij`, added into the owning output channels.
//!
//! - stride 1: one GEMM `Z = W_all [S, Cin] · x [Cin, n·H·W]` over every live stripe at once
//!   (the shift commutes with a 1×1 product) and over a group of `n` images side by side, then
//!   each row of `Z` is added, shifted by `(i − ph, j − pw)`, into its output channel:
//!   `S · Cin · H·W` MACs per image and no window copy. Grouping images packs the weights once
//!   per group instead of once per image, which dominates on small maps (VGG's 2×2 and 4×4);
//! - stride > 1: per position, the strided window `x_ij [Cin, Ho·Wo]` (only output positions),
//!   one GEMM `W_ij · x_ij`, and the rows added into their channels.
//!
//! Images are processed in parallel (rayon); each GEMM is `gemm`'s ([`crate::gemm`]). The
//! product and window buffers are per-thread scratch space reused across calls: allocating them
//! afresh cost page faults and zeroing on every image.

use rayon::prelude::*;

use crate::gemm::matmul;
use crate::geometry::Geometry;
use crate::layout::StripeLayout;
use crate::scratch::Scratch;

/// The per-channel pass over a conv's output while it is still in cache, in place:
/// `y_c ← act(scale_c · y_c + shift_c + r_c)`. It carries the conv's bias and, fused, its
/// BatchNorm in inference form (`scale = γ / √(σ² + ε)`, `shift = γ (b − μ) / √(σ² + ε) + β`), a
/// residual `r` and a ReLU: what would otherwise be one or more element-wise passes over the
/// whole output each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Epilogue {
    /// `(scale, shift)` per output channel; `None`: the identity.
    pub affine: Option<(Vec<f32>, Vec<f32>)>,
    /// ReLU after the affine map and the residual.
    pub relu: bool,
}

impl Epilogue {
    /// Applies it to `out [n, Cout, plane]`, adding `residual` (same shape) before the ReLU: one
    /// pass over each plane.
    #[inline(always)]
    fn apply(&self, out: &mut [f32], residual: Option<&[f32]>, [cout, plane]: [usize; 2]) {
        if self.affine.is_none() && residual.is_none() && !self.relu {
            return;
        }
        let relu = self.relu;
        for (k, y) in out.chunks_exact_mut(plane).enumerate() {
            let c = k % cout;
            let affine = self
                .affine
                .as_ref()
                .map(|(scale, shift)| (scale[c], shift[c]));
            // `affine` and `relu` are the same for the whole plane: the compiler hoists them.
            let map = |v: f32| match affine {
                Some((a, b)) => v * a + b,
                None => v,
            };
            let act = |v: f32| if relu { v.max(0.0) } else { v };
            match residual {
                Some(r) => {
                    let r = &r[k * plane..][..plane];
                    y.iter_mut()
                        .zip(r)
                        .for_each(|(v, r)| *v = act(map(*v) + *r));
                }
                None => y.iter_mut().for_each(|v| *v = act(map(*v))),
            }
        }
    }
}

/// `out [N, Cout, Ho, Wo]` from `x [N, Cin, H, W]` and the stacked live-stripe weights
/// `w_all [S, Cin]` (rows in plan order: position by position, filters ascending), with
/// `epilogue` (and `residual [N, Cout, Ho, Wo]`) applied to each group of images as it is done.
/// `geometry` is `plan.geometry(x's shape, stride, padding)`.
///
/// # Panics
/// If `x`, `w_all` or `residual` is shorter than `geometry` and `plan` say.
#[must_use]
pub fn stripe_conv(
    plan: &StripeLayout,
    x: &[f32],
    w_all: &[f32],
    geometry: Geometry,
    epilogue: &Epilogue,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let [batch, cin, h, w] = geometry.input;
    let [ho, wo] = geometry.output;
    let cout = plan.out_channels;
    let (in_size, out_size) = (cin * h * w, cout * ho * wo);
    let mut out = vec![0.0f32; batch * out_size];
    if out.is_empty() {
        return out;
    }
    let shape = [cout, ho * wo];
    // Chunk `k` of `chunk` floats (the last may be shorter) of the residual.
    let residual_of = |k: usize, chunk: usize, len: usize| residual.map(|r| &r[k * chunk..][..len]);
    if plan.positions.is_empty() || cin == 0 {
        out.par_chunks_mut(out_size)
            .enumerate()
            .for_each(|(k, out)| {
                let r = residual_of(k, out_size, out.len());
                epilogue.apply(out, r, shape);
            });
        return out;
    }
    let group = if geometry.stride == [1, 1] {
        images_per_gemm(plan.live_stripes().max(cin), h * w, batch)
    } else {
        1
    };
    out.par_chunks_mut(out_size * group)
        .zip(x.par_chunks(in_size * group))
        .enumerate()
        .for_each(|(k, (out, x))| {
            let r = residual_of(k, out_size * group, out.len());
            let images = Images {
                plan,
                x,
                w_all,
                geometry,
                epilogue,
                residual: r,
            };
            images.convolve(out);
        });
    out
}

/// One group of images: the input, the weights and what follows the product.
struct Images<'a> {
    plan: &'a StripeLayout,
    x: &'a [f32],
    w_all: &'a [f32],
    geometry: Geometry,
    epilogue: &'a Epilogue,
    residual: Option<&'a [f32]>,
}

impl Images<'_> {
    /// Writes the group's output into `out` (zeroed), with the widest vector instructions the
    /// CPU has: the crate is compiled for the baseline x86-64 (SSE2), so the shifted adds and
    /// the output pass, which are most of the time beside the GEMM (which picks its own kernels),
    /// are compiled again for AVX-512 and for AVX2 and chosen at run time. Same operations in
    /// the same order on every path (no fused multiply-add): the results are bit for bit equal.
    fn convolve(&self, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                return unsafe { self.convolve_avx512(out) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { self.convolve_avx2(out) };
            }
        }
        self.convolve_portable(out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn convolve_avx512(&self, out: &mut [f32]) {
        self.convolve_portable(out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn convolve_avx2(&self, out: &mut [f32]) {
        self.convolve_portable(out);
    }

    /// Inlined, with everything it calls, into each of the paths above.
    #[inline(always)]
    fn convolve_portable(&self, out: &mut [f32]) {
        let Self {
            plan,
            x,
            w_all,
            geometry,
            epilogue,
            residual,
        } = *self;
        if geometry.stride == [1, 1] {
            stride_one(plan, x, w_all, geometry, out);
        } else {
            strided(plan, x, w_all, geometry, out);
        }
        let shape = [plan.out_channels, geometry.output[0] * geometry.output[1]];
        epilogue.apply(out, residual, shape);
    }
}

/// Columns a stride-1 GEMM aims for: enough that packing the weights (`S · Cin`) costs little
/// against the product (`S · Cin · columns`), few enough that the product stays in cache.
const TARGET_COLUMNS: usize = 256;

/// Largest product of a grouped GEMM, in floats (4 MiB).
const GROUP_FLOATS: usize = 1 << 20;

/// Images per stride-1 GEMM: enough for [`TARGET_COLUMNS`] columns, no more than each thread's
/// share of the batch or than fits [`GROUP_FLOATS`]; at least 1.
fn images_per_gemm(rows: usize, map: usize, batch: usize) -> usize {
    let per_thread = batch.div_ceil(rayon::current_num_threads().max(1));
    TARGET_COLUMNS
        .div_ceil(map.max(1))
        .min(per_thread)
        .min(GROUP_FLOATS / (rows * map).max(1))
        .max(1)
}

/// Adds row `src` (an `[Hs, Ws]` map) into `dst` (`[Ho, Wo]`) at offset `(di, dj)`:
/// `dst[y, x] += src[y + di, x + dj]` wherever the source index is inside the map.
#[inline(always)]
fn add_shifted(
    dst: &mut [f32],
    [ho, wo]: [usize; 2],
    src: &[f32],
    [hs, ws]: [usize; 2],
    [di, dj]: [isize; 2],
) {
    let x_lo = (-dj).max(0) as usize;
    let x_hi = (ws as isize - dj).clamp(0, wo as isize) as usize;
    let y_lo = (-di).max(0) as usize;
    let y_hi = (hs as isize - di).clamp(0, ho as isize) as usize;
    if x_lo >= x_hi || y_lo >= y_hi {
        return;
    }
    if wo == ws
        && add_shifted_flat(
            dst,
            wo,
            src,
            [y_lo, y_hi],
            [x_lo, x_hi],
            di * ws as isize + dj,
        )
    {
        return;
    }
    for y in y_lo..y_hi {
        let s0 = (y as isize + di) as usize * ws;
        let src_row = &src[(s0 as isize + x_lo as isize + dj) as usize..][..x_hi - x_lo];
        let dst_row = &mut dst[y * wo + x_lo..y * wo + x_hi];
        for (d, s) in dst_row.iter_mut().zip(src_row) {
            *d += *s;
        }
    }
}

/// Longest run of skipped entries [`add_shifted_flat`] sets aside, in floats.
const FLAT_GAPS: usize = 256;

/// [`add_shifted`] when source and destination rows have the same width `w`: the shift is the
/// flat offset `offset = di·w + dj`, so rows `y_lo..y_hi`, columns `x_lo..x_hi` are one
/// contiguous add `dst[q] += src[q + offset]` (vectorised, no per-row overhead), except the
/// `|dj|` entries between consecutive rows' column ranges, which take a wrapped source value.
/// Those are set aside before the add and put back after it, so the result is exactly the
/// row-by-row sum. Returns `false` (nothing done) when they are more than [`FLAT_GAPS`].
#[inline(always)]
fn add_shifted_flat(
    dst: &mut [f32],
    w: usize,
    src: &[f32],
    [y_lo, y_hi]: [usize; 2],
    [x_lo, x_hi]: [usize; 2],
    offset: isize,
) -> bool {
    let gap = w - (x_hi - x_lo);
    let rows = y_hi - y_lo;
    if gap * (rows - 1) > FLAT_GAPS {
        return false;
    }
    let (start, end) = (y_lo * w + x_lo, (y_hi - 1) * w + x_hi);
    // Element loops over the gaps: a `memcpy` call per gap costs more than the copy.
    let mut kept = [0.0f32; FLAT_GAPS];
    let mut k = 0;
    for y in y_lo..y_hi - 1 {
        for d in &dst[y * w + x_hi..][..gap] {
            kept[k] = *d;
            k += 1;
        }
    }
    let from = (start as isize + offset) as usize;
    for (d, s) in dst[start..end]
        .iter_mut()
        .zip(&src[from..from + (end - start)])
    {
        *d += *s;
    }
    let mut k = 0;
    for y in y_lo..y_hi - 1 {
        for d in &mut dst[y * w + x_hi..][..gap] {
            *d = kept[k];
            k += 1;
        }
    }
    true
}

/// Stride 1 for the `n` images of `x [n, Cin, H·W]` and `out [n, Cout, Ho·Wo]`.
#[inline(always)]
fn stride_one(plan: &StripeLayout, x: &[f32], w_all: &[f32], g: Geometry, out: &mut [f32]) {
    let [_, cin, h, w] = g.input;
    let map = h * w;
    let n = x.len() / (cin * map);
    let stripes = plan.live_stripes();
    let columns = n * map;
    // One image is already `[Cin, H·W]`; a group is gathered into `[Cin, n·H·W]`.
    let gathered = if n > 1 { cin * columns } else { 0 };
    let len = gathered + stripes * columns;
    let mut scratch = Scratch::take(len);
    let (b, z) = scratch.0[..len].split_at_mut(gathered);
    if n > 1 {
        for (image, x) in x.chunks_exact(cin * map).enumerate() {
            for (c, channel) in x.chunks_exact(map).enumerate() {
                b[c * columns + image * map..][..map].copy_from_slice(channel);
            }
        }
    }
    let b = if n > 1 { &*b } else { x };
    // The product overwrites the scratch contents.
    matmul(w_all, &b[..cin * columns], z, [stripes, cin, columns]);
    let out_size = plan.out_channels * g.output[0] * g.output[1];
    for (image, out) in out.chunks_exact_mut(out_size).enumerate() {
        add_rows(plan, z, image, columns, g, out);
    }
}

/// Adds each row of image `image`'s part of the stride-1 product `z [S, columns]`, shifted,
/// into its output channel of `out [Cout, Ho·Wo]`.
#[inline(always)]
fn add_rows(
    plan: &StripeLayout,
    z: &[f32],
    image: usize,
    columns: usize,
    g: Geometry,
    out: &mut [f32],
) {
    let [_, _, h, w] = g.input;
    let [ho, wo] = g.output;
    let [ph, pw] = g.padding.map(|p| p as isize);
    let [dh, dw] = g.dilation.map(|d| d as isize);
    let mut row = 0;
    for position in &plan.positions {
        let [i, j] = position.offset.map(|o| o as isize);
        let [i, j] = [i * dh, j * dw];
        for &f in &position.filters {
            add_shifted(
                &mut out[f * ho * wo..(f + 1) * ho * wo],
                [ho, wo],
                &z[row * columns + image * h * w..][..h * w],
                [h, w],
                [i - ph, j - pw],
            );
            row += 1;
        }
    }
}

#[inline(always)]
fn strided(plan: &StripeLayout, x: &[f32], w_all: &[f32], g: Geometry, out: &mut [f32]) {
    let [_, cin, ..] = g.input;
    let [ho, wo] = g.output;
    let widest = plan
        .positions
        .iter()
        .map(|p| p.filters.len())
        .max()
        .unwrap_or(0);
    let mut scratch = Scratch::take((cin + widest) * ho * wo);
    let (window, y) = scratch.0.split_at_mut(cin * ho * wo);
    strided_positions(plan, x, w_all, g, out, window, y);
}

/// The stride > 1 loop over positions, with `window [Cin, Ho·Wo]` and `y [≥ n, Ho·Wo]` as
/// scratch.
#[inline(always)]
fn strided_positions(
    plan: &StripeLayout,
    x: &[f32],
    w_all: &[f32],
    g: Geometry,
    out: &mut [f32],
    window: &mut [f32],
    y: &mut [f32],
) {
    let [_, cin, h, w] = g.input;
    let [ho, wo] = g.output;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding.map(|p| p as isize);
    let [dh, dw] = g.dilation.map(|d| d as isize);
    let mut row = 0;
    for position in &plan.positions {
        let [i, j] = position.offset.map(|o| o as isize);
        let [i, j] = [i * dh, j * dw];
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
        let y = &mut y[..n * ho * wo];
        matmul(
            &w_all[row * cin..(row + n) * cin],
            window,
            &mut *y,
            [n, cin, ho * wo],
        );
        for (r, &f) in position.filters.iter().enumerate() {
            let dst = &mut out[f * ho * wo..(f + 1) * ho * wo];
            for (d, s) in dst.iter_mut().zip(&y[r * ho * wo..(r + 1) * ho * wo]) {
                *d += *s;
            }
        }
        row += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::StripePosition;

    /// `dst[y, x] += src[y + di, x + dj]` where in range, one entry at a time.
    fn add_shifted_naive(
        dst: &mut [f32],
        [ho, wo]: [usize; 2],
        src: &[f32],
        [hs, ws]: [usize; 2],
        [di, dj]: [isize; 2],
    ) {
        for y in 0..ho {
            for x in 0..wo {
                let (sy, sx) = (y as isize + di, x as isize + dj);
                if (0..hs as isize).contains(&sy) && (0..ws as isize).contains(&sx) {
                    dst[y * wo + x] += src[sy as usize * ws + sx as usize];
                }
            }
        }
    }

    /// `n` deterministic values in `[-5, 5.5)`, different for each `seed`.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1013) as f32 / 97.0 - 5.0)
            .collect()
    }

    /// Every instruction-set path of [`Images::convolve`] that this CPU has gives the portable
    /// path's output bit for bit, for stride 1 (one image and a group) and stride 2, with every
    /// part of the output pass.
    #[test]
    fn every_vector_path_equals_the_portable_one() {
        let (cin, cout) = (5, 6);
        // Every third stripe of a 3×3 kernel live.
        let positions: Vec<StripePosition> = (0..9)
            .map(|p| StripePosition {
                offset: [p / 3, p % 3],
                filters: (0..cout).filter(|f| (f + p) % 3 == 0).collect(),
            })
            .filter(|p| !p.filters.is_empty())
            .collect();
        let stripes: usize = positions.iter().map(|p| p.filters.len()).sum();
        let epilogue = Epilogue {
            affine: Some((values(cout, 3), values(cout, 4))),
            relu: true,
        };
        for (stride, [h, w], batch) in [(1, [7, 9], 1), (1, [4, 4], 3), (2, [9, 8], 2)] {
            let plan = StripeLayout {
                in_channels: cin,
                out_channels: cout,
                kernel_size: [3, 3],
                bias: false,
                positions: positions.clone(),
            };
            let geometry = plan.geometry([batch, cin, h, w], [stride, stride], [1, 1]);
            let output = geometry.output;
            assert_eq!(output, [(h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1]);
            let x = values(batch * cin * h * w, 1);
            let w_all = values(stripes * cin, 2);
            let residual = values(batch * cout * output[0] * output[1], 5);
            let images = Images {
                plan: &plan,
                x: &x,
                w_all: &w_all,
                geometry,
                epilogue: &epilogue,
                residual: Some(&residual),
            };
            let run = |path: &dyn Fn(&mut [f32])| {
                let mut out = vec![0.0f32; residual.len()];
                path(&mut out);
                out
            };
            let portable = run(&|out| images.convolve_portable(out));
            assert!(
                portable.iter().any(|v| *v > 0.0),
                "a trivial output tests nothing"
            );
            assert_eq!(
                run(&|out| images.convolve(out)),
                portable,
                "dispatched path"
            );
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    let avx2 = run(&|out| unsafe { images.convolve_avx2(out) });
                    assert_eq!(avx2, portable, "AVX2 path, stride {stride}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    let avx512 = run(&|out| unsafe { images.convolve_avx512(out) });
                    assert_eq!(avx512, portable, "AVX-512 path, stride {stride}");
                }
            }
        }
    }

    /// The flat add (same widths), its fallback (more gap entries than it sets aside) and the
    /// row-by-row add (different widths) all equal the entry-by-entry sum, bit for bit.
    #[test]
    fn shifted_add_equals_entry_by_entry() {
        for (out, map) in [
            ([32, 32], [32, 32]),
            ([5, 7], [5, 7]),
            ([1, 9], [1, 9]),
            ([300, 4], [300, 4]),
            ([4, 4], [6, 6]),
            ([8, 3], [8, 5]),
        ] {
            for di in -3..=3 {
                for dj in -3..=3 {
                    let src = values(map[0] * map[1], 1);
                    let mut fast = values(out[0] * out[1], 2);
                    let mut naive = fast.clone();
                    add_shifted(&mut fast, out, &src, map, [di, dj]);
                    add_shifted_naive(&mut naive, out, &src, map, [di, dj]);
                    assert_eq!(fast, naive, "out {out:?} map {map:?} shift ({di}, {dj})");
                }
            }
        }
    }
}
