//! Per-cutout augmentations (spec §3): flip, affine, perspective, colour jitter,
//! erasing, blur and noise, each with explicit parameters drawn on the host from our
//! [`Rng`], so a run repeats exactly across devices and a test can give them.
//!
//! Everything is differentiable with respect to the cutouts:
//! - flip is an `index_select` with reversed column indices;
//! - affine and perspective compute each output pixel's source location on the host in
//!   f64 and turn it into the four bilinear taps of
//!   `F.grid_sample(mode='bilinear', padding_mode='border', align_corners=False)`, applied
//!   as a sparse linear map (`gather` on the flattened pixels and a weighted sum);
//! - jitter is per-pixel arithmetic, a per-cutout mean and a 3×3 colour matmul, with
//!   the final clamp's gradient passed where `0 ≤ x ≤ 1` (as `torch.clamp`);
//! - erasing is a blend with a host-built mask;
//! - blur is two matmuls with host-built Gaussian matrices, `B_H · X · B_Wᵀ`, with the
//!   edges reflected as torchvision's `gaussian_blur` reflects them.
//!
//! Each augmentation is applied, batched, to just the cutouts that have it; the others
//! pass through untouched.
//!
//! Random ranges ([`random_params`]), after EleutherAI/vqgan-clip's kornia pipeline:
//! - flip: p = 0.5;
//! - affine: p = 0.8, angle U(−30°, 30°), translate U(−0.1, 0.1) of the side on each
//!   axis, scale 1, shear 0 (kornia's defaults there);
//! - perspective: p = 0.4, distortion 0.2: each corner's displacement is U(−0.1, 0.1)
//!   of the side on each axis (kornia only pulls corners inward; this is symmetric);
//! - jitter: p = 0.7, brightness, contrast, saturation and hue each U(−0.01, 0.01)
//!   (EleutherAI set hue and saturation to 0.01 and left brightness and contrast at
//!   kornia's 0; we give them the same small range);
//! - erase: p = 0.7, area U(0.1, 0.4) of the cutout, aspect ratio `h/w` log-uniform in
//!   (0.3, 3.3), sides rounded and clamped to `[1, S]` (no retries), position uniform
//!   inside the cutout, fill value U[0, 1) (kornia fills with 0);
//! - blur (ours, not the notebook's): p = 0.5, sigma U(0.5, 2.5) pixels of a 64-pixel
//!   cutout, scaled with the side; kernel `2·⌈3σ⌉ + 1`. A blurred view cannot be pleased
//!   by fine detail, so its gradient asks for broad regions of colour.
//!
//! Noise is separate ([`random_noise`], [`add_noise`]): the notebook adds
//! `fac_i · N(0, 1)` with `fac_i ~ U[0, noise_fac)` after the augmentations.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::rng::Rng;
use super::transfer::upload;
use crate::settings::Augment;

/// Affine parameters: rotation and shear in degrees, translation in fractions of the side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    pub angle_deg: f64,
    pub translate_x: f64,
    pub translate_y: f64,
    pub scale: f64,
    pub shear_deg: f64,
}

/// Colour jitter factors (each 0 = unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Jitter {
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
}

/// An erased rectangle in cutout pixels, filled with `value`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Erase {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
    pub value: f64,
}

/// One cutout's augmentation parameters; `None` / `false` = not applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    pub flip: bool,
    pub affine: Option<Affine>,
    /// Corner displacements `[dx, dy]` (fractions of the side) for the corners
    /// top-left, top-right, bottom-right, bottom-left.
    pub perspective: Option<[[f64; 2]; 4]>,
    pub jitter: Option<Jitter>,
    pub erase: Option<Erase>,
    /// Gaussian blur's standard deviation in cutout pixels.
    #[serde(default)]
    pub blur: Option<f64>,
}

