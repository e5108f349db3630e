//! The studio driven as a user would, through egui_kittest (AccessKit), on a fake engine
//! link that records commands and feeds events and frames.

mod common;
#[path = "support/studio.rs"]
mod studio_support;

use std::path::PathBuf;
use std::sync::Arc;

use clipcanvas::engine::observer::Frame;
use clipcanvas::ui::StudioApp;
use clipcanvas::worker::{Command, Event, RunState};
use common::fixture;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use studio_support::{drop_file, frame, harness, harness_with_outputs, until, FakeLink};

/// The studio with its Settings section opened, as a user opens it.
fn harness_with_settings_open(link: &FakeLink) -> Harness<'static, StudioApp> {
    let mut h = harness(link);
    h.get_by_label("Settings").click();
    h.run_steps(2);
    h
}

#[test]
fn start_sends_the_start_command_with_the_prompts() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert_eq!(settings.prompts, vec!["a big red circle on a blue background:1".to_owned()]);
}

#[test]
fn ctrl_enter_starts_too() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    h.run_steps(2);
    assert!(matches!(link.sent().first(), Some(Command::Start(_))), "{:?}", link.sent());
}

#[test]
fn moving_a_weight_slider_during_a_run_sends_the_update() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.get_by_label("Start").click();
    h.run_steps(2);
    link.push(Event::State(RunState::Running));
    h.run_steps(2);
    let sliders = h.get_all_by_role(egui::accesskit::Role::Slider).collect::<Vec<_>>();
    assert!(!sliders.is_empty(), "no sliders");
    sliders[0].set_value_accesskit(-0.5);
    h.run_steps(3);
    let update = link.sent().into_iter().find_map(|c| match c {
        Command::SetPrompts(p) => Some(p),
        _ => None,
    });
    assert_eq!(update, Some(vec!["a big red circle on a blue background:-0.5".to_owned()]));
}

#[test]
fn a_frame_event_reaches_the_canvas_texture() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    *link.frame.lock().expect("lock") = Some(frame(7, 64, 48));
    h.run_steps(2);
    let app = h.state();
    assert_eq!(app.canvas.shown_iteration(), Some(7));
    assert!(app.canvas.texture_is_current(), "the texture holds the newest frame");
    // A newer frame replaces it.
    *link.frame.lock().expect("lock") = Some(frame(8, 64, 48));
    h.run_steps(2);
    assert_eq!(h.state().canvas.shown_iteration(), Some(8));
    assert!(h.state().canvas.texture_is_current());
}

#[test]
fn a_file_dropped_on_the_window_becomes_the_init_image() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    let path = fixture("score/wide.png");
    drop_file(&mut h, path.clone());
    h.run_steps(2);
    // Read off the UI thread: not a clipcanvas PNG, so the init image.
    until(&mut h, |app| app.state.settings.init_image.as_deref() == Some(path.as_path()));
    assert!(h.state().log.iter().any(|l| l.starts_with("init image: ")));
    // The thumbnail is decoded off the UI thread.
    for _ in 0..100 {
        if h.state().canvas.has_init() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run_steps(1);
    }
    assert!(h.state().canvas.has_init());
    h.get_by_label("Start").click();
    h.run_steps(2);
    let Some(Command::Start(s)) = link.sent().into_iter().next() else { panic!("no start") };
    assert_eq!(s.init_image.as_deref(), Some(path.as_path()));
}

#[test]
fn dropping_a_clipcanvas_png_restores_its_settings_and_shows_it() {
    let dir = tempfile::tempdir().expect("temp");
    let png = dir.path().join("made.png");
    let settings = clipcanvas::settings::RunSettings {
        prompts: vec!["a red circle:1.5".into(), "blur:-0.5".into()],
        seed: 1234,
        ..Default::default()
    };
    let meta = serde_json::json!({ "settings": settings }).to_string();
    clipcanvas::export::write_png(&png, &image::RgbImage::new(8, 8), Some(&meta)).expect("png");
    let link = FakeLink::default();
    let mut h = harness(&link);
    drop_file(&mut h, png);
    h.run_steps(2);
    // Read in the background, then its settings are in the editor and its image on the
    // canvas.
    until(&mut h, |app| app.state.settings.seed == 1234);
    assert_eq!(h.state().canvas.frame().map(|f| (f.frame.width, f.frame.height)), Some((8, 8)));
    let st = &h.state().state;
    assert_eq!(st.prompt_specs(), vec!["a red circle:1.5".to_owned(), "blur:-0.5".to_owned()]);
    assert!(st.settings.init_image.is_none());
}

#[test]
fn a_worker_error_shows_its_message() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    link.push(Event::Error("models/vqgan.ckpt: VQGAN checkpoint not found".into()));
    h.run_steps(2);
    h.get_by_label_contains("VQGAN checkpoint not found");
    assert!(h.state().log.iter().any(|l| l.contains("VQGAN checkpoint not found")));
}

#[test]
fn missing_models_are_named_with_where_they_go() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.state_mut().state.settings.vqgan = Some(PathBuf::from("/nowhere/vqgan.ckpt"));
    h.state_mut().state.settings.clip = Some(PathBuf::from("/nowhere/clip"));
    h.state_mut().check_models();
    h.run_steps(2);
    h.get_by_label("Models missing");
    h.get_by_label_contains("/nowhere/vqgan.ckpt");
    assert_eq!(h.state().missing_models.len(), 2);
}

#[test]
fn with_no_models_set_the_studio_uses_the_shapes_world_and_says_so() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.state_mut().state.settings.vqgan = None;
    h.state_mut().state.settings.clip = None;
    h.state_mut().check_models();
    h.run_steps(2);
    assert!(h.state().missing_models.is_empty());
    // Issue 21: the notice is a banner of normal-sized text that says what to try and
    // where real models come from (it was small grey text under the toolbar).
    h.get_by_label("Shapes world");
    h.get_by_label_contains("the built-in demo models know coloured shapes");
    h.get_by_label_contains("install real models");
}

