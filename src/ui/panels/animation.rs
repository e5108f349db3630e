//! The Animation panel: frames and speed, the camera's and the run's keyframe schedules
//! (a text field each, in Deforum's syntax, with a small plot of its values over the
//! frames and its error named when it does not parse), camera presets, the deflicker
//! options, and the buttons that preview the motion, render and export.

use std::collections::BTreeMap;

use egui::{Color32, RichText};
use egui_plot::{Line, Plot, PlotPoints};

use crate::settings::animation::{AnimationSettings, Border};
use crate::settings::schedule::{Easing, Schedule};

/// The scheduled values, in the order the table shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Zoom,
    Angle,
    TranslationX,
    TranslationY,
    IterationsPerFrame,
    InitWeight,
    Lr,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Zoom,
        Field::Angle,
        Field::TranslationX,
        Field::TranslationY,
        Field::IterationsPerFrame,
        Field::InitWeight,
        Field::Lr,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Field::Zoom => "Zoom",
            Field::Angle => "Angle",
            Field::TranslationX => "Pan x",
            Field::TranslationY => "Pan y",
            Field::IterationsPerFrame => "Iterations",
            Field::InitWeight => "Init weight",
            Field::Lr => "Learning rate",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Field::Zoom => "scale per frame about the centre; above 1 zooms in",
            Field::Angle => "degrees per frame, counter-clockwise",
            Field::TranslationX => "pixels per frame, right is positive",
            Field::TranslationY => "pixels per frame, down is positive",
            Field::IterationsPerFrame => "iterations each frame after the first (the first takes the run's)",
            Field::InitWeight => "how strongly each frame holds on to the warped previous one",
            Field::Lr => "the learning rate of each frame",
        }
    }

    fn get(self, a: &AnimationSettings) -> &Schedule {
        match self {
            Field::Zoom => &a.zoom,
            Field::Angle => &a.angle,
            Field::TranslationX => &a.translation_x,
            Field::TranslationY => &a.translation_y,
            Field::IterationsPerFrame => &a.iterations_per_frame,
            Field::InitWeight => &a.init_weight,
            Field::Lr => &a.lr,
        }
    }

    fn get_mut(self, a: &mut AnimationSettings) -> &mut Schedule {
        match self {
            Field::Zoom => &mut a.zoom,
            Field::Angle => &mut a.angle,
            Field::TranslationX => &mut a.translation_x,
            Field::TranslationY => &mut a.translation_y,
            Field::IterationsPerFrame => &mut a.iterations_per_frame,
            Field::InitWeight => &mut a.init_weight,
            Field::Lr => &mut a.lr,
        }
    }
}

/// Camera presets: (name, zoom, angle, pan x, pan y).
pub const PRESETS: [(&str, &str, &str, &str, &str); 4] = [
    ("Slow zoom in", "0:(1.0), 10:(1.02)", "0", "0", "0"),
    ("Spiral", "1.03", "2", "0", "0"),
    ("Pan left", "1", "0", "-2", "0"),
    ("Still", "1", "0", "0", "0"),
];

/// The text being typed in each schedule field, with its parse error and its values
/// over the frames (recomputed when a text, the frame count or the easing changes).
#[derive(Debug, Clone, Default)]
pub struct AnimationEditor {
    texts: Vec<String>,
    errors: Vec<Option<String>>,
    values: Vec<Vec<[f64; 2]>>,
    /// What the values were computed for: the texts, the frames and the easing.
    computed_for: Option<(Vec<String>, usize, Easing)>,
    /// Each prompt row's weight schedule as typed (by row id), with its error.
    weights: BTreeMap<u32, (String, Option<String>)>,
}

impl AnimationEditor {
    /// Takes the texts from the settings (on first use, and after settings are restored).
    pub fn load(&mut self, a: &AnimationSettings) {
        self.texts = Field::ALL.iter().map(|f| f.get(a).text().to_owned()).collect();
        self.errors = vec![None; Field::ALL.len()];
        self.computed_for = None;
    }

    /// Whether the texts are those of `a` (a restore replaced the settings otherwise).
    fn matches(&self, a: &AnimationSettings) -> bool {
        self.texts.len() == Field::ALL.len()
            && Field::ALL
                .iter()
                .zip(&self.texts)
                .zip(&self.errors)
                .all(|((f, t), e)| e.is_some() || f.get(a).text() == t)
    }

