//! The model-manager window: every catalog model with its status (installed, missing,
//! corrupt), Download and Cancel, a progress bar with bytes, rate and time left, the
//! folder each model is in, what to download by hand when offline, and "Use" to point the
//! run's settings at an installed model. The downloads themselves run in the
//! [`crate::worker::downloads`] service, started the first time the window opens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Color32, RichText};

use crate::worker::downloads::{
    human_bytes, human_duration, ManagerEvent, ModelKind, ModelManager, ModelPaths, ModelRow, ModelStatus, Progress,
};

/// How long one UI frame may spend draining the manager's events.
const EVENT_BUDGET: Duration = Duration::from_millis(4);

/// What the window asks of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelsAction {
    /// Point the run's settings at this installed model.
    Use { name: String, paths: ModelPaths },
    /// Score the run with this installed CLIP too, beside the one in use.
    AlsoScore { name: String, clip: std::path::PathBuf },
    /// A model finished installing; the app re-checks its missing-models banner and uses
    /// the model where the settings point at a missing one.
    Installed { name: String, paths: Option<ModelPaths> },
}

/// The window's state.
#[derive(Default)]
pub struct ModelsWindow {
    pub open: bool,
    manager: Option<ModelManager>,
    rows: Vec<ModelRow>,
    /// The last message per model: (text, is it an error).
    messages: HashMap<String, (String, bool)>,
    /// How to install by hand, per model, once a download failed.
    help: HashMap<String, String>,
    roots: Vec<std::path::PathBuf>,
    start_error: Option<String>,
    /// The models the next run uses, to mark them.
    in_use: InUse,
}

/// The models a run would use now: the VQGAN checkpoint and CLIP folder set, or none
/// (the built-in shapes world).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InUse {
    pub vqgan: Option<std::path::PathBuf>,
    pub clip: Option<std::path::PathBuf>,
    /// More CLIPs scoring beside `clip`.
    pub extra_clips: Vec<std::path::PathBuf>,
}

impl InUse {
    /// Whether `row` is one of them.
    fn holds(&self, row: &ModelRow) -> bool {
        if self.vqgan.is_none() && self.clip.is_none() {
            return row.bundled;
        }
        let Some(ModelStatus::Installed { dir }) = &row.status else { return false };
        let same = |p: &std::path::Path| {
            let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            canon(p) == canon(dir)
        };
        match row.kind {
            ModelKind::Vqgan => self.vqgan.as_deref().and_then(std::path::Path::parent).is_some_and(same),
            ModelKind::Clip => self.clip.iter().chain(&self.extra_clips).any(|p| same(p)),
        }
    }
}

impl ModelsWindow {
    /// Opens the window, starting the manager service the first time.
    pub fn open(&mut self, ctx: &egui::Context) {
        self.open = true;
        match &self.manager {
            Some(m) => m.refresh(),
            None => {
                let ctx = ctx.clone();
                match ModelManager::spawn_default(Arc::new(move || ctx.request_repaint())) {
                    Ok(m) => self.attach(m),
                    Err(e) => self.start_error = Some(e),
                }
            }
        }
    }

    /// Uses this manager instead of starting the default one (tests give one on their own
    /// catalog and folders).
    pub fn attach(&mut self, manager: ModelManager) {
        self.rows = manager.rows();
        self.roots = manager.roots();
        self.manager = Some(manager);
        self.start_error = None;
    }

    /// Notes the models the next run uses (marked "in use").
    pub fn set_in_use(&mut self, in_use: InUse) {
        self.in_use = in_use;
    }

    /// The listed models (tests read it).
    pub fn rows(&self) -> &[ModelRow] {
        &self.rows
    }

    /// Drains the manager's events; call every frame, shown or not.
    pub fn logic(&mut self) -> Vec<ModelsAction> {
        let mut actions = Vec::new();
        let Some(manager) = &self.manager else { return actions };
        let started = Instant::now();
        while started.elapsed() < EVENT_BUDGET {
            let Some(event) = manager.try_event() else { break };
            match event {
                ManagerEvent::Statuses(rows) => self.rows = rows,
                ManagerEvent::Note { model, message } => {
                    self.messages.insert(model, (message, false));
                }
                ManagerEvent::Finished { model, dir } => {
                    self.messages.insert(model.clone(), (format!("installed in {}", dir.display()), false));
                    self.help.remove(&model);
                    let paths = manager.paths(&model).ok();
                    actions.push(ModelsAction::Installed { name: model, paths });
                }
                ManagerEvent::Failed { model, message, help } => {
                    if let Some(h) = help {
                        self.help.insert(model.clone(), h);
                    }
                    self.messages.insert(model, (message, true));
                }
                ManagerEvent::Cancelled { model } => {
                    self.messages.insert(model, ("cancelled; no partial file left".into(), false));
                }
            }
        }
        actions
    }

    /// Draws the window when open.
    pub fn show(&mut self, ctx: &egui::Context) -> Vec<ModelsAction> {
        let mut actions = Vec::new();
        if !self.open {
            return actions;
        }
        let mut open = self.open;
        egui::Window::new("Model manager")
            .open(&mut open)
            .default_size([720.0, 520.0])
            .vscroll(true)
            .show(ctx, |ui| self.contents(ui, &mut actions));
        self.open = open;
        actions
    }

