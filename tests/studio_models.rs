//! The studio's model-manager window, driven through egui_kittest (AccessKit) on an
//! engine link that does nothing: opened from the top bar and from the missing-models
//! banner, it lists the catalog's models by name and fills in their statuses; a download
//! started from it (from a server on 127.0.0.1) shows a progress bar and Cancel, and the
//! finished model replaces the missing one in the run's settings.

mod common;

use common::read;

#[path = "support/http_server.rs"]
mod http_server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clipcanvas::catalog::download::DownloadOptions;
use clipcanvas::catalog::entries::Catalog;
use clipcanvas::catalog::service::ModelManager;
use clipcanvas::catalog::store::{Root, RootKind, Store};
use clipcanvas::ui::link::EngineLink;
use clipcanvas::ui::StudioApp;
use clipcanvas::worker::{Command, Event, FrameEvent};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use http_server::{Mode, Server};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// No engine: the model manager does not need one.
struct NoEngine;

impl EngineLink for NoEngine {
    fn send(&self, _cmd: Command) -> bool {
        true
    }

    fn try_event(&self) -> Option<Event> {
        None
    }

    fn take_frame(&self) -> Option<Arc<FrameEvent>> {
        None
    }
}

fn harness() -> Harness<'static, StudioApp> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 820.0))
        .build_eframe(|cc| StudioApp::with_outputs(cc, Box::new(NoEngine), None));
    h.run_steps(3);
    h
}

/// Steps until every listed model has a status (the scan runs on a thread).
fn wait_for_statuses(h: &mut Harness<'static, StudioApp>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.state().models_window.rows().iter().any(|r| r.status.is_none()) {
        assert!(Instant::now() < deadline, "the statuses never arrived");
        std::thread::sleep(Duration::from_millis(10));
        h.run_steps(1);
    }
}

/// The studio with the model manager open on `catalog`, installing into `root`, its
/// statuses in.
fn harness_with_manager(catalog: Catalog, root: &Path) -> Harness<'static, StudioApp> {
    let store = Store::new(catalog, vec![Root { path: root.to_path_buf(), kind: RootKind::Explicit }]);
    let manager = ModelManager::spawn(store, DownloadOptions::default(), Arc::new(|| {})).expect("spawn");
    let mut h = harness();
    h.state_mut().models_window.attach(manager);
    h.get_by_label("Models...").click();
    h.run_steps(2);
    wait_for_statuses(&mut h);
    h.run_steps(2);
    h
}

#[test]
fn the_models_button_opens_the_manager_listing_every_catalog_model() {
    let mut h = harness();
    assert!(!h.state().models_window.open);
    h.get_by_label("Models...").click();
    h.run_steps(3);
    assert!(h.state().models_window.open);
    h.get_by_label("Model manager");
    for name in ["clip-vit-b-32", "clip-vit-l-14", "vqgan-imagenet-f16-16384", "vqgan-sflckr", "shapes-clip"] {
        h.get_by_label(name);
    }
    assert_eq!(h.state().models_window.rows().len(), 13);
    wait_for_statuses(&mut h);
    h.run_steps(2);
    // Every downloadable model that is not installed offers a download, and the folder
    // it would go to is spelled out for installing by hand.
    let rows = h.state().models_window.rows().to_vec();
    let missing = rows.iter().filter(|r| !r.bundled && !r.status.as_ref().is_some_and(|s| s.is_installed())).count();
    assert_eq!(h.get_all_by_label("Download").count(), missing);
    assert!(rows.iter().all(|r| r.bundled || r.manual.contains("download each file")), "{rows:?}");
    // With no model paths set, the shapes world's pair is the one in use.
    let bundled = rows.iter().filter(|r| r.bundled).count();
    assert_eq!(h.get_all_by_label("in use").count(), bundled);
}

#[test]
fn the_missing_models_banner_offers_the_model_manager() {
    let mut h = harness();
    // Model paths that are not there (with none set, the shapes world is used).
    h.state_mut().state.settings.vqgan = Some(PathBuf::from("/nowhere/vqgan.ckpt"));
    h.state_mut().state.settings.clip = Some(PathBuf::from("/nowhere/clip"));
    h.state_mut().check_models();
    h.run_steps(2);
    h.get_by_label("Models missing");
    h.get_by_label("Open model manager").click();
    h.run_steps(3);
    assert!(h.state().models_window.open);
    h.get_by_label("vqgan-coco");
}

