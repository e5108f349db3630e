//! Scoring images against prompts with CLIP: what `clipcanvas score` prints.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::error::{EngineError, Result};
use super::image::{clip_resize_crop, load_rgb, rgb_to_tensor};
use crate::models::clip::{self, Clip};
use crate::models::tokenizer::ClipTokenizer;

/// A loaded CLIP and its tokenizer, ready to score images.
#[derive(Debug)]
pub struct Scorer {
    clip: Clip,
    tokenizer: ClipTokenizer,
    device: Device,
}

impl Scorer {
    /// Loads the CLIP folder `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (clip, tokenizer) = clip::load(dir, DType::F32, device)?;
        Ok(Self { clip, tokenizer, device: device.clone() })
    }

    /// Token ids `[N, 77]` for prompts.
    pub fn tokenize(&self, prompts: &[String]) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(prompts.len() * self.tokenizer.context_length());
        for p in prompts {
            ids.extend(self.tokenizer.encode(p)?.0);
        }
        Ok(Tensor::from_vec(ids, (prompts.len(), self.tokenizer.context_length()), &self.device)?)
    }

    /// The cosine similarity of the image file with each prompt, in order.
    pub fn score_file(&self, image: &Path, prompts: &[String]) -> Result<Vec<f32>> {
        if prompts.is_empty() {
            return Err(EngineError::Input("give at least one prompt".into()));
        }
        let size = u32::try_from(self.clip.image_size()).map_err(|_| EngineError::Input("image size".into()))?;
        let rgb = clip_resize_crop(&load_rgb(image)?, size);
        let pixels = Clip::normalize(&rgb_to_tensor(&rgb, &self.device)?)?;
        let img = self.clip.encode_image(&pixels)?;
        check_embeddings(&img, |_| "the image".to_owned())?;
        let txt = self.clip.encode_text(&self.tokenize(prompts)?)?;
        check_embeddings(&txt, |i| format!("prompt {} ({:?})", i + 1, prompts[i]))?;
        let sims = Clip::cosine(&img, &txt)?.squeeze(0)?.to_vec1::<f32>()?;
        if let Some(i) = sims.iter().position(|s| !s.is_finite()) {
            return Err(EngineError::NotFinite(format!("the score of prompt {} is not a number", i + 1)));
        }
        Ok(sims)
    }
}

/// Checks that each row of embeddings `[N, D]` has a finite, non-zero length: a cosine
/// with a zero or NaN vector is NaN, which would print as a score. `name(i)` names row
/// `i` in the message.
fn check_embeddings(embeds: &Tensor, name: impl Fn(usize) -> String) -> Result<()> {
    let lengths = embeds.to_dtype(DType::F32)?.sqr()?.sum(1)?.to_vec1::<f32>()?;
    match lengths.iter().position(|l| !(l.is_finite() && *l > 0.0)) {
        None => Ok(()),
        Some(i) => Err(EngineError::NotFinite(format!(
            "CLIP's embedding of {} is {}, so it has no score; the model's weights may be damaged \
             (`clipcanvas models verify` checks installed models)",
            name(i),
            if lengths[i] == 0.0 { "all zeros" } else { "not finite" }
        ))),
    }
}
