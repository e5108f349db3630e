//! The data layer every other layer shares: `RunSettings` (everything a run needs, for the
//! command line, the studio and session files), the prompt and schedule syntaxes, the
//! augmentation and cutout choices, one-step sampling. Plain data with serde and
//! defaults; `validate` checks it without I/O. Nothing here imports another layer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod animation;
pub mod batch;
pub mod coarse;
pub mod generator;
pub mod looks;
pub mod png;
pub mod prompt;
pub mod queue;
pub mod region;
pub mod schedule;

use coarse::validate_schedule;
pub use coarse::CoarseStage;
pub use generator::{FftSettings, GeneratorSettings};
pub use looks::Looks;
use prompt::{parse_noise_prompt, parse_prompt};
pub use region::{Mask, Region, RegionCutouts};

/// The switchable augmentations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    Flip,
    Affine,
    Perspective,
    Jitter,
    Erase,
    Blur,
    Noise,
}

impl Augment {
    /// All augmentations, in the order they are applied.
    pub const ALL: [Augment; 7] =
        [Self::Flip, Self::Affine, Self::Perspective, Self::Jitter, Self::Erase, Self::Blur, Self::Noise];

    /// The augmentation named `name` (its [`Augment::name`], case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Flip => "flip",
            Self::Affine => "affine",
            Self::Perspective => "perspective",
            Self::Jitter => "jitter",
            Self::Erase => "erase",
            Self::Blur => "blur",
            Self::Noise => "noise",
        }
    }
}

/// How the cutouts are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CutMethod {
    /// Random crops of random sizes, resampled (the z+quantize notebook).
    Notebook,
    /// The whole image, `(adaptive avg pool + adaptive max pool) / 2` (nerdyrodent).
    Pooled,
}

/// How the latent starts when there is no init image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitNoise {
    /// Random codebook vectors (the notebook's default).
    #[default]
    Codes,
    /// An image of random pixels, encoded.
    Pixels,
    /// An image of random colour gradients, encoded.
    Gradient,
}

/// How the init-image regulariser weighs over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitWeightMode {
    /// `init_weight · MSE(z, z_orig) / 2` (the notebook).
    #[default]
    Constant,
    /// nerdyrodent's `init_weight / (2i + 1) · MSE(z, 0) / 2`.
    Decay,
}

/// The optimisers on offer (from nerdyrodent's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adam,
    AdamW,
    Adagrad,
    Adamax,
    RmsProp,
}

impl OptimizerKind {
    pub const ALL: [Self; 5] = [Self::Adam, Self::AdamW, Self::Adagrad, Self::Adamax, Self::RmsProp];

    pub fn name(self) -> &'static str {
        match self {
            Self::Adam => "adam",
            Self::AdamW => "adamw",
            Self::Adagrad => "adagrad",
            Self::Adamax => "adamax",
            Self::RmsProp => "rmsprop",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// The number format the frozen networks (CLIP and the VQGAN) run in. The latent, its
/// optimiser, the cutouts and the losses stay in f32, as under PyTorch's autocast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// IEEE half: half the weights' memory, fast on GPUs with tensor cores.
    F16,
    /// bfloat16: f32's range in half the memory (Ampere GPUs and later).
    Bf16,
}

impl Precision {
    pub const ALL: [Self; 3] = [Self::F32, Self::F16, Self::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Bytes per weight.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }
}

/// A quality preset (pixray's `--quality`): how many CLIPs score and how many cutouts
/// each step makes; `engine::quality` fits it to the memory there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Draft,
    Normal,
    Better,
}

impl Quality {
    pub const ALL: [Self; 3] = [Self::Draft, Self::Normal, Self::Better];

    pub fn name(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Normal => "normal",
            Self::Better => "better",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The cutouts a step makes.
    pub fn cutn(self) -> usize {
        match self {
            Self::Draft => 16,
            Self::Normal => 32,
            Self::Better => 64,
        }
    }

    /// How many CLIPs score, where that many are installed.
    pub fn clips(self) -> usize {
        match self {
            Self::Draft => 1,
            Self::Normal => 2,
            Self::Better => 3,
        }
    }
}

/// A step learning-rate schedule: multiply by `gamma` every `every` iterations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrStep {
    pub every: usize,
    pub gamma: f64,
}

