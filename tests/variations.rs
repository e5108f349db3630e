//! Variations (issue 27): `--variation-seed S --variation-strength A` mixes the run's
//! random start with seed S's. Driven as a process on the tiny fixture models: strength 0
//! is the original pixel for pixel, the start moves further from it as the strength
//! grows, strength 1 is seed S's start exactly, the PNG keeps the variation (and makes it
//! again), and bad values are one line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bin, fails, model_args, ok};

/// The start image (no iterations) of a 64×64 run of the fixture models with `extra`.
fn start(dir: &std::path::Path, extra: &[&str], out: &str) -> image::RgbImage {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "64x64", "-i", "0", "-p", "a lighthouse", "-o", out]);
    ok(&cmd.args(extra).current_dir(dir).output().expect("run"));
    image::open(dir.join(out)).expect("png").to_rgb8()
}

fn distance(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let mean = sum as f64 / a.as_raw().len() as f64;
    mean
}

#[test]
fn a_variation_moves_the_start_toward_its_seed_by_its_strength() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let base = start(d, &["--seed", "1"], "base.png");
    let other = start(d, &["--seed", "2"], "other.png");
    let vary = |strength: &str, out: &str| {
        start(d, &["--seed", "1", "--variation-seed", "2", "--variation-strength", strength], out)
    };
    assert_eq!(vary("0", "v0.png"), base, "strength 0 is the original");
    assert_eq!(vary("1", "v1.png"), other, "strength 1 is the variation seed's start");
    let near = distance(&vary("0.2", "v02.png"), &base);
    let far = distance(&vary("0.6", "v06.png"), &base);
    let apart = distance(&other, &base);
    assert!(0.0 < near && near < far && far < apart, "{near:.2} < {far:.2} < {apart:.2}");
    // The default strength is a near neighbour; the PNG keeps the variation.
    let default = start(d, &["--seed", "1", "--variation-seed", "2"], "vd.png");
    assert!(distance(&default, &base) < far);
    let meta = common::png_meta(&d.join("vd.png"));
    assert_eq!(meta["settings"]["variation"]["seed"], 2);
    assert_eq!(meta["settings"]["variation"]["strength"], 0.1);
    let mut again = bin();
    again.args(["generate", "--settings", "vd.png", "-o", "again.png"]).args(model_args()).current_dir(d);
    ok(&again.output().expect("run"));
    assert_eq!(image::open(d.join("again.png")).expect("png").to_rgb8(), default);
}

#[test]
fn bad_variations_are_one_line() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let run = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.arg("generate").args(model_args()).args(["-s", "64x64", "-i", "1", "-p", "a lighthouse", "-o", "x.png"]);
        cmd.args(extra).current_dir(d).output().expect("run")
    };
    fails(&run(&["--variation-seed", "2", "--variation-strength", "1.5"]), 2, "between 0 and 1");
    fails(&run(&["--variation-strength", "0.2"]), 2, "needs a --variation-seed");
    image::RgbImage::new(64, 64).save(d.join("init.png")).expect("init");
    fails(&run(&["--variation-seed", "2", "--init-image", "init.png"]), 2, "varies the random start");
    assert!(!d.join("x.png").exists());
}
