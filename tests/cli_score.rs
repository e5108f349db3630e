//! `clipcanvas score` as a process, against the reference scores of
//! tests/reference/make_score_golden.py (torchvision preprocessing, open_clip tokens).

mod common;

use std::process::{Command, Output};

use common::fixture;

fn clipcanvas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipcanvas")).args(args).output().expect("run clipcanvas")
}

#[derive(serde::Deserialize)]
struct Golden {
    prompts: Vec<String>,
    images: Vec<GoldenImage>,
}

#[derive(serde::Deserialize)]
struct GoldenImage {
    file: String,
    scores: Vec<f32>,
}

fn score(image: &str, prompts: &[String]) -> Vec<f32> {
    let clip = fixture("clip-tiny");
    let image = fixture(&format!("score/{image}"));
    let mut args = vec!["score", "--clip", clip.to_str().expect("utf8"), "--image", image.to_str().expect("utf8")];
    for p in prompts {
        args.push("--prompt");
        args.push(p);
    }
    let out = clipcanvas(&args);
    assert!(out.status.success(), "score failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| l.trim().parse::<f32>().expect("a number per line"))
        .collect()
}

#[test]
fn prints_one_similarity_per_prompt_in_order() {
    let golden: Golden =
        serde_json::from_str(&std::fs::read_to_string(fixture("score/expected.json")).expect("golden")).expect("json");
    for img in &golden.images {
        let got = score(&img.file, &golden.prompts);
        assert_eq!(got.len(), golden.prompts.len());
        // An image at CLIP's input size is used as is, so it matches exactly; resized ones
        // differ only by the resampler's rounding (PIL vs ours).
        let tol = if img.file == "exact.png" { 1e-4 } else { 2e-2 };
        for (g, w) in got.iter().zip(&img.scores) {
            assert!((g - w).abs() <= tol, "{}: got {got:?}, want {:?}", img.file, img.scores);
        }
    }
    // Order follows the command line.
    let mut reversed = golden.prompts.clone();
    reversed.reverse();
    let mut want = score("exact.png", &golden.prompts);
    want.reverse();
    assert_eq!(score("exact.png", &reversed), want);
}

fn fails_with(args: &[&str], code: i32, needle: &str) {
    let out = clipcanvas(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let clip = fixture("clip-tiny");
    let clip = clip.to_str().expect("utf8");
    let img = fixture("score/exact.png");
    let img = img.to_str().expect("utf8");
    let bad_png = fixture("clip-tiny/config.json");
    fails_with(&["score", "--clip", clip, "--image", "/no/such.png", "-p", "x"], 2, "/no/such.png");
    fails_with(
        &["score", "--clip", clip, "--image", bad_png.to_str().expect("utf8"), "-p", "x"],
        2,
        "cannot read image",
    );
    fails_with(&["score", "--clip", "/no/clip", "--image", img, "-p", "x"], 2, "/no/clip");
    fails_with(&["score", "--clip", clip, "--image", img], 2, "--prompt");
    fails_with(&["score", "--clip", clip, "--image", img, "-p", "x", "--device", "tpu"], 2, "unknown device");
    let out = clipcanvas(&["score", "--clip", "/no/clip", "--image", img, "-p", "x"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "one line");
}
