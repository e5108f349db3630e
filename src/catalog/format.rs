//! What a model file really holds. Every downloaded file passes this check before it is
//! installed, `models verify` repeats it beside the hashes, and `models download` runs
//! it on files already present, so a mirror's error page, a file of zeros or a Git LFS
//! pointer is never installed or vouched for under a model file's name.
//!
//! The format a file must have follows from its name (and the model's kind): a PyTorch
//! zip checkpoint for `.bin`/`.ckpt`/`.pt`/`.pth`, a safetensors file, a CLIP
//! `config.json`, a CLIP `tokenizer.json`, a taming-transformers YAML. "Has the format"
//! means the loaders clipcanvas runs accept it: the torch archive reader finds and parses
//! `data.pkl` (and a `.ckpt`'s `state_dict`), the safetensors header and offsets check
//! out, the config, tokenizer and YAML parsers take it. Tensor shapes are left to the
//! model loaders. When a file fails, the message says what it looks like instead ("an
//! HTML page", "12288 bytes of zeros", "a Git LFS pointer"), read from its first bytes.
//! [`head_problem`] is the same judgement on the first bytes alone, so a download can be
//! abandoned as soon as they arrive.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::entries::ModelKind;
use crate::models::clip::ClipConfig;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vqgan::VqganConfig;
use crate::models::weights::torch::TorchArchive;
use crate::models::weights::WeightFile;

/// How many first bytes are read to tell what a file looks like.
pub const HEAD_LEN: usize = 4096;
/// The largest config, YAML or tokenizer read whole (a CLIP tokenizer.json is 2.2 MB).
const MAX_TEXT_LEN: u64 = 64 << 20;
/// The context length the tokenizer check uses (every CLIP model's).
const CONTEXT_LENGTH: usize = 77;

/// The format a model file must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `torch.save` zip; `lightning`: its tensors are under `state_dict` (`.ckpt`).
    TorchZip {
        lightning: bool,
    },
    Safetensors,
    ClipConfig,
    Tokenizer,
    VqganConfig,
    Json,
    /// A file of a kind clipcanvas does not read; only error pages and zeros are refused.
    Other,
}

impl Format {
    /// The format of file `name` of a `kind` model, by the rules the loaders open files by.
    pub fn of(kind: ModelKind, name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit_once('.').map_or("", |(_, e)| e);
        match ext {
            "safetensors" => Self::Safetensors,
            "ckpt" => Self::TorchZip { lightning: true },
            "bin" | "pt" | "pth" => Self::TorchZip { lightning: false },
            "yaml" | "yml" => Self::VqganConfig,
            "json" if lower == "tokenizer.json" => Self::Tokenizer,
            "json" if lower == "config.json" && kind == ModelKind::Clip => Self::ClipConfig,
            "json" => Self::Json,
            _ => Self::Other,
        }
    }

    /// "PyTorch checkpoint", for messages (each takes "a").
    pub fn name(self) -> &'static str {
        match self {
            Self::TorchZip { .. } => "PyTorch checkpoint",
            Self::Safetensors => "safetensors file",
            Self::ClipConfig => "CLIP config.json",
            Self::Tokenizer => "CLIP tokenizer.json",
            Self::VqganConfig => "taming-transformers YAML config",
            Self::Json => "JSON file",
            Self::Other => "model file",
        }
    }
}

/// What the first bytes of a file look like.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sniff {
    Empty,
    Zeros,
    Html,
    Xml,
    LfsPointer,
    Zip,
    Gzip,
    Pickle,
    Safetensors,
    Json,
    Text(String),
    Binary,
}