impl AugmentParams {
    /// The same augmentation for a cutout of side `to` instead of `from`: the erased
    /// rectangle and the blur, given in cutout pixels, are scaled; the rest is in
    /// fractions of the side already.
    #[must_use]
    pub fn rescaled(&self, from: usize, to: usize) -> Self {
        if from == to || from == 0 {
            return self.clone();
        }
        #[expect(clippy::cast_precision_loss, reason = "cutout sides are small")]
        let k = to as f64 / from as f64;
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "rounded, non-negative, small")]
        let px = |v: usize| ((v as f64 * k).round() as usize).min(to);
        let erase = self.erase.map(|e| {
            let (x, y) = (px(e.x), px(e.y));
            Erase { x, y, w: px(e.w).min(to - x.min(to)), h: px(e.h).min(to - y.min(to)), value: e.value }
        });
        Self { erase, blur: self.blur.map(|b| b * k), ..self.clone() }
    }

    /// True when applying these parameters changes nothing.
    pub fn is_identity(&self) -> bool {
        !self.flip
            && self.affine.is_none()
            && self.perspective.is_none()
            && self.jitter.is_none()
            && self.erase.is_none()
            && self.blur.is_none()
    }
}

#[expect(clippy::cast_precision_loss, reason = "image sides are far below 2^52")]
fn as_f64(n: usize) -> f64 {
    n as f64
}

/// Draws one cutout's parameters for the `enabled` augmentations (see the module docs
/// for the ranges). Draw order, for each enabled one in [`Augment::ALL`] order: the
/// apply/skip coin, then its parameters. `Noise` draws nothing here.
pub fn random_params(enabled: &[Augment], cut_size: usize, rng: &mut Rng) -> AugmentParams {
    let on = |a: Augment| enabled.contains(&a);
    let mut p = AugmentParams::default();
    if on(Augment::Flip) {
        p.flip = rng.chance(0.5);
    }
    if on(Augment::Affine) && rng.chance(0.8) {
        p.affine = Some(Affine {
            angle_deg: rng.range(-30.0, 30.0),
            translate_x: rng.range(-0.1, 0.1),
            translate_y: rng.range(-0.1, 0.1),
            scale: 1.0,
            shear_deg: 0.0,
        });
    }
    if on(Augment::Perspective) && rng.chance(0.4) {
        let half = 0.2 / 2.0;
        let mut corners = [[0.0; 2]; 4];
        for c in &mut corners {
            for v in c.iter_mut() {
                *v = rng.range(-half, half);
            }
        }
        p.perspective = Some(corners);
    }
    if on(Augment::Jitter) && rng.chance(0.7) {
        p.jitter = Some(Jitter {
            brightness: rng.range(-0.01, 0.01),
            contrast: rng.range(-0.01, 0.01),
            saturation: rng.range(-0.01, 0.01),
            hue: rng.range(-0.01, 0.01),
        });
    }
    if on(Augment::Erase) && rng.chance(0.7) {
        let s = cut_size.max(1);
        let area = rng.range(0.1, 0.4) * as_f64(s * s);
        let ratio = rng.range(0.3f64.ln(), 3.3f64.ln()).exp();
        let side = |v: f64| -> usize {
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "rounded, positive, clamped")]
            let n = v.round().max(1.0) as usize;
            n.min(s)
        };
        let h = side((area * ratio).sqrt());
        let w = side((area / ratio).sqrt());
        let x = rng.below(s - w + 1);
        let y = rng.below(s - h + 1);
        p.erase = Some(Erase { x, y, w, h, value: rng.uniform() });
    }
    if on(Augment::Blur) && rng.chance(0.5) {
        // Sigma in cutout pixels, for a 64-pixel cutout 0.5 to 2.5; scaled with the side.
        p.blur = Some(rng.range(0.5, 2.5) * as_f64(cut_size.max(1)) / 64.0);
    }
    p
}

// ---------------------------------------------------------------------------------------
// Applying.

