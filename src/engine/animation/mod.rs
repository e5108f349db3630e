//! Animation: frame after frame, the previous frame is warped by the camera's move
//! (`warp`), optionally moved to the first frame's colours (`color`), encoded to the
//! latent and optimised for the frame's iterations: the zoom notebooks' and Deforum's
//! loop on clipcanvas's session. Restyling takes each frame's start from a source
//! sequence instead, blended with the previous output if asked.
//!
//! Each frame is a fresh [`Session`] (a fresh optimiser, as the zoom notebooks make one
//! per frame) seeded from the animation's seed and the frame number, so a frame depends
//! only on the settings, the previous frame's image as saved (RGB8) and, with latent
//! smoothing, the running average of the latent. [`Animation::state_bytes`] holds the
//! latter; with the saved frames it resumes an animation to the same bytes as one that
//! was never stopped. Frame 0 is the run `generate` would make with the same settings.

pub mod color;
pub mod preview;
pub mod warp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};
use super::image::{load_rgb, resize_exact_lanczos};
use super::loaded::Models;
use super::observer::{StepRate, StepStats};
use super::session::{RunEnd, Session};
use super::session_file;
use crate::settings::animation::{AnimationSettings, FramePlan};
use crate::settings::RunSettings;
use color::{lab_stats, match_colors, LabStats};
use warp::{warp, Planar};

/// Receives an animation's progress. A frame is handed over once finished; an error
/// from [`AnimationObserver::frame_done`] (a frame that could not be saved) stops the
/// animation with that error.
pub trait AnimationObserver {
    fn frame_started(&mut self, _plan: &FramePlan) {}
    fn on_step(&mut self, _frame: usize, _stats: &StepStats) {}
    /// Frame `frame` is finished; `animation` has moved past it (its state is the state
    /// to save with it).
    fn frame_done(&mut self, frame: usize, image: &RgbImage, animation: &Animation) -> Result<(), String>;
    fn notice(&mut self, _message: &str) {}
}

/// The image files of a restyling source folder, in name order (PNG, JPEG, WebP, BMP).
pub fn source_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    let bad = |msg: String| EngineError::Input(format!("{}: {msg}", dir.display()));
    let entries = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot read the input frames' folder ({e})")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            !hidden && p.is_file() && matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "webp" | "bmp"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(bad("no PNG, JPEG, WebP or BMP frames in the input frames' folder".into()));
    }
    Ok(files)
}

