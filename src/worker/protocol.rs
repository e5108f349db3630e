//! What crosses between the studio and the engine thread: the commands the UI sends,
//! the events the worker sends back, and the plain data they carry (no tensors).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use crate::engine::observer::{Frame, StepStats};
use crate::settings::RunSettings;

/// What the UI asks of the worker.
#[derive(Debug, Clone)]
pub enum Command {
    /// Loads the models the settings name (unless they are the ones loaded: cached by
    /// paths and device), builds a session and runs it. Replaces any current run. With
    /// `settings.animation`, renders the animation: one session a frame, each finished
    /// frame sent as [`Event::AnimationFrame`]; Pause, Stop and Resume act on the frame
    /// in progress, and live steering, branching and session files are for single runs.
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
    /// Records every k-th iteration's image of the runs that follow into a folder
    /// (`None`: no recording). Sent before the [`Command::Start`] it is for.
    Record(Option<super::recorder::Recording>),
    /// Saves the session of the runs that follow to this file every this many iterations
    /// (`None`: no autosave), atomically, so that a crash loses at most that many; sent
    /// before the [`Command::Start`] it is for. Animations are not autosaved.
    Autosave(Option<(PathBuf, usize)>),
    /// Resumes a saved session (the autosave of a run cut short), loading the models its
    /// settings name; the run goes on from its iteration, as `generate --resume` does.
    ResumeSession(PathBuf),
    /// The camera path alone: the settings' animation applied to its first image (the
    /// init image, else the session's current image, else a test card) without
    /// optimising; answered with [`Event::MotionPreview`].
    PreviewMotion(Box<RunSettings>),
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
    /// A finished frame of an animation (a [`Command::Start`] whose settings carry one):
    /// frame `index` of `total`.
    AnimationFrame {
        index: usize,
        total: usize,
        frame: Arc<Frame>,
    },
    /// The frames of a motion preview, in order.
    MotionPreview(Arc<Vec<Frame>>),
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
