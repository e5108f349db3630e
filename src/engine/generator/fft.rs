//! The Fourier drawer: Lucid's `fft_image` with the colour decorrelation, in the form
//! pixray's `fft` drawer takes from aphantasia. The parameters are the half spectrum of
//! each decorrelated colour channel, `[1, 3, H, W/2+1, 2]` (real and imaginary parts, as
//! `view_as_real`), started at `0.01 · N(0, 1)`. The image is
//!
//! ```text
//! x   = irfft2(scale · params, norm = "ortho")     scale = √(HW) / max(|f|, 4/max(H, W))^decay
//! x   = contrast · x / std(x)                      (unbiased std over the whole image)
//! rgb = sigmoid(M · x)                             M: Lucid's colour matrix, its luminance
//!                                                  column divided by `colors`, normalised
//! ```
//!
//! candle has no FFT, so the inverse transform is two products with constant cosine and
//! sine matrices (a complex inverse DFT along the rows, then the half-spectrum
//! real inverse along the columns, whose DC and Nyquist bins have no imaginary part, as
//! in `torch.fft.irfftn`). Matched against PyTorch, values and gradients
//! (`tests/generators.rs`).

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor};

use super::{constant, noise_image, Generator};
use crate::engine::error::Result;
use crate::engine::rng::Rng;
use crate::engine::transfer;
use crate::settings::{FftSettings, RunSettings};

/// Lucid's square root of the colour correlation (ImageNet's, from its SVD).
const COLOR_CORRELATION_SVD_SQRT: [[f32; 3]; 3] = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

#[derive(Debug)]
pub struct FftGenerator {
    width: usize,
    height: usize,
    settings: FftSettings,
    /// Each frequency's scale, `[H, W/2+1]`.
    scale: Tensor,
    scale_host: Vec<f64>,
    /// `cos` and `sin` of `2π·u·h/H`, `[H, H]`: the inverse DFT along the rows.
    cos_rows: Tensor,
    sin_rows: Tensor,
    /// `c_v·cos` and `c_v·sin` of `2π·v·w/W`, `[W/2+1, W]`: the half spectrum's real
    /// inverse along the columns (`c_v` is 1 for the DC and Nyquist bins, 2 otherwise).
    cos_cols: Tensor,
    sin_cols: Tensor,
    /// The colour matrix, `[3, 3]`, and its inverse (for encoding).
    colour: Tensor,
    colour_inverse: [[f64; 3]; 3],
    device: Device,
}

/// `numpy.fft.fftfreq(n)[k]`: the signed frequency of bin `k` (the signed bin over `n`,
/// as numpy divides it).
fn fftfreq(k: usize, n: usize) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "canvas sides are far below 2^52")]
    let (kf, nf) = (k as f64, n as f64);
    if k < n.div_ceil(2) {
        kf / nf
    } else {
        (kf - nf) / nf
    }
}

/// The half spectrum's width.
pub fn half_width(width: usize) -> usize {
    width / 2 + 1
}

/// `cos(2π·(a·b mod n)/n)` and the sine, reduced exactly before the float division.
fn twiddle(a: usize, b: usize, n: usize) -> (f64, f64) {
    #[expect(clippy::cast_precision_loss, reason = "below 2^52")]
    let angle = 2.0 * PI * ((a * b) % n) as f64 / n as f64;
    (angle.cos(), angle.sin())
}

/// Lucid's colour matrix for `colors`: the luminance column divided by it, then the
/// whole divided by its largest column norm (in f32, as numpy does it there).
pub fn colour_matrix(colors: f64) -> [[f32; 3]; 3] {
    let mut m = COLOR_CORRELATION_SVD_SQRT;
    #[expect(clippy::cast_possible_truncation, reason = "numpy divides the f32 array in f32")]
    for row in &mut m {
        row[0] = (f64::from(row[0]) / colors) as f32;
    }
    let norm = (0..3).map(|j| (0..3).map(|i| m[i][j] * m[i][j]).sum::<f32>().sqrt()).fold(0f32, f32::max);
    for row in &mut m {
        for v in row.iter_mut() {
            *v /= norm;
        }
    }
    m
}

fn invert3(m: &[[f32; 3]; 3]) -> [[f64; 3]; 3] {
    let a: [[f64; 3]; 3] = m.map(|r| r.map(f64::from));
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    let mut inv = [[0f64; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // The cofactor of a[j][i], over the determinant.
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            *v = (a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]) / det;
        }
    }
    inv
}

