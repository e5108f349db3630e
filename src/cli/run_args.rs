//! The flags `generate` and `animate` share — prompts, the start, the canvas, the
//! cutouts and augmentations, the optimiser, the models, the device, a settings file to
//! start from and the one-step draft — and how they apply over a run's settings.

use std::path::{Path, PathBuf};

use clap::Args;

use super::error::CliError;
use crate::export;
use crate::settings::prompt::{split_prompts, split_story};
use crate::settings::{
    Augment, CutMethod, ExtraClip, GeneratorSettings, InitNoise, InitWeightMode, OneStepSettings, OptimizerKind,
    Precision, Quality, Region, RegionCutouts, RunSettings, Variation,
};

pub(super) fn input(msg: impl std::fmt::Display) -> CliError {
    CliError::Input(anyhow::anyhow!("{msg}"))
}

pub(super) fn runtime(e: impl Into<anyhow::Error>) -> CliError {
    CliError::Runtime(e.into())
}

/// The flags of a run that `generate` and `animate` share.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A text prompt "text[:weight[:stop]]"; repeat, or join with "|"; "^" starts the next story stage.
    #[arg(short = 'p', long = "prompt")]
    pub prompts: Vec<String>,
    /// A target image "PATH[:weight[:stop]]"; repeatable.
    #[arg(long = "image-prompt")]
    pub image_prompts: Vec<String>,
    /// A noise prompt "SEED[:weight]"; repeatable.
    #[arg(long = "noise-prompt")]
    pub noise_prompts: Vec<String>,
    /// A region prompt "text[:weight[:stop]]", scored only inside --region-mask;
    /// repeat, or join with "|".
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// A prompt scored only outside --region-mask; repeat, or join with "|".
    #[arg(long = "region-off")]
    pub regions_off: Vec<String>,
    /// The region prompts' mask: an image, light (and opaque) where they apply; resized
    /// to the canvas if it is another size.
    #[arg(long)]
    pub region_mask: Option<PathBuf>,
    /// How region prompts see the canvas: masked (the default: the crops with the rest
    /// painted grey, one more CLIP pass) or centres (the crops centred in the region).
    #[arg(long)]
    pub region_cutouts: Option<String>,
    /// What draws the image: vqgan (the default), pixel (flat cells) or fft (Fourier
    /// coefficients). pixel and fft need no VQGAN weights of their own.
    #[arg(long)]
    pub generator: Option<String>,
    /// The pixel generator's grid of cells "COLSxROWS" (default: 48 across the longer side).
    #[arg(long)]
    pub pixel_size: Option<String>,
    /// The fft generator's frequency decay (default 1.5; higher is smoother).
    #[arg(long)]
    pub fft_decay: Option<f64>,
    /// The fft generator's colour saturation (default 1.5; higher is more colourful).
    #[arg(long)]
    pub fft_colors: Option<f64>,
    /// Start from this image instead of random codes.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// constant (the notebook) or decay (nerdyrodent).
    #[arg(long)]
    pub init_weight_mode: Option<String>,
    /// Without an init image: codes, pixels or gradient.
    #[arg(long)]
    pub init_noise: Option<String>,
    /// Canvas size WxH (rounded down to the VQGAN's factor).
    #[arg(short = 's', long)]
    pub size: Option<String>,
    /// Cutouts per iteration.
    #[arg(long)]
    pub cutn: Option<usize>,
    #[arg(long)]
    pub cut_pow: Option<f64>,
    /// notebook (random crops) or pooled (nerdyrodent's whole-image pooling).
    #[arg(long)]
    pub cut_method: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// A variation of the random start: mixed from the run's seed's and this seed's
    /// (see --variation-strength).
    #[arg(long)]
    pub variation_seed: Option<u64>,
    /// How far toward --variation-seed's start, from 0 (the run's own, byte for byte) to 1
    /// (default 0.1: a near neighbour).
    #[arg(long)]
    pub variation_strength: Option<f64>,
    /// adam, adamw, adagrad, adamax or rmsprop.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Comma-separated augmentations (flip, affine, perspective, jitter, erase, blur, noise), or "none".
    #[arg(long)]
    pub augment: Option<String>,
    /// The cutout noise factor.
    #[arg(long)]
    pub noise_fac: Option<f64>,
    /// Look: smoothness, the total-variation loss's weight (neighbouring pixels alike).
    #[arg(long, visible_alias = "smoothness")]
    pub tv_weight: Option<f64>,
    /// Look: colourfulness loss weight (pixray's saturation; negative: toward grey).
    #[arg(long, allow_negative_numbers = true)]
    pub saturation: Option<f64>,
    /// Look: left–right mirror symmetry loss weight.
    #[arg(long)]
    pub symmetry: Option<f64>,
    /// Look: top–bottom mirror symmetry loss weight.
    #[arg(long)]
    pub symmetry_vertical: Option<f64>,
    /// Look: edge colour loss weight (pixray's; try 1): the border strips pulled to --edge-color.
    #[arg(long)]
    pub edge: Option<f64>,
    /// Look: the border's colour, #RRGGBB, R,G,B (0-255) or a name (default white).
    #[arg(long)]
    pub edge_color: Option<String>,
    /// Look: the border strips' width in percent of the side (default 5).
    #[arg(long)]
    pub edge_thickness: Option<f64>,
    /// Look: make an image that tiles seamlessly (each step sees it rolled around).
    #[arg(long)]
    pub tile: bool,
    /// Look: keep to a palette: colours ("#000000 #ff0000 white"), a file of them (one or
    /// more a line), or a name (rgb, cmyk, bw, pico8).
    #[arg(long)]
    pub palette: Option<String>,
    /// Look: the palette loss's weight (default 1 with --palette).
    #[arg(long)]
    pub palette_weight: Option<f64>,
    /// Coarse-to-fine search "FACTOR:UNTIL[,…]": the latent moves in FACTOR×FACTOR token
    /// blocks until iteration UNTIL (e.g. "4:40,2:80"); "none" is the notebook's search.
    #[arg(long)]
    pub coarse: Option<String>,
    /// The VQGAN checkpoint (.ckpt or .safetensors, with its .yaml beside it), or an
    /// installed model's name (see `clipcanvas models list`).
    #[arg(long)]
    pub vqgan: Option<PathBuf>,
    /// The VQGAN's YAML, if not beside the checkpoint.
    #[arg(long)]
    pub vqgan_config: Option<PathBuf>,
    /// A Hugging Face CLIP folder, or an installed model's name (e.g. clip-vit-b-32);
    /// several, joined with ",", score together (each at its own input size).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// A quality preset: draft, normal or better (16, 32 or 64 cutouts, scored by 1, 2
    /// or 3 of the installed CLIPs unless --clip names them), fitted to the memory
    /// there is: fewer cutouts, then fewer CLIPs, then a smaller size.
    #[arg(long)]
    pub quality: Option<String>,
    /// The CLIPs' weights, joined with "," in --clip's order (default 1 each).
    #[arg(long)]
    pub clip_weights: Option<String>,
    /// auto (the default: the first GPU this build can use, else the CPU), cpu, cuda[:N]
    /// or metal.
    #[arg(long)]
    pub device: Option<String>,
    /// f32, f16 or bf16: the number format CLIP and the VQGAN run in (the latent and its
    /// optimiser stay f32). Half precision is for GPUs; on a CPU it is slower than f32.
    #[arg(long)]
    pub precision: Option<String>,
    /// Start from a settings file (JSON) or a PNG made by clipcanvas; flags override it.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Start from a one-step draft: a one-step model draws candidates for the prompts in
    /// one pass and CLIP ranks them; --iterations then defaults to 0 (the draft alone).
    #[arg(long)]
    pub one_step: bool,
    /// The one-step model's folder (default: the shapes world's); implies --one-step.
    #[arg(long)]
    pub onestep: Option<PathBuf>,
    /// One-step candidates to draw and rank (default 8).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Which ranked candidate to start from (0: CLIP's favourite).
    #[arg(long)]
    pub pick: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Run even when the run's estimated memory is more than the machine has available
    /// (it is refused otherwise; with too little memory it may then be killed).
    #[arg(long)]
    pub no_memory_check: bool,
}

