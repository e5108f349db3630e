//! Where every [`UiCommand`] is carried out ([`StudioApp::execute`]), at the start of
//! the frame after the one it was asked for in, and the keyboard shortcuts that ask.

use std::path::PathBuf;
use std::sync::Arc;

use egui::{Key, KeyboardShortcut, Modifiers};

use super::studio::StudioApp;
use super::support::{answer, dialog, image_dialog, Background};
use super::ui_command::UiCommand;
use crate::worker::downloads::ModelPaths;
use crate::worker::files::{AUTOSAVE, AUTOSAVE_EVERY};
use crate::worker::{Command, Recording, RunState};

impl StudioApp {
    /// Queues a command for the next frame's logic.
    pub(super) fn ask(&mut self, cmd: UiCommand) {
        self.pending.push(cmd);
    }

    /// Carries out a command.
    pub fn execute(&mut self, cmd: UiCommand) {
        match cmd {
            UiCommand::ToggleRun => self.toggle_run(),
            UiCommand::TogglePause => self.toggle_pause(),
            UiCommand::Pause => self.send(Command::Pause),
            UiCommand::Resume => self.send(Command::Resume),
            UiCommand::AskReset => self.confirm_reset = true,
            UiCommand::Reset => {
                self.confirm_reset = false;
                self.send(Command::Reset);
                self.plot.clear();
                self.kept.clear();
                self.drafts.clear();
                self.anim_frames.clear();
                self.anim_selected = None;
                self.animating = false;
                self.selected = None;
                self.live = None;
                self.stats = None;
                self.stopping = false;
                self.banner = None;
                self.canvas.clear();
            }
            UiCommand::Draft => {
                if !self.running() {
                    self.draft();
                }
            }
            UiCommand::Refine => self.refine(),
            UiCommand::PickDraft(rank) => self.pick_draft(rank),
            UiCommand::ShowKept(i) => {
                self.selected = Some(i);
                if let Some(k) = self.kept.get(i) {
                    self.canvas.set_frame(Arc::clone(&k.frame));
                }
            }
            UiCommand::ShowLive => {
                self.selected = None;
                self.anim_selected = None;
                if let Some(live) = self.live.clone() {
                    self.canvas.set_frame(live);
                }
            }
            UiCommand::BranchFrom(iteration) => {
                if let Some(dir) = self.disk_run.clone() {
                    return self.branch_from_disk(&dir, iteration);
                }
                self.selected = None;
                self.branch = Some((iteration, None));
                self.send(Command::BranchFrom { iteration });
            }
            UiCommand::LrChanged => {
                if self.running() {
                    let lr = self.state.settings.lr;
                    self.send(Command::SetLr(lr));
                }
            }
            UiCommand::OpenModels => self.open_models = true,
            UiCommand::ResumeInterrupted => self.resume_interrupted(),
            UiCommand::DiscardInterrupted => {
                if let Some(run) = self.interrupted.take() {
                    if let Err(e) = std::fs::remove_file(run.folder.join(AUTOSAVE)) {
                        self.say(format!("the autosave could not be deleted: {e}"), true);
                    }
                }
            }
            UiCommand::Undo => {
                let restored = self.history.undo(&self.state);
                self.restore_edit(restored, "nothing to undo");
            }
            UiCommand::Redo => {
                let restored = self.history.redo();
                self.restore_edit(restored, "nothing to redo");
            }
            UiCommand::UseModel { name, paths } => {
                self.use_model(paths);
                self.say(format!("the next run uses {name}"), false);
            }
            UiCommand::AlsoScore { name, clip } => {
                let s = &mut self.state.settings;
                if s.clip.is_none() {
                    self.say("choose the run's CLIP first (Use); the shapes world scores with its own one", true);
                } else if s.clip.as_ref() == Some(&clip) || s.extra_clips.iter().any(|c| c.path == clip) {
                    self.say(format!("{name} scores the next run already"), false);
                } else {
                    s.extra_clips.push(crate::settings::ExtraClip { path: clip, weight: 1.0 });
                    self.say(format!("the next run is scored by {name} too (its weight is in Settings)"), false);
                }
            }
            UiCommand::ModelInstalled { name, paths } => self.model_installed(name, paths),
            UiCommand::CheckModels => self.check_models(),
            UiCommand::OpenInit => {
                let tx = self.bg_tx.clone();
                dialog(move || {
                    let file = answer(&tx, image_dialog().pick_file());
                    if let Some(f) = file {
                        let _ = tx.send(Background::InitChosen(f.path().to_path_buf()));
                    }
                });
            }
            UiCommand::ClearInit => {
                self.state.settings.init_image = None;
                self.init_thumb = None;
                self.canvas.set_init(None);
            }
            UiCommand::AddTargets => {
                let tx = self.bg_tx.clone();
                dialog(move || {
                    if let Some(files) = answer(&tx, image_dialog().pick_files()) {
                        let _ =
                            tx.send(Background::TargetsChosen(files.iter().map(|f| f.path().to_path_buf()).collect()));
                    }
                });
            }
            UiCommand::ExportImage => self.export_image(),
            UiCommand::ExportFrames { gif } => self.export_frames(gif),
            UiCommand::SaveSettings => self.save_settings(),
            UiCommand::LoadSettings => self.load_settings(),
            UiCommand::PathWindow => {
                if self.path_window.is_none() {
                    let start = self.outputs.as_ref().map(|o| o.join("clipcanvas.png").display().to_string());
                    self.path_window = Some(start.unwrap_or_default());
                }
            }
            UiCommand::SaveToPath(path) => self.by_path(path, false),
            UiCommand::OpenPath(path) => self.by_path(path, true),
            UiCommand::OpenOutputs => self.open_outputs(),
            UiCommand::CopyOutputsPath => {
                self.clipboard = self.outputs.as_ref().map(|o| o.display().to_string());
            }
            UiCommand::FitCanvas => self.canvas.fit(),
            UiCommand::CloseBanner => self.banner = None,
            UiCommand::RenderAnimation => {
                if !self.running() {
                    self.new_seed(false);
                    self.history.absorb(&self.state);
                    let settings = self.state.animation_settings();
                    self.begin(settings);
                }
            }
            UiCommand::PreviewMotion => match self.state.animation_settings() {
                Ok(s) => self.send(Command::PreviewMotion(Box::new(s))),
                Err(e) => self.say(e, true),
            },
            UiCommand::ShowAnimationFrame(i) => {
                if let Some((f, _)) = self.anim_frames.get(i) {
                    self.anim_selected = Some(i);
                    self.canvas.set_frame(Arc::clone(f));
                }
            }
            UiCommand::ExportAnimation { video } => self.export_animation(video),
            UiCommand::Queue(action) => self.queue_action(action),
            UiCommand::Gallery(action) => self.gallery_action(action),
            UiCommand::ToggleHistory => {
                self.gallery.open = !self.gallery.open;
                if self.gallery.open {
                    self.gallery.refresh(self.outputs.as_deref());
                }
            }
            UiCommand::AddGrid(request) => self.add_grid(request),
            UiCommand::ContinueQueue => {
                self.queue_offer = false;
                self.queue.paused = false;
                self.queue_changed();
            }
            UiCommand::ClearQueue => {
                self.queue_offer = false;
                self.queue.jobs.retain(|j| j.status.ended());
                self.queue.paused = false;
                // Their grids' sheets are given up with them.
                for g in &mut self.queue.grids {
                    g.drawn = true;
                }
                self.queue.clear_ended();
                self.queue_changed();
            }
        }
    }

