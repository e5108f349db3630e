//! Engine features on the fixture models: story mode, schedules, noise prompts, init
//! modes, optimisers, pooled cutouts, smoothness loss, NaN handling.

mod common;

use std::sync::Arc;

use candle_core::{Device, Tensor};
use clipcanvas::engine::session::Session;
use clipcanvas::engine::EngineError;
use clipcanvas::settings::CutMethod;
use clipcanvas::settings::{InitNoise, LrStep, OptimizerKind, RunSettings};
use common::fixture_models;

fn small(prompts: &[&str]) -> RunSettings {
    RunSettings {
        prompts: prompts.iter().map(|s| (*s).to_owned()).collect(),
        width: 32,
        height: 32,
        cutn: 2,
        augments: Vec::new(),
        iterations: 4,
        ..RunSettings::default()
    }
}

fn labels(s: &mut Session) -> Vec<String> {
    s.step().expect("step").losses.into_iter().map(|(l, _)| l).collect()
}

#[test]
fn story_mode_switches_prompt_sets_every_n_iterations() {
    let settings = RunSettings {
        story: vec![vec!["a cat".into()], vec!["a dog".into(), "a bird:0.5".into()]],
        story_every: 2,
        ..small(&[])
    };
    let mut s = Session::new(fixture_models(), settings).expect("session");
    assert_eq!(labels(&mut s), ["a cat"]);
    assert_eq!(labels(&mut s), ["a cat"]);
    assert_eq!(labels(&mut s), ["a dog", "a bird"]);
    assert_eq!(labels(&mut s), ["a dog", "a bird"]);
    assert_eq!(labels(&mut s), ["a cat"], "stages loop");
}

#[test]
fn step_schedule_lowers_the_learning_rate() {
    let settings = RunSettings { lr: 0.2, lr_step: Some(LrStep { every: 2, gamma: 0.5 }), ..small(&["x"]) };
    let mut s = Session::new(fixture_models(), settings).expect("session");
    let lrs: Vec<f64> = (0..5).map(|_| s.step().expect("step").lr).collect();
    assert_eq!(lrs, [0.2, 0.2, 0.1, 0.1, 0.05]);
}

#[test]
fn noise_prompts_init_modes_tv_and_pooled_cutouts_all_run() {
    let settings = RunSettings {
        noise_prompts: vec!["42:0.5".into()],
        tv_weight: 0.1,
        cut_method: CutMethod::Pooled,
        init_noise: InitNoise::Pixels,
        init_weight: 0.3,
        ..small(&["a cat"])
    };
    let mut s = Session::new(fixture_models(), settings.clone()).expect("session");
    assert_eq!(labels(&mut s), ["init", "a cat", "noise: 42", "tv"]);
    let pixels = s.latent().clone();
    let g =
        Session::new(fixture_models(), RunSettings { init_noise: InitNoise::Gradient, ..settings }).expect("session");
    let diff = (pixels - g.latent()).expect("d").abs().expect("a").sum_all().expect("s").to_scalar::<f32>().expect("f");
    assert!(diff > 0.0, "pixel and gradient noise start differently");
}

#[test]
fn every_optimizer_steps_and_lowers_nothing_to_nan() {
    for kind in OptimizerKind::ALL {
        let mut s =
            Session::new(fixture_models(), RunSettings { optimizer: kind, ..small(&["a cat"]) }).expect("session");
        let before = s.latent().copy().expect("copy"); // the latent is updated in place
        let out = s.step().expect("step");
        assert!(out.total.is_finite());
        let moved =
            (before - s.latent()).expect("d").abs().expect("a").sum_all().expect("s").to_scalar::<f32>().expect("f");

        assert!(moved > 0.0, "{kind:?} did not move the latent");
    }
}

#[test]
fn a_nan_loss_is_an_error_not_a_picture() {
    let mut s = Session::new(fixture_models(), small(&["a cat"])).expect("session");
    let nan = Tensor::full(f32::NAN, s.latent().dims(), &Device::Cpu).expect("nan");
    s.set_latent(&nan).expect("set");
    let err = s.step().expect_err("NaN");
    assert!(matches!(err, EngineError::NanLoss { iteration: 0 }), "{err}");
}