/// Applies `f` to the cutouts `subset` (sorted, distinct indices into `batch`) and puts
/// the results back in place; the other cutouts pass through.
fn on_subset(batch: &Tensor, subset: &[usize], f: impl FnOnce(&Tensor, &[usize]) -> Result<Tensor>) -> Result<Tensor> {
    let n = batch.dim(0)?;
    if subset.is_empty() {
        return Ok(batch.clone());
    }
    if subset.len() == n {
        return f(batch, subset);
    }
    let to_u32 = |i: usize| u32::try_from(i).map_err(|_| candle_core::Error::Msg("batch too large".into()));
    let ids = subset.iter().map(|&i| to_u32(i)).collect::<Result<Vec<_>>>()?;
    let sub = batch.index_select(&upload(ids, subset.len(), DType::U32, batch.device())?, 0)?;
    let new = f(&sub, subset)?;
    let mut map = (0..n).map(to_u32).collect::<Result<Vec<_>>>()?;
    for (j, &i) in subset.iter().enumerate() {
        map[i] = to_u32(n + j)?;
    }
    Tensor::cat(&[batch, &new], 0)?.index_select(&upload(map, n, DType::U32, batch.device())?, 0)
}

/// A per-cutout `[m, 1, 1, 1]` tensor from host values.
fn per_cutout(values: Vec<f64>, dtype: DType, device: &Device) -> Result<Tensor> {
    let m = values.len();
    upload(values, (m, 1, 1, 1), dtype, device)
}

/// A source map as a homography `[h0..h8]` (row-major 3×3): the output pixel at
/// normalised `(u, v)` samples the input at
/// `((h0 u + h1 v + h2) / z, (h3 u + h4 v + h5) / z)`, `z = h6 u + h7 v + h8`.
type Homography = [f64; 9];

/// The normalised pixel centres `(u, v)` of an `h`×`w` image as two `[1, h·w]` f64
/// tensors on `device`, built once per size and device (the warp's only upload of them).
fn centres(h: usize, w: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    type Key = (usize, usize, candle_core::DeviceLocation);
    static CACHE: OnceLock<Mutex<HashMap<Key, (Tensor, Tensor)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (h, w, device.location());
    if let Some((u, v)) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        // Several `Device`s can share a location; tensors only mix within one.
        if u.device().same_device(device) {
            return Ok((u.clone(), v.clone()));
        }
    }
    let us: Vec<f64> = (0..h).flat_map(|_| (0..w).map(|j| (2.0 * as_f64(j) + 1.0) / as_f64(w) - 1.0)).collect();
    let vs: Vec<f64> = (0..h).flat_map(|i| std::iter::repeat_n((2.0 * as_f64(i) + 1.0) / as_f64(h) - 1.0, w)).collect();
    let u = upload(us, (1, h * w), DType::F64, device)?;
    let v = upload(vs, (1, h * w), DType::F64, device)?;
    let mut guard = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.len() >= 64 {
        guard.clear();
    }
    guard.insert(key, (u.clone(), v.clone()));
    Ok((u, v))
}

/// Bilinear taps, as `grid_sample(bilinear, border, align_corners=False)`, of each
/// homography over an `h`×`w` image, computed in f64 where the image lives (on a GPU,
/// only the `m × 9` homographies travel): flat pixel indices `[m, 4·h·w]` and weights
/// `[m, 4·h·w]`, tap-major (tap `k` of output pixel `p` at `k·h·w + p`).
fn taps(hs: &[Homography], h: usize, w: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let m = hs.len();
    let (u, v) = centres(h, w, device)?;
    let hm = upload(hs.iter().flatten().copied().collect::<Vec<f64>>(), (m, 9), DType::F64, device)?;
    let col = |k: usize| hm.narrow(1, k, 1);
    // h_a u + h_b v + h_c, in that order (as the host form computes it).
    let lin = |a: usize, b: usize, c: usize| -> Result<Tensor> {
        col(a)?.broadcast_mul(&u)?.broadcast_add(&col(b)?.broadcast_mul(&v)?)?.broadcast_add(&col(c)?)
    };
    let z = lin(6, 7, 8)?;
    let (gx, gy) = (lin(0, 1, 2)?.div(&z)?, lin(3, 4, 5)?.div(&z)?);
    // grid_sample's unnormalisation; NaN (0/0 in a degenerate warp) reads pixel 0.
    let unnormalise = |g: &Tensor, size: usize| -> Result<Tensor> {
        let p = ((((g + 1.0)? * as_f64(size))? - 1.0)? / 2.0)?;
        let p = p.eq(&p)?.where_cond(&p, &p.zeros_like()?)?;
        p.clamp(0.0, as_f64(size - 1))
    };
    let (ix, iy) = (unnormalise(&gx, w)?, unnormalise(&gy, h)?);
    let (fx, fy) = (ix.floor()?, iy.floor()?);
    let (tx, ty) = ((&ix - &fx)?, (&iy - &fy)?);
    let (x1, y1) = ((&fx + 1.0)?.clamp(0.0, as_f64(w - 1))?, (&fy + 1.0)?.clamp(0.0, as_f64(h - 1))?);
    let flat = |y: &Tensor, x: &Tensor| -> Result<Tensor> { ((y * as_f64(w))? + x)?.to_dtype(DType::U32) };
    let (sx, sy) = ((1.0 - &tx)?, (1.0 - &ty)?);
    let idx = Tensor::cat(&[flat(&fy, &fx)?, flat(&fy, &x1)?, flat(&y1, &fx)?, flat(&y1, &x1)?], 1)?;
    let wts = Tensor::cat(&[(&sy * &sx)?, (&sy * &tx)?, (&ty * &sx)?, (&ty * &tx)?], 1)?;
    Ok((idx, wts))
}