/// How a one-step model draws its codes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Logits are divided by this; 0 takes the likeliest code.
    pub temperature: f64,
    /// Keep only the k likeliest codes; 0 keeps all.
    pub top_k: usize,
    /// Keep the likeliest codes whose probabilities add up to this; 1 keeps all.
    pub top_p: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: 0, top_p: 0.9 }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature)) {
            return Err(format!("temperature must be between 0 and 100, got {}", self.temperature));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p must be above 0 and at most 1, got {}", self.top_p));
        }
        Ok(())
    }
}

/// Writes a path as text, lossily where it is not Unicode (each invalid sequence becomes
/// U+FFFD). serde's own `PathBuf` refuses such a path, which would cost a PNG its
/// metadata and a run its session; a lossy name in them only means the file must be
/// named again (by flag) to run from them.
#[expect(clippy::ref_option, reason = "serde's serialize_with passes the field by reference")]
fn lossy_path<S: serde::Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// [`lossy_path`] for a path that is always there.
fn lossy_path_buf<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

/// Another CLIP scoring the image beside the run's first (pixray's several perceptors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraClip {
    /// A Hugging Face CLIP folder, or an installed model's name.
    #[serde(serialize_with = "lossy_path_buf")]
    pub path: PathBuf,
    /// Its losses' weight.
    pub weight: f64,
}

/// A variation of a run's random start (A1111's variation seed): the start is mixed
/// from the run's own and `seed`'s, `strength` of the way toward `seed`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variation {
    pub seed: u64,
    /// 0 is the run's own start, byte for byte; 1 is `seed`'s.
    pub strength: f64,
}

/// One-step drafting (CLIP-GEN): a one-step model draws candidate code grids for the
/// prompts, CLIP ranks them, and the run starts from the chosen one (iteration 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OneStepSettings {
    /// The one-step model's folder; none: the shapes world's.
    #[serde(serialize_with = "lossy_path")]
    pub model: Option<PathBuf>,
    /// Candidates drawn and ranked.
    pub candidates: usize,
    pub sampling: Sampling,
    /// Which ranked candidate the run starts from (0: CLIP's favourite).
    pub pick: usize,
}

impl Default for OneStepSettings {
    fn default() -> Self {
        Self { model: None, candidates: 8, sampling: Sampling::default(), pick: 0 }
    }
}