#[test]
fn a_file_dropped_on_the_target_panel_becomes_a_target_image() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    let rect = h.state().target_rect.expect("target panel drawn");
    h.input_mut().events.push(egui::Event::PointerMoved(rect.center()));
    h.run_steps(1);
    let path = fixture("score/tall.png");
    drop_file(&mut h, path.clone());
    h.run_steps(2);
    let st = &h.state().state;
    assert_eq!(st.targets.len(), 1);
    assert_eq!(st.targets[0].path, path);
    assert!(st.settings.init_image.is_none());
}

#[test]
fn a_coarse_schedule_is_typed_checked_and_sent_with_the_run() {
    use clipcanvas::settings::CoarseStage;
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    let preset = clipcanvas::settings::RunSettings::shapes_world().coarse;
    assert_eq!(h.state().state.settings.coarse, preset, "the studio starts on the shapes preset");
    h.get_by_label("Coarse start").scroll_to_me();
    h.run_steps(2);
    let replace = |h: &mut Harness<'static, StudioApp>, text: &str| {
        h.get_by_label("Coarse start").focus();
        h.run_steps(1);
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        h.run_steps(1);
        h.get_by_label("Coarse start").type_text(text);
        h.run_steps(2);
    };
    replace(&mut h, "4:x");
    h.get_by_label_contains("FACTOR:UNTIL");
    assert_eq!(h.state().state.settings.coarse, preset, "a malformed schedule changes nothing");
    replace(&mut h, "4:30,2:90");
    assert!(h.query_by_label_contains("FACTOR:UNTIL").is_none(), "the error goes once the text is valid");
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert_eq!(settings.coarse, [CoarseStage { factor: 4, until: 30 }, CoarseStage { factor: 2, until: 90 }]);
}

#[test]
fn ticking_blur_sends_it_with_the_run_and_unticking_takes_it_back() {
    use clipcanvas::settings::Augment;
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    assert!(!h.state().state.settings.augments.contains(&Augment::Blur), "blur is off by default");
    h.get_by_label("blur").scroll_to_me();
    // Let the scroll settle before clicking where the box now is.
    h.run_steps(20);
    h.get_by_label("blur").click();
    h.run_steps(2);
    assert!(h.state().state.settings.augments.contains(&Augment::Blur));
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert!(settings.augments.contains(&Augment::Blur), "{:?}", settings.augments);
    h.get_by_label("blur").click();
    h.run_steps(2);
    assert!(!h.state().state.settings.augments.contains(&Augment::Blur));
}

#[test]
fn choosing_half_precision_sends_it_with_the_run_on_the_automatic_device() {
    use clipcanvas::settings::Precision;
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    assert_eq!(h.state().state.settings.precision, Precision::F32, "f32 by default");
    assert_eq!(h.state().state.settings.device, "auto", "the first GPU the build can use, else the CPU");
    h.get_by_label("Precision").scroll_to_me();
    h.run_steps(20);
    h.get_by_label("Precision").click();
    h.run_steps(2);
    h.get_by_label("f16").click();
    h.run_steps(2);
    assert_eq!(h.state().state.settings.precision, Precision::F16);
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert_eq!((settings.precision, settings.device.as_str()), (Precision::F16, "auto"));
}

#[test]
fn choosing_the_pixel_generator_shows_its_cells_and_sends_them_with_the_run() {
    use clipcanvas::settings::GeneratorSettings;
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    assert_eq!(h.state().state.settings.generator, GeneratorSettings::Vqgan, "the VQGAN by default");
    assert!(h.query_by_label("Pixel cells").is_none(), "no cells for the VQGAN");
    h.get_by_label("Generator").scroll_to_me();
    h.run_steps(20);
    h.get_by_label("Generator").click();
    h.run_steps(2);
    h.get_by_label("pixel").click();
    h.run_steps(2);
    let s = &h.state().state.settings;
    // The shapes world's 128² canvas: 48 cells across, its learning rate, no coarse start.
    assert_eq!(s.generator, GeneratorSettings::Pixel { cells_x: 48, cells_y: 48 });
    assert!((s.lr - 0.05).abs() < 1e-12 && s.coarse.is_empty(), "lr {} coarse {:?}", s.lr, s.coarse);
    // The two numbers the row's label names: across and down.
    assert_eq!(h.query_all_by_label("Pixel cells").count(), 2, "the cells' row");
    // Draft is for VQGAN codes, and says so.
    let why = h.state().draft_unavailable().expect("Draft is unavailable");
    assert!(why.contains("choose vqgan"), "{why}");
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert_eq!(settings.generator.name(), "pixel");
}

#[test]
fn choosing_the_fft_generator_shows_its_decay_and_colours() {
    use clipcanvas::settings::{FftSettings, GeneratorSettings};
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    h.get_by_label("Generator").scroll_to_me();
    h.run_steps(20);
    h.get_by_label("Generator").click();
    h.run_steps(2);
    h.get_by_label("fft").click();
    h.run_steps(2);
    assert_eq!(h.state().state.settings.generator, GeneratorSettings::Fft(FftSettings::default()));
    assert!((h.state().state.settings.lr - 0.3).abs() < 1e-12);
    assert_eq!(h.query_all_by_label("Fourier").count(), 2, "the decay and colours row");
    assert!(h.query_by_label("Pixel cells").is_none());
}

#[test]
fn the_looks_are_four_weights_sent_with_the_run() {
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    assert_eq!(h.query_all_by_label("Looks").count(), 4, "saturation, the two mirrors and smoothness");
    assert_eq!(h.query_all_by_label("Edge").count(), 2, "the edge's weight and strip width");
    h.state_mut().state.settings.looks.symmetry = 2.0;
    h.state_mut().state.settings.tv_weight = 0.5;
    h.get_by_label("tile").click();
    h.run_steps(2);
    assert!(h.state().state.settings.looks.tile, "the tile box switches seamless tiling on");
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert_eq!(settings.looks.symmetry, 2.0);
    assert_eq!(settings.tv_weight, 0.5);
    assert!(settings.looks.tile);
}

