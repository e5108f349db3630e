//! Writing what a run produces — PNGs with their settings embedded (JPEG and WebP
//! without), numbered frame sequences, animated GIFs, H.264 videos through ffmpeg, and
//! model-file hashes — safely.
//!
//! Every file is written atomically: into a dot-prefixed temporary sibling in the same
//! folder, flushed and fsynced, then renamed over the destination. On any error the
//! temporary file is removed and the destination is left as it was, so a crash or a full
//! disk never leaves a half-written image where a good one (or nothing) was.
//!
//! This module sits beside the engine: it knows images (`image::RgbImage`) and files,
//! nothing of models, tensors or the UI.

pub mod sheet;

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
    /// A file refused before it was read: not a regular file, or too large for its kind.
    #[error(transparent)]
    Refused(crate::files::FileError),
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
            e @ (FileError::NotRegular { .. } | FileError::TooLarge { .. }) => Self::Refused(e),
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

/// The image's size, or an error naming `path` for an image with no pixels.
fn non_empty(path: &Path, img: &RgbImage) -> Result<(u32, u32), ExportError> {
    let (width, height) = img.dimensions();
    if width == 0 || height == 0 {
        return Err(ExportError::Input {
            path: path.to_path_buf(),
            msg: format!("cannot write an empty {width}×{height} image"),
        });
    }
    Ok((width, height))
}

/// Write a PNG atomically (temporary file in the same folder, fsync, rename) with
/// `metadata` (a JSON string: settings, seed, model names and hashes) in an iTXt (UTF-8)
/// text chunk under [`SETTINGS_KEY`], plus a "Software" tEXt chunk "clipcanvas <version>".
/// The chunks go before the image data, so readers find them without decoding pixels.
pub fn write_png(path: &Path, img: &RgbImage, metadata: Option<&str>) -> Result<(), ExportError> {
    let (width, height) = non_empty(path, img)?;
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

/// The most bytes a PNG's clipcanvas text may inflate to (what clipcanvas writes is a few
/// kilobytes); a compressed chunk that inflates further is refused as it inflates.
pub const MAX_PNG_TEXT_BYTES: usize = 8 << 20;
/// What the PNG reader may allocate for the chunks it keeps (text above all; the image
/// data is skipped, never inflated).
const PNG_CHUNK_BYTES: usize = 32 << 20;

/// The clipcanvas text of a decoded PNG's text chunks, if any (iTXt preferred; tEXt and
/// zTXt accepted for files written by other tools). A compressed chunk is inflated to at
/// most [`MAX_PNG_TEXT_BYTES`].
fn find_settings(info: &png::Info<'_>) -> Result<Option<String>, String> {
    let inflate_err = |e: png::DecodingError| match e {
        png::DecodingError::Format(f) if f.to_string().contains("decompression space") => {
            format!("its clipcanvas text inflates past {} MiB", MAX_PNG_TEXT_BYTES >> 20)
        }
        other => format!("its clipcanvas text cannot be read ({other})"),
    };
    if let Some(c) = info.utf8_text.iter().find(|c| c.keyword == SETTINGS_KEY) {
        let mut c = c.clone();
        c.decompress_text_with_limit(MAX_PNG_TEXT_BYTES).map_err(inflate_err)?;
        return c.get_text().map(Some).map_err(inflate_err);
    }
    if let Some(c) = info.uncompressed_latin1_text.iter().find(|c| c.keyword == SETTINGS_KEY) {
        return Ok(Some(c.text.clone()));
    }
    if let Some(c) = info.compressed_latin1_text.iter().find(|c| c.keyword == SETTINGS_KEY) {
        let mut c = c.clone();
        c.decompress_text_with_limit(MAX_PNG_TEXT_BYTES).map_err(inflate_err)?;
        return c.get_text().map(Some).map_err(inflate_err);
    }
    Ok(None)
}

/// Settings from a settings file (JSON) or from a clipcanvas PNG's metadata
/// ([`PngMeta`](crate::settings::png::PngMeta)). Only a regular file is read (a FIFO or a
/// device is refused), a settings file of at most
/// [`MAX_SETTINGS_BYTES`](crate::files::MAX_SETTINGS_BYTES), a leading byte-order mark
/// dropped. Relative image paths in it are taken from the file's folder
/// ([`resolve_from_file`]).
pub fn read_settings_file(path: &Path) -> Result<crate::settings::RunSettings, ExportError> {
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        return png_settings(path)?.ok_or_else(|| ExportError::Input {
            path: path.to_path_buf(),
            msg: "this PNG holds no clipcanvas settings".into(),
        });
    }
    let text = crate::files::read_text_bounded(path, crate::files::MAX_SETTINGS_BYTES, "settings file")?;
    settings_of_file(path, &text)
}

