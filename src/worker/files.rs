//! The file work the studio asks for, off its UI thread: images decoded to frames,
//! frames and kept frames written (PNG with its metadata, a PNG sequence, a GIF),
//! settings files written and read. Frames and strings in, one-line errors out, so the
//! UI never touches the file formats.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::protocol::{Frame, FrameEvent};
use crate::settings::png::PngMeta;
use crate::settings::RunSettings;

/// An image file as a frame.
pub fn decode_image(path: &Path) -> Result<Frame, String> {
    crate::engine::image::load_rgb(path).map(|rgb| Frame::from_rgb(&rgb)).map_err(|e| e.to_string())
}

/// The settings in a clipcanvas PNG; `None` for any other file.
pub fn png_settings(path: &Path) -> Option<RunSettings> {
    crate::export::png_settings(path).ok()?
}

/// Settings from a settings file or a clipcanvas PNG.
pub fn read_settings(path: &Path) -> Result<RunSettings, String> {
    crate::export::read_settings_file(path).map_err(|e| e.to_string())
}

/// Writes settings as a settings file (atomically).
pub fn write_settings(path: &Path, settings: &RunSettings) -> Result<(), String> {
    let json = settings.to_json()?;
    crate::files::write_atomic(path, |w| std::io::Write::write_all(w, json.as_bytes())).map_err(|e| e.to_string())
}

/// Writes a frame as a PNG holding `meta`.
pub fn write_png(path: &Path, frame: &Frame, meta: &PngMeta) -> Result<(), String> {
    crate::export::write_png(path, &frame.to_rgb(), Some(&meta.to_json()?)).map_err(|e| e.to_string())
}

/// Writes a frame in the format its file name asks for (see
/// [`crate::export::ImageFormat::for_path`]): a PNG holding `meta`, or a JPEG or WebP,
/// which cannot hold it (the message returned says so).
pub fn write_image(path: &Path, frame: &Frame, meta: &PngMeta) -> Result<String, String> {
    let written =
        crate::export::write_image(path, &frame.to_rgb(), Some(&meta.to_json()?)).map_err(|e| e.to_string())?;
    Ok(if written.keeps_settings() {
        String::new()
    } else {
        format!(" (a {} keeps no settings: save a .png to keep them)", written.name())
    })
}

/// How exported frames look: the GIF's frames per second, and an enlargement (1, 2 or
/// 4 times) with Lanczos (`smooth`) or nearest-neighbour (crisp pixels) resampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Look {
    pub fps: u32,
    pub scale: u32,
    pub smooth: bool,
}

impl Default for Look {
    fn default() -> Self {
        Self { fps: 10, scale: 1, smooth: true }
    }
}

impl Look {
    /// A frame as it is exported.
    pub fn apply(&self, frame: &Frame) -> image::RgbImage {
        let rgb = frame.to_rgb();
        let k = self.scale.clamp(1, 8);
        if k == 1 {
            return rgb;
        }
        let filter =
            if self.smooth { image::imageops::FilterType::Lanczos3 } else { image::imageops::FilterType::Nearest };
        image::imageops::resize(&rgb, rgb.width() * k, rgb.height() * k, filter)
    }
}

/// Writes frames as an animated GIF, as `look` says.
pub fn write_gif(path: &Path, frames: &[Arc<FrameEvent>], look: Look) -> Result<(), String> {
    let images: Vec<image::RgbImage> = frames.iter().map(|f| look.apply(&f.frame)).collect();
    let delay_ms = 1000 / look.fps.clamp(1, 100);
    crate::export::write_gif(path, &images, delay_ms).map_err(|e| e.to_string())
}

/// Writes frames as an MP4 video (through ffmpeg), as `look` says.
pub fn write_video(path: &Path, frames: &[Arc<FrameEvent>], look: Look) -> Result<(), String> {
    let images: Vec<image::RgbImage> = frames.iter().map(|f| look.apply(&f.frame)).collect();
    crate::export::write_video(path, &images, look.fps.clamp(1, 240)).map_err(|e| e.to_string())
}