#[test]
fn a_palette_is_typed_checked_and_sent_with_the_run() {
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    let field = || egui::accesskit::Role::TextInput;
    h.query_all_by_label("Palette")
        .find(|n| n.accesskit_node().role() == field())
        .expect("the palette's text")
        .scroll_to_me();
    h.run_steps(2);
    let type_palette = |h: &mut Harness<'static, StudioApp>, text: &str| {
        h.query_all_by_label("Palette").find(|n| n.accesskit_node().role() == field()).expect("text").focus();
        h.run_steps(1);
        h.query_all_by_label("Palette").find(|n| n.accesskit_node().role() == field()).expect("text").type_text(text);
        h.run_steps(2);
    };
    type_palette(&mut h, "#000000 blurple");
    h.get_by_label_contains("\"blurple\" must be #RRGGBB");
    assert!(h.state().state.settings.looks.palette.is_empty(), "a palette that does not parse changes nothing");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run_steps(1);
    type_palette(&mut h, "bw");
    assert_eq!(h.state().state.settings.looks.palette, vec![[0.0; 3], [1.0; 3]]);
    h.state_mut().state.settings.looks.palette_weight = 2.0;
    h.run_steps(2);
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert_eq!((settings.looks.palette.len(), settings.looks.palette_weight), (2, 2.0));
}

#[test]
fn the_memory_estimate_is_for_the_models_in_use() {
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    // No models named: the shapes world, whose preset run takes about 0.16 GB.
    h.get_by_label("about 0.2 GB of memory at 128x128, cutn 16");
    h.state_mut().state.settings.clip = Some("models/clip-vit-base-patch32".into());
    h.state_mut().state.settings.vqgan = Some("models/vqgan.ckpt".into());
    h.run_steps(2);
    assert!(h.query_by_label_contains("about 0.2 GB").is_none(), "real models need more");
    h.get_by_label_contains("GB of memory at 128x128, cutn 16");
}

/// A one-step model folder the studio can point Draft at (its files are only checked to
/// exist here; the worker loads them).
fn onestep_folder(dir: &std::path::Path) -> PathBuf {
    let m = dir.join("onestep");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(m.join("config.json"), "{}").expect("write");
    std::fs::write(m.join("model.safetensors"), b"x").expect("write");
    m
}

#[test]
fn draft_sends_a_one_step_run_and_the_candidates_can_be_picked_and_refined() {
    let dir = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.state_mut().state.draft.model = Some(onestep_folder(dir.path()));
    h.state_mut().state.draft.candidates = 3;
    h.run_steps(2);
    h.get_by_label("Draft").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(s)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    let one = s.one_step.as_ref().expect("a one-step run");
    assert_eq!((one.candidates, one.pick, s.iterations), (3, 0, 0), "a draft is iteration 0 of 3 candidates");
    assert!(s.coarse.is_empty(), "a draft replaces the preset's coarse-to-fine start");
    assert_eq!(s.prompts, vec!["a big red circle on a blue background:1".to_owned()]);
    // The worker's ranked candidates appear as thumbnails; picking one sends it.
    let drafts = (0..3)
        .map(|i| clipcanvas::worker::DraftFrame {
            frame: Frame { width: 8, height: 8, rgba: vec![u8::try_from(i * 80).expect("small"); 256] },
            score: 0.9 - f64::from(i) * 0.1,
        })
        .collect();
    link.push(Event::Drafts(Arc::new(drafts)));
    link.push(Event::State(RunState::Finished));
    h.run_steps(2);
    h.get_by_label("#3").click();
    h.run_steps(2);
    assert!(matches!(link.sent().last(), Some(Command::PickDraft(2))), "{:?}", link.sent());
    assert_eq!(h.state().draft_pick, 2);
    h.get_by_label("Refine").click();
    h.run_steps(2);
    let iterations = h.state().state.settings.iterations;
    assert!(matches!(link.sent().last(), Some(Command::Refine(n)) if *n == iterations), "{:?}", link.sent());
    // Ctrl+D drafts again.
    let before = link.sent().len();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::D);
    h.run_steps(2);
    assert!(matches!(link.sent().get(before), Some(Command::Start(s)) if s.one_step.is_some()), "{:?}", link.sent());
}

#[test]
fn draft_says_why_when_no_one_step_model_fits_the_models() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.state_mut().state.settings.vqgan = Some(fixture("vqgan-tiny/model.ckpt"));
    h.state_mut().state.settings.clip = Some(fixture("clip-tiny"));
    h.run_steps(2);
    let why = h.state().draft_unavailable().expect("no one-step model for real models");
    assert!(why.contains("train-onestep"), "{why}");
    h.get_by_label("Draft").click();
    h.run_steps(2);
    assert!(link.sent().is_empty(), "a disabled Draft sent {:?}", link.sent());
    // Pointing it at a model folder turns it on.
    let dir = tempfile::tempdir().expect("temp");
    h.state_mut().state.draft.model = Some(onestep_folder(dir.path()));
    h.run_steps(2);
    assert_eq!(h.state().draft_unavailable(), None);
}

fn stats(iteration: usize, iterations: usize, losses: &[(&str, f64)]) -> Event {
    Event::Step(clipcanvas::worker::StepStats {
        iteration,
        iterations,
        total_loss: losses.iter().map(|(_, l)| l).sum(),
        losses: losses.iter().map(|(n, l)| ((*n).to_owned(), *l)).collect(),
        its_per_sec: 2.0,
        lr: 0.1,
    })
}

/// A run started from the top bar and reported running by the fake worker.
fn running(link: &FakeLink) -> Harness<'static, StudioApp> {
    let mut h = harness(link);
    h.get_by_label("Start").click();
    h.run_steps(2);
    link.push(Event::State(RunState::Running));
    h.run_steps(2);
    h
}

