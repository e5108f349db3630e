//! The engine thread's loop: commands in, one step at a time while running, events out.
//! It owns the models (cached by their files and device), the session and the timeline
//! of kept latents, and turns every failure, panics included, into one error line.

use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::outbox::{one_line, Outbox};
use super::protocol::{Command, DraftFrame, Event, FrameEvent, RunState, Steer};
use super::recorder::Recorder;
use super::shared::{lock, FRAME_EVERY, OVERFLOW_RETRY};
use super::timeline::Timeline;
use crate::engine::animation::preview::{motion_frames, test_card};
use crate::engine::animation::Animation;
use crate::engine::device::parse_device;
use crate::engine::image::{load_rgb, resize_exact_lanczos, tensor_to_rgb};
use crate::engine::loaded::ModelKey;
use crate::engine::loaded::{load_models, Models};
use crate::engine::memory::{self, Nets};
use crate::engine::observer::{Frame, StepRate};
use crate::engine::session::{Session, StepOutput};
use crate::engine::EngineError;
use crate::settings::RunSettings;

enum Flow {
    Continue,
    Exit,
}

/// The thread's state: models, session, kept latents.
pub(super) struct Engine {
    pub(super) out: Outbox,
    pub(super) models: Option<(ModelKey, Arc<Models>)>,
    pub(super) session: Option<Session>,
    pub(super) state: RunState,
    /// The latents behind the kept frames.
    pub(super) kept: Timeline,
    /// The iteration of the last frame sent, so a final frame is not sent twice.
    pub(super) last_frame: Option<usize>,
    pub(super) rate: StepRate,
    /// Where the run's frames are recorded, if they are.
    pub(super) recorder: Option<Recorder>,
    /// The animation being rendered; `session` is then its frame in progress.
    pub(super) animation: Option<Animation>,
    /// Where and how often the run's session is autosaved, and whether a failed
    /// autosave was reported already.
    pub(super) autosave: Option<(std::path::PathBuf, usize)>,
    autosave_failed: bool,
}

/// What one step produced.
struct Advance {
    out: StepOutput,
    latent: Option<Tensor>,
    frame: Option<Frame>,
}

/// A copy of a latent on the CPU that later updates of the session do not change (the
/// session's latent is a `Var` updated in place, and `to_device` on the same device
/// shares storage).
fn cpu_copy(t: &Tensor) -> Result<Tensor, EngineError> {
    let t = t.detach();
    Ok(if t.device().is_cpu() { t.copy()? } else { t.to_device(&Device::Cpu)? })
}

