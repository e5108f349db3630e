//! The queue panel: the jobs waiting, the one running with its progress, and those done
//! with their thumbnails; pause, "Generate forever", and each job's reorder, duplicate
//! and cancel.

use crate::settings::queue::{JobStatus, Queue};
use crate::ui::panels::gallery::Thumbs;

/// What the user asked of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    /// Add the editor's settings as a job.
    Add,
    /// Open the X/Y grid dialog.
    Grid,
    SetPaused(bool),
    SetForever(bool),
    Up(u64),
    Down(u64),
    Duplicate(u64),
    /// Take a waiting job out, or stop the running one.
    Cancel(u64),
    /// Open a finished job's run (settings, image and frames).
    Open(u64),
    ClearEnded,
}

/// Draws the panel. `progress` is the running job's iteration and total.
pub fn show(
    ui: &mut egui::Ui,
    queue: &Queue,
    progress: Option<(usize, usize)>,
    thumbs: &mut Thumbs,
) -> Vec<QueueAction> {
    let mut actions = Vec::new();
    ui.horizontal_wrapped(|ui| {
        if ui
            .button("Add to queue")
            .on_hover_text("These prompts and settings as a job, run after the others")
            .clicked()
        {
            actions.push(QueueAction::Add);
        }
        if ui
            .button("X/Y grid...")
            .on_hover_text("Jobs over two axes of settings, with a labelled contact sheet")
            .clicked()
        {
            actions.push(QueueAction::Grid);
        }
        let mut paused = queue.paused;
        if ui.checkbox(&mut paused, "Paused").on_hover_text("No new job starts; the one running goes on").changed() {
            actions.push(QueueAction::SetPaused(paused));
        }
        let mut forever = queue.forever;
        if ui
            .checkbox(&mut forever, "Generate forever")
            .on_hover_text("When the queue runs dry, its last job comes again with a new seed")
            .changed()
        {
            actions.push(QueueAction::SetForever(forever));
        }
    });
    if queue.jobs.is_empty() {
        ui.weak("No jobs. Add to queue takes the settings above as a job.");
        return actions;
    }
    let ended = queue.jobs.iter().filter(|j| j.status.ended()).count();
    ui.horizontal(|ui| {
        ui.label(format!("{} waiting or running, {ended} done", queue.pending()));
        if ended > 0 && ui.small_button("Clear done").on_hover_text("Their runs stay in the history").clicked() {
            actions.push(QueueAction::ClearEnded);
        }
    });
    egui::ScrollArea::vertical().id_salt("queue").max_height(240.0).show(ui, |ui| {
        for (i, job) in queue.jobs.iter().enumerate() {
            ui.horizontal(|ui| {
                let thumb = job.folder.as_deref().filter(|_| job.status.ended()).and_then(|f| thumbs.get(f));
                match thumb {
                    Some(t) => {
                        let image = egui::Image::new(t).fit_to_exact_size(egui::vec2(28.0, 28.0));
                        if ui.add(egui::Button::image(image)).on_hover_text("Open this run").clicked() {
                            actions.push(QueueAction::Open(job.id));
                        }
                    }
                    None => {
                        ui.add_space(36.0);
                    }
                }
                let state = match &job.status {
                    JobStatus::Waiting => "waiting".to_owned(),
                    JobStatus::Running => match progress {
                        Some((it, total)) => format!("{it}/{total}"),
                        None => "starting".to_owned(),
                    },
                    JobStatus::Done => "done".to_owned(),
                    JobStatus::Stopped => "stopped".to_owned(),
                    JobStatus::Failed { .. } => "failed".to_owned(),
                };
                let text = format!("{}. [{state}] {}", i + 1, queue.job_label(job));
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let name = |what: &str| format!("{what} job {}", i + 1);
                    let cancel = if job.status == JobStatus::Running { "Stop" } else { "Cancel" };
                    if !job.status.ended() && small(ui, "x", &name(cancel)).clicked() {
                        actions.push(QueueAction::Cancel(job.id));
                    }
                    if small(ui, "+", &name("Duplicate")).clicked() {
                        actions.push(QueueAction::Duplicate(job.id));
                    }
                    if small(ui, "v", &name("Move down")).clicked() {
                        actions.push(QueueAction::Down(job.id));
                    }
                    if small(ui, "^", &name("Move up")).clicked() {
                        actions.push(QueueAction::Up(job.id));
                    }
                    // The line takes what is left, cut short with "..." (in full on hover).
                    let size = egui::vec2(ui.available_width(), ui.spacing().interact_size.y);
                    ui.allocate_ui_with_layout(size, egui::Layout::left_to_right(egui::Align::Center), |ui| {
                        let label = ui.add(egui::Label::new(text.as_str()).truncate());
                        match &job.status {
                            JobStatus::Failed { reason } => label.on_hover_text(format!("{text}\n{reason}")),
                            _ => label.on_hover_text(text.as_str()),
                        };
                    });
                });
            });
        }
    });
    actions
}

/// A small button whose hover text is also its name for screen readers (and tests).
fn small(ui: &mut egui::Ui, text: &str, name: &str) -> egui::Response {
    let r = ui.small_button(text).on_hover_text(name);
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, name));
    r
}
