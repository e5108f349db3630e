//! `clipcanvas animate`: an animation from the command line — keyframed zoom, rotation
//! and pan, per-frame schedules, prompt changes at frames, video restyling and a
//! motion-only preview. Every frame is a PNG written atomically into the frames folder,
//! carrying its frame number and the animation's settings, beside `animation.state`
//! (what resuming needs). Ctrl-C, SIGTERM and SIGHUP stop between steps; `--resume DIR`
//! continues to the same frames an uninterrupted run makes.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use super::error::CliError;
use super::run_args::{base_settings, input, merge_one_step, merge_run, runtime, RunArgs};
use crate::engine::animation::preview::{motion_frames, test_card};
use crate::engine::animation::{source_frames, Animation, AnimationObserver};
use crate::engine::device::parse_device;
use crate::engine::image::{load_rgb, resize_exact_lanczos};
use crate::engine::loaded::load_models;
use crate::engine::observer::StepStats;
use crate::engine::session::RunEnd;
use crate::export;
use crate::settings::animation::{parse_prompt_frames, story_frames, AnimationSettings, Border, FramePlan};
use crate::settings::png::{ModelFiles, PngMeta};
use crate::settings::schedule::{Easing, Schedule};
use crate::settings::RunSettings;

/// The state file in the frames folder.
pub const STATE_FILE: &str = "animation.state";

#[derive(Debug, Args)]
pub struct AnimateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Frames to make (restyling: the source's frame count by default).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Iterations per frame: a number or a schedule "0:(10), 30:(5)".
    #[arg(long)]
    pub iterations_per_frame: Option<String>,
    /// Iterations of frame 0, which starts from noise, a draft or the init image
    /// (default: the run's iterations, as `generate` makes it).
    #[arg(short = 'i', long)]
    pub first_frame_iterations: Option<usize>,
    /// Zoom per frame about the centre (above 1 zooms in): a number or a schedule, e.g.
    /// "0:(1.0), 30:(1.04)" or "0:(1.0+0.002*sin(t/5))".
    #[arg(long)]
    pub zoom: Option<String>,
    /// Rotation per frame, degrees counter-clockwise: a number or a schedule.
    #[arg(long)]
    pub angle: Option<String>,
    /// Pan per frame, pixels to the right: a number or a schedule.
    #[arg(long)]
    pub translation_x: Option<String>,
    /// Pan per frame, pixels down: a number or a schedule.
    #[arg(long)]
    pub translation_y: Option<String>,
    /// What the camera sees past the edge: replicate (the edge repeats) or wrap (tiles).
    #[arg(long)]
    pub border: Option<String>,
    /// Between numeric keyframes: linear or ease-in-out.
    #[arg(long)]
    pub interpolation: Option<String>,
    /// How strongly each frame holds on to its start (the warped previous frame, or the
    /// source frame when restyling): a number or a schedule.
    #[arg(long)]
    pub init_weight: Option<String>,
    /// Learning rate: a number or a schedule.
    #[arg(long)]
    pub lr: Option<String>,
    /// The weight schedule of a prompt, in the order of the prompts; repeat for the next.
    #[arg(long = "prompt-weight")]
    pub prompt_weights: Vec<String>,
    /// Prompts that take over at frames: {0: "a forest", 60: "a city | fog:-0.5"}.
    #[arg(long)]
    pub prompt_schedule: Option<String>,
    /// With story stages in -p ("a forest ^ a city"): frames per stage (default: the
    /// frames shared evenly).
    #[arg(long)]
    pub story_every: Option<usize>,
    /// Deflicker: match each frame's colours to frame 0's (mean and spread in LAB).
    #[arg(long)]
    pub color_coherence: bool,
    /// Deflicker: average the latent over frames with this weight on the past (0 to 1).
    #[arg(long)]
    pub latent_smoothing: Option<f64>,
    /// Restyle these frames (a folder of PNG/JPEG files, in name order): each becomes
    /// its output frame's start.
    #[arg(long)]
    pub input_frames: Option<PathBuf>,
    /// Restyle a video (through ffmpeg, which must be on PATH).
    #[arg(long)]
    pub input_video: Option<PathBuf>,
    /// Restyling: blend this much of the previous output into each source frame (0 to
    /// 1; a number or a schedule).
    #[arg(long)]
    pub blend_previous: Option<String>,
    /// The folder the frames are written to (created; it must not hold another
    /// animation's frames).
    #[arg(long)]
    pub frames_dir: Option<PathBuf>,
    /// Also write the frames as an MP4 video (needs ffmpeg on PATH).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Also write the frames as an animated GIF.
    #[arg(long)]
    pub gif: Option<PathBuf>,
    /// Frames per second of the video or GIF.
    #[arg(long)]
    pub fps: Option<f64>,
    /// Continue the animation in this frames folder (with its own settings).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Only move the camera: warp the first image (the init image, the first source
    /// frame, or a test card) along the path, without models or optimisation.
    #[arg(long)]
    pub preview_motion: bool,
}

