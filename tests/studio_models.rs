//! The studio's model-manager window, driven through egui_kittest (AccessKit) on an
//! engine link that does nothing: opened from the top bar and from the missing-models
//! banner, it lists the catalog's models by name and fills in their statuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clipcanvas::ui::link::EngineLink;
use clipcanvas::ui::StudioApp;
use clipcanvas::worker::{Command, Event, FrameEvent};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

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
        .build_eframe(|cc| StudioApp::new(cc, Box::new(NoEngine)));
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
}

#[test]
fn the_missing_models_banner_offers_the_model_manager() {
    let mut h = harness();
    h.get_by_label("Models missing");
    h.get_by_label("Open model manager").click();
    h.run_steps(3);
    assert!(h.state().models_window.open);
    h.get_by_label("vqgan-coco");
}