/// The prompt flags as prompt stages: one set, or story stages split at "^".
pub(super) fn prompt_stages(prompts: &[String]) -> Vec<Vec<String>> {
    split_story(&prompts.join(" | ").replace("| ^ |", "^"))
}

/// The settings a run starts from: the resumed session's, a settings file's, the shapes
/// world's when no model is named, or the defaults.
pub(super) fn base_settings(a: &RunArgs) -> Result<RunSettings, CliError> {
    Ok(match &a.settings {
        Some(path) => read_settings_file(path)?,
        // Without models the built-in shapes world runs, with the settings it was made for.
        None if a.vqgan.is_none() && a.clip.is_none() => RunSettings::shapes_world(),
        None => RunSettings::default(),
    })
}

/// Applies the shared flags over `s` (the prompts as one set or story stages; the
/// caller validates once its own flags are in).
pub(super) fn merge_run(a: &RunArgs, s: &mut RunSettings) -> Result<(), CliError> {
    if !a.prompts.is_empty() {
        let stages = prompt_stages(&a.prompts);
        if stages.len() > 1 {
            s.story = stages;
            s.prompts.clear();
        } else {
            s.prompts = stages.into_iter().next().unwrap_or_default();
            s.story.clear();
        }
    }
    if !a.image_prompts.is_empty() {
        s.image_prompts.clone_from(&a.image_prompts);
    }
    if !a.noise_prompts.is_empty() {
        s.noise_prompts.clone_from(&a.noise_prompts);
    }
    merge_regions(a, s)?;
    if a.init_image.is_some() {
        s.init_image.clone_from(&a.init_image);
    }
    if let Some(m) = &a.init_weight_mode {
        s.init_weight_mode = match m.as_str() {
            "constant" => InitWeightMode::Constant,
            "decay" => InitWeightMode::Decay,
            _ => return Err(input(format!("--init-weight-mode must be constant or decay, got {m:?}"))),
        };
    }
    if let Some(n) = &a.init_noise {
        s.init_noise = match n.as_str() {
            "codes" => InitNoise::Codes,
            "pixels" => InitNoise::Pixels,
            "gradient" => InitNoise::Gradient,
            _ => return Err(input(format!("--init-noise must be codes, pixels or gradient, got {n:?}"))),
        };
    }
    if let Some(size) = &a.size {
        (s.width, s.height) = parse_size(size)?;
    }
    merge_generator(a, s)?;
    if let Some(v) = a.cutn {
        s.cutn = v;
    }
    if let Some(v) = a.cut_pow {
        s.cut_pow = v;
    }
    if let Some(m) = &a.cut_method {
        s.cut_method = match m.as_str() {
            "notebook" => CutMethod::Notebook,
            "pooled" => CutMethod::Pooled,
            _ => return Err(input(format!("--cut-method must be notebook or pooled, got {m:?}"))),
        };
    }
    if let Some(v) = a.seed {
        s.seed = v;
    }
    match (a.variation_seed, a.variation_strength, &mut s.variation) {
        (Some(seed), strength, _) => {
            s.variation = Some(Variation { seed, strength: strength.unwrap_or(0.1) });
        }
        (None, Some(strength), Some(v)) => v.strength = strength,
        (None, Some(_), None) => return Err(input("--variation-strength needs a --variation-seed")),
        (None, None, _) => {}
    }
    if let Some(o) = &a.optimizer {
        s.optimizer = OptimizerKind::parse(o).ok_or_else(|| {
            let names: Vec<&str> = OptimizerKind::ALL.iter().map(|k| k.name()).collect();
            input(format!("unknown optimizer {o:?} (expected one of {})", names.join(", ")))
        })?;
    }
    if let Some(list) = &a.augment {
        s.augments = if list.trim().eq_ignore_ascii_case("none") {
            Vec::new()
        } else {
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| Augment::parse(n).ok_or_else(|| input(format!("unknown augmentation {n:?}"))))
                .collect::<Result<_, _>>()?
        };
    }
    if let Some(v) = a.noise_fac {
        s.noise_fac = v;
    }
    if let Some(v) = a.tv_weight {
        s.tv_weight = v;
    }
    if let Some(v) = a.saturation {
        s.looks.saturation = v;
    }
    if let Some(v) = a.symmetry {
        s.looks.symmetry = v;
    }
    if let Some(v) = a.symmetry_vertical {
        s.looks.symmetry_vertical = v;
    }
    if let Some(v) = a.edge {
        s.looks.edge = v;
    }
    if let Some(c) = &a.edge_color {
        s.looks.edge_color = crate::settings::looks::parse_color(c).map_err(|e| input(format!("--edge-color: {e}")))?;
    }
    if let Some(v) = a.edge_thickness {
        s.looks.edge_thickness = v;
    }
    if a.tile {
        s.looks.tile = true;
    }
    if let Some(spec) = &a.palette {
        let path = Path::new(spec);
        let text = if path.is_file() {
            std::fs::read_to_string(path)
                .map_err(|e| input(format!("--palette {}: cannot read it ({e})", path.display())))?
        } else {
            spec.clone()
        };
        s.looks.palette = crate::settings::looks::parse_palette(&text).map_err(|e| input(format!("--palette: {e}")))?;
        if s.looks.palette_weight == 0.0 {
            s.looks.palette_weight = 1.0;
        }
    }
    if let Some(v) = a.palette_weight {
        s.looks.palette_weight = v;
    }
    if let Some(v) = &a.coarse {
        s.coarse = crate::settings::coarse::parse_schedule(v).map_err(input)?;
    }
    if a.vqgan.is_some() {
        s.vqgan.clone_from(&a.vqgan);
    }
    if a.vqgan_config.is_some() {
        s.vqgan_config.clone_from(&a.vqgan_config);
    }
    merge_clips(a, s)?;
    if let Some(d) = &a.device {
        s.device.clone_from(d);
    }
    if let Some(p) = &a.precision {
        s.precision = Precision::parse(p)
            .ok_or_else(|| input(format!("--precision: unknown format {p:?} (expected f32, f16 or bf16)")))?;
    }
    Ok(())
}

