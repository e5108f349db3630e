//! The studio's engine thread: the layer between the UI and the engine.
//!
//! A [`Worker`] is the handle the UI keeps. It owns a thread named `clipcanvas-engine`
//! that owns the models and the [`Session`]; the UI talks to it only through
//! [`Command`]s and [`Event`]s of plain data (no tensors cross the boundary), and the
//! worker never touches UI types: it wakes the UI through a `waker` closure the UI gives
//! (egui's `ctx.request_repaint`).
//!
//! Channels and drop policy:
//! - Commands: a bounded channel of [`COMMAND_CAPACITY`]. [`Worker::send`] never blocks;
//!   it returns `false` when the worker is gone or the queue is full (the worker is busy
//!   loading models, say), so the UI should coalesce rapid changes (a slider sends on
//!   release, or once per frame at most).
//! - Frames: a newest-wins slot, a `Mutex<Option<Arc<FrameEvent>>>` the worker overwrites
//!   and [`Worker::take_frame`] empties. At most one frame waits there, however slow the
//!   UI; an overwritten frame is counted in [`Dropped::frames`]. Frames never travel on
//!   the event channel, so [`Worker::try_event`] never returns [`Event::Frame`] (the
//!   variant exists for UIs that fold both sources into one stream).
//! - Other events: a bounded channel of [`EVENT_CAPACITY`]. When it is full, [`Event::Step`]
//!   statistics are dropped (counted in [`Dropped::steps`]); the other events (states,
//!   errors, notices, steering) wait in order in a small queue inside the worker and are
//!   sent as room appears (the worker retries every [`OVERFLOW_RETRY`] while idle). That
//!   queue holds at most [`OVERFLOW_CAPACITY`]; beyond that, which only happens when the
//!   UI has stopped reading altogether, the oldest notice or steering event goes first,
//!   then the oldest state, and errors last ([`Dropped::events`]). The worker never blocks
//!   on the UI.
//!
//! Frames and the timeline: while running, a frame of the image at the start of every
//! [`FRAME_EVERY`]-th iteration (1: every step, for the live canvas) goes to the slot.
//! The latent behind a frame is kept (a CPU copy) only on the first iteration and every
//! `settings.save_every` iterations, plus the final latent when a run finishes or is
//! stopped; at most [`KEPT_LATENTS`] are held, the oldest dropped first.
//! [`Command::BranchFrom`] continues from one of those.
//!
//! The worker keeps running after errors: each becomes one [`Event::Error`] line, followed
//! by the state the worker is left in. It leaves its loop only on [`Command::Shutdown`] or
//! when the [`Worker`] is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Display;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::engine::device::parse_device;
use crate::engine::image::tensor_to_rgb;
use crate::engine::observer::{Frame, StepStats};
use crate::engine::session::{load_models, Models, Session, StepOutput};
use crate::engine::EngineError;
use crate::export::write_atomic;
use crate::settings::RunSettings;

pub use crate::models::bundled::DEMO_NOTICE;

/// Whether the built-in shapes world can stand in when no models are set.
pub fn demo_models_available() -> bool {
    crate::models::bundled::shapes_world().is_some()
}

/// The model files (names and SHA-256) a run with `settings` uses, for a PNG's
/// metadata. Reads whole weight files: call it off the UI thread.
pub fn model_files(settings: &RunSettings) -> Result<crate::settings::png::ModelFiles, String> {
    let source = crate::engine::session::resolve_models(settings).map_err(|e| e.to_string())?;
    crate::engine::session::model_files(&source, settings).map_err(|e| e.to_string())
}

/// Why a one-step draft cannot be made with `settings`' models, or `None` when a
/// one-step model is there to try (whether it fits the models is checked on loading).
pub fn draft_unavailable(settings: &RunSettings, one_step: &crate::settings::OneStepSettings) -> Option<String> {
    const TRAIN: &str = "train one with `clipcanvas train-onestep --images DIR --clip CLIP --vqgan VQGAN` \
                         and set it in Settings > One-step model";
    match &one_step.model {
        Some(dir) if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() => None,
        Some(dir) => Some(format!("no one-step model in {}: {TRAIN}", dir.display())),
        None if settings.names_no_models() => match crate::models::bundled::shapes_world() {
            Some(w) if w.onestep.is_some() => None,
            _ => Some("the shapes world's one-step model (models/shapes-world/onestep) is missing".to_owned()),
        },
        None => Some(format!("no one-step model for these models: {TRAIN}")),
    }
}