/// The seed of frame `f`'s session: the animation's own for frame 0 (so it is the image
/// `generate` makes), a distinct one for each later frame.
pub fn frame_seed(seed: u64, frame: usize) -> u64 {
    seed.wrapping_add((frame as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

const STATE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateMeta {
    animation_state: u32,
    settings: RunSettings,
    next_frame: usize,
}

/// An animation in progress.
pub struct Animation {
    models: Arc<Models>,
    settings: RunSettings,
    anim: AnimationSettings,
    plans: Vec<FramePlan>,
    sources: Vec<PathBuf>,
    next: usize,
    previous: Option<RgbImage>,
    first_colors: Option<LabStats>,
    /// The running average of the latent (latent smoothing).
    ema: Option<Tensor>,
}

impl std::fmt::Debug for Animation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Animation").field("next", &self.next).field("frames", &self.plans.len()).finish()
    }
}

impl Animation {
    /// Plans an animation from settings that carry `animation`. Every schedule is
    /// evaluated here, so a bad one is reported before any frame is made.
    pub fn new(models: Arc<Models>, settings: RunSettings) -> Result<Self> {
        settings.validate().map_err(EngineError::Input)?;
        let anim =
            settings.animation.clone().ok_or_else(|| EngineError::Input("these settings have no animation".into()))?;
        let plans = anim.plan(&settings.prompts, settings.iterations).map_err(EngineError::Input)?;
        if !settings.story.is_empty() {
            return Err(EngineError::Input(
                "an animation changes prompts at frames (a prompt schedule), not with story stages".into(),
            ));
        }
        let sources = match &anim.input_frames {
            Some(dir) => {
                let files = source_frames(dir)?;
                if files.len() < anim.frames {
                    return Err(EngineError::Input(format!(
                        "{} holds {} frames, fewer than the {} asked for",
                        dir.display(),
                        files.len(),
                        anim.frames
                    )));
                }
                files
            }
            None => Vec::new(),
        };
        Ok(Self { models, settings, anim, plans, sources, next: 0, previous: None, first_colors: None, ema: None })
    }

    /// Continues an animation: `previous` is the last saved frame and `first` frame 0 (for
    /// colour coherence), as written; `state` the bytes of [`Animation::state_bytes`].
    pub fn resume(
        models: Arc<Models>,
        state: &Path,
        first: Option<&RgbImage>,
        previous: Option<&RgbImage>,
    ) -> Result<Self> {
        let (meta, tensors) = read_state(state)?;
        let mut animation = Self::new(models, meta.settings)?;
        let bad = |msg: &str| EngineError::Session { path: state.to_path_buf(), msg: msg.to_owned() };
        animation.next = meta.next_frame.min(animation.plans.len());
        if animation.next > 0 {
            let previous = previous.ok_or_else(|| bad("the last finished frame's image is missing"))?;
            animation.previous = Some(previous.clone());
            if animation.anim.color_coherence {
                let first = first.ok_or_else(|| bad("frame 0's image is missing (colour coherence needs it)"))?;
                animation.first_colors = Some(lab_stats(&Planar::from_rgb(first)));
            }
            if animation.anim.latent_smoothing > 0.0 {
                let ema = tensors.get("ema").ok_or_else(|| bad("the smoothed latent is missing"))?;
                animation.ema = Some(ema.to_device(&animation.models.device)?.to_dtype(DType::F32)?);
            }
        }
        Ok(animation)
    }

    /// Reads a state file's settings and next frame without loading models.
    pub fn read_state(path: &Path) -> Result<(RunSettings, usize)> {
        let (meta, _) = read_state(path)?;
        Ok((meta.settings, meta.next_frame))
    }

    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    pub fn plans(&self) -> &[FramePlan] {
        &self.plans
    }

    /// The next frame to make (the count of finished ones).
    pub fn next_frame(&self) -> usize {
        self.next
    }

    pub fn is_finished(&self) -> bool {
        self.next >= self.plans.len()
    }

    /// What resuming needs beside the saved frames: the settings, the next frame and the
    /// smoothed latent (a checksummed file, as sessions are).
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        let meta = StateMeta { animation_state: STATE_VERSION, settings: self.settings.clone(), next_frame: self.next };
        let json = serde_json::to_string(&meta).map_err(|e| EngineError::Input(e.to_string()))?;
        let mut tensors = HashMap::new();
        if let Some(ema) = &self.ema {
            tensors.insert("ema".to_owned(), ema.to_device(&Device::Cpu)?);
        }
        session_file::encode(json, tensors)
    }

    /// The settings of frame `plan.frame`'s session.
    fn frame_settings(&self, plan: &FramePlan) -> RunSettings {
        let mut s = self.settings.clone();
        s.animation = None;
        s.prompts.clone_from(&plan.prompts);
        s.iterations = plan.iterations;
        s.lr = plan.lr;
        s.init_weight = plan.init_weight;
        s.seed = frame_seed(self.settings.seed, plan.frame);
        if plan.frame > 0 {
            // Later frames refine an image: no draft, and no coarse-to-fine search, which
            // would move its details in blocks.
            s.init_image = None;
            s.one_step = None;
            s.coarse.clear();
        }
        s
    }

    /// The image frame `f` starts from, when it starts from an image (every frame but a
    /// first one that starts from noise, a draft or the init image).
    fn start_image(&self, plan: &FramePlan) -> Result<Option<RgbImage>> {
        let (w, h) = self.canvas_size();
        let warped = self.previous.as_ref().map(|p| warp(&Planar::from_rgb(p), &plan.motion, self.anim.border));
        let start = match (self.sources.get(plan.frame), warped) {
            (Some(path), warped) => {
                let src = Planar::from_rgb(&resize_exact_lanczos(&load_rgb(path)?, w, h));
                match warped {
                    Some(prev) if plan.blend_previous > 0.0 && (prev.width, prev.height) == (src.width, src.height) => {
                        #[expect(clippy::cast_possible_truncation, reason = "a weight in [0, 1]")]
                        let b = plan.blend_previous as f32;
                        let data = src.data.iter().zip(&prev.data).map(|(s, p)| (1.0 - b) * s + b * p).collect();
                        Some(Planar { data, ..src })
                    }
                    _ => Some(src),
                }
            }
            (None, warped) => warped,
        };
        Ok(start.map(|img| match &self.first_colors {
            Some(target) => match_colors(&img, target).to_rgb(),
            None => img.to_rgb(),
        }))
    }

    /// The canvas size the frames are made at (the generator's: the VQGAN's is the
    /// settings' size rounded down to its factor).
    pub fn canvas_size(&self) -> (u32, u32) {
        let (w, h) = match crate::engine::generator::canvas(&self.models, &self.settings) {
            Ok(((w, h), _)) => (w, h),
            Err(_) => (self.settings.width, self.settings.height),
        };
        (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX))
    }

    /// The session of the next frame, set up from its start (the warped previous frame,
    /// the source frame, or for frame 0 the run's own start) with its plan; `None` when
    /// every frame is made. Step it for `plan.iterations`, then hand it to
    /// [`Animation::finish_frame`]. (The studio's worker steps it between commands;
    /// [`Animation::run`] does all of it.)
    pub fn start_frame(&self) -> Result<Option<(FramePlan, Session)>> {
        let Some(plan) = self.plans.get(self.next).cloned() else { return Ok(None) };
        let settings = self.frame_settings(&plan);
        let session = match self.start_image(&plan)? {
            Some(start) => Session::with_start_image(Arc::clone(&self.models), settings, &start)?,
            None => Session::new(Arc::clone(&self.models), settings)?,
        };
        Ok(Some((plan, session)))
    }

    /// Ends the next frame with its stepped session: the latent smoothed (if asked), the
    /// image decoded, and the animation moved past it. Returns the frame's image.
    pub fn finish_frame(&mut self, mut session: Session) -> Result<RgbImage> {
        let smoothing = self.anim.latent_smoothing;
        if smoothing > 0.0 {
            // A copy: the variable cannot be set to its own storage.
            let z = session.latent().copy()?;
            let ema = match &self.ema {
                Some(prev) if prev.dims() == z.dims() => ((prev * smoothing)? + (z * (1.0 - smoothing))?)?,
                _ => z,
            };
            session.set_latent(&ema)?;
            self.ema = Some(ema);
        }
        let image = session.render_rgb()?;
        if self.next == 0 && self.anim.color_coherence {
            self.first_colors = Some(lab_stats(&Planar::from_rgb(&image)));
        }
        self.previous = Some(image.clone());
        self.next += 1;
        Ok(image)
    }

    /// Makes the remaining frames, or stops between two steps when `cancel` is set (the
    /// frame in progress is dropped; resuming makes it again, the same).
    pub fn run(&mut self, observer: &mut dyn AnimationObserver, cancel: &AtomicBool) -> Result<RunEnd> {
        while let Some(plan) = self.plans.get(self.next).cloned() {
            // Before the start is made: its warp and encoding are part of the frame.
            observer.frame_started(&plan);
            let Some((_, mut session)) = self.start_frame()? else { break };
            for notice in session.take_notices() {
                if plan.frame == 0 {
                    observer.notice(&notice);
                }
            }
            let mut rate = StepRate::default();
            while session.iteration() < plan.iterations {
                if cancel.load(Ordering::Relaxed) {
                    return Ok(RunEnd::Cancelled);
                }
                let started = Instant::now();
                let out = session.step()?;
                let its = rate.record(started.elapsed().as_secs_f64());
                observer.on_step(plan.frame, &out.stats(plan.iterations, its));
            }
            let image = self.finish_frame(session)?;
            observer.frame_done(plan.frame, &image, self).map_err(EngineError::Output)?;
        }
        Ok(RunEnd::Finished)
    }
}

fn read_state(path: &Path) -> Result<(StateMeta, HashMap<String, Tensor>)> {
    let bad = |msg: String| EngineError::Session { path: path.to_path_buf(), msg };
    let (json, tensors) = session_file::decode(path)?;
    let meta: StateMeta = serde_json::from_str(&json)
        .map_err(|e| bad(format!("not an animation's state, or an unreadable one ({e})")))?;
    if meta.animation_state != STATE_VERSION {
        return Err(bad(format!("animation state version {} is not supported", meta.animation_state)));
    }
    Ok((meta, tensors))
}
