//! `clipcanvas generate` as a process on the fixture models: outputs, metadata,
//! reproducibility, resume, frames, and one-line errors with the right exit codes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{bin, fails, fixture, model_args, ok, read};

/// A small, fast run: 32×32, 2 cutouts.
fn generate(dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-p", "a lighthouse at dusk"]);
    cmd.args(extra).current_dir(dir);
    cmd.output().expect("run clipcanvas")
}

#[test]
fn same_seed_same_png_and_settings_round_trip_through_the_png() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-i", "3", "--seed", "7", "-o", "a.png"]));
    ok(&generate(d, &["-i", "3", "--seed", "7", "-o", "b.png"]));
    ok(&generate(d, &["-i", "3", "--seed", "8", "-o", "c.png"]));
    assert_eq!(read(&d.join("a.png")), read(&d.join("b.png")), "same settings, same bytes");
    assert_ne!(read(&d.join("a.png")), read(&d.join("c.png")), "another seed, another image");

    // The PNG carries everything: settings, seed, model names and hashes.
    let meta = clipcanvas::export::read_png_metadata(&d.join("a.png")).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["seed"], 7);
    assert_eq!(v["settings"]["prompts"][0], "a lighthouse at dusk");
    assert_eq!(v["models"]["vqgan"]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(v["models"]["clip"]["name"], "clip-tiny");

    // --settings accepts that PNG and restores the run.
    let out = bin().args(["generate", "--settings", "a.png", "-o", "d.png"]).current_dir(d).output().expect("run");
    ok(&out);
    assert_eq!(read(&d.join("a.png")), read(&d.join("d.png")));
}

#[test]
fn resume_continues_exactly_as_the_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-i", "4", "--seed", "3", "-o", "full.png"]));
    ok(&generate(d, &["-i", "2", "--seed", "3", "-o", "half.png", "--session", "half.session"]));
    let out = bin()
        .args(["generate", "--resume", "half.session", "-i", "4", "-o", "resumed.png"])
        .current_dir(d)
        .output()
        .expect("run");
    ok(&out);
    let full = image::open(d.join("full.png")).expect("full").to_rgb8();
    let resumed = image::open(d.join("resumed.png")).expect("resumed").to_rgb8();
    assert_eq!(full.as_raw(), resumed.as_raw(), "bit-exact continuation");
}

#[test]
fn frames_and_gif_are_written() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-i", "4", "--save-every", "2", "-o", "x.png", "--frames", "frames", "--gif", "x.gif"]));
    let mut names: Vec<String> = std::fs::read_dir(d.join("frames"))
        .expect("dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["frame_000000.png", "frame_000002.png"]);
    let file = std::io::BufReader::new(std::fs::File::open(d.join("x.gif")).expect("gif"));
    let decoder = image::codecs::gif::GifDecoder::new(file).expect("decode");
    let frames = image::AnimationDecoder::into_frames(decoder).collect_frames().expect("frames");
    assert_eq!(frames.len(), 3, "two kept frames and the final image");
    assert_eq!(frames[0].buffer().dimensions(), (32, 32));
}

#[test]
fn zero_iterations_with_an_init_image_is_its_reconstruction() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let init = fixture("score/exact.png"); // 32×32, the canvas size: no resize involved
    ok(&generate(d, &["-i", "0", "--init-image", init.to_str().expect("utf8"), "-o", "rec.png"]));
    let got = image::open(d.join("rec.png")).expect("png").to_rgb8();

    let dev = candle_core::Device::Cpu;
    let vq = clipcanvas::models::vqgan::load(&fixture("vqgan-tiny/model.ckpt"), None, candle_core::DType::F32, &dev)
        .expect("vqgan");
    let rgb = clipcanvas::engine::image::load_rgb(&init).expect("init");
    let x = ((clipcanvas::engine::image::rgb_to_tensor(&rgb, &dev).expect("t") * 2.0).expect("m") - 1.0).expect("s");
    let dec = vq.decode(&vq.encode(&x).expect("encode")).expect("decode");
    let want = clipcanvas::engine::image::tensor_to_rgb(&((dec + 1.0).expect("a") / 2.0).expect("d")).expect("rgb");
    assert_eq!(got.as_raw(), want.as_raw());
}