    /// The first field that does not parse, with its error.
    pub fn first_error(&self) -> Option<String> {
        Field::ALL
            .iter()
            .zip(&self.errors)
            .find_map(|(f, e)| e.as_ref().map(|e| format!("{}: {e}", f.label().to_lowercase())))
            .or_else(|| self.weights.values().find_map(|(_, e)| e.as_ref().map(|e| format!("prompt weight: {e}"))))
    }

    fn set_text(&mut self, a: &mut AnimationSettings, i: usize, text: String) {
        match Schedule::parse(&text) {
            Ok(s) => {
                *Field::ALL[i].get_mut(a) = s;
                self.errors[i] = None;
            }
            Err(e) => self.errors[i] = Some(e),
        }
        self.texts[i] = text;
    }

    fn refresh_values(&mut self, a: &AnimationSettings) {
        let key = (self.texts.clone(), a.frames, a.interpolation);
        if self.computed_for.as_ref() == Some(&key) {
            return;
        }
        self.values = Field::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if self.errors[i].is_some() {
                    return Vec::new();
                }
                match f.get(a).values(a.frames.min(10_000), a.interpolation) {
                    Ok(v) => {
                        #[expect(clippy::cast_precision_loss, reason = "frame numbers are small")]
                        let points = v.iter().enumerate().map(|(t, y)| [t as f64, *y]).collect();
                        points
                    }
                    Err(e) => {
                        self.errors[i] = Some(e);
                        Vec::new()
                    }
                }
            })
            .collect();
        self.computed_for = Some(key);
    }
}

/// What the user asked of the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnimationAction {
    Preview,
    Render,
    Export { video: bool },
}

/// A prompt row as the panel lists it: its id, its text and its slider's weight.
pub type RowInfo = (u32, String, f32);

/// Draws the panel. `rows`: the prompt rows a run sends, whose weights can follow
/// schedules (`weights`, by row id); `running`: a run or render is going (Render waits);
/// `frames`: how many finished frames there are to export.
pub fn show(
    ui: &mut egui::Ui,
    a: &mut AnimationSettings,
    weights: &mut BTreeMap<u32, Schedule>,
    rows: &[RowInfo],
    editor: &mut AnimationEditor,
    running: bool,
    frames: usize,
) -> Option<AnimationAction> {
    if !editor.matches(a) {
        editor.load(a);
    }
    let mut action = None;
    ui.horizontal(|ui| {
        let l = ui.label("Frames");
        ui.add(egui::DragValue::new(&mut a.frames).range(1..=crate::settings::animation::MAX_FRAMES)).labelled_by(l.id);
        let l = ui.label("fps");
        ui.add(egui::DragValue::new(&mut a.fps).range(1.0..=60.0).speed(0.2)).labelled_by(l.id);
    });
    ui.horizontal(|ui| {
        ui.label("Camera:");
        for (name, zoom, angle, tx, ty) in PRESETS {
            if ui.small_button(name).clicked() {
                for (field, text) in [(0, zoom), (1, angle), (2, tx), (3, ty)] {
                    editor.set_text(a, field, text.to_owned());
                }
            }
        }
    });
    editor.refresh_values(a);
    egui::Grid::new("schedules").num_columns(3).spacing([6.0, 4.0]).show(ui, |ui| {
        for (i, field) in Field::ALL.iter().enumerate() {
            let l = ui.label(field.label()).on_hover_text(field.hint());
            let mut text = editor.texts[i].clone();
            let bad = editor.errors[i].clone();
            let mut edit = egui::TextEdit::singleline(&mut text).desired_width(170.0);
            if bad.is_some() {
                edit = edit.text_color(Color32::from_rgb(230, 80, 80));
            }
            let r = ui
                .add_sized([170.0, 20.0], edit)
                .labelled_by(l.id)
                .on_hover_text(bad.as_deref().unwrap_or("a number, or keyframes like 0:(1.0), 30:(1.04)"));
            if r.changed() {
                editor.set_text(a, i, text);
            }
            curve(ui, &format!("curve {i}"), editor.values.get(i).map_or(&[][..], Vec::as_slice));
            ui.end_row();
        }
    });
    prompt_weights(ui, weights, rows, editor);
    if let Some(e) = editor.first_error() {
        ui.label(RichText::new(e).color(Color32::from_rgb(230, 80, 80)).small());
    }
    ui.horizontal(|ui| {
        let l = ui.label("Between keyframes");
        egui::ComboBox::from_id_salt("easing").selected_text(a.interpolation.name()).show_ui(ui, |ui| {
            for e in Easing::ALL {
                ui.selectable_value(&mut a.interpolation, e, e.name());
            }
        });
        let _ = l;
        let l = ui.label("Edges");
        egui::ComboBox::from_id_salt("border").selected_text(a.border.name()).show_ui(ui, |ui| {
            for b in [Border::Replicate, Border::Wrap] {
                ui.selectable_value(&mut a.border, b, b.name());
            }
        });
        let _ = l;
    });
    ui.horizontal(|ui| {
        ui.checkbox(&mut a.color_coherence, "Colour coherence")
            .on_hover_text("Each frame keeps the first frame's colour statistics (deflicker)");
        let l = ui.label("Smoothing");
        ui.add(egui::Slider::new(&mut a.latent_smoothing, 0.0..=0.9).fixed_decimals(2))
            .labelled_by(l.id)
            .on_hover_text("A moving average of the latent over frames (deflicker; best for slow moves)");
    });
    let error = editor.first_error();
    ui.horizontal(|ui| {
        let why = error.as_deref().unwrap_or("warp the first image along the camera path, without optimising");
        if ui.add_enabled(error.is_none(), egui::Button::new("Preview motion")).on_hover_text(why).clicked() {
            action = Some(AnimationAction::Preview);
        }
        let why = match (&error, running) {
            (Some(e), _) => e.as_str(),
            (None, true) => "a run is going: stop it first",
            (None, false) => "render the frames with the prompts and settings",
        };
        let render = egui::Button::new(RichText::new("Render animation").strong());
        if ui.add_enabled(error.is_none() && !running, render).on_hover_text(why).clicked() {
            action = Some(AnimationAction::Render);
        }
    });
    ui.horizontal(|ui| {
        let enabled = frames > 0;
        if ui.add_enabled(enabled, egui::Button::new("Export GIF")).clicked() {
            action = Some(AnimationAction::Export { video: false });
        }
        if ui.add_enabled(enabled, egui::Button::new("Export MP4")).on_hover_text("needs ffmpeg").clicked() {
            action = Some(AnimationAction::Export { video: true });
        }
        ui.label(format!("{frames} frames"));
    });
    action
}

