//! Cutouts: the crops of the current image that CLIP looks at each step (spec §1–§2).
//!
//! Two methods:
//! - [`CutMethod::Notebook`]: the z+quantize notebook's `MakeCutouts` — random square
//!   crops ([`random_crops`]) resampled to CLIP's input size with the notebook's
//!   Lanczos-antialiased bicubic [`resample`] ([`cut`]).
//! - [`CutMethod::Pooled`]: nerdyrodent's "updatedpooling" — the whole image pooled to
//!   the cut size, `(adaptive avg + adaptive max) / 2`, repeated ([`pooled`]); the
//!   cutouts then differ only by their augmentations.
//!
//! Everything here is differentiable with respect to the image, built from candle ops
//! with a backward pass (matmul, narrow, index_select, gather, cat, arithmetic).
//!
//! Resampling is separable and linear, so each axis is one `[out, in]` matrix built on
//! the host in f64 and applied with a matmul. The matrices (resample and average-pool)
//! are cached process-wide, keyed by kind, sizes, dtype and device, in a small map
//! behind a `Mutex`; the map is emptied whenever it would grow past
//! [`CACHE_BUDGET`] elements, so a long run with many crop sizes stays bounded.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use candle_core::{DType, Device, DeviceLocation, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::rng::Rng;
use crate::models::ops::windows::{resample_windows, Window};

/// One square crop: side `size` pixels, top-left corner at column `x`, row `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crop {
    pub size: usize,
    pub x: usize,
    pub y: usize,
}

/// The most matrix elements the process-wide matrix cache holds before it is emptied.
pub const CACHE_BUDGET: usize = 1 << 23;

#[expect(clippy::cast_precision_loss, reason = "image sides are far below 2^52")]
fn as_f64(n: usize) -> f64 {
    n as f64
}

/// The notebook's random crop rule (spec §2), drawing from our [`Rng`].
///
/// `max_size = min(W, H)`, `min_size = min(W, H, cut_size)`; per cutout
/// `size = int(u^cut_pow · (max_size − min_size) + min_size)` with `u ~ U[0, 1)`, then
/// `x ∈ [0, W − size]` and `y ∈ [0, H − size]` uniform integers (drawn in that order:
/// `u`, `x`, `y`). The size is clamped to `[min_size, max_size]`, which only matters
/// for odd `cut_pow` values (negative or NaN).
pub fn random_crops(
    rng: &mut Rng,
    cutn: usize,
    cut_size: usize,
    cut_pow: f64,
    width: usize,
    height: usize,
) -> Vec<Crop> {
    let max_size = width.min(height);
    let min_size = max_size.min(cut_size);
    (0..cutn)
        .map(|_| {
            let u = rng.uniform();
            let span = u.powf(cut_pow) * as_f64(max_size - min_size) + as_f64(min_size);
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "Python's int(): truncation toward zero, saturating; clamped below"
            )]
            let size = (span as usize).clamp(min_size, max_size);
            let x = rng.below(width - size + 1);
            let y = rng.below(height - size + 1);
            Crop { size, x, y }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Host-side matrices.

/// `sinc(x) = sin(πx)/(πx)`, 1 at 0.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// The notebook's `lanczos(ramp(ratio, 2), 2)`: the antialiasing kernel for a
/// downsampling ratio `ratio = out / in < 1`, normalised to sum 1.
fn lanczos_kernel(ratio: f64) -> Vec<f64> {
    let width = 2.0;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a small positive count: ceil(2 / ratio + 1) with ratio in (0, 1)"
    )]
    let n = (width / ratio + 1.0).ceil() as usize;
    let mut half = Vec::with_capacity(n);
    let mut cur = 0.0;
    for _ in 0..n {
        half.push(cur);
        cur += ratio;
    }
    // cat([-out[1:].flip(0), out])[1:-1]
    let full: Vec<f64> = half.iter().skip(1).rev().map(|v| -v).chain(half.iter().copied()).collect();
    let ramp = &full[1..full.len() - 1];
    let a = 2.0;
    let raw: Vec<f64> = ramp.iter().map(|&x| if -a < x && x < a { sinc(x) * sinc(x / a) } else { 0.0 }).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|v| v / sum).collect()
}

