//! 3×3 stride-1 convolutions with padding 1 by Winograd's minimal filtering, F(2×2, 3×3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): each
//! 2×2 block of outputs is `Aᵀ[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]A` for its 4×4 input patch `d`, so the
//! sum over input channels becomes sixteen matrix products `[Cout, Cin]·[Cin, tiles]` —
//! 16 multiplications per channel pair and block where the direct sum takes 36, 2.25×
//! fewer. The transforms are additions (and halves, in `G`), so the results differ from
//! the direct sum only by rounding.
//!
//! The work goes in bands of tile rows: a band's transformed input, its sixteen products
//! and its outputs stay in cache, and the bands run on separate threads (or, when there
//! are too few of them, each product is threaded instead).

use candle_core::{bail, Result};

use std::cell::RefCell;

use super::gemm::{gemm_packed, Kernel, MatMut, MatRef, PackedLhs};
use super::shape::ConvShape;

/// Tiles per band, about: enough columns for the products to run at full speed.
const BAND_TILES: usize = 128;

/// Whether [`conv3x3`] serves this convolution: 3×3 kernels, padding 1, and an image
/// and channel counts large enough for the transforms to pay (small layers keep the
/// direct product, whose threads split the output channels instead).
pub fn applies(s: &ConvShape) -> bool {
    s.k == 3 && s.padding == 1 && s.h * s.w >= 32 * 32 && s.cin >= 16 && s.cout >= 16
}

/// `G·g·Gᵀ` of every kernel, `[16][Cin][Cout]` (each product's left-hand side stored by
/// columns, the layout its packing copies fastest). With `transposed`, `weight` is
/// `[Cin, Cout, 3, 3]` and each kernel is taken flipped (as in `conv2d_same`).
fn transform_weights(weight: &[f32], cin: usize, cout: usize, transposed: bool) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * cout * cin];
    // Channel pairs in the order `u` is written, so its stores are consecutive.
    for ci in 0..cin {
        for co in 0..cout {
            let g = |r: usize, c: usize| {
                if transposed {
                    weight[(ci * cout + co) * 9 + 8 - (r * 3 + c)]
                } else {
                    weight[(co * cin + ci) * 9 + r * 3 + c]
                }
            };
            // G·g, 4×3: rows g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2.
            let column = |c: usize| {
                let (g0, g1, g2) = (g(0, c), g(1, c), g(2, c));
                [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
            };
            let columns = [column(0), column(1), column(2)];
            let t: [[f32; 3]; 4] = std::array::from_fn(|i| [columns[0][i], columns[1][i], columns[2][i]]);
            // (G·g)·Gᵀ, 4×4.
            for (i, row) in t.iter().enumerate() {
                let v = [row[0], 0.5 * (row[0] + row[1] + row[2]), 0.5 * (row[0] - row[1] + row[2]), row[2]];
                for (j, &x) in v.iter().enumerate() {
                    u[((i * 4 + j) * cin + ci) * cout + co] = x;
                }
            }
        }
    }
    u
}

/// The geometry of one batch item's tiles.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    /// Tile rows and columns (2×2 outputs each).
    th: usize,
    tw: usize,
    /// The padded input's row length and plane size.
    wp: usize,
    plane: usize,
    /// Tile rows per band.
    band_rows: usize,
}