/// A weight schedule per prompt row ("weight of …"); an empty field keeps the row's
/// slider. Story mode's stages take turns over the frames.
fn prompt_weights(
    ui: &mut egui::Ui,
    weights: &mut BTreeMap<u32, Schedule>,
    rows: &[RowInfo],
    editor: &mut AnimationEditor,
) {
    ui.collapsing("Prompt weights over the frames", |ui| {
        if rows.is_empty() {
            ui.label("No prompts yet.");
        }
        for (id, text, weight) in rows {
            let (typed, error) = editor
                .weights
                .entry(*id)
                .or_insert_with(|| (weights.get(id).map(|s| s.text().to_owned()).unwrap_or_default(), None));
            ui.horizontal(|ui| {
                let mut short: String = text.chars().take(24).collect();
                if text.chars().count() > 24 {
                    short.push('…');
                }
                let l = ui.label(format!("weight of \"{short}\""));
                let mut edit = egui::TextEdit::singleline(typed).desired_width(150.0).hint_text(format!("{weight}"));
                if error.is_some() {
                    edit = edit.text_color(Color32::from_rgb(230, 80, 80));
                }
                let r = ui.add(edit).labelled_by(l.id).on_hover_text(
                    error.as_deref().unwrap_or("a schedule for this prompt's weight; empty keeps the slider's"),
                );
                if r.changed() {
                    if typed.trim().is_empty() {
                        weights.remove(id);
                        *error = None;
                    } else {
                        match Schedule::parse(typed) {
                            Ok(s) => {
                                weights.insert(*id, s);
                                *error = None;
                            }
                            Err(e) => *error = Some(e),
                        }
                    }
                }
            });
        }
        ui.label(RichText::new("Story mode's stages (Prompts) take turns over the frames.").small());
    });
}

/// A schedule's values over the frames, as a small line plot.
fn curve(ui: &mut egui::Ui, id: &str, points: &[[f64; 2]]) {
    Plot::new(id)
        .height(28.0)
        .width(100.0)
        .show_axes(false)
        .show_grid(false)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .show_x(true)
        .show_y(true)
        .show(ui, |plot| {
            if !points.is_empty() {
                plot.line(Line::new("", PlotPoints::from(points.to_vec())));
            }
        });
}
