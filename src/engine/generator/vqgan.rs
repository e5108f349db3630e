//! The notebook's z+quantize: the parameters are the VQGAN's latent grid `[1, C, H/f,
//! W/f]`; the image is the decoder's output of its nearest codes (straight-through), and
//! after each step the latent is clamped to the codebook's range per channel.

use std::sync::Arc;

use candle_core::Tensor;

use super::{noise_image, Generator};
use crate::engine::error::{EngineError, Result};
use crate::engine::image::rgb_to_tensor;
use crate::engine::loaded::Models;
use crate::engine::loss::clamp_with_grad;
use crate::engine::rng::Rng;
use crate::settings::coarse::factor_at;
use crate::settings::RunSettings;

/// The canvas a VQGAN with downsampling factor `f` draws for `width×height`: each side
/// rounded down to a multiple of `f`; `None` where a side is below `f`. The one rule
/// for the run (`canvas`) and for its memory estimate (`engine::memory`).
pub fn rounded_canvas(f: usize, width: usize, height: usize) -> Option<(usize, usize)> {
    let (toks_x, toks_y) = (width.checked_div(f)?, height.checked_div(f)?);
    (toks_x > 0 && toks_y > 0).then_some((toks_x * f, toks_y * f))
}

/// The canvas rounded down to the VQGAN's factor, with a notice when it was.
pub fn canvas(models: &Models, width: usize, height: usize) -> Result<((usize, usize), Option<String>)> {
    let f = models.vqgan()?.config().downsample_factor();
    let Some((w, h)) = rounded_canvas(f, width, height) else {
        return Err(EngineError::Input(format!(
            "size {width}x{height} is below the minimum of {f}x{f} for this VQGAN"
        )));
    };
    let notice = ((w, h) != (width, height))
        .then(|| format!("size {width}x{height} rounded down to {w}x{h} (a multiple of the VQGAN's factor {f})"));
    Ok(((w, h), notice))
}

#[derive(Debug)]
pub struct VqganGenerator {
    models: Arc<Models>,
    width: usize,
    height: usize,
    /// The latent grid, `(W/f, H/f)`.
    tokens: (usize, usize),
    /// The codebook's least and greatest value per channel, `[1, C, 1, 1]`.
    z_min: Tensor,
    z_max: Tensor,
    /// Decode with circular padding (`--tile`): the image tiles without a seam.
    circular: bool,
}

impl VqganGenerator {
    /// For a canvas already rounded to the VQGAN's factor (see [`canvas`]).
    pub fn new(models: Arc<Models>, width: usize, height: usize, circular: bool) -> Result<Self> {
        let vqgan = models.vqgan()?;
        let codebook = vqgan.codebook();
        let c = vqgan.config().embed_dim;
        let z_min = codebook.min(0)?.reshape((1, c, 1, 1))?;
        let z_max = codebook.max(0)?.reshape((1, c, 1, 1))?;
        let f = vqgan.config().downsample_factor();
        Ok(Self { tokens: (width / f, height / f), models, width, height, z_min, z_max, circular })
    }

    /// The VQGAN ([`VqganGenerator::new`] checked that there is one).
    fn vqgan(&self) -> Result<&crate::models::vqgan::Vqgan> {
        self.models.vqgan()
    }
}

impl Generator for VqganGenerator {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The encoder's output, before quantisation.
    fn encode(&self, rgb: &image::RgbImage) -> Result<Tensor> {
        let x = ((rgb_to_tensor(rgb, &self.models.device)? * 2.0)? - 1.0)?;
        Ok(self.vqgan()?.encode(&x)?)
    }

    /// Random codes, one per block of the first coarse stage (per token without one);
    /// or an image of random pixels or gradients, encoded.
    fn random(&self, settings: &RunSettings, rng: &mut Rng) -> Result<Tensor> {
        if let Some(img) = noise_image(settings.init_noise, self.width, self.height, rng) {
            return self.encode(&img);
        }
        let (toks_x, toks_y) = self.tokens;
        let n = self.vqgan()?.config().n_embed;
        let f = factor_at(&settings.coarse, 0);
        let (bx, by) = (toks_x.div_ceil(f), toks_y.div_ceil(f));
        let blocks: Vec<u32> = (0..bx * by).map(|_| u32::try_from(rng.below(n)).unwrap_or(0)).collect();
        let idx: Vec<u32> = (0..toks_y)
            .flat_map(|y| (0..toks_x).map(move |x| (y / f, x / f)))
            .map(|(y, x)| blocks[y * bx + x])
            .collect();
        let idx = Tensor::from_vec(idx, (1, toks_y, toks_x), &self.models.device)?;
        Ok(self.vqgan()?.embed_indices(&idx)?)
    }

    /// `ClampWithGrad((decode(quantize_st(z)) + 1) / 2, 0, 1)`, the decoder's padding
    /// circular when tiling.
    fn render(&self, z: &Tensor) -> Result<Tensor> {
        let zq = self.vqgan()?.quantize_st(z)?;
        let out = if self.circular { self.vqgan()?.decode_circular(&zq)? } else { self.vqgan()?.decode(&zq)? };
        Ok(clamp_with_grad(&((out + 1.0)? / 2.0)?, 0.0, 1.0)?)
    }

    fn clamp(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.broadcast_maximum(&self.z_min)?.broadcast_minimum(&self.z_max)?)
    }
}
