//! The timeline: kept frames as a strip of thumbnails; click one to see it, then
//! "continue from here" branches the run from that frame's latent.

use std::sync::Arc;

use crate::worker::FrameEvent;

/// A kept frame and its thumbnail texture.
pub struct KeptFrame {
    pub frame: Arc<FrameEvent>,
    pub thumb: egui::TextureHandle,
    /// The kept iteration the frame's branch started from; `None` on the run's trunk.
    pub branch: Option<usize>,
}

/// What the user asked of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineAction {
    Show(usize),
    Live,
    BranchFrom(usize),
}

/// Shows the strip; `selected` is the index shown on the canvas (None = live).
pub fn show(ui: &mut egui::Ui, frames: &[KeptFrame], selected: Option<usize>) -> Option<TimelineAction> {
    let mut action = None;
    ui.horizontal(|ui| {
        if ui.selectable_label(selected.is_none(), "live").clicked() {
            action = Some(TimelineAction::Live);
        }
        if let Some(i) = selected {
            if let Some(k) = frames.get(i) {
                if ui.button(format!("Continue from iteration {}", k.frame.iteration)).clicked() {
                    action = Some(TimelineAction::BranchFrom(k.frame.iteration));
                }
            }
        }
        ui.label(format!("{} kept frames", frames.len()));
    });
    egui::ScrollArea::horizontal().id_salt("timeline").show(ui, |ui| {
        ui.horizontal(|ui| {
            for (i, k) in frames.iter().enumerate() {
                // A branch's frames stand apart, after a label naming where it forked.
                let previous = i.checked_sub(1).and_then(|p| frames.get(p)).map(|p| p.branch);
                if let (Some(from), true) = (k.branch, previous != Some(k.branch)) {
                    ui.separator();
                    ui.label(format!("branch from {from}:"));
                }
                let image = egui::Image::new(&k.thumb).fit_to_exact_size(egui::vec2(56.0, 56.0));
                let response = ui
                    .add(egui::Button::image(image).selected(selected == Some(i)))
                    .on_hover_text(format!("iteration {}", k.frame.iteration));
                // Named for screen readers (and tests): "kept frame 50".
                let name = format!("kept frame {}", k.frame.iteration);
                response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
                if response.clicked() {
                    action = Some(TimelineAction::Show(i));
                }
            }
        });
    });
    action
}
