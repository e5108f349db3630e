//! Run settings: models, the generator and its own settings, the looks, size, seed, learning rate, iterations, cutouts, optimiser,
//! augmentations, coarse-to-fine schedule, device, with presets and a memory estimate.

use crate::settings::coarse::{format_schedule, parse_schedule, CoarseStage};
use crate::settings::Augment;
use crate::settings::CutMethod;
use crate::settings::{GeneratorSettings, OneStepSettings, OptimizerKind, Precision, RunSettings, Variation};
use crate::ui::state::memory_estimate;

/// A named preset: size, cutouts, iterations, coarse-to-fine schedule.
type Preset = (&'static str, usize, usize, usize, Vec<CoarseStage>);

/// The presets for the models in use: with the built-in shapes world (`demo`), at the
/// 128² its models were made for ([`RunSettings::shapes_world`] and a quicker and a
/// more thorough one); with real models, at their sizes.
fn presets(demo: bool) -> Vec<Preset> {
    let world = RunSettings::shapes_world();
    if demo {
        vec![
            ("Quick", world.width, 8, 80, vec![CoarseStage { factor: 2, until: 50 }]),
            ("Shapes world", world.width, world.cutn, world.iterations, world.coarse),
            ("Thorough", world.width, 32, 300, vec![CoarseStage { factor: 2, until: 150 }]),
        ]
    } else {
        vec![
            ("Draft", 256, 16, 100, Vec::new()),
            ("Standard", 512, 32, 300, Vec::new()),
            ("Detailed", 512, 64, 500, Vec::new()),
        ]
    }
}

/// Why a size is far from what the models in use were made for, if it is: the shapes
/// world's models know 128², and a run 4× the pixels is slower for nothing but noise.
pub fn size_warning(s: &RunSettings) -> Option<String> {
    let native = RunSettings::shapes_world().width;
    if !s.names_no_models() {
        return None;
    }
    let (w, h) = (s.width, s.height);
    #[expect(clippy::cast_precision_loss, reason = "a ratio shown rounded")]
    let ratio = (w * h) as f64 / (native * native) as f64;
    (!(0.25..=4.0).contains(&ratio)).then(|| {
        format!(
            "The shapes world's models were made for {native}x{native}: at {w}x{h} a run does {ratio:.0}x the \
             work and makes noise, not shapes"
        )
    })
}

/// The CLIPs scoring beside the first (the model manager's "Also score" adds them):
/// each one's weight, and the first's, and a button to leave one out.
fn extra_clips_edit(ui: &mut egui::Ui, s: &mut RunSettings) {
    if s.extra_clips.is_empty() {
        return;
    }
    let l = ui.label("CLIP weight").on_hover_text("The first CLIP's losses are multiplied by this");
    ui.add(egui::DragValue::new(&mut s.clip_weight).speed(0.05).range(0.05..=10.0)).labelled_by(l.id);
    ui.end_row();
    let mut remove = None;
    for (i, clip) in s.extra_clips.iter_mut().enumerate() {
        let name =
            clip.path.file_name().map_or_else(|| clip.path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let l = ui.label(format!("Also: {name}")).on_hover_text(clip.path.display().to_string());
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut clip.weight).speed(0.05).range(0.05..=10.0).prefix("weight "))
                .labelled_by(l.id);
            if ui.small_button("leave out").on_hover_text(format!("Do not score with {name}")).clicked() {
                remove = Some(i);
            }
        });
        ui.end_row();
    }
    if let Some(i) = remove {
        s.extra_clips.remove(i);
        if s.extra_clips.is_empty() {
            s.clip_weight = 1.0;
        }
    }
}