impl FftGenerator {
    pub fn new(width: usize, height: usize, settings: FftSettings, device: &Device) -> Result<Self> {
        let (h, w, w2) = (height, width, half_width(width));
        #[expect(clippy::cast_precision_loss, reason = "canvas sides are far below 2^52")]
        let floor = 4.0 / h.max(w) as f64;
        #[expect(clippy::cast_precision_loss, reason = "canvas sides are far below 2^52")]
        let root = ((h * w) as f64).sqrt();
        let mut scale_host = Vec::with_capacity(h * w2);
        for u in 0..h {
            for v in 0..w2 {
                let (fy, fx) = (fftfreq(u, h), fftfreq(v, w));
                let f = (fx * fx + fy * fy).sqrt();
                scale_host.push(root / f.max(floor).powf(settings.decay));
            }
        }
        let mut cos_rows = Vec::with_capacity(h * h);
        let mut sin_rows = Vec::with_capacity(h * h);
        for row in 0..h {
            for u in 0..h {
                let (c, s) = twiddle(u, row, h);
                cos_rows.push(c);
                sin_rows.push(s);
            }
        }
        let mut cos_cols = Vec::with_capacity(w2 * w);
        let mut sin_cols = Vec::with_capacity(w2 * w);
        for v in 0..w2 {
            let edge = v == 0 || (w % 2 == 0 && v == w / 2);
            let weight = if edge { 1.0 } else { 2.0 };
            for col in 0..w {
                let (c, s) = twiddle(v, col, w);
                cos_cols.push(weight * c);
                sin_cols.push(if edge { 0.0 } else { weight * s });
            }
        }
        let f32s = |v: Vec<f64>| -> Vec<f32> {
            #[expect(clippy::cast_possible_truncation, reason = "f32 constants")]
            v.into_iter().map(|x| x as f32).collect()
        };
        let colour = colour_matrix(settings.colors);
        Ok(Self {
            width,
            height,
            settings,
            scale: constant(f32s(scale_host.clone()), (h, w2), device)?,
            scale_host,
            cos_rows: constant(f32s(cos_rows), (h, h), device)?,
            sin_rows: constant(f32s(sin_rows), (h, h), device)?,
            cos_cols: constant(f32s(cos_cols), (w2, w), device)?,
            sin_cols: constant(f32s(sin_cols), (w2, w), device)?,
            colour: constant(colour.iter().flatten().copied().collect(), (3, 3), device)?,
            colour_inverse: invert3(&colour),
            device: device.clone(),
        })
    }

    /// The parameters' shape.
    pub fn shape(&self) -> (usize, usize, usize, usize, usize) {
        (1, 3, self.height, half_width(self.width), 2)
    }

    /// `irfft2(scale · params, norm = "ortho")`, `[1, 3, H, W]`.
    pub fn spatial(&self, params: &Tensor) -> Result<Tensor> {
        let re = params.narrow(4, 0, 1)?.squeeze(4)?.broadcast_mul(&self.scale)?;
        let im = params.narrow(4, 1, 1)?.squeeze(4)?.broadcast_mul(&self.scale)?;
        let yr = (self.cos_rows.broadcast_matmul(&re)? - self.sin_rows.broadcast_matmul(&im)?)?;
        let yi = (self.sin_rows.broadcast_matmul(&re)? + self.cos_rows.broadcast_matmul(&im)?)?;
        let x = (yr.broadcast_matmul(&self.cos_cols)? - yi.broadcast_matmul(&self.sin_cols)?)?;
        #[expect(clippy::cast_precision_loss, reason = "canvas sides are far below 2^52")]
        let norm = 1.0 / ((self.height * self.width) as f64).sqrt();
        Ok((x * norm)?)
    }
}

