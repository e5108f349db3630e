//! `clipcanvas generate`: a whole run from the command line — settings from flags, a
//! settings file or a clipcanvas PNG; progress on the terminal; the final image, frames,
//! GIF, video and session file written safely. Ctrl-C, SIGTERM and SIGHUP stop between
//! steps and save the last frame and the session.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::error::CliError;
use super::preflight;
use crate::engine::device::parse_device;
use crate::engine::loaded::{load_models, model_files, ModelSource};
use crate::engine::memory::{self, Nets};
use crate::engine::observer::{Frame, Observer, StepStats};
use crate::engine::session::{RunEnd, Session};
use crate::engine::EngineError;
use crate::export::{self, FrameSequence};
use crate::settings::png::{ModelFiles, PngMeta};
use crate::settings::prompt::split_story;
use crate::settings::Augment;
use crate::settings::CutMethod;
use crate::settings::{InitNoise, InitWeightMode, LrStep, OneStepSettings, OptimizerKind, RunSettings};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A text prompt "text[:weight[:stop]]"; repeat, or join with "|"; "^" starts the next story stage.
    #[arg(short = 'p', long = "prompt")]
    pub prompts: Vec<String>,
    /// A target image "PATH[:weight[:stop]]"; repeatable.
    #[arg(long = "image-prompt")]
    pub image_prompts: Vec<String>,
    /// A noise prompt "SEED[:weight]"; repeatable.
    #[arg(long = "noise-prompt")]
    pub noise_prompts: Vec<String>,
    /// Start from this image instead of random codes.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// Pull toward the starting latent with this weight.
    #[arg(long)]
    pub init_weight: Option<f64>,
    /// constant (the notebook) or decay (nerdyrodent).
    #[arg(long)]
    pub init_weight_mode: Option<String>,
    /// Without an init image: codes, pixels or gradient.
    #[arg(long)]
    pub init_noise: Option<String>,
    /// Canvas size WxH (rounded down to the VQGAN's factor).
    #[arg(short = 's', long)]
    pub size: Option<String>,
    /// Iterations in all (with --resume, counting those the session has done).
    #[arg(short = 'i', long)]
    pub iterations: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Step schedule "EVERY:GAMMA": multiply the learning rate by GAMMA every EVERY iterations.
    #[arg(long)]
    pub lr_step: Option<String>,
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
    /// adam, adamw, adagrad, adamax or rmsprop.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Comma-separated augmentations (flip, affine, perspective, jitter, erase, blur, noise), or "none".
    #[arg(long)]
    pub augment: Option<String>,
    /// The cutout noise factor.
    #[arg(long)]
    pub noise_fac: Option<f64>,
    /// Smoothness (total variation) loss weight.
    #[arg(long)]
    pub tv_weight: Option<f64>,
    /// Coarse-to-fine search "FACTOR:UNTIL[,…]": the latent moves in FACTOR×FACTOR token
    /// blocks until iteration UNTIL (e.g. "4:40,2:80"); "none" is the notebook's search.
    #[arg(long)]
    pub coarse: Option<String>,
    /// Story mode: switch prompt stages every N iterations.
    #[arg(long)]
    pub story_every: Option<usize>,
    /// The VQGAN checkpoint (.ckpt or .safetensors, with its .yaml beside it), or an
    /// installed model's name (see `clipcanvas models list`).
    #[arg(long)]
    pub vqgan: Option<PathBuf>,
    /// The VQGAN's YAML, if not beside the checkpoint.
    #[arg(long)]
    pub vqgan_config: Option<PathBuf>,
    /// A Hugging Face CLIP folder, or an installed model's name (e.g. clip-vit-b-32).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// cpu, cuda[:N] or metal.
    #[arg(long)]
    pub device: Option<String>,
    /// The final image: .png (holding the settings), .jpg or .webp.
    #[arg(short = 'o', long, default_value = "output.png")]
    pub out: PathBuf,
    /// Write a numbered PNG sequence of the kept frames here.
    #[arg(long)]
    pub frames: Option<PathBuf>,
    /// Keep a frame (and report) every N iterations.
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Write the kept frames as an animated GIF.
    #[arg(long)]
    pub gif: Option<PathBuf>,
    /// Write the kept frames as an MP4 video (needs ffmpeg on PATH).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Start from a settings file (JSON) or a PNG made by clipcanvas; flags override it.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Save the session (latent, optimiser, random state) here at the end.
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Continue a saved session, with its own settings (only -i, the models, --device and
    /// --save-every may differ).
    #[arg(long)]
    pub resume: Option<PathBuf>,
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
    /// Also write each one-step candidate, best first, as OUT.candidate-N.png (each
    /// reproduces itself with --settings).
    #[arg(long)]
    pub save_candidates: bool,
    /// Run even when the run's estimated memory is more than the machine has available
    /// (it is refused otherwise; with too little memory it may then be killed).
    #[arg(long)]
    pub no_memory_check: bool,
}

