//! A run: the generator's parameters (the "latent": the VQGAN's z for the notebook's
//! z+quantize, or another generator's, see `engine::generator`), the optimiser, the
//! prompts, the look losses and the random state, stepped one iteration at a time. Both
//! the studio and `clipcanvas generate` drive it. A session saves to one file
//! (safetensors with JSON metadata and a checksum, see `session_file.rs`) and resumes
//! exactly where it stopped. What each CLIP scores, and how, is in `targets.rs`.

mod targets;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::augment::{self, AugmentParams};
use super::coarse::block_average;
use super::cutouts::{self, Crop};
use super::draft::{check_fit, draft, embed_image_file, Candidate, Target};
use super::error::{EngineError, Result};
use super::generator::{self, Generator};
use super::image::tensor_to_rgb;
use super::loaded::Models;
use super::looks::LookLosses;
pub use super::loss::LabelledTarget;
use super::loss::{init_loss, tv_loss};
use super::observer::{Frame, Observer, StepRate, StepStats};
use super::optim::{Optimizer, OptimizerMeta};
use super::profile::{StageClock, StageTimes};
use super::region::Regions;
use super::rng::Rng;
use super::session_file;
use super::transfer;
use crate::models::clip::Clip;
use crate::settings::coarse::factor_at;
use crate::settings::prompt::parse_prompt;
use crate::settings::{Augment, CutMethod, GeneratorSettings, InitNoise, InitWeightMode, OneStepSettings, RunSettings};

/// The random choices of one step: crops, augmentation parameters, noise. Drawn from the
/// session's generator, or given (tests against the reference, replays).
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    pub crops: Vec<Crop>,
    pub augments: Vec<AugmentParams>,
    pub noise: Option<StepNoise>,
    /// Seamless tiling: the image is rolled by `(x, y)` pixels (wrapping around) before
    /// the cutouts are made, so its edges are scored as neighbours.
    pub roll: Option<(usize, usize)>,
    /// The noise of the cutouts at the other CLIPs' input sizes (side, noise), when
    /// several CLIPs of different sizes score (`noise` is the first CLIP's).
    pub sized_noise: Vec<(usize, StepNoise)>,
}

/// The notebook's cutout noise for one step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepNoise {
    /// Per-cutout factors and the standard normal values, drawn on the host by the
    /// session's generator: on the CPU, and in the tests against the reference.
    Host { facs: Vec<f32>, values: Vec<f32> },
    /// Drawn on the device by its own generator, seeded from the session's: on a GPU,
    /// where host-drawn noise would be the largest copy of an iteration (`cutn·3·S·S`
    /// floats).
    Device { seed: u64, fac: f64 },
}

/// One CLIP's targets.
#[derive(Debug, Default)]
struct Targets {
    /// Text prompts per story stage.
    stages: Vec<Vec<LabelledTarget>>,
    /// Image and noise prompts, active throughout.
    fixed: Vec<LabelledTarget>,
    /// Region prompts, active throughout.
    regions: Regions,
}

/// What a step computed.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub iteration: usize,
    pub total: f64,
    pub losses: Vec<(String, f64)>,
    pub lr: f64,
    /// The image of the parameters before the update, `[1, 3, H, W]` in `[0, 1]`,
    /// detached.
    pub image: Tensor,
    /// Where the step's time went (exact per stage only when profiling, see
    /// [`Session::set_profiling`]).
    pub stages: StageTimes,
}

impl StepOutput {
    /// The step's statistics for an observer, in a run of `iterations`.
    pub fn stats(self, iterations: usize, its_per_sec: f64) -> StepStats {
        StepStats {
            iteration: self.iteration,
            iterations,
            total_loss: self.total,
            losses: self.losses,
            its_per_sec,
            lr: self.lr,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Finished,
    Cancelled,
}

const SESSION_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct SessionMeta {
    version: u32,
    settings: RunSettings,
    iteration: usize,
    rng: Rng,
    optimizer: OptimizerMeta,
    #[serde(default)]
    steering: Vec<SteerRecord>,
}

/// A live change to a run and the iteration it took effect at, kept in the session so
/// the run can be replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteerRecord {
    pub iteration: usize,
    pub change: SteerChange,
}

/// What a live change set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SteerChange {
    Prompts(Vec<String>),
    ImagePrompts(Vec<String>),
    LearningRate(f64),
}

