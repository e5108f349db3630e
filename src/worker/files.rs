//! The file work the studio asks for, off its UI thread: images decoded to frames,
//! frames and kept frames written (PNG with its metadata, a PNG sequence, a GIF),
//! settings files written and read. Frames and strings in, one-line errors out, so the
//! UI never touches the file formats.

use std::path::Path;

use super::protocol::{Frame, FrameEvent};
use crate::settings::png::PngMeta;
use crate::settings::RunSettings;

/// An image file as a frame.
pub fn decode_image(path: &Path) -> Result<Frame, String> {
    crate::engine::image::load_rgb(path).map(|rgb| Frame::from_rgb(&rgb)).map_err(|e| e.to_string())
}

/// The settings in a clipcanvas PNG; `None` for any other file.
pub fn png_settings(path: &Path) -> Option<RunSettings> {
    let meta = crate::export::read_png_metadata(path).ok()??;
    crate::settings::png::settings_from_text(&meta).ok()
}

/// Settings from a settings file or a clipcanvas PNG.
pub fn read_settings(path: &Path) -> Result<RunSettings, String> {
    crate::export::read_settings_file(path).map_err(|e| e.to_string())
}

/// Writes settings as a settings file (atomically).
pub fn write_settings(path: &Path, settings: &RunSettings) -> Result<(), String> {
    let json = settings.to_json();
    crate::files::write_atomic(path, |w| std::io::Write::write_all(w, json.as_bytes())).map_err(|e| e.to_string())
}

/// Writes a frame as a PNG holding `meta`.
pub fn write_png(path: &Path, frame: &Frame, meta: &PngMeta) -> Result<(), String> {
    crate::export::write_png(path, &frame.to_rgb(), Some(&meta.to_json())).map_err(|e| e.to_string())
}

/// Writes frames as an animated GIF, 100 ms a frame.
pub fn write_gif(path: &Path, frames: &[std::sync::Arc<FrameEvent>]) -> Result<(), String> {
    let images: Vec<image::RgbImage> = frames.iter().map(|f| f.frame.to_rgb()).collect();
    crate::export::write_gif(path, &images, 100).map_err(|e| e.to_string())
}

/// Writes frames as a numbered PNG sequence in `dir`; returns how many.
pub fn write_sequence(dir: &Path, frames: &[std::sync::Arc<FrameEvent>]) -> Result<usize, String> {
    crate::export::FrameSequence::create(dir)
        .and_then(|mut seq| {
            for f in frames {
                seq.push(f.iteration, &f.frame.to_rgb(), None)?;
            }
            Ok(seq.paths().len())
        })
        .map_err(|e| e.to_string())
}
