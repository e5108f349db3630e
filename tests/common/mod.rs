//! Shared helpers for the integration tests: fixture paths and models, golden tensors,
//! tolerances, and running the binary as a process (`bin`, `ok`, `fails`, `read`, and
//! `tree`/`names`, the exact files a run leaves behind).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// The device the PyTorch parity suites run on: `cpu` unless `CLIPCANVAS_TEST_DEVICE`
/// names another (`cuda`, `cuda:1`, `metal`), as `tests/gpu/device.sh` does on a GPU.
pub fn device() -> Device {
    let name = std::env::var("CLIPCANVAS_TEST_DEVICE").unwrap_or_else(|_| "cpu".to_owned());
    clipcanvas::engine::device::parse_device(&name).unwrap_or_else(|e| panic!("CLIPCANVAS_TEST_DEVICE={name}: {e}"))
}

/// The tensors of a golden safetensors file, on the test [`device`].
pub fn golden(rel: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &device()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Asserts `got` equals `want` within `rel` of `want`'s scale (its largest magnitude).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g = values(got);
    let w = values(want);
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let worst = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= rel * scale, "{what}: max |diff| {worst:e} exceeds {rel:e} × scale {scale:e}");
}

/// Cosine similarity of two tensors as flat vectors.
pub fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let a = values(a);
    let b = values(b);
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The clipcanvas binary, as a command to run.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clipcanvas"))
}

/// The flags naming the tiny fixture models.
pub fn model_args() -> Vec<String> {
    vec![
        "--vqgan".into(),
        fixture("vqgan-tiny/model.ckpt").display().to_string(),
        "--clip".into(),
        fixture("clip-tiny").display().to_string(),
    ]
}

/// The tiny fixture models, loaded for the engine on the test [`device`].
pub fn fixture_models() -> Arc<clipcanvas::engine::loaded::Models> {
    fixture_models_in(DType::F32)
}

/// The tiny fixture models with their weights in `dtype`, on the test [`device`].
pub fn fixture_models_in(dtype: DType) -> Arc<clipcanvas::engine::loaded::Models> {
    use clipcanvas::models::{clip, vqgan};
    let dev = device();
    let vqgan = vqgan::load(&fixture("vqgan-tiny/model.ckpt"), None, dtype, &dev).expect("vqgan");
    let (clip, tokenizer) = clip::load(&fixture("clip-tiny"), dtype, &dev).expect("clip");
    Arc::new(clipcanvas::engine::loaded::Models {
        vqgan: Some(vqgan),
        clip,
        tokenizer,
        extra_clips: Vec::new(),
        device: dev,
        source: None,
        onestep: None,
    })
}

/// A finished process's output as text.
pub struct Streams {
    pub stdout: String,
    pub stderr: String,
}

fn streams(out: &Output) -> Streams {
    Streams {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts the process succeeded; its output.
pub fn ok(out: &Output) -> Streams {
    let s = streams(out);
    assert!(out.status.success(), "failed ({:?}): {}{}", out.status.code(), s.stdout, s.stderr);
    s
}

/// Asserts the process failed with `code` and one error line containing `needle`, and
/// did not panic; its stderr.
pub fn fails(out: &Output, code: i32, needle: &str) -> String {
    let Streams { stdout, stderr } = streams(out);
    assert_eq!(out.status.code(), Some(code), "stdout: {stdout} stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().filter(|l| l.starts_with("error")).count(), 1, "one error line: {stderr}");
    stderr
}

/// A file's bytes (the test fails naming the file if it cannot be read).
pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every entry under `dir` (relative path → contents): folders as empty entries ending in
/// '/', symbolic links as "-> link", other non-regular files (FIFOs) by name only, regular
/// files with their bytes. Two trees compare equal when a run left the folder as it was.
pub fn tree(dir: &Path) -> BTreeMap<OsString, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<OsString, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("prefix").as_os_str().to_owned();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                let mut name = rel;
                name.push("/");
                out.insert(name, Vec::new());
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                out.insert(rel, b"-> link".to_vec());
            } else if meta.is_file() {
                out.insert(rel, read(&path));
            } else {
                out.insert(rel, b"<not a regular file>".to_vec());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The names in [`tree`], sorted, for comparisons.
pub fn names(dir: &Path) -> Vec<String> {
    tree(dir).keys().map(|k| k.to_string_lossy().into_owned()).collect()
}

/// The clipcanvas metadata of a PNG, parsed.
pub fn png_meta(path: &Path) -> serde_json::Value {
    let meta = clipcanvas::export::read_png_metadata(path).expect("read").expect("metadata");
    serde_json::from_str(&meta).expect("json")
}

/// The names in a folder (not below it), sorted; empty if it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}
