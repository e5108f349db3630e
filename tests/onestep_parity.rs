//! The one-step generator against its PyTorch reference (`tests/reference/onestep.py`,
//! goldens by `make_onestep_fixtures.py`): the teacher-forced logits, and KV-cached
//! sampling on the CPU (`host.rs`) drawing the golden grids, greedily and by
//! `sample.rs`'s top-p rule with the golden's uniform numbers.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{DType, Tensor};
use clipcanvas::models::onestep::{self, OneStep};
use clipcanvas::settings::Sampling;
use common::{fixture, golden, values};

/// Largest allowed |Rust − PyTorch| of a logit (they span about ±11; the golden's
/// greedy margins are at least 0.035, recorded in `expected.json`).
const LOGIT_TOL: f32 = 1e-4;

fn model() -> OneStep {
    onestep::load(&fixture("onestep-tiny"), DType::F32, &common::device()).expect("load onestep-tiny")
}

fn max_abs_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    values(got).iter().zip(values(want)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// A golden grid of codes (int64) as flat u32 rows `[B, cells]`.
fn codes(t: &Tensor) -> Tensor {
    t.flatten_from(1).and_then(|t| t.to_dtype(DType::U32)).expect("codes")
}

fn grid_values(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("grid values")
}

#[test]
fn teacher_forced_logits_match_pytorch() {
    let m = model();
    let g = golden("onestep-tiny/expected.safetensors");
    for (tokens, logits) in [("tokens", "logits"), ("greedy", "greedy_logits"), ("sampled", "sampled_logits")] {
        let got = m.forward(&g["cond"], &codes(&g[tokens])).unwrap();
        let diff = max_abs_diff(&got, &g[logits]);
        eprintln!("{logits}: max |Rust − PyTorch| = {diff:e}");
        assert!(diff <= LOGIT_TOL, "{logits}: max |diff| {diff:e} > {LOGIT_TOL:e}");
    }
}

#[test]
fn greedy_sampling_draws_the_golden_grid() {
    let m = model();
    let g = golden("onestep-tiny/expected.safetensors");
    let greedy = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 };
    let grid = m.generate(&g["cond"], &greedy, || 0.5).unwrap();
    assert_eq!(grid.dims(), g["greedy"].dims());
    assert_eq!(grid_values(&grid), grid_values(&g["greedy"]));

    // What each cached step saw is PyTorch's full forward on the grid. The uniform
    // numbers number the draws (position by position, rows in order), whichever thread
    // picks.
    let seen = Mutex::new(BTreeMap::new());
    let pick = |row: &[f32], u: f64| {
        seen.lock().unwrap().insert((u * 1e6).round() as u64, row.to_vec());
        onestep::pick(&greedy, row, u)
    };
    let mut draws = 0u32;
    let uniform = || {
        draws += 1;
        f64::from(draws) * 1e-6
    };
    let again = m.generate_with(&g["cond"], &pick, uniform).unwrap();
    assert_eq!(grid_values(&again), grid_values(&g["greedy"]));
    let seen: Vec<Vec<f32>> = seen.into_inner().unwrap().into_values().collect();
    let (b, cells, n) = g["greedy_logits"].dims3().unwrap();
    assert_eq!(seen.len(), b * cells);
    let want = values(&g["greedy_logits"]);
    let mut worst = 0f32;
    for (k, row) in seen.iter().enumerate() {
        let (i, r) = (k / b, k % b);
        let w = &want[(r * cells + i) * n..(r * cells + i + 1) * n];
        worst = row.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    eprintln!("cached greedy steps: max |Rust − PyTorch| = {worst:e}");
    assert!(worst <= LOGIT_TOL, "cached steps: max |diff| {worst:e} > {LOGIT_TOL:e}");
}

#[test]
fn top_p_sampling_draws_the_golden_grid() {
    let m = model();
    let g = golden("onestep-tiny/expected.safetensors");
    // expected.json's "sampling"; the uniform numbers [cells, B] in drawing order.
    let s = Sampling { temperature: 1.0, top_k: 0, top_p: 0.9 };
    let mut us = values(&g["uniform"]).into_iter().map(f64::from);
    let grid = m.generate(&g["cond"], &s, || us.next().expect("a uniform number per draw")).unwrap();
    assert!(us.next().is_none(), "every golden uniform number is drawn");
    assert_eq!(grid_values(&grid), grid_values(&g["sampled"]));
}
