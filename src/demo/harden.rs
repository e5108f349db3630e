//! Hardening the shapes CLIP against what `generate` finds in it.
//!
//! A CLIP trained only on clean scenes is fooled by the optimiser: 150 Adam steps
//! through the VQGAN find blob textures it scores above a real red circle on blue. So
//! the last part of the CLIP's training runs `generate` itself against the CLIP as it
//! is being trained — a pool of [`Session`]s, each chasing the caption of a random
//! scene from random codes, one engine step per training step and a fresh start after
//! a run's length — and teaches the CLIP to score each chaser's image below a real
//! picture of its scene (the scene drawn and passed through the VQGAN, so the two
//! differ in content and not in the decoder's look). As in contrastive-divergence
//! training of energy models, what the optimiser can reach is pushed down until what
//! it reaches looks like the data.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::data::{scene_batch, CLIP_SIDE, SCENE_SIDE};
use super::error::Result;
use super::scene::{CaptionStyle, Scene};
use crate::engine::cutouts;
use crate::engine::loaded::Models;
use crate::engine::rng::Rng;
use crate::engine::session::Session;
use crate::models::clip::Clip;
use crate::models::ops::composed::l2_normalize;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vqgan::Vqgan;
use crate::settings::RunSettings;

/// One `generate` run chasing a scene's caption.
struct Chaser {
    session: Session,
    scene: Scene,
    caption: String,
    /// The run restarts after this many steps.
    ends_at: usize,
}

/// What one step of the pool made: each chaser's image before its update, and what it
/// was chasing.
pub(crate) struct Chase {
    /// `[P, 3, SCENE_SIDE, SCENE_SIDE]` in `[0, 1]`, detached.
    pub images: Tensor,
    pub scenes: Vec<Scene>,
    pub captions: Vec<String>,
}

/// Runs of `generate` against the CLIP being trained.
pub(crate) struct Pool {
    models: Arc<Models>,
    chasers: Vec<Chaser>,
    rng: Rng,
    settings: RunSettings,
}

impl Pool {
    /// `size` chasers running `generate` with `settings` (the shapes world's: a run is
    /// `settings.iterations` steps); their first runs are cut short at staggered lengths,
    /// so after one run's length the pool holds images of every age. `clip` must share
    /// its weights with the model being trained (built from the same variables), so the
    /// chasers always see the CLIP as it is now.
    pub fn new(models: (Clip, ClipTokenizer, Vqgan), settings: RunSettings, size: usize, seed: u64) -> Result<Self> {
        let (clip, tokenizer, vqgan) = models;
        let models = Arc::new(Models {
            vqgan: Some(vqgan),
            clip,
            tokenizer,
            extra_clips: Vec::new(),
            device: Device::Cpu,
            source: None,
            onestep: None,
        });
        let mut pool = Self { models, chasers: Vec::with_capacity(size), rng: Rng::new(seed), settings };
        let life = pool.settings.iterations.max(1);
        for i in 0..size {
            let first = (life * (i + 1) / size).max(1);
            let chaser = pool.spawn(first)?;
            pool.chasers.push(chaser);
        }
        Ok(pool)
    }

    fn spawn(&mut self, life: usize) -> Result<Chaser> {
        let scene = Scene::random(&mut self.rng, 0.15);
        let caption = scene.caption_styled(&CaptionStyle::random(&mut self.rng));
        let settings =
            RunSettings { prompts: vec![caption.clone()], seed: self.rng.next_u64(), ..self.settings.clone() };
        let session = Session::new(self.models.clone(), settings)?;
        Ok(Chaser { session, scene, caption, ends_at: life })
    }

    /// The VQGAN the chasers decode with.
    pub fn vqgan(&self) -> crate::engine::Result<&Vqgan> {
        self.models.vqgan()
    }

    /// One engine step of every chaser against the current weights (text prompts
    /// embedded again first: the text tower is training too); runs that reached their
    /// length start again from random codes with a new scene.
    pub fn step(&mut self) -> Result<Chase> {
        let life = self.settings.iterations.max(1);
        for i in 0..self.chasers.len() {
            if self.chasers[i].session.iteration() >= self.chasers[i].ends_at {
                self.chasers[i] = self.spawn(life)?;
            }
        }
        let mut images = Vec::with_capacity(self.chasers.len());
        for c in &mut self.chasers {
            c.session.embed_prompts_again()?;
            images.push(c.session.step()?.image);
        }
        Ok(Chase {
            images: Tensor::cat(&images, 0)?,
            scenes: self.chasers.iter().map(|c| c.scene).collect(),
            captions: self.chasers.iter().map(|c| c.caption.clone()).collect(),
        })
    }
}

/// The chasers' scenes as the VQGAN gives them back: drawn at `SCENE_SIDE`, encoded,
/// quantised and decoded, `[P, 3, S, S]` in `[0, 1]`, detached.
pub(crate) fn real_through_vqgan(vqgan: &Vqgan, scenes: &[Scene], rng: &mut Rng) -> Result<Tensor> {
    let x = ((scene_batch(scenes, SCENE_SIDE, rng, false, &Device::Cpu)? * 2.0)? - 1.0)?;
    let out = vqgan.decode(&vqgan.encode(&x)?)?;
    Ok(((out + 1.0)? / 2.0)?.clamp(0.0, 1.0)?.detach())
}