/// A variation of the random start: on or off, its seed and its strength.
fn variation_edit(ui: &mut egui::Ui, s: &mut RunSettings) {
    let l = ui
        .label("Variation")
        .on_hover_text("Start from a mix of this seed's start and another seed's: near neighbours at low strengths");
    ui.horizontal(|ui| {
        let mut on = s.variation.is_some();
        if ui.checkbox(&mut on, "vary").changed() {
            s.variation = on.then(|| Variation { seed: fresh_seed(), strength: 0.1 });
        }
        if let Some(v) = &mut s.variation {
            ui.add_sized([96.0, 18.0], egui::DragValue::new(&mut v.seed).prefix("seed ")).labelled_by(l.id);
            ui.add(egui::Slider::new(&mut v.strength, 0.0..=1.0).fixed_decimals(2).text("strength")).labelled_by(l.id);
        }
    });
    ui.end_row();
}

/// Shows the settings, and the one-step drafts' (`draft`); returns true if the learning
/// rate changed (it steers a live run).
pub fn show(ui: &mut egui::Ui, s: &mut RunSettings, draft: &mut OneStepSettings, new_seed: &mut bool) -> bool {
    let mut lr_changed = false;
    let demo = s.names_no_models();
    let file = |p: &Option<std::path::PathBuf>| {
        p.as_ref().and_then(|p| p.file_name()).map_or_else(|| "-".to_owned(), |n| n.to_string_lossy().into_owned())
    };
    ui.label(if demo {
        "Models in use: the shapes world (built in)".to_owned()
    } else {
        let more = match s.extra_clips.len() {
            0 => String::new(),
            1 => " and 1 more CLIP".to_owned(),
            n => format!(" and {n} more CLIPs"),
        };
        format!("Models in use: VQGAN {}, CLIP {}{more}", file(&s.vqgan), file(&s.clip))
    });
    ui.horizontal(|ui| {
        ui.label("Preset");
        for (name, size, cutn, iterations, coarse) in presets(demo) {
            if ui.small_button(name).clicked() {
                s.width = size;
                s.height = size;
                s.cutn = cutn;
                s.iterations = iterations;
                s.coarse = coarse;
            }
        }
    });
    egui::Grid::new("settings-grid").num_columns(2).spacing([8.0, 4.0]).show(ui, |ui| {
        // Empty paths are the built-in shapes world, and the hints say so.
        let l = ui.label("VQGAN").on_hover_text(
            "Empty with no CLIP: the shapes world's. The pixel and fft generators need none: a CLIP alone will do",
        );
        path_edit(ui, l.id, &mut s.vqgan, "empty: the shapes world's (built in)");
        ui.end_row();
        let l = ui.label("CLIP");
        path_edit(ui, l.id, &mut s.clip, "empty: the shapes world's (built in)");
        ui.end_row();
        extra_clips_edit(ui, s);
        generator_edit(ui, s);
        let l = ui.label("One-step model").on_hover_text(
            "The one-step generator Draft uses (clipcanvas train-onestep makes one); empty: the shapes world's",
        );
        path_edit(ui, l.id, &mut draft.model, "empty: the shapes world's (built in)");
        ui.end_row();
        let l = ui.label("Draft candidates");
        ui.add(egui::DragValue::new(&mut draft.candidates).range(1..=64))
            .labelled_by(l.id)
            .on_hover_text("Drafts drawn for each Draft, ranked by CLIP");
        ui.end_row();
        let l = ui.label("Size");
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut s.width).range(16..=2048).suffix(" w")).labelled_by(l.id);
            ui.add(egui::DragValue::new(&mut s.height).range(16..=2048).suffix(" h")).labelled_by(l.id);
        });
        ui.end_row();
        let l = ui.label("Seed");
        ui.horizontal(|ui| {
            // The button first, so it stays put as the number grows.
            if ui.button("random").on_hover_text("A new random seed").clicked() {
                s.seed = fresh_seed();
            }
            ui.add_sized([96.0, 18.0], egui::DragValue::new(&mut s.seed)).labelled_by(l.id);
            ui.checkbox(new_seed, "new each run").on_hover_text(
                "Start and Draft pick a new seed (shown here; with a variation on, Start picks a new variation \
                 seed); Resume and branches keep the run's own",
            );
        });
        ui.end_row();
        variation_edit(ui, s);
        let l = ui.label("Learning rate");
        lr_changed =
            ui.add(egui::DragValue::new(&mut s.lr).speed(0.005).range(0.001..=2.0)).labelled_by(l.id).changed();
        ui.end_row();
        let l = ui.label("Iterations");
        ui.add(egui::DragValue::new(&mut s.iterations).range(1..=100_000)).labelled_by(l.id);
        ui.end_row();
        let l = ui.label("Cutouts");
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut s.cutn).range(1..=256)).labelled_by(l.id);
            let p = ui.label("pow");
            ui.add(egui::DragValue::new(&mut s.cut_pow).speed(0.05).range(0.1..=4.0)).labelled_by(p.id);
        });
        ui.end_row();
        ui.label("Cut method");
        egui::ComboBox::from_id_salt("cut-method")
            .selected_text(match s.cut_method {
                CutMethod::Notebook => "notebook",
                CutMethod::Pooled => "pooled",
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut s.cut_method, CutMethod::Notebook, "notebook");
                ui.selectable_value(&mut s.cut_method, CutMethod::Pooled, "pooled");
            });
        ui.end_row();
        let l = ui.label("Looks").on_hover_text(
            "Loss weights, 0 is off: colourfulness (negative: toward grey), mirror symmetry left-right and \
             top-bottom, and smoothness (total variation: neighbouring pixels alike)",
        );
        ui.horizontal(|ui| {
            let looks = &mut s.looks;
            for (value, prefix) in [
                (&mut looks.saturation, "saturation "),
                (&mut looks.symmetry, "mirror left-right "),
                (&mut looks.symmetry_vertical, "mirror top-bottom "),
            ] {
                ui.add(egui::DragValue::new(value).speed(0.05).range(-100.0..=100.0).prefix(prefix)).labelled_by(l.id);
            }
            ui.add(egui::DragValue::new(&mut s.tv_weight).speed(0.05).range(0.0..=100.0).prefix("smooth "))
                .labelled_by(l.id);
            ui.checkbox(&mut s.looks.tile, "tile").on_hover_text("Make an image that tiles seamlessly");
        });
        ui.end_row();
        let l = ui.label("Edge").on_hover_text(
            "The border pulled toward a colour (pixray's edge loss): weight, colour, strip width in percent",
        );
        ui.horizontal(|ui| {
            let looks = &mut s.looks;
            ui.add(egui::DragValue::new(&mut looks.edge).speed(0.05).range(0.0..=100.0).prefix("weight "))
                .labelled_by(l.id);
            #[expect(clippy::cast_possible_truncation, reason = "colours in [0, 1]")]
            let mut rgb = looks.edge_color.map(|c| c as f32);
            if ui.color_edit_button_rgb(&mut rgb).changed() {
                looks.edge_color = rgb.map(f64::from);
            }
            ui.add(egui::DragValue::new(&mut looks.edge_thickness).speed(0.5).range(0.0..=45.0).suffix(" %"))
                .labelled_by(l.id);
        });
        ui.end_row();
        let l = ui.label("Palette").on_hover_text(
            "Keep to these colours (pixray's palette loss): its weight, and colours such as \
             \"#000000 #ff0000 white\" or a name: rgb, cmyk, bw, pico8",
        );
        palette_edit(ui, l.id, s);
        ui.end_row();
        let l = ui.label("Coarse start");
        coarse_edit(ui, l.id, s);
        ui.end_row();
        ui.label("Optimiser");
        egui::ComboBox::from_id_salt("optimizer").selected_text(s.optimizer.name()).show_ui(ui, |ui| {
            for k in OptimizerKind::ALL {
                ui.selectable_value(&mut s.optimizer, k, k.name());
            }
        });
        ui.end_row();
        ui.label("Augment");
        // Rows of three: a wrapped layout inside a grid cell overflows into the next row.
        ui.vertical(|ui| {
            for row in Augment::ALL.chunks(3) {
                ui.horizontal(|ui| {
                    for &a in row {
                        let mut on = s.augments.contains(&a);
                        if ui.checkbox(&mut on, a.name()).changed() {
                            if on {
                                s.augments.push(a);
                            } else {
                                s.augments.retain(|x| *x != a);
                            }
                        }
                    }
                });
            }
        });
        ui.end_row();
        let l = ui.label("Device");
        ui.add(egui::TextEdit::singleline(&mut s.device).hint_text("auto, cpu, cuda:0 or metal"))
            .on_hover_text("auto: the first GPU this build can use, else the CPU")
            .labelled_by(l.id);
        ui.end_row();
        let l = ui.label("Precision");
        egui::ComboBox::from_id_salt("precision")
            .selected_text(s.precision.name())
            .show_ui(ui, |ui| {
                for p in Precision::ALL {
                    ui.selectable_value(&mut s.precision, p, p.name());
                }
            })
            .response
            .labelled_by(l.id)
            .on_hover_text("f16 and bf16 run CLIP and the VQGAN in half precision: for GPUs (bf16 needs one)");
        ui.end_row();
        let l = ui.label("Keep a frame every");
        ui.add(egui::DragValue::new(&mut s.save_every).range(1..=10_000)).labelled_by(l.id);
        ui.end_row();
    });
    if let Some(why) = size_warning(s) {
        ui.colored_label(ui.visuals().warn_fg_color, why);
    }
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let gb = memory_estimate(s.width, s.height, s.cutn, demo) as f64 / 1e9;
    ui.label(format!("about {gb:.1} GB of memory at {}x{}, cutn {}", s.width, s.height, s.cutn)).on_hover_text(
        if demo {
            "A rough estimate for the built-in shapes world's small models"
        } else {
            "A rough estimate for the f16 VQGAN and ViT-B/32; larger models need more"
        },
    );
    lr_changed
}