fn input(msg: impl std::fmt::Display) -> CliError {
    CliError::Input(anyhow::anyhow!("{msg}"))
}

fn runtime(e: impl Into<anyhow::Error>) -> CliError {
    CliError::Runtime(e.into())
}

/// Reads settings from a JSON file or from a clipcanvas PNG's metadata.
pub fn read_settings_file(path: &Path) -> Result<RunSettings, CliError> {
    export::read_settings_file(path).map_err(input)
}

fn parse_size(s: &str) -> Result<(usize, usize), CliError> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| input(format!("size {s:?} must be WxH, e.g. 256x256")))?;
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|_| input(format!("size {s:?} must be WxH, e.g. 256x256")));
    Ok((parse(w)?, parse(h)?))
}

/// Applies the flags over `base`.
pub fn merge_settings(a: &GenerateArgs, mut s: RunSettings) -> Result<RunSettings, CliError> {
    if !a.prompts.is_empty() {
        let stages = split_story(&a.prompts.join(" | ").replace("| ^ |", "^"));
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
    if a.init_image.is_some() {
        s.init_image.clone_from(&a.init_image);
    }
    if let Some(v) = a.init_weight {
        s.init_weight = v;
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
    if let Some(v) = a.iterations {
        s.iterations = v;
    }
    if let Some(v) = a.lr {
        s.lr = v;
    }
    if let Some(v) = &a.lr_step {
        let bad = || input(format!("--lr-step must be EVERY:GAMMA, e.g. 100:0.5, got {v:?}"));
        let (every, gamma) = v.split_once(':').ok_or_else(bad)?;
        s.lr_step = Some(LrStep {
            every: every.trim().parse().map_err(|_| bad())?,
            gamma: gamma.trim().parse().map_err(|_| bad())?,
        });
    }
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
    if let Some(v) = &a.coarse {
        s.coarse = crate::settings::coarse::parse_schedule(v).map_err(input)?;
    }
    if let Some(v) = a.story_every {
        s.story_every = v;
    }
    if a.vqgan.is_some() {
        s.vqgan.clone_from(&a.vqgan);
    }
    if a.vqgan_config.is_some() {
        s.vqgan_config.clone_from(&a.vqgan_config);
    }
    if a.clip.is_some() {
        s.clip.clone_from(&a.clip);
    }
    if let Some(d) = &a.device {
        s.device.clone_from(d);
    }
    if let Some(v) = a.save_every {
        s.save_every = v;
    }
    merge_one_step(a, &mut s)?;
    s.validate().map_err(input)?;
    Ok(s)
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
fn merge_one_step(a: &GenerateArgs, s: &mut RunSettings) -> Result<(), CliError> {
    let sampling_flag = a.candidates.is_some() || a.pick.is_some() || a.sampling.given();
    let asked = a.one_step || a.onestep.is_some();
    if !asked && s.one_step.is_none() {
        if sampling_flag || a.save_candidates {
            return Err(input(
                "--candidates, --pick, --temperature, --top-k, --top-p and --save-candidates need --one-step",
            ));
        }
        return Ok(());
    }
    if asked && s.one_step.is_none() {
        if a.iterations.is_none() {
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

/// The observer of a command-line run: progress, frames on disk, frames kept for GIF/video.
struct CliObserver {
    bar: Option<ProgressBar>,
    every: usize,
    frames: Option<FrameSequence>,
    keep: bool,
    kept: Vec<image::RgbImage>,
    error: Option<CliError>,
    cancel: Arc<AtomicBool>,
}

impl Observer for CliObserver {
    fn on_step(&mut self, stats: &StepStats) {
        let loss = stats.total_loss;
        match &self.bar {
            Some(bar) => {
                bar.set_position((stats.iteration + 1) as u64);
                bar.set_message(format!("loss {loss:.4} · {:.2} it/s", stats.its_per_sec));
            }
            None => {
                let last = stats.iteration + 1 == stats.iterations;
                if self.every > 0 && (stats.iteration.is_multiple_of(self.every) || last) {
                    say(format_args!(
                        "iteration {}/{} loss {loss:.4} ({:.2} it/s)",
                        stats.iteration + 1,
                        stats.iterations,
                        stats.its_per_sec
                    ));
                }
            }
        }
    }

    fn frame_every(&self) -> usize {
        if self.frames.is_some() || self.keep {
            self.every
        } else {
            0
        }
    }

    fn on_frame(&mut self, iteration: usize, frame: &Frame) {
        let rgb = frame.to_rgb();
        if let Some(seq) = &mut self.frames {
            if let Err(e) = seq.push(iteration, &rgb, None) {
                self.error.get_or_insert(runtime(e));
                self.cancel.store(true, Ordering::Relaxed);
            }
        }
        if self.keep {
            self.kept.push(rgb);
        }
    }

    fn notice(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("note: {message}")),
            None => say(format_args!("note: {message}")),
        }
    }
}

/// Prints a line on stderr during or after a run, ignoring failure: after SIGHUP the
/// terminal may be gone, and `eprintln!` would panic before the run could save.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The metadata stored in every PNG: settings, iteration, models and their hashes.
fn metadata(settings: &RunSettings, iteration: usize, models: &ModelFiles) -> Result<String, CliError> {
    PngMeta::new(settings, iteration, models.clone()).to_json().map_err(|e| runtime(anyhow::anyhow!(e)))
}

fn model_hashes(source: Option<&ModelSource>, settings: &RunSettings) -> Result<ModelFiles, CliError> {
    match source {
        Some(source) => Ok(model_files(source, settings)?),
        None => Ok(ModelFiles::default()),
    }
}

/// Writes each one-step candidate, best first, as `OUT.candidate-N.png`, with the
/// settings that start from it.
fn save_candidates(session: &Session, settings: &RunSettings, hashes: &ModelFiles, out: &Path) -> Result<(), CliError> {
    for (rank, c) in session.drafts().iter().enumerate() {
        let mut s = settings.clone();
        if let Some(one) = &mut s.one_step {
            one.pick = rank;
        }
        s.iterations = 0;
        let path = out.with_extension(format!("candidate-{rank}.png"));
        export::write_png(&path, &c.image, Some(&metadata(&s, 0, hashes)?)).map_err(runtime)?;
        eprintln!("candidate {rank}: CLIP score {:.4} → {}", c.score, path.display());
    }
    Ok(())
}

/// Checks, before any work, that every output can be written: each file's name fits
/// what is written there (an image format by extension, a GIF, an MP4), each file's
/// folder exists and takes files (the default session beside --out included), the frames
/// folder exists or can be created, no two outputs (or an output and the session being
/// resumed) are the same file, and ffmpeg is there for --video. Bad paths are bad input
/// (exit 2). Returns the format --out will be written in.
fn check_outputs(args: &GenerateArgs) -> Result<export::ImageFormat, CliError> {
    let format = export::ImageFormat::for_path(&args.out).map_err(input)?;
    if let Some(gif) = &args.gif {
        export::check_animation_path(gif, false).map_err(input)?;
    }
    if let Some(video) = &args.video {
        export::check_animation_path(video, true).map_err(input)?;
    }
    let files = [Some(&args.out), args.session.as_ref(), args.gif.as_ref(), args.video.as_ref()];
    for path in files.into_iter().flatten() {
        crate::files::check_writable(path).map_err(input)?;
    }
    if let Some(dir) = &args.frames {
        check_frames_dir(dir)?;
    }
    let files = [("--out", Some(&args.out)), ("--session", args.session.as_ref())];
    let animations = [("--gif", args.gif.as_ref()), ("--video", args.video.as_ref())];
    let outputs: Vec<(&str, &Path)> =
        files.into_iter().chain(animations).filter_map(|(flag, p)| p.map(|p| (flag, p.as_path()))).collect();
    preflight::check_distinct(&outputs, args.resume.as_deref(), args.frames.as_deref())?;
    if args.video.is_some() {
        export::check_ffmpeg().map_err(input)?;
    }
    Ok(format)
}

/// The frames folder exists and takes files, or its nearest existing ancestor is a folder
/// that does (the run creates the rest).
fn check_frames_dir(dir: &Path) -> Result<(), CliError> {
    let cannot = |why: &dyn std::fmt::Display| input(format!("{}: cannot write frames there: {why}", dir.display()));
    let existing = dir
        .ancestors()
        .map(|a| if a.as_os_str().is_empty() { Path::new(".") } else { a })
        .find(|a| a.exists())
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(cannot(&format!("{} is not a folder", existing.display())));
    }
    match crate::files::check_writable(&existing.join("frame_000000.png")) {
        Ok(()) => Ok(()),
        Err(crate::files::FileError::Write { source, .. }) => Err(cannot(&source)),
        Err(e) => Err(cannot(&e)),
    }
}

/// Refuses, before any model is loaded, a run that will not fit in the memory
/// available: candle aborts the process when an allocation fails.
fn check_memory(settings: &RunSettings, resumed: Option<&RunSettings>) -> Result<(), CliError> {
    let planned = match resumed {
        Some(r) => RunSettings {
            width: r.width,
            height: r.height,
            cutn: r.cutn,
            cut_method: r.cut_method,
            init_image: None,
            init_noise: crate::settings::InitNoise::Codes,
            ..settings.clone()
        },
        None => settings.clone(),
    };
    let nets = Nets::of_settings(settings)?;
    memory::check(&nets, &planned, false).map_err(|e| match e {
        EngineError::Memory(_) => input(format!("{e}; --no-memory-check runs it anyway")),
        e => e.into(),
    })
}

pub fn run(args: &GenerateArgs) -> Result<(), CliError> {
    if args.resume.is_some() && args.settings.is_some() {
        return Err(input("--settings and --resume cannot be combined: a resumed run keeps its session's settings"));
    }
    let saved = match &args.resume {
        Some(r) => Some(Session::read_saved(r)?),
        None => None,
    };
    let base = match (&saved, &args.settings) {
        (Some((settings, _)), _) => settings.clone(),
        (None, Some(path)) => read_settings_file(path)?,
        // Without models the built-in shapes world runs, with the settings it was made for.
        (None, None) if args.vqgan.is_none() && args.clip.is_none() => RunSettings::shapes_world(),
        (None, None) => RunSettings::default(),
    };
    let mut settings = merge_settings(args, base)?;
    if let Some((saved, reached)) = &saved {
        settings.iterations = preflight::check_resume(args.iterations, saved, *reached, &settings)?;
    }
    if settings.iterations > 0 {
        settings.check_objective().map_err(input)?;
    }
    let format = check_outputs(args)?;
    if !format.keeps_settings() {
        say(format_args!(
            "note: {} will be a {}, which keeps no settings (a .png does; --session keeps the run)",
            args.out.display(),
            format.name()
        ));
    }
    // `--clip clip-vit-b-32`, `--vqgan vqgan-imagenet-f16-16384`: catalog names to paths.
    let settings = super::models::resolve_names(settings)?;
    let device = parse_device(&settings.device)?;
    if !args.no_memory_check && device.is_cpu() {
        // A resumed run goes on at the size and cutouts it was saved with.
        check_memory(&settings, saved.as_ref().map(|(s, _)| s))?;
    }
    let models = Arc::new(load_models(&settings, &device)?);
    if models.source.as_ref().is_some_and(|s| s.demo) {
        eprintln!("note: {}", crate::catalog::bundled::DEMO_NOTICE);
    }
    let every = settings.save_every.max(1);
    let mut session = match &args.resume {
        Some(path) => {
            let mut s = Session::resume(models, path)?;
            s.extend_iterations(settings.iterations);
            if s.iteration() == settings.iterations {
                eprintln!("note: the session is at iteration {} already: nothing to run", s.iteration());
            }
            s
        }
        None => Session::new(models, settings)?,
    };
    let settings = session.settings().clone();
    let hashes = model_hashes(session.models().source.as_ref(), &settings)?;
    if args.save_candidates {
        save_candidates(&session, &settings, &hashes, &args.out)?;
    }

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // Ctrl-C, SIGTERM and SIGHUP (ctrlc's "termination" feature) all stop the run
        // between steps and save. A second handler cannot be installed in the same process
        // (tests call run twice).
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(settings.iterations as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}")
        {
            bar.set_style(style);
        }
        bar.set_position(session.iteration() as u64);
        bar
    });
    let frames = match &args.frames {
        Some(dir) => Some(FrameSequence::create(dir).map_err(runtime)?),
        None => None,
    };
    let mut observer = CliObserver {
        bar,
        every,
        frames,
        keep: args.gif.is_some() || args.video.is_some(),
        kept: Vec::new(),
        error: None,
        cancel: Arc::clone(&cancel),
    };
    let started_at = session.iteration();
    let end = session.run(&mut observer, &cancel);
    if let Some(bar) = &observer.bar {
        bar.finish_and_clear();
    }
    let (end, failure) = match end {
        // A NaN loss has usually poisoned the latent (its image is black), and an input
        // error means the run should not have started: nothing worth keeping, so nothing
        // is written and an earlier --out stays as it was.
        Err(e @ (EngineError::NanLoss { .. } | EngineError::Input(_))) => return Err(e.into()),
        // A failure mid-run (the device, a frame that could not be written): the steps
        // that finished are kept below, as when stopped; a failed step changed nothing.
        Err(e) => (RunEnd::Cancelled, Some(CliError::from(e))),
        Ok(end) => (end, observer.error.take()),
    };
    let failure = match failure {
        Some(f) if session.iteration() == started_at => {
            return Err(f.with_note("nothing was saved, as no iteration had finished"));
        }
        f => f,
    };
    // Keep the artist's work, whatever happened: the last frame and the session.
    let save_session_to =
        args.session.clone().or_else(|| (end != RunEnd::Finished).then(|| args.out.with_extension("session")));
    let saved = save_result(&session, &settings, &hashes, &args.out, save_session_to.as_deref());
    let stopped = || {
        let session_note =
            save_session_to.as_ref().map(|p| format!(", session in {}", p.display())).unwrap_or_default();
        format!("stopped at iteration {}: image in {}{session_note}", session.iteration(), args.out.display())
    };
    if let Some(failure) = failure {
        return Err(match saved {
            Ok(_) => failure.with_note(&stopped()),
            Err(e) => failure.with_note(&format!("saving what was done failed too ({e})")),
        });
    }
    let final_rgb = saved?;
    if observer.keep {
        observer.kept.push(final_rgb);
    }
    if let Some(gif) = &args.gif {
        export::write_gif(gif, &observer.kept, 100).map_err(runtime)?;
    }
    if let Some(video) = &args.video {
        export::write_video(video, &observer.kept, 10).map_err(runtime)?;
    }
    if end == RunEnd::Cancelled {
        say(format_args!("{}", stopped()));
        return Err(CliError::Interrupted);
    }
    Ok(())
}

/// Writes the session's image to `out` (in its format, with the metadata if a PNG) and,
/// if asked, the session; returns the image.
fn save_result(
    session: &Session,
    settings: &RunSettings,
    hashes: &ModelFiles,
    out: &Path,
    session_to: Option<&Path>,
) -> Result<image::RgbImage, CliError> {
    let final_rgb = session.render_rgb()?;
    let meta = metadata(settings, session.iteration(), hashes)?;
    export::write_image(out, &final_rgb, Some(&meta)).map_err(runtime)?;
    if let Some(path) = session_to {
        let bytes = session.to_bytes()?;
        export::write_atomic(path, |w| std::io::Write::write_all(w, &bytes)).map_err(runtime)?;
    }
    Ok(final_rgb)
}
