//! The studio app: state, the per-frame logic (events from the worker, dropped files,
//! background results, shortcuts) and the layout.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use egui::{Color32, Key, KeyboardShortcut, Modifiers, RichText};

use super::canvas::Canvas;
use super::link::EngineLink;
use super::panels::images::{self, ImageAction};
use super::panels::models::{ModelsAction, ModelsWindow};
use super::panels::timeline::{self, KeptFrame, TimelineAction};
use super::panels::{prompts, settings};
use super::state::StudioState;
use crate::engine::observer::{Frame, StepStats};
use crate::manager::ModelPaths;
use crate::settings::png::{ModelFiles, PngMeta};
use crate::settings::RunSettings;
use crate::worker::{Command, DraftFrame, Event, FrameEvent, RunState};

const STORAGE_KEY: &str = "clipcanvas-studio";
/// How long one UI frame may spend draining worker events.
const EVENT_BUDGET: Duration = Duration::from_millis(8);
const MAX_KEPT: usize = 500;
const MAX_LOG: usize = 500;

/// Results of work done off the UI thread (dialogs, decoding, exports).
#[derive(Debug)]
enum Background {
    InitChosen(PathBuf),
    InitDecoded(Box<(PathBuf, Result<Frame, String>)>),
    TargetsChosen(Vec<PathBuf>),
    SettingsLoaded(Box<Result<RunSettings, String>>),
    Done(Result<String, String>),
}

/// A message shown in the banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    pub text: String,
    pub error: bool,
}

/// The studio.
pub struct StudioApp {
    pub state: StudioState,
    link: Box<dyn EngineLink>,
    pub canvas: Canvas,
    pub run_state: RunState,
    stats: Option<StepStats>,
    /// Loss per prompt label over the iterations.
    pub loss_history: BTreeMap<String, Vec<[f64; 2]>>,
    kept: Vec<KeptFrame>,
    /// The kept frame on the canvas; `None` shows the live frame.
    selected: Option<usize>,
    live: Option<Arc<FrameEvent>>,
    pub log: VecDeque<String>,
    pub banner: Option<Banner>,
    init_thumb: Option<egui::TextureHandle>,
    bg_tx: Sender<Background>,
    bg_rx: Receiver<Background>,
    pub missing_models: Vec<String>,
    /// No models are set and the built-in shapes world will be used.
    pub demo_models: bool,
    sent_prompts: Vec<String>,
    sent_targets: Vec<String>,
    /// CPU time of recent UI frames (layout, tessellation, paint submission), milliseconds.
    pub frame_ms: VecDeque<f64>,
    /// Wall time between UI frames while frames stream in, in milliseconds.
    frame_interval_ms: VecDeque<f64>,
    last_logic: Option<Instant>,
    /// `CLIPCANVAS_UI_STATS`: a file the UI timing figures are written to every 5 s.
    stats_file: Option<(std::path::PathBuf, Instant)>,
    show_log: bool,
    /// Where the target-image panel was drawn: files dropped there become targets.
    pub target_rect: Option<egui::Rect>,
    /// The model-manager window.
    pub models_window: ModelsWindow,
    /// The last draft's ranked candidates and their thumbnails.
    pub drafts: Vec<(DraftFrame, egui::TextureHandle)>,
    /// The candidate on the canvas (its rank).
    pub draft_pick: usize,
    /// The settings of the last run sent to the engine: an exported image records them.
    last_run: Option<RunSettings>,
}