/// Applies `--quality` to settings whose model names are resolved (see
/// `engine::quality`), printing what it chose; `fit` fits it to the memory there is.
pub(super) fn apply_quality(a: &RunArgs, s: RunSettings, fit: bool) -> Result<RunSettings, CliError> {
    let Some(name) = &a.quality else { return Ok(s) };
    let quality = Quality::parse(name)
        .ok_or_else(|| input(format!("--quality must be draft, normal or better, got {name:?}")))?;
    if a.cutn.is_some() {
        return Err(input("--quality chooses the cutouts: give --quality or --cutn, not both"));
    }
    let installed = if a.clip.is_some() { Vec::new() } else { super::models::installed_clips()? };
    let limit = if fit { crate::engine::memory::available()?.map(|m| m.bytes) } else { None };
    let (s, notes) = crate::engine::quality::apply(quality, s, &installed, limit)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(s)
}

/// Applies `--clip` (one CLIP, or several joined with ",": a path that exists is taken
/// whole, commas and all) and `--clip-weights`.
fn merge_clips(a: &RunArgs, s: &mut RunSettings) -> Result<(), CliError> {
    if let Some(value) = &a.clip {
        let text = value.to_string_lossy();
        let parts: Vec<PathBuf> = if value.exists() || !text.contains(',') {
            vec![value.clone()]
        } else {
            text.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect()
        };
        let Some((first, rest)) = parts.split_first() else {
            return Err(input("--clip: give a CLIP folder or name (several joined with \",\")"));
        };
        s.clip = Some(first.clone());
        s.clip_weight = 1.0;
        s.extra_clips = rest.iter().map(|path| ExtraClip { path: path.clone(), weight: 1.0 }).collect();
    }
    if let Some(list) = &a.clip_weights {
        let weights: Vec<f64> = list
            .split(',')
            .map(|w| {
                w.trim().parse::<f64>().map_err(|_| input(format!("--clip-weights: {:?} is not a number", w.trim())))
            })
            .collect::<Result<_, _>>()?;
        let clips = 1 + s.extra_clips.len();
        if weights.len() != clips {
            return Err(input(format!(
                "--clip-weights gives {} weight(s) for {clips} CLIP(s); give one for each, in --clip's order",
                weights.len()
            )));
        }
        s.clip_weight = weights[0];
        for (clip, w) in s.extra_clips.iter_mut().zip(&weights[1..]) {
            clip.weight = *w;
        }
    }
    Ok(())
}

