//! The studio's one command type: everything a user can ask for — from the top bar, a
//! shortcut, a panel, the timeline or the draft strip — is a [`UiCommand`], queued while
//! the frame is drawn and carried out in one place (`commands.rs`).

use crate::worker::downloads::ModelPaths;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum UiCommand {
    /// Start a run, or stop the one going (the Start/Stop button, Ctrl+Enter).
    ToggleRun,
    /// Pause a running run, resume a paused one (Ctrl+P anywhere; Space outside text).
    TogglePause,
    Pause,
    /// Continue a paused or stopped run.
    Resume,
    /// Ask before a Reset (the top bar's Reset...).
    AskReset,
    /// Drop the session, the canvas, its kept frames, drafts and the plot.
    Reset,
    /// A one-step draft of the prompts (Ctrl+D).
    Draft,
    /// Continue the picked draft for the run's iterations.
    Refine,
    /// Start over from another ranked draft candidate.
    PickDraft(usize),
    /// Show a kept frame on the canvas.
    ShowKept(usize),
    /// Show the live frame again.
    ShowLive,
    /// Continue the run from the latent of the kept frame of this iteration.
    BranchFrom(usize),
    /// The learning rate was edited (steers a live run).
    LrChanged,
    OpenModels,
    /// Resume the run cut short, from its autosave.
    ResumeInterrupted,
    /// Forget the run cut short (its autosave is deleted).
    DiscardInterrupted,
    /// Take back the last edit (Ctrl+Z outside text fields).
    Undo,
    /// Make the last undone edit again (Ctrl+Shift+Z or Ctrl+Y).
    Redo,
    /// Score the run with another installed CLIP too (the model manager's Also score).
    AlsoScore {
        name: String,
        clip: std::path::PathBuf,
    },
    /// Point the run at an installed model (the model manager's Use).
    UseModel {
        name: String,
        paths: ModelPaths,
    },
    /// A download finished: use it where the settings point at a missing model.
    ModelInstalled {
        name: String,
        paths: Option<ModelPaths>,
    },
    CheckModels,
    OpenInit,
    ClearInit,
    AddTargets,
    ExportImage,
    ExportFrames {
        gif: bool,
    },
    SaveSettings,
    LoadSettings,
    /// Open the "Save or open by path" window (for systems without file dialogs).
    PathWindow,
    /// Save to a typed path: by its extension the image, the frames or the settings.
    SaveToPath(std::path::PathBuf),
    /// Load settings from a typed path.
    OpenPath(std::path::PathBuf),
    /// Open the outputs folder in the file manager.
    OpenOutputs,
    /// Copy the outputs folder's path.
    CopyOutputsPath,
    FitCanvas,
    CloseBanner,
    /// Render the Animation panel's animation with the prompts and settings.
    RenderAnimation,
    /// Warp the first image along the camera path, without optimising.
    PreviewMotion,
    /// Show a finished animation frame (or a preview frame) on the canvas.
    ShowAnimationFrame(usize),
    /// Export the animation's frames as a GIF, or an MP4 video.
    ExportAnimation {
        video: bool,
    },
    /// The queue panel's buttons.
    Queue(crate::ui::panels::queue::QueueAction),
    /// The history gallery's actions on a saved run.
    Gallery(crate::ui::panels::gallery::GalleryAction),
    /// Show or hide the history gallery.
    ToggleHistory,
    /// The X/Y grid dialog's cells, for the queue.
    AddGrid(crate::ui::panels::grid::GridRequest),
    /// Run the jobs left in the queue from last time.
    ContinueQueue,
    /// Take the jobs left from last time out of the queue.
    ClearQueue,
}