#[test]
fn stop_says_stopping_at_once_and_a_second_press_starts_nothing() {
    let link = FakeLink::default();
    let mut h = running(&link);
    h.get_by_label("Stop").click();
    h.run_steps(2);
    // The button keeps its place, reads "Stopping..." and is disabled until the run stops.
    let stopping = h.get_by_label("Stopping...");
    assert!(stopping.accesskit_node().is_disabled());
    stopping.click();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    h.run_steps(2);
    let starts = link.sent().iter().filter(|c| matches!(c, Command::Start(_))).count();
    let stops = link.sent().iter().filter(|c| matches!(c, Command::Stop)).count();
    assert_eq!((starts, stops), (1, 1), "{:?}", link.sent());
    link.push(Event::State(RunState::Stopped));
    h.run_steps(2);
    assert!(!h.get_by_label("Start").accesskit_node().is_disabled());
    h.get_by_label("stopped");
}

#[test]
fn a_prompt_typed_during_a_run_is_sent_once_typing_pauses() {
    let link = FakeLink::default();
    let mut h = running(&link);
    let field = h.get_by_role(egui::accesskit::Role::TextInput);
    field.focus();
    h.run_steps(1);
    for ch in [" yes", " indeed"] {
        h.get_by_role(egui::accesskit::Role::TextInput).type_text(ch);
        h.run_steps(1);
    }
    let sent_prompts = |link: &FakeLink| {
        link.sent()
            .into_iter()
            .filter_map(|c| match c {
                Command::SetPrompts(p) => Some(p),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(sent_prompts(&link).is_empty(), "sent while typing: {:?}", sent_prompts(&link));
    // 0.6 s of quiet (the harness steps a quarter of a second).
    h.run_steps(4);
    let sent = sent_prompts(&link);
    assert_eq!(sent, vec![vec!["a big red circle on a blue background yes indeed:1".to_owned()]]);
}

#[test]
fn the_plot_keeps_a_series_per_prompt_row_named_as_the_row_reads_now() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.get_by_label("The loss of each prompt is plotted here once a run starts.");
    h.get_by_label("Start").click();
    h.run_steps(2);
    link.push(Event::State(RunState::Running));
    link.push(stats(0, 100, &[("a big red circle on a blue background", 0.9), ("init", 0.1)]));
    h.run_steps(2);
    h.state_mut().state.prompts[0].text = "a big red star".into();
    h.run_steps(4);
    link.push(stats(1, 100, &[("a big red circle on a blue background", 0.88)]));
    link.push(stats(2, 100, &[("a big red star", 0.8)]));
    h.run_steps(2);
    let names: Vec<String> = h.state().plot.legend(&h.state().state.prompts).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a big red star", "init"]);
    h.get_by_label("a big red star");
    // The progress bar: iteration, loss, speed and the time left (97 iterations at 2 it/s).
    h.get_by_label_contains("3/100 - loss 0.8000 - 2.00 it/s - 0:49 left");
}

#[test]
fn each_start_gets_a_new_seed_unless_the_artist_turns_it_off() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    let seeds = |link: &FakeLink| {
        link.sent()
            .into_iter()
            .filter_map(|c| match c {
                Command::Start(s) => Some(s.seed),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        h.get_by_label("Start").click();
        h.run_steps(2);
        link.push(Event::State(RunState::Finished));
        h.run_steps(2);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let two = seeds(&link);
    assert_ne!(two[0], two[1], "the same seed twice");
    assert_eq!(h.state().state.settings.seed, two[1], "Settings shows the seed used");
    h.state_mut().state.new_seed = false;
    h.get_by_label("Start").click();
    h.run_steps(2);
    assert_eq!(seeds(&link)[2], two[1]);
}

#[test]
fn reset_asks_first_then_clears_the_canvas_frames_and_plot() {
    let link = FakeLink::default();
    let mut h = running(&link);
    link.push(stats(0, 10, &[("a big red circle on a blue background", 0.9)]));
    *link.frame.lock().expect("lock") = Some(frame(0, 32, 32));
    h.run_steps(2);
    assert_eq!(h.state().canvas.shown_iteration(), Some(0));
    h.get_by_label("Reset...").click();
    // The dialog fades in over a few frames.
    h.run_steps(6);
    h.get_by_label("Reset?");
    h.get_by_label("Cancel").click();
    h.run_steps(2);
    assert!(!link.sent().iter().any(|c| matches!(c, Command::Reset)));
    assert!(!h.state().plot.is_empty());
    h.get_by_label("Reset...").click();
    h.run_steps(6);
    h.get_by_label("Reset").click();
    h.run_steps(2);
    assert!(link.sent().iter().any(|c| matches!(c, Command::Reset)));
    link.push(Event::State(RunState::Idle));
    h.run_steps(2);
    let app = h.state();
    assert!(app.plot.is_empty());
    assert_eq!(app.canvas.shown_iteration(), None, "the old image is gone");
    h.get_by_label_contains("press Start");
}

#[test]
fn ctrl_p_pauses_even_while_typing_and_performance_figures_wait_in_view() {
    let link = FakeLink::default();
    let mut h = running(&link);
    h.get_by_role(egui::accesskit::Role::TextInput).focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::P);
    h.run_steps(2);
    assert!(matches!(link.sent().last(), Some(Command::Pause)), "{:?}", link.sent());
    assert!(h.query_by_label_contains("ms p95").is_none(), "developer figures in the toolbar");
    h.get_by_label("View").click();
    h.run_steps(2);
    h.get_by_label("Performance figures").click();
    h.run_steps(3);
    h.get_by_label_contains("ms p95");
}

#[test]
fn a_modifier_chip_goes_to_the_prompt_typed_in_or_the_first_positive_one() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    {
        let st = &mut h.state_mut().state;
        st.prompts
            .push(clipcanvas::ui::state::PromptRow { weight: -1.0, ..clipcanvas::ui::state::PromptRow::new("blur") });
    }
    h.run_steps(2);
    h.get_by_label("Modifiers").click();
    h.run_steps(2);
    let chip = clipcanvas::ui::panels::prompts::modifiers()[0];
    h.get_by_label(chip).click();
    h.run_steps(2);
    let texts =
        |h: &Harness<'static, StudioApp>| h.state().state.prompts.iter().map(|r| r.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&h), [format!("a big red circle on a blue background, {chip}"), "blur".to_owned()]);
    // Typed into the negative prompt last: the chip goes there.
    h.get_all_by_role(egui::accesskit::Role::TextInput).nth(1).expect("two prompt fields").focus();
    h.run_steps(2);
    h.get_by_label(chip).click();
    h.run_steps(2);
    assert_eq!(texts(&h)[1], format!("blur, {chip}"));
}

#[test]
fn a_finished_run_is_saved_in_the_outputs_folder_and_comes_back_after_a_restart() {
    let outputs = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    h.get_by_label("Start").click();
    h.run_steps(2);
    link.push(Event::State(RunState::Running));
    h.run_steps(1);
    for it in [0, 50] {
        *link.frame.lock().expect("lock") = Some(frame(it, 16, 16));
        h.run_steps(1);
    }
    // The final frame, then the end of the run, as the worker sends them.
    *link.frame.lock().expect("lock") = Some(frame(60, 16, 16));
    link.push(Event::State(RunState::Finished));
    let saved = |o: &std::path::Path| -> Option<PathBuf> {
        let dir = std::fs::read_dir(o).ok()?.filter_map(Result::ok).map(|e| e.path()).next()?;
        dir.join("final.png").is_file().then_some(dir)
    };
    until(&mut h, |_| saved(outputs.path()).is_some());
    let dir = saved(outputs.path()).expect("a run folder");
    let name = dir.file_name().expect("name").to_string_lossy().into_owned();
    assert!(name.ends_with("_a-big-red-circle-on-a"), "{name}");
    let settings =
        clipcanvas::worker::files::png_settings(&dir.join("final.png")).expect("final.png holds its settings");
    assert_eq!(settings.prompts, vec!["a big red circle on a blue background:1".to_owned()]);
    let frames: Vec<String> = std::fs::read_dir(dir.join("frames"))
        .expect("frames")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(frames.contains(&"frame_000050.png".to_owned()), "{frames:?}");
    drop(h);
    // A restart shows the run again: its final image and kept frames.
    let mut again = harness_with_outputs(&FakeLink::default(), Some(outputs.path().to_path_buf()));
    until(&mut again, |app| app.canvas.frame().is_some());
    assert_eq!(again.state().canvas.shown_iteration(), Some(60));
    let canvas = again.state().canvas.frame().expect("a frame").frame.clone();
    assert_eq!(canvas.rgba, frame(60, 16, 16).frame.rgba, "the final image, pixel for pixel");
    again.get_by_label("3 kept frames");
}

#[test]
fn without_file_dialogs_a_typed_path_saves_and_opens() {
    let dir = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = harness(&link);
    *link.frame.lock().expect("lock") = Some(frame(5, 16, 16));
    h.run_steps(2);
    let target = dir.path().join("mine.png");
    save_by_path(&mut h, &target);
    assert!(clipcanvas::worker::files::png_settings(&target).is_some(), "the image holds its settings");
}

#[test]
fn presets_and_size_hints_fit_the_models_in_use() {
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    h.get_by_label("Models in use: the shapes world (built in)");
    assert!(h.query_by_label("Detailed").is_none(), "a 512-px preset offered for the 128-px shapes world");
    h.get_by_label("Thorough").click();
    h.run_steps(2);
    let s = &h.state().state.settings;
    assert_eq!((s.width, s.height, s.cutn, s.iterations), (128, 128, 32, 300));
    h.state_mut().state.settings.width = 512;
    h.state_mut().state.settings.height = 512;
    h.run_steps(2);
    h.get_by_label_contains("made for 128x128: at 512x512 a run does 16x the work");
    h.state_mut().state.settings.vqgan = Some(fixture("vqgan-tiny/model.ckpt"));
    h.state_mut().state.settings.clip = Some(fixture("clip-tiny"));
    h.run_steps(2);
    h.get_by_label("Detailed");
    h.get_by_label("Models in use: VQGAN model.ckpt, CLIP clip-tiny");
    assert!(h.query_by_label_contains("made for 128x128").is_none());
}

#[test]
fn a_branch_counts_from_its_kept_frame_and_is_marked_on_the_plot() {
    let link = FakeLink::default();
    let mut h = running(&link);
    for it in [0, 50] {
        *link.frame.lock().expect("lock") = Some(frame(it, 16, 16));
        h.run_steps(1);
    }
    link.push(stats(92, 150, &[("a big red circle on a blue background", 0.5)]));
    h.run_steps(2);
    h.get_by_label_contains("93/150");
    // Continue from the frame kept at iteration 50: the session goes on at 93 for the
    // 100 iterations left from 50.
    h.get_by_label("kept frame 50").click();
    h.run_steps(2);
    h.get_by_label("Continue from iteration 50").click();
    h.run_steps(2);
    assert!(matches!(link.sent().last(), Some(Command::BranchFrom { iteration: 50 })), "{:?}", link.sent());
    link.push(stats(93, 193, &[("a big red circle on a blue background", 0.45)]));
    h.run_steps(2);
    h.get_by_label_contains("branch from 50: 51/150");
    h.get_by_label_contains("0:50 left");
    // The branch's kept frames stand apart on the timeline.
    *link.frame.lock().expect("lock") = Some(frame(100, 16, 16));
    h.run_steps(2);
    h.get_by_label("branch from 50:");
    h.get_by_label("kept frame 100");
}

#[test]
fn a_recorded_run_exports_every_recorded_frame_enlarged() {
    let outputs = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    h.get_by_label("Export").click();
    h.run_steps(2);
    h.get_by_label("Record every").click();
    h.run_steps(2);
    h.state_mut().state.look = clipcanvas::worker::files::Look { fps: 20, scale: 2, smooth: false };
    h.key_press(egui::Key::Escape);
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Record(Some(rec))) = sent.first() else { panic!("expected Record before Start: {sent:?}") };
    assert_eq!(rec.every, 1);
    // Then where to autosave, then the run.
    assert!(matches!(sent.get(1), Some(Command::Autosave(Some(_)))), "{sent:?}");
    assert!(matches!(sent.get(2), Some(Command::Start(_))), "{sent:?}");
    // The worker's recorder writes the frames; here they are written as it would.
    std::fs::create_dir_all(&rec.dir).expect("dir");
    for it in 0..5u8 {
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([it * 40, 0, 0]));
        img.save(rec.dir.join(format!("frame_{:06}.png", it))).expect("png");
    }
    *link.frame.lock().expect("lock") = Some(frame(4, 16, 16));
    h.run_steps(2);
    let gif = outputs.path().join("anim.gif");
    save_by_path(&mut h, &gif);
    until(&mut h, |app| app.banner.as_ref().is_some_and(|b| b.text.contains("5 frames")));
    let decoded = image::open(&gif).expect("a GIF");
    assert_eq!((decoded.width(), decoded.height()), (32, 32), "enlarged x2");
}

