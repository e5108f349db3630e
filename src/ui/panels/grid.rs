//! The X/Y grid dialog: two axes over settings, each a key and its values typed as text;
//! it fills the queue with one job a cell, and the contact sheet is drawn when the last
//! one ends (as `clipcanvas batch` does with a file's `[grid]`).

/// The settings an axis is usually over, in the key's menu (any key of a settings file
/// can be typed).
pub const KEYS: [&str; 14] = [
    "seed",
    "lr",
    "cutn",
    "iterations",
    "optimizer",
    "augments",
    "init_weight",
    "prompt",
    "generator",
    "clip",
    "vqgan",
    "tv_weight",
    "cut_pow",
    "looks.saturation",
];

/// What the dialog asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridRequest {
    pub x: (String, String),
    pub y: Option<(String, String)>,
}

/// The dialog's fields.
#[derive(Debug, Clone)]
pub struct GridDialog {
    pub open: bool,
    pub x_key: String,
    pub x_values: String,
    /// A second axis is used.
    pub two: bool,
    pub y_key: String,
    pub y_values: String,
    /// Why the last request was refused.
    pub error: Option<String>,
}

impl Default for GridDialog {
    fn default() -> Self {
        Self {
            open: false,
            x_key: "seed".into(),
            x_values: "1, 2, 3".into(),
            two: false,
            y_key: "lr".into(),
            y_values: "0.05, 0.1".into(),
            error: None,
        }
    }
}

impl GridDialog {
    /// Draws the dialog; returns a request when "Queue the cells" is pressed.
    pub fn show(&mut self, ctx: &egui::Context) -> Option<GridRequest> {
        let mut open = self.open;
        let mut request = None;
        egui::Window::new("X/Y grid").open(&mut open).collapsible(false).default_width(460.0).show(ctx, |ui| {
            ui.label("One run a cell, with the prompts and settings of the editor; values separated by commas.");
            ui.label("The prompt key searches for its first value in the prompts and puts each value in its place.");
            axis(ui, "x", &mut self.x_key, &mut self.x_values);
            ui.checkbox(&mut self.two, "Second axis (y)");
            if self.two {
                axis(ui, "y", &mut self.y_key, &mut self.y_values);
            }
            if let Some(e) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            if ui.button("Queue the cells").clicked() {
                request = Some(GridRequest {
                    x: (self.x_key.clone(), self.x_values.clone()),
                    y: self.two.then(|| (self.y_key.clone(), self.y_values.clone())),
                });
            }
        });
        self.open = open && self.open;
        request
    }
}

fn axis(ui: &mut egui::Ui, name: &str, key: &mut String, values: &mut String) {
    ui.horizontal(|ui| {
        // Any settings-file key can be typed (dotted inside tables: looks.symmetry); the
        // menu holds the usual ones.
        let label = ui.label(format!("{name} setting"));
        ui.add(egui::TextEdit::singleline(key).desired_width(120.0)).labelled_by(label.id);
        ui.menu_button("v", |ui| {
            for k in KEYS {
                if ui.button(k).clicked() {
                    *key = k.to_owned();
                    ui.close();
                }
            }
        })
        .response
        .on_hover_text("The usual settings");
        let label = ui.label(format!("{name} values"));
        ui.add(egui::TextEdit::singleline(values).desired_width(200.0)).labelled_by(label.id);
    });
}
