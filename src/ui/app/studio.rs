//! The studio's state: what it shows (frames, kept frames, drafts, the plot, the log,
//! banners), its line to the engine, and the commands waiting for the next frame.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::support::Background;
use super::ui_command::UiCommand;
use crate::settings::RunSettings;
use crate::ui::canvas::Canvas;
use crate::ui::link::EngineLink;
use crate::ui::panels::mask::MaskBrush;
use crate::ui::panels::models::ModelsWindow;
use crate::ui::panels::plot::LossPlot;
use crate::ui::panels::timeline::KeptFrame;
use crate::ui::state::StudioState;
use crate::worker::{DraftFrame, FrameEvent, RunState, StepStats};

pub(super) const STORAGE_KEY: &str = "clipcanvas-studio";
/// Where the library folder chosen in the history gallery is remembered.
pub(super) const LIBRARY_KEY: &str = "clipcanvas-library";
/// How long one UI frame may spend draining worker events.
pub(super) const EVENT_BUDGET: Duration = Duration::from_millis(8);
pub(super) const MAX_KEPT: usize = 500;
pub(super) const MAX_LOG: usize = 500;

/// A message shown in the banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    pub text: String,
    pub error: bool,
}

/// The studio.
pub struct StudioApp {
    pub state: StudioState,
    pub(super) link: Box<dyn EngineLink>,
    pub canvas: Canvas,
    pub run_state: RunState,
    pub(super) stats: Option<StepStats>,
    /// The loss of each prompt row and term over the iterations.
    pub plot: LossPlot,
    pub(super) kept: Vec<KeptFrame>,
    /// The kept frame on the canvas; `None` shows the live frame.
    pub(super) selected: Option<usize>,
    pub(super) live: Option<Arc<FrameEvent>>,
    pub log: VecDeque<String>,
    pub banner: Option<Banner>,
    pub(super) init_thumb: Option<egui::TextureHandle>,
    pub(super) bg_tx: Sender<Background>,
    pub(super) bg_rx: Receiver<Background>,
    pub missing_models: Vec<String>,
    /// No models are set and the built-in shapes world will be used.
    pub demo_models: bool,
    pub(super) sent_prompts: Vec<String>,
    /// The prompt rows' texts and when (egui time, seconds) they last changed.
    pub(super) typed: (Vec<String>, f64),
    pub(super) sent_targets: Vec<String>,
    /// CPU time of recent UI frames (layout, tessellation, paint submission), milliseconds.
    pub frame_ms: VecDeque<f64>,
    /// Wall time between UI frames while frames stream in, in milliseconds.
    pub(super) frame_interval_ms: VecDeque<f64>,
    pub(super) last_logic: Option<Instant>,
    /// `CLIPCANVAS_UI_STATS`: a file the UI timing figures are written to every 5 s.
    pub(super) stats_file: Option<(std::path::PathBuf, Instant)>,
    pub(super) show_log: bool,
    /// View → Performance figures: the UI's frame times in the top bar.
    pub(super) show_performance: bool,
    /// Stop was asked for and the run has not stopped yet.
    pub(super) stopping: bool,
    /// Reset was asked for: the confirmation is showing.
    pub(super) confirm_reset: bool,
    /// Where every run is saved (its final PNG with settings, and its kept frames), one
    /// folder a run; `None` where the platform has no data folder.
    pub outputs: Option<PathBuf>,
    /// The folder of the run on screen, in `outputs`.
    pub(super) run_folder: Option<PathBuf>,
    /// The "Save or open by path" window's text, while it is open.
    pub(super) path_window: Option<String>,
    /// The run ended this frame: save it once the frame's frames are in.
    pub(super) save_due: bool,
    /// Text for the clipboard, handed to egui by the next draw.
    pub(super) clipboard: Option<String>,
    /// The run continues a branch: from which kept iteration, and the session's own
    /// iteration where the branch began (`None` until its first step comes back).
    pub(super) branch: Option<(usize, Option<usize>)>,
    /// The worker was last told to record.
    pub(super) recording: bool,
    /// Where the target-image panel was drawn: files dropped there become targets.
    pub target_rect: Option<egui::Rect>,
    /// The model-manager window.
    pub models_window: ModelsWindow,
    /// The region brush: which prompt row's mask the canvas paints.
    pub brush: MaskBrush,
    /// A run cut short that the studio offers to resume (found with its autosave).
    pub interrupted: Option<crate::worker::files::InterruptedRun>,
    /// The autosave file the worker was last told to write (`None`: none).
    pub(super) autosave: Option<PathBuf>,
    /// The edits to undo and redo.
    pub(super) history: super::undo::History,
    /// The last draft's ranked candidates and their thumbnails.
    pub drafts: Vec<(DraftFrame, egui::TextureHandle)>,
    /// The candidate on the canvas (its rank).
    pub draft_pick: usize,
    /// The settings of the last run sent to the engine: an exported image records them.
    pub(super) last_run: Option<RunSettings>,
    /// Commands asked for while drawing, carried out by the next frame's logic.
    pub(super) pending: Vec<UiCommand>,
    /// The model manager opens at the next draw.
    pub(super) open_models: bool,
    /// Why Draft cannot run, for the model paths it was worked out for (VQGAN, CLIP,
    /// one-step model).
    pub(super) draft_check: Option<(DraftKey, Option<String>)>,
    /// The animation's finished frames (or a motion preview's), with thumbnails.
    pub anim_frames: Vec<(Arc<FrameEvent>, egui::TextureHandle)>,
    /// The frames are a motion preview, not a render.
    pub anim_preview: bool,
    /// The frames the render will have.
    pub(super) anim_total: usize,
    /// The run going (or last run) is an animation render.
    pub animating: bool,
    /// The animation frame on the canvas.
    pub(super) anim_selected: Option<usize>,
    /// Steps of the animation render so far (the loss plot's x axis).
    pub(super) anim_steps: usize,
    /// The Animation panel's schedule texts.
    pub(super) anim_editor: crate::ui::panels::animation::AnimationEditor,
    /// The queue of jobs.
    pub queue: crate::settings::queue::Queue,
    /// Jobs were left in the saved queue: the banner offers to continue them.
    pub queue_offer: bool,
    /// The thread saving the queue: the newest state's slot and the signal that wakes it.
    pub(super) queue_saver: Option<QueueSaver>,
    /// The queue's running job has reached the worker (its end is then its own).
    pub(super) job_live: bool,
    /// The worker's last error, for a job that fails.
    pub(super) last_error: Option<String>,
    /// The history gallery.
    pub gallery: crate::ui::panels::gallery::Gallery,
    /// Thumbnails of saved runs (gallery and queue).
    pub thumbs: crate::ui::panels::gallery::Thumbs,
    /// The X/Y grid dialog.
    pub grid_dialog: crate::ui::panels::grid::GridDialog,
    /// The run on screen was read from this folder: the engine holds no latents for its
    /// kept frames, so a branch starts from the frame's image.
    pub(super) disk_run: Option<PathBuf>,
    /// The library folder was chosen in the gallery (remembered across starts).
    pub(super) library_chosen: bool,
}

