//! The studio's files: exports (the current image with its settings and model hashes,
//! the kept frames as a PNG sequence or a GIF), settings saved and loaded, and files
//! dropped on the window or chosen as the init image. Dialogs, decoding and writing run
//! off the UI thread; their results come back as [`Background`] messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::studio::StudioApp;
use super::support::{answer, dialog, spawn_named, Background};
use crate::settings::png::{ModelFiles, PngMeta};
use crate::settings::RunSettings;
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

    /// A file dropped on the window: a clipcanvas PNG is opened as the history opens a
    /// run (its settings, its image, and a run's kept frames), any other image becomes
    /// the init image. Which it is takes reading the file, so that is done off the UI
    /// thread (a PNG on a slow disk or share would otherwise stall the window); the
    /// answer comes back as [`Background::Opened`] or [`Background::Dropped`].
    pub fn accept_dropped(&mut self, path: &Path) {
        let tx = self.bg_tx.clone();
        let path = path.to_path_buf();
        spawn_named("clipcanvas-drop", move || {
            let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
            let msg = if is_png && files::png_settings(&path).is_some() {
                // Its settings, image and (for a run's final.png) kept frames.
                match super::workshop::read_run(&path, super::workshop::Then::Show) {
                    Ok(run) => Background::Opened(Box::new(run)),
                    Err(e) => Background::Done(Err(e)),
                }
            } else {
                Background::Dropped(path)
            };
            let _ = tx.send(msg);
        });
    }

    /// The settings that make `frame`: the last run's (or, before any, the editor's).
    fn frame_settings(&self, frame: &FrameEvent) -> RunSettings {
        let mut settings = match &self.last_run {
            Some(s) => s.clone(),
            None => self.state.run_settings().unwrap_or_else(|_| self.state.settings.clone()),
        };
        if settings.one_step.is_some() && settings.animation.is_none() {
            // A draft, or a draft refined: the settings that make this very frame.
            settings.iterations = frame.iteration;
        }
        settings
    }

    pub(super) fn export_image(&mut self) {
        let Some(frame) = self.canvas.frame().cloned() else {
            self.say("nothing to export yet", true);
            return;
        };
        let settings = self.frame_settings(&frame);
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = answer(
                &tx,
                rfd::AsyncFileDialog::new()
                    .add_filter("PNG (keeps the settings)", &["png"])
                    .add_filter("JPEG", &["jpg", "jpeg"])
                    .add_filter("WebP", &["webp"])
                    .set_file_name("clipcanvas.png")
                    .save_file(),
            ) else {
                return;
            };
            let _ = tx.send(Background::Done(save_image(file.path(), &frame, &settings)));
        });
    }

    /// Saves the run on screen in its folder of the outputs folder (after it finished or
    /// stopped); a draft not yet refined is not saved.
    pub(super) fn save_run_output(&mut self) {
        let Some(dir) = self.run_folder.clone() else { return };
        let (live, kept): (Arc<FrameEvent>, Vec<Arc<FrameEvent>>) = if self.animating {
            // An animation: its finished frames, the last one as the final image.
            let Some((last, _)) = self.anim_frames.last().filter(|_| !self.anim_preview) else { return };
            (Arc::clone(last), self.anim_frames.iter().map(|(f, _)| Arc::clone(f)).collect())
        } else {
            let Some(live) = self.live.clone().filter(|l| l.iteration > 0) else { return };
            (live, self.kept.iter().map(|k| Arc::clone(&k.frame)).collect())
        };
        let settings = self.frame_settings(&live);
        if !self.animating {
            // Its session, for the history's Continue.
            self.send(crate::worker::Command::SaveSession(dir.join(crate::worker::library::SESSION)));
        }
        let tx = self.bg_tx.clone();
        spawn_named("clipcanvas-save", move || {
            let meta = PngMeta::new(&settings, live.iteration, model_files_or_none(&settings).0);
            let result = files::save_run(&dir, &live.frame, &meta, &kept);
            // A save that worked goes to the log; one that failed to the banner.
            let _ = tx.send(match result {
                Ok(()) => Background::Saved(dir),
                Err(e) => Background::Done(Err(format!("the run could not be saved in the outputs folder: {e}"))),
            });
        });
    }

    /// Reads the newest run of the outputs folder in the background, to show it again.
    pub(super) fn restore_newest_run(&mut self) {
        let Some(outputs) = self.outputs.clone() else { return };
        let tx = self.bg_tx.clone();
        spawn_named("clipcanvas-restore", move || {
            if let Some(run) = files::newest_run(&outputs) {
                let _ = tx.send(Background::Restored(Box::new(run)));
            }
            if let Some(run) = files::interrupted_run(&outputs) {
                let _ = tx.send(Background::Interrupted(Box::new(run)));
            }
        });
    }

    /// The folder for a run starting now, named by its time and prompt.
    pub(super) fn new_run_folder(&self, prompt: Option<&str>) -> Option<PathBuf> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let outputs = self.outputs.as_ref()?;
        let mut dir = outputs.join(files::run_folder_name(now, prompt.unwrap_or("")));
        // Two runs started within a second get folders of their own.
        let mut n = 2;
        while dir.exists() {
            dir = outputs.join(format!("{}-{n}", files::run_folder_name(now, prompt.unwrap_or(""))));
            n += 1;
        }
        Some(dir)
    }

    /// Save or open by path (where no file dialog can open): by the file's extension,
    /// `.png` saves the image on the canvas, `.gif` the kept frames, `.json` the settings,
    /// and a folder (no extension) the kept frames as a PNG sequence; with `open`, a
    /// settings file or clipcanvas PNG is loaded.
    pub(super) fn by_path(&mut self, path: PathBuf, open: bool) {
        let tx = self.bg_tx.clone();
        if open {
            spawn_named("clipcanvas-open", move || {
                let _ = tx.send(Background::SettingsLoaded(Box::new(files::read_settings(&path))));
            });
            return;
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        match ext.as_deref() {
            Some("png") => {
                let Some(frame) = self.canvas.frame().cloned() else { return self.say("nothing to export yet", true) };
                let settings = self.frame_settings(&frame);
                spawn_named("clipcanvas-export", move || {
                    let _ = tx.send(Background::Done(save_image(&path, &frame, &settings)));
                });
            }
            Some("json") => {
                let settings = self.state.saved_settings();
                spawn_named("clipcanvas-export", move || {
                    let result = files::write_settings(&path, &settings).map(|()| format!("saved {}", path.display()));
                    let _ = tx.send(Background::Done(result));
                });
            }
            Some("gif" | "mp4") if self.animating && !self.anim_frames.is_empty() => {
                let frames: Vec<Arc<FrameEvent>> = self.anim_frames.iter().map(|(f, _)| Arc::clone(f)).collect();
                let look = self.animation_look();
                let video = ext.as_deref() == Some("mp4");
                spawn_named("clipcanvas-export", move || {
                    let result = if video {
                        files::write_video(&path, &frames, look)
                    } else {
                        files::write_gif(&path, &frames, look)
                    };
                    let _ = tx.send(Background::Done(result.map(|()| format!("saved {}", path.display()))));
                });
            }
            Some("gif") | None => {
                let Some(frames) = self.export_frames_source() else { return };
                let gif = ext.is_some();
                let look = self.state.look;
                spawn_named("clipcanvas-export", move || {
                    let _ = tx.send(Background::Done(write_frames(&path, &frames.resolve(), gif, look)));
                });
            }
            Some(other) => self.say(
                format!(
                    "{}: .{other} is not something clipcanvas saves (png, gif, mp4 for an animation, json, or a folder)",
                    path.display()
                ),
                true,
            ),
        }
    }

    /// Opens the outputs folder in the system's file manager; where none opens, the path
    /// goes to the clipboard and the banner.
    pub(super) fn open_outputs(&mut self) {
        let Some(dir) = self.outputs.clone() else {
            return self.say("this system has no data folder for outputs", true);
        };
        let opened = std::fs::create_dir_all(&dir).is_ok() && open_in_file_manager(&dir);
        if !opened {
            self.clipboard = Some(dir.display().to_string());
            self.say(
                format!("no file manager could be opened; the outputs folder is {} (copied)", dir.display()),
                true,
            );
        }
    }

    /// The frames an animation export holds: the run's recording where it was recorded,
    /// else its kept frames; `None` (and a banner) when there are none.
    fn export_frames_source(&mut self) -> Option<FrameSource> {
        if let Some(dir) = self.run_folder.as_ref().map(|d| d.join("recording")).filter(|d| d.is_dir()) {
            return Some(FrameSource::Recorded(dir));
        }
        if self.kept.is_empty() {
            self.say("no kept frames yet", true);
            return None;
        }
        Some(FrameSource::Kept(self.kept.iter().map(|k| Arc::clone(&k.frame)).collect()))
    }

    pub(super) fn export_frames(&mut self, gif: bool) {
        let Some(frames) = self.export_frames_source() else { return };
        let look = self.state.look;
        let tx = self.bg_tx.clone();
        dialog(move || {
            let path = if gif {
                let dialog =
                    rfd::AsyncFileDialog::new().add_filter("GIF", &["gif"]).set_file_name("clipcanvas.gif").save_file();
                answer(&tx, dialog).map(|f| f.path().to_path_buf())
            } else {
                answer(&tx, rfd::AsyncFileDialog::new().pick_folder()).map(|d| d.path().to_path_buf())
            };
            if let Some(path) = path {
                let _ = tx.send(Background::Done(write_frames(&path, &frames.resolve(), gif, look)));
            }
        });
    }

    /// How animation frames are exported: the export look at the animation's speed.
    fn animation_look(&self) -> files::Look {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "fps is 1 to 60")]
        let fps = self.state.animation.fps.round().clamp(1.0, 240.0) as u32;
        files::Look { fps, ..self.state.look }
    }

    /// Writes the animation's frames as a GIF or an MP4, at the animation's speed.
    pub(super) fn export_animation(&mut self, video: bool) {
        if self.anim_frames.is_empty() {
            return self.say("no animation frames yet: render or preview one first", true);
        }
        let frames: Vec<Arc<FrameEvent>> = self.anim_frames.iter().map(|(f, _)| Arc::clone(f)).collect();
        let look = self.animation_look();
        let tx = self.bg_tx.clone();
        dialog(move || {
            let (name, ext, filter) =
                if video { ("animation.mp4", "mp4", "MP4 video") } else { ("animation.gif", "gif", "GIF") };
            let dialog = rfd::AsyncFileDialog::new().add_filter(filter, &[ext]).set_file_name(name).save_file();
            let Some(file) = answer(&tx, dialog) else { return };
            let path = file.path().to_path_buf();
            let result =
                if video { files::write_video(&path, &frames, look) } else { files::write_gif(&path, &frames, look) };
            let _ = tx.send(Background::Done(result.map(|()| format!("saved {}", path.display()))));
        });
    }

    pub(super) fn save_settings(&mut self) {
        let settings = self.state.saved_settings();
        let tx = self.bg_tx.clone();
        dialog(move || {
            let Some(file) = answer(
                &tx,
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
            let Some(file) = answer(
                &tx,
                rfd::AsyncFileDialog::new().add_filter("settings or clipcanvas PNG", &["json", "png"]).pick_file(),
            ) else {
                return;
            };
            let result = files::read_settings(file.path());
            let _ = tx.send(Background::SettingsLoaded(Box::new(result)));
        });
    }
}

