//! Writing what a run produces — PNGs with their settings embedded, numbered frame
//! sequences, animated GIFs, H.264 videos through ffmpeg, and model-file hashes — safely.
//!
//! Every file is written atomically: into a dot-prefixed temporary sibling in the same
//! folder, flushed and fsynced, then renamed over the destination. On any error the
//! temporary file is removed and the destination is left as it was, so a crash or a full
//! disk never leaves a half-written image where a good one (or nothing) was.
//!
//! This module sits beside the engine: it knows images (`image::RgbImage`) and files,
//! nothing of models, tensors or the UI.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::files::{commit, create_temp_sibling};
use image::buffer::ConvertBuffer;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbImage, RgbaImage};

/// The text-chunk keyword clipcanvas stores its settings under.
pub const SETTINGS_KEY: &str = "clipcanvas";

/// The message of [`ExportError::FfmpegMissing`].
const FFMPEG_MISSING: &str = "ffmpeg not found on PATH: install ffmpeg to write videos, or use --gif/--frames";

/// What can go wrong writing results. Messages are one line and name the file; I/O
/// errors keep the operating system's message (e.g. "No space left on device").
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Creating, writing, syncing or renaming a file (or creating a folder) failed.
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// Opening or reading a file failed.
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file is not a PNG, or is a damaged one.
    #[error("{}: not a readable PNG ({msg})", path.display())]
    NotPng { path: PathBuf, msg: String },
    /// An encoder refused the image (not an I/O failure).
    #[error("{}: cannot encode {format} ({msg})", path.display())]
    Encode { path: PathBuf, format: &'static str, msg: String },
    /// The request itself is unusable: no frames, frames of different sizes, a zero rate.
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// Writing a video needs ffmpeg and there is none on PATH.
    #[error("{FFMPEG_MISSING}")]
    FfmpegMissing,
    /// ffmpeg ran but failed; `msg` is the last line it printed.
    #[error("{}: ffmpeg failed ({msg})", path.display())]
    Ffmpeg { path: PathBuf, msg: String },
}

/// Writes through [`crate::files::write_atomic_with`], for writers whose errors are
/// already [`ExportError`]s (encoders that tell format errors from I/O ones).
fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    crate::files::write_atomic_with(path, write)
}

/// Writes a file atomically (see [`crate::files::write_atomic`]).
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), ExportError> {
    Ok(crate::files::write_atomic(path, write)?)
}

impl From<crate::files::FileError> for ExportError {
    fn from(e: crate::files::FileError) -> Self {
        use crate::files::FileError;
        match e {
            FileError::Write { path, source } => Self::Write { path, source },
            FileError::Read { path, source } => Self::Read { path, source },
            FileError::NotAFile { path } => Self::Input { path, msg: "not a file path".to_owned() },
        }
    }
}

// ---------------------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------------------

/// Maps a png encoding error: I/O failures keep the OS message, the rest are format errors.
fn png_encode_err(path: &Path, e: png::EncodingError) -> ExportError {
    match e {
        png::EncodingError::IoError(source) => ExportError::Write { path: path.to_path_buf(), source },
        other => ExportError::Encode { path: path.to_path_buf(), format: "PNG", msg: other.to_string() },
    }
}

