//! Region prompts (issue 26): a prompt scored only inside a mask, or outside it.
//!
//! - In the engine, on the tiny fixture models: a masked region prompt's loss is exactly
//!   the text prompt's loss (proven against PyTorch in engine_step) on the image with the
//!   outside painted grey, with no gradient outside the mask; a centred one's is the text
//!   prompt's loss on the crops centred in the mask.
//! - As a process: a region prompt changes the image inside its mask more than outside;
//!   the PNG keeps the region and `--settings` makes the image again; bad masks and flags
//!   are one line and exit 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::Tensor;
use clipcanvas::engine::cutouts::Crop;
use clipcanvas::engine::session::{Session, StepPlan};
use clipcanvas::settings::{GeneratorSettings, Mask, Region, RegionCutouts, RunSettings};
use common::{assert_close, bin, fails, fixture_models, model_args, ok};

/// A 32×32 pixel-cell canvas of one cell a pixel (its render is its parameters), with
/// no augmentations: what a step computes is the losses of the given crops.
fn canvas(prompts: &[&str], regions: Vec<Region>, mode: RegionCutouts) -> Session {
    let settings = RunSettings {
        prompts: prompts.iter().map(|p| (*p).to_owned()).collect(),
        regions,
        region_cutouts: mode,
        generator: GeneratorSettings::Pixel { cells_x: 32, cells_y: 32 },
        width: 32,
        height: 32,
        cutn: 4,
        augments: Vec::new(),
        seed: 5,
        ..RunSettings::default()
    };
    Session::new(fixture_models(), settings).expect("session")
}

fn left_third() -> Mask {
    Mask::from_fn(32, 32, |x, _| x < 11)
}

fn plan(crops: Vec<Crop>) -> StepPlan {
    let n = crops.len();
    StepPlan { crops, augments: vec![Default::default(); n], noise: None, roll: None, sized_noise: Vec::new() }
}

fn crops() -> Vec<Crop> {
    vec![
        Crop { size: 12, x: 0, y: 3 },
        Crop { size: 20, x: 12, y: 0 },
        Crop { size: 8, x: 1, y: 20 },
        Crop { size: 32, x: 0, y: 0 },
    ]
}

fn loss(out: &clipcanvas::engine::session::StepOutput, label: &str) -> f64 {
    out.losses.iter().find(|(l, _)| l == label).unwrap_or_else(|| panic!("no {label} in {:?}", out.losses)).1
}

#[test]
fn a_masked_region_is_the_prompt_on_the_image_painted_grey_outside() {
    let mask = left_third();
    let region = Region { prompt: "a lighthouse:1.5".into(), outside: false, mask: mask.clone() };
    let mut with_region = canvas(&[], vec![region], RegionCutouts::Masked);
    let start = with_region.latent().copy().unwrap();
    let out = with_region.step_with(&plan(crops())).expect("step");
    let grad = with_region.last_gradient().expect("gradient").clone();

    // The same crops of the painted image, scored as a text prompt.
    let keep: Vec<f32> = mask.bits().iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    let keep = Tensor::from_vec(keep, (1, 1, 32, 32), start.device()).unwrap();
    let painted = ((&start - 0.5).unwrap().broadcast_mul(&keep).unwrap() + 0.5).unwrap();
    let mut plain = canvas(&["a lighthouse:1.5"], Vec::new(), RegionCutouts::Masked);
    plain.set_latent(&painted).unwrap();
    let want = plain.step_with(&plan(crops())).expect("step");
    let (got, expected) = (loss(&out, "region: a lighthouse"), loss(&want, "a lighthouse"));
    assert!((got - expected).abs() <= 1e-6 * expected.abs(), "{got} vs {expected}");
    // The chain rule through the paint: the prompt's gradient inside, nothing outside.
    let plain_grad = plain.last_gradient().expect("gradient").broadcast_mul(&keep).unwrap();
    assert_close("region gradient", &grad, &plain_grad, 1e-5);
    let outside = grad.broadcast_mul(&(1.0 - &keep).unwrap()).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(outside.to_scalar::<f32>().unwrap(), 0.0);
    let inside = grad.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(inside > 0.0);
}

#[test]
fn an_outside_region_scores_the_rest_and_a_centred_one_the_crops_centred_in_it() {
    // Outside the left third, centred: crops 1 (centre x 22) and 3 (centre x 16).
    let region = Region { prompt: "a lighthouse".into(), outside: true, mask: left_third() };
    let mut centred = canvas(&[], vec![region], RegionCutouts::Centres);
    let start = centred.latent().copy().unwrap();
    let out = centred.step_with(&plan(crops())).expect("step");
    let mut plain = canvas(&["a lighthouse"], Vec::new(), RegionCutouts::Centres);
    plain.set_latent(&start).unwrap();
    let all = crops();
    let want = plain.step_with(&plan(vec![all[1], all[3]])).expect("step");
    let (got, expected) = (loss(&out, "outside: a lighthouse"), loss(&want, "a lighthouse"));
    assert!((got - expected).abs() <= 1e-6 * expected.abs(), "{got} vs {expected}");
    assert_close("gradient", centred.last_gradient().unwrap(), plain.last_gradient().unwrap(), 1e-5);
    // No crop centred in the part: the term is 0 for that step (and the run goes on).
    let region =
        Region { prompt: "a lighthouse".into(), outside: false, mask: Mask::from_fn(32, 32, |x, y| x + y < 3) };
    let mut corner = canvas(&["a moon"], vec![region], RegionCutouts::Centres);
    let out = corner.step_with(&plan(crops())).expect("step");
    assert_eq!(loss(&out, "region: a lighthouse"), 0.0);
}