/// The settings of a clipcanvas PNG (`None` for a PNG without them), read as
/// [`read_settings_file`] reads them.
pub fn png_settings(path: &Path) -> Result<Option<crate::settings::RunSettings>, ExportError> {
    match read_png_metadata(path)? {
        Some(text) => settings_of_file(path, &text).map(Some),
        None => Ok(None),
    }
}

/// Settings from the text of the file at `path`, its relative image paths resolved.
fn settings_of_file(path: &Path, text: &str) -> Result<crate::settings::RunSettings, ExportError> {
    let mut settings = crate::settings::png::settings_from_text(text)
        .map_err(|msg| ExportError::Input { path: path.to_path_buf(), msg })?;
    resolve_from_file(&mut settings, path);
    Ok(settings)
}

/// Takes the relative image paths of settings read from `file` (the init image, the image
/// prompts) from the file's folder, as a document's links are. A path found only from the
/// current folder stays as it is: PNGs record paths as they were typed, relative to where
/// their run was started.
pub fn resolve_from_file(settings: &mut crate::settings::RunSettings, file: &Path) {
    let dir = crate::files::parent_dir(file);
    settings.resolve_relative_to(dir, |p| !dir.join(p).exists() && p.exists());
}

/// Read back the clipcanvas metadata of a PNG (None if the PNG has none; an error if the
/// file is not a readable PNG). The whole file is read, so a truncated PNG is an error and
/// text chunks after the image data are found too; the image data is skipped, the chunks
/// kept are bounded ([`PNG_CHUNK_BYTES`]) and so is the inflated text
/// ([`MAX_PNG_TEXT_BYTES`]): a decompression bomb is refused, not inflated.
pub fn read_png_metadata(path: &Path) -> Result<Option<String>, ExportError> {
    let (file, _) = crate::files::open_regular(path)?;
    let not_png = |e: png::DecodingError| match e {
        png::DecodingError::IoError(source) if source.kind() != io::ErrorKind::UnexpectedEof => {
            ExportError::Read { path: path.to_path_buf(), source }
        }
        png::DecodingError::LimitsExceeded => ExportError::NotPng {
            path: path.to_path_buf(),
            msg: format!("its text chunks hold more than the {} MiB clipcanvas reads", PNG_CHUNK_BYTES >> 20),
        },
        other => ExportError::NotPng { path: path.to_path_buf(), msg: other.to_string() },
    };
    let mut decoder = png::Decoder::new_with_limits(BufReader::new(file), png::Limits { bytes: PNG_CHUNK_BYTES });
    decoder.set_ignore_iccp_chunk(true);
    let mut reader = decoder.read_info().map_err(not_png)?;
    reader.finish().map_err(not_png)?;
    find_settings(reader.info()).map_err(|msg| ExportError::NotPng { path: path.to_path_buf(), msg })
}

// ---------------------------------------------------------------------------------------
// Still images by extension
// ---------------------------------------------------------------------------------------

/// The still-image formats a run's image can be written in, chosen by the file's
/// extension the way image editors choose: PNG (the only one that keeps the settings),
/// JPEG and lossless WebP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    WebP,
}

