//! The look losses, pixray's: each a loss term with its own weight, off at 0, added to
//! the prompts' in every step.
//!
//! - **saturation** (pixray's `SaturationLoss`, Hasler and Süsstrunk's colourfulness):
//!   over every pixel of the step's cutouts (before CLIP's normalisation), with
//!   `rg = R − G` and `yb = (R + G)/2 − B`, the loss is
//!   `−(√(σ_rg² + σ_yb²) + 0.3·√(μ_rg² + μ_yb²)) · weight / 10` (unbiased σ). A negative
//!   weight pushes toward grey. (Each square root takes 1e-12 more than pixray's, so
//!   that a grey image's gradient is not a NaN.)
//! - **symmetry** (pixray's `SymmetryLoss`): `MSE(image, image mirrored left–right) ·
//!   weight`; and ours, the same mirrored top–bottom.
//! - **edge** (pixray's `EdgeLoss` without its mask image): the MSE from a colour of
//!   each border strip, `thickness` percent of the side wide (left and right strips
//!   full height, top and bottom between them), plus `global ·` the whole image's, all
//!   times the weight.
//!
//! - **palette** (pixray's `PaletteLoss`): over every pixel of the step's cutouts, the
//!   mean distance from its nearest palette colour (chosen without gradient), times the
//!   number of cutouts, `weight / 10`.
//! - **tile** (pixray's `--tiler`): not a loss but a switch. Each step the image is
//!   rolled by a random offset, wrapping around, before the cutouts are made
//!   ([`roll`], `torch.roll`), so CLIP sees the image's edges as neighbours and the
//!   result tiles.
//!
//! The mirrors are gathers with index lists made once per canvas, and the roll is two
//! slices and a join per axis, so a step uploads nothing for them.

use candle_core::{DType, Device, Tensor};

use super::error::Result;
use super::transfer;
use crate::settings::Looks;

/// The look losses of a run on a `width × height` canvas.
#[derive(Debug)]
pub struct LookLosses {
    looks: Looks,
    /// Column and row indices in reverse, for the mirrors in use.
    mirror_x: Option<Tensor>,
    mirror_y: Option<Tensor>,
    /// The edge colour, `[1, 3, 1, 1]`, when the edge loss is on.
    edge_color: Option<Tensor>,
    /// The palette, `[K, 3]`, when the palette loss is on.
    palette: Option<Tensor>,
}

fn reversed(n: usize, device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = (0..n).rev().map(|i| u32::try_from(i).unwrap_or(u32::MAX)).collect();
    Ok(transfer::upload(idx, n, DType::U32, device)?)
}

impl LookLosses {
    pub fn new(looks: Looks, width: usize, height: usize, device: &Device) -> Result<Self> {
        let mirror_x = if looks.symmetry == 0.0 { None } else { Some(reversed(width, device)?) };
        let mirror_y = if looks.symmetry_vertical == 0.0 { None } else { Some(reversed(height, device)?) };
        let edge_color = if looks.edge == 0.0 {
            None
        } else {
            #[expect(clippy::cast_possible_truncation, reason = "colours in [0, 1]")]
            let rgb: Vec<f32> = looks.edge_color.iter().map(|&c| c as f32).collect();
            Some(transfer::upload(rgb, (1, 3, 1, 1), DType::F32, device)?)
        };
        let palette = if looks.palette_weight == 0.0 || looks.palette.is_empty() {
            None
        } else {
            #[expect(clippy::cast_possible_truncation, reason = "colours in [0, 1]")]
            let rgb: Vec<f32> = looks.palette.iter().flatten().map(|&c| c as f32).collect();
            Some(transfer::upload(rgb, (looks.palette.len(), 3), DType::F32, device)?)
        };
        Ok(Self { looks, mirror_x, mirror_y, edge_color, palette })
    }

    /// The terms for this step: `image` is `[1, 3, H, W]` and `cutouts` `[N, 3, S, S]`,
    /// both in `[0, 1]`.
    pub fn terms(&self, image: &Tensor, cutouts: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        if self.looks.saturation != 0.0 {
            out.push(("saturation".to_owned(), (saturation_loss(cutouts)? * self.looks.saturation)?));
        }
        if let Some(idx) = &self.mirror_x {
            let mirrored = image.index_select(idx, 3)?;
            out.push(("symmetry".to_owned(), ((image - mirrored)?.sqr()?.mean_all()? * self.looks.symmetry)?));
        }
        if let Some(idx) = &self.mirror_y {
            let mirrored = image.index_select(idx, 2)?;
            let loss = ((image - mirrored)?.sqr()?.mean_all()? * self.looks.symmetry_vertical)?;
            out.push(("symmetry top-bottom".to_owned(), loss));
        }
        if let Some(palette) = &self.palette {
            out.push(("palette".to_owned(), (palette_loss(cutouts, palette)? * self.looks.palette_weight)?));
        }
        if let Some(colour) = &self.edge_color {
            let loss = edge_loss(image, colour, self.looks.edge_thickness, self.looks.edge_global)?;
            out.push(("edge".to_owned(), (loss * self.looks.edge)?));
        }
        Ok(out)
    }
}

