//! The studio: an egui app with prompt and weight editors, init and target image panels,
//! settings, a live wgpu canvas, a timeline of kept frames and loss plots. It talks to the
//! engine only through the worker's commands and events ([`link::EngineLink`]); it never
//! holds a tensor.

pub mod app;
pub mod canvas;
pub mod link;
pub mod panels;
pub mod state;

use std::sync::Arc;

pub use app::StudioApp;

/// How the studio opens.
#[derive(Debug, Clone, Default)]
pub struct StudioOptions {
    /// Settings to open with, instead of the last session's.
    pub settings: Option<crate::settings::RunSettings>,
    /// Start the run right away.
    pub start: bool,
}

/// Opens the studio window and runs until it is closed.
pub fn run_studio(opts: StudioOptions) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("clipcanvas")
            .with_inner_size([1280.0, 820.0])
            .with_min_inner_size([900.0, 600.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        persist_window: true,
        ..Default::default()
    };
    eframe::run_native(
        "clipcanvas",
        options,
        Box::new(|cc| {
            let ctx = cc.egui_ctx.clone();
            let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
            let worker = crate::worker::Worker::spawn(waker)?;
            let mut app = StudioApp::new(cc, Box::new(worker));
            if let Some(settings) = &opts.settings {
                app.state.restore(settings);
                app.check_models();
            }
            if opts.start {
                app.start();
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the studio window: {e}"))
}