#[test]
fn canvas_rounds_down_to_the_vqgan_factor_with_a_notice() {
    let mut s =
        Session::new(fixture_models(), RunSettings { width: 37, height: 42, ..small(&["x"]) }).expect("session");
    assert_eq!(s.size(), (36, 40));
    let notices = s.take_notices();
    assert!(notices.iter().any(|n| n.contains("rounded down to 36x40")), "{notices:?}");
}

#[test]
fn prompts_and_learning_rate_change_mid_run() {
    let mut s = Session::new(fixture_models(), small(&["a cat"])).expect("session");
    s.step().expect("step");
    s.set_prompts(&["a dog:2".into(), "rain:-1".into()]).expect("prompts");
    s.set_lr(0.05).expect("lr");
    let out = s.step().expect("step");
    assert_eq!(out.losses.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["a dog", "rain"]);
    assert!((out.lr - 0.05).abs() < 1e-12);
    assert!(s.set_lr(f64::NAN).is_err());
}

#[test]
fn live_changes_are_recorded_in_the_session_file() {
    use clipcanvas::engine::session::SteerChange;
    let models = fixture_models();
    let mut s = Session::new(Arc::clone(&models), small(&["a cat"])).expect("session");
    s.step().expect("step");
    s.set_prompts(&["a dog".into()]).expect("prompts");
    s.step().expect("step");
    s.set_lr(0.02).expect("lr");
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("run.session");
    std::fs::write(&path, s.to_bytes().expect("bytes")).expect("write");
    let resumed = Session::resume(models, &path).expect("resume");
    let log = resumed.steering();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].iteration, &log[0].change), (1, &SteerChange::Prompts(vec!["a dog".into()])));
    assert_eq!((log[1].iteration, &log[1].change), (2, &SteerChange::LearningRate(0.02)));
}

/// The largest spread of the latent's values within any `f × f` token block.
fn block_spread(z: &Tensor, f: usize) -> f32 {
    let (_, c, h, w) = z.dims4().expect("4d");
    let v = z.flatten_all().expect("flat").to_vec1::<f32>().expect("values");
    let mut worst = 0f32;
    for ch in 0..c {
        for by in (0..h).step_by(f) {
            for bx in (0..w).step_by(f) {
                let block: Vec<f32> = (by..(by + f).min(h))
                    .flat_map(|y| (bx..(bx + f).min(w)).map(move |x| (y, x)))
                    .map(|(y, x)| v[(ch * h + y) * w + x])
                    .collect();
                let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                worst = worst.max(hi - lo);
            }
        }
    }
    worst
}

#[test]
fn coarse_to_fine_moves_the_latent_in_blocks_then_frees_it() {
    let coarse = clipcanvas::settings::coarse::parse_schedule("4:2,2:4").expect("schedule");
    let settings = RunSettings { width: 64, height: 64, coarse, iterations: 6, ..small(&["a red circle"]) };
    let mut s = Session::new(fixture_models(), settings.clone()).expect("session");
    let (_, _, h, w) = s.latent().dims4().expect("4d");
    assert!(h >= 8 && w >= 8, "the test needs at least 8×8 tokens, got {h}×{w}");
    assert_eq!(block_spread(s.latent(), 4), 0.0, "random codes are drawn per 4×4 block");
    let start = s.latent().copy().expect("copy");
    for _ in 0..2 {
        s.step().expect("step");
    }
    let moved = (s.latent() - &start).expect("diff").abs().expect("abs").max_all().expect("max");
    assert!(moved.to_scalar::<f32>().expect("scalar") > 0.0, "the latent moves");
    assert_eq!(block_spread(s.latent(), 4), 0.0, "4×4 blocks move together in the first stage");
    for _ in 0..2 {
        s.step().expect("step");
    }
    assert_eq!(block_spread(s.latent(), 2), 0.0, "2×2 blocks move together in the second stage");
    assert!(block_spread(s.latent(), 4) > 0.0, "the 4×4 blocks split in the second stage");
    for _ in 0..2 {
        s.step().expect("step");
    }
    assert!(block_spread(s.latent(), 2) > 0.0, "single tokens move after the schedule");

    // Without a schedule the start is one random code per token, as the notebook draws.
    let plain = Session::new(fixture_models(), RunSettings { coarse: Vec::new(), ..settings }).expect("session");
    assert!(block_spread(plain.latent(), 4) > 0.0);
}