/// Resamples each cutout of `x` `[m, C, H, W]` through its own homography (normalised
/// output coords → normalised input coords) with bilinear border sampling: a `gather`
/// of 4 taps per output pixel along the flattened pixels (indices shared by the
/// channels), weighted and summed.
fn warp(x: &Tensor, hs: &[Homography]) -> Result<Tensor> {
    let (m, c, h, w) = x.dims4()?;
    let hw = h * w;
    if hw == 0 || u32::try_from(hw * 4).is_err() || hs.len() != m {
        candle_core::bail!("warp: {} maps for {m} cutouts of {h}x{w}", hs.len())
    }
    let (idx, wts) = taps(hs, h, w, x.device())?;
    let idx = idx.reshape((m, 1, hw * 4))?.broadcast_as((m, c, hw * 4))?.contiguous()?;
    let wts = wts.to_dtype(x.dtype())?.reshape((m, 1, 4, hw))?;
    let taps = x.reshape((m, c, hw))?.gather(&idx, 2)?.reshape((m, c, 4, hw))?.broadcast_mul(&wts)?;
    // Four strided adds are much faster on the CPU than a sum over the tap axis.
    let tap = |k: usize| taps.narrow(2, k, 1);
    ((tap(0)? + tap(1)?)? + (tap(2)? + tap(3)?)?)?.reshape((m, c, h, w))
}

/// The source map of an affine transform, `u ↦ A⁻¹(u − t)`, as a homography.
fn affine_h(a: &Affine) -> Result<Homography> {
    let (sin, cos) = a.angle_deg.to_radians().sin_cos();
    let tan = a.shear_deg.to_radians().tan();
    // A = scale · R · Sh = scale · [[cos, cos·tan − sin], [sin, sin·tan + cos]]
    let (m00, m01) = (a.scale * cos, a.scale * (cos * tan - sin));
    let (m10, m11) = (a.scale * sin, a.scale * (sin * tan + cos));
    let det = m00 * m11 - m01 * m10;
    if !det.is_finite() || det.abs() < 1e-12 {
        candle_core::bail!("affine augmentation is singular: {a:?}")
    }
    let (i00, i01, i10, i11) = (m11 / det, -m01 / det, -m10 / det, m00 / det);
    let (tx, ty) = (2.0 * a.translate_x, 2.0 * a.translate_y);
    Ok([i00, i01, -(i00 * tx + i01 * ty), i10, i11, -(i10 * tx + i11 * ty), 0.0, 0.0, 1.0])
}

