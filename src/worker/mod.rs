//! The studio's engine thread: the layer between the UI and the engine.
//!
//! - `protocol`: the [`Command`]s and [`Event`]s and the plain data they carry;
//! - `outbox`: the worker's side of the channels and the frame slot, with the drop policy;
//! - `run`: the thread's loop (models, session, steering, drafts, branching);
//! - `timeline`: the latents behind the kept frames;
//! - `files`: the studio's file work (decoding, exports, settings files);
//! - `library`: the saved runs the history gallery lists, their thumbnails, the saved queue;
//! - `downloads`: the model manager's service (from `catalog`), the studio's other thread;
//! - here: the [`Worker`] handle the UI keeps, and what the UI may ask without a thread
//!   (whether the demo models or a one-step model are there, model files' hashes).
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

pub mod files;
pub mod library;
mod outbox;
mod protocol;
mod recorder;
mod run;
mod shared;
#[cfg(test)]
mod tests;
mod timeline;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

/// The model manager's download service, the studio's other background thread.
pub use crate::catalog::service as downloads;
pub use protocol::{Command, DraftFrame, Dropped, Event, Frame, FrameEvent, RunState, Steer, StepStats};
pub use recorder::Recording;

use crate::settings::RunSettings;
use outbox::Outbox;
use run::Engine;
use shared::{lock, Shared};
pub use shared::{COMMAND_CAPACITY, EVENT_CAPACITY, FRAME_EVERY, KEPT_LATENTS, OVERFLOW_CAPACITY, OVERFLOW_RETRY};

pub use crate::catalog::bundled::DEMO_NOTICE;

/// Whether the built-in shapes world can stand in when no models are set.
pub fn demo_models_available() -> bool {
    crate::catalog::bundled::shapes_world().is_some()
}

/// The model files (names and SHA-256) a run with `settings` uses, for a PNG's
/// metadata. Reads whole weight files: call it off the UI thread.
pub fn model_files(settings: &RunSettings) -> Result<crate::settings::png::ModelFiles, String> {
    let source = crate::engine::loaded::resolve_models(settings).map_err(|e| e.to_string())?;
    crate::engine::loaded::model_files(&source, settings).map_err(|e| e.to_string())
}

/// Why a one-step draft cannot be made with `settings`' models, or `None` when a
/// one-step model is there to try (whether it fits the models is checked on loading).
pub fn draft_unavailable(settings: &RunSettings, one_step: &crate::settings::OneStepSettings) -> Option<String> {
    const TRAIN: &str = "train one with `clipcanvas train-onestep --images DIR --clip CLIP --vqgan VQGAN` \
                         and set it in Settings > One-step model";
    match &one_step.model {
        Some(dir) if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() => None,
        Some(dir) => Some(format!("no one-step model in {}: {TRAIN}", dir.display())),
        None if settings.names_no_models() => match crate::catalog::bundled::shapes_world() {
            Some(w) if w.onestep.is_some() => None,
            _ => Some("the shapes world's one-step model (models/shapes-world/onestep) is missing".to_owned()),
        },
        None => Some(format!("no one-step model for these models: {TRAIN}")),
    }
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