/// Writes frames as a numbered PNG sequence in `dir`, as `look` says; returns how many.
pub fn write_sequence(dir: &Path, frames: &[Arc<FrameEvent>], look: Look) -> Result<usize, String> {
    crate::export::FrameSequence::create(dir)
        .and_then(|mut seq| {
            for f in frames {
                seq.push(f.iteration, &look.apply(&f.frame), None)?;
            }
            Ok(seq.paths().len())
        })
        .map_err(|e| e.to_string())
}

/// The frames in `dir` (`frame_NNNNNN.png`: a recording, or a saved run's kept frames),
/// by iteration; empty when there are none.
pub fn recorded_frames(dir: &Path) -> Vec<Arc<FrameEvent>> {
    let mut frames: Vec<Arc<FrameEvent>> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let iteration = name.strip_prefix("frame_")?.strip_suffix(".png")?.parse().ok()?;
                    Some(Arc::new(FrameEvent::new(iteration, decode_image(&e.path()).ok()?)))
                })
                .collect()
        })
        .unwrap_or_default();
    frames.sort_by_key(|f| f.iteration);
    frames
}

/// Where the studio saves every run unless told otherwise:
/// `<platform data folder>/clipcanvas/outputs`, e.g. `~/.local/share/clipcanvas/outputs`.
pub fn default_outputs_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("clipcanvas").join("outputs"))
}