/// The same convolution as `conv2d_same` (stride 1, 3×3, padding 1; `transposed` as
/// there), by F(2×2, 3×3). Callers check [`applies`] first; any 3×3, padding-1 shape
/// is computed correctly.
pub fn conv3x3(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: ConvShape, transposed: bool) -> Result<Vec<f32>> {
    let ConvShape { batch, cin, cout, h, w, k, padding, circular } = s;
    if k != 3 || padding != 1 {
        bail!("winograd conv: needs a 3x3 kernel with padding 1, got {s:?}")
    }
    if x.len() != batch * cin * h * w || weight.len() != cout * cin * 9 || bias.is_some_and(|b| b.len() != cout) {
        bail!("winograd conv: buffer sizes do not match {s:?}")
    }
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let (hp, wp) = (2 * th + 2, 2 * tw + 2);
    let threads = super::gemm::thread_count();
    // About BAND_TILES tiles a band, but at least two bands a thread where there are rows
    // enough: the transforms then run on every thread too.
    let band_rows = BAND_TILES.div_ceil(tw).min(th / (2 * threads)).max(1);
    let tiles = Tiles { th, tw, wp, plane: hp * wp, band_rows };
    let u = transform_weights(weight, cin, cout, transposed);
    // Each product's left-hand side, packed once for every band.
    let u = (0..16)
        .map(|xi| {
            PackedLhs::new(MatRef { data: &u, offset: xi * cout * cin, rows: cout, cols: cin, rs: 1, cs: cout }.into())
        })
        .collect::<Result<Vec<_>>>()?;
    let bands = th.div_ceil(tiles.band_rows);
    let mut out = vec![0.0f32; batch * cout * h * w];
    let mut padded = vec![0.0f32; cin * tiles.plane];
    for b in 0..batch {
        let xb = &x[b * cin * h * w..(b + 1) * cin * h * w];
        for c in 0..cin {
            for y in 0..h {
                let to = c * tiles.plane + (y + 1) * wp + 1;
                padded[to..to + w].copy_from_slice(&xb[(c * h + y) * w..(c * h + y + 1) * w]);
            }
            if circular {
                super::wrap_border(&mut padded[c * tiles.plane..(c + 1) * tiles.plane], h, w, wp, 1);
            }
        }
        // Band i's rows of every output channel plane, written by its task alone.
        let ob = &mut out[b * cout * h * w..(b + 1) * cout * h * w];
        let mut per_band: Vec<Vec<&mut [f32]>> = (0..bands).map(|_| Vec::with_capacity(cout)).collect();
        for plane in ob.chunks_mut(h * w) {
            for (rows, chunk) in per_band.iter_mut().zip(plane.chunks_mut(2 * tiles.band_rows * w)) {
                rows.push(chunk);
            }
        }
        let band = |(i, mut planes): (usize, Vec<&mut [f32]>), gemm_threads: usize| {
            with_scratch(|scratch| band_outputs(&padded, &u, bias, s, tiles, i, gemm_threads, &mut planes, scratch))
        };
        if bands >= 2 * threads {
            use rayon::prelude::*;
            per_band.into_par_iter().enumerate().try_for_each(|job| band(job, 1))?;
        } else {
            per_band.into_iter().enumerate().try_for_each(|job| band(job, threads))?;
        }
    }
    Ok(out)
}