impl StudioApp {
    /// Builds the studio on an engine link (the worker, or a fake in tests).
    pub fn new(cc: &eframe::CreationContext<'_>, link: Box<dyn EngineLink>) -> Self {
        let state: StudioState = cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)).unwrap_or_default();
        let (bg_tx, bg_rx) = crossbeam_channel::bounded(64);
        let mut app = Self {
            state,
            link,
            canvas: Canvas::new(cc.wgpu_render_state.as_ref()),
            run_state: RunState::Idle,
            stats: None,
            loss_history: BTreeMap::new(),
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
            sent_targets: Vec::new(),
            frame_ms: VecDeque::new(),
            frame_interval_ms: VecDeque::new(),
            last_logic: None,
            stats_file: std::env::var_os("CLIPCANVAS_UI_STATS").map(|p| (p.into(), Instant::now())),
            show_log: false,
            target_rect: None,
            models_window: ModelsWindow::default(),
            drafts: Vec::new(),
            draft_pick: 0,
            last_run: None,
        };
        app.check_models();
        if let Some(path) = app.state.settings.init_image.clone() {
            app.decode_init(path);
        }
        app
    }

    /// Notes which model files are missing, for the banner.
    pub fn check_models(&mut self) {
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

    fn say(&mut self, text: impl Into<String>, error: bool) {
        let text = text.into();
        self.push_log(if error { format!("error: {text}") } else { text.clone() });
        self.banner = Some(Banner { text, error });
    }

    fn push_log(&mut self, line: String) {
        self.log.push_back(line);
        while self.log.len() > MAX_LOG {
            self.log.pop_front();
        }
    }

    fn running(&self) -> bool {
        matches!(self.run_state, RunState::Running | RunState::Paused | RunState::Loading)
    }

    /// Start: the current settings as a new run.
    pub fn start(&mut self) {
        match self.state.run_settings() {
            Ok(settings) => {
                self.sent_prompts.clone_from(&settings.prompts);
                self.sent_targets.clone_from(&settings.image_prompts);
                self.loss_history.clear();
                self.kept.clear();
                self.drafts.clear();
                self.selected = None;
                self.banner = None;
                self.last_run = Some(settings.clone());
                if !self.link.send(Command::Start(Box::new(settings))) {
                    self.say("the engine is not answering; restart the studio", true);
                }
            }
            Err(e) => self.say(e, true),
        }
    }

    /// Draft: a one-step draft of the prompts, ranked candidates to pick from.
    pub fn draft(&mut self) {
        if let Some(why) = self.draft_unavailable() {
            self.say(why, true);
            return;
        }
        match self.state.draft_settings() {
            Ok(settings) => {
                self.sent_prompts.clone_from(&settings.prompts);
                self.sent_targets.clone_from(&settings.image_prompts);
                self.loss_history.clear();
                self.kept.clear();
                self.drafts.clear();
                self.draft_pick = 0;
                self.selected = None;
                self.banner = None;
                self.last_run = Some(settings.clone());
                if !self.link.send(Command::Start(Box::new(settings))) {
                    self.say("the engine is not answering; restart the studio", true);
                }
            }
            Err(e) => self.say(e, true),
        }
    }

    /// Why Draft cannot run with the current models, if it cannot.
    pub fn draft_unavailable(&self) -> Option<String> {
        crate::worker::draft_unavailable(&self.state.settings, &self.state.draft)
    }

    /// Refine: continues the picked draft with the run's iterations.
    pub fn refine(&mut self) {
        let iterations = self.state.settings.iterations.max(1);
        self.send(Command::Refine(iterations));
    }

    /// Shows another ranked candidate and starts from it.
    fn pick_draft(&mut self, rank: usize) {
        self.draft_pick = rank;
        if let Some(one) = self.last_run.as_mut().and_then(|s| s.one_step.as_mut()) {
            one.pick = rank;
        }
        self.kept.clear();
        self.selected = None;
        self.send(Command::PickDraft(rank));
    }

    fn send(&mut self, cmd: Command) {
        if !self.link.send(cmd) {
            self.say("the engine is busy or gone; try again", true);
        }
    }

    fn toggle_run(&mut self) {
        if self.running() {
            self.send(Command::Stop);
        } else {
            self.start();
        }
    }

    fn toggle_pause(&mut self) {
        match self.run_state {
            RunState::Running => self.send(Command::Pause),
            RunState::Paused => self.send(Command::Resume),
            _ => {}
        }
    }

    /// Live steering: sends what changed since the last send.
    fn steer(&mut self) {
        if !self.running() {
            return;
        }
        let prompts = self.state.prompt_specs();
        if prompts != self.sent_prompts {
            self.sent_prompts.clone_from(&prompts);
            self.send(Command::SetPrompts(prompts));
        }
        let targets = self.state.target_specs();
        if targets != self.sent_targets {
            self.sent_targets.clone_from(&targets);
            self.send(Command::SetImagePrompts(targets));
        }
    }

    fn handle_event(&mut self, ctx: &egui::Context, event: Event) {
        match event {
            Event::State(s) => {
                self.run_state = s;
                self.push_log(format!("{s:?}"));
            }
            Event::Step(stats) => {
                #[expect(clippy::cast_precision_loss, reason = "plot axis")]
                let x = stats.iteration as f64;
                for (label, loss) in &stats.losses {
                    self.loss_history.entry(label.clone()).or_default().push([x, *loss]);
                }
                self.stats = Some(stats);
            }
            Event::Frame(frame) => self.accept_frame(ctx, frame),
            Event::Notice(m) => self.say(m, false),
            Event::Error(m) => self.say(m, true),
            Event::Steered { iteration, change } => self.push_log(format!("iteration {iteration}: {change}")),
            Event::Drafts(frames) => {
                self.push_log(format!("{} draft candidates", frames.len()));
                self.drafts =
                    frames.iter().enumerate().map(|(rank, d)| (d.clone(), thumbnail(ctx, &d.frame, rank))).collect();
                self.draft_pick = 0;
            }
        }
    }

    fn accept_frame(&mut self, ctx: &egui::Context, frame: Arc<FrameEvent>) {
        let every = self.state.settings.save_every.max(1);
        let last = self.kept.last().map(|k| k.frame.iteration);
        // Keep the frames whose latents the worker keeps: every save_every iterations,
        // and the final frame of a run that stopped or finished.
        let keep = frame.iteration.is_multiple_of(every) || self.run_state != RunState::Running;
        if keep && last != Some(frame.iteration) {
            let thumb = thumbnail(ctx, &frame.frame, frame.iteration);
            self.kept.push(KeptFrame { frame: Arc::clone(&frame), thumb });
            if self.kept.len() > MAX_KEPT {
                self.kept.remove(0);
                self.selected = self.selected.and_then(|s| s.checked_sub(1));
            }
        }
        if self.selected.is_none() {
            self.canvas.set_frame(Arc::clone(&frame));
        }
        self.live = Some(frame);
    }

    fn decode_init(&mut self, path: PathBuf) {
        let tx = self.bg_tx.clone();
        spawn_named("clipcanvas-decode", move || {
            let result =
                crate::engine::image::load_rgb(&path).map(|rgb| Frame::from_rgb(&rgb)).map_err(|e| e.to_string());
            let _ = tx.send(Background::InitDecoded(Box::new((path, result))));
        });
    }

    fn set_init(&mut self, path: PathBuf) {
        self.state.settings.init_image = Some(path.clone());
        self.decode_init(path);
    }

    /// A file dropped on the window: a clipcanvas PNG restores its settings, any other
    /// image becomes the init image.
    pub fn accept_dropped(&mut self, path: &Path) {
        let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png {
            if let Ok(Some(meta)) = crate::export::read_png_metadata(path) {
                if let Ok(s) = crate::settings::png::settings_from_text(&meta) {
                    self.state.restore(&s);
                    self.check_models();
                    self.say(format!("settings restored from {}", path.display()), false);
                    return;
                }
            }
        }
        self.set_init(path.to_path_buf());
        self.push_log(format!("init image: {}", path.display()));
    }

    fn handle_background(&mut self, ctx: &egui::Context, msg: Background) {
        match msg {
            Background::InitChosen(path) => self.set_init(path),
            Background::InitDecoded(decoded) => {
                let (path, result) = *decoded;
                let current = self.state.settings.init_image.as_deref() == Some(path.as_path());
                match result {
                    Ok(frame) if current => {
                        self.init_thumb = Some(thumbnail(ctx, &frame, 0));
                        self.canvas.set_init(Some(Arc::new(frame)));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if current {
                            self.state.settings.init_image = None;
                            self.init_thumb = None;
                            self.canvas.set_init(None);
                        }
                        self.say(e, true);
                    }
                }
            }
            Background::TargetsChosen(paths) => images::add_targets(&mut self.state, paths),
            Background::SettingsLoaded(result) => match *result {
                Ok(s) => {
                    self.state.restore(&s);
                    self.check_models();
                    self.say("settings loaded", false);
                }
                Err(e) => self.say(e, true),
            },
            Background::Done(Err(e)) => self.say(e, true),
            Background::Done(Ok(m)) => self.say(m, false),
        }
    }

    fn handle_image_actions(&mut self, actions: Vec<ImageAction>) {
        for a in actions {
            match a {
                ImageAction::OpenInit => {
                    let tx = self.bg_tx.clone();
                    dialog(move || {
                        let file = pollster::block_on(image_dialog().pick_file());
                        if let Some(f) = file {
                            let _ = tx.send(Background::InitChosen(f.path().to_path_buf()));
                        }
                    });
                }
                ImageAction::ClearInit => {
                    self.state.settings.init_image = None;
                    self.init_thumb = None;
                    self.canvas.set_init(None);
                }
                ImageAction::AddTargets => {
                    let tx = self.bg_tx.clone();
                    dialog(move || {
                        if let Some(files) = pollster::block_on(image_dialog().pick_files()) {
                            let _ = tx.send(Background::TargetsChosen(
                                files.iter().map(|f| f.path().to_path_buf()).collect(),
                            ));
                        }
                    });
                }
                ImageAction::TargetsChanged | ImageAction::InitWeightChanged => {}
            }
        }
    }

    fn export_image(&mut self) {
        let Some(frame) = self.canvas.frame().cloned() else {
            self.say("nothing to export yet", true);
            return;
        };
        let mut settings = match &self.last_run {
            Some(s) => s.clone(),
            None => self.state.run_settings().unwrap_or_else(|_| self.state.settings.clone()),
        };
        if settings.one_step.is_some() {
            // A draft, or a draft refined: the settings that make this very frame.
            settings.iterations = frame.iteration;
        }
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = pollster::block_on(
                rfd::AsyncFileDialog::new().add_filter("PNG", &["png"]).set_file_name("clipcanvas.png").save_file(),
            ) else {
                return;
            };
            let path = file.path().to_path_buf();
            // The model files' names and hashes, as `generate` records them; without
            // them (a model file gone since the run) the image is still saved.
            let (models, note) = match crate::worker::model_files(&settings) {
                Ok(m) => (m, String::new()),
                Err(e) => (ModelFiles::default(), format!(" (without model hashes: {e})")),
            };
            let meta = PngMeta::new(&settings, frame.iteration, models).to_json();
            let result = crate::export::write_png(&path, &frame.frame.to_rgb(), Some(&meta))
                .map(|()| format!("saved {}{note}", path.display()))
                .map_err(|e| e.to_string());
            let _ = tx.send(Background::Done(result));
        });
    }

    fn export_frames(&mut self, gif: bool) {
        if self.kept.is_empty() {
            self.say("no kept frames yet", true);
            return;
        }
        let frames: Vec<Arc<FrameEvent>> = self.kept.iter().map(|k| Arc::clone(&k.frame)).collect();
        let tx = self.bg_tx.clone();
        dialog(move || {
            let result = if gif {
                let Some(file) = pollster::block_on(
                    rfd::AsyncFileDialog::new().add_filter("GIF", &["gif"]).set_file_name("clipcanvas.gif").save_file(),
                ) else {
                    return;
                };
                let images: Vec<image::RgbImage> = frames.iter().map(|f| f.frame.to_rgb()).collect();
                crate::export::write_gif(file.path(), &images, 100)
                    .map(|()| format!("saved {}", file.path().display()))
                    .map_err(|e| e.to_string())
            } else {
                let Some(dir) = pollster::block_on(rfd::AsyncFileDialog::new().pick_folder()) else { return };
                crate::export::FrameSequence::create(dir.path())
                    .and_then(|mut seq| {
                        for f in &frames {
                            seq.push(f.iteration, &f.frame.to_rgb(), None)?;
                        }
                        Ok(seq.paths().len())
                    })
                    .map(|n| format!("saved {n} frames to {}", dir.path().display()))
                    .map_err(|e| e.to_string())
            };
            let _ = tx.send(Background::Done(result));
        });
    }

    fn save_settings(&mut self) {
        let settings = self.state.run_settings().unwrap_or_else(|_| self.state.settings.clone());
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = pollster::block_on(
                rfd::AsyncFileDialog::new().add_filter("JSON", &["json"]).set_file_name("settings.json").save_file(),
            ) else {
                return;
            };
            let json = settings.to_json();
            let result = crate::export::write_atomic(file.path(), |w| std::io::Write::write_all(w, json.as_bytes()))
                .map(|()| format!("saved {}", file.path().display()))
                .map_err(|e| e.to_string());
            let _ = tx.send(Background::Done(result));
        });
    }

    fn load_settings(&mut self) {
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = pollster::block_on(
                rfd::AsyncFileDialog::new().add_filter("settings or clipcanvas PNG", &["json", "png"]).pick_file(),
            ) else {
                return;
            };
            let result = crate::export::read_settings_file(file.path()).map_err(|e| e.to_string());
            let _ = tx.send(Background::SettingsLoaded(Box::new(result)));
        });
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let start = KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter);
        if ctx.input_mut(|i| i.consume_shortcut(&start)) {
            self.toggle_run();
        }
        let draft = KeyboardShortcut::new(Modifiers::COMMAND, Key::D);
        if ctx.input_mut(|i| i.consume_shortcut(&draft)) && !self.running() {
            self.draft();
        }
        let typing = ctx.memory(|m| m.focused().is_some());
        if !typing && ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Space)) {
            self.toggle_pause();
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let running = self.running();
            let label = if running { "Stop" } else { "Start" };
            if ui.button(label).on_hover_text("Ctrl+Enter").clicked() {
                self.toggle_run();
            }
            let unavailable = self.draft_unavailable();
            let draft = ui.add_enabled(!running && unavailable.is_none(), egui::Button::new("Draft")).on_hover_text(
                "A one-step draft of the prompts in about a second, with candidates to pick from (Ctrl+D)",
            );
            let draft = match &unavailable {
                Some(why) => draft.on_disabled_hover_text(why.as_str()),
                None => draft,
            };
            if draft.clicked() {
                self.draft();
            }
            if !self.drafts.is_empty()
                && ui
                    .add_enabled(!running, egui::Button::new("Refine"))
                    .on_hover_text("Continue the picked draft with VQGAN+CLIP for the run's iterations")
                    .clicked()
            {
                self.refine();
            }
            let pause = match self.run_state {
                RunState::Running => Some(("Pause", Command::Pause)),
                RunState::Paused | RunState::Stopped => Some(("Resume", Command::Resume)),
                _ => None,
            };
            if let Some((label, cmd)) = pause {
                if ui.button(label).on_hover_text("Space").clicked() {
                    self.send(cmd);
                }
            }
            if ui.button("Reset").clicked() {
                self.send(Command::Reset);
                self.loss_history.clear();
                self.kept.clear();
                self.drafts.clear();
                self.selected = None;
            }
            ui.separator();
            if ui.button("Models...").on_hover_text("Find, download and check the models").clicked() {
                self.models_window.open(ui.ctx());
            }
            ui.menu_button("Export", |ui| {
                if ui.button("Current image (PNG)...").clicked() {
                    self.export_image();
                }
                if ui.button("Kept frames (PNG sequence)...").clicked() {
                    self.export_frames(false);
                }
                if ui.button("Kept frames (GIF)...").clicked() {
                    self.export_frames(true);
                }
                ui.separator();
                if ui.button("Save settings...").clicked() {
                    self.save_settings();
                }
                if ui.button("Load settings...").clicked() {
                    self.load_settings();
                }
            });
            ui.separator();
            ui.label(format!("{:?}", self.run_state));
            if let Some(s) = &self.stats {
                ui.label(format!(
                    "iteration {}/{} - loss {:.4} - {:.2} it/s",
                    s.iteration + 1,
                    s.iterations,
                    s.total_loss,
                    s.its_per_sec
                ));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.toggle_value(&mut self.show_log, "Log");
                let uploads: VecDeque<f64> = self.canvas.upload_latencies_ms().into();
                if let Some(p95) = percentile(&uploads, 0.95) {
                    ui.label(RichText::new(format!("frame to GPU {p95:.1} ms p95")).small().weak())
                        .on_hover_text("From a frame's arrival from the engine to its upload into the canvas texture");
                }
                if let Some(p95) = percentile(&self.frame_ms, 0.95) {
                    ui.label(RichText::new(format!("UI {p95:.1} ms p95")).small().weak())
                        .on_hover_text("CPU time of a UI frame (layout, tessellation, paint), last 600 frames");
                }
            });
        });
    }

    fn banners(&mut self, ui: &mut egui::Ui) {
        if self.demo_models {
            egui::Frame::new().fill(Color32::from_rgb(35, 55, 45)).inner_margin(6.0).show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.label(RichText::new("Shapes world").strong());
                    ui.label(
                        "- the built-in demo models know coloured shapes on plain backgrounds. Try \
                         \"a big red circle on a blue background\", press Draft, then Refine. \
                         For art, install real models (Models...).",
                    );
                });
            });
        }
        if !self.missing_models.is_empty() {
            egui::Frame::new().fill(Color32::from_rgb(70, 55, 20)).inner_margin(6.0).show(ui, |ui| {
                ui.label(RichText::new("Models missing").strong());
                for m in &self.missing_models {
                    ui.label(format!("- {m}"));
                }
                ui.label("Download them with the model manager, or set their paths in Settings.");
                ui.horizontal(|ui| {
                    if ui.small_button("Open model manager").clicked() {
                        self.models_window.open(ui.ctx());
                    }
                    if ui.small_button("Check again").clicked() {
                        self.check_models();
                    }
                });
            });
        }
        let mut close = false;
        if let Some(b) = &self.banner {
            let fill = if b.error { Color32::from_rgb(90, 30, 30) } else { Color32::from_rgb(30, 50, 70) };
            egui::Frame::new().fill(fill).inner_margin(6.0).show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(&b.text);
                    if ui.small_button("x").clicked() {
                        close = true;
                    }
                });
            });
        }
        if close {
            self.banner = None;
        }
    }

    /// Writes the timing figures to the `CLIPCANVAS_UI_STATS` file (the measurement
    /// behind README's frame-time figures). Failing to write is not worth a banner.
    fn write_stats(&mut self) {
        let Some((path, last)) = &mut self.stats_file else { return };
        if last.elapsed().as_secs_f64() < 5.0 {
            return;
        }
        *last = Instant::now();
        let uploads: VecDeque<f64> = self.canvas.upload_latencies_ms().into();
        let q = |v: &VecDeque<f64>, p: f64| percentile(v, p).unwrap_or(f64::NAN);
        let size = self.canvas.frame().map(|f| (f.frame.width, f.frame.height));
        let text = format!(
            "{{\"ui_cpu_ms\": {{\"n\": {}, \"p50\": {:.2}, \"p95\": {:.2}, \"max\": {:.2}}}, \
             \"ui_interval_ms\": {{\"n\": {}, \"p50\": {:.2}, \"p95\": {:.2}, \"max\": {:.2}}}, \
             \"upload_latency_ms\": {{\"n\": {}, \"p50\": {:.2}, \"p95\": {:.2}, \"max\": {:.2}}}, \
             \"frames_shown\": {}, \"frame_size\": {:?}}}\n",
            self.frame_ms.len(),
            q(&self.frame_ms, 0.5),
            q(&self.frame_ms, 0.95),
            q(&self.frame_ms, 1.0),
            self.frame_interval_ms.len(),
            q(&self.frame_interval_ms, 0.5),
            q(&self.frame_interval_ms, 0.95),
            q(&self.frame_interval_ms, 1.0),
            uploads.len(),
            q(&uploads, 0.5),
            q(&uploads, 0.95),
            q(&uploads, 1.0),
            self.canvas.version(),
            size.map(|(w, h)| [w, h]),
        );
        let _ = std::fs::write(path, text);
    }

    fn handle_models_actions(&mut self, actions: Vec<ModelsAction>) {
        for action in actions {
            match action {
                ModelsAction::Use { name, paths } => {
                    self.use_model(paths);
                    self.say(format!("the next run uses {name}"), false);
                }
                ModelsAction::Installed { name, paths } => {
                    self.push_log(format!("model {name} installed"));
                    // Where the settings point at a model that is not there, use this one.
                    let settings = &self.state.settings;
                    let wanted = match &paths {
                        Some(ModelPaths::Clip(_)) => {
                            !settings.clip.as_ref().is_some_and(|c| c.join("config.json").is_file())
                        }
                        Some(ModelPaths::Vqgan { .. }) => !settings.vqgan.as_ref().is_some_and(|v| v.is_file()),
                        None => false,
                    };
                    match paths {
                        Some(paths) if wanted => {
                            self.use_model(paths);
                            self.say(format!("{name} installed; the next run uses it"), false);
                        }
                        _ => {
                            self.check_models();
                            self.say(format!("{name} installed"), false);
                        }
                    }
                }
            }
        }
    }

    /// Points the run's settings at an installed model.
    fn use_model(&mut self, paths: ModelPaths) {
        match paths {
            ModelPaths::Clip(dir) => self.state.settings.clip = Some(dir),
            ModelPaths::Vqgan { config, checkpoint } => {
                self.state.settings.vqgan = Some(checkpoint);
                self.state.settings.vqgan_config = Some(config);
            }
        }
        self.check_models();
    }

    fn record_frame_time(&mut self, ms: f64) {
        self.frame_ms.push_back(ms);
        while self.frame_ms.len() > 600 {
            self.frame_ms.pop_front();
        }
    }

    /// The ranked draft candidates as thumbnails; returns the one clicked.
    fn draft_strip(&self, ui: &mut egui::Ui) -> Option<usize> {
        if self.drafts.is_empty() {
            return None;
        }
        let mut clicked = None;
        ui.horizontal(|ui| {
            ui.label("Drafts");
            for (rank, (d, tex)) in self.drafts.iter().enumerate() {
                let picked = rank == self.draft_pick;
                let image = egui::Image::new((tex.id(), egui::vec2(56.0, 56.0)));
                let button = egui::Button::image_and_text(image, format!("#{}", rank + 1)).selected(picked);
                let r = ui.add(button).on_hover_text(format!("candidate {} - CLIP score {:.3}", rank + 1, d.score));
                if r.clicked() && !picked {
                    clicked = Some(rank);
                }
            }
        });
        clicked
    }

    fn plot(&self, ui: &mut egui::Ui) {
        egui_plot::Plot::new("losses")
            .legend(egui_plot::Legend::default())
            .height(ui.available_height().max(80.0))
            .x_axis_label("iteration")
            .y_axis_label("loss")
            .show(ui, |plot| {
                for (label, points) in &self.loss_history {
                    plot.line(egui_plot::Line::new(label.clone(), egui_plot::PlotPoints::from(points.clone())));
                }
            });
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        // eframe's measure of the previous frame: app code, tessellation and paint.
        if let Some(cpu) = frame.info().cpu_usage {
            self.record_frame_time(f64::from(cpu) * 1000.0);
        }
        let now = Instant::now();
        if let Some(prev) = self.last_logic.replace(now) {
            self.frame_interval_ms.push_back(now.duration_since(prev).as_secs_f64() * 1000.0);
            while self.frame_interval_ms.len() > 600 {
                self.frame_interval_ms.pop_front();
            }
        }
        self.write_stats();
        let started = Instant::now();
        while started.elapsed() < EVENT_BUDGET {
            let Some(event) = self.link.try_event() else { break };
            self.handle_event(ctx, event);
        }
        if let Some(frame) = self.link.take_frame() {
            self.accept_frame(ctx, frame);
        }
        while let Ok(msg) = self.bg_rx.try_recv() {
            self.handle_background(ctx, msg);
        }
        let (dropped, pointer): (Vec<PathBuf>, Option<egui::Pos2>) = ctx.input(|i| {
            let paths = i
                .raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            (paths, i.pointer.latest_pos())
        });
        let on_targets = matches!((pointer, self.target_rect), (Some(p), Some(r)) if r.contains(p));
        if on_targets && !dropped.is_empty() {
            self.push_log(format!("{} target image(s) added", dropped.len()));
            images::add_targets(&mut self.state, dropped);
        } else {
            for path in dropped {
                self.accept_dropped(&path);
            }
        }
        let model_actions = self.models_window.logic();
        self.handle_models_actions(model_actions);
        self.shortcuts(ctx);
        if self.running() {
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let started = Instant::now();
        egui::Panel::top("top").show(ui, |ui| {
            self.top_bar(ui);
            self.banners(ui);
        });
        let mut image_actions = Vec::new();
        let mut prompts_changed = false;
        let mut lr_changed = false;
        egui::Panel::left("side").resizable(true).default_size(360.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                egui::CollapsingHeader::new("Prompts").default_open(true).show(ui, |ui| {
                    prompts_changed = prompts::show(ui, &mut self.state);
                });
                egui::CollapsingHeader::new("Init image").default_open(true).show(ui, |ui| {
                    images::init_panel(ui, &mut self.state, self.init_thumb.as_ref(), &mut image_actions);
                });
                let targets = egui::CollapsingHeader::new("Target images").default_open(true).show(ui, |ui| {
                    images::target_panel(ui, &mut self.state, &mut image_actions);
                });
                let header = targets.header_response.rect;
                self.target_rect = Some(targets.body_response.map_or(header, |body| header.union(body.rect)));
                egui::CollapsingHeader::new("Settings").default_open(false).show(ui, |ui| {
                    lr_changed = settings::show(ui, &mut self.state.settings, &mut self.state.draft);
                });
            });
        });
        egui::Panel::bottom("bottom").resizable(true).default_size(190.0).show(ui, |ui| {
            if let Some(action) = timeline::show(ui, &self.kept, self.selected) {
                match action {
                    TimelineAction::Show(i) => {
                        self.selected = Some(i);
                        if let Some(k) = self.kept.get(i) {
                            self.canvas.set_frame(Arc::clone(&k.frame));
                        }
                    }
                    TimelineAction::Live => {
                        self.selected = None;
                        if let Some(live) = self.live.clone() {
                            self.canvas.set_frame(live);
                        }
                    }
                    TimelineAction::BranchFrom(iteration) => {
                        self.selected = None;
                        self.send(Command::BranchFrom { iteration });
                    }
                }
            }
            ui.separator();
            if self.show_log {
                egui::ScrollArea::vertical().stick_to_bottom(true).show(ui, |ui| {
                    for line in &self.log {
                        ui.label(RichText::new(line).monospace().small());
                    }
                });
            } else {
                self.plot(ui);
            }
        });
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                if ui.small_button("Fit").clicked() {
                    self.canvas.fit();
                }
                ui.label(self.canvas.zoom_label());
                if self.canvas.has_init() {
                    let mut split = self.canvas.split.is_some();
                    if ui.checkbox(&mut split, "Before/after (shift-drag)").changed() {
                        self.canvas.split = split.then_some(0.5);
                    }
                }
                if let Some(i) = self.canvas.shown_iteration() {
                    ui.label(format!("iteration {i}"));
                }
            });
            if let Some(rank) = self.draft_strip(ui) {
                self.pick_draft(rank);
            }
            self.canvas.ui(ui);
        });
        self.handle_image_actions(image_actions);
        let model_actions = self.models_window.show(ui.ctx());
        self.handle_models_actions(model_actions);
        if prompts_changed {
            self.steer();
        }
        if lr_changed && self.running() {
            let lr = self.state.settings.lr;
            self.send(Command::SetLr(lr));
        }
        if !prompts_changed {
            self.steer();
        }
        if frame.info().cpu_usage.is_none() {
            // No measure from eframe (tests): time the layout pass itself.
            self.record_frame_time(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.state);
    }
}

