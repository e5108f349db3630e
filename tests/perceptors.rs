//! Several CLIPs at once (issue 26): each scores the step's crops at its own input size,
//! and their losses add, times their weights. Matched against PyTorch
//! (`tests/reference/make_perceptor_fixtures.py`): clip-tiny (32-pixel inputs, weight
//! 2) and clip-tiny-48 (48-pixel inputs, weight 0.5) on one image, values and gradient;
//! then `--clip A,B --clip-weights` as a process, and its bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clipcanvas::engine::cutouts::Crop;
use clipcanvas::engine::session::{Session, StepPlan};
use clipcanvas::settings::{ExtraClip, GeneratorSettings, RunSettings};
use common::{assert_close, bin, fails, fixture, golden, ok};

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("perceptors/expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

/// A 32×32 canvas of one pixel cell a pixel (its render is its parameters), scored by
/// the two CLIPs.
fn two_clip_settings(prompts: &[&str]) -> RunSettings {
    RunSettings {
        prompts: prompts.iter().map(|p| (*p).to_owned()).collect(),
        generator: GeneratorSettings::Pixel { cells_x: 32, cells_y: 32 },
        width: 32,
        height: 32,
        cutn: 4,
        augments: Vec::new(),
        clip: Some(fixture("clip-tiny")),
        clip_weight: 2.0,
        extra_clips: vec![ExtraClip { path: fixture("clip-tiny-48"), weight: 0.5 }],
        ..RunSettings::default()
    }
}

#[test]
fn two_clips_of_two_sizes_match_pytorch() {
    let j = expected();
    let g = golden("perceptors/expected.safetensors");
    let device = common::device();
    let models = clipcanvas::engine::loaded::load_models(&two_clip_settings(&[]), &device).expect("models");
    assert_eq!(models.extra_clips.len(), 1);
    let mut session = Session::new(std::sync::Arc::new(models), two_clip_settings(&["a lighthouse"])).expect("session");
    session.set_latent(&g["image"]).expect("latent");
    let crops: Vec<Crop> = serde_json::from_value(j["crops"].clone()).expect("crops");
    let n = crops.len();
    let plan =
        StepPlan { crops, augments: vec![Default::default(); n], noise: None, roll: None, sized_noise: Vec::new() };
    let out = session.step_with(&plan).expect("step");
    // One term for the prompt: both CLIPs' losses, weighted and added.
    assert_eq!(out.losses.len(), 1, "{:?}", out.losses);
    let want = f64::from(g["total"].to_scalar::<f32>().unwrap());
    assert!((out.losses[0].1 - want).abs() < 1e-5 * want, "{} vs {want}", out.losses[0].1);
    assert!((out.total - want).abs() < 1e-5 * want);
    assert_close("gradient", session.last_gradient().expect("gradient"), &g["grad"], 1e-4);
}

#[test]
fn a_second_clip_of_the_same_size_sees_the_same_cutouts() {
    // clip-tiny twice, at weights 1 and 0.5: exactly 1.5 times clip-tiny alone.
    let one = RunSettings { clip_weight: 1.0, extra_clips: Vec::new(), ..two_clip_settings(&["a lighthouse"]) };
    let twice = RunSettings {
        clip_weight: 1.0,
        extra_clips: vec![ExtraClip { path: fixture("clip-tiny"), weight: 0.5 }],
        ..one.clone()
    };
    let device = common::device();
    let run = |s: RunSettings| {
        let models = std::sync::Arc::new(clipcanvas::engine::loaded::load_models(&s, &device).expect("models"));
        let mut session = Session::new(models, s).expect("session");
        let out = session.step().expect("step");
        (out.total, session.last_gradient().expect("gradient").clone())
    };
    let (l1, g1) = run(one);
    let (l2, g2) = run(twice);
    assert!((l2 - 1.5 * l1).abs() < 1e-6 * l1, "{l2} vs 1.5 × {l1}");
    assert_close("gradient", &g2, &(g1 * 1.5).unwrap(), 1e-5);
}

fn run(dir: &std::path::Path, clip: &str, extra: &[&str], out: &str) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(["generate", "--clip", clip, "--generator", "pixel", "--pixel-size", "16x16", "-s", "32x32"]);
    cmd.args(["--cutn", "4", "-i", "10", "-p", "a lighthouse", "--seed", "4", "-o", out]).args(extra).current_dir(dir);
    cmd.output().expect("run")
}