impl ImageFormat {
    /// The format a path names: `.png` (or no extension) PNG, `.jpg`/`.jpeg` JPEG,
    /// `.webp` WebP, any case. Any other extension is an error: writing PNG bytes under
    /// a name that promises another format makes a file other programs misread.
    pub fn for_path(path: &Path) -> Result<Self, ExportError> {
        let Some(ext) = path.extension() else { return Ok(Self::Png) };
        let ext = ext.to_string_lossy().to_ascii_lowercase();
        match ext.as_str() {
            "png" => Ok(Self::Png),
            "jpg" | "jpeg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::WebP),
            _ => Err(ExportError::Input {
                path: path.to_path_buf(),
                msg: format!("cannot write an image as .{ext}: name it .png (which keeps the settings), .jpg or .webp"),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::WebP => "WebP",
        }
    }

    /// Whether the format keeps clipcanvas's settings (only PNG has the text chunk).
    pub fn keeps_settings(self) -> bool {
        self == Self::Png
    }
}

/// The JPEG quality images are written at (visually lossless for these images).
const JPEG_QUALITY: u8 = 95;

/// Writes an image atomically in the format its extension names ([`ImageFormat::for_path`]):
/// a PNG with `metadata` (see [`write_png`]), a JPEG at quality 95 or a lossless WebP.
/// JPEG and WebP files do not hold the metadata. Returns the format written.
pub fn write_image(path: &Path, img: &RgbImage, metadata: Option<&str>) -> Result<ImageFormat, ExportError> {
    use image::ImageEncoder;
    let format = ImageFormat::for_path(path)?;
    let (width, height) = img.dimensions();
    let rgb = image::ExtendedColorType::Rgb8;
    match format {
        ImageFormat::Png => write_png(path, img, metadata)?,
        ImageFormat::Jpeg => write_encoded(path, format, img, |w| {
            image::codecs::jpeg::JpegEncoder::new_with_quality(w, JPEG_QUALITY).write_image(
                img.as_raw(),
                width,
                height,
                rgb,
            )
        })?,
        ImageFormat::WebP => write_encoded(path, format, img, |w| {
            image::codecs::webp::WebPEncoder::new_lossless(w).write_image(img.as_raw(), width, height, rgb)
        })?,
    }
    Ok(format)
}

/// Writes `img` atomically through an `image` encoder, keeping I/O errors' messages.
fn write_encoded(
    path: &Path,
    format: ImageFormat,
    img: &RgbImage,
    encode: impl FnOnce(&mut BufWriter<File>) -> image::ImageResult<()>,
) -> Result<(), ExportError> {
    non_empty(path, img)?;
    write_atomic_with(path, |w| {
        encode(w).map_err(|e| match e {
            image::ImageError::IoError(source) => ExportError::Write { path: path.to_path_buf(), source },
            other => ExportError::Encode { path: path.to_path_buf(), format: format.name(), msg: other.to_string() },
        })
    })
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

/// Checks that a path for a GIF or video has no extension or one of that format's:
/// `.gif` for [`write_gif`], `.mp4`, `.m4v` or `.mov` for [`write_video`] (an MP4
/// container), so no file holds bytes its name misdescribes.
pub fn check_animation_path(path: &Path, video: bool) -> Result<(), ExportError> {
    let Some(ext) = path.extension() else { return Ok(()) };
    let ext = ext.to_string_lossy().to_ascii_lowercase();
    let (allowed, what): (&[&str], _) =
        if video { (&["mp4", "m4v", "mov"], "an MP4 video") } else { (&["gif"], "a GIF") };
    if allowed.contains(&ext.as_str()) {
        return Ok(());
    }
    Err(ExportError::Input {
        path: path.to_path_buf(),
        msg: format!("cannot write {what} as .{ext}: name it .{}", allowed[0]),
    })
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

/// Checks that [`write_video`] will find ffmpeg on PATH.
pub fn check_ffmpeg() -> Result<(), ExportError> {
    find_on_path("ffmpeg").map(drop).ok_or(ExportError::FfmpegMissing)
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

/// Extracts up to `max_frames` frames of `video` with ffmpeg (found on PATH) into `dir`
/// (created) as `000000.png`, `000001.png`, …, for restyling; returns how many it wrote.
/// If ffmpeg is not on PATH returns [`ExportError::FfmpegMissing`].
pub fn extract_frames(video: &Path, dir: &Path, max_frames: usize) -> Result<usize, ExportError> {
    let ffmpeg = find_on_path("ffmpeg").ok_or(ExportError::FfmpegMissing)?;
    extract_frames_with(&ffmpeg, video, dir, max_frames)
}

/// [`extract_frames`] with a given ffmpeg executable.
fn extract_frames_with(ffmpeg: &Path, video: &Path, dir: &Path, max_frames: usize) -> Result<usize, ExportError> {
    crate::files::check_regular(video)?;
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Write { path: dir.to_path_buf(), source })?;
    let failed = |msg: String| ExportError::Ffmpeg { path: video.to_path_buf(), msg };
    let out = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(video)
        .args(["-frames:v", &max_frames.to_string(), "-start_number", "0"])
        .arg(dir.join("%06d.png"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| failed(format!("cannot start {}: {e}", ffmpeg.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(failed(last_line(&stderr, format!("exited with {}", out.status))));
    }
    let count = std::fs::read_dir(dir)
        .map_err(|source| ExportError::Read { path: dir.to_path_buf(), source })?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    if count == 0 {
        return Err(failed("it gave no frames".into()));
    }
    Ok(count)
}

// ---------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------

/// sha256 of a file as lowercase hex (see [`crate::files::file_sha256`]).
pub fn file_sha256(path: &Path) -> Result<String, ExportError> {
    Ok(crate::files::file_sha256(path)?)
}

#[cfg(test)]
mod tests;