#[test]
fn downloading_from_the_window_shows_progress_and_the_run_then_uses_the_model() {
    let server = Server::start();
    server.route("/mirror-vqgan/model.yaml", read(&fixture("vqgan-tiny/model.yaml")), Mode::Serve);
    let ckpt = read(&fixture("vqgan-tiny/model.ckpt"));
    server.route(
        "/mirror-vqgan/last.ckpt",
        ckpt.clone(),
        Mode::Slow { chunk: 50_000, delay: Duration::from_millis(30) },
    );
    let catalog = Catalog::parse(
        &format!(
            r#"
[[model]]
name = "mirror-vqgan"
kind = "vqgan"
description = "the tiny test VQGAN"
licence = "MIT"
[[model.files]]
name = "model.yaml"
urls = ["{base}/mirror-vqgan/model.yaml"]
[[model.files]]
name = "last.ckpt"
urls = ["{base}/mirror-vqgan/last.ckpt"]
"#,
            base = server.base()
        ),
        "test",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let root = tempfile::tempdir().expect("temp");
    let mut h = harness_with_manager(catalog, root.path());
    h.get_by_label("mirror-vqgan");
    h.get_by_label("Download").click();
    h.run_steps(2);

    // While it streams: a Cancel button and a progress bar naming the file.
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.query_by_label_contains("last.ckpt (2/2)").is_none() {
        assert!(Instant::now() < deadline, "no progress bar");
        std::thread::sleep(Duration::from_millis(10));
        h.run_steps(1);
    }
    h.get_by_label("Cancel");

    let dir = root.path().join("mirror-vqgan");
    while h.state().state.settings.vqgan.as_deref() != Some(dir.join("last.ckpt").as_path()) {
        assert!(Instant::now() < deadline, "the run never switched to the downloaded model");
        std::thread::sleep(Duration::from_millis(10));
        h.run_steps(1);
    }
    assert_eq!(read(&dir.join("last.ckpt")), ckpt);
    assert_eq!(h.state().state.settings.vqgan_config.as_deref(), Some(dir.join("model.yaml").as_path()));
    h.run_steps(2);
    // The model the next run uses is marked, and its Use has nothing left to do.
    h.get_by_label("in use");
    assert!(h.get_by_label("Use").accesskit_node().is_disabled());
    h.get_by_label_contains("mirror-vqgan installed");
    assert!(!h.state().missing_models.iter().any(|m| m.contains("VQGAN")), "{:?}", h.state().missing_models);
}

#[test]
fn an_installed_clip_can_score_beside_the_one_in_use() {
    // Two CLIPs installed: the tiny fixture CLIPs under catalog names.
    let root = tempfile::tempdir().expect("temp");
    let mut entries = String::new();
    for (name, from) in [("clip-a", "clip-tiny"), ("clip-b", "clip-tiny-48")] {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fixture(from).join(file), dir.join(file)).expect("copy");
        }
        entries.push_str(&format!(
            "[[model]]\nname = \"{name}\"\nkind = \"clip\"\ndescription = \"a tiny CLIP\"\nlicence = \"MIT\"\n\
             [[model.files]]\nname = \"config.json\"\nurls = [\"http://127.0.0.1:9/c\"]\n\
             [[model.files]]\nname = \"model.safetensors\"\nurls = [\"http://127.0.0.1:9/m\"]\n\
             [[model.files]]\nname = \"tokenizer.json\"\nurls = [\"http://127.0.0.1:9/t\"]\n"
        ));
    }
    let catalog = Catalog::parse(&entries, "test").unwrap_or_else(|e| panic!("{e}"));
    let mut h = harness_with_manager(catalog, root.path());
    // The shapes world has one CLIP: a second needs the run's own chosen first.
    h.get_all_by_label("Also score").next().expect("Also score").click();
    h.run_steps(2);
    h.get_by_label_contains("choose the run's CLIP first");
    assert!(h.state().state.settings.extra_clips.is_empty());
    h.get_all_by_label("Use").next().expect("Use clip-a").click();
    h.run_steps(2);
    assert_eq!(h.state().state.settings.clip.as_deref(), Some(root.path().join("clip-a").as_path()));
    // clip-a is in use; clip-b offers to score too.
    assert_eq!(h.get_all_by_label("Also score").count(), 1);
    h.get_by_label("Also score").click();
    h.run_steps(2);
    let extra = h.state().state.settings.extra_clips.clone();
    assert_eq!(extra.len(), 1);
    assert_eq!(extra[0].path, root.path().join("clip-b"));
    assert_eq!(h.get_all_by_label("in use").count(), 2);
    // Settings shows it with its weight, and leaves it out again.
    h.state_mut().models_window.open = false;
    h.run_steps(1);
    h.get_by_label("Settings").click();
    h.run_steps(2);
    h.get_by_label("Also: clip-b");
    h.get_by_label("CLIP weight");
    h.get_by_label("leave out").click();
    h.run_steps(2);
    assert!(h.state().state.settings.extra_clips.is_empty());
}