fn advance(session: &mut Session, keep: bool, frame: bool) -> Result<Advance, EngineError> {
    let latent = if keep { Some(cpu_copy(session.latent())?) } else { None };
    let out = session.step()?;
    let frame = if frame { Some(Frame::from_rgb(&tensor_to_rgb(&out.image)?)) } else { None };
    Ok(Advance { out, latent, frame })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

impl Engine {
    pub(super) fn new(out: Outbox) -> Self {
        Self {
            out,
            models: None,
            session: None,
            state: RunState::Idle,
            kept: Timeline::default(),
            last_frame: None,
            rate: StepRate::default(),
            recorder: None,
            animation: None,
            autosave: None,
            autosave_failed: false,
        }
    }

    pub(super) fn run(mut self, rx: &Receiver<Command>) {
        loop {
            let flow = if self.state == RunState::Running {
                match self.drain(rx) {
                    Flow::Exit => Flow::Exit,
                    Flow::Continue => {
                        if self.state == RunState::Running {
                            self.guarded(Self::step_once);
                        }
                        Flow::Continue
                    }
                }
            } else if self.out.has_backlog() {
                match rx.recv_timeout(OVERFLOW_RETRY) {
                    Ok(cmd) => self.handle_guarded(cmd),
                    Err(RecvTimeoutError::Timeout) => Flow::Continue,
                    Err(RecvTimeoutError::Disconnected) => Flow::Exit,
                }
            } else {
                match rx.recv() {
                    Ok(cmd) => self.handle_guarded(cmd),
                    Err(_) => Flow::Exit,
                }
            };
            if matches!(flow, Flow::Exit) {
                break;
            }
            self.out.flush();
        }
        self.out.flush();
    }

    /// Handles every queued command without waiting.
    fn drain(&mut self, rx: &Receiver<Command>) -> Flow {
        loop {
            match rx.try_recv() {
                Ok(cmd) => {
                    if let Flow::Exit = self.handle_guarded(cmd) {
                        return Flow::Exit;
                    }
                }
                Err(TryRecvError::Empty) => return Flow::Continue,
                Err(TryRecvError::Disconnected) => return Flow::Exit,
            }
        }
    }

    fn handle_guarded(&mut self, cmd: Command) -> Flow {
        if let Command::Shutdown = cmd {
            return Flow::Exit;
        }
        self.guarded(|engine| engine.handle(cmd));
        Flow::Continue
    }

    /// Runs `f`, turning a panic into an error event and a reset (the session may be
    /// inconsistent after one).
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(self))) {
            self.error(format!("internal error: {}", panic_message(payload.as_ref())));
            self.clear_session();
            self.set_state(RunState::Idle);
        }
    }

    fn notice(&mut self, msg: impl Display) {
        self.out.send(Event::Notice(one_line(msg)));
    }

    fn error(&mut self, msg: impl Display) {
        self.out.send(Event::Error(one_line(msg)));
    }

    fn set_state(&mut self, state: RunState) {
        if state != RunState::Running {
            // Between runs the memory an iteration reuses goes back to the system.
            crate::process::release_free_memory();
        }
        self.state = state;
        self.out.send(Event::State(state));
    }

    fn steered(&mut self, iteration: usize, change: String) {
        lock(&self.out.shared.steering).push(Steer { iteration, change: change.clone() });
        self.out.send(Event::Steered { iteration, change });
    }

    fn clear_session(&mut self) {
        self.session = None;
        self.animation = None;
        self.kept.clear();
        self.last_frame = None;
        self.rate.clear();
        lock(&self.out.shared.steering).clear();
    }

    pub(super) fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start(settings) => self.start(*settings),
            Command::Pause => {
                if self.state == RunState::Running {
                    self.set_state(RunState::Paused);
                }
            }
            Command::Resume => self.resume(),
            Command::Stop => {
                if self.session.is_some() && matches!(self.state, RunState::Running | RunState::Paused) {
                    // An animation's frame in progress goes on at Resume; it keeps no latents.
                    if self.animation.is_none() {
                        self.final_frame();
                    }
                    self.set_state(RunState::Stopped);
                }
            }
            Command::Reset => {
                self.clear_session();
                self.out.clear_frame();
                self.set_state(RunState::Idle);
            }
            Command::SetPrompts(prompts) => self.steer(|s| {
                s.set_prompts(&prompts)?;
                Ok(format!("prompts: {}", prompts.join(" | ")))
            }),
            Command::SetLr(lr) => self.steer(|s| {
                s.set_lr(lr)?;
                Ok(format!("lr: {lr}"))
            }),
            Command::SetImagePrompts(prompts) => self.steer(|s| {
                s.set_image_prompts(&prompts)?;
                Ok(format!("image prompts: {}", prompts.join(" | ")))
            }),
            Command::BranchFrom { iteration } => self.branch(iteration),
            Command::SaveSession(path) => self.save(&path),
            Command::PickDraft(rank) => self.pick_draft(rank),
            Command::Refine(more) => self.refine(more),
            Command::Record(spec) => {
                self.recorder = None;
                if let Some(spec) = spec {
                    match Recorder::start(spec) {
                        Ok(r) => self.recorder = Some(r),
                        Err(e) => self.error(format!("not recording: {e}")),
                    }
                }
            }
            Command::PreviewMotion(settings) => self.preview_motion(&settings),
            Command::Autosave(spec) => {
                self.autosave = spec;
                self.autosave_failed = false;
            }
            Command::ResumeSession(path) => self.resume_session(&path),
            Command::Shutdown => {}
        }
    }

    pub(super) fn start(&mut self, settings: RunSettings) {
        if settings.animation.is_some() {
            self.start_animation(settings);
            return;
        }
        self.clear_session();
        self.out.clear_frame();
        self.set_state(RunState::Loading);
        let built = self.build(settings).map(|mut session| {
            for n in session.take_notices() {
                self.notice(n);
            }
            if !session.drafts().is_empty() {
                let frames = session
                    .drafts()
                    .iter()
                    .map(|c| DraftFrame { frame: Frame::from_rgb(&c.image), score: c.score })
                    .collect();
                self.out.send(Event::Drafts(Arc::new(frames)));
            }
            session
        });
        self.go(built);
    }

    /// Runs a session just built (or resumed): on to its end, or finished at once when
    /// it has no iterations left; a session that could not be built is the error, and
    /// the worker is idle.
    fn go(&mut self, session: Result<Session, String>) {
        match session {
            Ok(session) => {
                self.session = Some(session);
                if self.remaining() == 0 {
                    self.finish();
                } else {
                    self.set_state(RunState::Running);
                }
            }
            Err(msg) => {
                self.error(msg);
                self.set_state(RunState::Idle);
            }
        }
    }

    /// Resumes the session saved in `path` on the models its settings name.
    fn resume_session(&mut self, path: &std::path::Path) {
        self.clear_session();
        self.out.clear_frame();
        self.set_state(RunState::Loading);
        let resumed = Session::read_settings(path)
            .map_err(|e| e.to_string())
            .and_then(|settings| self.models_for(&settings))
            .and_then(|models| Session::resume(models, path).map_err(|e| e.to_string()));
        if let Ok(session) = &resumed {
            self.notice(format!("resumed {} at iteration {}", path.display(), session.iteration()));
        }
        self.go(resumed);
    }

    /// Writes the session to the autosave file when its iteration is due; a failure is
    /// reported once and the run goes on.
    fn autosave(&mut self) {
        let (Some((path, every)), Some(session), None) = (&self.autosave, &self.session, &self.animation) else {
            return;
        };
        if *every == 0 || !session.iteration().is_multiple_of(*every) {
            return;
        }
        if let Some(dir) = path.parent() {
            // The run's folder is made when the run is saved; the autosave may come first.
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = session.save(path) {
            if !std::mem::replace(&mut self.autosave_failed, true) {
                self.notice(format!("autosave failed ({e}); the run goes on"));
            }
        }
    }

    fn build(&mut self, settings: RunSettings) -> Result<Session, String> {
        let models = self.models_for(&settings)?;
        Session::new(models, settings).map_err(|e| e.to_string())
    }

    /// The models the settings name: the loaded ones when they serve, else loaded now.
    fn models_for(&mut self, settings: &RunSettings) -> Result<Arc<Models>, String> {
        settings.validate().map_err(|e| format!("invalid settings: {e}"))?;
        let key = ModelKey::of(settings);
        // Each start checks, before any big allocation, that the run fits in the memory
        // available (candle aborts the process when an allocation fails): with the
        // models loaded, the step's share; otherwise theirs too, before loading them.
        let models = match &self.models {
            Some((k, m)) if k.serves(&key) => {
                if m.device.is_cpu() {
                    memory::check(&Nets::of_models(m), settings, true).map_err(|e| e.to_string())?;
                }
                Arc::clone(m)
            }
            _ => {
                // Free the old models before loading others (and before measuring).
                self.models = None;
                crate::process::release_free_memory();
                let device = parse_device(&settings.device).map_err(|e| e.to_string())?;
                if device.is_cpu() {
                    Nets::of_settings(settings)
                        .and_then(|nets| memory::check(&nets, settings, false))
                        .map_err(|e| e.to_string())?;
                }
                let started = Instant::now();
                let models = Arc::new(load_models(settings, &device).map_err(|e| e.to_string())?);
                self.notice(format!("models loaded in {:.1} s", started.elapsed().as_secs_f64()));
                self.models = Some((key, Arc::clone(&models)));
                models
            }
        };
        Ok(models)
    }

    /// Starts rendering an animation: its first frame's session runs like any other,
    /// and [`Engine::finish`] moves on frame by frame.
    fn start_animation(&mut self, settings: RunSettings) {
        self.clear_session();
        self.out.clear_frame();
        self.set_state(RunState::Loading);
        let started = self.models_for(&settings).and_then(|models| {
            let animation = Animation::new(models, settings).map_err(|e| e.to_string())?;
            let first = animation.start_frame().map_err(|e| e.to_string())?;
            Ok((animation, first))
        });
        match started {
            Ok((animation, Some((_, mut session)))) => {
                for n in session.take_notices() {
                    self.notice(n);
                }
                self.notice(format!("rendering {} frames", animation.plans().len()));
                self.animation = Some(animation);
                self.session = Some(session);
                self.set_state(RunState::Running);
            }
            Ok((_, None)) => self.set_state(RunState::Finished),
            Err(msg) => {
                self.error(msg);
                self.set_state(RunState::Idle);
            }
        }
    }

    /// Ends the animation's frame in progress: sends it, and starts the next frame's
    /// session (or finishes when it was the last).
    fn next_animation_frame(&mut self) {
        let (Some(animation), Some(session)) = (self.animation.as_mut(), self.session.take()) else { return };
        let index = animation.next_frame();
        let total = animation.plans().len();
        let next = animation.finish_frame(session).and_then(|image| Ok((image, animation.start_frame()?)));
        match next {
            Ok((image, next)) => {
                let frame = Frame::from_rgb(&image);
                self.out.frame(FrameEvent::new(index, frame.clone()));
                self.out.send(Event::AnimationFrame { index, total, frame: Arc::new(frame) });
                match next {
                    Some((_, session)) => self.session = Some(session),
                    None => {
                        self.notice(format!("animation finished: {total} frames"));
                        self.set_state(RunState::Finished);
                    }
                }
            }
            Err(e) => {
                self.error(format!("frame {index}: {e}"));
                self.animation = None;
                self.set_state(RunState::Stopped);
            }
        }
    }

    /// Sends the motion preview of `settings`' animation.
    fn preview_motion(&mut self, settings: &RunSettings) {
        let result = (|| -> Result<Vec<Frame>, String> {
            let anim = settings.animation.clone().ok_or("these settings have no animation")?;
            let plans = anim.plan(&settings.prompts, settings.iterations)?;
            let (w, h) =
                (u32::try_from(settings.width).unwrap_or(u32::MAX), u32::try_from(settings.height).unwrap_or(u32::MAX));
            let first = match (&settings.init_image, self.session.as_ref()) {
                (Some(path), _) => resize_exact_lanczos(&load_rgb(path).map_err(|e| e.to_string())?, w, h),
                (None, Some(session)) => session.render_rgb().map_err(|e| e.to_string())?,
                (None, None) => test_card(w, h),
            };
            Ok(motion_frames(&first, &plans, anim.border).iter().map(Frame::from_rgb).collect())
        })();
        match result {
            Ok(frames) => self.out.send(Event::MotionPreview(Arc::new(frames))),
            Err(e) => self.error(format!("motion preview: {e}")),
        }
    }

    /// Iterations left in the current run.
    fn remaining(&self) -> usize {
        self.session.as_ref().map_or(0, |s| s.settings().iterations.saturating_sub(s.iteration()))
    }

    fn resume(&mut self) {
        match self.state {
            RunState::Paused | RunState::Stopped if self.session.is_some() => {
                if self.remaining() == 0 {
                    self.finish();
                } else {
                    self.set_state(RunState::Running);
                }
            }
            RunState::Finished => self.notice("the run is finished; branch from a frame or start a new run"),
            RunState::Idle => self.notice("nothing to resume: start a run first"),
            _ => {}
        }
    }

    /// Applies a live change to the session and records it.
    fn steer(&mut self, f: impl FnOnce(&mut Session) -> Result<String, EngineError>) {
        if self.animation.is_some() {
            self.notice("an animation follows its schedules: changes apply when it is rendered again");
            return;
        }
        let Some(session) = self.session.as_mut() else {
            self.notice("nothing to steer: start a run first");
            return;
        };
        let iteration = session.iteration();
        let result = f(session);
        let notices = session.take_notices();
        for n in notices {
            self.notice(n);
        }
        match result {
            Ok(change) => self.steered(iteration, change),
            Err(e) => self.error(e),
        }
    }

    pub(super) fn branch(&mut self, from: usize) {
        if self.animation.is_some() {
            self.notice("branching is for single runs, not animations");
            return;
        }
        if self.session.is_none() {
            self.notice("nothing to branch from: start a run first");
            return;
        }
        let Some(latent) = self.kept.get(from).cloned() else {
            let kept = self.kept.describe();
            self.error(format!("no kept frame at iteration {from} ({kept})"));
            return;
        };
        let Some(session) = self.session.as_mut() else { return };
        if let Err(e) = session.set_latent(&latent) {
            self.error(e);
            return;
        }
        let now = session.iteration();
        let left = session.settings().iterations.saturating_sub(from);
        session.extend_iterations(now + left);
        let frame = session.render_rgb().map(|rgb| Frame::from_rgb(&rgb));
        match frame {
            Ok(frame) => {
                self.out.frame(FrameEvent::new(now, frame));
                self.last_frame = Some(now);
            }
            Err(e) => self.error(e),
        }
        self.steered(now, format!("branched from iteration {from}"));
        self.notice(format!("branched from iteration {from}; {left} iterations to go from {now}"));
        if self.state != RunState::Paused && left > 0 {
            self.set_state(RunState::Running);
        } else if left == 0 {
            self.finish();
        }
    }

    fn pick_draft(&mut self, rank: usize) {
        let Some(session) = self.session.as_mut() else {
            self.notice("no draft to pick from: make a draft first");
            return;
        };
        if session.iteration() > 0 {
            self.notice("the run has moved on from its draft; make a new draft to pick another");
            return;
        }
        if let Err(e) = session.pick_draft(rank) {
            self.error(e);
            return;
        }
        self.kept.clear();
        self.last_frame = None;
        self.final_frame();
        self.steered(0, format!("draft {rank} picked"));
    }

    fn refine(&mut self, more: usize) {
        let Some(session) = self.session.as_mut() else {
            self.notice("nothing to refine: make a draft or start a run first");
            return;
        };
        if !matches!(self.state, RunState::Finished | RunState::Stopped | RunState::Paused) {
            return;
        }
        let now = session.iteration();
        session.extend_iterations(now + more);
        if more > 0 {
            self.notice(format!("refining from iteration {now} for {more} iterations"));
            self.set_state(RunState::Running);
        }
    }

    fn save(&mut self, path: &std::path::Path) {
        if self.animation.is_some() {
            self.error("the studio keeps an animation in memory; `clipcanvas animate` saves and resumes one");
            return;
        }
        let Some(session) = self.session.as_ref() else {
            self.error("no session to save: start a run first");
            return;
        };
        match session.save(path) {
            Ok(()) => self.notice(format!("session saved to {}", path.display())),
            Err(e) => self.error(e),
        }
    }

    /// Records a frame; a recording that fails is reported once and ends.
    fn record(&mut self, iteration: usize, frame: &Frame) {
        let Some(r) = &self.recorder else { return };
        if let Err(e) = r.record(iteration, frame) {
            self.recorder = None;
            self.error(e);
        }
    }

    pub(super) fn keep_latent(&mut self, iteration: usize, latent: Tensor) {
        self.kept.keep(iteration, latent);
    }

    /// One iteration: step, frame, statistics; finishes the run at its end.
    pub(super) fn step_once(&mut self) {
        let Some(session) = self.session.as_mut() else {
            self.set_state(RunState::Idle);
            return;
        };
        let it = session.iteration();
        let total = session.settings().iterations;
        if it >= total {
            self.finish();
            return;
        }
        let save_every = session.settings().save_every;
        // An animation's frames keep no latents (it is not branched).
        let keep = self.animation.is_none() && (it == 0 || (save_every > 0 && it % save_every == 0));
        let record = self.recorder.as_ref().is_some_and(|r| r.wants(it));
        let started = Instant::now();
        match advance(session, keep, keep || record || it % FRAME_EVERY.max(1) == 0) {
            Ok(Advance { out, latent, frame }) => {
                if let Some(latent) = latent {
                    self.keep_latent(it, latent);
                }
                if let (true, Some(frame)) = (record, &frame) {
                    self.record(it, frame);
                }
                if let Some(frame) = frame {
                    self.out.frame(FrameEvent::new(it, frame));
                    self.last_frame = Some(it);
                }
                let its_per_sec = self.rate.record(started.elapsed().as_secs_f64());
                self.out.step(out.stats(total, its_per_sec));
                self.autosave();
                if self.remaining() == 0 {
                    self.finish();
                }
            }
            Err(e) => {
                self.error(e);
                self.set_state(RunState::Stopped);
            }
        }
    }

    /// Sends (and keeps) the frame of the current latent unless it was the last one sent.
    fn final_frame(&mut self) {
        let Some(session) = self.session.as_ref() else { return };
        let it = session.iteration();
        if self.last_frame == Some(it) {
            return;
        }
        let result = session.render_rgb().and_then(|rgb| Ok((Frame::from_rgb(&rgb), cpu_copy(session.latent())?)));
        match result {
            Ok((frame, latent)) => {
                self.keep_latent(it, latent);
                // The run's last image ends a recording, whatever its step.
                if self.recorder.is_some() {
                    self.record(it, &frame);
                }
                self.out.frame(FrameEvent::new(it, frame));
                self.last_frame = Some(it);
            }
            Err(e) => self.error(e),
        }
    }

    pub(super) fn finish(&mut self) {
        if self.animation.is_some() {
            self.next_animation_frame();
            return;
        }
        self.final_frame();
        let steering = lock(&self.out.shared.steering).clone();
        if !steering.is_empty() {
            let summary: Vec<String> = steering.iter().map(|s| format!("{}: {}", s.iteration, s.change)).collect();
            self.notice(format!("steered {} times: {}", steering.len(), summary.join("; ")));
        }
        self.set_state(RunState::Finished);
    }
}