/// Solves `a · x = b` (8×8) by Gaussian elimination with partial pivoting.
fn solve8(mut a: [[f64; 8]; 8], mut b: [f64; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (pivot_row, pivot_b) = (a[col], b[col]);
        for (row, rhs) in a.iter_mut().zip(b.iter_mut()).skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (v, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
            *rhs -= f * pivot_b;
        }
    }
    let mut x = [0.0; 8];
    for row in (0..8).rev() {
        let s: f64 = (row + 1..8).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// The homography `[h0..h7, 1]` mapping each `from[k]` to `to[k]` (the DLT system).
fn homography(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Option<[f64; 9]> {
    let mut a = [[0.0; 8]; 8];
    let mut b = [0.0; 8];
    for (k, (&[x, y], &[tx, ty])) in from.iter().zip(to).enumerate() {
        a[2 * k] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * tx, -y * tx];
        b[2 * k] = tx;
        a[2 * k + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * ty, -y * ty];
        b[2 * k + 1] = ty;
    }
    let h = solve8(a, b)?;
    Some([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0])
}

/// The source map of a perspective warp as a homography: from the displaced
/// (destination) corners to the original ones.
fn perspective_h(d: &[[f64; 2]; 4]) -> Result<Homography> {
    let corners = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
    let mut dst = corners;
    for (p, dk) in dst.iter_mut().zip(d) {
        p[0] += 2.0 * dk[0];
        p[1] += 2.0 * dk[1];
    }
    let Some(h) = homography(&dst, &corners) else {
        candle_core::bail!("perspective augmentation is degenerate: {d:?}")
    };
    Ok(h)
}

/// RGB → YIQ.
const YIQ: [[f64; 3]; 3] = [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]];

fn mat3_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

fn mat3_inv(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let c = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let det: f64 = (0..3).map(|j| m[0][j] * c(0, j)).sum();
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = c(j, i) / det;
        }
    }
    out
}

/// The RGB matrix of a hue rotation by `2π·hue` in YIQ: `T⁻¹ · rot · T`.
fn hue_matrix(hue: f64) -> [[f64; 3]; 3] {
    let (s, c) = (std::f64::consts::TAU * hue).sin_cos();
    let rot = [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]];
    mat3_mul(&mat3_inv(&YIQ), &mat3_mul(&rot, &YIQ))
}

/// Luma `0.299 R + 0.587 G + 0.114 B` of `x` `[m, 3, H, W]`: `[m, 1, H, W]`.
fn gray(x: &Tensor) -> Result<Tensor> {
    // Three scaled channels summed: constants need no tensor (nothing to upload).
    let channel = |i: usize| x.narrow(1, i, 1)?.affine(YIQ[0][i], 0.0);
    (channel(0)? + channel(1)?)? + channel(2)?
}

/// Colour jitter (spec §3.4) on `x` `[m, 3, H, W]`, one [`Jitter`] per cutout.
fn jitter(x: &Tensor, params: &[Jitter]) -> Result<Tensor> {
    let (m, c, h, w) = x.dims4()?;
    if c != 3 {
        candle_core::bail!("colour jitter needs 3 channels, got {c}")
    }
    let (dtype, device) = (x.dtype(), x.device());
    let col = |f: &dyn Fn(&Jitter) -> f64| per_cutout(params.iter().map(f).collect(), dtype, device);
    let x = x.broadcast_mul(&col(&|j| 1.0 + j.brightness)?)?;
    let mean = gray(&x)?.reshape((m, h * w))?.mean_keepdim(1)?.reshape((m, 1, 1, 1))?;
    let x = x.broadcast_sub(&mean)?.broadcast_mul(&col(&|j| 1.0 + j.contrast)?)?.broadcast_add(&mean)?;
    let g = gray(&x)?;
    let x = x.broadcast_sub(&g)?.broadcast_mul(&col(&|j| 1.0 + j.saturation)?)?.broadcast_add(&g)?;
    let mats: Vec<f64> = params.iter().flat_map(|j| hue_matrix(j.hue).into_iter().flatten()).collect();
    let mats = upload(mats, (m, 3, 3), dtype, device)?;
    let x = mats.matmul(&x.reshape((m, 3, h * w))?)?.reshape((m, 3, h, w))?;
    clamp_unit(&x)
}