/// Random crops (the notebook's, `views` per image) of each fake and of its real
/// counterpart, the same crops for both, as CLIP input `[P·views, 3, CLIP_SIDE²]`.
pub(crate) fn paired_views(fakes: &Tensor, reals: &Tensor, views: usize, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    let (p, _, h, w) = fakes.dims4()?;
    let (mut f, mut r) = (Vec::with_capacity(p), Vec::with_capacity(p));
    for i in 0..p {
        let crops = cutouts::random_crops(rng, views, CLIP_SIDE, 1.0, w, h);
        f.push(cutouts::cut(&fakes.narrow(0, i, 1)?, &crops, CLIP_SIDE)?);
        r.push(cutouts::cut(&reals.narrow(0, i, 1)?, &crops, CLIP_SIDE)?);
    }
    Ok((Tensor::cat(&f, 0)?, Tensor::cat(&r, 0)?))
}

/// The hardening loss: for every view, `softplus(scale·(cos(fake, text) − cos(real,
/// text) + margin))`, averaged. `fake` and `real` are unit image embeddings `[P·V, D]`
/// (the views of chaser `i` at rows `i·V..(i+1)·V`), `text` the unit caption embeddings
/// `[P, D]`. The chasers need not beat the real picture to be pushed down: a fragmented
/// texture that scores a little below the real scene is still where 150 steps end, so
/// every image within `margin` of its real picture costs, as in contrastive divergence;
/// those far below cost almost nothing. Also returns the mean gap `cos(fake) − cos(real)`.
pub(crate) fn chase_loss(
    fake: &Tensor,
    real: &Tensor,
    text: &Tensor,
    scale: f64,
    margin: f64,
) -> Result<(Tensor, f64)> {
    let (p, d) = text.dims2()?;
    let views = fake.dim(0)? / p.max(1);
    let t = text.unsqueeze(1)?.broadcast_as((p, views, d))?.reshape((p * views, d))?;
    let fake_sim = (fake * &t)?.sum(1)?;
    let real_sim = (real * &t)?.sum(1)?;
    let gap = (fake_sim - real_sim)?;
    let mean_gap = f64::from(gap.mean_all()?.to_scalar::<f32>()?);
    let x = ((gap + margin)? * scale)?;
    // softplus(x) = log(1 + e^x), written stably for large x.
    let soft = ((x.abs()?.neg()?.exp()? + 1.0)?.log()? + x.relu()?)?;
    Ok((soft.mean_all()?, mean_gap))
}

/// Unit image embeddings of CLIP input in `[0, 1]`.
pub(crate) fn embed(clip: &Clip, pixels: &Tensor) -> Result<Tensor> {
    Ok(l2_normalize(&clip.encode_image(&Clip::normalize(&pixels.to_dtype(DType::F32)?)?)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn world() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/shapes-world")
    }

    #[test]
    fn the_pool_steps_every_run_and_restarts_each_after_its_length() {
        let (clip, tok) = crate::models::clip::load(&world().join("clip"), DType::F32, &Device::Cpu).unwrap();
        let vqgan =
            crate::models::vqgan::load(&world().join("vqgan/model.safetensors"), None, DType::F32, &Device::Cpu)
                .unwrap();
        let settings = RunSettings { width: 64, height: 64, iterations: 2, cutn: 2, ..RunSettings::shapes_world() };
        let mut pool = Pool::new((clip, tok, vqgan), settings, 2, 5).unwrap();
        let first = pool.step().unwrap();
        assert_eq!(first.images.dims(), [2, 3, 64, 64]);
        let (lo, hi) = (first.images.min_all().unwrap(), first.images.max_all().unwrap());
        assert!(lo.to_scalar::<f32>().unwrap() >= 0.0 && hi.to_scalar::<f32>().unwrap() <= 1.0);
        assert!(first.captions.iter().all(|c| !c.is_empty()));
        // Run 0's first life is one step, run 1's two: run 0 starts again now, run 1 next.
        let second = pool.step().unwrap();
        assert_eq!(second.captions[1], first.captions[1]);
        let third = pool.step().unwrap();
        assert_eq!(third.captions[0], second.captions[0], "run 0's second life is two steps");
        assert!(
            second.captions[0] != first.captions[0] || second.scenes[0] != first.scenes[0],
            "run 0 did not start again"
        );
        assert!(
            third.captions[1] != second.captions[1] || third.scenes[1] != second.scenes[1],
            "run 1 did not start again"
        );
    }

    fn unit(rows: &[[f32; 2]]) -> Tensor {
        Tensor::from_vec(rows.iter().flatten().copied().collect::<Vec<_>>(), (rows.len(), 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn chase_loss_is_softplus_of_the_scaled_gap_per_view() {
        // One caption along x; two views: the fake wins the first, loses the second.
        let text = unit(&[[1.0, 0.0]]);
        let fake = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let real = unit(&[[0.6, 0.8], [0.8, 0.6]]);
        let (got, gap) = chase_loss(&fake, &real, &text, 10.0, 0.1).unwrap();
        let got = got.to_scalar::<f32>().unwrap();
        assert!((gap - (0.4 - 0.8) / 2.0).abs() < 1e-6, "{gap}");
        let softplus = |x: f64| (1.0 + x.exp()).ln();
        let want = (softplus(10.0 * (1.0 - 0.6 + 0.1)) + softplus(10.0 * (0.0 - 0.8 + 0.1))) / 2.0;
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn chase_loss_pairs_each_chasers_views_with_its_own_caption() {
        // Two chasers with a view each: chaser 0 chases x, chaser 1 chases y.
        let text = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let fake = unit(&[[1.0, 0.0], [1.0, 0.0]]);
        let real = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let got = chase_loss(&fake, &real, &text, 50.0, 0.0).unwrap().0.to_scalar::<f32>().unwrap();
        // Chaser 0 ties (softplus 0 = ln 2); chaser 1's fake is far below its real one.
        let want = (2f64.ln() + (1.0 + (-50f64).exp()).ln()) / 2.0;
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
    }
}