#[test]
fn a_number_typed_and_left_with_tab_is_kept() {
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    // Clicked, as a person does: the field turns into a text field with its number
    // selected.
    h.get_by_label("Iterations").click();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label("Iterations").type_text("77");
    h.run_steps(1);
    h.key_press(egui::Key::Tab);
    h.run_steps(3);
    assert_eq!(h.state().state.settings.iterations, 77);
}

/// Saves through Export > Save or open by path... (where no file dialog opens), and
/// waits until `path` is written.
fn save_by_path(h: &mut Harness<'static, StudioApp>, path: &std::path::Path) {
    h.get_by_label("Export").click();
    h.run_steps(2);
    h.get_by_label("Save or open by path...").click();
    h.run_steps(3);
    let fields: Vec<_> = h.get_all_by_role(egui::accesskit::Role::TextInput).collect();
    let field = fields.last().expect("the path field");
    field.focus();
    field.set_text_value_accesskit(&path.display().to_string());
    h.run_steps(2);
    h.get_by_label("Save").click();
    until(h, |_| path.is_file());
}

/// Selects all of a text field's text and types `text` over it.
fn retype(h: &mut Harness<'static, StudioApp>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run_steps(1);
    h.get_by_label(label).type_text(text);
    h.run_steps(2);
}