fn image_dialog() -> rfd::AsyncFileDialog {
    rfd::AsyncFileDialog::new().add_filter("images", &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"])
}

/// Runs blocking work (a dialog, an export) on its own named thread.
fn dialog(f: impl FnOnce() + Send + 'static) {
    spawn_named("clipcanvas-dialog", f);
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    // If a thread cannot be started the action is skipped; there is nothing to undo.
    let _ = std::thread::Builder::new().name(name.to_owned()).spawn(f);
}

/// A small texture of a frame for thumbnails.
fn thumbnail(ctx: &egui::Context, frame: &Frame, iteration: usize) -> egui::TextureHandle {
    let rgba = image::RgbaImage::from_raw(frame.width, frame.height, frame.rgba.clone())
        .unwrap_or_else(|| image::RgbaImage::new(1, 1));
    let small = image::imageops::thumbnail(&rgba, 96.min(frame.width.max(1)), 96.min(frame.height.max(1)));
    let image =
        egui::ColorImage::from_rgba_unmultiplied([small.width() as usize, small.height() as usize], small.as_raw());
    ctx.load_texture(format!("thumb-{iteration}"), image, egui::TextureOptions::LINEAR)
}

/// The `q` quantile of the values, if any.
pub fn percentile(values: &VecDeque<f64>, q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index"
    )]
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(i).copied()
}