impl OneStepSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.candidates == 0 || self.candidates > 256 {
            return Err(format!("candidates must be between 1 and 256, got {}", self.candidates));
        }
        if self.pick >= self.candidates {
            return Err(format!(
                "pick {} is not one of the {} candidates (0 to {})",
                self.pick,
                self.candidates,
                self.candidates - 1
            ));
        }
        self.sampling.validate()
    }
}

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// Text prompts, each `text[:weight[:stop]]`.
    pub prompts: Vec<String>,
    /// Story mode: prompt sets that take turns; when non-empty it replaces `prompts`.
    pub story: Vec<Vec<String>>,
    /// Story mode switches to the next set every this many iterations.
    pub story_every: usize,
    /// Target images, each `path[:weight[:stop]]`.
    pub image_prompts: Vec<String>,
    /// Noise prompts, each `seed[:weight]`.
    pub noise_prompts: Vec<String>,
    /// Region prompts: text prompts scored only inside (or outside) a mask. Left out of
    /// the JSON when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    /// How region prompts see the canvas; left out of the JSON at its default.
    #[serde(skip_serializing_if = "RegionCutouts::is_default")]
    pub region_cutouts: RegionCutouts,
    /// What draws the image: the VQGAN (the default), pixel cells or Fourier
    /// coefficients. Left out of the JSON when it is the VQGAN, so that files written
    /// before there was a choice read and write the same.
    #[serde(skip_serializing_if = "GeneratorSettings::is_vqgan")]
    pub generator: GeneratorSettings,
    #[serde(serialize_with = "lossy_path")]
    pub init_image: Option<PathBuf>,
    pub init_noise: InitNoise,
    pub init_weight: f64,
    pub init_weight_mode: InitWeightMode,
    /// Weight of the total-variation (smoothness) loss on the image; 0 is off.
    pub tv_weight: f64,
    /// The look losses' weights (saturation, symmetry); left out of the JSON when all are
    /// off, as files written before them were.
    #[serde(skip_serializing_if = "Looks::is_off")]
    pub looks: Looks,
    /// Coarse-to-fine search: the latent moves in blocks of `factor` tokens until each
    /// stage's iteration (see `engine::coarse`); empty is the notebook's search.
    pub coarse: Vec<CoarseStage>,
    pub width: usize,
    pub height: usize,
    pub iterations: usize,
    pub lr: f64,
    pub lr_step: Option<LrStep>,
    pub optimizer: OptimizerKind,
    pub cutn: usize,
    pub cut_pow: f64,
    pub cut_method: CutMethod,
    pub augments: Vec<Augment>,
    /// The notebook's cutout noise factor.
    pub noise_fac: f64,
    pub seed: u64,
    /// A variation of the random start; left out of the JSON when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variation: Option<Variation>,
    #[serde(serialize_with = "lossy_path")]
    pub vqgan: Option<PathBuf>,
    #[serde(serialize_with = "lossy_path")]
    pub vqgan_config: Option<PathBuf>,
    #[serde(serialize_with = "lossy_path")]
    pub clip: Option<PathBuf>,
    /// The weight of `clip`'s losses beside `extra_clips`' (1 when it scores alone).
    #[serde(skip_serializing_if = "is_one")]
    pub clip_weight: f64,
    /// More CLIPs scoring the same image: each sees the step's crops at its own input
    /// size, and its losses add, times its weight. Left out of the JSON when there are
    /// none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_clips: Vec<ExtraClip>,
    /// `auto` (the first GPU the build can use, else the CPU), `cpu`, `cuda[:N]`, `metal`.
    pub device: String,
    /// The frozen networks' number format (`--precision`).
    pub precision: Precision,
    /// Keep (and report) a frame every this many iterations.
    pub save_every: usize,
    /// Start from a one-step draft instead of `init_noise`.
    pub one_step: Option<OneStepSettings>,
    /// An animation's frames, motion and schedules (`clipcanvas animate`); absent for a
    /// single image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub animation: Option<animation::AnimationSettings>,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            prompts: Vec::new(),
            story: Vec::new(),
            story_every: 50,
            image_prompts: Vec::new(),
            noise_prompts: Vec::new(),
            regions: Vec::new(),
            region_cutouts: RegionCutouts::Masked,
            generator: GeneratorSettings::Vqgan,
            init_image: None,
            init_noise: InitNoise::Codes,
            init_weight: 0.0,
            init_weight_mode: InitWeightMode::Constant,
            tv_weight: 0.0,
            looks: Looks::default(),
            coarse: Vec::new(),
            width: 256,
            height: 256,
            iterations: 300,
            lr: 0.1,
            lr_step: None,
            optimizer: OptimizerKind::Adam,
            cutn: 32,
            cut_pow: 1.0,
            cut_method: CutMethod::Notebook,
            augments: vec![Augment::Flip, Augment::Affine, Augment::Perspective, Augment::Jitter, Augment::Noise],
            noise_fac: 0.1,
            seed: 0,
            variation: None,
            vqgan: None,
            vqgan_config: None,
            clip: None,
            clip_weight: 1.0,
            extra_clips: Vec::new(),
            device: "auto".to_owned(),
            precision: Precision::F32,
            save_every: 50,
            one_step: None,
            animation: None,
        }
    }
}

impl RunSettings {
    /// True when no model is named: a run then uses the built-in shapes world.
    pub fn names_no_models(&self) -> bool {
        self.vqgan.is_none() && self.clip.is_none()
    }