    /// Puts an undone or redone state in place; a live run is steered to it (prompts and
    /// targets by the usual steering, the learning rate here).
    fn restore_edit(&mut self, restored: Option<crate::ui::state::StudioState>, nothing: &str) {
        let Some(state) = restored else { return self.say(nothing, false) };
        let lr_changed = state.settings.lr != self.state.settings.lr;
        self.state = state;
        if lr_changed {
            self.execute(UiCommand::LrChanged);
        }
    }

    /// The commands the keyboard asks for this frame.
    pub(super) fn shortcuts(&mut self, ctx: &egui::Context) {
        // In a text field, Ctrl+Z is the field's own undo.
        if !ctx.egui_wants_keyboard_input() {
            let undo = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
            let redo = KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
            let redo_y = KeyboardShortcut::new(Modifiers::COMMAND, Key::Y);
            // The longer shortcut first: Ctrl+Z would also match Ctrl+Shift+Z.
            if ctx.input_mut(|i| i.consume_shortcut(&redo) || i.consume_shortcut(&redo_y)) {
                self.ask(UiCommand::Redo);
            } else if ctx.input_mut(|i| i.consume_shortcut(&undo)) {
                self.ask(UiCommand::Undo);
            }
        }
        let start = KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter);
        if ctx.input_mut(|i| i.consume_shortcut(&start)) {
            self.ask(UiCommand::ToggleRun);
        }
        let history = KeyboardShortcut::new(Modifiers::COMMAND, Key::H);
        if ctx.input_mut(|i| i.consume_shortcut(&history)) {
            self.ask(UiCommand::ToggleHistory);
        }
        let draft = KeyboardShortcut::new(Modifiers::COMMAND, Key::D);
        if ctx.input_mut(|i| i.consume_shortcut(&draft)) {
            self.ask(UiCommand::Draft);
        }
        let pause = KeyboardShortcut::new(Modifiers::COMMAND, Key::P);
        let typing = ctx.memory(|m| m.focused().is_some());
        if ctx.input_mut(|i| i.consume_shortcut(&pause))
            || (!typing && ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Space)))
        {
            self.ask(UiCommand::TogglePause);
        }
    }

    /// Start: the current settings as a new run.
    pub fn start(&mut self) {
        self.new_seed(true);
        self.history.absorb(&self.state);
        let settings = self.state.run_settings();
        self.begin(settings);
    }

    /// With "new each run", a fresh seed for the run about to start (shown in Settings):
    /// with a variation on, a fresh variation seed (`vary`: a neighbour of the same
    /// start each time), else the run's own.
    fn new_seed(&mut self, vary: bool) {
        if !self.state.new_seed {
            return;
        }
        let fresh = crate::ui::panels::settings::fresh_seed();
        match &mut self.state.settings.variation {
            Some(v) if vary => v.seed = fresh,
            _ => self.state.settings.seed = fresh,
        }
    }

    /// Draft: a one-step draft of the prompts, ranked candidates to pick from.
    pub fn draft(&mut self) {
        if let Some(why) = self.draft_unavailable() {
            self.say(why, true);
            return;
        }
        self.new_seed(false);
        self.history.absorb(&self.state);
        let settings = self.state.draft_settings();
        self.begin(settings);
    }

    /// Sends a new run (or reports why its settings are refused) and clears what the last
    /// one left on screen: plot, kept frames, drafts, banner.
    pub(super) fn begin(&mut self, settings: Result<crate::settings::RunSettings, String>) {
        let settings = match settings {
            Ok(s) => s,
            Err(e) => return self.say(e, true),
        };
        self.kept.clear();
        self.clear_for_run(&settings);
        self.animating = settings.animation.is_some();
        self.anim_steps = 0;
        if self.animating {
            self.anim_frames.clear();
            self.anim_preview = false;
            self.anim_selected = None;
            self.anim_total = settings.animation.as_ref().map_or(0, |a| a.frames);
        }
        self.draft_pick = 0;
        let prompt = self.state.sent_rows().next().map(|r| r.text.clone());
        self.run_folder = self.new_run_folder(prompt.as_deref());
        let every = self.state.record_every;
        let recording =
            self.run_folder.as_ref().filter(|_| every > 0).map(|dir| Recording { dir: dir.join("recording"), every });
        if every > 0 && recording.is_none() {
            self.say("not recording: this system has no outputs folder", true);
        }
        // The worker records until told otherwise: tell it only what changes.
        if recording.is_some() || self.recording {
            self.recording = recording.is_some();
            self.send(Command::Record(recording));
        }
        // An animation is not autosaved (the worker keeps its frames in memory).
        let autosave = self.run_folder.as_ref().filter(|_| !self.animating).map(|d| d.join(AUTOSAVE));
        self.tell_autosave(autosave);
        if !self.link.send(Command::Start(Box::new(settings))) {
            self.say("the engine is not answering; restart the studio", true);
        }
    }

    /// What a run about to start or resume replaces: what was last sent for steering,
    /// the plot, the branch, the drafts, the selection and the banner; `settings` become
    /// the last run's.
    pub(super) fn clear_for_run(&mut self, settings: &crate::settings::RunSettings) {
        self.sent_prompts.clone_from(&settings.prompts);
        self.sent_targets.clone_from(&settings.image_prompts);
        self.plot.clear();
        self.plot.note_sent(self.state.used_rows());
        self.branch = None;
        self.drafts.clear();
        self.selected = None;
        self.banner = None;
        self.disk_run = None;
        self.last_run = Some(settings.clone());
    }

    /// Tells the worker where to autosave the runs that follow, when that changes.
    pub(super) fn tell_autosave(&mut self, path: Option<PathBuf>) {
        if path != self.autosave {
            self.autosave.clone_from(&path);
            self.send(Command::Autosave(path.map(|p| (p, AUTOSAVE_EVERY))));
        }
    }

    /// Resumes the run cut short from its autosave: its settings come back, and the run
    /// goes on in its own folder.
    fn resume_interrupted(&mut self) {
        let Some(run) = self.interrupted.take() else { return };
        if self.running() {
            self.interrupted = Some(run);
            return self.say("stop the run first", true);
        }
        self.kept.clear();
        let path = run.folder.join(AUTOSAVE);
        self.resume_session(run.folder, path, &run.settings);
    }

    /// Why Draft cannot run with the current models, if it cannot.
    pub fn draft_unavailable(&self) -> Option<String> {
        if !self.state.settings.generator.is_vqgan() {
            return Some(format!(
                "one-step drafts are VQGAN codes, and this run draws with the {} generator: choose vqgan in \
                 Settings > Generator",
                self.state.settings.generator.name()
            ));
        }
        self.draft_check.as_ref().and_then(|(_, why)| why.clone())
    }

    /// Looks for a one-step model again when the model paths have changed since the last
    /// look (it reads the file system, so not on every frame).
    pub(super) fn refresh_draft_check(&mut self) {
        let s = &self.state.settings;
        let key = (s.vqgan.clone(), s.clip.clone(), self.state.draft.model.clone());
        if self.draft_check.as_ref().is_none_or(|(k, _)| *k != key) {
            let why = crate::worker::draft_unavailable(&self.state.settings, &self.state.draft);
            self.draft_check = Some((key, why));
        }
    }

    /// Refine: continues the picked draft with the run's iterations.
    pub fn refine(&mut self) {
        let iterations = self.state.settings.iterations.max(1);
        self.send(Command::Refine(iterations));
    }

    /// Shows another ranked candidate and starts from it.
    pub(super) fn pick_draft(&mut self, rank: usize) {
        self.draft_pick = rank;
        if let Some(one) = self.last_run.as_mut().and_then(|s| s.one_step.as_mut()) {
            one.pick = rank;
        }
        self.kept.clear();
        self.selected = None;
        self.send(Command::PickDraft(rank));
    }

    pub(super) fn send(&mut self, cmd: Command) {
        if !self.link.send(cmd) {
            self.say("the engine is busy or gone; try again", true);
        }
    }

    pub(super) fn toggle_run(&mut self) {
        if self.stopping {
            // The run is finishing its iteration: a second press must not start another.
        } else if self.running() {
            self.send(Command::Stop);
            self.stopping = true;
        } else {
            self.start();
        }
    }

    pub(super) fn toggle_pause(&mut self) {
        match self.run_state {
            RunState::Running => self.send(Command::Pause),
            RunState::Paused => self.send(Command::Resume),
            _ => {}
        }
    }

    /// Points the run's settings at an installed model.
    pub(super) fn use_model(&mut self, paths: ModelPaths) {
        match paths {
            ModelPaths::Clip(dir) => self.state.settings.clip = Some(dir),
            ModelPaths::Vqgan { config, checkpoint } => {
                self.state.settings.vqgan = Some(checkpoint);
                self.state.settings.vqgan_config = Some(config);
            }
        }
        self.check_models();
    }

    /// A download finished: where the settings point at a model that is not there, use
    /// this one.
    pub(super) fn model_installed(&mut self, name: String, paths: Option<ModelPaths>) {
        self.push_log(format!("model {name} installed"));
        let settings = &self.state.settings;
        let wanted = match &paths {
            Some(ModelPaths::Clip(_)) => !settings.clip.as_ref().is_some_and(|c| c.join("config.json").is_file()),
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