impl Sniff {
    fn of(head: &[u8]) -> Self {
        if head.is_empty() {
            return Self::Empty;
        }
        if head.iter().all(|&b| b == 0) {
            return Self::Zeros;
        }
        let text = trim_start(head);
        let lower: Vec<u8> = text.iter().take(32).map(u8::to_ascii_lowercase).collect();
        let starts = |p: &str| lower.starts_with(p.as_bytes());
        if ["<!doctype html", "<html", "<head", "<body", "<!--", "<title", "<meta", "<script"].iter().any(|p| starts(p))
        {
            return Self::Html;
        }
        if starts("<?xml") || starts("<error") {
            return Self::Xml;
        }
        if head.starts_with(b"version https://git-lfs.github.com/spec") {
            return Self::LfsPointer;
        }
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            return Self::Zip;
        }
        if head.starts_with(b"\x1f\x8b") {
            return Self::Gzip;
        }
        if head[0] == 0x80 && head.get(1).is_some_and(|p| (2..=5).contains(p)) {
            return Self::Pickle;
        }
        if safetensors_header_len(head).is_some() {
            return Self::Safetensors;
        }
        if text.starts_with(b"{") || text.starts_with(b"[") {
            return Self::Json;
        }
        match std::str::from_utf8(text).or_else(|e| std::str::from_utf8(&text[..e.valid_up_to()])) {
            Ok(s) if !s.is_empty() && s.chars().take(256).all(|c| !c.is_control() || c.is_whitespace()) => {
                let first: String = s.lines().next().unwrap_or("").trim().chars().take(40).collect();
                Self::Text(first)
            }
            _ => Self::Binary,
        }
    }

    /// Whether these bytes can start a file of `format`.
    fn fits(&self, format: Format) -> bool {
        match format {
            Format::TorchZip { .. } => *self == Self::Zip,
            Format::Safetensors => *self == Self::Safetensors,
            Format::ClipConfig | Format::Tokenizer => *self == Self::Json,
            Format::Json => matches!(self, Self::Json),
            Format::VqganConfig => matches!(self, Self::Text(_) | Self::Json),
            Format::Other => !matches!(self, Self::Empty | Self::Zeros | Self::Html | Self::Xml | Self::LfsPointer),
        }
    }

    /// "an HTML page", "12288 bytes of zeros": what the file looks like. `len`: the file's
    /// size; `all_zero`: whether the whole file (not only its head) is zeros.
    fn describe(&self, len: Option<u64>, all_zero: bool) -> String {
        match self {
            Self::Empty => "an empty file".into(),
            Self::Zeros => match len {
                Some(n) if all_zero => format!("{n} bytes of zeros"),
                _ => "zeros".into(),
            },
            Self::Html => "an HTML page".into(),
            Self::Xml => "an XML document (a server's error message?)".into(),
            Self::LfsPointer => "a Git LFS pointer, not the file it points to".into(),
            Self::Zip => "a zip archive".into(),
            Self::Gzip => "gzip-compressed data".into(),
            Self::Pickle => "a bare Python pickle (a checkpoint saved before PyTorch 1.6?)".into(),
            Self::Safetensors => "a safetensors file".into(),
            Self::Json => "JSON".into(),
            Self::Text(first) if first.is_empty() => "blank text".into(),
            Self::Text(first) => format!("text beginning {first:?}"),
            Self::Binary => "binary data of an unknown kind".into(),
        }
    }
}