/// How many commands may wait for the worker.
pub const COMMAND_CAPACITY: usize = 64;
/// How many events may wait for the UI on the event channel.
pub const EVENT_CAPACITY: usize = 256;
/// How many non-droppable events the worker holds back while the event channel is full.
pub const OVERFLOW_CAPACITY: usize = 1024;
/// How many kept latents (timeline entries) the worker holds.
pub const KEPT_LATENTS: usize = 500;
/// A live frame every this many iterations.
pub const FRAME_EVERY: usize = 1;
/// How often an idle worker retries sending held-back events.
pub const OVERFLOW_RETRY: Duration = Duration::from_millis(50);
/// The iterations-per-second figure is averaged over this many recent steps.
const STEP_WINDOW: usize = 10;

/// What the UI asks of the worker.
#[derive(Debug, Clone)]
pub enum Command {
    /// Loads the models the settings name (unless they are the ones loaded: cached by
    /// paths and device), builds a session and runs it. Replaces any current run.
    Start(Box<RunSettings>),
    /// Stops stepping; the session stays.
    Pause,
    /// Continues a paused (or stopped) run.
    Resume,
    /// Ends the run; the session, its last frame and the kept latents stay (for
    /// [`Command::BranchFrom`], [`Command::SaveSession`] or [`Command::Resume`]).
    Stop,
    /// Drops the session and the kept latents; the models stay loaded.
    Reset,
    /// Replaces the text prompts from the next iteration on.
    SetPrompts(Vec<String>),
    /// Sets the learning rate from the next iteration on.
    SetLr(f64),
    /// Replaces the image prompts (`path[:weight[:stop]]`) and embeds them again.
    SetImagePrompts(Vec<String>),
    /// Continues from the latent kept with the frame of `iteration`. The iteration count
    /// goes on (the timeline stays ordered) and the run is extended so that as many
    /// iterations remain as did at the kept frame. A paused run stays paused; otherwise
    /// it runs.
    BranchFrom { iteration: usize },
    /// Writes the session file (atomically).
    SaveSession(PathBuf),
    /// Starts a run that began from a one-step draft over from another of its ranked
    /// candidates (only before its first iteration).
    PickDraft(usize),
    /// Continues a finished or stopped run for this many more iterations (a draft's
    /// refinement: the draft is iteration 0).
    Refine(usize),
    /// Ends the worker thread (after the commands queued before it).
    Shutdown,
}

/// Where the worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// No session.
    Idle,
    /// Loading models and setting up a session.
    Loading,
    Running,
    Paused,
    /// The planned iterations are done; the session stays.
    Finished,
    /// Stopped by the user or by an error in a step; the session stays.
    Stopped,
}

/// A frame for the canvas: the image at the start of `iteration` (before its update). The
/// final frame of a finished or stopped run is the image after the last update, with
/// `iteration` = the number of iterations done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameEvent {
    pub iteration: usize,
    pub frame: Frame,
    /// When the worker handed the frame over: the start of its way to the screen.
    pub published: Instant,
}

impl FrameEvent {
    pub fn new(iteration: usize, frame: Frame) -> Self {
        Self { iteration, frame, published: Instant::now() }
    }
}

/// What the worker reports.
#[derive(Debug, Clone)]
pub enum Event {
    State(RunState),
    Step(StepStats),
    /// Never sent on the event channel: frames come through [`Worker::take_frame`].
    Frame(Arc<FrameEvent>),
    Notice(String),
    /// One line; the worker keeps running.
    Error(String),
    /// A live change and the iteration it takes effect at.
    Steered {
        iteration: usize,
        change: String,
    },
    /// The one-step candidates a run started from, best first.
    Drafts(Arc<Vec<DraftFrame>>),
}

/// One ranked one-step candidate, for the studio's picker.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftFrame {
    pub frame: Frame,
    /// CLIP's score against the prompts.
    pub score: f64,
}

/// One live change of a run, as in [`Event::Steered`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steer {
    pub iteration: usize,
    pub change: String,
}

/// What the worker has dropped because the UI did not keep up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Frames overwritten in the slot before the UI took them.
    pub frames: u64,
    /// Step statistics not sent because the event channel was full.
    pub steps: u64,
    /// Other events lost because the worker's overflow queue was full too.
    pub events: u64,
}