    /// The settings the shapes world's models were made for: 128×128, 150 iterations,
    /// 16 cutouts with affine and noise augmentation, the latent moving in 2×2 token
    /// blocks for the first 100 iterations (coarse-to-fine; on the meaning test's 36 runs
    /// it raised right backgrounds from 31 to 35 and right shape colours from 17 to 23,
    /// README), no model paths (the built-in world). A fresh studio starts here,
    /// `generate` without models too, and train-demo hardens its CLIP against runs made
    /// with them.
    pub fn shapes_world() -> Self {
        Self {
            vqgan: None,
            clip: None,
            width: 128,
            height: 128,
            cutn: 16,
            iterations: 150,
            augments: vec![Augment::Affine, Augment::Noise],
            coarse: vec![CoarseStage { factor: 2, until: 100 }],
            ..Self::default()
        }
    }

    /// The extra CLIP passes a step makes for region prompts: one per distinct scored
    /// part of the canvas with masked cutouts, none with centred ones.
    pub fn region_passes(&self) -> usize {
        if self.region_cutouts != RegionCutouts::Masked {
            return 0;
        }
        let mut parts: Vec<(&Mask, bool)> = Vec::new();
        for r in &self.regions {
            if !parts.contains(&(&r.mask, r.outside)) {
                parts.push((&r.mask, r.outside));
            }
        }
        parts.len()
    }

    /// The prompt sets of the run: the story stages, or the one set of `prompts`.
    pub fn prompt_stages(&self) -> Vec<Vec<String>> {
        if self.story.is_empty() {
            vec![self.prompts.clone()]
        } else {
            self.story.clone()
        }
    }

    /// Checks that every iteration of a run would have something to optimise: each prompt
    /// stage needs a prompt with a non-zero weight, unless an image or noise prompt, the
    /// init-image pull or smoothness does. (Prompts that do not parse are for
    /// [`RunSettings::validate`] to report.) Not part of `validate`: a run of no
    /// iterations needs none.
    pub fn check_objective(&self) -> Result<(), String> {
        let weighted =
            |prompts: &[String]| prompts.iter().filter_map(|p| parse_prompt(p).ok()).any(|p| p.weight != 0.0);
        let always = weighted(&self.image_prompts)
            || self.noise_prompts.iter().filter_map(|p| parse_noise_prompt(p).ok()).any(|(_, w)| w != 0.0)
            || self.regions.iter().filter_map(|r| parse_prompt(&r.prompt).ok()).any(|p| p.weight != 0.0)
            || self.init_weight != 0.0
            || self.tv_weight > 0.0;
        if always {
            return Ok(());
        }
        let stages = self.prompt_stages();
        let Some(i) = stages.iter().position(|stage| !weighted(stage)) else { return Ok(()) };
        let which = if stages.len() > 1 { format!(" in story stage {}", i + 1) } else { String::new() };
        let why = if stages[i].is_empty() { "there is no prompt" } else { "every prompt has weight 0" };
        Err(format!(
            "nothing to optimise{which}: {why}; give a prompt with a non-zero weight, an image prompt or a noise prompt"
        ))
    }