/// The generator and the settings that belong to it (two grid rows). Choosing another
/// generator sets its own learning rate and leaves the VQGAN's coarse-to-fine search out.
fn generator_edit(ui: &mut egui::Ui, s: &mut RunSettings) {
    let l = ui.label("Generator").on_hover_text(
        "What draws the image: the VQGAN, flat pixel cells, or Fourier coefficients (pixel and fft need no VQGAN)",
    );
    let current = s.generator.name();
    let mut chosen = current;
    egui::ComboBox::from_id_salt("generator")
        .selected_text(current)
        .show_ui(ui, |ui| {
            for name in GeneratorSettings::NAMES {
                ui.selectable_value(&mut chosen, name, name);
            }
        })
        .response
        .labelled_by(l.id);
    ui.end_row();
    if chosen != current {
        if let Some(g) = GeneratorSettings::named(chosen, s.width, s.height) {
            s.generator = g;
            s.lr = g.default_lr();
            if !g.is_vqgan() {
                s.coarse.clear();
            }
        }
    }
    match &mut s.generator {
        GeneratorSettings::Vqgan => {}
        GeneratorSettings::Pixel { cells_x, cells_y } => {
            let l = ui.label("Pixel cells");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(cells_x).range(1..=s.width.max(1)).suffix(" across")).labelled_by(l.id);
                ui.add(egui::DragValue::new(cells_y).range(1..=s.height.max(1)).suffix(" down")).labelled_by(l.id);
            })
            .response
            .on_hover_text("The grid of flat cells the pixel generator colours");
            ui.end_row();
        }
        GeneratorSettings::Fft(fft) => {
            let l = ui.label("Fourier");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut fft.decay).speed(0.05).range(0.0..=4.0).prefix("decay "))
                    .labelled_by(l.id)
                    .on_hover_text("Higher is smoother: fine detail costs more");
                ui.add(egui::DragValue::new(&mut fft.colors).speed(0.05).range(0.1..=10.0).prefix("colours "))
                    .labelled_by(l.id)
                    .on_hover_text("Higher is more colourful");
            });
            ui.end_row();
        }
    }
}

