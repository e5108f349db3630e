//! Shared helpers for the integration tests: fixture paths, golden tensors, tolerances.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// The tensors of a golden safetensors file, on the CPU.
pub fn golden(rel: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &Device::Cpu).unwrap_or_else(|e| panic!("{rel}: {e}"))
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