#[test]
fn the_animation_panel_checks_schedules_renders_and_shows_each_finished_frame() {
    let outputs = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    h.get_by_label("Animation").click();
    h.run_steps(2);
    h.get_by_label("Zoom").scroll_to_me();
    h.run_steps(2);
    // A schedule that does not parse is named, and Render and the preview wait for it.
    retype(&mut h, "Zoom", "0:(1.0), 30:(1.04");
    h.get_by_label_contains("this '(' is never closed");
    assert!(h.get_by_label("Render animation").accesskit_node().is_disabled());
    assert!(h.get_by_label("Preview motion").accesskit_node().is_disabled());
    retype(&mut h, "Zoom", "0:(1.0), 30:(1.04)");
    assert!(h.query_by_label_contains("never closed").is_none());
    // A camera preset fills in the camera's schedules.
    h.get_by_label("Spiral").click();
    h.run_steps(2);
    assert_eq!(h.state().state.animation.angle.text(), "2");
    retype(&mut h, "Zoom", "0:(1.0+0.002*sin(t/5))");
    h.get_by_label("Preview motion").click();
    h.run_steps(2);
    assert!(
        matches!(link.sent().last(), Some(Command::PreviewMotion(s)) if s.animation.is_some()),
        "{:?}",
        link.sent()
    );
    // The prompt's weight follows a schedule of its own.
    h.get_by_label("Prompt weights over the frames").click();
    h.run_steps(2);
    let weight = "weight of \"a big red circle on a bl…\"";
    h.get_by_label(weight).scroll_to_me();
    h.run_steps(20);
    retype(&mut h, weight, "0:(1), 59:(0)");
    h.get_by_label("Render animation").scroll_to_me();
    h.run_steps(20);
    h.get_by_label("Render animation").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(s)) = sent.last() else { panic!("expected Start, got {sent:?}") };
    let anim = s.animation.as_ref().expect("an animation");
    assert_eq!(anim.prompt_weights.iter().map(|w| w.text()).collect::<Vec<_>>(), ["0:(1), 59:(0)"]);
    assert_eq!(anim.zoom.text(), "0:(1.0+0.002*sin(t/5))");
    assert_eq!(anim.angle.text(), "2");
    assert_eq!(s.prompts, vec!["a big red circle on a blue background:1".to_owned()]);
    // Finished frames come back one by one into the strip; clicking one shows it.
    link.push(Event::State(RunState::Running));
    for index in 0..3 {
        let f = frame(index, 16, 16);
        link.push(Event::AnimationFrame { index, total: 60, frame: Arc::new(f.frame.clone()) });
    }
    h.run_steps(3);
    assert_eq!(h.state().anim_frames.len(), 3);
    h.get_by_label_contains("Frames 3/60");
    // Live steering waits for the next render: a typed prompt is not sent.
    let before = link.sent().len();
    h.state_mut().state.prompts[0].text = "a blue square".into();
    h.run_steps(40);
    assert_eq!(link.sent().len(), before, "{:?}", &link.sent()[before..]);
    h.get_by_label("animation frame 1").click();
    h.run_steps(2);
    assert_eq!(h.state().canvas.shown_iteration(), Some(1));
    h.get_by_label("frame 1");
    // Saved by path (where no file dialog opens), a .gif holds the animation's frames.
    let dir = tempfile::tempdir().expect("temp");
    let gif = dir.path().join("animation.gif");
    save_by_path(&mut h, &gif);
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(std::fs::read(&gif).expect("gif")));
    use image::AnimationDecoder;
    assert_eq!(decoder.expect("a GIF").into_frames().count(), 3);
    // A finished render is kept in the outputs folder: its last frame (with the
    // animation's settings) and every frame.
    link.push(Event::State(RunState::Finished));
    let run = |o: &std::path::Path| -> Option<PathBuf> {
        let dir = std::fs::read_dir(o).ok()?.filter_map(Result::ok).map(|e| e.path()).next()?;
        (dir.join("final.png").is_file() && dir.join("frames").read_dir().ok()?.count() == 3).then_some(dir)
    };
    until(&mut h, |_| run(outputs.path()).is_some());
    let dir = run(outputs.path()).expect("a run folder");
    let kept = clipcanvas::worker::files::png_settings(&dir.join("final.png")).expect("settings");
    assert_eq!(kept.animation.map(|a| a.angle.text().to_owned()).as_deref(), Some("2"));
    // Its settings (schedules included) are what a settings file keeps.
    let saved = h.state().state.saved_settings();
    assert_eq!(saved.animation.as_ref().map(|a| a.zoom.text().to_owned()).as_deref(), Some("0:(1.0+0.002*sin(t/5))"));
    let mut restored = clipcanvas::ui::state::StudioState::default();
    restored.restore(&saved);
    assert_eq!(restored.animation, h.state().state.animation);
    assert!(restored.settings.animation.is_none(), "Start stays a single image");
}