fn schedule(flag: &str, text: &str) -> Result<Schedule, CliError> {
    Schedule::parse(text).map_err(|e| input(format!("--{flag}: {e}")))
}

/// Applies the animation flags over `s` (whose `animation` may come from a settings file).
fn merge_settings(a: &AnimateArgs, mut s: RunSettings) -> Result<RunSettings, CliError> {
    merge_run(&a.run, &mut s)?;
    merge_one_step(&a.run, a.first_frame_iterations.is_some(), false, &mut s)?;
    // `generate`'s own iteration count is frame 0's.
    if let Some(n) = a.first_frame_iterations {
        s.iterations = n;
    }
    let mut anim = s.animation.take().unwrap_or_default();
    if let Some(n) = a.frames {
        anim.frames = n;
    }
    let schedules: [(&str, &Option<String>, &mut Schedule); 8] = [
        ("zoom", &a.zoom, &mut anim.zoom),
        ("angle", &a.angle, &mut anim.angle),
        ("translation-x", &a.translation_x, &mut anim.translation_x),
        ("translation-y", &a.translation_y, &mut anim.translation_y),
        ("iterations-per-frame", &a.iterations_per_frame, &mut anim.iterations_per_frame),
        ("init-weight", &a.init_weight, &mut anim.init_weight),
        ("lr", &a.lr, &mut anim.lr),
        ("blend-previous", &a.blend_previous, &mut anim.blend_previous),
    ];
    for (flag, given, field) in schedules {
        if let Some(text) = given {
            *field = schedule(flag, text)?;
        }
    }
    if !a.prompt_weights.is_empty() {
        anim.prompt_weights = a
            .prompt_weights
            .iter()
            .enumerate()
            .map(|(i, t)| schedule(&format!("prompt-weight (the {}.)", i + 1), t))
            .collect::<Result<_, _>>()?;
    }
    if let Some(b) = &a.border {
        anim.border =
            Border::parse(b).ok_or_else(|| input(format!("--border must be replicate or wrap, got {b:?}")))?;
    }
    if let Some(e) = &a.interpolation {
        anim.interpolation = Easing::parse(e)
            .ok_or_else(|| input(format!("--interpolation must be linear or ease-in-out, got {e:?}")))?;
    }
    if a.color_coherence {
        anim.color_coherence = true;
    }
    if let Some(v) = a.latent_smoothing {
        anim.latent_smoothing = v;
    }
    if a.input_frames.is_some() {
        anim.input_frames.clone_from(&a.input_frames);
    }
    if let Some(fps) = a.fps {
        anim.fps = fps;
    }
    if let Some(text) = &a.prompt_schedule {
        if !a.run.prompts.is_empty() {
            return Err(input("-p and --prompt-schedule both give the prompts: use one"));
        }
        anim.prompt_frames = parse_prompt_frames(text).map_err(|e| input(format!("--prompt-schedule: {e}")))?;
    }
    // Story stages ("a forest ^ a city") become prompt changes at frames.
    if !s.story.is_empty() {
        anim.prompt_frames = story_frames(std::mem::take(&mut s.story), anim.frames, a.story_every);
        s.prompts.clear();
    } else if a.story_every.is_some() && a.run.prompts.is_empty() {
        return Err(input("--story-every needs story stages in -p (\"a forest ^ a city\")"));
    }
    if anim.prompt_frames.first_key_value().is_some_and(|(f, _)| *f > 0) && s.prompts.is_empty() {
        return Err(input("the prompt schedule starts after frame 0 and there are no prompts before it"));
    }
    s.animation = Some(anim);
    s.validate().map_err(input)?;
    Ok(s)
}

/// The frame files in a frames folder, `frame_NNNNN.png`.
fn frame_path(dir: &Path, frame: usize) -> PathBuf {
    dir.join(format!("frame_{frame:05}.png"))
}

