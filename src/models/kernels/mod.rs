//! CPU kernels of the custom ops of `models::ops`, frozen (generation) and trained
//! (`ops::training`, train-demo): the packed matrix product ([`gemm`]) and its few-row
//! form for sampling ([`rows`]); a stride-1
//! convolution as one product over `K = Cin·k·k` whose right-hand side is read straight
//! from the zero-padded input through a table of per-(channel, tap) offsets — an
//! implicit im2col: nothing but the padded input and the output is allocated — and its
//! weight gradient the same way; group normalisation (+SiLU) forward and backward in one
//! pass each.

use candle_core::{bail, Result};

pub mod gemm;
pub mod rows;
mod shape;
pub mod vmath;
pub mod winograd;

pub use gemm::{gemm, matmul, Axis, MatMut, MatRef, Operand};
pub use rows::rows_matmul;
pub use shape::ConvShape;

/// The offsets of the implicit im2col rows `(ci, ky, kx)` in a zero-padded input whose
/// channels are `plane` apart and rows `wp` apart.
fn tap_offsets(cin: usize, k: usize, plane: usize, wp: usize) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(cin * k * k);
    for ci in 0..cin {
        for ky in 0..k {
            for kx in 0..k {
                offsets.push(ci * plane + ky * wp + kx);
            }
        }
    }
    offsets
}

impl ConvShape {
    /// Copies one item's channel planes `[Cin, H, W]` into a padded buffer whose planes
    /// are `plane` apart, rows `W + 2p` apart, with `p` rows and columns before the
    /// values: zeros (the buffer's), or the opposite side's with `circular`.
    fn pad_into(&self, padded: &mut [f32], x: &[f32], plane: usize) {
        let (h, w, p) = (self.h, self.w, self.padding);
        let wp = w + 2 * p;
        for c in 0..self.cin {
            for y in 0..h {
                let from = c * h * w + y * w;
                let to = c * plane + (y + p) * wp + p;
                padded[to..to + w].copy_from_slice(&x[from..from + w]);
            }
            if self.circular {
                wrap_border(&mut padded[c * plane..(c + 1) * plane], h, w, wp, p);
            }
        }
    }

    /// Whether the kernels can pad this shape as it asks: circular padding needs an
    /// output the input's size (`k = 2p + 1`, so that the input gradient's convolution
    /// pads circularly too) and no more padding than the input has rows and columns.
    fn check_padding(&self) -> Result<()> {
        if self.circular && (self.k != 2 * self.padding + 1 || self.padding > self.h || self.padding > self.w) {
            bail!(
                "conv2d: circular padding {} with a {}x{} kernel over {}x{}",
                self.padding,
                self.k,
                self.k,
                self.h,
                self.w
            )
        }
        Ok(())
    }
}

/// Fills the `p`-wide border of one padded plane (rows `wp` apart, the `h×w` values
/// from row and column `p`) with the opposite side's rows and columns, corners
/// included, as `torch.nn.functional.pad(mode="circular")`. Needs `p ≤ h` and `p ≤ w`.
fn wrap_border(plane: &mut [f32], h: usize, w: usize, wp: usize, p: usize) {
    let width = w + 2 * p;
    for y in p..p + h {
        let row = &mut plane[y * wp..y * wp + width];
        for i in 0..p {
            row[i] = row[w + i];
            row[p + w + i] = row[p + i];
        }
    }
    for i in 0..p {
        plane.copy_within((h + i) * wp..(h + i) * wp + width, i * wp);
        plane.copy_within((p + i) * wp..(p + i) * wp + width, (p + h + i) * wp);
    }
}