/// Applies `--region`, `--region-off` and `--region-mask` (which replace the settings'
/// region prompts) and `--region-cutouts`.
fn merge_regions(a: &RunArgs, s: &mut RunSettings) -> Result<(), CliError> {
    let inside: Vec<String> = a.regions.iter().flat_map(|p| split_prompts(p)).collect();
    let outside: Vec<String> = a.regions_off.iter().flat_map(|p| split_prompts(p)).collect();
    match (&a.region_mask, inside.is_empty() && outside.is_empty()) {
        (None, false) => {
            return Err(input("--region and --region-off need --region-mask FILE (light where the prompts apply)"));
        }
        (Some(_), true) => return Err(input("--region-mask needs a --region or --region-off prompt")),
        (Some(path), false) => {
            let mask = crate::engine::image::load_mask(path).map_err(|e| input(format!("--region-mask: {e}")))?;
            mask.validate().map_err(|e| input(format!("--region-mask {}: {e}", path.display())))?;
            let with = |prompt: &String, outside: bool| Region { prompt: prompt.clone(), outside, mask: mask.clone() };
            s.regions = inside.iter().map(|p| with(p, false)).chain(outside.iter().map(|p| with(p, true))).collect();
        }
        (None, true) => {}
    }
    if let Some(m) = &a.region_cutouts {
        s.region_cutouts = RegionCutouts::parse(m)
            .ok_or_else(|| input(format!("--region-cutouts must be masked or centres, got {m:?}")))?;
    }
    Ok(())
}

