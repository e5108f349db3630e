//! The studio's files: exports (the current image with its settings and model hashes,
//! the kept frames as a PNG sequence or a GIF), settings saved and loaded, and files
//! dropped on the window or chosen as the init image. Dialogs, decoding and writing run
//! off the UI thread; their results come back as [`Background`] messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::studio::StudioApp;
use super::support::{dialog, spawn_named, Background};
use crate::settings::png::{ModelFiles, PngMeta};
use crate::worker::{files, FrameEvent};

impl StudioApp {
    pub(super) fn decode_init(&mut self, path: PathBuf) {
        let tx = self.bg_tx.clone();
        spawn_named("clipcanvas-decode", move || {
            let result = files::decode_image(&path);
            let _ = tx.send(Background::InitDecoded(Box::new((path, result))));
        });
    }

    pub(super) fn set_init(&mut self, path: PathBuf) {
        self.state.settings.init_image = Some(path.clone());
        self.decode_init(path);
    }

    /// A file dropped on the window: a clipcanvas PNG restores its settings, any other
    /// image becomes the init image.
    pub fn accept_dropped(&mut self, path: &Path) {
        let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png {
            if let Some(s) = files::png_settings(path) {
                self.state.restore(&s);
                self.check_models();
                self.say(format!("settings restored from {}", path.display()), false);
                return;
            }
        }
        self.set_init(path.to_path_buf());
        self.push_log(format!("init image: {}", path.display()));
    }

    pub(super) fn export_image(&mut self) {
        let Some(frame) = self.canvas.frame().cloned() else {
            self.say("nothing to export yet", true);
            return;
        };
        let mut settings = match &self.last_run {
            Some(s) => s.clone(),
            None => self.state.run_settings().unwrap_or_else(|_| self.state.settings.clone()),
        };
        if settings.one_step.is_some() {
            // A draft, or a draft refined: the settings that make this very frame.
            settings.iterations = frame.iteration;
        }
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = pollster::block_on(
                rfd::AsyncFileDialog::new().add_filter("PNG", &["png"]).set_file_name("clipcanvas.png").save_file(),
            ) else {
                return;
            };
            let path = file.path().to_path_buf();
            // The model files' names and hashes, as `generate` records them; without
            // them (a model file gone since the run) the image is still saved.
            let (models, note) = match crate::worker::model_files(&settings) {
                Ok(m) => (m, String::new()),
                Err(e) => (ModelFiles::default(), format!(" (without model hashes: {e})")),
            };
            let meta = PngMeta::new(&settings, frame.iteration, models);
            let result =
                files::write_png(&path, &frame.frame, &meta).map(|()| format!("saved {}{note}", path.display()));
            let _ = tx.send(Background::Done(result));
        });
    }

    pub(super) fn export_frames(&mut self, gif: bool) {
        if self.kept.is_empty() {
            self.say("no kept frames yet", true);
            return;
        }
        let frames: Vec<Arc<FrameEvent>> = self.kept.iter().map(|k| Arc::clone(&k.frame)).collect();
        let tx = self.bg_tx.clone();
        dialog(move || {
            let result = if gif {
                let Some(file) = pollster::block_on(
                    rfd::AsyncFileDialog::new().add_filter("GIF", &["gif"]).set_file_name("clipcanvas.gif").save_file(),
                ) else {
                    return;
                };
                files::write_gif(file.path(), &frames).map(|()| format!("saved {}", file.path().display()))
            } else {
                let Some(dir) = pollster::block_on(rfd::AsyncFileDialog::new().pick_folder()) else { return };
                files::write_sequence(dir.path(), &frames)
                    .map(|n| format!("saved {n} frames to {}", dir.path().display()))
            };
            let _ = tx.send(Background::Done(result));
        });
    }

    pub(super) fn save_settings(&mut self) {
        let settings = self.state.run_settings().unwrap_or_else(|_| self.state.settings.clone());
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = pollster::block_on(
                rfd::AsyncFileDialog::new().add_filter("JSON", &["json"]).set_file_name("settings.json").save_file(),
            ) else {
                return;
            };
            let result =
                files::write_settings(file.path(), &settings).map(|()| format!("saved {}", file.path().display()));
            let _ = tx.send(Background::Done(result));
        });
    }

    pub(super) fn load_settings(&mut self) {
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = pollster::block_on(
                rfd::AsyncFileDialog::new().add_filter("settings or clipcanvas PNG", &["json", "png"]).pick_file(),
            ) else {
                return;
            };
            let result = files::read_settings(file.path());
            let _ = tx.send(Background::SettingsLoaded(Box::new(result)));
        });
    }
}
