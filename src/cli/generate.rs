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
use super::run_args::{base_settings, input, merge_one_step, merge_run, runtime, RunArgs};
use crate::engine::device::parse_device;
use crate::engine::loaded::{load_models, model_files, ModelSource};
use crate::engine::memory::{self, Nets};
use crate::engine::observer::{Frame, Observer, StepStats};
use crate::engine::session::{RunEnd, Session};
use crate::engine::EngineError;
use crate::export::{self, FrameSequence};
use crate::settings::png::{ModelFiles, PngMeta};
use crate::settings::{LrStep, RunSettings};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Pull toward the starting latent with this weight.
    #[arg(long)]
    pub init_weight: Option<f64>,
    /// Iterations in all (with --resume, counting those the session has done).
    #[arg(short = 'i', long)]
    pub iterations: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Step schedule "EVERY:GAMMA": multiply the learning rate by GAMMA every EVERY iterations.
    #[arg(long)]
    pub lr_step: Option<String>,
    /// Story mode: switch prompt stages every N iterations.
    #[arg(long)]
    pub story_every: Option<usize>,
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
    /// Save the session (latent, optimiser, random state) here at the end.
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Save the session to OUT.autosave.session every N iterations (0: never), so that a
    /// crash or a kill loses at most N; removed when the run ends and saves.
    #[arg(long, default_value_t = 25)]
    pub autosave: usize,
    /// Continue a saved session, with its own settings (only -i, the models, --device and
    /// --save-every may differ).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Also write each one-step candidate, best first, as OUT.candidate-N.png (each
    /// reproduces itself with --settings).
    #[arg(long)]
    pub save_candidates: bool,
}

/// Applies the flags over `base`.
pub fn merge_settings(a: &GenerateArgs, mut s: RunSettings) -> Result<RunSettings, CliError> {
    merge_run(&a.run, &mut s)?;
    // One image: an animation's settings (from a frame's PNG, say) make its frame 0.
    s.animation = None;
    if let Some(v) = a.init_weight {
        s.init_weight = v;
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
    if let Some(v) = a.story_every {
        s.story_every = v;
    }
    if let Some(v) = a.save_every {
        s.save_every = v;
    }
    merge_one_step(&a.run, a.iterations.is_some(), a.save_candidates, &mut s)?;
    s.validate().map_err(input)?;
    Ok(s)
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

/// The model files' names and hashes for a run's PNGs; none for models not from files.
pub(super) fn model_hashes(source: Option<&ModelSource>, settings: &RunSettings) -> Result<ModelFiles, CliError> {
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
pub(super) fn check_frames_dir(dir: &Path) -> Result<(), CliError> {
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
pub(super) fn check_memory(settings: &RunSettings, resumed: Option<&RunSettings>) -> Result<(), CliError> {
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
    if args.resume.is_some() && args.run.quality.is_some() {
        return Err(input(
            "--quality and --resume cannot be combined: a resumed run keeps its session's cutouts and CLIPs",
        ));
    }
    if args.resume.is_some() && args.run.settings.is_some() {
        return Err(input("--settings and --resume cannot be combined: a resumed run keeps its session's settings"));
    }
    let saved = match &args.resume {
        Some(r) => Some(Session::read_saved(r)?),
        None => None,
    };
    let base = match &saved {
        Some((settings, _)) => settings.clone(),
        None => base_settings(&args.run)?,
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
    let fit = !args.run.no_memory_check && device.is_cpu();
    let settings = super::run_args::apply_quality(&args.run, settings, fit)?;
    if fit {
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
    let autosave = autosave_path(&args.out);
    let mut checkpoint = |s: &Session| s.save(&autosave);
    let end = session.run_saving(&mut observer, &cancel, args.autosave, &mut checkpoint);
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
    if saved.is_ok() {
        // What the run kept is saved: the autosave has served.
        let _ = std::fs::remove_file(&autosave);
    }
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

/// Where a run writing `out` autosaves its session: `OUT.autosave.session`.
pub fn autosave_path(out: &Path) -> PathBuf {
    out.with_extension("autosave.session")
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
        session.save(path)?;
    }
    Ok(final_rgb)
}
