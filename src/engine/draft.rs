//! One-step drafts: the prompts' CLIP embeddings, combined by weight into one unit
//! condition, go through a [`OneStep`] model that draws several candidate code grids;
//! each is decoded by the VQGAN and ranked by CLIP against the prompts (the sum of
//! weight × cosine similarity of the whole image, as `clipcanvas score` measures it).
//! The run then starts from the chosen candidate's codes.

use std::path::Path;
use std::time::Instant;

use candle_core::{Tensor, D};

use super::error::{EngineError, Result};
use super::image::{clip_resize_crop, rgb_to_tensor, tensor_to_rgb};
use super::loaded::Models;
use super::rng::Rng;
use crate::models::clip::Clip;
use crate::models::onestep::OneStep;
use crate::models::ops::composed::l2_normalize;
use crate::settings::OneStepSettings;

/// One drawn grid, decoded and scored.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The codes, `[1, h, w]` (u32).
    pub codes: Tensor,
    /// The decoded image.
    pub image: image::RgbImage,
    /// CLIP's score against the prompts (higher is better).
    pub score: f64,
    /// Its place in drawing order.
    pub drawn: usize,
}

/// Where a draft's time went, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DraftTimes {
    /// Drawing the code grids (the transformer and the sampling).
    pub sample: f64,
    /// Decoding them to images.
    pub decode: f64,
    /// Scoring them with CLIP.
    pub rank: f64,
}

impl DraftTimes {
    pub fn total(&self) -> f64 {
        self.sample + self.decode + self.rank
    }
}

/// A prompt's unit embedding `[1, D]` and its weight.
pub type Target = (Tensor, f64);

/// Checks that `onestep` fits the loaded models and a `toks_y`×`toks_x` grid.
pub fn check_fit(onestep: &OneStep, models: &Models, toks_x: usize, toks_y: usize) -> Result<()> {
    let c = onestep.config();
    let clip_dim = models.clip.config().projection_dim;
    let vqgan = models.vqgan()?;
    let n_codes = vqgan.config().n_embed;
    if c.clip_dim != clip_dim || c.n_codes != n_codes {
        return Err(EngineError::Input(format!(
            "the one-step model is for a CLIP of width {} and a VQGAN of {} codes, not these ({clip_dim}, {n_codes}); \
             train one for them with `clipcanvas train-onestep`",
            c.clip_dim, c.n_codes
        )));
    }
    if c.grid != [toks_y, toks_x] {
        let f = vqgan.config().downsample_factor();
        return Err(EngineError::Input(format!(
            "the one-step model draws {}x{} images; set the size to that (this run's is {}x{})",
            c.grid[1] * f,
            c.grid[0] * f,
            toks_x * f,
            toks_y * f
        )));
    }
    Ok(())
}

/// The condition: the weighted sum of the targets' unit embeddings, made unit.
fn condition(targets: &[Target]) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for (e, w) in targets {
        let term = (l2_normalize(e)? * *w)?;
        sum = Some(match sum {
            Some(s) => (s + term)?,
            None => term,
        });
    }
    let sum = sum.ok_or_else(|| EngineError::Input("a one-step draft needs a text or image prompt".into()))?;
    let norm = f64::from(sum.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);
    if !(norm.is_finite() && norm > 1e-6) {
        return Err(EngineError::Input("the prompts' weights cancel out: a one-step draft needs a direction".into()));
    }
    Ok((sum / norm)?)
}

/// The whole image's unit CLIP embedding, `[1, D]`.
fn embed_image(clip: &Clip, img: &image::RgbImage, device: &candle_core::Device) -> Result<Tensor> {
    let side = u32::try_from(clip.image_size()).unwrap_or(224);
    let x = rgb_to_tensor(&clip_resize_crop(img, side), device)?;
    Ok(l2_normalize(&clip.encode_image(&Clip::normalize(&x)?)?)?)
}

