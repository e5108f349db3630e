//! A session's targets, for every CLIP that scores: the text prompts of
//! each story stage, the image and noise prompts and the region prompts, each embedded by
//! that CLIP; the cutouts each CLIP sees (at its own input size) and the loss terms of a
//! step. Methods of [`Session`]; this file only looks up to it.

use std::path::PathBuf;

use candle_core::{DType, Tensor};

use super::{Session, StepNoise, StepPlan};
use crate::engine::augment::{self, AugmentParams};
use crate::engine::cutouts;
use crate::engine::error::{EngineError, Result};
use crate::engine::image::{load_rgb, resize_keep_aspect, rgb_to_tensor};
use crate::engine::loss::{LabelledTarget, PromptTarget};
use crate::engine::region::Regions;
use crate::engine::rng::Rng;
use crate::models::clip::Clip;
use crate::models::tokenizer::ClipTokenizer;
use crate::settings::prompt::{excerpt, parse_noise_prompt, parse_prompt};
use crate::settings::{CutMethod, RegionCutouts};

impl Session {
    /// The CLIP `p` (0: the first; then `extra_clips`' in order) and its tokenizer.
    pub(super) fn perceptor(&self, p: usize) -> (&Clip, &ClipTokenizer) {
        match p.checked_sub(1).and_then(|i| self.models.extra_clips.get(i)) {
            Some((clip, tokenizer)) => (clip, tokenizer),
            None => (&self.models.clip, &self.models.tokenizer),
        }
    }

    /// The weight of CLIP `p`'s losses.
    pub(super) fn perceptor_weight(&self, p: usize) -> f64 {
        match p.checked_sub(1) {
            Some(i) => self.settings.extra_clips.get(i).map_or(1.0, |c| c.weight),
            None => self.settings.clip_weight,
        }
    }

    /// How many CLIPs score: the first and the extra ones (the models hold as many as
    /// the settings name, see [`Session::new`]).
    pub(super) fn perceptors(&self) -> usize {
        1 + self.models.extra_clips.len()
    }

    /// Every story stage's text prompts, embedded by CLIP `p`.
    pub(super) fn stage_targets(&mut self, p: usize) -> Result<Vec<Vec<LabelledTarget>>> {
        self.settings.prompt_stages().iter().map(|stage| self.text_targets(stage, p)).collect()
    }

