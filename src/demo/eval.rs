//! How good the shapes world's models are, measured on freshly drawn (held-out)
//! scenes: the CLIP's zero-shot accuracy per attribute, and the VQGAN's
//! reconstruction PSNR.
//!
//! Zero-shot accuracy of an attribute: for each scene, the canonical caption is
//! written once for every value of that attribute (the other attributes as drawn), and
//! the CLIP must rank the true one highest.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::data::scene_batch;
use super::error::Result;
use super::scene::{Position, Scene, Shape, Size, COLOURS};
use crate::engine::rng::Rng;
use crate::models::clip::Clip;
use crate::models::ops::composed::l2_normalize;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vqgan::Vqgan;

/// The seed of the held-out scenes (added to the training seed), far from any seed the
/// training draws its scenes with.
pub const EVAL_SEED: u64 = 0x005E_ED0F_E7A1;

/// Zero-shot accuracies, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZeroShot {
    pub colour: f64,
    pub shape: f64,
    pub position: f64,
    pub background: f64,
    pub size: f64,
    pub scenes: usize,
}

/// Unit text embeddings of captions, computed once each.
struct TextCache<'a> {
    clip: &'a Clip,
    tok: &'a ClipTokenizer,
    done: HashMap<String, Vec<f32>>,
}

impl TextCache<'_> {
    fn fill(&mut self, captions: &[String]) -> Result<()> {
        let todo: Vec<&String> = {
            let mut seen = std::collections::HashSet::new();
            captions.iter().filter(|c| !self.done.contains_key(*c) && seen.insert(*c)).collect()
        };
        for chunk in todo.chunks(256) {
            let mut ids = Vec::new();
            for c in chunk {
                ids.extend(self.tok.encode(c)?.0);
            }
            let ids = Tensor::from_vec(ids, (chunk.len(), self.tok.context_length()), &Device::Cpu)?;
            let emb = l2_normalize(&self.clip.encode_text(&ids)?)?.to_vec2::<f32>()?;
            for (c, e) in chunk.iter().zip(emb) {
                self.done.insert((*c).clone(), e);
            }
        }
        Ok(())
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The scenes that differ from `s` only in one attribute, the true one first.
fn variants(s: &Scene, attribute: usize) -> Vec<Scene> {
    let mut out = vec![*s];
    match attribute {
        0 => out.extend(
            (0..COLOURS.len()).filter(|&c| c != s.colour && c != s.background).map(|c| Scene { colour: c, ..*s }),
        ),
        1 => out.extend(Shape::ALL.iter().filter(|&&x| x != s.shape).map(|&x| Scene { shape: x, ..*s })),
        2 => out.extend(Position::ALL.iter().filter(|&&p| p != s.position).map(|&p| Scene { position: p, ..*s })),
        3 => out.extend(
            (0..COLOURS.len()).filter(|&c| c != s.colour && c != s.background).map(|c| Scene { background: c, ..*s }),
        ),
        _ => out.extend(Size::ALL.iter().filter(|&&x| x != s.size).map(|&x| Scene { size: x, ..*s })),
    }
    out
}

/// Zero-shot accuracy of `clip` on `n` scenes drawn with `seed`.
pub fn zero_shot(clip: &Clip, tok: &ClipTokenizer, n: usize, seed: u64) -> Result<ZeroShot> {
    let mut rng = Rng::new(seed);
    let scenes: Vec<Scene> = (0..n).map(|_| Scene::random(&mut rng, 0.0)).collect();
    let mut cache = TextCache { clip, tok, done: HashMap::new() };
    let mut hits = [0usize; 5];
    for chunk in scenes.chunks(64) {
        let x = scene_batch(chunk, clip.image_size(), &mut rng, false, &Device::Cpu)?;
        let emb = l2_normalize(&clip.encode_image(&Clip::normalize(&x)?)?)?.to_vec2::<f32>()?;
        let captions: Vec<String> =
            chunk.iter().flat_map(|s| (0..5).flat_map(|a| variants(s, a)).map(|v| v.canonical_caption())).collect();
        cache.fill(&captions)?;
        for (s, e) in chunk.iter().zip(&emb) {
            for (a, hit) in hits.iter_mut().enumerate() {
                let scores: Vec<f32> = variants(s, a)
                    .iter()
                    .map(|v| cache.done.get(&v.canonical_caption()).map_or(f32::NEG_INFINITY, |t| dot(e, t)))
                    .collect();
                if scores.iter().skip(1).all(|&x| x < scores[0]) {
                    *hit += 1;
                }
            }
        }
    }
    let f = |h: usize| h as f64 / n.max(1) as f64;
    Ok(ZeroShot {
        colour: f(hits[0]),
        shape: f(hits[1]),
        position: f(hits[2]),
        background: f(hits[3]),
        size: f(hits[4]),
        scenes: n,
    })
}

/// Mean PSNR (dB, 8-bit images) of the VQGAN's reconstructions of `n` scenes of
/// `side`×`side` pixels drawn with `seed`.
pub fn reconstruction_psnr(vqgan: &Vqgan, n: usize, side: usize, seed: u64) -> Result<f64> {
    let mut rng = Rng::new(seed);
    let scenes: Vec<Scene> = (0..n).map(|_| Scene::random(&mut rng, 0.15)).collect();
    let mut total = 0.0;
    for chunk in scenes.chunks(4) {
        let x = scene_batch(chunk, side, &mut rng, false, &Device::Cpu)?;
        let x8 = (x.clone() * 255.0)?.round()?;
        let xr = vqgan.decode(&vqgan.encode(&((x * 2.0)? - 1.0)?)?)?;
        let xr8 = (((xr.clamp(-1.0, 1.0)? + 1.0)? * 127.5)?).round()?;
        let mse = (xr8 - x8)?.sqr()?.mean((1, 2, 3))?.to_vec1::<f32>()?;
        for m in mse {
            total += 10.0 * (255.0f64 * 255.0 / f64::from(m).max(1e-10)).log10();
        }
    }
    Ok(total / n.max(1) as f64)
}