/// Applies `--generator` and the flags that belong to one generator. Choosing another
/// generator than the settings' sets the learning rate to its own default (`--lr`
/// still overrides it) and, unless `--coarse` is given, leaves coarse-to-fine search out
/// (its blocks are the VQGAN's tokens).
fn merge_generator(a: &RunArgs, s: &mut RunSettings) -> Result<(), CliError> {
    if let Some(name) = &a.generator {
        let chosen = GeneratorSettings::named(name, s.width, s.height).ok_or_else(|| {
            input(format!("--generator: unknown generator {name:?} (expected {})", GeneratorSettings::NAMES.join(", ")))
        })?;
        if chosen.name() != s.generator.name() {
            s.generator = chosen;
            s.lr = chosen.default_lr();
            if a.coarse.is_none() {
                s.coarse.clear();
            }
        }
    }
    let current = s.generator.name();
    let wrong = |flag: &str, owner: &str| {
        input(format!(
            "{flag} belongs to the {owner} generator, and this run draws with the {current} generator \
             (--generator {owner})"
        ))
    };
    if let Some(cells) = &a.pixel_size {
        let GeneratorSettings::Pixel { cells_x, cells_y } = &mut s.generator else {
            return Err(wrong("--pixel-size", "pixel"));
        };
        let bad = || input(format!("--pixel-size {cells:?} must be COLSxROWS, e.g. 48x48"));
        let (x, y) = cells.split_once(['x', 'X']).ok_or_else(bad)?;
        *cells_x = x.trim().parse().map_err(|_| bad())?;
        *cells_y = y.trim().parse().map_err(|_| bad())?;
    }
    for (flag, value) in [("--fft-decay", a.fft_decay), ("--fft-colors", a.fft_colors)] {
        let Some(v) = value else { continue };
        let GeneratorSettings::Fft(fft) = &mut s.generator else {
            return Err(wrong(flag, "fft"));
        };
        if flag == "--fft-decay" {
            fft.decay = v;
        } else {
            fft.colors = v;
        }
    }
    Ok(())
}