/// Index `i` reflected into `[0, n)` as `F.pad(mode='reflect')` does (the edge sample
/// is not repeated); repeated reflection for pads wider than the signal, where
/// PyTorch would refuse.
fn reflect(i: isize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(isize::try_from(period).unwrap_or(isize::MAX));
    let m = usize::try_from(m).unwrap_or(0);
    if m >= n {
        period - m
    } else {
        m
    }
}

/// PyTorch's cubic convolution weights (A = −0.75) for fractional offset `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    let a = -0.75;
    let cc1 = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let cc2 = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)]
}

/// The notebook's resample along one axis, `n_in -> n_out`, as a row-major
/// `[n_out, n_in]` matrix: the reflect-padded Lanczos filter (only when shrinking),
/// then `F.interpolate(mode='bicubic', align_corners=True)`.
fn resample_matrix(n_in: usize, n_out: usize) -> Vec<f64> {
    let to_isize = |v: usize| isize::try_from(v).unwrap_or(isize::MAX);
    // The antialiasing filter (identity when not shrinking), kept sparse: sample `tap`
    // of the filtered signal is the sum over `k` of `kernel[k] · in[reflect(tap + k − pad)]`.
    let kernel = if n_out < n_in { lanczos_kernel(as_f64(n_out) / as_f64(n_in)) } else { vec![1.0] };
    let pad = to_isize((kernel.len() - 1) / 2);
    // Bicubic B [n_out, n_in] composed with the filter: out = B · P.
    let scale = if n_out > 1 { as_f64(n_in - 1) / as_f64(n_out - 1) } else { 0.0 };
    let mut out = vec![0.0; n_out * n_in];
    for o in 0..n_out {
        let real = scale * as_f64(o);
        let floor = real.floor();
        let weights = cubic_weights(real - floor);
        #[expect(clippy::cast_possible_truncation, reason = "a source index, far below isize::MAX")]
        let base = floor as isize;
        let row = &mut out[o * n_in..(o + 1) * n_in];
        for (k, &w) in weights.iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            let tap = (base - 1 + to_isize(k)).clamp(0, to_isize(n_in) - 1);
            for (j, &kv) in kernel.iter().enumerate() {
                row[reflect(tap + to_isize(j) - pad, n_in)] += w * kv;
            }
        }
    }
    out
}

/// The window `[start, end)` of output `o` in PyTorch's adaptive pooling.
fn pool_window(o: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    let start = o * n_in / n_out;
    let end = ((o + 1) * n_in).div_ceil(n_out);
    (start, end.max(start + 1).min(n_in))
}