/// Presses the primary button at `from`, drags through `to` and lets go.
fn drag(h: &mut Harness<'static, StudioApp>, path: &[egui::Pos2]) {
    let button = |pos, pressed| egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: egui::Modifiers::NONE,
    };
    // Hover first, over a few frames: a tooltip left by a click elsewhere closes.
    for _ in 0..2 {
        h.input_mut().events.push(egui::Event::PointerMoved(path[0]));
        h.run_steps(2);
    }
    h.input_mut().events.push(button(path[0], true));
    h.run_steps(1);
    for &p in &path[1..] {
        h.input_mut().events.push(egui::Event::PointerMoved(p));
        h.run_steps(1);
    }
    h.input_mut().events.push(button(path[path.len() - 1], false));
    h.run_steps(1);
}

#[test]
fn a_region_painted_on_the_canvas_goes_with_its_prompt() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    // A second row, for the region: "a yellow star", painted on the left of the canvas.
    h.get_by_label("Add prompt").click();
    h.run_steps(2);
    let last = h.state().state.prompts.len() - 1;
    h.state_mut().state.prompts[last].text = "a yellow star".into();
    h.run_steps(1);
    h.get_all_by_label("Region...").nth(1).expect("the second row's Region button").click();
    h.run_steps(2);
    h.get_by_label_contains("Region of \"a yellow star\"");
    let rect = h.state().canvas.image_rect.expect("canvas drawn");
    let at = |u: f32, v: f32| rect.min + egui::vec2(u * rect.width(), v * rect.height());
    let pan_before = rect;
    drag(&mut h, &[at(0.1, 0.2), at(0.2, 0.5), at(0.15, 0.8)]);
    // Painting does not pan the canvas.
    assert_eq!(h.state().canvas.image_rect, Some(pan_before));
    let region = h.state().state.prompts[last].region.clone().expect("the row has a region");
    let (w, hgt) = (region.mask.width(), region.mask.height());
    assert_eq!((w, hgt), (128, 128), "a new mask has the canvas's size");
    let bits = region.mask.bits();
    let left: usize = (0..hgt).map(|y| (0..w / 2).filter(|&x| bits[y * w + x]).count()).sum();
    assert!(left > 200 && left == region.mask.covered(), "painted {left} on the left of {}", region.mask.covered());
    // Erase takes some away; Clear empties it; Show mask hides the tint.
    h.get_by_label("Erase").click();
    h.run_steps(1);
    assert!(h.state().brush.erase);
    h.run_steps(5);
    drag(&mut h, &[at(0.2, 0.5), at(0.2, 0.52)]);
    let after = h.state().state.prompts[last].region.as_ref().map(|r| r.mask.covered());
    assert!(after.is_some_and(|n| n < left), "{after:?} after erasing from {left}");
    // Start sends the row as a region prompt, and the others as text prompts.
    h.get_by_label("Done").click();
    h.run_steps(1);
    h.get_by_label("outside").click();
    h.run_steps(1);
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Start(settings)) = sent.first() else { panic!("expected Start, got {sent:?}") };
    assert_eq!(settings.prompts, vec!["a big red circle on a blue background:1".to_owned()]);
    assert_eq!(settings.regions.len(), 1);
    assert_eq!(settings.regions[0].prompt, "a yellow star:1");
    assert!(settings.regions[0].outside);
    assert_eq!(Some(settings.regions[0].mask.covered()), after);
}

#[test]
fn a_region_with_nothing_painted_says_so_at_start() {
    let link = FakeLink::default();
    let mut h = harness(&link);
    h.get_by_label("Region...").click();
    h.run_steps(2);
    h.get_by_label("Start").click();
    h.run_steps(2);
    assert!(link.sent().is_empty(), "{:?}", link.sent());
    h.get_by_label_contains("covers nothing");
    // Clear, then no region: the row is a text prompt again.
    h.get_by_label("no region").click();
    h.run_steps(1);
    assert!(h.state().brush.target.is_none());
    h.get_by_label("Start").click();
    h.run_steps(2);
    assert!(matches!(link.sent().first(), Some(Command::Start(s)) if s.regions.is_empty()));
}