    pub(super) fn text_targets(&mut self, prompts: &[String], p: usize) -> Result<Vec<LabelledTarget>> {
        let mut out = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let spec = parse_prompt(prompt).map_err(EngineError::Input)?;
            let (clip, tokenizer) = self.perceptor(p);
            let (ids, truncated) = tokenizer.encode(&spec.text)?;
            let n = ids.len();
            let ids = Tensor::from_vec(ids, (1, n), &self.models.device)?;
            let embed = clip.encode_text(&ids)?.detach();
            let notice = format!("prompt {:?} is longer than CLIP's 77 tokens and was truncated", excerpt(&spec.text));
            if truncated && !self.notices.contains(&notice) {
                self.notices.push(notice);
            }
            out.push(LabelledTarget {
                label: spec.text.clone(),
                target: PromptTarget { embed, weight: spec.weight, stop: spec.stop },
            });
        }
        Ok(out)
    }

    /// The region prompts' targets, each with the part of the canvas it scores; a mask
    /// of another size than the canvas is resized to it, with a notice.
    pub(super) fn region_targets(&mut self, p: usize) -> Result<Regions> {
        let mut parts = Vec::new();
        for region in self.settings.regions.clone() {
            let mut scored = region.scored();
            let (mw, mh) = (scored.width(), scored.height());
            if (mw, mh) != (self.width, self.height) {
                let notice =
                    format!("a region mask of {mw}x{mh} was resized to the canvas, {}x{}", self.width, self.height);
                if !self.notices.contains(&notice) {
                    self.notices.push(notice);
                }
                scored = scored.resized(self.width, self.height);
            }
            let Some(mut target) = self.text_targets(std::slice::from_ref(&region.prompt), p)?.pop() else { continue };
            if scored.covered() == 0 {
                return Err(EngineError::Input(format!(
                    "the mask of region prompt {:?} covers nothing at the canvas's size",
                    excerpt(&target.label)
                )));
            }
            target.label = format!("{}: {}", if region.outside { "outside" } else { "region" }, target.label);
            parts.push((scored, target));
        }
        Regions::new(self.settings.region_cutouts, parts, self.width, self.height, &self.models.device)
    }

    /// The region prompts' loss terms for a step: each group's targets scored on its
    /// masked cutouts (one more CLIP pass), or on the step's `embeds` of the crops centred
    /// in its part (0 when none is).
    pub(super) fn region_terms(
        &self,
        p: usize,
        image: &Tensor,
        plan: &StepPlan,
        embeds: &Tensor,
    ) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let Some(regions) = self.targets.get(p).map(|t| &t.regions) else { return Ok(out) };
        for group in &regions.groups {
            let seen = match regions.mode {
                RegionCutouts::Masked => {
                    let painted = group.paint(image)?;
                    let painted = match plan.roll {
                        Some((dx, dy)) => crate::engine::looks::roll(&painted, dx, dy)?,
                        None => painted,
                    };
                    let cut = self.cutouts(&painted, plan, p)?;
                    Some(self.perceptor(p).0.encode_image(&Clip::normalize(&cut)?)?)
                }
                RegionCutouts::Centres => {
                    let rows = group.crops_inside(&plan.crops, plan.roll);
                    if rows.is_empty() {
                        None
                    } else {
                        let n = rows.len();
                        let index = Tensor::from_vec(rows, n, embeds.device())?;
                        Some(embeds.index_select(&index, 0)?)
                    }
                }
            };
            for t in &group.targets {
                let loss = match &seen {
                    Some(e) => t.target.loss(e)?,
                    None => Tensor::zeros((), DType::F32, embeds.device())?,
                };
                out.push((t.label.clone(), loss));
            }
        }
        Ok(out)
    }

    /// The image and noise prompts' targets, for every CLIP (the first's first). Each
    /// image prompt is cut once, by one plan, for all of them.
    pub(super) fn fixed_targets(&mut self, rng: &mut Rng) -> Result<Vec<Vec<LabelledTarget>>> {
        let n = self.perceptors();
        let mut out: Vec<Vec<LabelledTarget>> = vec![Vec::new(); n];
        for prompt in self.settings.image_prompts.clone() {
            let spec = parse_prompt(&prompt).map_err(EngineError::Input)?;
            let path = PathBuf::from(&spec.text);
            let rgb = load_rgb(&path)?;
            let (w, h) =
                (u32::try_from(self.width).unwrap_or(u32::MAX), u32::try_from(self.height).unwrap_or(u32::MAX));
            let rgb = resize_keep_aspect(&rgb, w, h);
            let img = rgb_to_tensor(&rgb, &self.models.device)?;
            let plan = self.random_plan_for(rgb.width() as usize, rgb.height() as usize, rng);
            for (p, targets) in out.iter_mut().enumerate() {
                let target = self.image_target_for(p, &img, &plan, spec.weight, spec.stop)?;
                targets.push(LabelledTarget { label: format!("image: {}", path.display()), target });
            }
        }
        for prompt in self.settings.noise_prompts.clone() {
            let (seed, weight) = parse_noise_prompt(&prompt).map_err(EngineError::Input)?;
            for (p, targets) in out.iter_mut().enumerate() {
                let dim = self.perceptor(p).0.config().projection_dim;
                let values = Rng::new(seed).normals_f32(dim);
                let embed = Tensor::from_vec(values, (1, dim), &self.models.device)?;
                targets.push(LabelledTarget {
                    label: format!("noise: {seed}"),
                    target: PromptTarget { embed, weight, stop: f64::NEG_INFINITY },
                });
            }
        }
        Ok(out)
    }

    /// The target of an image prompt: CLIP embeddings of the image's cutouts, `[cutn, D]`,
    /// cut once at setup as the reference does. `img` is `[1, 3, H, W]` in `[0, 1]`.
    pub fn image_target(&self, img: &Tensor, plan: &StepPlan, weight: f64, stop: f64) -> Result<PromptTarget> {
        self.image_target_for(0, img, plan, weight, stop)
    }

    pub(super) fn image_target_for(
        &self,
        p: usize,
        img: &Tensor,
        plan: &StepPlan,
        weight: f64,
        stop: f64,
    ) -> Result<PromptTarget> {
        let batch = self.cutouts(img, plan, p)?;
        let embed = self.perceptor(p).0.encode_image(&Clip::normalize(&batch)?)?.detach();
        Ok(PromptTarget { embed, weight, stop })
    }

    /// The cutouts CLIP `p` sees: the plan's crops resampled to its input size, its
    /// augmentations (their pixel sizes scaled from the first CLIP's) and its noise.
    pub(super) fn cutouts(&self, img: &Tensor, plan: &StepPlan, p: usize) -> Result<Tensor> {
        let first = self.models.clip.image_size();
        let s = self.perceptor(p).0.image_size();
        let mut batch = match self.settings.cut_method {
            CutMethod::Notebook => cutouts::cut(img, &plan.crops, s)?,
            CutMethod::Pooled => cutouts::pooled(img, self.settings.cutn, s)?,
        };
        if plan.augments.iter().any(|a| *a != AugmentParams::default()) {
            batch = if s == first {
                augment::apply(&batch, &plan.augments)?
            } else {
                let scaled: Vec<AugmentParams> = plan.augments.iter().map(|a| a.rescaled(first, s)).collect();
                augment::apply(&batch, &scaled)?
            };
        }
        let noise = if s == first {
            plan.noise.as_ref()
        } else {
            plan.sized_noise.iter().find(|(n, _)| *n == s).map(|(_, noise)| noise)
        };
        match noise {
            Some(StepNoise::Host { facs, values }) => batch = augment::add_noise(&batch, facs, values)?,
            Some(StepNoise::Device { seed, fac }) => batch = augment::add_device_noise(&batch, *seed, *fac)?,
            None => {}
        }
        Ok(batch)
    }

    /// The input sizes of the other CLIPs that differ from the first's, each once.
    pub(super) fn other_sizes(&self) -> Vec<usize> {
        let first = self.models.clip.image_size();
        let mut sizes: Vec<usize> = Vec::new();
        for p in 1..self.perceptors() {
            let s = self.perceptor(p).0.image_size();
            if s != first && !sizes.contains(&s) {
                sizes.push(s);
            }
        }
        sizes
    }

    /// CLIP `p`'s prompt terms at iteration `it`: the story stage's text prompts, the
    /// image and noise prompts and the region prompts, on its cutout embeddings.
    pub(super) fn perceptor_terms(
        &self,
        p: usize,
        it: usize,
        image: &Tensor,
        plan: &StepPlan,
        embeds: &Tensor,
    ) -> Result<Vec<(String, Tensor)>> {
        let Some(targets) = self.targets.get(p) else { return Ok(Vec::new()) };
        let stages = targets.stages.len();
        let stage = if stages > 1 { (it / self.settings.story_every.max(1)) % stages } else { 0 };
        let mut out = Vec::new();
        for t in targets.stages.get(stage).into_iter().flatten().chain(&targets.fixed) {
            out.push((t.label.clone(), t.target.loss(embeds)?));
        }
        out.extend(self.region_terms(p, image, plan, embeds)?);
        Ok(out)
    }
}