/// Refuses a frames folder that holds another animation (its frames or state) or is
/// not a folder, so no one's frames are overwritten, and one that cannot be created or
/// written. Creates nothing.
fn check_new_frames_dir(dir: &Path) -> Result<(), CliError> {
    if dir.exists() && !dir.is_dir() {
        return Err(input(format!("{}: not a folder (--frames-dir names the folder for the frames)", dir.display())));
    }
    if dir.join(STATE_FILE).exists() || frame_path(dir, 0).exists() {
        return Err(input(format!(
            "{} already holds an animation: --resume {} continues it, or choose another --frames-dir",
            dir.display(),
            dir.display()
        )));
    }
    super::generate::check_frames_dir(dir)
}

/// Where the video's frames go when restyling a video: a `source` folder in the frames
/// folder, extracted once.
fn extract_video(video: &Path, frames_dir: &Path, frames: Option<usize>) -> Result<PathBuf, CliError> {
    let dir = frames_dir.join("source");
    let n =
        export::extract_frames(video, &dir, frames.unwrap_or(crate::settings::animation::MAX_FRAMES)).map_err(|e| {
            match e {
                export::ExportError::Ffmpeg { .. } | export::ExportError::Refused(_) => input(e),
                e => runtime(e),
            }
        })?;
    eprintln!("note: {n} frames of {} extracted into {}", video.display(), dir.display());
    Ok(dir)
}

/// The metadata of frame `frame`.
fn frame_metadata(settings: &RunSettings, plan: &FramePlan, models: &ModelFiles) -> Result<String, CliError> {
    let mut meta = PngMeta::new(settings, plan.iterations, models.clone());
    meta.frame = Some(plan.frame);
    meta.to_json().map_err(|e| runtime(anyhow::anyhow!(e)))
}

/// Progress on the terminal, and each finished frame saved with the state after it.
struct CliObserver {
    dir: PathBuf,
    bar: Option<ProgressBar>,
    hashes: ModelFiles,
    frames: usize,
    done_iterations: u64,
}

impl AnimationObserver for CliObserver {
    fn frame_started(&mut self, plan: &FramePlan) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("frame {}/{}", plan.frame + 1, self.frames));
        }
    }

    fn on_step(&mut self, frame: usize, stats: &StepStats) {
        if let Some(bar) = &self.bar {
            bar.set_position(self.done_iterations + stats.iteration as u64 + 1);
            bar.set_message(format!("frame {}/{} · loss {:.4}", frame + 1, self.frames, stats.total_loss));
        }
    }

    fn frame_done(&mut self, frame: usize, image: &RgbImage, animation: &Animation) -> Result<(), String> {
        let plan = &animation.plans()[frame];
        self.done_iterations += plan.iterations as u64;
        let meta = frame_metadata(animation.settings(), plan, &self.hashes).map_err(|e| e.to_string())?;
        let path = frame_path(&self.dir, frame);
        export::write_png(&path, image, Some(&meta)).map_err(|e| e.to_string())?;
        let state = animation.state_bytes().map_err(|e| e.to_string())?;
        export::write_atomic(&self.dir.join(STATE_FILE), |w| w.write_all(&state)).map_err(|e| e.to_string())?;
        match &self.bar {
            Some(bar) => bar.set_position(self.done_iterations),
            None => say(format_args!("frame {}/{} → {}", frame + 1, self.frames, path.display())),
        }
        Ok(())
    }

    fn notice(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("note: {message}")),
            None => say(format_args!("note: {message}")),
        }
    }
}

/// Prints a line on stderr, ignoring failure (after SIGHUP the terminal may be gone).
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Refuses an animation with nothing to optimise toward.
fn check_objective(s: &RunSettings) -> Result<(), CliError> {
    let scheduled = s.animation.as_ref().is_some_and(|an| !an.prompt_frames.is_empty());
    if s.prompts.is_empty() && s.image_prompts.is_empty() && s.noise_prompts.is_empty() && !scheduled {
        return Err(input(
            "nothing to optimise: give a prompt (-p), a prompt schedule, an image prompt or a noise prompt",
        ));
    }
    Ok(())
}

