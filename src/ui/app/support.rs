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
    /// A file dropped on the window that is not a clipcanvas PNG: the init image.
    Dropped(PathBuf),
    InitDecoded(Box<(PathBuf, Result<Frame, String>)>),
    TargetsChosen(Vec<PathBuf>),
    SettingsLoaded(Box<Result<RunSettings, String>>),
    Done(Result<String, String>),
    /// The newest run in the outputs folder, read at start-up: its folder, final image
    /// and kept frames.
    Restored(Box<crate::worker::files::SavedRun>),
    /// A run cut short, found at start-up with its autosave.
    Interrupted(Box<crate::worker::files::InterruptedRun>),
    /// A run was saved in this folder of the library.
    Saved(PathBuf),
    /// The queue saved last time, read at start-up.
    QueueLoaded(Box<Result<crate::settings::queue::Queue, String>>),
    /// A run read back from its folder (the gallery's Open or Continue, a dropped PNG).
    Opened(Box<super::workshop::OpenedRun>),
    /// A file dialog closed at once without an answer: the system has no dialog to show.
    NoDialog,
}

pub(super) fn image_dialog() -> rfd::AsyncFileDialog {
    rfd::AsyncFileDialog::new().add_filter("images", &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"])
}

/// Runs blocking work (a dialog, an export) on its own named thread.
pub(super) fn dialog(f: impl FnOnce() + Send + 'static) {
    spawn_named("clipcanvas-dialog", f);
}

/// Waits for a file dialog's answer. A dialog that comes back empty sooner than a person
/// can cancel one never opened (no xdg-desktop-portal or zenity on Linux): that is
/// reported as [`Background::NoDialog`] instead of passing for a cancel.
pub(super) fn answer<T>(
    tx: &crossbeam_channel::Sender<Background>,
    dialog: impl std::future::Future<Output = Option<T>>,
) -> Option<T> {
    let opened = std::time::Instant::now();
    let answer = pollster::block_on(dialog);
    if answer.is_none() && opened.elapsed() < std::time::Duration::from_millis(300) {
        let _ = tx.send(Background::NoDialog);
    }
    answer
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialog_that_comes_back_empty_at_once_is_reported_as_missing() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        assert_eq!(answer(&tx, async { None::<u8> }), None);
        assert!(matches!(rx.try_recv(), Ok(Background::NoDialog)));
        // An answer, or a cancel that took a person's time, is not.
        assert_eq!(answer(&tx, async { Some(3u8) }), Some(3));
        let slow = async {
            std::thread::sleep(std::time::Duration::from_millis(350));
            None::<u8>
        };
        assert_eq!(answer(&tx, slow), None);
        assert!(rx.try_recv().is_err());
    }
}