/// Per-thread buffers for a band's transformed input and products, kept between bands
/// (every element is written before it is read).
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `f` with this thread's band buffers.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        // Only if a band ran inside another on this thread: fresh buffers then.
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Band `i`'s outputs into `planes`, each channel's rows of the band, with `scratch`'s
/// buffers.
#[expect(clippy::too_many_arguments, reason = "the band's inputs and geometry, spelled out")]
fn band_outputs(
    padded: &[f32],
    u: &[PackedLhs],
    bias: Option<&[f32]>,
    s: ConvShape,
    t: Tiles,
    i: usize,
    gemm_threads: usize,
    planes: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<()> {
    let ConvShape { cin, cout, h, w, .. } = s;
    let ty0 = i * t.band_rows;
    let band_rows = t.band_rows.min(t.th - ty0);
    let n = band_rows * t.tw;
    // The transformed input, [16][Cin][n]: per channel and tile row, `Bᵀ·d` down the
    // four padded rows, split into even and odd columns, then `·B` across, tile by tile
    // along the row (unit-stride loops the compiler vectorises).
    let Scratch { v, m } = scratch;
    v.resize(16 * cin * n, 0.0);
    m.resize(16 * cout * n, 0.0);
    let tw = t.tw;
    // Bᵀ·d of the even and of the odd columns, four rows of `tw + 1` each.
    let (mut even, mut odd) = (vec![0.0f32; 4 * (tw + 1)], vec![0.0f32; 4 * (tw + 1)]);
    {
        let mut planes: Vec<&mut [f32]> = v.chunks_exact_mut(cin * n).collect();
        for ci in 0..cin {
            for r in 0..band_rows {
                let at = ci * t.plane + 2 * (ty0 + r) * t.wp;
                let d = |k: usize| &padded[at + k * t.wp..at + k * t.wp + 2 * tw + 2];
                let rows =
                    d(0).chunks_exact(2).zip(d(1).chunks_exact(2)).zip(d(2).chunks_exact(2)).zip(d(3).chunks_exact(2));
                for (j, (((p0, p1), p2), p3)) in rows.enumerate() {
                    for (half, c) in [(&mut even, 0), (&mut odd, 1)] {
                        half[j] = p0[c] - p2[c];
                        half[tw + 1 + j] = p1[c] + p2[c];
                        half[2 * (tw + 1) + j] = p2[c] - p1[c];
                        half[3 * (tw + 1) + j] = p1[c] - p3[c];
                    }
                }
                let at = ci * n + r * tw;
                for (i, four) in planes.chunks_exact_mut(4).enumerate() {
                    let e = &even[i * (tw + 1)..(i + 1) * (tw + 1)];
                    let o = &odd[i * (tw + 1)..(i + 1) * (tw + 1)];
                    let [v0, v1, v2, v3] = four else { continue };
                    let (v0, v1) = (&mut v0[at..at + tw], &mut v1[at..at + tw]);
                    let (v2, v3) = (&mut v2[at..at + tw], &mut v3[at..at + tw]);
                    for j in 0..tw {
                        v0[j] = e[j] - e[j + 1];
                        v1[j] = o[j] + e[j + 1];
                        v2[j] = e[j + 1] - o[j];
                        v3[j] = o[j] - o[j + 1];
                    }
                }
            }
        }
    }
    // Sixteen products, [16][Cout][n].
    for ((xi, mx), a) in m.chunks_exact_mut(cout * n).enumerate().zip(u) {
        let bm = MatRef { data: v, offset: xi * cin * n, rows: cin, cols: n, rs: n, cs: 1 };
        let mut dst = MatMut { data: mx, offset: 0, rows: cout, cols: n, rs: n, cs: 1 };
        gemm_packed(&mut dst, a, bm.into(), false, Kernel::best(), gemm_threads)?;
    }
    let m = &*m;
    let rows = (2 * band_rows).min(h - 2 * ty0);
    if planes.len() != cout || planes.iter().any(|p| p.len() != rows * w) {
        bail!("winograd conv: band {i} does not fit its output rows")
    }
    // `Aᵀ·m·A` tile by tile along each tile row, into a top and a bottom output row
    // (unit-stride loops again), then the rows and columns inside the image are kept.
    let (mut top, mut bottom) = (vec![0.0f32; 2 * tw], vec![0.0f32; 2 * tw]);
    // The rows of Aᵀ·m: s[k][c] for k = 0, 1 and columns c = 0..4, `tw` values each.
    let mut sums = vec![0.0f32; 8 * tw];
    for (co, plane) in planes.iter_mut().enumerate() {
        let bv = bias.map_or(0.0, |b| b[co]);
        for r in 0..band_rows {
            let q = |xi: usize| &m[(xi * cout + co) * n + r * tw..][..tw];
            for (c, pair) in sums.chunks_exact_mut(2 * tw).enumerate() {
                let (s0, s1) = pair.split_at_mut(tw);
                for ((((a, b), cc), d), (x0, x1)) in
                    q(c).iter().zip(q(4 + c)).zip(q(8 + c)).zip(q(12 + c)).zip(s0.iter_mut().zip(s1.iter_mut()))
                {
                    *x0 = a + b + cc;
                    *x1 = b - cc - d;
                }
            }
            let s = |k: usize, c: usize| &sums[c * 2 * tw + k * tw..][..tw];
            for (k, out) in [(0, &mut top), (1, &mut bottom)] {
                let (c0, c1, c2, c3) = (s(k, 0), s(k, 1), s(k, 2), s(k, 3));
                for ((((pair, &a), &b), &c), &d) in out.chunks_exact_mut(2).zip(c0).zip(c1).zip(c2).zip(c3) {
                    pair[0] = a + b + c + bv;
                    pair[1] = b - c - d + bv;
                }
            }
            for (dy, src) in [(0, &top), (1, &bottom)] {
                let yy = 2 * r + dy;
                if yy < rows {
                    plane[yy * w..(yy + 1) * w].copy_from_slice(&src[..w]);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: ConvShape, transposed: bool) -> Vec<f32> {
        let ConvShape { batch, cin, cout, h, w, .. } = s;
        let mut out = vec![0.0f32; batch * cout * h * w];
        for b in 0..batch {
            for co in 0..cout {
                for y in 0..h {
                    for xx in 0..w {
                        let mut acc = f64::from(bias.map_or(0.0, |b| b[co]));
                        for ci in 0..cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = ((y + ky).wrapping_sub(1), (xx + kx).wrapping_sub(1));
                                    if iy >= h || ix >= w {
                                        continue;
                                    }
                                    let wv = if transposed {
                                        weight[(ci * cout + co) * 9 + 8 - (ky * 3 + kx)]
                                    } else {
                                        weight[(co * cin + ci) * 9 + ky * 3 + kx]
                                    };
                                    acc += f64::from(wv) * f64::from(x[((b * cin + ci) * h + iy) * w + ix]);
                                }
                            }
                        }
                        #[expect(clippy::cast_possible_truncation, reason = "the f32 reference")]
                        {
                            out[((b * cout + co) * h + y) * w + xx] = acc as f32;
                        }
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A deterministic spread of values in [-1, 1).
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) >> 8;
                #[expect(clippy::cast_precision_loss, reason = "24-bit values")]
                let f = v as f32 / (1u32 << 24) as f32;
                2.0 * f - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_direct_sum_on_odd_and_even_sizes_both_ways() -> Result<()> {
        // Odd sides (a last tile half outside), one band and several, batches of two.
        for (batch, cin, cout, h, w) in [(2, 5, 7, 9, 11), (1, 16, 16, 40, 33), (2, 3, 4, 2, 1), (1, 8, 6, 70, 6)] {
            for transposed in [false, true] {
                let s = ConvShape { batch, cin, cout, h, w, k: 3, padding: 1, circular: false };
                let x = values(batch * cin * h * w, 1);
                let wt = values(cin * cout * 9, 2);
                let bias = values(cout, 3);
                let bias = (!transposed).then_some(&bias[..]);
                let ours = conv3x3(&x, &wt, bias, s, transposed)?;
                let expected = direct(&x, &wt, bias, s, transposed);
                let worst = ours.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0.0f32, f32::max);
                let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                assert!(worst <= 1e-5 * scale, "{s:?} transposed {transposed}: off by {worst} (scale {scale})");
            }
        }
        Ok(())
    }

    #[test]
    fn agrees_with_the_implicit_gemm_convolution() -> Result<()> {
        let s = ConvShape { batch: 1, cin: 32, cout: 24, h: 64, w: 48, k: 3, padding: 1, circular: false };
        assert!(applies(&s));
        let x = values(32 * 64 * 48, 4);
        let wt = values(32 * 24 * 9, 5);
        let bias = values(24, 6);
        let ours = conv3x3(&x, &wt, Some(&bias), s, false)?;
        let theirs = super::super::implicit_gemm_conv(&x, &wt, Some(&bias), s, false)?;
        let worst = ours.iter().zip(&theirs).map(|(a, e)| (a - e).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "off by {worst}");
        Ok(())
    }

    #[test]
    fn refuses_other_kernels_and_wrong_buffers() {
        let s = ConvShape { batch: 1, cin: 2, cout: 2, h: 4, w: 4, k: 1, padding: 0, circular: false };
        assert!(conv3x3(&[0.0; 32], &[0.0; 4], None, s, false).is_err());
        let s = ConvShape { k: 3, padding: 1, ..s };
        assert!(conv3x3(&[0.0; 31], &[0.0; 36], None, s, false).is_err());
    }
}