/// Stride-1 convolution of `x` (`[B, Cin, H, W]`, contiguous) with `weight`
/// (`[Cout, Cin, k, k]`, contiguous) plus `bias` (`[Cout]`).
///
/// With `transposed`, `weight` is read as `[Cin', Cout', k, k]` and used flipped and
/// transposed — the convolution that carries a gradient back through the original one
/// (for padding `p`, call with padding `k − 1 − p`). No copy of the weight is made.
///
/// Per batch item, one product `[Cout, Cin·k·k] · [Cin·k·k, Ho·Wo]` written straight into
/// the output: the right-hand side's row `(ci, ky, kx)` is the padded input read from
/// offset `ci·plane + ky·Wp + kx`, and its column `(y, x)` from `y·Wp + x` further on, so
/// each output is the sum over its window. (Packing copies each run of columns that lie
/// side by side in one output row as a block.)
///
/// 3×3 convolutions with padding 1 over large enough images go through Winograd's
/// F(2×2, 3×3) instead ([`winograd`]), which needs 2.25× fewer multiplications.
pub fn conv2d_same(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: ConvShape,
    transposed: bool,
) -> Result<Vec<f32>> {
    s.check_padding()?;
    if winograd::applies(&s) {
        return winograd::conv3x3(x, weight, bias, s, transposed);
    }
    implicit_gemm_conv(x, weight, bias, s, transposed)
}

/// [`conv2d_same`] as one implicit-GEMM product per batch item.
fn implicit_gemm_conv(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: ConvShape,
    transposed: bool,
) -> Result<Vec<f32>> {
    let ConvShape { batch, cin, cout, h, w, k, padding: p, circular: _ } = s;
    let Some((ho, wo)) = s.out_hw() else { bail!("conv2d: {h}x{w} input is smaller than the {k}x{k} kernel") };
    if x.len() != batch * cin * h * w || weight.len() != cout * cin * k * k || bias.is_some_and(|b| b.len() != cout) {
        bail!("conv2d: buffer sizes do not match {s:?}")
    }
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let direct = p == 0 && k == 1;
    let plane = if direct { h * w } else { hp * wp };
    let mut padded = if direct { Vec::new() } else { vec![0.0f32; cin * plane] };
    let taps = tap_offsets(cin, k, plane, wp);
    // Row co of the weight matrix, column (ci, ky, kx).
    let kk = k * k;
    let flipped: Vec<usize>;
    let lhs = if transposed {
        // weight is [cin', cout', k, k] = [cout, cin, k, k] of the forward conv read as
        // W[ci][co] flipped: element (co, (ci, ky, kx)) = W[ci][co][k−1−ky][k−1−kx].
        flipped = (0..cin).flat_map(|ci| (0..kk).map(move |t| ci * cout * kk + (kk - 1 - t))).collect();
        Operand { data: weight, rows: Axis::strided(0, kk, cout), cols: Axis::Table(&flipped) }
    } else {
        Operand { data: weight, rows: Axis::strided(0, cin * kk, cout), cols: Axis::strided(0, 1, cin * kk) }
    };
    let n = ho * wo;
    let positions: Vec<usize> = (0..ho).flat_map(|y| (0..wo).map(move |x| y * wp + x)).collect();
    let cols = if wp == wo { Axis::strided(0, 1, n) } else { Axis::Table(&positions) };
    let mut out = vec![0.0f32; batch * cout * n];
    for b in 0..batch {
        let xb = &x[b * cin * h * w..(b + 1) * cin * h * w];
        let src: &[f32] = if direct {
            xb
        } else {
            s.pad_into(&mut padded, xb, plane);
            &padded
        };
        let ob = &mut out[b * cout * n..(b + 1) * cout * n];
        if let Some(bias) = bias {
            for (row, &bv) in ob.chunks_exact_mut(n).zip(bias) {
                row.fill(bv);
            }
        }
        let rhs = Operand { data: src, rows: Axis::Table(&taps), cols };
        let mut dst = MatMut { data: ob, offset: 0, rows: cout, cols: n, rs: n, cs: 1 };
        gemm(&mut dst, lhs, rhs, bias.is_some())?;
    }
    Ok(out)
}