/// Reads settings from a JSON file or from a clipcanvas PNG's metadata.
pub fn read_settings_file(path: &Path) -> Result<RunSettings, CliError> {
    export::read_settings_file(path).map_err(input)
}

pub(super) fn parse_size(s: &str) -> Result<(usize, usize), CliError> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| input(format!("size {s:?} must be WxH, e.g. 256x256")))?;
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|_| input(format!("size {s:?} must be WxH, e.g. 256x256")));
    Ok((parse(w)?, parse(h)?))
}

/// One-step sampling flags, shared by `generate` and `train-onestep --evaluate`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SamplingArgs {
    /// One-step sampling temperature (0: always the likeliest code).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// One-step sampling: keep the k likeliest codes (0: all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// One-step sampling: keep the likeliest codes holding this share of probability.
    #[arg(long)]
    pub top_p: Option<f64>,
}

impl SamplingArgs {
    /// Whether any of the flags was given.
    pub fn given(&self) -> bool {
        self.temperature.is_some() || self.top_k.is_some() || self.top_p.is_some()
    }

    /// Sets what the flags give in `s`.
    pub fn apply(&self, s: &mut crate::settings::Sampling) {
        if let Some(v) = self.temperature {
            s.temperature = v;
        }
        if let Some(v) = self.top_k {
            s.top_k = v;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
    }
}

/// Applies the one-step flags: any of them turns drafting on (the sampling ones only
/// with --one-step or settings that draft already).
/// `iterations_given`: the run's iterations were given (else a draft defaults them to
/// 0); `save_candidates`: generate's --save-candidates, which needs a draft too.
pub(super) fn merge_one_step(
    a: &RunArgs,
    iterations_given: bool,
    save_candidates: bool,
    s: &mut RunSettings,
) -> Result<(), CliError> {
    let sampling_flag = a.candidates.is_some() || a.pick.is_some() || a.sampling.given();
    let asked = a.one_step || a.onestep.is_some();
    if !asked && s.one_step.is_none() {
        if sampling_flag || save_candidates {
            return Err(input(
                "--candidates, --pick, --temperature, --top-k, --top-p and --save-candidates need --one-step",
            ));
        }
        return Ok(());
    }
    if asked && s.one_step.is_none() {
        if !iterations_given {
            s.iterations = 0;
        }
        // The draft already holds the large regions coarse-to-fine search would settle.
        if a.coarse.is_none() {
            s.coarse.clear();
        }
    }
    let one = s.one_step.get_or_insert_with(OneStepSettings::default);
    if a.onestep.is_some() {
        one.model.clone_from(&a.onestep);
    }
    if let Some(v) = a.candidates {
        one.candidates = v;
    }
    if let Some(v) = a.pick {
        one.pick = v;
    }
    a.sampling.apply(&mut one.sampling);
    Ok(())
}