/// The palette loss's weight and its colours as text. The text lives in egui's memory
/// while it is typed; colours that parse are applied at once, others are shown in red
/// with the reason and leave the palette as it was.
fn palette_edit(ui: &mut egui::Ui, label: egui::Id, s: &mut RunSettings) {
    let id = ui.make_persistent_id("palette-text");
    let current = format_palette(&s.looks.palette);
    let mut text: String = ui.data_mut(|d| d.get_temp(id)).unwrap_or_else(|| current.clone());
    if crate::settings::looks::parse_palette(&text).is_ok_and(|p| p != s.looks.palette) || text.trim().is_empty() {
        text = current;
    }
    ui.vertical(|ui| {
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut s.looks.palette_weight).speed(0.05).range(0.0..=100.0).prefix("weight "))
                .labelled_by(label);
            let edit = egui::TextEdit::singleline(&mut text).hint_text("e.g. pico8").desired_width(160.0);
            let response = ui.add(edit).labelled_by(label);
            if response.changed() {
                if let Ok(palette) = crate::settings::looks::parse_palette(&text) {
                    s.looks.palette = palette;
                }
            }
        });
        if !text.trim().is_empty() {
            if let Err(e) = crate::settings::looks::parse_palette(&text) {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        }
    });
    ui.data_mut(|d| d.insert_temp(id, text));
}