/// The queue's newest JSON waiting to be written, and the writer's wake-up signal.
pub(super) type QueueSaver = (std::sync::Arc<std::sync::Mutex<Option<String>>>, crossbeam_channel::Sender<()>);

/// The model paths Draft's availability depends on.
pub(super) type DraftKey = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>);

impl StudioApp {
    /// Builds the studio on an engine link (the worker), saving runs in the platform's
    /// outputs folder and showing the newest one saved there.
    pub fn new(cc: &eframe::CreationContext<'_>, link: Box<dyn EngineLink>) -> Self {
        Self::with_outputs(cc, link, crate::worker::files::default_outputs_dir())
    }

    /// [`Self::new`] with another outputs folder (tests use a temporary one), or none.
    pub fn with_outputs(cc: &eframe::CreationContext<'_>, link: Box<dyn EngineLink>, outputs: Option<PathBuf>) -> Self {
        let state: StudioState = cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)).unwrap_or_default();
        let (bg_tx, bg_rx) = crossbeam_channel::bounded(64);
        let chosen: Option<PathBuf> = cc.storage.and_then(|s| eframe::get_value(s, LIBRARY_KEY));
        let library_chosen = chosen.is_some();
        let outputs = chosen.or(outputs);
        let mut app = Self {
            state,
            link,
            canvas: Canvas::new(cc.wgpu_render_state.as_ref()),
            run_state: RunState::Idle,
            stats: None,
            plot: LossPlot::default(),
            kept: Vec::new(),
            selected: None,
            live: None,
            log: VecDeque::new(),
            banner: None,
            init_thumb: None,
            bg_tx,
            bg_rx,
            missing_models: Vec::new(),
            demo_models: false,
            sent_prompts: Vec::new(),
            typed: (Vec::new(), 0.0),
            sent_targets: Vec::new(),
            frame_ms: VecDeque::new(),
            frame_interval_ms: VecDeque::new(),
            last_logic: None,
            stats_file: std::env::var_os("CLIPCANVAS_UI_STATS").map(|p| (p.into(), Instant::now())),
            show_log: false,
            show_performance: false,
            stopping: false,
            confirm_reset: false,
            outputs,
            run_folder: None,
            path_window: None,
            save_due: false,
            clipboard: None,
            branch: None,
            recording: false,
            target_rect: None,
            models_window: ModelsWindow::default(),
            brush: MaskBrush::default(),
            history: super::undo::History::default(),
            interrupted: None,
            autosave: None,
            drafts: Vec::new(),
            draft_pick: 0,
            last_run: None,
            pending: Vec::new(),
            open_models: false,
            draft_check: None,
            anim_frames: Vec::new(),
            anim_preview: false,
            anim_total: 0,
            animating: false,
            anim_selected: None,
            anim_steps: 0,
            anim_editor: crate::ui::panels::animation::AnimationEditor::default(),
            queue: crate::settings::queue::Queue::default(),
            queue_offer: false,
            queue_saver: None,
            job_live: false,
            last_error: None,
            gallery: crate::ui::panels::gallery::Gallery::default(),
            thumbs: crate::ui::panels::gallery::Thumbs::default(),
            grid_dialog: crate::ui::panels::grid::GridDialog::default(),
            disk_run: None,
            library_chosen,
        };
        app.check_models();
        if let Some(path) = app.state.settings.init_image.clone() {
            app.decode_init(path);
        }
        app.restore_newest_run();
        app.load_queue();
        app
    }

    /// Notes which model files are missing, for the banner.
    pub fn check_models(&mut self) {
        // Draft's one-step model is looked for again too.
        self.draft_check = None;
        let mut missing = Vec::new();
        self.demo_models = false;
        if self.state.settings.names_no_models() {
            if crate::worker::demo_models_available() {
                self.demo_models = true;
            } else {
                missing.push("the built-in shapes world (models/shapes-world), or a VQGAN and a CLIP".to_owned());
            }
            self.missing_models = missing;
            return;
        }
        match &self.state.settings.vqgan {
            Some(p) if p.is_file() => {
                let yaml = self.state.settings.vqgan_config.clone().unwrap_or_else(|| p.with_extension("yaml"));
                if !yaml.is_file() {
                    missing.push(format!("VQGAN config {}", yaml.display()));
                }
            }
            Some(p) => missing.push(format!("VQGAN checkpoint {}", p.display())),
            None => missing.push("a VQGAN checkpoint (Settings > VQGAN)".to_owned()),
        }
        match &self.state.settings.clip {
            Some(p) if p.join("config.json").is_file() => {}
            Some(p) => {
                missing.push(format!("CLIP folder {} (config.json, model.safetensors, tokenizer.json)", p.display()))
            }
            None => missing.push("a CLIP folder (Settings > CLIP)".to_owned()),
        }
        self.missing_models = missing;
    }

    pub(super) fn say(&mut self, text: impl Into<String>, error: bool) {
        let text = text.into();
        self.push_log(if error { format!("error: {text}") } else { text.clone() });
        self.banner = Some(Banner { text, error });
    }

    pub(super) fn push_log(&mut self, line: String) {
        self.log.push_back(line);
        while self.log.len() > MAX_LOG {
            self.log.pop_front();
        }
    }

    pub(super) fn running(&self) -> bool {
        matches!(self.run_state, RunState::Running | RunState::Paused | RunState::Loading)
    }

    pub(super) fn record_frame_time(&mut self, ms: f64) {
        self.frame_ms.push_back(ms);
        while self.frame_ms.len() > 600 {
            self.frame_ms.pop_front();
        }
    }
}
