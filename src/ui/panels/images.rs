//! The init-image panel and the target-image panel.

use std::path::PathBuf;

use crate::ui::state::{ImageRow, StudioState};

/// What the image panels ask the app to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageAction {
    OpenInit,
    ClearInit,
    AddTargets,
    TargetsChanged,
    InitWeightChanged,
}

/// Shows the init-image panel.
pub fn init_panel(
    ui: &mut egui::Ui,
    state: &mut StudioState,
    thumb: Option<&egui::TextureHandle>,
    actions: &mut Vec<ImageAction>,
) {
    ui.horizontal(|ui| {
        if ui.button("Open...").clicked() {
            actions.push(ImageAction::OpenInit);
        }
        if state.settings.init_image.is_some() && ui.button("Clear").clicked() {
            actions.push(ImageAction::ClearInit);
        }
    });
    match &state.settings.init_image {
        Some(path) => {
            if let Some(tex) = thumb {
                ui.add(egui::Image::new(tex).max_size(egui::vec2(160.0, 120.0)));
            }
            ui.label(egui::RichText::new(path.display().to_string()).small());
        }
        None => {
            ui.label("Drop an image on the window to start from it.");
        }
    }
    ui.horizontal(|ui| {
        let mut w = state.settings.init_weight as f32;
        if ui.add(egui::Slider::new(&mut w, 0.0..=2.0).step_by(0.05).text("init weight")).changed() {
            state.settings.init_weight = f64::from(w);
            actions.push(ImageAction::InitWeightChanged);
        }
    });
}

/// Shows the target-image panel.
pub fn target_panel(ui: &mut egui::Ui, state: &mut StudioState, actions: &mut Vec<ImageAction>) {
    let mut remove = None;
    let mut changed = false;
    for (i, row) in state.targets.iter_mut().enumerate() {
        ui.push_id(("target", i), |ui| {
            ui.horizontal(|ui| {
                let name = row
                    .path
                    .file_name()
                    .map_or_else(|| row.path.display().to_string(), |n| n.to_string_lossy().into_owned());
                ui.label(name).on_hover_text(row.path.display().to_string());
                changed |=
                    ui.add(egui::Slider::new(&mut row.weight, -2.0..=2.0).step_by(0.05).text("weight")).changed();
                if ui.small_button("x").clicked() {
                    remove = Some(i);
                }
            });
        });
    }
    if let Some(i) = remove {
        state.targets.remove(i);
        changed = true;
    }
    ui.horizontal(|ui| {
        if ui.button("Add...").clicked() {
            actions.push(ImageAction::AddTargets);
        }
        if !state.targets.is_empty() && ui.button("Clear").clicked() {
            state.targets.clear();
            changed = true;
        }
    });
    if changed {
        actions.push(ImageAction::TargetsChanged);
    }
}

/// Adds target images.
pub fn add_targets(state: &mut StudioState, paths: Vec<PathBuf>) {
    state.targets.extend(paths.into_iter().map(|path| ImageRow { path, weight: 1.0 }));
}