/// A run in progress.
#[derive(Debug)]
pub struct Session {
    models: Arc<Models>,
    settings: RunSettings,
    generator: Box<dyn Generator>,
    /// The generator's parameters, optimised.
    z: Var,
    /// What the init regulariser pulls the parameters toward.
    z_orig: Tensor,
    /// The look losses in use (saturation, symmetry).
    looks: LookLosses,
    optimizer: Optimizer,
    rng: Rng,
    iteration: usize,
    /// Each CLIP's targets: the first's, then `extra_clips`' in order.
    targets: Vec<Targets>,
    width: usize,
    height: usize,
    notices: Vec<String>,
    /// The gradient of the last step's loss with respect to the parameters.
    last_grad: Option<Tensor>,
    /// Live changes, in order.
    steering: Vec<SteerRecord>,
    /// Synchronise the device between stages so their times are exact.
    profiling: bool,
    /// The one-step draft's candidates, best first, when the run started from one.
    drafts: Vec<Candidate>,
}

impl Session {
    /// Sets up a run: the generator and its canvas (the VQGAN's rounded down to its
    /// factor), the prompt embeddings, and the initial parameters.
    pub fn new(models: Arc<Models>, settings: RunSettings) -> Result<Self> {
        settings.validate().map_err(EngineError::Input)?;
        if models.extra_clips.len() != settings.extra_clips.len() {
            return Err(EngineError::Input(format!(
                "the settings name {} more CLIP(s) and the models loaded hold {}",
                settings.extra_clips.len(),
                models.extra_clips.len()
            )));
        }
        let (generator, notices) = generator::build(&models, &settings)?;
        let (width, height) = generator.size();
        let looks = LookLosses::new(settings.looks.clone(), width, height, &models.device)?;

        let mut root = Rng::new(settings.seed);
        let mut init_rng = root.fork();
        let mut prompt_rng = root.fork();
        let rng = root.fork();
        let mut draft_rng = root.fork();

        let mut z0 = generator::initial(generator.as_ref(), &settings, &mut init_rng)?;
        if let Some(v) = settings.variation.filter(|v| v.strength > 0.0) {
            // The start the variation seed draws, as a run of that seed draws it.
            let mut root = Rng::new(v.seed);
            let other = generator::initial(generator.as_ref(), &settings, &mut root.fork())?;
            z0 = generator::vary(&settings.generator, &z0, &other, v.strength, &mut root.fork())?;
        }
        let mut session = Self {
            models,
            generator,
            z: Var::from_tensor(&z0)?,
            z_orig: z0,
            looks,
            optimizer: Optimizer::new(settings.optimizer),
            rng,
            iteration: 0,
            targets: Vec::new(),
            width,
            height,
            notices,
            settings,
            last_grad: None,
            steering: Vec::new(),
            profiling: false,
            drafts: Vec::new(),
        };
        let fixed = session.fixed_targets(&mut prompt_rng)?;
        for (p, fixed) in fixed.into_iter().enumerate() {
            let stages = session.stage_targets(p)?;
            let regions = session.region_targets(p)?;
            session.targets.push(Targets { stages, fixed, regions });
        }
        if let Some(one) = session.settings.one_step.clone() {
            session.start_from_draft(&one, &mut draft_rng)?;
        }
        Ok(session)
    }

    /// Sets up a run that starts from an image in memory (an animation's warped previous
    /// frame, or a source frame being restyled): as [`Session::new`] with that image as
    /// the init image, resized to the canvas if it is not its size. `settings`' own init
    /// image, init noise and one-step draft are not used.
    pub fn with_start_image(models: Arc<Models>, mut settings: RunSettings, start: &image::RgbImage) -> Result<Self> {
        settings.init_image = None;
        settings.init_noise = InitNoise::Codes;
        settings.one_step = None;
        let mut session = Self::new(models, settings)?;
        let z = generator::encode_resized(session.generator.as_ref(), start)?;
        session.z = Var::from_tensor(&z)?;
        session.z_orig = z;
        Ok(session)
    }