    /// Checks the settings; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        for stage in self.prompt_stages() {
            for p in &stage {
                parse_prompt(p)?;
            }
        }
        for p in &self.image_prompts {
            parse_prompt(p)?;
        }
        for p in &self.noise_prompts {
            parse_noise_prompt(p)?;
        }
        for r in &self.regions {
            r.validate()?;
        }
        if self.width == 0 || self.height == 0 || self.width > 8192 || self.height > 8192 {
            return Err(format!("size {}x{} is out of range (1 to 8192 per side)", self.width, self.height));
        }
        if self.cutn == 0 || self.cutn > 1024 {
            return Err(format!("cutn {} is out of range (1 to 1024)", self.cutn));
        }
        if !(self.cut_pow.is_finite() && self.cut_pow > 0.0) {
            return Err(format!("cut_pow must be a positive number, got {}", self.cut_pow));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("learning rate must be a positive number, got {}", self.lr));
        }
        if !self.init_weight.is_finite() || !self.tv_weight.is_finite() || self.tv_weight < 0.0 {
            return Err("init_weight and tv_weight must be finite (tv_weight ≥ 0)".into());
        }
        if !(self.noise_fac.is_finite() && self.noise_fac >= 0.0) {
            return Err(format!("noise_fac must be ≥ 0, got {}", self.noise_fac));
        }
        if let Some(s) = self.lr_step {
            if s.every == 0 || !(s.gamma.is_finite() && s.gamma > 0.0) {
                return Err("lr_step needs every ≥ 1 and a positive gamma".into());
            }
        }
        validate_schedule(&self.coarse)?;
        self.validate_clips()?;
        self.generator.validate(self.width, self.height)?;
        self.looks.validate()?;
        if self.region_cutouts == RegionCutouts::Centres
            && self.cut_method == CutMethod::Pooled
            && !self.regions.is_empty()
        {
            return Err("region prompts with centred cutouts need crops (cut method notebook); pooled cutouts are the whole image".into());
        }
        if !self.coarse.is_empty() && !self.generator.has_grid() {
            return Err(format!(
                "coarse-to-fine search moves a grid in blocks; the {} generator has none (leave coarse out)",
                self.generator.name()
            ));
        }
        if let Some(one) = &self.one_step {
            one.validate()?;
            if self.generator != GeneratorSettings::Vqgan {
                return Err(format!(
                    "a one-step draft is a grid of VQGAN codes; it cannot start a run of the {} generator",
                    self.generator.name()
                ));
            }
            if self.init_image.is_some() {
                return Err("a one-step draft is the start of the run; it cannot be combined with an init image".into());
            }
        }
        if let Some(v) = &self.variation {
            if !(v.strength.is_finite() && (0.0..=1.0).contains(&v.strength)) {
                return Err(format!("the variation strength must be between 0 and 1, got {}", v.strength));
            }
            if self.init_image.is_some() || self.one_step.is_some() {
                return Err("a variation varies the random start; a run from an init image or a one-step draft has \
                            none (leave the variation seed out)"
                    .into());
            }
        }
        if !self.story.is_empty() && self.story_every == 0 {
            return Err("story_every must be at least 1".into());
        }
        if let Some(a) = &self.animation {
            a.validate()?;
        }
        Ok(())
    }

    /// Checks the CLIPs' weights, and that several CLIPs name the first too.
    fn validate_clips(&self) -> Result<(), String> {
        let weights = std::iter::once(self.clip_weight).chain(self.extra_clips.iter().map(|c| c.weight));
        for w in weights {
            if !(w.is_finite() && w > 0.0 && w <= 1000.0) {
                return Err(format!("a CLIP's weight must be above 0 and at most 1000, got {w}"));
            }
        }
        if !self.extra_clips.is_empty() && self.clip.is_none() {
            return Err("several CLIPs score only models named by path or name (--clip A,B); the built-in \
                        shapes world has one"
                .into());
        }
        Ok(())
    }

    /// The learning rate at iteration `i`.
    pub fn lr_at(&self, i: usize) -> f64 {
        match self.lr_step {
            Some(s) => {
                let k = i32::try_from(i / s.every).unwrap_or(i32::MAX);
                self.lr * s.gamma.powi(k)
            }
            None => self.lr,
        }
    }

    /// Takes the relative image paths — the init image and the image prompts — from `dir`,
    /// the folder of the settings file (or PNG) they were read from, as a document's links
    /// are; a path `keep` says to leave as it is stays as it was. Pure path work: the
    /// caller decides what `keep` looks at. An image prompt whose joined path is not
    /// Unicode (prompts are text) stays as it was.
    pub fn resolve_relative_to(&mut self, dir: &Path, keep: impl Fn(&Path) -> bool) {
        if dir.as_os_str().is_empty() || dir == Path::new(".") {
            return;
        }
        let resolve = |p: &Path| (p.is_relative() && !keep(p)).then(|| dir.join(p));
        if let Some(joined) = self.init_image.as_deref().and_then(resolve) {
            self.init_image = Some(joined);
        }
        if let Some(a) = &mut self.animation {
            if let Some(joined) = a.input_frames.as_deref().and_then(resolve) {
                a.input_frames = Some(joined);
            }
        }
        for prompt in &mut self.image_prompts {
            let Ok(spec) = parse_prompt(prompt) else { continue };
            let lead = prompt.len() - prompt.trim_start().len();
            let Some(tail) = prompt.get(lead..).and_then(|rest| rest.strip_prefix(spec.text.as_str())) else {
                continue;
            };
            if let Some(joined) = resolve(Path::new(&spec.text)) {
                if let Some(joined) = joined.to_str() {
                    *prompt = format!("{joined}{tail}");
                }
            }
        }
    }

    /// Parses settings from JSON (the format of settings files and PNG metadata).
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("invalid settings ({e})"))
    }

    /// The settings as a settings file's JSON; an error (one line) rather than an empty
    /// file.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| format!("cannot write the settings ({e})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_have_their_serde_forms() {
        assert_eq!(serde_json::to_string(&CutMethod::Pooled).unwrap(), "\"pooled\"");
        assert_eq!(serde_json::from_str::<CutMethod>("\"notebook\"").unwrap(), CutMethod::Notebook);
        assert_eq!(serde_json::to_string(&Augment::Blur).unwrap(), "\"blur\"");
        assert_eq!(Augment::parse(" Affine "), Some(Augment::Affine));
    }

    #[cfg(unix)]
    #[test]
    fn paths_that_are_not_unicode_are_written_lossily() {
        use std::os::unix::ffi::OsStrExt;
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"init-\xff.png"));
        let settings = RunSettings {
            init_image: Some(odd.clone()),
            clip: Some(odd.clone()),
            one_step: Some(OneStepSettings { model: Some(odd), ..OneStepSettings::default() }),
            ..RunSettings::default()
        };
        let back = RunSettings::from_json(&settings.to_json().unwrap()).unwrap();
        assert_eq!(back.init_image, Some(PathBuf::from("init-\u{fffd}.png")));
        assert_eq!(back.clip, back.init_image);
        assert_eq!(back.one_step.and_then(|o| o.model), back.init_image);
        assert_eq!(back.vqgan, None);
    }

    #[test]
    fn every_stage_needs_something_to_optimise() {
        let with = |prompts: &[&str]| RunSettings {
            prompts: prompts.iter().map(|p| (*p).to_owned()).collect(),
            ..RunSettings::default()
        };
        assert_eq!(with(&["a cat", "b:0"]).check_objective(), Ok(()));
        assert_eq!(with(&["a cat:-1"]).check_objective(), Ok(()));
        assert!(with(&[]).check_objective().unwrap_err().contains("there is no prompt"));
        assert!(with(&["a:0"]).check_objective().unwrap_err().contains("every prompt has weight 0"));
        // Image and noise prompts, the init pull and smoothness count for every stage.
        for s in [
            RunSettings { noise_prompts: vec!["3".into()], ..with(&["a:0"]) },
            RunSettings { image_prompts: vec!["x.png:2".into()], ..with(&[]) },
            RunSettings { init_weight: 0.5, ..with(&[]) },
            RunSettings { tv_weight: 0.1, ..with(&[]) },
        ] {
            assert_eq!(s.check_objective(), Ok(()), "{s:?}");
        }
        assert!(RunSettings { noise_prompts: vec!["3:0".into()], ..with(&[]) }.check_objective().is_err());
        let story =
            RunSettings { story: vec![vec!["a".into()], vec!["b:0".into()]], story_every: 5, ..RunSettings::default() };
        assert!(story.check_objective().unwrap_err().contains("in story stage 2"), "{:?}", story.check_objective());
    }

    #[test]
    fn relative_image_paths_are_taken_from_the_settings_folder() {
        let mut s = RunSettings {
            init_image: Some(PathBuf::from("init.png")),
            image_prompts: vec![" target.png:0.5:-0.2".into(), "/abs/t.png:2".into(), "kept.png".into()],
            ..RunSettings::default()
        };
        s.resolve_relative_to(Path::new("../runs"), |p| p == Path::new("kept.png"));
        assert_eq!(s.init_image, Some(PathBuf::from("../runs/init.png")));
        assert_eq!(s.image_prompts, ["../runs/target.png:0.5:-0.2", "/abs/t.png:2", "kept.png"]);
        // A file in the current folder changes nothing.
        let before = s.clone();
        s.resolve_relative_to(Path::new("."), |_| false);
        s.resolve_relative_to(Path::new(""), |_| false);
        assert_eq!(s, before);
    }
}