/// `clamp(x, 0, 1)` with `torch.clamp`'s gradient: passed where `0 ≤ x ≤ 1`, else 0.
fn clamp_unit(x: &Tensor) -> Result<Tensor> {
    let d = x.detach();
    let inside = d.ge(0.0)?.mul(&d.le(1.0)?)?;
    inside.where_cond(x, &d.clamp(0.0, 1.0)?)
}

/// Random erasing (spec §3.5) on `x` `[m, C, H, W]`; rectangles are clipped to the cutout.
fn erase(x: &Tensor, params: &[Erase]) -> Result<Tensor> {
    let (m, _, h, w) = x.dims4()?;
    let mut mask = vec![0.0f64; m * h * w];
    for (k, e) in params.iter().enumerate() {
        for row in e.y.min(h)..(e.y + e.h).min(h) {
            let start = k * h * w + row * w;
            for v in &mut mask[start + e.x.min(w)..start + (e.x + e.w).min(w)] {
                *v = 1.0;
            }
        }
    }
    let (dtype, device) = (x.dtype(), x.device());
    let mask = upload(mask, (m, 1, h, w), dtype, device)?;
    let fill = mask.broadcast_mul(&per_cutout(params.iter().map(|e| e.value).collect(), dtype, device)?)?;
    x.broadcast_mul(&(1.0 - &mask)?)?.broadcast_add(&fill)
}

/// The blur kernel's radius for `sigma`: `⌈3σ⌉`, at least 1 and below `side` (the
/// reflection needs a pixel to reflect from).
fn blur_radius(sigma: f64, side: usize) -> usize {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "finite, clamped below")]
    let r = (3.0 * sigma).ceil().clamp(1.0, 1e6) as usize;
    r.min(side.saturating_sub(1)).max(usize::from(side > 1))
}

/// The `n`×`n` matrix of a 1-D Gaussian blur with reflected edges, as
/// `torchvision.transforms.functional.gaussian_blur` with kernel size `2·radius + 1`:
/// row `i` holds the weights output pixel `i` gives each input pixel.
fn blur_matrix(n: usize, sigma: f64) -> Vec<f64> {
    let r = blur_radius(sigma, n);
    let taps: Vec<f64> = (0..=2 * r).map(|k| (-0.5 * ((as_f64(k) - as_f64(r)) / sigma).powi(2)).exp()).collect();
    let total: f64 = taps.iter().sum();
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for (k, t) in taps.iter().enumerate() {
            // Source index i + k − r, reflected about 0 and n − 1 (no edge repeat).
            let mut j = i as i64 + k as i64 - r as i64;
            let last = n as i64 - 1;
            if j < 0 {
                j = -j;
            }
            if j > last {
                j = 2 * last - j;
            }
            let j = usize::try_from(j.clamp(0, last)).unwrap_or(0);
            m[i * n + j] += t / total;
        }
    }
    m
}

/// Gaussian blur of `x` `[m, C, H, W]`, one sigma (pixels) per cutout: `B_H · X · B_Wᵀ`.
fn blur(x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
    let (m, _, h, w) = x.dims4()?;
    if sigmas.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        candle_core::bail!("blur augmentation needs positive sigmas, got {sigmas:?}")
    }
    let (dtype, device) = (x.dtype(), x.device());
    let mats = |n: usize| -> Result<Tensor> {
        let data: Vec<f64> = sigmas.iter().flat_map(|&s| blur_matrix(n, s)).collect();
        upload(data, (m, 1, n, n), dtype, device)
    };
    mats(h)?.broadcast_matmul(x)?.broadcast_matmul(&mats(w)?.t()?)
}