    /// Draws the one-step candidates for the first prompt stage (or, without text
    /// prompts, the image prompts) and starts the latent, and the init regulariser's
    /// target, at the chosen one.
    fn start_from_draft(&mut self, one: &OneStepSettings, rng: &mut Rng) -> Result<()> {
        let models = Arc::clone(&self.models);
        let onestep = models.onestep.as_ref().ok_or_else(|| {
            EngineError::Input("this run asks for a one-step draft but no one-step model was loaded".into())
        })?;
        if self.settings.generator != GeneratorSettings::Vqgan {
            return Err(EngineError::Input("a one-step draft starts only a run of the VQGAN generator".into()));
        }
        let f = models.vqgan()?.config().downsample_factor();
        let (toks_x, toks_y) = (self.width / f, self.height / f);
        check_fit(onestep, &models, toks_x, toks_y)?;
        let mut targets: Vec<Target> = self
            .targets
            .first()
            .and_then(|t| t.stages.first())
            .map(|s| s.iter().map(|t| (t.target.embed.clone(), t.target.weight)).collect())
            .unwrap_or_default();
        if targets.is_empty() {
            for p in &self.settings.image_prompts {
                let spec = parse_prompt(p).map_err(EngineError::Input)?;
                targets.push((embed_image_file(&models, Path::new(&spec.text))?, spec.weight));
            }
        }
        let drafts = draft(&models, onestep, &targets, one, rng)?;
        let chosen = drafts.get(one.pick).ok_or_else(|| {
            EngineError::Input(format!("pick {} is not one of the {} candidates", one.pick, drafts.len()))
        })?;
        let z = models.vqgan()?.embed_indices(&chosen.codes)?;
        self.z = Var::from_tensor(&z)?;
        self.z_orig = z;
        self.drafts = drafts;
        Ok(())
    }

    /// Starts over from another of the ranked draft candidates (before any iteration).
    pub fn pick_draft(&mut self, rank: usize) -> Result<()> {
        if self.iteration > 0 {
            return Err(EngineError::Input("the run has moved on from its draft".into()));
        }
        let chosen = self.drafts.get(rank).ok_or_else(|| {
            EngineError::Input(format!("draft {rank} is not one of the {} candidates", self.drafts.len()))
        })?;
        let z = self.models.vqgan()?.embed_indices(&chosen.codes)?;
        self.z = Var::from_tensor(&z)?;
        self.z_orig = z;
        self.optimizer = Optimizer::new(self.settings.optimizer);
        if let Some(one) = &mut self.settings.one_step {
            one.pick = rank;
        }
        Ok(())
    }

    /// The one-step draft's candidates, best first (empty when the run did not start
    /// from a draft).
    pub fn drafts(&self) -> &[Candidate] {
        &self.drafts
    }