/// Checks the GIF and video paths before any work.
fn check_outputs(a: &AnimateArgs, frames_dir: &Path) -> Result<(), CliError> {
    if let Some(gif) = &a.gif {
        export::check_animation_path(gif, false).map_err(input)?;
        crate::files::check_writable(gif).map_err(input)?;
    }
    if let Some(video) = &a.video {
        export::check_animation_path(video, true).map_err(input)?;
        crate::files::check_writable(video).map_err(input)?;
        export::check_ffmpeg().map_err(input)?;
    }
    let outputs: Vec<(&str, &Path)> = [("--gif", a.gif.as_deref()), ("--video", a.video.as_deref())]
        .into_iter()
        .filter_map(|(f, p)| p.map(|p| (f, p)))
        .collect();
    super::preflight::check_distinct(&outputs, None, Some(frames_dir))
}

/// Writes the GIF and video of the frames in `dir`.
fn write_animations(a: &AnimateArgs, dir: &Path, frames: usize, fps: f64) -> Result<(), CliError> {
    if a.gif.is_none() && a.video.is_none() {
        return Ok(());
    }
    let images = (0..frames).map(|f| load_rgb(&frame_path(dir, f))).collect::<Result<Vec<_>, _>>()?;
    if let Some(gif) = &a.gif {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "fps is in (0, 240]")]
        let delay = (1000.0 / fps).round() as u32;
        export::write_gif(gif, &images, delay).map_err(runtime)?;
        eprintln!("GIF: {}", gif.display());
    }
    if let Some(video) = &a.video {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "fps is in (0, 240]")]
        let rate = fps.round().max(1.0) as u32;
        export::write_video(video, &images, rate).map_err(runtime)?;
        eprintln!("video: {}", video.display());
    }
    Ok(())
}

/// The motion-only preview: no models, no optimisation.
fn preview(a: &AnimateArgs, settings: &RunSettings, dir: &Path) -> Result<(), CliError> {
    let anim = settings.animation.clone().unwrap_or_default();
    let plans = anim.plan(&settings.prompts, settings.iterations).map_err(input)?;
    let (w, h) =
        (u32::try_from(settings.width).unwrap_or(u32::MAX), u32::try_from(settings.height).unwrap_or(u32::MAX));
    let first = match (&settings.init_image, &anim.input_frames) {
        (Some(path), _) => resize_exact_lanczos(&load_rgb(path)?, w, h),
        (None, Some(dir)) => {
            let files = source_frames(dir)?;
            resize_exact_lanczos(&load_rgb(&files[0])?, w, h)
        }
        (None, None) => test_card(w, h),
    };
    for (plan, image) in plans.iter().zip(motion_frames(&first, &plans, anim.border)) {
        let meta = frame_metadata(settings, &FramePlan { iterations: 0, ..plan.clone() }, &ModelFiles::default())?;
        export::write_png(&frame_path(dir, plan.frame), &image, Some(&meta)).map_err(runtime)?;
    }
    eprintln!("motion preview: {} frames in {}", plans.len(), dir.display());
    write_animations(a, dir, plans.len(), anim.fps)
}