/// Keeps the square roots' gradients finite at 0.
const EPS: f64 = 1e-12;

/// pixray's saturation loss at weight 1: minus a tenth of the colourfulness of all the
/// pixels of `cutouts` (`[N, 3, S, S]`).
pub fn saturation_loss(cutouts: &Tensor) -> Result<Tensor> {
    let channel = |c: usize| cutouts.narrow(1, c, 1);
    let (r, g, b) = (channel(0)?, channel(1)?, channel(2)?);
    let rg = (&r - &g)?.flatten_all()?;
    let yb = (((&r + &g)? * 0.5)? - &b)?.flatten_all()?;
    let n = rg.elem_count();
    #[expect(clippy::cast_precision_loss, reason = "pixel counts are far below 2^52")]
    let denom = (n.max(2) - 1) as f64;
    let mean_var = |x: &Tensor| -> Result<(Tensor, Tensor)> {
        let mean = x.mean_all()?;
        let var = (x.broadcast_sub(&mean)?.sqr()?.sum_all()? / denom)?;
        Ok((mean, var))
    };
    let (rg_mean, rg_var) = mean_var(&rg)?;
    let (yb_mean, yb_var) = mean_var(&yb)?;
    let spread = ((rg_var + yb_var)? + EPS)?.sqrt()?;
    let centre = ((rg_mean.sqr()? + yb_mean.sqr()?)? + EPS)?.sqrt()?;
    let colourfulness = (spread + (centre * 0.3)?)?;
    Ok((colourfulness * -0.1)?)
}

/// pixray's edge loss at weight 1: each border strip's MSE from `colour` (`[1, 3, 1, 1]`),
/// plus `global` times the whole image's. A strip is `thickness` percent of its side,
/// rounded down as pixray's `int()` does; a strip of no pixels adds nothing.
pub fn edge_loss(image: &Tensor, colour: &Tensor, thickness: f64, global: f64) -> Result<Tensor> {
    let (_, _, h, w) = image.dims4()?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "pixray's int()"
    )]
    let strip = |side: usize| ((thickness / 100.0 * side as f64) as usize).min(side / 2);
    let (lr, ud) = (strip(w), strip(h));
    let mse = |x: Tensor| -> Result<Tensor> { Ok(x.broadcast_sub(colour)?.sqr()?.mean_all()?) };
    let mut total = (mse(image.clone())? * global)?;
    if lr > 0 {
        total = (total + mse(image.narrow(3, 0, lr)?)?)?;
        total = (total + mse(image.narrow(3, w - lr, lr)?)?)?;
    }
    let inner = w - 2 * lr;
    if ud > 0 && inner > 0 {
        let middle = image.narrow(3, lr, inner)?;
        total = (total + mse(middle.narrow(2, 0, ud)?)?)?;
        total = (total + mse(middle.narrow(2, h - ud, ud)?)?)?;
    }
    Ok(total)
}

/// `torch.roll(image, shifts=(dy, dx), dims=(2, 3))`: pixel `(x, y)` moves to
/// `((x + dx) mod W, (y + dy) mod H)`.
pub fn roll(image: &Tensor, dx: usize, dy: usize) -> Result<Tensor> {
    let (_, _, h, w) = image.dims4()?;
    let along = |t: Tensor, dim: usize, n: usize, shift: usize| -> Result<Tensor> {
        let shift = shift % n.max(1);
        if shift == 0 {
            return Ok(t);
        }
        Ok(Tensor::cat(&[t.narrow(dim, n - shift, shift)?, t.narrow(dim, 0, n - shift)?], dim)?)
    };
    along(along(image.clone(), 3, w, dx)?, 2, h, dy)
}

/// pixray's palette loss at weight 1: the mean distance of every pixel of `cutouts`
/// (`[N, 3, S, S]`) from its nearest colour of `palette` (`[K, 3]`), times `N / 10`. The
/// square root takes 1e-12 more, so that a pixel on a palette colour has a gradient of 0
/// (as `torch.norm`'s) rather than a NaN.
pub fn palette_loss(cutouts: &Tensor, palette: &Tensor) -> Result<Tensor> {
    let n = cutouts.dim(0)?;
    let pixels = cutouts.permute((0, 2, 3, 1))?.reshape(((), 3))?;
    let d2 = pixels.unsqueeze(1)?.broadcast_sub(&palette.unsqueeze(0)?)?.sqr()?.sum(2)?;
    let nearest = d2.detach().argmin(1)?;
    let target = palette.index_select(&nearest, 0)?.detach();
    let dist = ((pixels - target)?.sqr()?.sum(1)? + EPS)?.sqrt()?;
    #[expect(clippy::cast_precision_loss, reason = "cutout counts are small")]
    let scale = n as f64 / 10.0;
    Ok((dist.mean_all()? * scale)?)
}