#[test]
fn a_coarse_schedule_changes_the_run_and_round_trips_through_the_png() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-s", "64x64", "-i", "3", "--seed", "5", "-o", "plain.png"]));
    ok(&generate(d, &["-s", "64x64", "-i", "3", "--seed", "5", "--coarse", "2:2", "-o", "coarse.png"]));
    assert_ne!(read(&d.join("plain.png")), read(&d.join("coarse.png")), "the schedule changes the run");
    let meta = clipcanvas::export::read_png_metadata(&d.join("coarse.png")).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["settings"]["coarse"], serde_json::json!([{"factor": 2, "until": 2}]));
    let out = bin().args(["generate", "--settings", "coarse.png", "-o", "again.png"]).current_dir(d).output();
    ok(&out.expect("run"));
    assert_eq!(read(&d.join("coarse.png")), read(&d.join("again.png")), "the PNG restores the schedule");
    // "none" turns off a schedule that a settings file gives.
    let out = bin()
        .args(["generate", "--settings", "coarse.png", "--coarse", "none", "-o", "off.png"])
        .current_dir(d)
        .output();
    ok(&out.expect("run"));
    assert_eq!(read(&d.join("plain.png")), read(&d.join("off.png")));
}

#[test]
fn the_blur_augmentation_changes_the_run_and_round_trips_through_the_png() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let base = ["-s", "64x64", "-i", "3", "--seed", "6", "--cutn", "4"];
    ok(&generate(d, &[&base[..], &["--augment", "affine,noise", "-o", "plain.png"]].concat()));
    ok(&generate(d, &[&base[..], &["--augment", "affine,blur,noise", "-o", "blur.png"]].concat()));
    assert_ne!(read(&d.join("plain.png")), read(&d.join("blur.png")), "blurred views change the run");
    let meta = clipcanvas::export::read_png_metadata(&d.join("blur.png")).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["settings"]["augments"], serde_json::json!(["affine", "blur", "noise"]));
    let out = bin().args(["generate", "--settings", "blur.png", "-o", "again.png"]).current_dir(d).output();
    ok(&out.expect("run"));
    assert_eq!(read(&d.join("blur.png")), read(&d.join("again.png")), "the PNG restores the augmentations");
}

