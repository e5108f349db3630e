//! The prompt editor: rows of text, weight (−2…2, negative shown in red), stop and an
//! enable toggle; add, remove, reorder; a region (a mask painted on the canvas, see
//! `mask.rs`) for a row; modifier chips; the story-mode editor.

use egui::{Color32, RichText};

use super::mask::MaskBrush;
use crate::ui::state::{PromptRow, StudioState};

/// The modifier chips, from assets/modifiers.txt.
pub fn modifiers() -> Vec<&'static str> {
    include_str!("../../../assets/modifiers.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Where the id of the prompt row last typed in is kept (the modifier chips' target).
fn last_row_id() -> egui::Id {
    egui::Id::unique("last-prompt-row")
}

/// A row's region controls: "Region" to paint one; with one, Paint (the brush on this
/// row), inside or outside, how much it covers, and remove. Sets `paint` to the row's
/// index when the brush should start on it.
fn region_line(
    ui: &mut egui::Ui,
    row: &mut PromptRow,
    brush: &mut MaskBrush,
    i: usize,
    paint: &mut Option<usize>,
) -> bool {
    let mut changed = false;
    let painting = brush.target.is_some() && brush.target == Some(row.id);
    ui.horizontal(|ui| {
        let Some(region) = &mut row.region else {
            if ui
                .small_button("Region...")
                .on_hover_text("Paint on the canvas where this prompt applies; it takes effect at the next Start")
                .clicked()
            {
                *paint = Some(i);
            }
            return;
        };
        if ui.selectable_label(painting, "Paint").on_hover_text("Paint this prompt's region on the canvas").clicked() {
            if painting {
                brush.target = None;
            } else {
                *paint = Some(i);
            }
        }
        changed |=
            ui.selectable_value(&mut region.outside, false, "inside").on_hover_text("Scored inside the mask").changed();
        changed |= ui
            .selectable_value(&mut region.outside, true, "outside")
            .on_hover_text("Scored outside the mask")
            .changed();
        let share = region.mask.coverage() * 100.0;
        let text = format!("{share:.0}% masked");
        if region.mask.covered() == 0 {
            ui.label(RichText::new(text).color(Color32::from_rgb(230, 90, 80)))
                .on_hover_text("Paint the region on the canvas");
        } else {
            ui.label(text);
        }
        if ui.small_button("no region").on_hover_text("Score this prompt on the whole canvas again").clicked() {
            row.region = None;
            if painting {
                brush.target = None;
            }
            changed = true;
        }
    });
    changed
}

/// Shows the editor; returns true if the prompts changed.
pub fn show(ui: &mut egui::Ui, state: &mut StudioState, brush: &mut MaskBrush) -> bool {
    let mut changed = false;
    let mut remove = None;
    let mut paint = None;
    let mut swap = None;
    let count = state.prompts.len();
    for (i, row) in state.prompts.iter_mut().enumerate() {
        ui.push_id(("prompt", i), |ui| {
            ui.horizontal(|ui| {
                changed |= ui.checkbox(&mut row.enabled, "").on_hover_text("Use this prompt").changed();
                let edit = egui::TextEdit::singleline(&mut row.text)
                    .hint_text("describe the image")
                    .desired_width(f32::INFINITY);
                let edit = ui.add(edit);
                changed |= edit.changed();
                if edit.has_focus() {
                    ui.data_mut(|d| d.insert_temp(last_row_id(), row.id));
                }
            });
            ui.horizontal(|ui| {
                let colour = if row.weight < 0.0 { Color32::from_rgb(230, 90, 80) } else { ui.visuals().text_color() };
                let name = if row.weight < 0.0 { "avoid" } else { "weight" };
                let slider = egui::Slider::new(&mut row.weight, -2.0..=2.0)
                    .step_by(0.05)
                    .text(RichText::new(name).color(colour));
                changed |=
                    ui.add(slider).on_hover_text("Negative weights push the image away from the prompt").changed();
                let mut has_stop = row.stop.is_some();
                let toggle =
                    ui.checkbox(&mut has_stop, "stop").on_hover_text("No gradient once the distance is below this");
                if toggle.changed() {
                    row.stop = has_stop.then_some(0.8);
                    changed = true;
                }
                if let Some(stop) = &mut row.stop {
                    changed |= ui
                        .add(egui::DragValue::new(stop).speed(0.01).range(-2.0..=2.0))
                        .labelled_by(toggle.id)
                        .changed();
                }
                if ui.small_button("up").on_hover_text("Move up").clicked() && i > 0 {
                    swap = Some((i, i - 1));
                }
                if ui.small_button("down").on_hover_text("Move down").clicked() && i + 1 < count {
                    swap = Some((i, i + 1));
                }
                if ui.small_button("x").on_hover_text("Remove").clicked() {
                    remove = Some(i);
                }
            });
            changed |= region_line(ui, row, brush, i, &mut paint);
        });
        ui.separator();
    }
    if let Some(i) = paint {
        state.number_rows();
        if let Some(id) = state.prompts.get(i).map(|r| r.id) {
            brush.start(state, id);
            changed = true;
        }
    }
    if let Some((a, b)) = swap {
        state.prompts.swap(a, b);
        changed = true;
    }
    if let Some(i) = remove {
        state.prompts.remove(i);
        changed = true;
    }
    if ui.button("Add prompt").clicked() {
        state.prompts.push(PromptRow::new(""));
    }
    ui.add_space(4.0);
    ui.collapsing("Modifiers", |ui| {
        ui.label("Click to add to the prompt last typed in (or the first positive one):");
        let last: Option<u32> = ui.data(|d| d.get_temp(last_row_id()));
        ui.horizontal_wrapped(|ui| {
            for m in modifiers() {
                if ui.small_button(m).clicked() {
                    let typed_in = state.prompts.iter().position(|r| Some(r.id) == last && r.id != 0);
                    let first_positive = state.prompts.iter().position(|r| r.enabled && r.weight >= 0.0);
                    match typed_in.or(first_positive).and_then(|i| state.prompts.get_mut(i)) {
                        Some(row) if !row.text.trim().is_empty() => row.text = format!("{}, {m}", row.text.trim_end()),
                        Some(row) => row.text = m.to_owned(),
                        None => state.prompts.push(PromptRow::new(m)),
                    }
                    changed = true;
                }
            }
        });
    });
    ui.collapsing("Story mode", |ui| {
        ui.label("Prompt sets that take turns (\"a | b:0.5\" per line):");
        let mut remove = None;
        for (i, stage) in state.story.iter_mut().enumerate() {
            ui.horizontal(|ui| {
                ui.label(format!("{}.", i + 1));
                changed |= ui.text_edit_singleline(stage).changed();
                if ui.small_button("x").clicked() {
                    remove = Some(i);
                }
            });
        }
        if let Some(i) = remove {
            state.story.remove(i);
            changed = true;
        }
        ui.horizontal(|ui| {
            if ui.button("Add stage").clicked() {
                state.story.push(String::new());
            }
            let l = ui.label("switch every");
            ui.add(egui::DragValue::new(&mut state.settings.story_every).range(1..=10_000)).labelled_by(l.id);
            ui.label("iterations");
        });
    });
    changed
}