pub fn run(a: &AnimateArgs) -> Result<(), CliError> {
    let (mut settings, dir, resumed_at) = match &a.resume {
        Some(dir) => {
            if a.frames_dir.as_ref().is_some_and(|d| d != dir) {
                return Err(input("--frames-dir and --resume name different folders: --resume continues in its own"));
            }
            if a.run.settings.is_some() || a.preview_motion {
                return Err(input(
                    "--resume continues with the animation's own settings: leave out --settings and --preview-motion",
                ));
            }
            let (saved, next) = Animation::read_state(&dir.join(STATE_FILE))?;
            let merged = merge_settings(a, saved.clone())?;
            let mut comparable = merged.clone();
            (comparable.vqgan, comparable.vqgan_config, comparable.clip, comparable.device) =
                (saved.vqgan.clone(), saved.vqgan_config.clone(), saved.clip.clone(), saved.device.clone());
            if let Some(c) = comparable.animation.as_mut() {
                c.fps = saved.animation.as_ref().map_or(c.fps, |s| s.fps);
            }
            if comparable != saved {
                return Err(input(
                    "--resume continues with the animation's own settings: leave out the flags that change them \
                     (only the models, --device, --fps, --gif and --video may be given), or start a new animation",
                ));
            }
            check_outputs(a, dir)?;
            (merged, dir.clone(), Some(next))
        }
        None => {
            let dir =
                a.frames_dir.clone().ok_or_else(|| input("--frames-dir DIR is needed: the folder for the frames"))?;
            if a.input_video.is_some() && a.input_frames.is_some() {
                return Err(input("--input-frames and --input-video both give the source: use one"));
            }
            let mut s = merge_settings(a, base_settings(&a.run)?)?;
            check_new_frames_dir(&dir)?;
            check_outputs(a, &dir)?;
            if a.input_video.is_some() {
                export::check_ffmpeg().map_err(|e| input(format!("--input-video: {e}")))?;
            }
            // Restyling makes as many frames as the source has, unless told otherwise.
            if let Some(anim) = s.animation.as_mut() {
                if let (Some(src), None) = (&anim.input_frames, a.frames) {
                    anim.frames = source_frames(src)?.len().min(crate::settings::animation::MAX_FRAMES);
                }
            }
            if !a.preview_motion {
                check_objective(&s)?;
            }
            // Every schedule evaluated at every frame: a bad value is refused now.
            if let Some(anim) = &s.animation {
                anim.plan(&s.prompts, s.iterations).map_err(input)?;
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| input(format!("{}: cannot create the frames folder ({e})", dir.display())))?;
            if let Some(video) = &a.input_video {
                let frames = extract_video(video, &dir, a.frames)?;
                let anim = s.animation.get_or_insert_with(AnimationSettings::default);
                if a.frames.is_none() {
                    anim.frames = source_frames(&frames)?.len().min(crate::settings::animation::MAX_FRAMES);
                }
                anim.input_frames = Some(frames);
            }
            s.validate().map_err(input)?;
            (s, dir, None)
        }
    };
    if a.preview_motion {
        return preview(a, &settings, &dir);
    }
    settings = super::models::resolve_names(settings)?;
    let device = parse_device(&settings.device)?;
    let fit = !a.run.no_memory_check && device.is_cpu();
    settings = super::run_args::apply_quality(&a.run, settings, fit)?;
    if fit {
        super::generate::check_memory(&settings, None)?;
    }
    let models = Arc::new(load_models(&settings, &device)?);
    if models.source.as_ref().is_some_and(|s| s.demo) {
        eprintln!("note: {}", crate::catalog::bundled::DEMO_NOTICE);
    }
    let hashes = super::generate::model_hashes(models.source.as_ref(), &settings)?;
    let mut animation = match resumed_at {
        Some(next) => {
            let read = |f: usize| load_rgb(&frame_path(&dir, f));
            let first = if next > 0 { Some(read(0)?) } else { None };
            let previous = if next > 0 { Some(read(next - 1)?) } else { None };
            let animation = Animation::resume(models, &dir.join(STATE_FILE), first.as_ref(), previous.as_ref())?;
            eprintln!("resuming at frame {} of {}", animation.next_frame(), animation.plans().len());
            animation
        }
        None => Animation::new(models, settings.clone())?,
    };
    let frames = animation.plans().len();
    // The merged settings: a resumed animation may be given another --fps.
    let fps = settings.animation.as_ref().map_or(12.0, |an| an.fps);
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let done_iterations: u64 = animation.plans()[..animation.next_frame()].iter().map(|p| p.iterations as u64).sum();
    let total: u64 = animation.plans().iter().map(|p| p.iterations as u64).sum();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} it [{elapsed_precise} < {eta_precise}] {msg}")
        {
            bar.set_style(style);
        }
        bar.set_position(done_iterations);
        bar
    });
    let mut observer = CliObserver { dir: dir.clone(), bar, hashes, frames, done_iterations };
    let end = animation.run(&mut observer, &cancel);
    if let Some(bar) = &observer.bar {
        bar.finish_and_clear();
    }
    let resume_note = || format!("--resume {} continues it", dir.display());
    match end {
        Err(e) => {
            let done = animation.next_frame();
            let note = if done > 0 {
                format!("{done} frames are in {}; {}", dir.display(), resume_note())
            } else {
                "no frame was finished".to_owned()
            };
            Err(CliError::from(e).with_note(&note))
        }
        Ok(RunEnd::Cancelled) => {
            say(format_args!(
                "stopped after {} of {frames} frames, in {}; {}",
                animation.next_frame(),
                dir.display(),
                resume_note()
            ));
            Err(CliError::Interrupted)
        }
        Ok(RunEnd::Finished) => {
            eprintln!("{frames} frames in {}", dir.display());
            write_animations(a, &dir, frames, fps)
        }
    }
}