#[test]
fn bad_input_gets_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let out = bin().args(["generate", "--no-such-flag"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    fails(&generate(d, &["-p", "a cat:1.5x"]), 2, "malformed number");
    fails(&generate(d, &["-s", "2x2"]), 2, "below the minimum");
    fails(&generate(d, &["-s", "big"]), 2, "WxH");
    fails(&generate(d, &["--init-image", "missing.png"]), 2, "missing.png");
    std::fs::write(d.join("broken.png"), b"not an image").expect("write");
    fails(&generate(d, &["--init-image", "broken.png"]), 2, "broken.png");
    fails(&generate(d, &["--optimizer", "sgd9"]), 2, "unknown optimizer");
    fails(&generate(d, &["--augment", "flip,wobble"]), 2, "wobble");
    fails(&generate(d, &["--coarse", "4:x"]), 2, "FACTOR:UNTIL");
    fails(&generate(d, &["--coarse", "0:10"]), 2, "coarse factor 0");
    fails(&generate(d, &["--coarse", "4:40,2:20"]), 2, "increasing");
    let out = bin()
        .args(["generate", "-p", "x", "--vqgan", "nope.ckpt", "--clip", "nope"])
        .current_dir(d)
        .output()
        .expect("run");
    fails(&out, 2, "nope.ckpt");
    // One model without the other (with neither, the built-in shapes world is used).
    let clip = fixture("clip-tiny").display().to_string();
    let out = bin().args(["generate", "-p", "x", "--clip", &clip]).current_dir(d).output().expect("run");
    fails(&out, 2, "--vqgan");
    std::fs::write(d.join("s.json"), r#"{"prompts": ["x"], "colour": 3}"#).expect("write");
    fails(&generate(d, &["--settings", "s.json"]), 2, "colour");
    // Nothing was written by the failed runs.
    assert!(!d.join("output.png").exists());
}

#[test]
fn an_unwritable_output_fails_cleanly_without_partial_files() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    // Found before the run, as bad input (hardening issue, item 5).
    fails(&generate(d, &["-i", "1", "-o", "no/such/dir/x.png"]), 2, "no/such/dir/x.png");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(d).expect("dir").map(|e| e.expect("e").path()).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn video_without_ffmpeg_says_so_clearly() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let mut cmd = bin();
    cmd.arg("generate")
        .args(model_args())
        .args(["-s", "32x32", "--cutn", "2", "-p", "x", "-i", "1", "--video", "v.mp4"]);
    let out = cmd.env("PATH", d).current_dir(d).output().expect("run");
    // Found before the run, as bad input, so nothing is written (hardening issue, item 5).
    fails(&out, 2, "ffmpeg not found on PATH");
    assert!(!d.join("output.png").exists());
    assert!(!d.join("v.mp4").exists());
}

#[test]
fn ctrl_c_saves_the_last_frame_and_the_session() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args([
        "-s",
        "32x32",
        "--cutn",
        "2",
        "-p",
        "x",
        "-i",
        "100000",
        "--save-every",
        "1",
    ]);
    let mut child = cmd.current_dir(d).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    // Wait for the first progress line, then interrupt.
    let first = lines.next().expect("a progress line").expect("utf8");
    assert!(first.starts_with("iteration"), "{first}");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let code = child.wait().expect("wait").code();
    assert_eq!(code, Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped at iteration")), "{rest:?}");
    assert!(d.join("output.png").exists());
    assert!(d.join("output.session").exists());
    // And the saved session resumes (to the iteration it reached: -i is the total).
    let meta = clipcanvas::export::read_png_metadata(&d.join("output.png")).expect("read").expect("metadata");
    let reached = serde_json::from_str::<serde_json::Value>(&meta).expect("json")["iteration"].to_string();
    let out = bin()
        .args(["generate", "--resume", "output.session", "-i", &reached, "-o", "again.png"])
        .current_dir(d)
        .output()
        .expect("run");
    ok(&out);
}

/// The headless build (`--no-default-features`) has no studio: with no command it says
/// so in one line, and its commands work as in the studio build (the tests above).
#[cfg(not(feature = "studio"))]
#[test]
fn headless_build_without_a_command_says_how_to_run_one() {
    let dir = tempfile::tempdir().expect("temp");
    let out = bin().current_dir(dir.path()).output().expect("run");
    let err = fails(&out, 2, "headless");
    assert!(err.contains("clipcanvas generate"), "{err}");
    let out = bin().args(["--settings", "nothing.json"]).current_dir(dir.path()).output().expect("run");
    fails(&out, 2, "headless");
}

/// `--precision`: f16 runs (on the CPU too) and says so in the PNG; bf16 on the CPU and
/// an unknown format get one line and exit 2, with nothing written.
#[test]
fn precision_flag_runs_f16_and_refuses_what_the_device_cannot_do() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-i", "2", "--precision", "f16", "-o", "half.png"]));
    assert_eq!(common::png_meta(&d.join("half.png"))["settings"]["precision"], "f16");
    fails(&generate(d, &["-i", "2", "--precision", "bf16", "-o", "b.png"]), 2, "needs a GPU");
    fails(&generate(d, &["-i", "2", "--precision", "f64", "-o", "c.png"]), 2, "--precision: unknown format");
    assert!(!d.join("b.png").exists() && !d.join("c.png").exists());
}