/// Write a PNG atomically (temporary file in the same folder, fsync, rename) with
/// `metadata` (a JSON string: settings, seed, model names and hashes) in an iTXt (UTF-8)
/// text chunk under [`SETTINGS_KEY`], plus a "Software" tEXt chunk "clipcanvas <version>".
/// The chunks go before the image data, so readers find them without decoding pixels.
pub fn write_png(path: &Path, img: &RgbImage, metadata: Option<&str>) -> Result<(), ExportError> {
    let (width, height) = img.dimensions();
    if width == 0 || height == 0 {
        return Err(ExportError::Input {
            path: path.to_path_buf(),
            msg: format!("cannot write an empty {width}×{height} image"),
        });
    }
    write_atomic_with(path, |w| {
        let err = |e| png_encode_err(path, e);
        let mut enc = png::Encoder::new(w, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_text_chunk("Software".to_string(), format!("clipcanvas {}", env!("CARGO_PKG_VERSION"))).map_err(err)?;
        if let Some(meta) = metadata {
            enc.add_itxt_chunk(SETTINGS_KEY.to_string(), meta.to_string()).map_err(err)?;
        }
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(img.as_raw()).map_err(err)?;
        writer.finish().map_err(err)
    })
}

/// The clipcanvas text of a decoded PNG's text chunks, if any (iTXt preferred; tEXt and
/// zTXt accepted for files written by other tools).
fn find_settings(info: &png::Info<'_>) -> Result<Option<String>, png::DecodingError> {
    if let Some(c) = info.utf8_text.iter().find(|c| c.keyword == SETTINGS_KEY) {
        return c.get_text().map(Some);
    }
    if let Some(c) = info.uncompressed_latin1_text.iter().find(|c| c.keyword == SETTINGS_KEY) {
        return Ok(Some(c.text.clone()));
    }
    if let Some(c) = info.compressed_latin1_text.iter().find(|c| c.keyword == SETTINGS_KEY) {
        return c.get_text().map(Some);
    }
    Ok(None)
}

/// Settings from a settings file (JSON) or from a clipcanvas PNG's metadata
/// ([`PngMeta`](crate::settings::png::PngMeta)).
pub fn read_settings_file(path: &Path) -> Result<crate::settings::RunSettings, ExportError> {
    let bad = |msg: String| ExportError::Input { path: path.to_path_buf(), msg };
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let text = if is_png {
        read_png_metadata(path)?.ok_or_else(|| bad("this PNG holds no clipcanvas settings".into()))?
    } else {
        std::fs::read_to_string(path).map_err(|source| ExportError::Read { path: path.to_path_buf(), source })?
    };
    crate::settings::png::settings_from_text(&text).map_err(bad)
}

/// Read back the clipcanvas metadata of a PNG (None if the PNG has none; an error if the
/// file is not a readable PNG). The whole file is read, so a truncated PNG is an error and
/// text chunks after the image data are found too.
pub fn read_png_metadata(path: &Path) -> Result<Option<String>, ExportError> {
    let file = File::open(path).map_err(|source| ExportError::Read { path: path.to_path_buf(), source })?;
    let not_png = |e: png::DecodingError| match e {
        png::DecodingError::IoError(source) if source.kind() != io::ErrorKind::UnexpectedEof => {
            ExportError::Read { path: path.to_path_buf(), source }
        }
        other => ExportError::NotPng { path: path.to_path_buf(), msg: other.to_string() },
    };
    let mut reader = png::Decoder::new(BufReader::new(file)).read_info().map_err(not_png)?;
    reader.finish().map_err(not_png)?;
    find_settings(reader.info()).map_err(not_png)
}

// ---------------------------------------------------------------------------------------
// Frame sequences
// ---------------------------------------------------------------------------------------

/// A numbered frame sequence in a folder: `frame_000001.png`, ... (the number is the
/// iteration; zero-padded to six digits so names sort in order). Each frame is written
/// atomically with [`write_png`].
#[derive(Debug)]
pub struct FrameSequence {
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

impl FrameSequence {
    /// Creates the folder (and its parents) if needed.
    pub fn create(dir: &Path) -> Result<Self, ExportError> {
        std::fs::create_dir_all(dir).map_err(|source| ExportError::Write { path: dir.to_path_buf(), source })?;
        Ok(Self { dir: dir.to_path_buf(), paths: Vec::new() })
    }

    /// Writes the frame of `iteration` and returns its path. Writing the same iteration
    /// again replaces the file and does not repeat it in [`FrameSequence::paths`].
    pub fn push(&mut self, iteration: usize, img: &RgbImage, metadata: Option<&str>) -> Result<PathBuf, ExportError> {
        let path = self.dir.join(format!("frame_{iteration:06}.png"));
        write_png(&path, img, metadata)?;
        if !self.paths.contains(&path) {
            self.paths.push(path.clone());
        }
        Ok(path)
    }

    /// The frames written so far, in the order they were pushed.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The folder the frames go in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

// ---------------------------------------------------------------------------------------
// GIF
// ---------------------------------------------------------------------------------------

/// Checks a frame list is non-empty, non-degenerate and of one size; returns that size.
fn check_frames(path: &Path, frames: &[RgbImage]) -> Result<(u32, u32), ExportError> {
    let input = |msg: String| ExportError::Input { path: path.to_path_buf(), msg };
    let first = frames.first().ok_or_else(|| input("no frames to write".to_string()))?;
    let (w, h) = first.dimensions();
    if w == 0 || h == 0 {
        return Err(input(format!("cannot write empty {w}×{h} frames")));
    }
    if let Some((i, f)) = frames.iter().enumerate().find(|(_, f)| f.dimensions() != (w, h)) {
        let (fw, fh) = f.dimensions();
        return Err(input(format!("frame {i} is {fw}×{fh}, expected {w}×{h} like frame 0")));
    }
    Ok((w, h))
}

/// A writer that remembers its first error. The GIF encoder writes its trailer when
/// dropped and discards any error doing so; this latch lets us notice.
struct ErrorLatch<W: Write> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> ErrorLatch<W> {
    fn latch(&mut self, r: io::Result<usize>) -> io::Result<usize> {
        r.inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

impl<W: Write> Write for ErrorLatch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.latch(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush().map(|()| 0);
        self.latch(r).map(|_| ())
    }
}

/// Quantisation speed for GIF frames: 1 is slowest/best, 30 fastest; 10 is the gif
/// crate's recommended balance.
const GIF_SPEED: i32 = 10;

/// An animated GIF from frames, no external program, written atomically; `delay_ms` per
/// frame (GIF stores hundredths of a second, so it is rounded to 10 ms); loops forever.
pub fn write_gif(path: &Path, frames: &[RgbImage], delay_ms: u32) -> Result<(), ExportError> {
    check_frames(path, frames)?;
    write_atomic_with(path, |w| {
        let map = |e: image::ImageError| match e {
            image::ImageError::IoError(source) => ExportError::Write { path: path.to_path_buf(), source },
            other => ExportError::Encode { path: path.to_path_buf(), format: "GIF", msg: other.to_string() },
        };
        let mut latch = ErrorLatch { inner: w, error: None };
        {
            let mut enc = GifEncoder::new_with_speed(&mut latch, GIF_SPEED);
            enc.set_repeat(Repeat::Infinite).map_err(map)?;
            let delay = Delay::from_numer_denom_ms(delay_ms, 1);
            for f in frames {
                let rgba: RgbaImage = f.convert();
                enc.encode_frame(Frame::from_parts(rgba, 0, 0, delay)).map_err(map)?;
            }
            // Dropping the encoder writes the GIF trailer.
        }
        match latch.error {
            Some(source) => Err(ExportError::Write { path: path.to_path_buf(), source }),
            None => Ok(()),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Video
// ---------------------------------------------------------------------------------------

/// The first executable called `name` on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    let exe_names: Vec<String> =
        if cfg!(windows) { vec![format!("{name}.exe"), name.to_string()] } else { vec![name.to_string()] };
    std::env::split_paths(&paths)
        .filter(|dir| !dir.as_os_str().is_empty())
        .flat_map(|dir| exe_names.iter().map(move |n| dir.join(n)))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// The last non-empty line of ffmpeg's error output, or a fallback.
fn last_line(stderr: &str, fallback: String) -> String {
    stderr.lines().map(str::trim).rfind(|l| !l.is_empty()).map_or(fallback, str::to_string)
}

/// Streams frames to ffmpeg (found on PATH) as raw RGB24 over stdin, H.264 yuv420p mp4
/// (odd sides are padded by one black pixel, as yuv420p needs even dimensions), written to
/// a temporary name then renamed. If ffmpeg is not on PATH returns
/// [`ExportError::FfmpegMissing`].
pub fn write_video(path: &Path, frames: &[RgbImage], fps: u32) -> Result<(), ExportError> {
    let (w, h) = check_frames(path, frames)?;
    if fps == 0 {
        return Err(ExportError::Input { path: path.to_path_buf(), msg: "frame rate must be at least 1".to_string() });
    }
    let ffmpeg = find_on_path("ffmpeg").ok_or(ExportError::FfmpegMissing)?;
    write_video_with(&ffmpeg, path, frames, (w, h), fps)
}

/// [`write_video`] with a given ffmpeg executable (frames already checked).
fn write_video_with(
    ffmpeg: &Path,
    path: &Path,
    frames: &[RgbImage],
    (w, h): (u32, u32),
    fps: u32,
) -> Result<(), ExportError> {
    let (temp, file) = create_temp_sibling(path)?;
    drop(file);
    let result = run_ffmpeg(ffmpeg, &temp, path, frames, (w, h), fps).and_then(|()| {
        // ffmpeg closed the file; make its contents durable before the rename.
        let synced = File::open(&temp).and_then(|f| f.sync_all());
        synced.map_err(|source| ExportError::Write { path: path.to_path_buf(), source })
    });
    match result {
        Ok(()) => Ok(commit(&temp, path)?),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Runs one ffmpeg encode of `frames` into `temp` (which exists, empty).
fn run_ffmpeg(
    ffmpeg: &Path,
    temp: &Path,
    path: &Path,
    frames: &[RgbImage],
    (w, h): (u32, u32),
    fps: u32,
) -> Result<(), ExportError> {
    let failed = |msg: String| ExportError::Ffmpeg { path: path.to_path_buf(), msg };
    let mut child = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            &format!("{w}x{h}"),
            "-r",
            &fps.to_string(),
            "-i",
            "pipe:0",
        ])
        .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .args(["-movflags", "+faststart", "-f", "mp4"])
        .arg(temp)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ExportError::FfmpegMissing
            } else {
                failed(format!("cannot start {}: {e}", ffmpeg.display()))
            }
        })?;

    // Drain stderr on a thread so a chatty ffmpeg can never block on a full pipe while we
    // block writing its stdin.
    // Should the thread not start, the pipe closes and ffmpeg fails with an error.
    let stderr_thread = child.stderr.take().and_then(|mut err| {
        std::thread::Builder::new()
            .name("clipcanvas-ffmpeg-stderr".into())
            .spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                s
            })
            .ok()
    });
    let mut write_err = None;
    if let Some(stdin) = child.stdin.take() {
        let mut stdin = BufWriter::with_capacity(1 << 20, stdin);
        for f in frames {
            if let Err(e) = stdin.write_all(f.as_raw()) {
                write_err = Some(e);
                break;
            }
        }
        if write_err.is_none() {
            write_err = stdin.flush().err();
        }
        // Dropping stdin closes the pipe: ffmpeg sees the end of the stream.
    }
    let status = child.wait().map_err(|e| failed(format!("cannot wait for ffmpeg: {e}")))?;
    let stderr = stderr_thread.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(failed(last_line(&stderr, format!("exited with {status}"))));
    }
    if let Some(e) = write_err {
        return Err(failed(last_line(&stderr, format!("cannot stream frames: {e}"))));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------

/// sha256 of a file as lowercase hex (see [`crate::files::file_sha256`]).
pub fn file_sha256(path: &Path) -> Result<String, ExportError> {
    Ok(crate::files::file_sha256(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::GifDecoder;
    use image::{AnimationDecoder, Rgb};

    fn gradient(w: u32, h: u32, seed: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([((x * 7) % 256) as u8 ^ seed, ((y * 13) % 256) as u8, ((x + y) % 256) as u8 ^ seed])
        })
    }

    fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb(c))
    }

    /// Everything in `dir`, names only, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn png_round_trip_pixels_and_unicode_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        let img = gradient(37, 21, 5);
        let meta = serde_json::json!({
            "prompt": "un château sous la pluie — 雨の城 🌧️",
            "seed": 42u64,
            "models": [{"name": "vqgan_imagenet_f16_16384", "sha256": "ab".repeat(32)}],
        })
        .to_string();
        write_png(&path, &img, Some(&meta)).unwrap();

        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), img.dimensions());
        assert_eq!(back.as_raw(), img.as_raw());
        let read = read_png_metadata(&path).unwrap().unwrap();
        assert_eq!(read, meta);
        let v: serde_json::Value = serde_json::from_str(&read).unwrap();
        assert_eq!(v["prompt"], "un château sous la pluie — 雨の城 🌧️");

        // The Software chunk is there too.
        let reader = png::Decoder::new(BufReader::new(File::open(&path).unwrap())).read_info().unwrap();
        let sw = reader.info().uncompressed_latin1_text.iter().find(|c| c.keyword == "Software").unwrap();
        assert_eq!(sw.text, format!("clipcanvas {}", env!("CARGO_PKG_VERSION")));
        // Only the destination is left in the folder.
        assert_eq!(listing(dir.path()), ["out.png"]);
    }

    #[test]
    fn png_overwrite_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        write_png(&path, &gradient(64, 64, 1), Some("{\"a\":1}")).unwrap();
        write_png(&path, &solid(3, 2, [9, 8, 7]), None).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), solid(3, 2, [9, 8, 7]));
        assert_eq!(read_png_metadata(&path).unwrap(), None);
        assert_eq!(listing(dir.path()), ["out.png"]);
    }

    #[test]
    fn png_without_metadata_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.png");
        write_png(&ours, &gradient(8, 8, 0), None).unwrap();
        assert_eq!(read_png_metadata(&ours).unwrap(), None);
        // A PNG from another encoder, with no text chunks at all.
        let theirs = dir.path().join("theirs.png");
        gradient(8, 8, 0).save(&theirs).unwrap();
        assert_eq!(read_png_metadata(&theirs).unwrap(), None);
    }

    #[test]
    fn non_png_and_truncated_png_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.png");
        std::fs::write(&path, b"this is not a png at all").unwrap();
        let err = read_png_metadata(&path).unwrap_err();
        assert!(matches!(err, ExportError::NotPng { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        let good = dir.path().join("good.png");
        write_png(&good, &gradient(40, 40, 3), Some("{}")).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.png");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_png_metadata(&cut).unwrap_err();
        assert!(err.to_string().contains(&cut.display().to_string()), "{err}");

        let missing = dir.path().join("missing.png");
        let err = read_png_metadata(&missing).unwrap_err();
        assert!(matches!(err, ExportError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.png"), "{err}");
    }

    #[test]
    fn failing_atomic_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.bin");
        let err = write_atomic(&path, |w| {
            w.write_all(&[7u8; 200_000])?; // more than the buffer: bytes reach the temp file
            Err(io::Error::other("simulated failure midway"))
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("simulated failure midway") && msg.contains("result.bin"), "{msg}");
        assert!(!path.exists());
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

        // An existing destination survives a failed overwrite untouched.
        std::fs::write(&path, b"previous good result").unwrap();
        write_atomic(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(std::fs::read(&path).unwrap(), b"previous good result");
        assert_eq!(listing(dir.path()), ["result.bin"]);

        // And a successful one replaces it.
        write_atomic(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(listing(dir.path()), ["result.bin"]);
    }

    #[test]
    fn disk_full_error_is_reported_and_nothing_left() {
        // A real ENOSPC without mounting a tiny filesystem: the closure copies into
        // /dev/full, whose writes fail with "No space left on device", and returns that
        // error as a full disk under the temp file would.
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: no /dev/full");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frame.png");
        let err = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            let mut dev = std::fs::OpenOptions::new().write(true).open(full)?;
            dev.write_all(&[0u8; 4096])?;
            dev.flush()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("No space left on device"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'));
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn missing_or_readonly_directory_gives_one_line_error() {
        let dir = tempfile::tempdir().unwrap();
        let img = gradient(4, 4, 0);

        let missing = dir.path().join("no/such/dir/out.png");
        let err = write_png(&missing, &img, None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(msg.contains("No such file or directory") || msg.contains("cannot find the path"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        // A "folder" that is a file.
        let file = dir.path().join("plain.txt");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("out.png");
        let msg = write_gif(&under_file, std::slice::from_ref(&img), 100).unwrap_err().to_string();
        assert!(msg.contains(&under_file.display().to_string()) && !msg.contains('\n'), "{msg}");

        // A read-only folder (root ignores permissions, so check it really is one first).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro");
            std::fs::create_dir(&ro).unwrap();
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
            if File::create(ro.join("probe")).is_ok() {
                eprintln!("skipped read-only check: running with permission to write anyway (root)");
            } else {
                let path = ro.join("out.png");
                let msg = write_png(&path, &img, None).unwrap_err().to_string();
                assert!(msg.contains(&path.display().to_string()) && msg.contains("ermission denied"), "{msg}");
                assert!(!msg.contains('\n'), "{msg}");
                let seq = FrameSequence::create(&ro.join("frames")).unwrap_err().to_string();
                assert!(seq.contains("frames") && !seq.contains('\n'), "{seq}");
            }
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn frame_sequence_names_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let frames_dir = dir.path().join("run/frames");
        let mut seq = FrameSequence::create(&frames_dir).unwrap();
        assert!(frames_dir.is_dir());
        assert!(seq.paths().is_empty());
        for (i, it) in [1usize, 2, 10, 250].into_iter().enumerate() {
            let meta = format!("{{\"iteration\":{it}}}");
            let p = seq.push(it, &gradient(6, 4, u8::try_from(i).unwrap()), Some(&meta)).unwrap();
            assert_eq!(read_png_metadata(&p).unwrap().unwrap(), meta);
        }
        let names: Vec<String> =
            seq.paths().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["frame_000001.png", "frame_000002.png", "frame_000010.png", "frame_000250.png"]);
        assert!(seq.paths().iter().all(|p| p.parent() == Some(frames_dir.as_path())));
        // Sorted names are the push order, and the folder holds nothing else.
        assert_eq!(listing(&frames_dir), names);
        // Re-writing an iteration replaces it without duplicating the entry.
        seq.push(10, &solid(6, 4, [1, 2, 3]), None).unwrap();
        assert_eq!(seq.paths().len(), 4);
        assert_eq!(image::open(&seq.paths()[2]).unwrap().to_rgb8(), solid(6, 4, [1, 2, 3]));
        // Creating over an existing folder is fine.
        FrameSequence::create(&frames_dir).unwrap();
    }

    #[test]
    fn gif_decodes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anim.gif");
        let colours = [[220u8, 30, 40], [20, 200, 60], [30, 40, 210], [250, 250, 250]];
        let frames: Vec<RgbImage> = colours.iter().map(|&c| solid(33, 17, c)).collect();
        write_gif(&path, &frames, 80).unwrap();
        assert_eq!(listing(dir.path()), ["anim.gif"]);

        let dec = GifDecoder::new(BufReader::new(File::open(&path).unwrap())).unwrap();
        let decoded = dec.into_frames().collect_frames().unwrap();
        assert_eq!(decoded.len(), colours.len());
        for (f, c) in decoded.iter().zip(colours) {
            assert_eq!(f.buffer().dimensions(), (33, 17));
            let (num, den) = f.delay().numer_denom_ms();
            assert_eq!(num / den, 80);
            for p in f.buffer().pixels() {
                for k in 0..3 {
                    assert!((i32::from(p[k]) - i32::from(c[k])).abs() <= 8, "{p:?} vs {c:?}");
                }
                assert_eq!(p[3], 255);
            }
        }
        // Loops forever: the NETSCAPE2.0 extension with a loop count of 0.
        let bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(11).position(|w| w == b"NETSCAPE2.0").unwrap();
        assert_eq!(&bytes[at + 11..at + 16], &[3, 1, 0, 0, 0]);
    }

    #[test]
    fn gif_and_video_reject_bad_frame_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gif");
        let err = write_gif(&path, &[], 100).unwrap_err();
        assert!(err.to_string().contains("no frames"), "{err}");
        let err = write_gif(&path, &[solid(4, 4, [0; 3]), solid(5, 4, [0; 3])], 100).unwrap_err();
        assert!(err.to_string().contains("frame 1 is 5×4"), "{err}");
        let err = write_video(&dir.path().join("x.mp4"), &[], 10).unwrap_err();
        assert!(matches!(err, ExportError::Input { .. }), "{err:?}");
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn sha256_of_known_strings() {
        let dir = tempfile::tempdir().unwrap();
        let abc = dir.path().join("abc.txt");
        std::fs::write(&abc, b"abc").unwrap();
        assert_eq!(file_sha256(&abc).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(file_sha256(&empty).unwrap(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        // Larger than the buffer: a million 'a's, the FIPS 180-2 long test vector.
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 1_000_000]).unwrap();
        let big2 = dir.path().join("big2");
        std::fs::write(&big2, vec![b'a'; 3 << 20]).unwrap();
        assert_eq!(file_sha256(&big).unwrap(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        assert_eq!(file_sha256(&big2).unwrap().len(), 64);
        let err = file_sha256(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn video_with_or_without_ffmpeg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.mp4");
        // Odd sides exercise the padding.
        let frames: Vec<RgbImage> = (0..3).map(|i| gradient(33, 17, i * 40)).collect();
        match write_video(&path, &frames, 12) {
            Ok(()) => {
                assert!(find_on_path("ffmpeg").is_some());
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.is_empty());
                assert_eq!(&bytes[4..8], b"ftyp", "not an mp4");
                assert_eq!(listing(dir.path()), ["run.mp4"]);
            }
            Err(ExportError::FfmpegMissing) => {
                assert!(find_on_path("ffmpeg").is_none());
                assert_eq!(
                    ExportError::FfmpegMissing.to_string(),
                    "ffmpeg not found on PATH: install ffmpeg to write videos, or use --gif/--frames"
                );
                assert!(listing(dir.path()).is_empty());
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    /// A stand-in ffmpeg: a shell script with the given body, run with ffmpeg's arguments.
    #[cfg(unix)]
    fn fake_ffmpeg(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("fake-ffmpeg");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[cfg(unix)]
    #[test]
    fn video_pipeline_with_a_fake_ffmpeg() {
        let tools = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.mp4");
        let frames: Vec<RgbImage> = (0..3).map(|i| gradient(33, 17, i)).collect();
        let frame_bytes = 33 * 17 * 3;

        // Success: the script copies stdin to its last argument (the temp file); all
        // frames arrive, raw, and the result is renamed into place with nothing else left.
        let ok = fake_ffmpeg(tools.path(), r#"for a; do out="$a"; done; cat > "$out""#);
        write_video_with(&ok, &path, &frames, (33, 17), 12).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 3 * frame_bytes);
        assert_eq!(&got[..frame_bytes], frames[0].as_raw().as_slice());
        assert_eq!(listing(dir.path()), ["run.mp4"]);

        // Failure after reading everything: the last stderr line is the message, the temp
        // file is gone and the earlier video is untouched.
        let bad = fake_ffmpeg(
            tools.path(),
            "cat > /dev/null; echo 'some noise' >&2; echo 'Unknown encoder libx264' >&2; exit 1",
        );
        let err = write_video_with(&bad, &path, &frames, (33, 17), 12).unwrap_err();
        assert!(matches!(err, ExportError::Ffmpeg { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("Unknown encoder libx264") && msg.contains("run.mp4") && !msg.contains('\n'), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), got);
        assert_eq!(listing(dir.path()), ["run.mp4"]);

        // ffmpeg dying without reading its input (broken pipe) is an error too, not a hang.
        let big: Vec<RgbImage> = (0..4).map(|i| gradient(512, 512, i)).collect();
        let quits = fake_ffmpeg(tools.path(), "echo 'bad arguments' >&2; exit 1");
        let err = write_video_with(&quits, &dir.path().join("b.mp4"), &big, (512, 512), 12).unwrap_err();
        assert!(err.to_string().contains("bad arguments"), "{err}");
        assert_eq!(listing(dir.path()), ["run.mp4"]);

        // Exiting 0 without consuming the frames is not taken as success.
        let lazy = fake_ffmpeg(tools.path(), "exit 0");
        let err = write_video_with(&lazy, &dir.path().join("c.mp4"), &big, (512, 512), 12).unwrap_err();
        assert!(err.to_string().contains("cannot stream frames"), "{err}");
        assert_eq!(listing(dir.path()), ["run.mp4"]);
    }
}