/// The weight gradient of [`conv2d_same`] (not transposed): `dW[o][i][ky][kx] =
/// Σ_b,y,x dy[b][o][y][x] · x_padded[b][i][y + ky][x + kx]`, as `[Cout, Cin, k, k]`.
/// Like the forward pass, one product per batch item, `[Cout, Ho·Wp] · [Ho·Wp, Cin·k·k]`,
/// whose right-hand side's column `(ci, ky, kx)` is the padded input read from offset
/// `ci·plane + ky·Wp + kx`; the upstream gradient is laid out on the padded width with
/// zeros in the columns the forward pass cut away, so those positions contribute nothing.
pub fn conv2d_weight_grad(x: &[f32], dy: &[f32], s: ConvShape) -> Result<Vec<f32>> {
    if s.circular {
        bail!("conv2d: no weight gradient with circular padding")
    }
    let ConvShape { batch, cin, cout, h, w, k, padding: p, circular: _ } = s;
    let Some((ho, wo)) = s.out_hw() else { bail!("conv2d: {h}x{w} input is smaller than the {k}x{k} kernel") };
    if x.len() != batch * cin * h * w || dy.len() != batch * cout * ho * wo {
        bail!("conv2d weight gradient: buffer sizes do not match {s:?}")
    }
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let plane = hp * wp + k;
    let full_n = ho * wp;
    let mut padded = vec![0.0f32; cin * plane];
    let mut full = vec![0.0f32; cout * full_n];
    let taps = tap_offsets(cin, k, plane, wp);
    let mut grad = vec![0.0f32; cout * cin * k * k];
    for b in 0..batch {
        s.pad_into(&mut padded, &x[b * cin * h * w..(b + 1) * cin * h * w], plane);
        let db = &dy[b * cout * ho * wo..(b + 1) * cout * ho * wo];
        for co in 0..cout {
            for y in 0..ho {
                let from = co * ho * wo + y * wo;
                let to = co * full_n + y * wp;
                full[to..to + wo].copy_from_slice(&db[from..from + wo]);
            }
        }
        let lhs = Operand { data: &full, rows: Axis::strided(0, full_n, cout), cols: Axis::strided(0, 1, full_n) };
        let rhs = Operand { data: &padded, rows: Axis::strided(0, 1, full_n), cols: Axis::Table(&taps) };
        let mut dst = MatMut { data: &mut grad, offset: 0, rows: cout, cols: cin * k * k, rs: cin * k * k, cs: 1 };
        gemm(&mut dst, lhs, rhs, b > 0)?;
    }
    Ok(grad)
}

/// Planes handed to a thread at a time by the resampling kernels: about 64 K values.
fn planes_per_task(plane: usize) -> usize {
    (65_536 / plane.max(1)).max(1)
}

/// Nearest-neighbour 2× upsampling of `h×w` planes (`x.len()` a multiple of `h·w`): each
/// value becomes a 2×2 block. Threads over planes.
pub fn upsample2(x: &[f32], h: usize, w: usize) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let plane = h * w;
    if plane == 0 || !x.len().is_multiple_of(plane) {
        bail!("upsample: {} values are not whole {h}x{w} planes", x.len())
    }
    let mut y = vec![0.0f32; 4 * x.len()];
    let per = planes_per_task(4 * plane);
    y.par_chunks_mut(4 * plane * per).zip(x.par_chunks(plane * per)).for_each(|(ys, xs)| {
        for (out, row) in ys.chunks_exact_mut(4 * w).zip(xs.chunks_exact(w)) {
            let (top, bottom) = out.split_at_mut(2 * w);
            for (pair, &v) in top.chunks_exact_mut(2).zip(row) {
                pair[0] = v;
                pair[1] = v;
            }
            bottom.copy_from_slice(top);
        }
    });
    Ok(y)
}