/// Adaptive average pooling along one axis as a row-major `[n_out, n_in]` matrix.
fn avg_pool_matrix(n_in: usize, n_out: usize) -> Vec<f64> {
    let mut out = vec![0.0; n_out * n_in];
    for o in 0..n_out {
        let (start, end) = pool_window(o, n_in, n_out);
        let w = 1.0 / as_f64(end - start);
        for v in &mut out[o * n_in + start..o * n_in + end] {
            *v = w;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The matrix cache.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MatrixKind {
    Resample,
    AvgPool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MatrixKey {
    kind: MatrixKind,
    n_in: usize,
    n_out: usize,
    dtype: DType,
    location: DeviceLocation,
}

#[derive(Default)]
struct MatrixCache {
    map: HashMap<MatrixKey, Tensor>,
    elements: usize,
}

fn cache() -> &'static Mutex<MatrixCache> {
    static CACHE: OnceLock<Mutex<MatrixCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(MatrixCache::default()))
}

/// The transposed matrix `[n_in, n_out]` of `kind` on `device` in `dtype`, from the
/// cache or built now.
fn matrix_t(kind: MatrixKind, n_in: usize, n_out: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let key = MatrixKey { kind, n_in, n_out, dtype, location: device.location() };
    {
        let guard = cache().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = guard.map.get(&key) {
            // Several `Device`s can share a location; tensors only mix within one.
            if t.device().same_device(device) {
                return Ok(t.clone());
            }
        }
    }
    let host = match kind {
        MatrixKind::Resample => resample_matrix(n_in, n_out),
        MatrixKind::AvgPool => avg_pool_matrix(n_in, n_out),
    };
    // Transposed on the host, so that one upload brings the matrix as it is used.
    let mut transposed = vec![0.0; host.len()];
    for (o, row) in host.chunks_exact(n_in).enumerate() {
        for (i, v) in row.iter().enumerate() {
            transposed[i * n_out + o] = *v;
        }
    }
    let t = super::transfer::upload(transposed, (n_in, n_out), dtype, device)?;
    let mut guard = cache().lock().unwrap_or_else(PoisonError::into_inner);
    let size = n_in * n_out;
    if guard.elements + size > CACHE_BUDGET {
        guard.map.clear();
        guard.elements = 0;
    }
    if let Some(old) = guard.map.insert(key, t.clone()) {
        guard.elements -= old.elem_count();
    }
    guard.elements += size;
    Ok(t)
}

/// Applies per-axis `[out, in]` matrices of `kind` to `x` `[N, C, h, w]`; an axis whose
/// size does not change is left alone when `skip_same` (the resample is then exactly
/// the identity).
fn apply_axes(x: &Tensor, kind: MatrixKind, out_h: usize, out_w: usize, skip_same: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!("cannot resample {h}x{w} to {out_h}x{out_w}")
    }
    let (dtype, device) = (x.dtype(), x.device());
    let mut y = x.clone();
    if !(skip_same && w == out_w) {
        let mw = matrix_t(kind, w, out_w, dtype, device)?;
        y = y.reshape((n * c * h, w))?.matmul(&mw)?.reshape((n, c, h, out_w))?;
    }
    if !(skip_same && h == out_h) {
        let cur_w = y.dim(3)?;
        let mh = matrix_t(kind, h, out_h, dtype, device)?;
        y = y
            .transpose(2, 3)?
            .contiguous()?
            .reshape((n * c * cur_w, h))?
            .matmul(&mh)?
            .reshape((n, c, cur_w, out_h))?
            .transpose(2, 3)?
            .contiguous()?;
    }
    Ok(y)
}

/// The notebook's `resample` (spec §1) of `x` `[N, C, h, w]` to `[N, C, out_h, out_w]`:
/// a Lanczos(2) antialiasing filter on each shrinking axis, then bicubic
/// interpolation with `align_corners=True`, as one `[out, in]` matrix per axis applied
/// by matmul. Resampling to the same size is the identity (no work is done).
pub fn resample(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    apply_axes(x, MatrixKind::Resample, out_h, out_w, true)
}

/// Cuts `crops` out of `img` `[1, 3, H, W]` and resamples each to `cut_size`:
/// `[n, 3, cut_size, cut_size]`, in the order of `crops`. Errors if there are no crops
/// or a crop is empty or reaches outside the image.
pub fn cut(img: &Tensor, crops: &[Crop], cut_size: usize) -> Result<Tensor> {
    let (_, _, h, w) = img.dims4()?;
    if crops.is_empty() {
        candle_core::bail!("cutouts: no crops")
    }
    for crop in crops {
        if crop.size == 0 || crop.x + crop.size > w || crop.y + crop.size > h {
            candle_core::bail!(
                "cutouts: crop of side {} at ({}, {}) lies outside the {w}x{h} image",
                crop.size,
                crop.x,
                crop.y
            )
        }
    }
    if img.device().is_cpu() && img.dtype() == DType::F32 && img.dim(0)? == 1 {
        // One op for the whole batch: the same matrices, read in place.
        let windows = crops
            .iter()
            .map(|c| {
                let matrix_t = (c.size != cut_size)
                    .then(|| matrix_t(MatrixKind::Resample, c.size, cut_size, DType::F32, img.device()))
                    .transpose()?;
                Ok(Window { y: c.y, x: c.x, size: c.size, matrix_t })
            })
            .collect::<Result<Vec<_>>>()?;
        return resample_windows(img, &windows, cut_size);
    }
    let mut parts = Vec::with_capacity(crops.len());
    for crop in crops {
        let piece = img.narrow(2, crop.y, crop.size)?.narrow(3, crop.x, crop.size)?;
        parts.push(resample(&piece, cut_size, cut_size)?);
    }
    Tensor::cat(&parts, 0)
}

/// Adaptive max pooling along `dim` (2 or 3) of a 4-D tensor, with PyTorch's windows.
/// Each window's maximum is taken with `gather` at its (first) argmax, so the gradient
/// goes to exactly one element per window, as in PyTorch.
fn adaptive_max_axis(x: &Tensor, dim: usize, n_out: usize) -> Result<Tensor> {
    let n_in = x.dim(dim)?;
    let windows: Vec<(usize, usize)> = (0..n_out).map(|o| pool_window(o, n_in, n_out)).collect();
    let k = windows.iter().map(|(s, e)| e - s).max().unwrap_or(1);
    let mut idx = Vec::with_capacity(n_out * k);
    for &(start, end) in &windows {
        for j in 0..k {
            // Short windows repeat their last element; the first argmax never lands there.
            let i = (start + j).min(end - 1);
            idx.push(u32::try_from(i).map_err(|_| candle_core::Error::Msg("image too large".into()))?);
        }
    }
    let idx = super::transfer::upload(idx, n_out * k, DType::U32, x.device())?;
    let picked = x.index_select(&idx, dim)?;
    let mut dims = picked.dims().to_vec();
    dims[dim] = n_out;
    dims.insert(dim + 1, k);
    let picked = picked.reshape(dims)?;
    let arg = picked.detach().argmax_keepdim(dim + 1)?;
    picked.gather(&arg, dim + 1)?.squeeze(dim + 1)
}

/// nerdyrodent's pooled cutouts: `(adaptive_avg_pool2d(img, S) + adaptive_max_pool2d(img, S)) / 2`
/// of `img` `[1, 3, H, W]`, repeated `cutn` times: `[cutn, 3, S, S]`.
pub fn pooled(img: &Tensor, cutn: usize, cut_size: usize) -> Result<Tensor> {
    let (_, _, h, w) = img.dims4()?;
    if cutn == 0 || cut_size == 0 || h == 0 || w == 0 {
        candle_core::bail!("pooled cutouts: {cutn} cutouts of side {cut_size} from a {w}x{h} image")
    }
    let avg = apply_axes(img, MatrixKind::AvgPool, cut_size, cut_size, false)?;
    let max = adaptive_max_axis(&adaptive_max_axis(img, 3, cut_size)?, 2, cut_size)?;
    let one = ((avg + max)? * 0.5)?;
    let copies = vec![one; cutn];
    Tensor::cat(&copies, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::check_gradient;

    fn ramp_tensor(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn weighted_sum(y: &Tensor, seed: u64) -> Result<Tensor> {
        let w = ramp_tensor(y.dims(), seed);
        (w - 0.5)?.mul(y)?.sum_all()
    }

    #[test]
    fn lanczos_kernel_is_normalised_and_symmetric() {
        for ratio in [0.9, 0.5, 0.3, 32.0 / 45.0] {
            let k = lanczos_kernel(ratio);
            assert_eq!(k.len() % 2, 1);
            assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for i in 0..k.len() {
                assert!((k[i] - k[k.len() - 1 - i]).abs() < 1e-12);
            }
        }
        // ratio 0.5: ramp is [-1.5, -1, ..., 1.5].
        assert_eq!(lanczos_kernel(0.5).len(), 7);
    }

    #[test]
    fn reflect_matches_torch_padding() {
        let n = 4;
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, n)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn resample_rows_sum_to_one() {
        for (a, b) in [(40, 32), (45, 32), (24, 32), (7, 3), (5, 1), (1, 4)] {
            let m = resample_matrix(a, b);
            for o in 0..b {
                let s: f64 = m[o * a..(o + 1) * a].iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{a}->{b} row {o}: {s}");
            }
        }
    }

    #[test]
    fn resample_to_same_size_is_identity() {
        let x = ramp_tensor(&[2, 3, 9, 7], 1);
        let y = resample(&x, 9, 7).unwrap();
        let d = (y - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert_eq!(d, 0.0);
        // The matrix itself is the identity too.
        let m = resample_matrix(6, 6);
        for i in 0..6 {
            for j in 0..6 {
                assert!((m[i * 6 + j] - f64::from(u8::from(i == j))).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn resample_upsampling_hits_corners() {
        // align_corners=True keeps the corner samples.
        let x = ramp_tensor(&[1, 1, 5, 4], 2);
        let y = resample(&x, 9, 11).unwrap();
        let xv: Vec<Vec<f64>> = x.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let yv: Vec<Vec<f64>> = y.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        assert!((xv[0][0] - yv[0][0]).abs() < 1e-12);
        assert!((xv[4][3] - yv[8][10]).abs() < 1e-12);
    }

    #[test]
    fn resample_gradient() {
        check_gradient("resample down", &ramp_tensor(&[1, 2, 9, 11], 3), |x| weighted_sum(&resample(x, 5, 6)?, 4));
        check_gradient("resample up", &ramp_tensor(&[1, 2, 4, 3], 5), |x| weighted_sum(&resample(x, 7, 6)?, 6));
        check_gradient("resample mixed", &ramp_tensor(&[2, 1, 8, 3], 7), |x| weighted_sum(&resample(x, 5, 5)?, 8));
    }

    #[test]
    fn cut_matches_manual_crop_and_checks_bounds() {
        let img = ramp_tensor(&[1, 3, 10, 12], 9);
        let crops = [Crop { size: 6, x: 5, y: 1 }, Crop { size: 4, x: 0, y: 6 }, Crop { size: 10, x: 2, y: 0 }];
        let out = cut(&img, &crops, 4).unwrap();
        assert_eq!(out.dims(), &[3, 3, 4, 4]);
        let manual = img.narrow(2, 6, 4).unwrap().narrow(3, 0, 4).unwrap();
        let got = out.narrow(0, 1, 1).unwrap();
        let d = (got - manual).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert_eq!(d, 0.0);
        assert!(cut(&img, &[Crop { size: 6, x: 7, y: 0 }], 4).is_err());
        assert!(cut(&img, &[Crop { size: 4, x: 0, y: 7 }], 4).is_err());
        assert!(cut(&img, &[Crop { size: 0, x: 0, y: 0 }], 4).is_err());
        assert!(cut(&img, &[], 4).is_err());
    }

    #[test]
    fn fused_cut_matches_resampling_each_crop_forward_and_gradient() -> Result<()> {
        // f32 on the CPU takes `ops::windows`; the reference resamples each narrowed crop
        // with tensor ops and concatenates. Sides below, at and above the cut size.
        let dev = Device::Cpu;
        let img = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 3, 40, 50), &dev)?)?;
        let crops = [
            Crop { size: 24, x: 3, y: 5 },
            Crop { size: 16, x: 30, y: 20 },
            Crop { size: 40, x: 10, y: 0 },
            Crop { size: 9, x: 41, y: 31 },
            Crop { size: 24, x: 4, y: 6 },
        ];
        let ours = cut(img.as_tensor(), &crops, 16)?;
        let parts = crops
            .iter()
            .map(|c| resample(&img.as_tensor().narrow(2, c.y, c.size)?.narrow(3, c.x, c.size)?, 16, 16))
            .collect::<Result<Vec<_>>>()?;
        let theirs = Tensor::cat(&parts, 0)?;
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let upstream = Tensor::randn(0f32, 1.0, ours.shape(), &dev)?;
        let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
        let (Some(a), Some(e)) = (g_ours.get(img.as_tensor()), g_theirs.get(img.as_tensor())) else {
            candle_core::bail!("no gradient for the image")
        };
        let diff = (a - e)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "gradient differs by {diff}");
        Ok(())
    }

    #[test]
    fn cut_gradient() {
        let crops = [Crop { size: 7, x: 1, y: 2 }, Crop { size: 4, x: 5, y: 0 }, Crop { size: 9, x: 0, y: 0 }];
        check_gradient("cut", &ramp_tensor(&[1, 3, 9, 10], 10), |x| weighted_sum(&cut(x, &crops, 5)?, 11));
    }

    #[test]
    fn pooled_values_and_gradient() {
        // Hand-checked: a 1x1x3x3 image pooled to 2x2 (windows [0,2) and [1,3)).
        let v: Vec<f64> = vec![1.0, 2.0, 3.0, 4.0, 9.0, 6.0, 7.0, 8.0, 5.0];
        let img = Tensor::from_vec(v, (1, 1, 3, 3), &Device::Cpu).unwrap();
        let out = pooled(&img, 2, 2).unwrap();
        assert_eq!(out.dims(), &[2, 1, 2, 2]);
        let got: Vec<f64> = out.narrow(0, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let avg = [4.0, 5.0, 7.0, 7.0];
        let max = [9.0, 9.0, 9.0, 9.0];
        for i in 0..4 {
            assert!((got[i] - (avg[i] + max[i]) / 2.0).abs() < 1e-12, "{i}: {}", got[i]);
        }
        check_gradient("pooled down", &ramp_tensor(&[1, 3, 11, 9], 12), |x| weighted_sum(&pooled(x, 2, 4)?, 13));
        check_gradient("pooled up", &ramp_tensor(&[1, 2, 3, 5], 14), |x| weighted_sum(&pooled(x, 1, 7)?, 15));
    }

    #[test]
    fn pooled_max_ties_take_one_element() {
        let img = Tensor::ones((1, 1, 4, 4), DType::F64, &Device::Cpu).unwrap();
        let var = candle_core::Var::from_tensor(&img).unwrap();
        let out = adaptive_max_axis(&adaptive_max_axis(var.as_tensor(), 3, 2).unwrap(), 2, 2).unwrap();
        let g = out.sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = g.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!((g.iter().sum::<f64>() - 4.0).abs() < 1e-12);
        assert_eq!(g.iter().filter(|&&v| v != 0.0).count(), 4);
        assert_eq!(g[0], 1.0);
    }

    #[test]
    fn random_crops_inside_and_sized() {
        let mut rng = Rng::new(3);
        for &(w, h, cs, pow) in &[(64, 48, 16, 1.0), (30, 90, 32, 0.5), (200, 200, 224, 1.0), (50, 40, 8, 2.0)] {
            let max_size = usize::min(w, h);
            let min_size = max_size.min(cs);
            let crops = random_crops(&mut rng, 200, cs, pow, w, h);
            assert_eq!(crops.len(), 200);
            for c in &crops {
                assert!(c.size >= min_size && c.size <= max_size, "{c:?}");
                assert!(c.x + c.size <= w && c.y + c.size <= h, "{c:?}");
            }
            if min_size < max_size {
                assert!(crops.iter().any(|c| c.size != crops[0].size));
            }
        }
        let a = random_crops(&mut Rng::new(11), 16, 24, 1.0, 100, 80);
        let b = random_crops(&mut Rng::new(11), 16, 24, 1.0, 100, 80);
        assert_eq!(a, b);
        assert_ne!(a, random_crops(&mut Rng::new(12), 16, 24, 1.0, 100, 80));
    }

    #[test]
    fn cache_reuses_and_matches_dtype() {
        let x = ramp_tensor(&[1, 1, 13, 13], 20).to_dtype(DType::F32).unwrap();
        let a = resample(&x, 5, 5).unwrap();
        let b = resample(&x, 5, 5).unwrap();
        assert_eq!(a.dtype(), DType::F32);
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0);
    }

    #[test]
    fn serde_forms() {
        let c = Crop { size: 3, x: 1, y: 2 };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"size":3,"x":1,"y":2}"#);
    }
}
