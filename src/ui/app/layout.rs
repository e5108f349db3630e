//! The studio's layout: the top bar, banners, the side panel (prompts, images,
//! settings), the timeline with the plot or the log, the canvas with the draft strip.
//! Drawing only: what the user asks for is queued as a [`UiCommand`].

use std::collections::VecDeque;
use std::time::Instant;

use egui::{Color32, RichText};

use super::studio::StudioApp;
use super::support::percentile;
use super::ui_command::UiCommand;
use crate::ui::panels::animation::{self, AnimationAction};
use crate::ui::panels::images::{self, ImageAction};
use crate::ui::panels::models::{InUse, ModelsAction};
use crate::ui::panels::timeline::{self, TimelineAction};
use crate::ui::panels::{prompts, settings};
use crate::worker::RunState;

impl StudioApp {
    /// Draws the whole window.
    pub(super) fn layout(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let started = Instant::now();
        egui::Panel::top("top").show(ui, |ui| {
            self.top_bar(ui);
            self.banners(ui);
        });
        let mut image_actions = Vec::new();
        let mut lr_changed = false;
        let mut anim_action = None;
        let mut queue_actions = Vec::new();
        egui::Panel::left("side").resizable(true).default_size(360.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                egui::CollapsingHeader::new("Prompts").default_open(true).show(ui, |ui| {
                    // Edits are sent to a live run by the next frame's logic.
                    prompts::show(ui, &mut self.state, &mut self.brush);
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
                    let st = &mut self.state;
                    lr_changed = settings::show(ui, &mut st.settings, &mut st.draft, &mut st.new_seed);
                });
                let title = match self.queue.pending() {
                    0 => "Queue".to_owned(),
                    n => format!("Queue ({n})"),
                };
                egui::CollapsingHeader::new(title).id_salt("queue").default_open(false).show(ui, |ui| {
                    let progress = self.stats.as_ref().map(|s| (s.iteration, s.iterations));
                    for action in crate::ui::panels::queue::show(ui, &self.queue, progress, &mut self.thumbs) {
                        queue_actions.push(action);
                    }
                });
                egui::CollapsingHeader::new("Animation").default_open(false).show(ui, |ui| {
                    let running = self.running();
                    let frames = self.anim_frames.len();
                    let rows: Vec<animation::RowInfo> =
                        self.state.sent_rows().map(|r| (r.id, r.text.clone(), r.weight)).collect();
                    let st = &mut self.state;
                    anim_action = animation::show(
                        ui,
                        &mut st.animation,
                        &mut st.weight_schedules,
                        &rows,
                        &mut self.anim_editor,
                        running,
                        frames,
                    );
                });
            });
        });
        for action in queue_actions {
            self.ask(UiCommand::Queue(action));
        }
        match anim_action {
            Some(AnimationAction::Preview) => self.ask(UiCommand::PreviewMotion),
            Some(AnimationAction::Render) => self.ask(UiCommand::RenderAnimation),
            Some(AnimationAction::Export { video }) => self.ask(UiCommand::ExportAnimation { video }),
            None => {}
        }
        egui::Panel::bottom("bottom").resizable(true).default_size(300.0).show(ui, |ui| {
            if let Some(action) = timeline::show(ui, &self.kept, self.selected) {
                self.ask(match action {
                    TimelineAction::Show(i) => UiCommand::ShowKept(i),
                    TimelineAction::Live => UiCommand::ShowLive,
                    TimelineAction::BranchFrom(iteration) => UiCommand::BranchFrom(iteration),
                });
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
                    self.ask(UiCommand::FitCanvas);
                }
                ui.label(self.canvas.zoom_label());
                if self.canvas.has_init() {
                    let mut split = self.canvas.split.is_some();
                    if ui.checkbox(&mut split, "Before/after (shift-drag)").changed() {
                        self.canvas.split = split.then_some(0.5);
                    }
                }
                match (self.anim_selected, self.canvas.shown_iteration()) {
                    (Some(_), Some(f)) => {
                        ui.label(format!("{} {f}", if self.anim_preview { "preview frame" } else { "frame" }));
                    }
                    (None, Some(i)) if self.animating => {
                        ui.label(format!("frame {} - iteration {i}", self.anim_frames.len()));
                    }
                    (None, Some(i)) => {
                        ui.label(format!("iteration {i}"));
                    }
                    _ => {}
                }
            });
            if let Some(rank) = self.draft_strip(ui) {
                self.ask(UiCommand::PickDraft(rank));
            }
            if let Some(i) = self.animation_strip(ui) {
                self.ask(UiCommand::ShowAnimationFrame(i));
            }
            self.brush.toolbar(ui, &mut self.state);
            let area = ui.available_rect_before_wrap();
            self.canvas.painting = self.brush.target.is_some();
            let view = self.canvas.ui(ui);
            self.brush.canvas_size = self.canvas.frame().map_or((self.state.settings.width, self.state.settings.height), |f| {
                (f.frame.width as usize, f.frame.height as usize)
            });
            if self.brush.target.is_some() {
                self.brush.paint(&mut self.state, &view.response, view.image_rect);
                self.brush.overlay(ui, &mut self.state, view.image_rect);
            }
            if self.canvas.frame().is_none() && !self.running() && self.brush.target.is_none() {
                let hint = if self.draft_unavailable().is_none() {
                    "Type a prompt on the left and press Start (Ctrl+Enter),\nor Draft (Ctrl+D) for a one-step draft to refine."
                } else {
                    "Type a prompt on the left and press Start (Ctrl+Enter)."
                };
                let label =
                    egui::Label::new(RichText::new(hint).size(18.0).strong()).halign(egui::Align::Center).selectable(false);
                ui.put(egui::Rect::from_center_size(area.center(), egui::vec2(560.0, 60.0)), label);
            }
        });
        if self.confirm_reset {
            self.reset_dialog(ui.ctx());
        }
        if self.path_window.is_some() {
            self.path_dialog(ui.ctx());
        }
        if let Some(text) = self.clipboard.take() {
            ui.ctx().copy_text(text);
        }
        for action in image_actions {
            match action {
                ImageAction::OpenInit => self.ask(UiCommand::OpenInit),
                ImageAction::ClearInit => self.ask(UiCommand::ClearInit),
                ImageAction::AddTargets => self.ask(UiCommand::AddTargets),
                // Sent to a live run by the next frame's logic.
                ImageAction::TargetsChanged | ImageAction::InitWeightChanged => {}
            }
        }
        if let Some(action) = self.gallery.show(ui.ctx(), self.outputs.as_deref(), &mut self.thumbs) {
            self.ask(UiCommand::Gallery(action));
        }
        if let Some(request) = self.grid_dialog.show(ui.ctx()) {
            self.ask(UiCommand::AddGrid(request));
        }
        if std::mem::take(&mut self.open_models) {
            self.models_window.open(ui.ctx());
        }
        let s = &self.state.settings;
        self.models_window.set_in_use(InUse {
            vqgan: s.vqgan.clone(),
            clip: s.clip.clone(),
            extra_clips: s.extra_clips.iter().map(|c| c.path.clone()).collect(),
        });
        for action in self.models_window.show(ui.ctx()) {
            self.ask(model_command(action));
        }
        if lr_changed {
            self.ask(UiCommand::LrChanged);
        }
        if frame.info().cpu_usage.is_none() {
            // No measure from eframe (tests): time the layout pass itself.
            self.record_frame_time(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    /// The top bar. Its buttons keep their places in every state: a button that does not
    /// apply is disabled, never hidden, and a label that changes keeps its width.
    pub(super) fn top_bar(&mut self, ui: &mut egui::Ui) {
        let wide = egui::vec2(84.0, 0.0);
        ui.horizontal(|ui| {
            let running = self.running();
            let (label, hint) = if self.stopping {
                ("Stopping...", "Finishing the current iteration; the run is kept")
            } else if running {
                ("Stop", "Stop the run, keeping it (Ctrl+Enter)")
            } else {
                ("Start", "Start a run with these prompts and settings (Ctrl+Enter)")
            };
            let start = ui.add_enabled(!self.stopping, egui::Button::new(label).min_size(wide)).on_hover_text(hint);
            if start.clicked() {
                self.ask(UiCommand::ToggleRun);
            }
            let unavailable = self.draft_unavailable();
            let draft = ui.add_enabled(!running && unavailable.is_none(), egui::Button::new("Draft")).on_hover_text(
                "A one-step draft of the prompts in about half a second, with candidates to pick from (Ctrl+D)",
            );
            let draft = match &unavailable {
                Some(why) if !running => draft.on_disabled_hover_text(why.as_str()),
                _ => draft.on_disabled_hover_text("Stop the run first"),
            };
            if draft.clicked() {
                self.ask(UiCommand::Draft);
            }
            if ui
                .add_enabled(!running && !self.drafts.is_empty(), egui::Button::new("Refine"))
                .on_hover_text("Continue the picked draft with VQGAN+CLIP for the run's iterations")
                .on_disabled_hover_text("Press Draft first, then pick a candidate to refine")
                .clicked()
            {
                self.ask(UiCommand::Refine);
            }
            let (label, cmd) = match self.run_state {
                RunState::Paused | RunState::Stopped => ("Resume", UiCommand::Resume),
                _ => ("Pause", UiCommand::Pause),
            };
            let can =
                matches!(self.run_state, RunState::Running | RunState::Paused | RunState::Stopped) && !self.stopping;
            if ui.add_enabled(can, egui::Button::new(label).min_size(wide)).on_hover_text("Ctrl+P, or Space").clicked()
            {
                self.ask(cmd);
            }
            if ui
                .add_enabled(!self.kept.is_empty() || self.live.is_some(), egui::Button::new("Reset..."))
                .on_hover_text("Clear the canvas, the kept frames and the plot")
                .clicked()
            {
                self.ask(UiCommand::AskReset);
            }
            ui.separator();
            if ui
                .add_enabled(self.history.can_undo(&self.state), egui::Button::new("Undo"))
                .on_hover_text("Take back the last edit of prompts, images or settings (Ctrl+Z)")
                .clicked()
            {
                self.ask(UiCommand::Undo);
            }
            if ui
                .add_enabled(self.history.can_redo(), egui::Button::new("Redo"))
                .on_hover_text("Make the undone edit again (Ctrl+Shift+Z)")
                .clicked()
            {
                self.ask(UiCommand::Redo);
            }
            ui.separator();
            if ui
                .button("Add to queue")
                .on_hover_text("These prompts and settings as a job of the queue (side panel), run after the others")
                .clicked()
            {
                self.ask(UiCommand::Queue(crate::ui::panels::queue::QueueAction::Add));
            }
            if ui
                .selectable_label(self.gallery.open, "History")
                .on_hover_text("Every saved run: search, open, continue, branch, vary (Ctrl+H)")
                .clicked()
            {
                self.ask(UiCommand::ToggleHistory);
            }
            if ui.button("Models...").on_hover_text("Find, download and check the models").clicked() {
                self.ask(UiCommand::OpenModels);
            }
            ui.menu_button("Export", |ui| {
                if ui.button("Current image (PNG)...").clicked() {
                    self.ask(UiCommand::ExportImage);
                }
                if ui.button("Kept frames (PNG sequence)...").clicked() {
                    self.ask(UiCommand::ExportFrames { gif: false });
                }
                if ui.button("Kept frames (GIF)...").clicked() {
                    self.ask(UiCommand::ExportFrames { gif: true });
                }
                self.animation_options(ui);
                ui.separator();
                if ui.button("Save settings...").clicked() {
                    self.ask(UiCommand::SaveSettings);
                }
                if ui.button("Load settings...").clicked() {
                    self.ask(UiCommand::LoadSettings);
                }
                ui.separator();
                if ui
                    .button("Save or open by path...")
                    .on_hover_text("Type a path: for systems where no file dialog opens")
                    .clicked()
                {
                    self.ask(UiCommand::PathWindow);
                }
                let outputs = self.outputs.as_ref().map(|o| o.display().to_string());
                let hint = outputs.as_deref().unwrap_or("no outputs folder on this system");
                if ui.button("Open outputs folder").on_hover_text(format!("Every run is saved here: {hint}")).clicked()
                {
                    self.ask(UiCommand::OpenOutputs);
                }
                if ui.button("Copy outputs folder path").on_hover_text(hint).clicked() {
                    self.ask(UiCommand::CopyOutputsPath);
                }
            });
            ui.menu_button("View", |ui| {
                ui.checkbox(&mut self.show_log, "Log instead of the loss plot");
                ui.checkbox(&mut self.show_performance, "Performance figures");
            });
            ui.separator();
            self.progress(ui);
            if self.show_performance {
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let uploads: VecDeque<f64> = self.canvas.upload_latencies_ms().into();
                    if let Some(p95) = percentile(&uploads, 0.95) {
                        ui.label(RichText::new(format!("frame to GPU {p95:.1} ms p95")).small().weak()).on_hover_text(
                            "From a frame's arrival from the engine to its upload into the canvas texture",
                        );
                    }
                    if let Some(p95) = percentile(&self.frame_ms, 0.95) {
                        ui.label(RichText::new(format!("UI {p95:.1} ms p95")).small().weak())
                            .on_hover_text("CPU time of a UI frame (layout, tessellation, paint), last 600 frames");
                    }
                });
            }
        });
    }

    /// Reset's confirmation: what it clears, and that nothing can bring it back.
    fn reset_dialog(&mut self, ctx: &egui::Context) {
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("confirm-reset")).show(ctx, |ui| {
            ui.heading("Reset?");
            ui.label(format!(
                "This clears the canvas, {} kept frame(s){} and the loss plot, and ends the run. \
                 A run that finished or stopped is already in the outputs folder; export anything else \
                 you want to keep first.",
                self.kept.len(),
                if self.drafts.is_empty() { "" } else { ", the draft candidates" },
            ));
            ui.horizontal(|ui| {
                if ui.button("Reset").clicked() {
                    answer = Some(true);
                }
                if ui.button("Cancel").clicked() || ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                    answer = Some(false);
                }
            });
        });
        match answer {
            Some(true) => self.ask(UiCommand::Reset),
            Some(false) => self.confirm_reset = false,
            None => {}
        }
    }

    /// Recording every k-th iteration (for animations of every step) and how exported
    /// frames look: GIF speed, enlargement and its filter.
    fn animation_options(&mut self, ui: &mut egui::Ui) {
        let st = &mut self.state;
        ui.horizontal(|ui| {
            let mut on = st.record_every > 0;
            if ui
                .checkbox(&mut on, "Record every")
                .on_hover_text(
                    "Runs write every k-th iteration to their outputs folder; the animations then hold them all",
                )
                .changed()
            {
                st.record_every = usize::from(on);
            }
            let mut every = st.record_every.max(1);
            if ui.add_enabled(on, egui::DragValue::new(&mut every).range(1..=1000)).changed() {
                st.record_every = every;
            }
            ui.label("iterations (next run)");
        });
        ui.horizontal(|ui| {
            let l = ui.label("GIF speed");
            ui.add(egui::DragValue::new(&mut st.look.fps).range(1..=50).suffix(" fps")).labelled_by(l.id);
            ui.label("size");
            for k in [1, 2, 4] {
                ui.selectable_value(&mut st.look.scale, k, format!("x{k}"));
            }
            ui.checkbox(&mut st.look.smooth, "smooth").on_hover_text("Lanczos when enlarging; off: crisp pixels");
        });
    }

    /// Save or open by path: a typed path, where no file dialog can open.
    fn path_dialog(&mut self, ctx: &egui::Context) {
        let Some(mut text) = self.path_window.take() else { return };
        let mut open = true;
        let mut done = None;
        egui::Window::new("Save or open by path").open(&mut open).collapsible(false).show(ctx, |ui| {
            ui.label("A .png saves the image on the canvas, a .gif the kept frames, a .json the settings;");
            ui.label("a folder (no extension) the kept frames as PNGs. Open reads a settings file or clipcanvas PNG.");
            let field =
                ui.add(egui::TextEdit::singleline(&mut text).desired_width(460.0).hint_text("/path/to/file.png"));
            let path = std::path::PathBuf::from(text.trim());
            let has = !text.trim().is_empty();
            ui.horizontal(|ui| {
                let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if ui.add_enabled(has, egui::Button::new("Save")).clicked() || (enter && has) {
                    done = Some(UiCommand::SaveToPath(path.clone()));
                }
                if ui.add_enabled(has, egui::Button::new("Open")).clicked() {
                    done = Some(UiCommand::OpenPath(path.clone()));
                }
            });
        });
        if let Some(cmd) = done {
            self.ask(cmd);
        } else if open {
            self.path_window = Some(text);
        }
    }

    /// The run's state, and while it runs a progress bar with the iteration, the loss,
    /// the speed and the time left.
    fn progress(&self, ui: &mut egui::Ui) {
        let state = match self.run_state {
            _ if self.stopping => "stopping",
            RunState::Idle => "ready",
            RunState::Loading => "loading models",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Finished => "finished",
            RunState::Stopped => "stopped",
        };
        ui.label(state);
        let Some(s) = &self.stats else { return };
        if self.animating && !self.anim_preview {
            return self.animation_progress(ui, s);
        }
        // A branch counts from its kept frame: iteration `from` + the steps since it began.
        let (offset, prefix) = match self.branch {
            Some((from, Some(base))) if s.iteration >= base => (base - from, format!("branch from {from}: ")),
            _ => (0, String::new()),
        };
        let (done, total) = (s.iteration + 1 - offset, s.iterations.saturating_sub(offset));
        #[expect(clippy::cast_precision_loss, reason = "a progress fraction")]
        let fraction = done as f32 / total.max(1) as f32;
        let left = total.saturating_sub(done);
        #[expect(clippy::cast_precision_loss, reason = "a time estimate")]
        let eta =
            (s.its_per_sec > 0.0 && matches!(self.run_state, RunState::Running)).then(|| left as f64 / s.its_per_sec);
        let mut text = format!("{prefix}{done}/{total} - loss {:.4} - {:.2} it/s", s.total_loss, s.its_per_sec);
        if let Some(eta) = eta {
            text.push_str(&format!(" - {} left", clock(eta)));
        }
        ui.add(egui::ProgressBar::new(fraction.clamp(0.0, 1.0)).desired_width(360.0).text(text));
    }

    /// An animation's progress: the frame and its iteration, and the time left at this
    /// frame's speed and iterations.
    fn animation_progress(&self, ui: &mut egui::Ui, s: &crate::worker::StepStats) {
        let total = self.anim_total.max(1);
        let done = self.anim_frames.len().min(total);
        let within = (s.iteration + 1).min(s.iterations.max(1));
        #[expect(clippy::cast_precision_loss, reason = "a progress fraction")]
        let fraction = (done as f32 + within as f32 / s.iterations.max(1) as f32) / total as f32;
        // Frames are numbered from 0, as in the schedules and the files.
        let mut text = format!(
            "{done}/{total} frames - iteration {within}/{} - loss {:.4} - {:.2} it/s",
            s.iterations, s.total_loss, s.its_per_sec
        );
        if s.its_per_sec > 0.0 && matches!(self.run_state, RunState::Running) {
            let left = s.iterations.saturating_sub(within) + total.saturating_sub(done + 1) * s.iterations;
            #[expect(clippy::cast_precision_loss, reason = "a time estimate")]
            let eta = left as f64 / s.its_per_sec;
            text.push_str(&format!(" - {} left", clock(eta)));
        }
        ui.add(egui::ProgressBar::new(fraction.clamp(0.0, 1.0)).desired_width(440.0).text(text));
    }

    pub(super) fn banners(&mut self, ui: &mut egui::Ui) {
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
                        self.ask(UiCommand::OpenModels);
                    }
                    if ui.small_button("Check again").clicked() {
                        self.ask(UiCommand::CheckModels);
                    }
                });
            });
        }
        if let Some(run) = &self.interrupted {
            let prompt = run
                .settings
                .prompts
                .first()
                .map(|p| format!(" (\"{}\")", crate::settings::prompt::excerpt(p)))
                .unwrap_or_default();
            let text = format!(
                "A run was cut short at iteration {} of {}{prompt}; its autosave is in {}.",
                run.iteration,
                run.settings.iterations,
                run.folder.display()
            );
            egui::Frame::new().fill(Color32::from_rgb(70, 55, 20)).inner_margin(6.0).show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.label(text);
                    if ui.small_button("Resume it").on_hover_text("Go on from the autosave").clicked() {
                        self.ask(UiCommand::ResumeInterrupted);
                    }
                    if ui.small_button("Discard").on_hover_text("Delete the autosave").clicked() {
                        self.ask(UiCommand::DiscardInterrupted);
                    }
                });
            });
        }
        if self.queue_offer {
            let n = self.queue.pending();
            egui::Frame::new().fill(Color32::from_rgb(70, 55, 20)).inner_margin(6.0).show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.label(format!("The queue has {n} job(s) left from last time; it is paused."));
                    if ui.small_button("Continue the queue").on_hover_text("Run them, one after another").clicked() {
                        self.ask(UiCommand::ContinueQueue);
                    }
                    if ui.small_button("Clear them").on_hover_text("Take them out of the queue").clicked() {
                        self.ask(UiCommand::ClearQueue);
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
            self.ask(UiCommand::CloseBanner);
        }
    }

    /// The ranked draft candidates as thumbnails; returns the one clicked.
    pub(super) fn draft_strip(&self, ui: &mut egui::Ui) -> Option<usize> {
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

    /// The animation's finished frames (or a motion preview's) as thumbnails; returns the
    /// one clicked.
    pub(super) fn animation_strip(&self, ui: &mut egui::Ui) -> Option<usize> {
        if self.anim_frames.is_empty() {
            return None;
        }
        let mut clicked = None;
        ui.horizontal(|ui| {
            let what = if self.anim_preview { "Motion preview" } else { "Frames" };
            ui.label(format!("{what} {}/{}", self.anim_frames.len(), self.anim_total.max(self.anim_frames.len())));
            egui::ScrollArea::horizontal().id_salt("animation strip").stick_to_right(true).show(ui, |ui| {
                ui.horizontal(|ui| {
                    for (i, (f, tex)) in self.anim_frames.iter().enumerate() {
                        let image = egui::Image::new((tex.id(), egui::vec2(44.0, 44.0)));
                        let r = ui.add(egui::Button::image(image).selected(self.anim_selected == Some(i)));
                        let name = format!("animation frame {}", f.iteration);
                        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
                        if r.on_hover_text(format!("frame {}", f.iteration)).clicked() {
                            clicked = Some(i);
                        }
                    }
                });
            });
        });
        clicked
    }

    pub(super) fn plot(&self, ui: &mut egui::Ui) {
        self.plot.show(ui, &self.state.prompts, 150.0);
    }
}

/// Seconds as `m:ss` (or `h:mm:ss`).
pub(super) fn clock(seconds: f64) -> String {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a clamped, rounded duration")]
    let s = seconds.clamp(0.0, 1e7).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The model manager's report as a command.
pub(super) fn model_command(action: ModelsAction) -> UiCommand {
    match action {
        ModelsAction::Use { name, paths } => UiCommand::UseModel { name, paths },
        ModelsAction::AlsoScore { name, clip } => UiCommand::AlsoScore { name, clip },
        ModelsAction::Installed { name, paths } => UiCommand::ModelInstalled { name, paths },
    }
}