#[test]
fn two_clips_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let both = format!("{},{}", fixture("clip-tiny").display(), fixture("clip-tiny-48").display());
    ok(&run(d, &both, &["--clip-weights", "1,0.5"], "both.png"));
    let meta = common::png_meta(&d.join("both.png"));
    assert_eq!(meta["settings"]["extra_clips"][0]["weight"], 0.5);
    assert_eq!(meta["models"]["extra_clips"][0]["name"], "clip-tiny-48");
    // The PNG's settings make the same image.
    let mut again = bin();
    again.args(["generate", "--settings", "both.png", "-o", "again.png"]).current_dir(d);
    ok(&again.output().expect("run"));
    assert_eq!(common::read(&d.join("again.png")), common::read(&d.join("both.png")));
    // The second CLIP changes the run.
    ok(&run(d, &fixture("clip-tiny").display().to_string(), &[], "one.png"));
    assert_ne!(common::read(&d.join("one.png")), common::read(&d.join("both.png")));
}

#[test]
fn bad_clip_lists_are_one_line() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let both = format!("{},{}", fixture("clip-tiny").display(), fixture("clip-tiny-48").display());
    fails(&run(d, &both, &["--clip-weights", "1"], "x.png"), 2, "gives 1 weight(s) for 2 CLIP(s)");
    fails(&run(d, &both, &["--clip-weights", "1,x"], "x.png"), 2, "\"x\" is not a number");
    fails(&run(d, &both, &["--clip-weights", "1,-1"], "x.png"), 2, "above 0");
    let missing = format!("{},/nowhere/clip", fixture("clip-tiny").display());
    fails(&run(d, &missing, &[], "x.png"), 2, "/nowhere/clip");
    assert!(!d.join("x.png").exists());
}

/// A two-iteration pixel run of clip-tiny at 32×32 with `extra` flags (no --cutn).
fn preset_run(dir: &std::path::Path, extra: &[&str], limit: Option<u64>, out: &str) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(["generate", "--clip", &fixture("clip-tiny").display().to_string(), "--generator", "pixel"]);
    cmd.args(["--pixel-size", "16x16", "-s", "32x32", "-i", "2", "-p", "a lighthouse", "-o", out]).args(extra);
    if let Some(limit) = limit {
        cmd.env(clipcanvas::engine::memory::LIMIT_VAR, limit.to_string());
    }
    cmd.current_dir(dir).output().expect("run")
}

#[test]
fn quality_presets_choose_the_cutouts_and_fit_the_memory() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let streams = ok(&preset_run(d, &["--quality", "draft"], None, "draft.png"));
    assert!(
        streams.stderr.contains("note: quality draft: 16 cutouts a step, scored by clip-tiny"),
        "{}",
        streams.stderr
    );
    assert_eq!(common::png_meta(&d.join("draft.png"))["settings"]["cutn"], 16);
    // Memory for about 40 of "better"'s 64 cutouts: fewer, and said so.
    let settings = RunSettings {
        clip: Some(fixture("clip-tiny")),
        generator: GeneratorSettings::Pixel { cells_x: 16, cells_y: 16 },
        width: 32,
        height: 32,
        ..RunSettings::default()
    };
    let nets = clipcanvas::engine::memory::Nets::of_settings(&settings).expect("nets");
    let need =
        |cutn| clipcanvas::engine::memory::estimate(&nets, &RunSettings { cutn, ..settings.clone() }).bytes(false);
    let limit = need(40);
    let streams = ok(&preset_run(d, &["--quality", "better"], Some(limit), "fit.png"));
    let cutn = common::png_meta(&d.join("fit.png"))["settings"]["cutn"].as_u64().expect("cutn");
    assert!((16..64).contains(&cutn) && need(usize::try_from(cutn).unwrap()) <= limit, "{cutn}");
    assert!(streams.stderr.contains(&format!("{cutn} cutouts instead of 64 fit")), "{}", streams.stderr);
    fails(&preset_run(d, &["--quality", "best"], None, "y.png"), 2, "--quality must be draft, normal or better");
    fails(&preset_run(d, &["--quality", "draft", "--cutn", "8"], None, "y.png"), 2, "give --quality or --cutn");
}