/// A palette as the text [`crate::settings::looks::parse_palette`] reads back.
fn format_palette(palette: &[[f64; 3]]) -> String {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "channels in [0, 1]")]
    let byte = |c: f64| (c * 255.0).round().clamp(0.0, 255.0) as u8;
    palette
        .iter()
        .map(|c| format!("#{:02x}{:02x}{:02x}", byte(c[0]), byte(c[1]), byte(c[2])))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The coarse-to-fine schedule as text ("4:50,2:150", empty for none). The text lives in
/// egui's memory while it is being typed; a valid schedule is applied at once, an invalid
/// one is shown in red with the reason and leaves the settings as they were.
fn coarse_edit(ui: &mut egui::Ui, label: egui::Id, s: &mut RunSettings) {
    let id = ui.make_persistent_id("coarse-text");
    let current = format_schedule(&s.coarse);
    let mut text: String = ui.data_mut(|d| d.get_temp(id)).unwrap_or_else(|| current.clone());
    // Follow changes made elsewhere (a preset, a loaded file) unless the text is mid-edit.
    if parse_schedule(&text).is_ok_and(|parsed| parsed != s.coarse) {
        text = current;
    }
    ui.vertical(|ui| {
        let edit = egui::TextEdit::singleline(&mut text).hint_text("none, or e.g. 4:50,2:150").desired_width(140.0);
        let response = ui.add(edit).labelled_by(label).on_hover_text(
            "FACTOR:UNTIL stages: the latent moves in FACTOR×FACTOR token blocks until iteration UNTIL, \
             so large regions settle before detail",
        );
        match parse_schedule(&text) {
            Ok(schedule) if response.changed() => s.coarse = schedule,
            Ok(_) => {}
            Err(e) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        }
    });
    ui.data_mut(|d| d.insert_temp(id, text));
}

fn path_edit(ui: &mut egui::Ui, label: egui::Id, path: &mut Option<std::path::PathBuf>, hint: &str) {
    let mut text = path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    if ui.add(egui::TextEdit::singleline(&mut text).hint_text(hint).desired_width(220.0)).labelled_by(label).changed() {
        *path = (!text.trim().is_empty()).then(|| std::path::PathBuf::from(text.trim()));
    }
}

/// A seed from the clock (the dice button, and each run with "new each run").
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    #[expect(clippy::cast_possible_truncation, reason = "any 64 bits will do")]
    let v = (nanos ^ (nanos >> 64)) as u64;
    v % 1_000_000_000
}