/// The gradient of [`upsample2`]: each `h×w` value gets the sum of its 2×2 block of the
/// `2h×2w` upstream planes, added row by row (the order of candle's own backward).
pub fn sum_pool2(g: &[f32], h: usize, w: usize) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let plane = h * w;
    if plane == 0 || !g.len().is_multiple_of(4 * plane) {
        bail!("upsample gradient: {} values are not whole {}x{} planes", g.len(), 2 * h, 2 * w)
    }
    let mut x = vec![0.0f32; g.len() / 4];
    let per = planes_per_task(4 * plane);
    x.par_chunks_mut(plane * per).zip(g.par_chunks(4 * plane * per)).for_each(|(xs, gs)| {
        for (row, block) in xs.chunks_exact_mut(w).zip(gs.chunks_exact(4 * w)) {
            let (top, bottom) = block.split_at(2 * w);
            for ((v, t), b) in row.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                *v = t[0] + t[1] + b[0] + b[1];
            }
        }
    });
    Ok(x)
}

/// A group normalisation over `[B, C, H, W]`, optionally followed by SiLU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSpec {
    pub channels: usize,
    pub plane: usize,
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
}

/// The per-channel gradients of a group normalisation's weight and bias.
pub type AffineGrads = (Vec<f32>, Vec<f32>);

impl GroupSpec {
    /// From `[B, C, H, W]` dimensions.
    pub fn new(dims: &[usize], groups: usize, eps: f64, silu: bool) -> Result<Self> {
        let [_, c, h, w] = dims else { bail!("group norm: expected [B, C, H, W], got {dims:?}") };
        if groups == 0 || c % groups != 0 {
            bail!("group norm: {c} channels do not split into {groups} groups")
        }
        Ok(Self { channels: *c, plane: h * w, groups, eps, silu })
    }

    /// Elements in one (batch, group) chunk.
    fn chunk(&self) -> usize {
        (self.channels / self.groups) * self.plane
    }

    /// Chunks handed to a thread at a time: about 16 K values, so that a layer norm's
    /// short rows are not a task each.
    fn chunks_per_block(&self) -> usize {
        (16_384 / self.chunk().max(1)).max(1)
    }
}

/// Mean and 1/σ of one group's values (sums in f64, eight running side by side).
fn moments(v: &[f32], eps: f64) -> (f32, f32) {
    #[expect(clippy::cast_precision_loss, reason = "group sizes are far below 2^52")]
    let n = v.len().max(1) as f64;
    let mean = lane_sum(v, f64::from) / n;
    let var = lane_sum(v, |a| (f64::from(a) - mean).powi(2)) / n;
    #[expect(clippy::cast_possible_truncation, reason = "back to the tensor's f32")]
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// `Σ f(v)` in f64 over eight interleaved running sums (which the compiler vectorises,
/// where one running sum is a chain of dependent additions).
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    vmath::wide(
        #[inline(always)]
        || {
            let mut lanes = [0.0f64; 8];
            let chunks = v.chunks_exact(8);
            let tail = chunks.remainder();
            for c in chunks {
                for (s, &a) in lanes.iter_mut().zip(c) {
                    *s += f(a);
                }
            }
            lanes.iter().sum::<f64>() + tail.iter().map(|&a| f(a)).sum::<f64>()
        },
    )
}

fn check_group_norm(len: usize, gamma: &[f32], beta: &[f32], g: GroupSpec) -> Result<()> {
    let per_item = g.channels * g.plane;
    if gamma.len() != g.channels || beta.len() != g.channels || (per_item > 0 && !len.is_multiple_of(per_item)) {
        bail!("group norm: {len} values, {} channels, weight {} and bias {}", g.channels, gamma.len(), beta.len())
    }
    Ok(())
}