impl Generator for FftGenerator {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The spectrum of the image's decorrelated logits: it renders the image with its
    /// contrast set to the drawer's (the render normalises every image's contrast).
    fn encode(&self, rgb: &image::RgbImage) -> Result<Tensor> {
        let (h, w, w2) = (self.height, self.width, half_width(self.width));
        let eps = 1e-4;
        let inv = &self.colour_inverse;
        // The decorrelated logits, one plane per channel.
        let mut planes = vec![vec![0f64; h * w]; 3];
        for (x, y, p) in rgb.enumerate_pixels() {
            let i = y as usize * w + x as usize;
            let logit = p.0.map(|v| {
                let v = (f64::from(v) / 255.0).clamp(eps, 1.0 - eps);
                (v / (1.0 - v)).ln()
            });
            for (c, plane) in planes.iter_mut().enumerate() {
                plane[i] = (0..3).map(|k| inv[c][k] * logit[k]).sum();
            }
        }
        // The forward real DFT, ortho-normalised: along the columns, then the rows.
        #[expect(clippy::cast_precision_loss, reason = "canvas sides are far below 2^52")]
        let norm = 1.0 / ((h * w) as f64).sqrt();
        let col_tw: Vec<(f64, f64)> = (0..w2).flat_map(|v| (0..w).map(move |col| twiddle(v, col, w))).collect();
        let row_tw: Vec<(f64, f64)> = (0..h).flat_map(|u| (0..h).map(move |row| twiddle(u, row, h))).collect();
        let mut out = vec![0f32; 3 * h * w2 * 2];
        for (c, plane) in planes.iter().enumerate() {
            let mut tr = vec![0f64; h * w2];
            let mut ti = vec![0f64; h * w2];
            for row in 0..h {
                let line = &plane[row * w..(row + 1) * w];
                for v in 0..w2 {
                    let tw = &col_tw[v * w..(v + 1) * w];
                    let (mut re, mut im) = (0.0, 0.0);
                    for (x, (cos, sin)) in line.iter().zip(tw) {
                        re += x * cos;
                        im -= x * sin;
                    }
                    tr[row * w2 + v] = re;
                    ti[row * w2 + v] = im;
                }
            }
            for u in 0..h {
                let tw = &row_tw[u * h..(u + 1) * h];
                for v in 0..w2 {
                    let (mut re, mut im) = (0.0, 0.0);
                    for (row, (cos, sin)) in tw.iter().enumerate() {
                        let (a, b) = (tr[row * w2 + v], ti[row * w2 + v]);
                        // (a + ib)(cos − i sin)
                        re += a * cos + b * sin;
                        im += b * cos - a * sin;
                    }
                    let s = self.scale_host[u * w2 + v];
                    let at = ((c * h + u) * w2 + v) * 2;
                    #[expect(clippy::cast_possible_truncation, reason = "f32 parameters")]
                    {
                        out[at] = (re * norm / s) as f32;
                        out[at + 1] = (im * norm / s) as f32;
                    }
                }
            }
        }
        Ok(transfer::upload(out, self.shape(), DType::F32, &self.device)?)
    }

    /// `0.01 · N(0, 1)` (pixray's start), or the `pixels`/`gradient` noise image encoded.
    fn random(&self, settings: &RunSettings, rng: &mut Rng) -> Result<Tensor> {
        if let Some(img) = noise_image(settings.init_noise, self.width, self.height, rng) {
            return self.encode(&img);
        }
        let (a, b, c, d, e) = self.shape();
        let values: Vec<f32> = rng.normals_f32(a * b * c * d * e).into_iter().map(|v| v * 0.01).collect();
        Ok(transfer::upload(values, self.shape(), DType::F32, &self.device)?)
    }

    fn render(&self, params: &Tensor) -> Result<Tensor> {
        let x = self.spatial(params)?;
        let n = x.elem_count();
        #[expect(clippy::cast_precision_loss, reason = "pixel counts are far below 2^52")]
        let denom = (n.max(2) - 1) as f64;
        let centred = x.broadcast_sub(&x.mean_all()?)?;
        let std = (centred.sqr()?.sum_all()? / denom)?.sqrt()?;
        let x = (x.broadcast_div(&std)? * self.settings.contrast)?;
        let (_, _, h, w) = x.dims4()?;
        let mixed = self.colour.matmul(&x.reshape((3, h * w))?)?.reshape((1, 3, h, w))?;
        Ok((mixed.neg()?.exp()? + 1.0)?.recip()?)
    }

    fn clamp(&self, params: &Tensor) -> Result<Tensor> {
        Ok(params.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colour_matrix_inverse_is_one() {
        let m = colour_matrix(1.5);
        let inv = invert3(&m);
        for (i, row) in m.iter().enumerate() {
            for j in 0..3 {
                let v: f64 = row.iter().zip(&inv).map(|(a, inv_row)| f64::from(*a) * inv_row[j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "{i},{j}: {v}");
            }
        }
    }

    #[test]
    fn fftfreq_is_numpys() {
        assert_eq!((0..4).map(|k| fftfreq(k, 4)).collect::<Vec<_>>(), vec![0.0, 0.25, -0.5, -0.25]);
        let five: Vec<f64> = (0..5).map(|k| fftfreq(k, 5)).collect();
        assert_eq!(five, vec![0.0, 0.2, 0.4, -0.4, -0.2]);
    }

    #[test]
    fn encoding_then_rendering_keeps_the_image_up_to_its_contrast() {
        // An image whose decorrelated logits already have the drawer's contrast comes back.
        for (w, h) in [(12, 8), (9, 7)] {
            let g = FftGenerator::new(w, h, FftSettings::default(), &Device::Cpu).expect("gen");
            let mut rng = Rng::new(5);
            let params = g.random(&RunSettings::default(), &mut rng).expect("random");
            let img = crate::engine::image::tensor_to_rgb(&g.render(&params).expect("render")).expect("rgb");
            let again = g.render(&g.encode(&img).expect("encode")).expect("render");
            let again = crate::engine::image::tensor_to_rgb(&again).expect("rgb");
            let worst = img.as_raw().iter().zip(again.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().expect("pixels");
            assert!(worst <= 2, "{w}x{h}: a pixel moved by {worst}");
        }
    }
}
