//! The studio's layout: the top bar, banners, the side panel (prompts, images,
//! settings), the timeline with the plot or the log, the canvas with the draft strip.
//! Drawing only: what the user asks for is queued as a [`UiCommand`].

use std::collections::VecDeque;
use std::time::Instant;

use egui::{Color32, RichText};

use super::studio::StudioApp;
use super::support::percentile;
use super::ui_command::UiCommand;
use crate::ui::panels::images::{self, ImageAction};
use crate::ui::panels::models::ModelsAction;
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
        egui::Panel::left("side").resizable(true).default_size(360.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                egui::CollapsingHeader::new("Prompts").default_open(true).show(ui, |ui| {
                    // Edits are sent to a live run by the next frame's logic.
                    prompts::show(ui, &mut self.state);
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
                if let Some(i) = self.canvas.shown_iteration() {
                    ui.label(format!("iteration {i}"));
                }
            });
            if let Some(rank) = self.draft_strip(ui) {
                self.ask(UiCommand::PickDraft(rank));
            }
            self.canvas.ui(ui);
        });
        for action in image_actions {
            match action {
                ImageAction::OpenInit => self.ask(UiCommand::OpenInit),
                ImageAction::ClearInit => self.ask(UiCommand::ClearInit),
                ImageAction::AddTargets => self.ask(UiCommand::AddTargets),
                // Sent to a live run by the next frame's logic.
                ImageAction::TargetsChanged | ImageAction::InitWeightChanged => {}
            }
        }
        if std::mem::take(&mut self.open_models) {
            self.models_window.open(ui.ctx());
        }
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

    pub(super) fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let running = self.running();
            let label = if running { "Stop" } else { "Start" };
            if ui.button(label).on_hover_text("Ctrl+Enter").clicked() {
                self.ask(UiCommand::ToggleRun);
            }
            let unavailable = self.draft_unavailable();
            let draft = ui.add_enabled(!running && unavailable.is_none(), egui::Button::new("Draft")).on_hover_text(
                "A one-step draft of the prompts in a second or two, with candidates to pick from (Ctrl+D)",
            );
            let draft = match &unavailable {
                Some(why) => draft.on_disabled_hover_text(why.as_str()),
                None => draft,
            };
            if draft.clicked() {
                self.ask(UiCommand::Draft);
            }
            if !self.drafts.is_empty()
                && ui
                    .add_enabled(!running, egui::Button::new("Refine"))
                    .on_hover_text("Continue the picked draft with VQGAN+CLIP for the run's iterations")
                    .clicked()
            {
                self.ask(UiCommand::Refine);
            }
            let pause = match self.run_state {
                RunState::Running => Some(("Pause", UiCommand::Pause)),
                RunState::Paused | RunState::Stopped => Some(("Resume", UiCommand::Resume)),
                _ => None,
            };
            if let Some((label, cmd)) = pause {
                if ui.button(label).on_hover_text("Space").clicked() {
                    self.ask(cmd);
                }
            }
            if ui.button("Reset").clicked() {
                self.ask(UiCommand::Reset);
            }
            ui.separator();
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
                ui.separator();
                if ui.button("Save settings...").clicked() {
                    self.ask(UiCommand::SaveSettings);
                }
                if ui.button("Load settings...").clicked() {
                    self.ask(UiCommand::LoadSettings);
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

    pub(super) fn plot(&self, ui: &mut egui::Ui) {
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

/// The model manager's report as a command.
pub(super) fn model_command(action: ModelsAction) -> UiCommand {
    match action {
        ModelsAction::Use { name, paths } => UiCommand::UseModel { name, paths },
        ModelsAction::Installed { name, paths } => UiCommand::ModelInstalled { name, paths },
    }
}