/// The unit CLIP embedding of an image file, for image prompts.
pub fn embed_image_file(models: &Models, path: &Path) -> Result<Tensor> {
    let img = super::image::load_rgb(path)?;
    embed_image(&models.clip, &img, &models.device)
}

/// Draws `s.candidates` grids for `targets`, decodes them and ranks them by CLIP, best
/// first (ties in drawing order). Deterministic for the state of `rng`.
pub fn draft(
    models: &Models,
    onestep: &OneStep,
    targets: &[Target],
    s: &OneStepSettings,
    rng: &mut Rng,
) -> Result<Vec<Candidate>> {
    Ok(draft_timed(models, onestep, targets, s, rng)?.0)
}

/// [`draft`], and where its time went.
pub fn draft_timed(
    models: &Models,
    onestep: &OneStep,
    targets: &[Target],
    s: &OneStepSettings,
    rng: &mut Rng,
) -> Result<(Vec<Candidate>, DraftTimes)> {
    s.validate().map_err(EngineError::Input)?;
    let mut times = DraftTimes::default();
    let clock = Instant::now();
    let cond = condition(targets)?;
    let cond = cond.broadcast_as((s.candidates, cond.dim(D::Minus1)?))?.contiguous()?;
    let grids = onestep.generate(&cond, &s.sampling, || rng.uniform())?;
    times.sample = clock.elapsed().as_secs_f64();
    // Decoded and ranked a few at a time: as many as fit a million pixels.
    let (_, h, w) = grids.dims3()?;
    let vqgan = models.vqgan()?;
    let f = vqgan.config().downsample_factor();
    let chunk = ((1usize << 20) / (h * w * f * f).max(1)).clamp(1, s.candidates);
    let units: Vec<Tensor> = targets.iter().map(|(t, _)| l2_normalize(t)).collect::<candle_core::Result<_>>()?;
    let mut out = Vec::with_capacity(s.candidates);
    for start in (0..s.candidates).step_by(chunk) {
        let n = chunk.min(s.candidates - start);
        let clock = Instant::now();
        let codes = grids.narrow(0, start, n)?;
        let z = vqgan.embed_indices(&codes)?;
        let x = ((vqgan.decode(&z)? + 1.0)? / 2.0)?;
        let images = (0..n).map(|i| tensor_to_rgb(&x.narrow(0, i, 1)?)).collect::<Result<Vec<_>>>()?;
        times.decode += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let side = u32::try_from(models.clip.image_size()).unwrap_or(224);
        let pixels = images
            .iter()
            .map(|img| rgb_to_tensor(&clip_resize_crop(img, side), &models.device))
            .collect::<Result<Vec<_>>>()?;
        let e = l2_normalize(&models.clip.encode_image(&Clip::normalize(&Tensor::cat(&pixels, 0)?)?)?)?;
        let mut scores = vec![0f64; n];
        for (t, (_, w)) in units.iter().zip(targets) {
            let cos: Vec<f32> = Clip::cosine(&e, t)?.flatten_all()?.to_vec1()?;
            for (sc, c) in scores.iter_mut().zip(cos) {
                *sc += w * f64::from(c);
            }
        }
        times.rank += clock.elapsed().as_secs_f64();
        for (i, (image, score)) in images.into_iter().zip(scores).enumerate() {
            out.push(Candidate { codes: codes.narrow(0, i, 1)?, image, score, drawn: start + i });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.drawn.cmp(&b.drawn)));
    Ok((out, times))
}

/// The unit text embedding of a prompt's text, `[1, D]`.
pub fn embed_text(models: &Models, text: &str) -> Result<Tensor> {
    let (ids, _) = models.tokenizer.encode(text)?;
    let n = ids.len();
    let ids = Tensor::from_vec(ids, (1, n), &models.device)?;
    Ok(l2_normalize(&models.clip.encode_text(&ids)?)?)
}