#[test]
fn with_a_variation_on_each_start_varies_the_same_seed() {
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    h.get_by_label("vary").scroll_to_me();
    h.run_steps(20);
    h.get_by_label("vary").click();
    h.run_steps(2);
    let seed = h.state().state.settings.seed;
    assert!(h.state().state.settings.variation.is_some_and(|v| v.strength == 0.1));
    let mut starts = Vec::new();
    for _ in 0..2 {
        h.get_by_label("Start").click();
        h.run_steps(2);
        let sent = link.sent();
        let Some(Command::Start(s)) = sent.last() else { panic!("expected Start, got {sent:?}") };
        starts.push((s.seed, s.variation.expect("the variation goes with the run")));
        link.push(Event::State(RunState::Finished));
        h.run_steps(2);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // "New each run" picks a new variation seed, around the same start.
    assert_eq!((starts[0].0, starts[1].0), (seed, seed));
    assert_ne!(starts[0].1.seed, starts[1].1.seed);
}

fn undo(h: &mut Harness<'static, StudioApp>) {
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(2);
}

fn redo(h: &mut Harness<'static, StudioApp>) {
    h.key_press_modifiers(egui::Modifiers::COMMAND | egui::Modifiers::SHIFT, egui::Key::Z);
    h.run_steps(2);
}

#[test]
fn ctrl_z_takes_back_edits_and_ctrl_shift_z_makes_them_again() {
    let link = FakeLink::default();
    let mut h = harness_with_settings_open(&link);
    let first = h.state().state.prompts[0].text.clone();
    // Typing in a prompt: one edit, once the field is left.
    let field = || egui::accesskit::Role::TextInput;
    h.get_all_by_role(field()).next().expect("the prompt field").focus();
    h.run_steps(1);
    h.key_press(egui::Key::End);
    for ch in [",", " ", "at", " ", "night"] {
        h.get_all_by_role(field()).next().expect("the prompt field").type_text(ch);
        h.run_steps(1);
    }
    h.key_press(egui::Key::Escape);
    h.run_steps(2);
    assert_eq!(h.state().state.prompts[0].text, format!("{first}, at night"));
    // A settings box.
    h.get_by_label("tile").click();
    h.run_steps(2);
    assert!(h.state().state.settings.looks.tile);
    undo(&mut h);
    assert!(!h.state().state.settings.looks.tile, "the tile box is undone first");
    assert_eq!(h.state().state.prompts[0].text, format!("{first}, at night"));
    undo(&mut h);
    assert_eq!(h.state().state.prompts[0].text, first, "the typing is undone as one edit");
    redo(&mut h);
    redo(&mut h);
    assert_eq!(h.state().state.prompts[0].text, format!("{first}, at night"));
    assert!(h.state().state.settings.looks.tile);
    // The Undo button does the same.
    h.get_by_label("Undo").click();
    h.run_steps(2);
    assert!(!h.state().state.settings.looks.tile);
}

#[test]
fn an_undone_edit_during_a_run_steers_the_run_back() {
    let link = FakeLink::default();
    let mut h = running(&link);
    let sliders = h.get_all_by_role(egui::accesskit::Role::Slider).collect::<Vec<_>>();
    sliders[0].set_value_accesskit(-0.5);
    h.run_steps(3);
    undo(&mut h);
    h.run_steps(2);
    let updates: Vec<Vec<String>> = link
        .sent()
        .into_iter()
        .filter_map(|c| match c {
            Command::SetPrompts(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(
        updates,
        [
            vec!["a big red circle on a blue background:-0.5".to_owned()],
            vec!["a big red circle on a blue background:1".to_owned()]
        ]
    );
}

/// An outputs folder holding a run cut short at iteration 3: its folder with an autosave
/// and no final image.
fn outputs_with_an_interrupted_run() -> (tempfile::TempDir, PathBuf) {
    use clipcanvas::engine::session::Session;
    let dir = tempfile::tempdir().expect("temp");
    let run = dir.path().join("2026-12-07_10-00-00_a-red-barn");
    std::fs::create_dir_all(&run).expect("dir");
    let settings = clipcanvas::settings::RunSettings {
        prompts: vec!["a red barn:1".into()],
        width: 32,
        height: 32,
        cutn: 2,
        iterations: 40,
        vqgan: Some(fixture("vqgan-tiny/model.ckpt")),
        clip: Some(fixture("clip-tiny")),
        ..Default::default()
    };
    let mut session = Session::new(common::fixture_models(), settings).expect("session");
    for _ in 0..3 {
        session.step().expect("step");
    }
    let path = run.join("autosave.session");
    std::fs::write(&path, session.to_bytes().expect("bytes")).expect("write");
    (dir, path)
}

#[test]
fn a_run_cut_short_is_offered_and_resumed_from_its_autosave() {
    let (outputs, path) = outputs_with_an_interrupted_run();
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    until(&mut h, |app| app.interrupted.is_some());
    h.run_steps(2);
    h.get_by_label_contains("A run was cut short at iteration 3 of 40 (\"a red barn:1\")");
    h.get_by_label("Resume it").click();
    h.run_steps(2);
    let sent = link.sent();
    assert!(
        matches!(&sent[..], [Command::Autosave(Some((a, 25))), Command::ResumeSession(r)] if *a == path && *r == path),
        "{sent:?}"
    );
    // Its settings are back in the editor, and the banner is gone.
    assert_eq!(h.state().state.prompts[0].text, "a red barn");
    assert!(h.state().interrupted.is_none());
}

#[test]
fn a_run_cut_short_can_be_discarded() {
    let (outputs, path) = outputs_with_an_interrupted_run();
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    until(&mut h, |app| app.interrupted.is_some());
    h.run_steps(2);
    h.get_by_label("Discard").click();
    h.run_steps(2);
    assert!(!path.exists(), "the autosave is deleted");
    assert!(link.sent().is_empty());
    // A run started now autosaves into its own folder.
    h.get_by_label("Start").click();
    h.run_steps(2);
    let sent = link.sent();
    let Some(Command::Autosave(Some((file, 25)))) = sent.first() else { panic!("{sent:?}") };
    assert!(file.starts_with(outputs.path()) && file.ends_with("autosave.session"), "{file:?}");
    assert!(matches!(sent.get(1), Some(Command::Start(_))), "{sent:?}");
}