/// Mean absolute difference (0–255) of two images over the pixels `inside` picks.
fn change(a: &std::path::Path, b: &std::path::Path, inside: impl Fn(u32, u32) -> bool) -> (f64, f64) {
    let (a, b) = (image::open(a).expect("png").to_rgb8(), image::open(b).expect("png").to_rgb8());
    let (mut sums, mut counts) = ([0u64; 2], [0u64; 2]);
    for (x, y, p) in a.enumerate_pixels() {
        let q = b.get_pixel(x, y);
        let k = usize::from(inside(x, y));
        sums[k] += p.0.iter().zip(q.0).map(|(u, v)| u64::from(u.abs_diff(v))).sum::<u64>();
        counts[k] += 3;
    }
    #[expect(clippy::cast_precision_loss, reason = "means")]
    let mean = |k: usize| sums[k] as f64 / counts[k].max(1) as f64;
    (mean(1), mean(0))
}

fn run(dir: &std::path::Path, extra: &[&str], out: &str) -> std::process::Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args());
    cmd.args(["--generator", "pixel", "--pixel-size", "16x16", "-s", "32x32", "--cutn", "4", "-i", "30"]);
    cmd.args(["-p", "a lighthouse", "--seed", "4", "-o", out]).args(extra).current_dir(dir);
    cmd.output().expect("run")
}

#[test]
fn a_region_prompt_changes_the_image_inside_its_mask_more_than_outside() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    // The left half, light; drawn at 64×64 so that it is resized to the 32×32 canvas.
    let mask = image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]));
    mask.save(d.join("left.png")).expect("mask");
    ok(&run(d, &[], "plain.png"));
    let streams = ok(&run(d, &["--region", "a red rose:2", "--region-mask", "left.png"], "region.png"));
    assert!(streams.stderr.contains("a region mask of 64x64 was resized to the canvas, 32x32"), "{}", streams.stderr);
    let (inside, outside) = change(&d.join("plain.png"), &d.join("region.png"), |x, _| x < 16);
    assert!(inside > 2.0 * outside && inside > 1.0, "changed {inside:.2} inside against {outside:.2} outside");
    // The PNG keeps the region (its mask at its own size), and makes the image again.
    let meta = common::png_meta(&d.join("region.png"));
    let regions = &meta["settings"]["regions"];
    assert_eq!(regions[0]["prompt"], "a red rose:2");
    assert_eq!(regions[0]["mask"]["width"], 64);
    let mut cmd = bin();
    cmd.args(["generate", "--settings", "region.png", "-o", "again.png"]).args(model_args()).current_dir(d);
    ok(&cmd.output().expect("run"));
    assert_eq!(common::read(&d.join("again.png")), common::read(&d.join("region.png")));
    // --region-off: the prompt applies to the right half; the left changes less.
    ok(&run(d, &["--region-off", "a red rose:2", "--region-mask", "left.png"], "off.png"));
    let (inside, outside) = change(&d.join("plain.png"), &d.join("off.png"), |x, _| x >= 16);
    assert!(inside > 2.0 * outside, "changed {inside:.2} outside the mask against {outside:.2} inside");
}

#[test]
fn bad_region_flags_and_masks_are_one_line() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    fails(&run(d, &["--region", "a rose"], "x.png"), 2, "--region and --region-off need --region-mask");
    fails(&run(d, &["--region-mask", "m.png"], "x.png"), 2, "--region-mask needs a --region");
    fails(&run(d, &["--region", "a rose", "--region-mask", "missing.png"], "x.png"), 2, "missing.png");
    std::fs::write(d.join("junk.png"), b"not a png").expect("write");
    fails(&run(d, &["--region", "a rose", "--region-mask", "junk.png"], "x.png"), 2, "junk.png");
    image::GrayImage::new(8, 8).save(d.join("black.png")).expect("mask");
    fails(&run(d, &["--region", "a rose", "--region-mask", "black.png"], "x.png"), 2, "covers nothing");
    fails(
        &run(d, &["--region", "a rose", "--region-mask", "black.png", "--region-cutouts", "middle"], "x.png"),
        2,
        "--region-cutouts must be masked or centres",
    );
    assert!(!d.join("x.png").exists());
}