    fn contents(&mut self, ui: &mut egui::Ui, actions: &mut Vec<ModelsAction>) {
        if let Some(e) = &self.start_error {
            ui.colored_label(Color32::LIGHT_RED, e);
            return;
        }
        let Some(manager) = &self.manager else { return };
        ui.horizontal(|ui| {
            ui.label(RichText::new("Models are searched in these folders, in order:").weak());
            if ui.small_button("Check again").clicked() {
                manager.refresh();
            }
        });
        for root in &self.roots {
            ui.label(RichText::new(format!("  {}", root.display())).monospace().small());
        }
        ui.separator();
        let progress = manager.progress();
        for row in &self.rows {
            ui.push_id(&row.name, |ui| {
                model_row(ui, manager, row, progress.as_ref(), self.in_use.holds(row), actions);
                if let Some((text, error)) = self.messages.get(&row.name) {
                    let color = if *error { Color32::LIGHT_RED } else { ui.visuals().weak_text_color() };
                    ui.label(RichText::new(text).color(color).small());
                }
                let manual = self.help.get(&row.name).unwrap_or(&row.manual);
                let show_manual = !row.bundled && !matches!(row.status, Some(ModelStatus::Installed { .. }));
                if show_manual {
                    egui::CollapsingHeader::new("Download by hand (offline)")
                        .default_open(self.help.contains_key(&row.name))
                        .show(ui, |ui| {
                            ui.add(egui::Label::new(RichText::new(manual).monospace().small()).selectable(true));
                        });
                }
            });
            ui.separator();
        }
    }
}

fn status_text(row: &ModelRow) -> (String, Color32) {
    match &row.status {
        None => ("checking...".into(), Color32::GRAY),
        Some(ModelStatus::Installed { .. }) => ("installed".into(), Color32::LIGHT_GREEN),
        Some(ModelStatus::Missing { .. }) if row.bundled => {
            ("missing (bundled with the source; see README)".into(), Color32::YELLOW)
        }
        Some(ModelStatus::Missing { files }) => (format!("missing: {}", files.join(", ")), Color32::YELLOW),
        Some(ModelStatus::Corrupt { file, reason, .. }) => (format!("corrupt: {file} {reason}"), Color32::LIGHT_RED),
    }
}

fn progress_text(p: &Progress) -> String {
    let done = human_bytes(p.done);
    let of = p.total.map(|t| format!(" of {}", human_bytes(t))).unwrap_or_default();
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "for display")]
    let rate = human_bytes(p.rate.max(0.0) as u64);
    let eta = p.eta.map(|e| format!(" - {} left", human_duration(e))).unwrap_or_default();
    format!("{} ({}/{}): {done}{of} - {rate}/s{eta}", p.file, p.file_index + 1, p.file_count)
}

fn model_row(
    ui: &mut egui::Ui,
    manager: &ModelManager,
    row: &ModelRow,
    progress: Option<&Progress>,
    in_use: bool,
    actions: &mut Vec<ModelsAction>,
) {
    let busy = manager.busy(&row.name);
    ui.horizontal(|ui| {
        ui.label(RichText::new(&row.name).strong().monospace());
        if in_use {
            ui.label(RichText::new("in use").strong().color(Color32::LIGHT_GREEN))
                .on_hover_text("The next run uses this model");
        }
        let kind = match row.kind {
            ModelKind::Clip => "CLIP",
            ModelKind::Vqgan => "VQGAN",
        };
        ui.label(RichText::new(format!("{kind} - {}", row.size)).weak());
        let (text, color) = status_text(row);
        ui.label(RichText::new(text).color(color));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if busy {
                if ui.button("Cancel").on_hover_text(format!("Stop downloading {}", row.name)).clicked() {
                    manager.cancel(&row.name);
                }
            } else if matches!(row.status, Some(ModelStatus::Installed { .. })) {
                if ui
                    .add_enabled(!in_use, egui::Button::new("Use"))
                    .on_hover_text(format!("Use {} for the next run", row.name))
                    .clicked()
                {
                    if let Ok(paths) = manager.paths(&row.name) {
                        actions.push(ModelsAction::Use { name: row.name.clone(), paths });
                    }
                }
                if row.kind == ModelKind::Clip
                    && !in_use
                    && ui
                        .button("Also score")
                        .on_hover_text(format!(
                            "Score the next run with {} too, beside the CLIP in use (Settings: its weight)",
                            row.name
                        ))
                        .clicked()
                {
                    if let Ok(ModelPaths::Clip(clip)) = manager.paths(&row.name) {
                        actions.push(ModelsAction::AlsoScore { name: row.name.clone(), clip });
                    }
                }
            } else if !row.bundled
                && row.status.is_some()
                && ui.button("Download").on_hover_text(format!("Download {}", row.name)).clicked()
            {
                manager.download(&row.name);
            }
        });
    });
    ui.label(RichText::new(format!("{} - licence: {}", row.description, row.licence)).small());
    if let Some(ModelStatus::Installed { dir } | ModelStatus::Corrupt { dir, .. }) = &row.status {
        ui.horizontal(|ui| {
            ui.label(RichText::new("Folder:").small());
            ui.add(egui::Label::new(RichText::new(dir.display().to_string()).monospace().small()).selectable(true));
        });
    }
    if busy {
        match progress.filter(|p| p.model == row.name) {
            Some(p) => {
                #[expect(clippy::cast_precision_loss, reason = "a fraction")]
                let fraction = p.total.filter(|t| *t > 0).map_or(0.0, |t| p.done as f32 / t as f32);
                ui.add(egui::ProgressBar::new(fraction).text(progress_text(p)));
            }
            None => {
                ui.label(RichText::new("waiting...").small());
            }
        }
    }
}