    /// Notices for the user from setup (size rounding, truncated prompts).
    /// Times each stage exactly, at the cost of waiting for the device between them.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
    }

    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    pub fn iteration(&self) -> usize {
        self.iteration
    }

    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The generator's parameters (the VQGAN's latent, the pixel cells' colours, the
    /// Fourier coefficients).
    pub fn latent(&self) -> &Tensor {
        self.z.as_tensor()
    }

    /// The gradient of the last step's loss with respect to the parameters.
    pub fn last_gradient(&self) -> Option<&Tensor> {
        self.last_grad.as_ref()
    }

    /// Replaces the latent (branching from a kept frame, or a given start in tests).
    pub fn set_latent(&mut self, z: &Tensor) -> Result<()> {
        if z.dims() != self.z.as_tensor().dims() {
            return Err(EngineError::Input(format!(
                "latent shape {:?} does not match {:?}",
                z.dims(),
                self.z.as_tensor().dims()
            )));
        }
        self.z.set(&z.to_device(&self.models.device)?.to_dtype(DType::F32)?)?;
        Ok(())
    }

    /// Sets the latent the init regulariser pulls toward.
    pub fn set_init_latent(&mut self, z: &Tensor) -> Result<()> {
        self.z_orig = z.to_device(&self.models.device)?.to_dtype(DType::F32)?;
        Ok(())
    }

    /// Replaces the text prompts (all story stages become this one set). On error
    /// nothing changes.
    pub fn set_prompts(&mut self, prompts: &[String]) -> Result<()> {
        let embedded = (0..self.targets.len()).map(|p| self.text_targets(prompts, p)).collect::<Result<Vec<_>>>()?;
        self.settings.prompts = prompts.to_vec();
        self.settings.story.clear();
        for (t, stage) in self.targets.iter_mut().zip(embedded) {
            t.stages = vec![stage];
        }
        self.record(SteerChange::Prompts(prompts.to_vec()));
        Ok(())
    }

    /// Embeds the text prompts again with the CLIP as it is now: for a CLIP whose
    /// weights change between steps (the shapes world's training runs sessions against
    /// the model it trains). Not a live change: nothing is recorded.
    pub fn embed_prompts_again(&mut self) -> Result<()> {
        for p in 0..self.targets.len() {
            self.targets[p].stages = self.stage_targets(p)?;
        }
        Ok(())
    }

    /// Replaces the first CLIP's image and noise prompt targets.
    pub fn set_fixed_targets(&mut self, targets: Vec<LabelledTarget>) {
        if let Some(t) = self.targets.first_mut() {
            t.fixed = targets;
        }
    }

    /// Replaces the image prompts (`path[:weight[:stop]]`) mid-run and embeds them again;
    /// noise prompts are kept. The cutouts come from the generator [`Session::new`] uses,
    /// so a saved session resumes with the same targets. On error nothing changes.
    pub fn set_image_prompts(&mut self, prompts: &[String]) -> Result<()> {
        let old = std::mem::replace(&mut self.settings.image_prompts, prompts.to_vec());
        let mut root = Rng::new(self.settings.seed);
        let _init_rng = root.fork();
        let mut prompt_rng = root.fork();
        match self.fixed_targets(&mut prompt_rng) {
            Ok(fixed) => {
                for (t, fixed) in self.targets.iter_mut().zip(fixed) {
                    t.fixed = fixed;
                }
                self.record(SteerChange::ImagePrompts(prompts.to_vec()));
                Ok(())
            }
            Err(e) => {
                self.settings.image_prompts = old;
                Err(e)
            }
        }
    }

    /// Sets the planned number of iterations (a resumed run may go further).
    pub fn extend_iterations(&mut self, iterations: usize) {
        self.settings.iterations = iterations;
    }

    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(EngineError::Input(format!("learning rate must be positive, got {lr}")));
        }
        self.settings.lr = lr;
        self.record(SteerChange::LearningRate(lr));
        Ok(())
    }

    fn record(&mut self, change: SteerChange) {
        self.steering.push(SteerRecord { iteration: self.iteration, change });
    }

    /// The live changes made to this run, with the iterations they took effect at.
    pub fn steering(&self) -> &[SteerRecord] {
        &self.steering
    }

    fn random_plan_for(&self, width: usize, height: usize, rng: &mut Rng) -> StepPlan {
        let s = self.models.clip.image_size();
        let st = &self.settings;
        let crops = match st.cut_method {
            CutMethod::Notebook => cutouts::random_crops(rng, st.cutn, s, st.cut_pow, width, height),
            CutMethod::Pooled => Vec::new(),
        };
        let geometric: Vec<Augment> = st.augments.iter().copied().filter(|a| *a != Augment::Noise).collect();
        let augments = (0..st.cutn).map(|_| augment::random_params(&geometric, s, rng)).collect();
        let noisy = st.augments.contains(&Augment::Noise) && st.noise_fac > 0.0;
        let draw_noise = |size: usize, rng: &mut Rng| {
            if self.models.device.is_cpu() {
                let (facs, values) = augment::random_noise(st.cutn, size, st.noise_fac, rng);
                StepNoise::Host { facs, values }
            } else {
                StepNoise::Device { seed: rng.next_u64(), fac: st.noise_fac }
            }
        };
        let noise = noisy.then(|| draw_noise(s, rng));
        // Drawn after the rest, and only when tiling or when other CLIPs need noise at
        // their sizes: the other draws stay as without them.
        let roll = st.looks.tile.then(|| (rng.below(width.max(1)), rng.below(height.max(1))));
        let sized_noise = if noisy {
            self.other_sizes().into_iter().map(|size| (size, draw_noise(size, rng))).collect()
        } else {
            Vec::new()
        };
        StepPlan { crops, augments, noise, roll, sized_noise }
    }

    /// Draws the next step's plan from the session's generator.
    pub fn next_plan(&mut self) -> StepPlan {
        let mut rng = self.rng.clone();
        let plan = self.random_plan_for(self.width, self.height, &mut rng);
        self.rng = rng;
        plan
    }

    /// The image of the current parameters, `[1, 3, H, W]` in `[0, 1]`.
    pub fn render(&self) -> Result<Tensor> {
        Ok(self.generator.render(&self.z.as_tensor().detach())?.clamp(0.0, 1.0)?)
    }

    /// The current image as RGB8.
    pub fn render_rgb(&self) -> Result<image::RgbImage> {
        tensor_to_rgb(&self.render()?)
    }

    /// One iteration with a random plan. A step that fails leaves the session as it was
    /// (its random state included), so what is saved after a failure resumes exactly.
    pub fn step(&mut self) -> Result<StepOutput> {
        let rng = self.rng.clone();
        let plan = self.next_plan();
        let out = self.step_with(&plan);
        if out.is_err() {
            self.rng = rng;
        }
        out
    }

    /// One iteration with the given plan: render, cut out, embed, loss, backward,
    /// optimiser step, the generator's clamp (the VQGAN's: to the codebook's range). On
    /// error nothing has changed.
    pub fn step_with(&mut self, plan: &StepPlan) -> Result<StepOutput> {
        let device = self.models.device.clone();
        let sync = self.profiling.then_some(&device);
        let mut clock = StageClock::start(sync)?;
        let it = self.iteration;
        let lr = self.settings.lr_at(it);
        let z = self.z.as_tensor().clone();
        let image = self.generator.render(&z)?;
        clock.times.decode = clock.lap()?;
        let seen = match plan.roll {
            Some((dx, dy)) => super::looks::roll(&image, dx, dy)?,
            None => image.clone(),
        };
        let cut = self.cutouts(&seen, plan, 0)?;
        let batch = Clip::normalize(&cut)?;
        clock.times.cutouts = clock.lap()?;
        let embeds = self.models.clip.encode_image(&batch)?;
        clock.times.clip = clock.lap()?;

        let mut terms: Vec<(String, Tensor)> = Vec::new();
        if self.settings.init_weight != 0.0 {
            let decay = self.settings.init_weight_mode == InitWeightMode::Decay;
            terms.push(("init".to_owned(), init_loss(&z, &self.z_orig, self.settings.init_weight, decay, it)?));
        }
        for p in 0..self.targets.len() {
            let clip = self.perceptor(p).0;
            let embeds = if p == 0 {
                embeds.clone()
            } else if clip.image_size() == self.models.clip.image_size() {
                // The same cutouts, seen by another CLIP of the same input size.
                clip.encode_image(&batch)?
            } else {
                clip.encode_image(&Clip::normalize(&self.cutouts(&seen, plan, p)?)?)?
            };
            let weight = self.perceptor_weight(p);
            for (label, term) in self.perceptor_terms(p, it, &image, plan, &embeds)? {
                let term = if weight == 1.0 { term } else { (term * weight)? };
                // The same prompt scored by several CLIPs is one term: their sum.
                match terms.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, t)) if p > 0 => *t = (&*t + term)?,
                    _ => terms.push((label, term)),
                }
            }
        }
        if self.targets.len() > 1 {
            clock.times.clip += clock.lap()?;
        }
        if self.settings.tv_weight > 0.0 {
            terms.push(("tv".to_owned(), (tv_loss(&image)? * self.settings.tv_weight)?));
        }
        terms.extend(self.looks.terms(&image, &cut)?);
        if terms.is_empty() {
            return Err(EngineError::Input(
                "nothing to optimise: give a prompt, an image prompt or a noise prompt".into(),
            ));
        }
        let mut total = terms[0].1.clone();
        for (_, t) in &terms[1..] {
            total = (total + t)?;
        }
        // The total and every term come back in one download: the only one of a step.
        let mut values: Vec<Tensor> = vec![total.reshape(1)?];
        values.extend(terms.iter().map(|(_, t)| t.reshape(1)).collect::<candle_core::Result<Vec<_>>>()?);
        let host = transfer::download_f32(&Tensor::cat(&values, 0)?)?;
        let total_value = f64::from(host[0]);
        if !total_value.is_finite() {
            return Err(EngineError::NanLoss { iteration: it });
        }
        let losses = terms.iter().zip(&host[1..]).map(|((l, _), v)| (l.clone(), f64::from(*v))).collect();

        clock.times.loss = clock.lap()?;
        let grads = total.backward()?;
        let g = grads
            .get(&z)
            .ok_or_else(|| EngineError::Input("the loss does not depend on the generator's parameters".into()))?;
        // Coarse-to-fine: the latent moves in blocks while a stage is active.
        let g = &block_average(g, factor_at(&self.settings.coarse, it))?;
        clock.times.backward = clock.lap()?;
        // The optimiser counts and moves its moments as it steps: on a copy, kept only
        // once the latent has moved too.
        let mut optimizer = self.optimizer.clone();
        let updated = optimizer.step(&z, g, lr)?;
        self.z.set(&self.generator.clamp(&updated)?)?;
        self.optimizer = optimizer;
        self.last_grad = Some(g.clone());
        clock.times.optimiser = clock.lap()?;
        self.iteration += 1;
        Ok(StepOutput { iteration: it, total: total_value, losses, lr, image: image.detach(), stages: clock.times })
    }

    /// Runs until `iterations` are done or `cancel` is set, reporting to `observer`.
    pub fn run(&mut self, observer: &mut dyn Observer, cancel: &AtomicBool) -> Result<RunEnd> {
        self.run_saving(observer, cancel, 0, &mut |_| Ok(()))
    }

    /// [`Session::run`], handing the session to `checkpoint` every `checkpoint_every` iterations
    /// (0: never) so that it can be saved (an autosave). A checkpoint that fails is a
    /// notice, once, and the run goes on: the run itself is not lost to a full disk.
    pub fn run_saving(
        &mut self,
        observer: &mut dyn Observer,
        cancel: &AtomicBool,
        checkpoint_every: usize,
        checkpoint: &mut dyn FnMut(&Session) -> Result<()>,
    ) -> Result<RunEnd> {
        let mut warned = false;
        for notice in self.take_notices() {
            observer.notice(&notice);
        }
        let mut rate = StepRate::default();
        while self.iteration < self.settings.iterations {
            if cancel.load(Ordering::Relaxed) {
                return Ok(RunEnd::Cancelled);
            }
            let started = Instant::now();
            let out = self.step()?;
            let its_per_sec = rate.record(started.elapsed().as_secs_f64());
            let every = observer.frame_every();
            if every > 0 && out.iteration % every == 0 {
                observer.on_frame(out.iteration, &Frame::from_rgb(&tensor_to_rgb(&out.image)?));
            }
            observer.on_step(&out.stats(self.settings.iterations, its_per_sec));
            let due = checkpoint_every > 0 && self.iteration.is_multiple_of(checkpoint_every);
            if due && self.iteration < self.settings.iterations {
                if let Err(e) = checkpoint(self) {
                    if !std::mem::replace(&mut warned, true) {
                        observer.notice(&format!("autosave failed ({e}); the run goes on"));
                    }
                }
            }
        }
        Ok(RunEnd::Finished)
    }

    /// The session file's bytes: latent, init latent, optimiser moments as tensors;
    /// settings, iteration, random state and optimiser counters as JSON metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        tensors.insert("z".into(), self.z.as_tensor().to_device(&Device::Cpu)?);
        tensors.insert("z_orig".into(), self.z_orig.to_device(&Device::Cpu)?);
        let (m, v) = self.optimizer.moments();
        if let Some(m) = m {
            tensors.insert("opt_m".into(), m.to_device(&Device::Cpu)?);
        }
        if let Some(v) = v {
            tensors.insert("opt_v".into(), v.to_device(&Device::Cpu)?);
        }
        let meta = SessionMeta {
            version: SESSION_VERSION,
            settings: self.settings.clone(),
            iteration: self.iteration,
            rng: self.rng.clone(),
            optimizer: self.optimizer.meta(),
            steering: self.steering.clone(),
        };
        let json = serde_json::to_string(&meta).map_err(|e| EngineError::Input(e.to_string()))?;
        session_file::encode(json, tensors)
    }

    /// Writes the session file to `path` atomically: what is there is the old session or
    /// the new one, never part of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        crate::files::write_atomic(path, |w| std::io::Write::write_all(w, &bytes))
            .map_err(|e| EngineError::Output(e.to_string()))
    }

    /// Reads a session file's settings without loading models (to know which to load).
    pub fn read_settings(path: &Path) -> Result<RunSettings> {
        Ok(read_session(path)?.0.settings)
    }

    /// Reads a session file's settings and the iteration it reached, without loading
    /// models (to know which to load, and what a resumed run can still do).
    pub fn read_saved(path: &Path) -> Result<(RunSettings, usize)> {
        let meta = read_session(path)?.0;
        Ok((meta.settings, meta.iteration))
    }

    /// Resumes a saved session on `models`: it continues exactly as the uninterrupted run.
    pub fn resume(models: Arc<Models>, path: &Path) -> Result<Self> {
        let (meta, tensors) = read_session(path)?;
        let bad = |msg: &str| EngineError::Session { path: path.to_path_buf(), msg: msg.to_owned() };
        let mut settings = meta.settings.clone();
        // The latent is restored, so setup need not encode the init image again.
        settings.init_image = None;
        settings.init_noise = InitNoise::Codes;
        let dev = models.device.clone();
        let mut session = Self::new(models, settings)?;
        session.settings.init_image = meta.settings.init_image.clone();
        session.settings.init_noise = meta.settings.init_noise;
        let get = |name: &str| -> Result<Option<Tensor>> {
            Ok(match tensors.get(name) {
                Some(t) => Some(t.to_device(&dev)?),
                None => None,
            })
        };
        let z = get("z")?.ok_or_else(|| bad("no latent 'z' in the file"))?;
        let z_orig = get("z_orig")?.ok_or_else(|| bad("no 'z_orig' in the file"))?;
        session.set_latent(&z).map_err(|_| bad("its latent does not fit these models and size"))?;
        session.z_orig = z_orig;
        session.optimizer = Optimizer::restore(&meta.optimizer, get("opt_m")?, get("opt_v")?);
        session.rng = meta.rng;
        session.iteration = meta.iteration;
        session.steering = meta.steering;
        Ok(session)
    }
}

fn read_session(path: &Path) -> Result<(SessionMeta, HashMap<String, Tensor>)> {
    let bad = |msg: String| EngineError::Session { path: path.to_path_buf(), msg };
    let (json, tensors) = session_file::decode(path)?;
    let meta: SessionMeta =
        serde_json::from_str(&json).map_err(|e| bad(format!("unreadable session metadata ({e})")))?;
    if meta.version != SESSION_VERSION {
        return Err(bad(format!("session version {} is not supported", meta.version)));
    }
    Ok((meta, tensors))
}