/// Skips a UTF-8 byte-order mark and leading whitespace.
fn trim_start(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A safetensors file starts with its header's length (u64, little-endian) and the
/// header's opening brace.
fn safetensors_header_len(head: &[u8]) -> Option<u64> {
    let len = u64::from_le_bytes(head.get(..8)?.try_into().ok()?);
    (len >= 2 && head.get(8) == Some(&b'{')).then_some(len)
}

/// Why the first bytes of a file named `name` (of a `kind` model) cannot start it, or
/// `None` if they can. `len`: the whole file's size, where known.
pub fn head_problem(kind: ModelKind, name: &str, head: &[u8], len: Option<u64>) -> Option<String> {
    problem_of(Format::of(kind, name), head, len, false)
}

fn problem_of(format: Format, head: &[u8], len: Option<u64>, all_zero: bool) -> Option<String> {
    let sniff = Sniff::of(head);
    if !sniff.fits(format) {
        return Some(format!("not a {}: it looks like {}", format.name(), sniff.describe(len, all_zero)));
    }
    if format == Format::Safetensors {
        let header = safetensors_header_len(head).unwrap_or(0);
        if let Some(total) = len.filter(|&total| header.saturating_add(8) > total) {
            return Some(format!(
                "not a usable safetensors file: its header claims {header} bytes, more than the file's {total}"
            ));
        }
    }
    None
}

/// Checks that the file at `path` has the format its name `name` calls for (the name is
/// given apart because a download is checked under its part file's name). `Err` is one
/// line: what is wrong, and what the file looks like instead.
pub fn check(kind: ModelKind, name: &str, path: &Path) -> Result<(), String> {
    let format = Format::of(kind, name);
    let unreadable = |e: std::io::Error| format!("unreadable ({e})");
    let mut file = File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let mut head = Vec::with_capacity(HEAD_LEN);
    file.by_ref().take(HEAD_LEN as u64).read_to_end(&mut head).map_err(unreadable)?;
    let all_zero = head.iter().all(|&b| b == 0) && rest_is_zero(&mut file).map_err(unreadable)?;
    if let Some(problem) = problem_of(format, &head, Some(len), all_zero) {
        return Err(problem);
    }
    drop(file);
    // The loaders' messages start with the path they were given: the part file's, here.
    let bare = |msg: String| {
        let prefix = format!("{}: ", path.display());
        msg.strip_prefix(&prefix).map(str::to_owned).unwrap_or(msg)
    };
    let unusable = |detail: String| format!("not a usable {}: {detail}", format.name());
    match format {
        Format::TorchZip { lightning } => TorchArchive::open(path, lightning.then_some("state_dict"))
            .map(drop)
            .map_err(|e| unusable(bare(e.to_string()))),
        Format::Safetensors => WeightFile::open_safetensors(path).map(drop).map_err(|e| {
            let msg = bare(e.to_string());
            let inner = msg.strip_prefix("not a valid safetensors file (").and_then(|m| m.strip_suffix(')'));
            unusable(inner.map(str::to_owned).unwrap_or(msg))
        }),
        Format::ClipConfig => ClipConfig::from_json(&read_text(path, len)?).map(drop).map_err(unusable),
        Format::VqganConfig => VqganConfig::from_yaml(&read_text(path, len)?).map(drop).map_err(unusable),
        Format::Tokenizer => {
            let bytes = read_text(path, len)?.into_bytes();
            ClipTokenizer::from_bytes(&bytes, path, CONTEXT_LENGTH).map(drop).map_err(|e| {
                let msg = bare(e.to_string());
                unusable(msg.strip_prefix("tokenizer: ").map(str::to_owned).unwrap_or(msg))
            })
        }
        Format::Json => serde_json::from_str::<serde::de::IgnoredAny>(&read_text(path, len)?)
            .map(drop)
            .map_err(|e| unusable(format!("invalid JSON ({e})"))),
        Format::Other => Ok(()),
    }
}

/// Whether the rest of a file is zeros (stops at the first byte that is not).
fn rest_is_zero(file: &mut File) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) if buf[..n].iter().any(|&b| b != 0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A text file read whole, refused beyond [`MAX_TEXT_LEN`].
fn read_text(path: &Path, len: u64) -> Result<String, String> {
    if len > MAX_TEXT_LEN {
        return Err(format!("{len} bytes, far too large for a config or tokenizer"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("unreadable ({e})"))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (invalid byte at {})", e.utf8_error().valid_up_to()))?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
    }

    fn check_bytes(kind: ModelKind, name: &str, bytes: &[u8]) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("download.part");
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        check(kind, name, &path)
    }

    #[test]
    fn formats_follow_the_names_the_loaders_open_files_by() {
        assert_eq!(Format::of(ModelKind::Clip, "pytorch_model.bin"), Format::TorchZip { lightning: false });
        assert_eq!(Format::of(ModelKind::Vqgan, "last.ckpt"), Format::TorchZip { lightning: true });
        assert_eq!(Format::of(ModelKind::Clip, "model.safetensors"), Format::Safetensors);
        assert_eq!(Format::of(ModelKind::Clip, "config.json"), Format::ClipConfig);
        assert_eq!(Format::of(ModelKind::Clip, "tokenizer.json"), Format::Tokenizer);
        assert_eq!(Format::of(ModelKind::Vqgan, "model.yaml"), Format::VqganConfig);
        assert_eq!(Format::of(ModelKind::Vqgan, "notes.txt"), Format::Other);
    }

    #[test]
    fn the_fixture_models_pass() {
        let cases = [
            (ModelKind::Clip, "clip-tiny/config.json", "config.json"),
            (ModelKind::Clip, "clip-tiny/model.safetensors", "model.safetensors"),
            (ModelKind::Clip, "clip-tiny/tokenizer.json", "tokenizer.json"),
            (ModelKind::Clip, "clip-tiny-bin/pytorch_model.bin", "pytorch_model.bin"),
            (ModelKind::Vqgan, "vqgan-tiny/model.ckpt", "last.ckpt"),
            (ModelKind::Vqgan, "vqgan-tiny/model.yaml", "model.yaml"),
            (ModelKind::Vqgan, "net2net-tiny/model.ckpt", "last.ckpt"),
        ];
        for (kind, rel, name) in cases {
            assert_eq!(check(kind, name, &fixture(rel)), Ok(()), "{rel}");
        }
    }

    #[test]
    fn impostors_are_named_for_what_they_look_like() {
        let html = b"\n<!DOCTYPE html><html><body>Sign in to continue</body></html>";
        let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 605000000\n";
        let cases: [(ModelKind, &str, &[u8], &str); 10] = [
            (
                ModelKind::Clip,
                "pytorch_model.bin",
                &[0u8; 12_288],
                "not a PyTorch checkpoint: it looks like 12288 bytes of zeros",
            ),
            (ModelKind::Clip, "pytorch_model.bin", html, "not a PyTorch checkpoint: it looks like an HTML page"),
            (ModelKind::Vqgan, "last.ckpt", lfs, "it looks like a Git LFS pointer"),
            (ModelKind::Clip, "config.json", html, "not a CLIP config.json: it looks like an HTML page"),
            (ModelKind::Clip, "tokenizer.json", b"<?xml version=\"1.0\"?><Error/>", "it looks like an XML document"),
            (ModelKind::Vqgan, "model.yaml", b"", "it looks like an empty file"),
            (ModelKind::Vqgan, "model.yaml", b"PK\x03\x04rest", "it looks like a zip archive"),
            (
                ModelKind::Clip,
                "model.safetensors",
                b"Access denied\n",
                "not a safetensors file: it looks like text beginning \"Access denied\"",
            ),
            (ModelKind::Clip, "model.safetensors", b"\x80\x02}q\x00.", "it looks like a bare Python pickle"),
            (ModelKind::Vqgan, "notes.txt", html, "not a model file: it looks like an HTML page"),
        ];
        for (kind, name, bytes, needle) in cases {
            let e = check_bytes(kind, name, bytes).expect_err(name);
            assert!(e.contains(needle), "{name}: expected {needle:?} in {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn files_of_the_right_kind_that_the_loaders_refuse_say_why() {
        // A zip without data.pkl, a safetensors header running past the end, JSON that
        // is not a CLIP config, YAML that is not a taming config, a tokenizer without
        // CLIP's special tokens.
        let mut zip = Vec::new();
        {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip));
            let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            w.start_file("archive/notes.txt", opts).map_err(|e| e.to_string()).unwrap_or_else(|e| panic!("{e}"));
            std::io::Write::write_all(&mut w, b"hello").unwrap_or_else(|e| panic!("{e}"));
            w.finish().unwrap_or_else(|e| panic!("{e}"));
        }
        let mut st = 200u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
        let cases: [(ModelKind, &str, &[u8], &str); 5] = [
            (ModelKind::Clip, "pytorch_model.bin", &zip, "not a usable PyTorch checkpoint: no data.pkl entry"),
            (ModelKind::Clip, "model.safetensors", &st, "not a usable safetensors file: its header claims 200 bytes"),
            (
                ModelKind::Clip,
                "config.json",
                b"{\"model_type\": \"bert\"}",
                "not a usable CLIP config.json: model_type is 'bert'",
            ),
            (ModelKind::Vqgan, "model.yaml", b"model: {}\n", "not a usable taming-transformers YAML config:"),
            (ModelKind::Clip, "tokenizer.json", b"{}", "not a usable CLIP tokenizer.json: not a valid tokenizer.json"),
        ];
        for (kind, name, bytes, needle) in cases {
            let e = check_bytes(kind, name, bytes).expect_err(name);
            assert!(e.contains(needle), "{name}: expected {needle:?} in {e}");
            assert!(!e.contains("download.part"), "the part file's path is not shown: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_head_alone_rejects_what_cannot_start_the_file() {
        let ckpt = std::fs::read(fixture("vqgan-tiny/model.ckpt")).unwrap_or_default();
        assert_eq!(head_problem(ModelKind::Vqgan, "last.ckpt", &ckpt[..HEAD_LEN], Some(ckpt.len() as u64)), None);
        let p = head_problem(ModelKind::Vqgan, "last.ckpt", &[0u8; HEAD_LEN], None).unwrap_or_default();
        assert_eq!(p, "not a PyTorch checkpoint: it looks like zeros");
        let p = head_problem(ModelKind::Clip, "pytorch_model.bin", b"<html><head>", Some(1 << 30)).unwrap_or_default();
        assert_eq!(p, "not a PyTorch checkpoint: it looks like an HTML page");
    }
}
