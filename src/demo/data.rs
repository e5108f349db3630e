//! The demo world's training data: scenes drawn and turned into tensors, with the light
//! blur and noise the CLIP sees in decoded images, and the sizes the world is made at.
//! Shared by `train` and `harden` (so neither imports the other's internals).

use candle_core::{Device, Tensor};

use super::error::Result;
use super::scene::{Scene, COLOURS};
use super::stats::distance2;
use crate::engine::rng::Rng;

/// Side of the scenes the VQGAN is trained on and the canvas the demo uses.
pub const SCENE_SIDE: usize = 128;
/// The shapes CLIP's input size.
pub const CLIP_SIDE: usize = 64;
/// Text context length of the shapes CLIP (captions are short).
pub const CONTEXT: usize = 24;

/// Scenes rendered and converted to a `[B, 3, side, side]` tensor in `[0, 1]`, with the
/// light blur and noise the CLIP sees in decoded images.
pub fn scene_batch(scenes: &[Scene], side: usize, rng: &mut Rng, augment: bool, device: &Device) -> Result<Tensor> {
    Ok(scene_batch_covered(scenes, side, None, rng, augment, device)?.0)
}

/// [`scene_batch`], and with `patch` also each `patch`×`patch` cell's foreground
/// share, `[B·cells]` in row-major order: the fraction of its pixels nearer the shape's
/// colour than the background's, before blur and noise.
pub(crate) fn scene_batch_covered(
    scenes: &[Scene],
    side: usize,
    patch: Option<usize>,
    rng: &mut Rng,
    augment: bool,
    device: &Device,
) -> Result<(Tensor, Vec<f32>)> {
    let plane = side * side;
    let mut data = vec![0f32; scenes.len() * 3 * plane];
    let mut coverage = Vec::new();
    for (i, s) in scenes.iter().enumerate() {
        let img = s.render(side, rng);
        if let Some(p) = patch.filter(|&p| p > 0) {
            let (fg, bg) = (COLOURS[s.colour].rgb, COLOURS[s.background].rgb);
            let cells = side / p;
            let mut share = vec![0f32; cells * cells];
            for (x, y, px) in img.enumerate_pixels() {
                let (cx, cy) = (x as usize / p, y as usize / p);
                if cx < cells && cy < cells && distance2(px.0, fg) < distance2(px.0, bg) {
                    share[cy * cells + cx] += 1.0 / (p * p) as f32;
                }
            }
            coverage.extend(share);
        }
        let out = &mut data[i * 3 * plane..(i + 1) * 3 * plane];
        for (p, px) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + p] = f32::from(px.0[c]) / 255.0;
            }
        }
        if augment {
            if rng.chance(0.3) {
                box_blur(out, side);
            }
            if rng.chance(0.4) {
                let std = rng.range(0.01, 0.06) as f32;
                let noise = rng.normals_f32(out.len());
                for (v, n) in out.iter_mut().zip(noise) {
                    *v = (*v + n * std).clamp(0.0, 1.0);
                }
            }
        }
    }
    Ok((Tensor::from_vec(data, (scenes.len(), 3, side, side), device)?, coverage))
}

fn box_blur(planes: &mut [f32], side: usize) {
    let plane = side * side;
    for c in 0..3 {
        let src: Vec<f32> = planes[c * plane..(c + 1) * plane].to_vec();
        for y in 0..side {
            for x in 0..side {
                let mut sum = 0.0;
                let mut n = 0.0;
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                        if (0..side as i64).contains(&yy) && (0..side as i64).contains(&xx) {
                            sum += src[yy as usize * side + xx as usize];
                            n += 1.0;
                        }
                    }
                }
                planes[c * plane + y * side + x] = sum / n;
            }
        }
    }
}