/// A new run's folder name: its UTC start time and the first words of its prompt, e.g.
/// `2026-12-06_20-41-07_a-big-red-circle`.
pub fn run_folder_name(unix_seconds: u64, prompt: &str) -> String {
    let days = i64::try_from(unix_seconds / 86_400).unwrap_or(0);
    let secs = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let slug: Vec<String> =
        prompt.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(6).map(str::to_lowercase).collect();
    let slug = if slug.is_empty() { "run".to_owned() } else { slug.join("-") };
    format!("{year:04}-{month:02}-{day:02}_{:02}-{:02}-{:02}_{slug}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Saves a run in its folder `dir` (made if needed): `final.png`, the last frame with
/// its settings and model hashes, and the kept frames as `frames/frame_NNNNNN.png`.
/// Saving the same run again (after a resume) updates the folder.
pub fn save_run(dir: &Path, last: &Frame, meta: &PngMeta, kept: &[Arc<FrameEvent>]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_sequence(&dir.join("frames"), kept, Look::default())?;
    write_png(&dir.join("final.png"), last, meta)?;
    // A thumbnail of an earlier save is out of date.
    let _ = std::fs::remove_file(dir.join(super::library::THUMB));
    // The run is saved: its autosave has served.
    let _ = std::fs::remove_file(dir.join(AUTOSAVE));
    Ok(())
}

/// The session a run in the studio autosaves into its folder of the outputs folder.
pub const AUTOSAVE: &str = "autosave.session";
/// Iterations between the studio's autosaves.
pub const AUTOSAVE_EVERY: usize = 25;

/// A run that was cut short (the studio crashed or was killed): its folder still holds
/// an autosave and no final image of a later save.
#[derive(Debug)]
pub struct InterruptedRun {
    pub folder: PathBuf,
    pub settings: crate::settings::RunSettings,
    /// The iteration its autosave reached.
    pub iteration: usize,
}

/// The newest run in `outputs` left with an autosave, if it can be read.
pub fn interrupted_run(outputs: &Path) -> Option<InterruptedRun> {
    let folder = std::fs::read_dir(outputs)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(AUTOSAVE).is_file())
        .max_by(|a, b| a.file_name().cmp(&b.file_name()))?;
    let (settings, iteration) = crate::engine::session::Session::read_saved(&folder.join(AUTOSAVE)).ok()?;
    Some(InterruptedRun { folder, settings, iteration })
}

/// A run read back from the outputs folder.
#[derive(Debug)]
pub struct SavedRun {
    pub folder: PathBuf,
    /// Its final image.
    pub last: Frame,
    /// Its kept frames, by iteration.
    pub frames: Vec<Arc<FrameEvent>>,
}

/// The newest run in `outputs` (by folder name, which starts with its time). `None` when
/// there is none or its final image cannot be read.
pub fn newest_run(outputs: &Path) -> Option<SavedRun> {
    let newest = std::fs::read_dir(outputs)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("final.png").is_file())
        .max_by(|a, b| a.file_name().cmp(&b.file_name()))?;
    let last = decode_image(&newest.join("final.png")).ok()?;
    let frames = recorded_frames(&newest.join("frames"));
    Some(SavedRun { folder: newest, last, frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_folders_are_named_by_utc_time_and_prompt() {
        assert_eq!(run_folder_name(0, "a big RED circle, on blue!"), "1970-01-01_00-00-00_a-big-red-circle-on-blue");
        // 2026-12-06 20:41:07 UTC.
        assert_eq!(run_folder_name(1_796_589_667, ""), "2026-12-06_20-41-07_run");
        assert_eq!(run_folder_name(951_782_400, "x"), "2000-02-29_00-00-00_x");
    }

    #[test]
    fn the_look_enlarges_crisp_or_smooth() {
        let frame = Frame { width: 2, height: 1, rgba: vec![0, 0, 0, 255, 255, 255, 255, 255] };
        let crisp = Look { scale: 4, smooth: false, ..Look::default() }.apply(&frame);
        assert_eq!(crisp.dimensions(), (8, 4));
        assert_eq!((crisp.get_pixel(3, 0).0, crisp.get_pixel(4, 0).0), ([0, 0, 0], [255, 255, 255]));
        let smooth = Look { scale: 4, smooth: true, ..Look::default() }.apply(&frame);
        assert!(smooth.get_pixel(3, 0).0[0] > 0, "Lanczos blends across the edge");
        assert_eq!(Look::default().apply(&frame).dimensions(), (2, 1));
    }

    #[test]
    fn a_saved_run_is_found_again_with_its_frames() {
        let dir = tempfile::tempdir().unwrap();
        let frame = |v: u8| Frame { width: 2, height: 2, rgba: vec![v; 16] };
        let kept: Vec<Arc<FrameEvent>> =
            [0usize, 50].iter().map(|&i| Arc::new(FrameEvent::new(i, frame(u8::try_from(i).unwrap())))).collect();
        let meta = PngMeta::new(&RunSettings::default(), 60, crate::settings::png::ModelFiles::default());
        save_run(&dir.path().join("2026-01-01_00-00-00_old"), &frame(1), &meta, &kept[..1]).unwrap();
        save_run(&dir.path().join("2026-12-06_20-41-07_new"), &frame(60), &meta, &kept).unwrap();
        let run = newest_run(dir.path()).unwrap();
        assert!(run.folder.ends_with("2026-12-06_20-41-07_new"));
        assert_eq!(run.last.rgba[0], 60);
        assert_eq!(run.frames.iter().map(|f| f.iteration).collect::<Vec<_>>(), [0, 50]);
        assert!(png_settings(&run.folder.join("final.png")).is_some(), "final.png holds its settings");
        assert!(newest_run(&dir.path().join("none")).is_none());
    }

    /// The studio opens files through the same library functions as the command line
    /// (settings files and PNGs, dropped images, init images): hostile files are refused
    /// the same way (the hardening issue, items 2, 7 and 9).
    #[test]
    fn the_studio_refuses_hostile_files_as_the_command_line_does() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        let msg = read_settings(&folder).unwrap_err();
        assert!(msg.ends_with("is not a regular file (a folder)"), "{msg}");
        let msg = decode_image(&folder).unwrap_err();
        assert!(msg.ends_with("is not a regular file (a folder)"), "{msg}");

        // A PNG whose clipcanvas text inflates past the limit: no settings, and an error
        // for the settings dialog.
        let bomb = dir.path().join("bomb.png");
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, 1, 1);
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().unwrap();
        let mut text = png::text_metadata::ITXtChunk::new("clipcanvas", "a".repeat(9 << 20));
        text.compressed = true;
        w.write_text_chunk(&text).unwrap();
        w.write_image_data(&[0, 0, 0]).unwrap();
        w.finish().unwrap();
        assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
        std::fs::write(&bomb, &bytes).unwrap();
        assert!(png_settings(&bomb).is_none());
        let msg = read_settings(&bomb).unwrap_err();
        assert!(msg.contains("its clipcanvas text inflates past 8 MiB"), "{msg}");

        // A JPEG cut short.
        let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 0]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
        let msg = decode_image(&cut).unwrap_err();
        assert!(msg.contains("truncated JPEG"), "{msg}");
    }
}