/// `torch.nn.GroupNorm` (then SiLU when `silu`) of `[B, C, H, W]` values, one pass,
/// threads over (batch, group) chunks.
pub fn group_norm(x: &[f32], gamma: &[f32], beta: &[f32], g: GroupSpec) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    check_group_norm(x.len(), gamma, beta, g)?;
    let (chunk, plane) = (g.chunk(), g.plane);
    let cg = g.channels / g.groups;
    let mut y = vec![0.0f32; x.len()];
    if chunk == 0 {
        return Ok(y);
    }
    let per_block = g.chunks_per_block();
    y.par_chunks_mut(chunk * per_block).zip(x.par_chunks(chunk * per_block)).enumerate().for_each(
        |(block, (yb, xb))| {
            for (i, (yg, xg)) in yb.chunks_mut(chunk).zip(xb.chunks(chunk)).enumerate() {
                let (mean, rstd) = moments(xg, g.eps);
                let c0 = ((block * per_block + i) % g.groups) * cg;
                for (j, (yc, xc)) in yg.chunks_mut(plane).zip(xg.chunks(plane)).enumerate() {
                    let a = rstd * gamma[c0 + j];
                    let b = beta[c0 + j] - mean * a;
                    vmath::wide(
                        #[inline(always)]
                        || {
                            if g.silu {
                                for (o, &v) in yc.iter_mut().zip(xc) {
                                    let n = v * a + b;
                                    *o = n * vmath::sigmoid(n);
                                }
                            } else {
                                for (o, &v) in yc.iter_mut().zip(xc) {
                                    *o = v * a + b;
                                }
                            }
                        },
                    );
                }
            }
        },
    );
    Ok(y)
}