/// The model files' names and hashes, as `generate` records them; without them (a model
/// file gone since the run) an image is still saved, with a note why.
fn model_files_or_none(settings: &RunSettings) -> (ModelFiles, String) {
    match crate::worker::model_files(settings) {
        Ok(m) => (m, String::new()),
        Err(e) => (ModelFiles::default(), format!(" (without model hashes: {e})")),
    }
}

/// Writes `frame` in the format its name asks for: a PNG with the settings that made it,
/// a JPEG or a WebP (without them).
fn save_image(path: &Path, frame: &FrameEvent, settings: &RunSettings) -> Result<String, String> {
    let (models, note) = model_files_or_none(settings);
    let meta = PngMeta::new(settings, frame.iteration, models);
    files::write_image(path, &frame.frame, &meta)
        .map(|format_note| format!("saved {}{format_note}{note}", path.display()))
}

/// Opens `dir` in the platform's file manager; whether one started.
pub(super) fn open_in_file_manager(dir: &Path) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Where an animation's frames come from.
enum FrameSource {
    /// The kept frames, in memory.
    Kept(Vec<Arc<FrameEvent>>),
    /// A recording on disk (read when exporting, off the UI thread).
    Recorded(PathBuf),
}

impl FrameSource {
    fn resolve(self) -> Vec<Arc<FrameEvent>> {
        match self {
            Self::Kept(frames) => frames,
            Self::Recorded(dir) => files::recorded_frames(&dir),
        }
    }
}

/// Writes frames as a GIF at `path`, or as a PNG sequence in the folder `path`.
fn write_frames(path: &Path, frames: &[Arc<FrameEvent>], gif: bool, look: files::Look) -> Result<String, String> {
    if frames.is_empty() {
        return Err("no frames to export".to_owned());
    }
    if gif {
        files::write_gif(path, frames, look).map(|()| format!("saved {} ({} frames)", path.display(), frames.len()))
    } else {
        files::write_sequence(path, frames, look).map(|n| format!("saved {n} frames to {}", path.display()))
    }
}