/// State shared between the handle and the thread.
#[derive(Default)]
struct Shared {
    frame: Mutex<Option<Arc<FrameEvent>>>,
    steering: Mutex<Vec<Steer>>,
    dropped_frames: AtomicU64,
    dropped_steps: AtomicU64,
    dropped_events: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The UI's handle on the engine thread. Dropping it shuts the thread down and joins it.
pub struct Worker {
    commands: Option<Sender<Command>>,
    events: Receiver<Event>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("alive", &self.is_alive()).finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts the engine thread. `waker` is called after the worker sends something.
    pub fn spawn(waker: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (cmd_tx, cmd_rx) = bounded(COMMAND_CAPACITY);
        let (ev_tx, ev_rx) = bounded(EVENT_CAPACITY);
        let shared = Arc::new(Shared::default());
        let engine = Engine::new(Outbox::new(ev_tx, Arc::clone(&shared), waker));
        let thread = std::thread::Builder::new().name("clipcanvas-engine".into()).spawn(move || engine.run(&cmd_rx))?;
        Ok(Self { commands: Some(cmd_tx), events: ev_rx, shared, thread: Some(thread) })
    }

    /// Queues a command without blocking. `false` when the worker is gone or its queue is
    /// full ([`COMMAND_CAPACITY`]); the command is then dropped.
    pub fn send(&self, cmd: Command) -> bool {
        self.commands.as_ref().is_some_and(|tx| tx.try_send(cmd).is_ok())
    }

    /// The next event, if one is waiting. Never [`Event::Frame`].
    pub fn try_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The newest frame since the last call, if any.
    pub fn take_frame(&self) -> Option<Arc<FrameEvent>> {
        lock(&self.shared.frame).take()
    }

    /// The live changes of the current run, in order (cleared by Start and Reset).
    pub fn steering(&self) -> Vec<Steer> {
        lock(&self.shared.steering).clone()
    }

    /// What was dropped so far because the UI was slow.
    pub fn dropped(&self) -> Dropped {
        Dropped {
            frames: self.shared.dropped_frames.load(Ordering::Relaxed),
            steps: self.shared.dropped_steps.load(Ordering::Relaxed),
            events: self.shared.dropped_events.load(Ordering::Relaxed),
        }
    }