/// Gradients of [`group_norm`]: the input's, and with `params` also the per-channel
/// weight's and bias's (`(dx, Some((dγ, dβ)))`).
pub fn group_norm_backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    g: GroupSpec,
    params: bool,
) -> Result<(Vec<f32>, Option<AffineGrads>)> {
    use rayon::prelude::*;
    check_group_norm(x.len(), gamma, beta, g)?;
    if x.len() != dy.len() {
        bail!("group norm backward: {} gradient values for {} inputs", dy.len(), x.len())
    }
    let (chunk, plane) = (g.chunk(), g.plane);
    let cg = g.channels / g.groups;
    let channels = g.channels;
    let mut dx = vec![0.0f32; x.len()];
    if chunk == 0 {
        return Ok((dx, params.then(|| (vec![0.0; channels], vec![0.0; channels]))));
    }
    #[expect(clippy::cast_precision_loss, reason = "group sizes are far below 2^24")]
    let inv_n = 1.0 / chunk as f32;
    let per_block = g.chunks_per_block();
    let span = chunk * per_block;
    // Per block of chunks: Σ dn·x̂ and Σ dn for every channel (empty unless `params`).
    let sums: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(span)
        .zip(x.par_chunks(span).zip(dy.par_chunks(span)))
        .enumerate()
        .map(|(block, (dxb, (xb, dyb)))| {
            let (mut dgamma, mut dbeta) =
                if params { (vec![0.0; channels], vec![0.0; channels]) } else { (vec![], vec![]) };
            for (i, (dxg, (xg, dyg))) in dxb.chunks_mut(chunk).zip(xb.chunks(chunk).zip(dyb.chunks(chunk))).enumerate()
            {
                let (mean, rstd) = moments(xg, g.eps);
                let c0 = ((block * per_block + i) % g.groups) * cg;
                // First pass: dx̂ into dx, and per channel Σ dn·x̂ and Σ dn (then
                // Σ dx̂ = γ·Σ dn and Σ dx̂·x̂ = γ·Σ dn·x̂ over the group).
                let (mut s1, mut s2) = (0.0f64, 0.0f64);
                for (j, ((dc, xc), gc)) in
                    dxg.chunks_mut(plane).zip(xg.chunks(plane)).zip(dyg.chunks(plane)).enumerate()
                {
                    let (gm, bt) = (gamma[c0 + j], beta[c0 + j]);
                    vmath::wide(
                        #[inline(always)]
                        || {
                            for ((d, &v), &gr) in dc.iter_mut().zip(xc).zip(gc) {
                                let dn = if g.silu {
                                    let n = (v - mean) * rstd * gm + bt;
                                    let s = vmath::sigmoid(n);
                                    gr * s * (1.0 + n * (1.0 - s))
                                } else {
                                    gr
                                };
                                *d = dn;
                            }
                        },
                    );
                    // Then the sums, and dn becomes dx̂ = dn·γ.
                    let (sg, sb) = vmath::wide(
                        #[inline(always)]
                        || {
                            let (mut sg, mut sb) = ([0.0f64; 8], [0.0f64; 8]);
                            let whole = dc.len() / 8 * 8;
                            let (body, tail) = dc.split_at_mut(whole);
                            for (dn8, x8) in body.chunks_exact_mut(8).zip(xc.chunks_exact(8)) {
                                for ((s, b), (d, &v)) in sg.iter_mut().zip(sb.iter_mut()).zip(dn8.iter_mut().zip(x8)) {
                                    *s += f64::from(*d * ((v - mean) * rstd));
                                    *b += f64::from(*d);
                                    *d *= gm;
                                }
                            }
                            let (mut tg, mut tb) = (sg.iter().sum::<f64>(), sb.iter().sum::<f64>());
                            for (d, &v) in tail.iter_mut().zip(&xc[whole..]) {
                                tg += f64::from(*d * ((v - mean) * rstd));
                                tb += f64::from(*d);
                                *d *= gm;
                            }
                            (tg, tb)
                        },
                    );
                    s1 += f64::from(gm) * sb;
                    s2 += f64::from(gm) * sg;
                    if params {
                        dgamma[c0 + j] += sg;
                        dbeta[c0 + j] += sb;
                    }
                }
                #[expect(clippy::cast_possible_truncation, reason = "back to f32")]
                let (m1, m2) = ((s1 as f32) * inv_n, (s2 as f32) * inv_n);
                vmath::wide(
                    #[inline(always)]
                    || {
                        for (d, &v) in dxg.iter_mut().zip(xg) {
                            let xh = (v - mean) * rstd;
                            *d = rstd * (*d - m1 - xh * m2);
                        }
                    },
                );
            }
            (dgamma, dbeta)
        })
        .collect();
    if !params {
        return Ok((dx, None));
    }
    let mut dgamma = vec![0.0f64; channels];
    let mut dbeta = vec![0.0f64; channels];
    for (sg, sb) in &sums {
        for c in 0..channels {
            dgamma[c] += sg[c];
            dbeta[c] += sb[c];
        }
    }
    #[expect(clippy::cast_possible_truncation, reason = "back to f32")]
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
    Ok((dx, Some((to_f32(dgamma), to_f32(dbeta)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: ConvShape) -> Vec<f32> {
        let ConvShape { batch, cin, cout, h, w, k, padding: p, circular } = s;
        let (ho, wo) = s.out_hw().unwrap_or((0, 0));
        let mut out = vec![0.0; batch * cout * ho * wo];
        for b in 0..batch {
            for co in 0..cout {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut acc = bias.map_or(0.0, |bb| bb[co]);
                        for ci in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (mut iy, mut ix) =
                                        ((y + ky) as isize - p as isize, (xx + kx) as isize - p as isize);
                                    if circular {
                                        (iy, ix) = (iy.rem_euclid(h as isize), ix.rem_euclid(w as isize));
                                    }
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        acc += wt[((co * cin + ci) * k + ky) * k + kx]
                                            * x[((b * cin + ci) * h + iy as usize) * w + ix as usize];
                                    }
                                }
                            }
                        }
                        out[((b * cout + co) * ho + y) * wo + xx] = acc;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn upsampling_repeats_each_value_and_its_gradient_sums_the_block() -> Result<()> {
        let (planes, h, w) = (3, 2, 3);
        let x = values(planes * h * w, 4);
        let y = upsample2(&x, h, w)?;
        let g = values(4 * planes * h * w, 5);
        let back = sum_pool2(&g, h, w)?;
        for p in 0..planes {
            for yy in 0..2 * h {
                for xx in 0..2 * w {
                    assert_eq!(y[(p * 2 * h + yy) * 2 * w + xx], x[(p * h + yy / 2) * w + xx / 2]);
                }
            }
            for yy in 0..h {
                for xx in 0..w {
                    let at = |dy: usize, dx: usize| g[(p * 2 * h + 2 * yy + dy) * 2 * w + 2 * xx + dx];
                    let want = at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1);
                    assert_eq!(back[(p * h + yy) * w + xx], want);
                }
            }
        }
        assert!(upsample2(&x[1..], h, w).is_err());
        assert!(sum_pool2(&g[1..], h, w).is_err());
        Ok(())
    }

    #[test]
    fn implicit_gemm_matches_the_definition() -> Result<()> {
        for &(batch, cin, cout, h, w, k, p) in &[
            (1, 3, 4, 5, 7, 3, 1),
            (2, 5, 3, 6, 4, 1, 0),
            (1, 2, 2, 4, 4, 3, 0),
            (2, 4, 6, 3, 9, 3, 2),
            (1, 1, 1, 1, 1, 1, 0),
        ] {
            let s = ConvShape { batch, cin, cout, h, w, k, padding: p, circular: false };
            let b = values(cout, 3);
            for bias in [None, Some(b.as_slice())] {
                matches_the_definition(s, bias, 1e-4)?;
            }
        }
        Ok(())
    }

    /// `conv2d_same` of `s` on fixed values against [`naive`], to `tol`.
    fn matches_the_definition(s: ConvShape, bias: Option<&[f32]>, tol: f32) -> Result<()> {
        let x = values(s.batch * s.cin * s.h * s.w, 1);
        let wt = values(s.cout * s.cin * s.k * s.k, 2);
        let got = conv2d_same(&x, &wt, bias, s, false)?;
        let want = naive(&x, &wt, bias, s);
        assert_eq!(got.len(), want.len());
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() < tol, "{s:?}: {g} vs {e}");
        }
        Ok(())
    }

    #[test]
    fn circular_padding_matches_the_definition_and_its_adjoint() -> Result<()> {
        // The implicit product (small images, 1×1 and 5×5) and Winograd (3×3 over 32×32
        // and up, odd widths included); each against the definition, and the transposed
        // convolution as the forward one's adjoint: <conv(x), g> = <x, conv_t(g)>.
        for &(batch, cin, cout, h, w, k, p) in &[
            (1, 3, 4, 5, 7, 3, 1),
            (2, 4, 3, 6, 6, 1, 0),
            (1, 2, 3, 6, 5, 5, 2),
            (1, 16, 16, 32, 33, 3, 1),
            (2, 16, 24, 34, 40, 3, 1),
        ] {
            let s = ConvShape { batch, cin, cout, h, w, k, padding: p, circular: true };
            matches_the_definition(s, Some(&values(cout, 3)), 1e-3)?;
            let (x, wt) = (values(batch * cin * h * w, 1), values(cout * cin * k * k, 2));
            let g = values(batch * cout * h * w, 4);
            let back = ConvShape { cin: cout, cout: cin, padding: k - 1 - p, ..s };
            let dx = conv2d_same(&g, &wt, None, back, true)?;
            let y = conv2d_same(&x, &wt, None, s, false)?;
            let lhs: f64 = y.iter().zip(&g).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0), "{s:?}: {lhs} vs {rhs}");
        }
        // What cannot wrap is an error: an output of another size, more padding than rows.
        let s = ConvShape { batch: 1, cin: 1, cout: 1, h: 4, w: 4, k: 3, padding: 0, circular: true };
        assert!(conv2d_same(&values(16, 1), &values(9, 2), None, s, false).is_err());
        let s = ConvShape { h: 1, padding: 2, k: 5, ..s };
        assert!(conv2d_same(&values(4, 1), &values(25, 2), None, s, false).is_err());
        Ok(())
    }

    #[test]
    fn transposed_is_the_flipped_transposed_kernel() -> Result<()> {
        let (cin, cout, k) = (3, 5, 3);
        let wt = values(cout * cin * k * k, 4);
        // The explicit flipped/transposed kernel [cin, cout, k, k].
        let mut flipped = vec![0.0; wt.len()];
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        flipped[((ci * cout + co) * k + (k - 1 - ky)) * k + (k - 1 - kx)] =
                            wt[((co * cin + ci) * k + ky) * k + kx];
                    }
                }
            }
        }
        let s = ConvShape { batch: 2, cin: cout, cout: cin, h: 6, w: 5, k, padding: 1, circular: false };
        let g = values(2 * cout * 6 * 5, 5);
        let got = conv2d_same(&g, &wt, None, s, true)?;
        let want = naive(&g, &flipped, None, s);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4);
        }
        Ok(())
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Rates of the kernels on this machine (`cargo test --lib kernel_rates -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn kernel_rates() -> Result<()> {
        let s = ConvShape { batch: 1, cin: 128, cout: 128, h: 256, w: 256, k: 3, padding: 1, circular: false };
        let x = vec![0.5f32; 128 * 256 * 256];
        let w = vec![0.01f32; 128 * 128 * 9];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let _ = conv2d_same(&x, &w, None, s, false)?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "conv 128->128 3x3 at 256^2: {:.3} s, {:.1} GFLOP/s",
                secs,
                2.0 * 128.0 * 128.0 * 9.0 * 65536.0 / secs / 1e9
            );
        }
        let (m, k, n) = (1600, 768, 3072);
        let a = vec![0.5f32; m * k];
        let b = vec![0.01f32; k * n];
        let mut c = vec![0.0f32; m * n];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let mut dst = MatMut { data: &mut c, offset: 0, rows: m, cols: n, rs: n, cs: 1 };
            matmul(
                &mut dst,
                MatRef { data: &a, offset: 0, rows: m, cols: k, rs: k, cs: 1 },
                MatRef { data: &b, offset: 0, rows: k, cols: n, rs: 1, cs: k },
                false,
            )?;
            let secs = t.elapsed().as_secs_f64();
            println!("matmul {m}x{k}x{n}: {:.3} s, {:.1} GFLOP/s", secs, 2.0 * (m * k * n) as f64 / secs / 1e9);
            let t = std::time::Instant::now();
            let mut dst = MatMut { data: &mut c, offset: 0, rows: m, cols: n, rs: n, cs: 1 };
            matmul(
                &mut dst,
                MatRef { data: &a, offset: 0, rows: m, cols: k, rs: k, cs: 1 },
                MatRef { data: &b, offset: 0, rows: k, cols: n, rs: n, cs: 1 },
                false,
            )?;
            let secs = t.elapsed().as_secs_f64();
            println!("matmul row-major rhs: {:.3} s, {:.1} GFLOP/s", secs, 2.0 * (m * k * n) as f64 / secs / 1e9);
            // The same product through the gemm crate (candle's matmul), for comparison.
            let t = std::time::Instant::now();
            #[expect(unsafe_code, reason = "gemm takes raw pointers; the buffers are exactly m·k, k·n and m·n")]
            // SAFETY: row-major a [m, k], b [k, n], c [m, n], all owned and sized above.
            unsafe {
                ::gemm::gemm(
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
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    ::gemm::Parallelism::Rayon(candle_core::utils::get_num_threads()),
                );
            }
            let secs = t.elapsed().as_secs_f64();
            println!("gemm crate, row-major rhs: {:.3} s, {:.1} GFLOP/s", secs, 2.0 * (m * k * n) as f64 / secs / 1e9);
        }
        Ok(())
    }
}
