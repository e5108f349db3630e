//! The loss plot: one series per prompt row, named by the row's text as it reads now and
//! drawn in a colour fixed to the row, however its text is edited during a run; one
//! series per other term of the loss (image and noise prompts, init, tv). The legend
//! sits beside the data, and before any run a hint takes the empty axes' place.

use std::collections::HashMap;

use egui::{Color32, RichText};

use crate::ui::state::PromptRow;

/// Colours of the prompt rows, by row id; distinct on dark and light themes.
const ROW_COLOURS: [Color32; 8] = [
    Color32::from_rgb(86, 156, 255),
    Color32::from_rgb(255, 150, 60),
    Color32::from_rgb(90, 200, 110),
    Color32::from_rgb(230, 90, 160),
    Color32::from_rgb(200, 180, 60),
    Color32::from_rgb(150, 110, 230),
    Color32::from_rgb(60, 200, 200),
    Color32::from_rgb(220, 80, 70),
];

/// Colours of the other terms, in the order they first appear.
const TERM_COLOURS: [Color32; 4] = [
    Color32::from_rgb(160, 160, 160),
    Color32::from_rgb(120, 140, 110),
    Color32::from_rgb(170, 130, 110),
    Color32::from_rgb(110, 130, 170),
];

/// What a series follows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// A prompt row, by id.
    Row(u32),
    /// Another term, by the engine's label.
    Term(String),
}

#[derive(Debug, Clone)]
struct Series {
    key: Key,
    colour: Color32,
    points: Vec<[f64; 2]>,
}

/// The loss of each term over a run's iterations.
#[derive(Debug, Clone, Default)]
pub struct LossPlot {
    series: Vec<Series>,
    /// The engine's label of every prompt text sent during this run, with its row's id.
    row_of_label: HashMap<String, u32>,
    terms: usize,
    /// Vertical marks: where a branch started, and its name.
    marks: Vec<(f64, String)>,
}

impl LossPlot {
    /// Forgets the run.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Notes the prompt rows sent to the engine: their texts are the labels of the
    /// losses that come back, now and for the steps already under way.
    pub fn note_sent<'a>(&mut self, rows: impl Iterator<Item = &'a PromptRow>) {
        for row in rows {
            self.row_of_label.insert(row.loss_label(), row.id);
        }
    }

    /// Adds one step's losses.
    pub fn record(&mut self, iteration: usize, losses: &[(String, f64)]) {
        #[expect(clippy::cast_precision_loss, reason = "a plot axis")]
        let x = iteration as f64;
        for (label, loss) in losses {
            let key = self.row_of_label.get(label).map_or_else(|| Key::Term(label.clone()), |&id| Key::Row(id));
            if let Some(s) = self.series.iter_mut().find(|s| s.key == key) {
                s.points.push([x, *loss]);
                continue;
            }
            let colour = match &key {
                Key::Row(id) => ROW_COLOURS[*id as usize % ROW_COLOURS.len()],
                Key::Term(_) => {
                    self.terms += 1;
                    TERM_COLOURS[(self.terms - 1) % TERM_COLOURS.len()]
                }
            };
            self.series.push(Series { key, colour, points: vec![[x, *loss]] });
        }
    }

    /// Marks iteration `x` (a branch's start) with `name`.
    pub fn mark(&mut self, x: usize, name: String) {
        #[expect(clippy::cast_precision_loss, reason = "a plot axis")]
        self.marks.push((x as f64, name));
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The series' names and colours, in the order they appeared: a prompt row's is its
    /// text now (a removed row keeps the text it was sent with).
    pub fn legend(&self, prompts: &[PromptRow]) -> Vec<(String, Color32)> {
        self.series
            .iter()
            .map(|s| {
                let name = match &s.key {
                    Key::Row(id) => {
                        prompts.iter().find(|r| r.id == *id).map(|r| r.text.trim().to_owned()).or_else(|| {
                            self.row_of_label.iter().find(|(_, v)| **v == *id).map(|(label, _)| label.clone())
                        })
                    }
                    Key::Term(label) => Some(label.clone()),
                };
                (name.unwrap_or_default(), s.colour)
            })
            .collect()
    }

    /// Draws the legend (a column at the left) and the data; `min_height` keeps the plot
    /// readable in a short panel.
    pub fn show(&self, ui: &mut egui::Ui, prompts: &[PromptRow], min_height: f32) {
        if self.series.is_empty() {
            ui.add_space(8.0);
            ui.label(RichText::new("The loss of each prompt is plotted here once a run starts.").weak());
            return;
        }
        let height = ui.available_height().max(min_height);
        let legend = self.legend(prompts);
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                ui.set_width(180.0);
                egui::ScrollArea::vertical().id_salt("legend").max_height(height).show(ui, |ui| {
                    for (name, colour) in &legend {
                        ui.horizontal(|ui| {
                            let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 4.0), egui::Sense::hover());
                            ui.painter().rect_filled(rect, 1.0, *colour);
                            ui.add(egui::Label::new(RichText::new(name).small()).truncate()).on_hover_text(name);
                        });
                    }
                });
            });
            egui_plot::Plot::new("losses").height(height).x_axis_label("iteration").y_axis_label("loss").show(
                ui,
                |plot| {
                    for (x, name) in &self.marks {
                        plot.vline(egui_plot::VLine::new(name.clone(), *x).color(Color32::GRAY));
                    }
                    for (s, (name, _)) in self.series.iter().zip(&legend) {
                        plot.line(
                            egui_plot::Line::new(name.clone(), egui_plot::PlotPoints::from(s.points.clone()))
                                .color(s.colour),
                        );
                    }
                },
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u32, text: &str) -> PromptRow {
        PromptRow { id, ..PromptRow::new(text) }
    }

    #[test]
    fn a_row_keeps_its_series_and_colour_while_its_text_is_edited() {
        let mut plot = LossPlot::default();
        let mut rows = vec![row(1, "a yell"), row(2, "blue")];
        plot.note_sent(rows.iter());
        plot.record(0, &[("a yell".into(), 0.9), ("blue".into(), 0.8), ("init".into(), 0.1)]);
        rows[0].text = "a yellow star".into();
        plot.note_sent(rows.iter());
        // A step under way still reports the old text; later ones the new.
        plot.record(1, &[("a yell".into(), 0.85), ("blue".into(), 0.79)]);
        plot.record(2, &[("a yellow star".into(), 0.7), ("blue".into(), 0.78)]);
        let legend = plot.legend(&rows);
        let names: Vec<&str> = legend.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a yellow star", "blue", "init"]);
        assert_eq!(plot.series[0].points.len(), 3);
        // Colours follow the row, not the order series appear in.
        let mut other = LossPlot::default();
        other.note_sent(rows[1..].iter());
        other.record(0, &[("blue".into(), 0.8)]);
        assert_eq!(other.legend(&rows)[0].1, legend[1].1);
        assert_ne!(legend[0].1, legend[1].1);
    }

    #[test]
    fn a_removed_row_keeps_the_text_it_was_sent_with() {
        let mut plot = LossPlot::default();
        let rows = [row(3, "red")];
        plot.note_sent(rows.iter());
        plot.record(0, &[("red".into(), 0.9)]);
        assert_eq!(plot.legend(&[])[0].0, "red");
    }
}
