//! Small things the studio's parts share: results of work done off the UI thread, the
//! named threads that do it, thumbnails, percentiles.

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::settings::RunSettings;
use crate::worker::Frame;

/// Results of work done off the UI thread (dialogs, decoding, exports).
#[derive(Debug)]
pub(super) enum Background {
    InitChosen(PathBuf),
    InitDecoded(Box<(PathBuf, Result<Frame, String>)>),
    TargetsChosen(Vec<PathBuf>),
    SettingsLoaded(Box<Result<RunSettings, String>>),
    Done(Result<String, String>),
}

pub(super) fn image_dialog() -> rfd::AsyncFileDialog {
    rfd::AsyncFileDialog::new().add_filter("images", &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"])
}

/// Runs blocking work (a dialog, an export) on its own named thread.
pub(super) fn dialog(f: impl FnOnce() + Send + 'static) {
    spawn_named("clipcanvas-dialog", f);
}

pub(super) fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    // If a thread cannot be started the action is skipped; there is nothing to undo.
    let _ = std::thread::Builder::new().name(name.to_owned()).spawn(f);
}

/// A small texture of a frame for thumbnails.
pub(super) fn thumbnail(ctx: &egui::Context, frame: &Frame, iteration: usize) -> egui::TextureHandle {
    let rgba = image::RgbaImage::from_raw(frame.width, frame.height, frame.rgba.clone())
        .unwrap_or_else(|| image::RgbaImage::new(1, 1));
    let small = image::imageops::thumbnail(&rgba, 96.min(frame.width.max(1)), 96.min(frame.height.max(1)));
    let image =
        egui::ColorImage::from_rgba_unmultiplied([small.width() as usize, small.height() as usize], small.as_raw());
    ctx.load_texture(format!("thumb-{iteration}"), image, egui::TextureOptions::LINEAR)
}

/// The `q` quantile of the values, if any.
pub fn percentile(values: &VecDeque<f64>, q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index"
    )]
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(i).copied()
}