/// Applies each cutout's parameters, in the spec's order (flip, affine, perspective,
/// jitter, erase, blur), to `batch` `[n, 3, S, S]`; `params.len()` must be `n`. Cutouts with
/// nothing to apply come out unchanged (and cost nothing). Errors on a singular affine
/// or a degenerate perspective.
pub fn apply(batch: &Tensor, params: &[AugmentParams]) -> Result<Tensor> {
    let (n, _, _, w) = batch.dims4()?;
    if params.len() != n {
        candle_core::bail!("augment: {} parameter sets for {n} cutouts", params.len())
    }
    let which = |f: &dyn Fn(&AugmentParams) -> bool| -> Vec<usize> { (0..n).filter(|&i| f(&params[i])).collect() };
    let mut x = batch.clone();

    x = on_subset(&x, &which(&|p| p.flip), |sub, _| {
        let rev = (0..w).rev().map(|i| u32::try_from(i).unwrap_or(0)).collect::<Vec<_>>();
        sub.index_select(&upload(rev, w, DType::U32, sub.device())?, 3)
    })?;

    x = on_subset(&x, &which(&|p| p.affine.is_some()), |sub, ids| {
        let hs = ids.iter().filter_map(|&i| params[i].affine.as_ref()).map(affine_h).collect::<Result<Vec<_>>>()?;
        warp(sub, &hs)
    })?;

    x = on_subset(&x, &which(&|p| p.perspective.is_some()), |sub, ids| {
        let hs = ids
            .iter()
            .filter_map(|&i| params[i].perspective.as_ref())
            .map(perspective_h)
            .collect::<Result<Vec<_>>>()?;
        warp(sub, &hs)
    })?;

    x = on_subset(&x, &which(&|p| p.jitter.is_some()), |sub, ids| {
        let js: Vec<Jitter> = ids.iter().filter_map(|&i| params[i].jitter).collect();
        jitter(sub, &js)
    })?;

    x = on_subset(&x, &which(&|p| p.erase.is_some()), |sub, ids| {
        let es: Vec<Erase> = ids.iter().filter_map(|&i| params[i].erase).collect();
        erase(sub, &es)
    })?;

    x = on_subset(&x, &which(&|p| p.blur.is_some()), |sub, ids| {
        let sigmas: Vec<f64> = ids.iter().filter_map(|&i| params[i].blur).collect();
        blur(sub, &sigmas)
    })?;
    Ok(x)
}

/// The notebook's noise: `batch + fac_i · noise` with `facs` `[n]` and `noise` the
/// `n·C·H·W` values of a tensor shaped like `batch`.
pub fn add_noise(batch: &Tensor, facs: &[f32], noise: &[f32]) -> Result<Tensor> {
    let n = batch.dim(0)?;
    if facs.len() != n || noise.len() != batch.elem_count() {
        candle_core::bail!(
            "noise: {} factors and {} values for a batch of shape {:?}",
            facs.len(),
            noise.len(),
            batch.dims()
        )
    }
    let (dtype, device) = (batch.dtype(), batch.device());
    let facs = upload(facs.to_vec(), (n, 1, 1, 1), dtype, device)?;
    let noise = upload(noise.to_vec(), batch.shape(), dtype, device)?;
    batch + noise.broadcast_mul(&facs)?
}

/// The notebook's noise drawn where `batch` lives, by the device's own generator seeded
/// with `seed`: factors `U[0, fac)` per cutout and standard normals, nothing from the
/// host. For GPUs (candle's CPU generator cannot be seeded; the CPU uses [`add_noise`]).
pub fn add_device_noise(batch: &Tensor, seed: u64, fac: f64) -> Result<Tensor> {
    let device = batch.device();
    device.set_seed(seed)?;
    let n = batch.dim(0)?;
    #[expect(clippy::cast_possible_truncation, reason = "noise in f32")]
    let facs = Tensor::rand(0f32, fac as f32, (n, 1, 1, 1), device)?.to_dtype(batch.dtype())?;
    let noise = Tensor::randn(0f32, 1f32, batch.shape(), device)?.to_dtype(batch.dtype())?;
    batch + noise.broadcast_mul(&facs)?
}

/// Draws the noise for `n` cutouts of side `cut_size`: factors `U[0, noise_fac)` (all
/// `n` first), then `n·3·S·S` standard normals.
pub fn random_noise(n: usize, cut_size: usize, noise_fac: f64, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
    #[expect(clippy::cast_possible_truncation, reason = "noise in f32")]
    let facs = (0..n).map(|_| rng.range(0.0, noise_fac) as f32).collect();
    let noise = rng.normals_f32(n * 3 * cut_size * cut_size);
    (facs, noise)
}

#[cfg(test)]
mod tests;