    /// Whether the engine thread is still running.
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Worker {
    /// Sends [`Command::Shutdown`] and joins the thread. The commands queued before it are
    /// handled first (a last `SaveSession` is written); a running session stops after the
    /// step in progress. If the queue is full, closing the channel ends the thread once
    /// the queue is drained.
    fn drop(&mut self) {
        if let Some(tx) = self.commands.take() {
            let _ = tx.try_send(Command::Shutdown);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes any message one line.
fn one_line(msg: impl Display) -> String {
    msg.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// The worker's side of the event channel and the frame slot.
struct Outbox {
    tx: Sender<Event>,
    overflow: VecDeque<Event>,
    shared: Arc<Shared>,
    waker: Arc<dyn Fn() + Send + Sync>,
}

impl Outbox {
    fn new(tx: Sender<Event>, shared: Arc<Shared>, waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self { tx, overflow: VecDeque::new(), shared, waker }
    }

    fn wake(&self) {
        (self.waker)();
    }

    /// Sends held-back events while there is room.
    fn flush(&mut self) {
        let mut sent = false;
        while let Some(ev) = self.overflow.pop_front() {
            match self.tx.try_send(ev) {
                Ok(()) => sent = true,
                Err(TrySendError::Full(ev)) => {
                    self.overflow.push_front(ev);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.overflow.clear();
                    break;
                }
            }
        }
        if sent {
            self.wake();
        }
    }

    fn has_backlog(&self) -> bool {
        !self.overflow.is_empty()
    }

    /// Sends an event that must not be dropped (anything but step statistics).
    fn send(&mut self, ev: Event) {
        self.flush();
        let ev = if self.overflow.is_empty() {
            match self.tx.try_send(ev) {
                Ok(()) => {
                    self.wake();
                    return;
                }
                Err(TrySendError::Full(ev)) => ev,
                Err(TrySendError::Disconnected(_)) => return,
            }
        } else {
            ev
        };
        if self.overflow.len() >= OVERFLOW_CAPACITY {
            let victim = self
                .overflow
                .iter()
                .position(|e| matches!(e, Event::Notice(_) | Event::Steered { .. }))
                .or_else(|| self.overflow.iter().position(|e| matches!(e, Event::State(_))))
                .unwrap_or(0);
            self.overflow.remove(victim);
            self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
        self.overflow.push_back(ev);
    }

    /// Sends step statistics, or drops them when the UI is behind.
    fn step(&mut self, stats: StepStats) {
        self.flush();
        if self.has_backlog() {
            self.shared.dropped_steps.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(Event::Step(stats)) {
            Ok(()) => self.wake(),
            Err(TrySendError::Full(_)) => {
                self.shared.dropped_steps.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Puts a frame in the newest-wins slot.
    fn frame(&self, frame: FrameEvent) {
        if lock(&self.shared.frame).replace(Arc::new(frame)).is_some() {
            self.shared.dropped_frames.fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }

    fn clear_frame(&self) {
        lock(&self.shared.frame).take();
    }
}

/// What the model cache is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelKey {
    vqgan: Option<PathBuf>,
    vqgan_config: Option<PathBuf>,
    clip: Option<PathBuf>,
    device: String,
}

impl ModelKey {
    fn of(settings: &RunSettings) -> Self {
        let mut device = settings.device.trim().to_ascii_lowercase();
        if device == "cuda" || device == "metal" {
            device.push_str(":0");
        }
        Self {
            vqgan: settings.vqgan.clone(),
            vqgan_config: settings.vqgan_config.clone(),
            clip: settings.clip.clone(),
            device,
        }
    }
}

enum Flow {
    Continue,
    Exit,
}

/// The thread's state: models, session, kept latents.
struct Engine {
    out: Outbox,
    models: Option<(ModelKey, Arc<Models>)>,
    session: Option<Session>,
    state: RunState,
    /// Latents (CPU copies) by the iteration of their frame; iterations only grow within a
    /// session, so the first entry is the oldest.
    kept: BTreeMap<usize, Tensor>,
    /// The iteration of the last frame sent, so a final frame is not sent twice.
    last_frame: Option<usize>,
    step_times: VecDeque<f64>,
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
    fn new(out: Outbox) -> Self {
        Self {
            out,
            models: None,
            session: None,
            state: RunState::Idle,
            kept: BTreeMap::new(),
            last_frame: None,
            step_times: VecDeque::new(),
        }
    }

    fn run(mut self, rx: &Receiver<Command>) {
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
        self.kept.clear();
        self.last_frame = None;
        self.step_times.clear();
        lock(&self.out.shared.steering).clear();
    }

    fn handle(&mut self, cmd: Command) {
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
                    self.final_frame();
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
            Command::Shutdown => {}
        }
    }

    fn start(&mut self, settings: RunSettings) {
        self.clear_session();
        self.out.clear_frame();
        self.set_state(RunState::Loading);
        match self.build(settings) {
            Ok(mut session) => {
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

    fn build(&mut self, settings: RunSettings) -> Result<Session, String> {
        settings.validate().map_err(|e| format!("invalid settings: {e}"))?;
        let key = ModelKey::of(&settings);
        let models = match &self.models {
            Some((k, m)) if *k == key => Arc::clone(m),
            _ => {
                // Free the old models before loading others.
                self.models = None;
                let device = parse_device(&settings.device).map_err(|e| e.to_string())?;
                let started = Instant::now();
                let models = Arc::new(load_models(&settings, &device).map_err(|e| e.to_string())?);
                self.notice(format!("models loaded in {:.1} s", started.elapsed().as_secs_f64()));
                self.models = Some((key, Arc::clone(&models)));
                models
            }
        };
        Session::new(models, settings).map_err(|e| e.to_string())
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

    fn branch(&mut self, from: usize) {
        if self.session.is_none() {
            self.notice("nothing to branch from: start a run first");
            return;
        }
        let Some(latent) = self.kept.get(&from).cloned() else {
            let kept = match (self.kept.first_key_value(), self.kept.last_key_value()) {
                (Some((a, _)), Some((b, _))) => format!("{} kept, {a} to {b}", self.kept.len()),
                _ => "none kept".to_owned(),
            };
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
        let Some(session) = self.session.as_ref() else {
            self.error("no session to save: start a run first");
            return;
        };
        let result = session
            .to_bytes()
            .map_err(|e| e.to_string())
            .and_then(|bytes| write_atomic(path, |w| w.write_all(&bytes)).map_err(|e| e.to_string()));
        match result {
            Ok(()) => self.notice(format!("session saved to {}", path.display())),
            Err(e) => self.error(e),
        }
    }

    fn keep_latent(&mut self, iteration: usize, latent: Tensor) {
        self.kept.insert(iteration, latent);
        while self.kept.len() > KEPT_LATENTS {
            self.kept.pop_first();
        }
    }

    /// One iteration: step, frame, statistics; finishes the run at its end.
    fn step_once(&mut self) {
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
        let keep = it == 0 || (save_every > 0 && it % save_every == 0);
        let started = Instant::now();
        match advance(session, keep, keep || it % FRAME_EVERY.max(1) == 0) {
            Ok(Advance { out, latent, frame }) => {
                if let Some(latent) = latent {
                    self.keep_latent(it, latent);
                }
                if let Some(frame) = frame {
                    self.out.frame(FrameEvent::new(it, frame));
                    self.last_frame = Some(it);
                }
                self.step_times.push_back(started.elapsed().as_secs_f64());
                if self.step_times.len() > STEP_WINDOW {
                    self.step_times.pop_front();
                }
                let mean = self.step_times.iter().sum::<f64>() / self.step_times.len() as f64;
                self.out.step(StepStats {
                    iteration: out.iteration,
                    iterations: total,
                    total_loss: out.total,
                    losses: out.losses,
                    its_per_sec: if mean > 0.0 { 1.0 / mean } else { 0.0 },
                    lr: out.lr,
                });
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
                self.out.frame(FrameEvent::new(it, frame));
                self.last_frame = Some(it);
            }
            Err(e) => self.error(e),
        }
    }

    fn finish(&mut self) {
        self.final_frame();
        let steering = lock(&self.out.shared.steering).clone();
        if !steering.is_empty() {
            let summary: Vec<String> = steering.iter().map(|s| format!("{}: {}", s.iteration, s.change)).collect();
            self.notice(format!("steered {} times: {}", steering.len(), summary.join("; ")));
        }
        self.set_state(RunState::Finished);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;

    use candle_core::DType;

    use super::*;

    const WAIT: Duration = Duration::from_secs(120);

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
    }

    fn tiny(iterations: usize) -> RunSettings {
        RunSettings {
            prompts: vec!["a lighthouse at dusk".into()],
            width: 32,
            height: 32,
            cutn: 2,
            augments: Vec::new(),
            iterations,
            save_every: 2,
            vqgan: Some(fixture("vqgan-tiny/model.ckpt")),
            clip: Some(fixture("clip-tiny")),
            ..RunSettings::default()
        }
    }

    #[test]
    fn model_files_name_and_hash_the_models_a_run_uses() {
        let files = model_files(&tiny(1)).expect("fixture models");
        let clip = files.clip.expect("clip");
        let vqgan = files.vqgan.expect("vqgan");
        assert_eq!((clip.name.as_str(), vqgan.name.as_str()), ("clip-tiny", "model.ckpt"));
        assert!(clip.sha256.len() == 64 && vqgan.sha256.len() == 64);
        assert_eq!(vqgan.sha256, crate::export::file_sha256(&fixture("vqgan-tiny/model.ckpt")).expect("hash"));
        assert!(files.demo.is_none() && files.onestep.is_none());
        let missing = RunSettings { vqgan: Some(PathBuf::from("/nowhere/x.ckpt")), ..tiny(1) };
        assert!(model_files(&missing).expect_err("no such file").contains("/nowhere/x.ckpt"));
    }

    #[test]
    fn a_draft_reports_its_candidates_and_can_be_picked_and_refined() {
        let dir = tempfile::tempdir().expect("temp");
        let model = dir.path().join("onestep");
        let config = crate::models::onestep::OneStepConfig {
            clip_dim: 16,
            n_codes: 64,
            grid: [8, 8],
            width: 16,
            layers: 1,
            heads: 2,
            mlp: 32,
            ..Default::default()
        };
        crate::training::onestep::write_untrained(&model, &config, 1).expect("model");
        let (worker, _) = spawn();
        let mut settings = tiny(0);
        settings.one_step =
            Some(crate::settings::OneStepSettings { model: Some(model), candidates: 3, ..Default::default() });
        start(&worker, settings);
        let events = until(&worker, is_state(RunState::Finished));
        let drafts = events.iter().find_map(|e| match e {
            Event::Drafts(d) => Some(Arc::clone(d)),
            _ => None,
        });
        let drafts = drafts.expect("the candidates are reported");
        assert_eq!(drafts.len(), 3);
        assert!(drafts.windows(2).all(|w| w[0].score >= w[1].score), "ranked best first");
        let frame = worker.take_frame().expect("the draft on the canvas");
        assert_eq!((frame.iteration, &frame.frame), (0, &drafts[0].frame));
        assert!(worker.send(Command::PickDraft(2)));
        until(&worker, |e| matches!(e, Event::Steered { change, .. } if change.contains("draft 2")));
        let frame = worker.take_frame().expect("the picked draft");
        assert_eq!(frame.frame, drafts[2].frame);
        assert!(worker.send(Command::Refine(2)));
        let events = until(&worker, is_state(RunState::Finished));
        assert_eq!(steps(&events).len(), 2, "two iterations of refinement");
        assert!(worker.send(Command::PickDraft(0)));
        until(&worker, |e| matches!(e, Event::Notice(m) if m.contains("moved on")));
    }

    fn spawn() -> (Worker, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let worker = Worker::spawn(Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }))
        .expect("spawn");
        (worker, wakes)
    }

    fn start(worker: &Worker, settings: RunSettings) {
        assert!(worker.send(Command::Start(Box::new(settings))));
    }

    /// Collects events until one matches `pred` (included); panics after [`WAIT`].
    fn until(worker: &Worker, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match worker.try_event() {
                Some(ev) => {
                    let done = pred(&ev);
                    seen.push(ev);
                    if done {
                        return seen;
                    }
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        panic!("timed out; events so far: {seen:?}");
    }

    fn is_state(s: RunState) -> impl Fn(&Event) -> bool {
        move |e| matches!(e, Event::State(x) if *x == s)
    }

    fn steps(events: &[Event]) -> Vec<&StepStats> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Step(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn states(events: &[Event]) -> Vec<RunState> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::State(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn labels(s: &StepStats) -> Vec<&str> {
        s.losses.iter().map(|(l, _)| l.as_str()).collect()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("values")
    }

    #[test]
    fn a_run_reports_states_steps_and_frames_to_the_end() {
        let (worker, wakes) = spawn();
        start(&worker, tiny(4));
        let events = until(&worker, is_state(RunState::Finished));
        assert_eq!(states(&events), [RunState::Loading, RunState::Running, RunState::Finished], "{events:?}");
        let steps = steps(&events);
        assert_eq!(steps.iter().map(|s| s.iteration).collect::<Vec<_>>(), [0, 1, 2, 3]);
        for s in &steps {
            assert_eq!(s.iterations, 4);
            assert!(s.total_loss.is_finite() && s.its_per_sec > 0.0, "{s:?}");
            assert_eq!(labels(s), ["a lighthouse at dusk"]);
        }
        assert!(!events.iter().any(|e| matches!(e, Event::Error(_) | Event::Frame(_))), "{events:?}");
        let frame = worker.take_frame().expect("a frame");
        assert_eq!(frame.iteration, 4, "the final frame is the result after the last update");
        assert_eq!((frame.frame.width, frame.frame.height, frame.frame.rgba.len()), (32, 32, 32 * 32 * 4));
        assert!(wakes.load(Ordering::Relaxed) > 0, "the UI was woken");
        assert!(worker.try_event().is_none());
        assert!(worker.is_alive());
    }

    #[test]
    fn the_newest_frame_wins_for_a_consumer_that_never_takes_frames() {
        let (worker, _) = spawn();
        start(&worker, tiny(5));
        until(&worker, is_state(RunState::Finished));
        let frame = worker.take_frame().expect("a frame");
        assert_eq!(frame.iteration, 5);
        assert_eq!(Arc::strong_count(&frame), 1, "the worker holds no other copy");
        assert!(worker.take_frame().is_none(), "one frame was held, and it is taken");
        // Frames 0..4 during the run and the final one: all but the last were overwritten.
        assert_eq!(worker.dropped(), Dropped { frames: 5, steps: 0, events: 0 });
    }

    #[test]
    fn live_steering_pause_resume_and_stop() {
        let (worker, _) = spawn();
        start(&worker, tiny(10_000));
        until(&worker, |e| matches!(e, Event::Step(_)));
        assert!(worker.send(Command::SetPrompts(vec!["a red barn:2".into()])));
        let events = until(&worker, |e| matches!(e, Event::Steered { .. }));
        let Some(Event::Steered { iteration: at, change }) = events.last().cloned() else { unreachable!() };
        assert_eq!(change, "prompts: a red barn:2");
        for s in steps(&events) {
            assert!(s.iteration < at && labels(s) == ["a lighthouse at dusk"], "{s:?}");
        }
        let events = until(&worker, |e| matches!(e, Event::Step(s) if s.iteration >= at));
        let Some(Event::Step(s)) = events.last() else { unreachable!() };
        assert_eq!(s.iteration, at, "the change took effect at the next iteration");
        assert_eq!(labels(s), ["a red barn"]);

        // A bad prompt is an error; the run goes on with the old ones.
        assert!(worker.send(Command::SetPrompts(vec!["a blue barn:".into()])));
        assert!(worker.send(Command::SetLr(0.05)));
        let events = until(&worker, |e| matches!(e, Event::Steered { .. }));
        assert!(events.iter().any(|e| matches!(e, Event::Error(m) if m.contains("empty weight"))), "{events:?}");
        let events = until(&worker, |e| matches!(e, Event::Step(_)));
        let Some(Event::Step(s)) = events.last() else { unreachable!() };
        assert_eq!((labels(s), s.lr), (vec!["a red barn"], 0.05));

        assert!(worker.send(Command::Pause));
        until(&worker, is_state(RunState::Paused));
        worker.take_frame();
        std::thread::sleep(Duration::from_millis(400));
        let mut late = Vec::new();
        while let Some(e) = worker.try_event() {
            late.push(e);
        }
        assert!(steps(&late).is_empty(), "no steps while paused: {late:?}");
        assert!(worker.take_frame().is_none(), "no frames while paused");

        assert!(worker.send(Command::Resume));
        until(&worker, is_state(RunState::Running));
        until(&worker, |e| matches!(e, Event::Step(_)));

        assert!(worker.send(Command::Stop));
        until(&worker, is_state(RunState::Stopped));
        std::thread::sleep(Duration::from_millis(100));
        let mut late = Vec::new();
        while let Some(e) = worker.try_event() {
            late.push(e);
        }
        assert!(steps(&late).is_empty(), "no steps after Stop: {late:?}");
        assert!(worker.take_frame().is_some(), "the last frame stays");
        let log = worker.steering();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0], Steer { iteration: at, change: "prompts: a red barn:2".into() });
        assert_eq!(log[1].change, "lr: 0.05");
    }

    #[test]
    fn a_bad_model_path_is_an_error_and_the_worker_still_starts_later() {
        let (worker, _) = spawn();
        let mut bad = tiny(2);
        bad.vqgan = Some(fixture("vqgan-tiny/missing.ckpt"));
        start(&worker, bad);
        let events = until(&worker, is_state(RunState::Idle));
        assert_eq!(states(&events), [RunState::Loading, RunState::Idle]);
        let errors: Vec<_> = events.iter().filter(|e| matches!(e, Event::Error(_))).collect();
        assert_eq!(errors.len(), 1, "{events:?}");
        if let Event::Error(m) = errors[0] {
            assert!(m.contains("missing.ckpt") && !m.contains('\n'), "{m}");
        }
        // Nothing to steer or save without a session: a notice or an error, no panic.
        assert!(worker.send(Command::SetLr(0.2)));
        assert!(worker.send(Command::SaveSession(PathBuf::from("/nonexistent/x.session"))));
        until(&worker, |e| matches!(e, Event::Error(m) if m.contains("no session")));

        start(&worker, tiny(2));
        let events = until(&worker, is_state(RunState::Finished));
        assert_eq!(steps(&events).len(), 2);
    }

    #[test]
    fn image_prompts_branching_and_saving() {
        let (worker, _) = spawn();
        start(&worker, tiny(3));
        until(&worker, is_state(RunState::Finished));

        // Branch from a kept frame (0, 2 and the final 3 are kept): runs 3 more iterations.
        assert!(worker.send(Command::BranchFrom { iteration: 1 }));
        until(&worker, |e| matches!(e, Event::Error(m) if m.contains("no kept frame at iteration 1")));
        let image = fixture("score/exact.png");
        assert!(worker.send(Command::SetImagePrompts(vec![format!("{}:0.5", image.display())])));
        assert!(worker.send(Command::BranchFrom { iteration: 0 }));
        let events = until(&worker, is_state(RunState::Finished));
        let steered: Vec<_> = events.iter().filter(|e| matches!(e, Event::Steered { .. })).collect();
        assert_eq!(steered.len(), 2, "{events:?}");
        let steps = steps(&events);
        assert_eq!(steps.iter().map(|s| s.iteration).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(steps[0].iterations, 6);
        assert_eq!(labels(steps[0]), ["a lighthouse at dusk".to_owned(), format!("image: {}", image.display())]);
        assert!(events.iter().any(|e| matches!(e, Event::Notice(m) if m.starts_with("steered 2 times"))));
        assert_eq!(worker.take_frame().map(|f| f.iteration), Some(6));

        let dir = tempfile::tempdir().expect("temp");
        let path = dir.path().join("run.session");
        assert!(worker.send(Command::SaveSession(path.clone())));
        until(&worker, |e| matches!(e, Event::Notice(m) if m.starts_with("session saved")));
        let saved = Session::read_settings(&path).expect("a session file");
        assert_eq!(saved.iterations, 6);
        assert_eq!(saved.image_prompts, [format!("{}:0.5", image.display())]);
    }

    /// The engine without its thread, to look inside.
    fn engine() -> (Engine, Receiver<Event>) {
        let (tx, rx) = bounded(EVENT_CAPACITY);
        (Engine::new(Outbox::new(tx, Arc::new(Shared::default()), Arc::new(|| {}))), rx)
    }

    #[test]
    fn branching_restores_the_kept_latent_and_models_are_cached() {
        let (mut engine, rx) = engine();
        engine.handle(Command::Start(Box::new(tiny(5))));
        assert_eq!(engine.state, RunState::Running);
        while engine.state == RunState::Running {
            engine.step_once();
        }
        assert_eq!(engine.state, RunState::Finished);
        assert_eq!(engine.kept.keys().copied().collect::<Vec<_>>(), [0, 2, 4, 5]);
        let kept = values(&engine.kept[&2]);
        let session = engine.session.as_ref().expect("session");
        assert_ne!(values(session.latent()), kept, "the latent moved on after iteration 2");
        let first = values(&engine.kept[&0]);

        engine.handle(Command::BranchFrom { iteration: 2 });
        let session = engine.session.as_ref().expect("session");
        assert_eq!(values(session.latent()), kept);
        assert_eq!((session.iteration(), session.settings().iterations), (5, 8));
        assert_eq!(engine.state, RunState::Running);
        engine.step_once();
        assert_eq!(values(&engine.kept[&2]), kept, "kept latents do not change as the session steps");
        assert_eq!(values(&engine.kept[&0]), first);

        // The same models again: no reload (no "models loaded" notice).
        let models = Arc::clone(engine.session.as_ref().expect("session").models());
        while rx.try_recv().is_ok() {}
        engine.handle(Command::Start(Box::new(tiny(2))));
        let events: Vec<Event> = rx.try_iter().collect();
        assert!(!events.iter().any(|e| matches!(e, Event::Notice(m) if m.contains("models loaded"))), "{events:?}");
        assert!(Arc::ptr_eq(&models, engine.session.as_ref().expect("session").models()));
        assert!(engine.kept.is_empty(), "a new run starts a new timeline");

        engine.handle(Command::Reset);
        assert!(engine.session.is_none() && engine.state == RunState::Idle);
    }

    #[test]
    fn kept_latents_are_bounded() {
        let (mut engine, _rx) = engine();
        for i in 0..KEPT_LATENTS + 10 {
            engine.keep_latent(i, Tensor::zeros(1, DType::F32, &Device::Cpu).expect("tensor"));
        }
        assert_eq!(engine.kept.len(), KEPT_LATENTS);
        assert_eq!(engine.kept.first_key_value().map(|(k, _)| *k), Some(10));
    }

    #[test]
    fn a_full_event_channel_drops_steps_but_holds_other_events_in_order() {
        let (tx, rx) = bounded(2);
        let shared = Arc::new(Shared::default());
        let mut out = Outbox::new(tx, Arc::clone(&shared), Arc::new(|| {}));
        let stats = |iteration| StepStats {
            iteration,
            iterations: 9,
            total_loss: 1.0,
            losses: Vec::new(),
            its_per_sec: 1.0,
            lr: 0.1,
        };
        out.step(stats(0));
        out.send(Event::State(RunState::Running));
        out.step(stats(1)); // full: dropped
        out.send(Event::Error("boom".into())); // full: held back
        out.send(Event::State(RunState::Stopped));
        out.step(stats(2)); // behind held-back events: dropped
        assert!(out.has_backlog());
        assert_eq!(shared.dropped_steps.load(Ordering::Relaxed), 2);
        assert!(matches!(rx.try_recv(), Ok(Event::Step(s)) if s.iteration == 0));
        assert!(matches!(rx.try_recv(), Ok(Event::State(RunState::Running))));
        out.flush();
        assert!(!out.has_backlog());
        assert!(matches!(rx.try_recv(), Ok(Event::Error(m)) if m == "boom"));
        assert!(matches!(rx.try_recv(), Ok(Event::State(RunState::Stopped))));

        // A UI that never reads: the overflow stays bounded, notices go before states and errors.
        out.send(Event::Notice("fills the channel".into()));
        out.send(Event::Notice("fills the channel".into()));
        out.send(Event::Error("a".into()));
        out.send(Event::State(RunState::Paused));
        for i in 0..OVERFLOW_CAPACITY + 5 {
            out.send(Event::Notice(format!("n{i}")));
        }
        assert_eq!(out.overflow.len(), OVERFLOW_CAPACITY);
        assert!(out.overflow.iter().any(|e| matches!(e, Event::Error(m) if m == "a")));
        assert!(out.overflow.iter().any(|e| matches!(e, Event::State(RunState::Paused))));
        assert_eq!(shared.dropped_events.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn drop_joins_the_thread_promptly_even_mid_run() {
        let (worker, _) = spawn();
        drop(worker);

        let (worker, _) = spawn();
        start(&worker, tiny(100_000));
        until(&worker, |e| matches!(e, Event::Step(_)));
        let started = Instant::now();
        drop(worker);
        assert!(started.elapsed() < Duration::from_secs(20), "joined in {:?}", started.elapsed());

        // An explicit Shutdown ends the thread; later sends report it gone.
        let (worker, _) = spawn();
        assert!(worker.send(Command::Shutdown));
        let deadline = Instant::now() + WAIT;
        while worker.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!worker.is_alive());
        assert!(!worker.send(Command::Pause));
    }
}
