//! `clipcanvas animate` as a process (issue 25): frames that follow the camera, the same
//! frames for the same seed, resume after Ctrl-C to the same bytes, settings carried by
//! every frame PNG, restyling, the motion preview, and bad input refused in one line.
//! The shapes world's trained models run (a VQGAN that reconstructs what it encodes, so
//! "follows the warped previous frame" can be measured).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clipcanvas::engine::animation::warp::warp_rgb;
use clipcanvas::settings::animation::{Border, Motion};
use common::{bin, fails, files_in, ok, png_meta, read};
use image::RgbImage;

/// The shapes world at 64×64 with few cutouts: a few seconds a run.
const BASE: [&str; 8] = ["-s", "64x64", "--cutn", "4", "-p", "a yellow circle on a blue background", "--seed", "5"];

fn animate(dir: &Path, extra: &[&str]) -> Output {
    bin().current_dir(dir).arg("animate").args(BASE).args(extra).output().expect("run clipcanvas")
}

fn frame(dir: &Path, f: usize) -> RgbImage {
    image::open(dir.join(format!("frame_{f:05}.png"))).unwrap().to_rgb8()
}

/// Mean absolute difference per channel value, in 0..255.
fn distance(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn each_frame_follows_the_previous_one_moved_by_the_camera() {
    let d = tempfile::tempdir().unwrap();
    // --frames-dir is needed.
    fails(&animate(d.path(), &["--frames", "2"]), 2, "--frames-dir DIR is needed");
    let out = animate(
        d.path(),
        &[
            "--frames",
            "4",
            "-i",
            "6",
            "--iterations-per-frame",
            "2",
            "--zoom",
            "1.25",
            "--angle",
            "0:(10), 2:(-10)",
            "--frames-dir",
            "f",
        ],
    );
    ok(&out);
    let dir = d.path().join("f");
    assert_eq!(
        files_in(&dir),
        ["animation.state", "frame_00000.png", "frame_00001.png", "frame_00002.png", "frame_00003.png"]
    );
    // The angle schedule at each frame: frame 1 is halfway from 10 to -10.
    let angles = [10.0, 0.0, -10.0, -10.0];
    for (f, &angle) in angles.iter().enumerate().skip(1) {
        let prev = frame(&dir, f - 1);
        let now = frame(&dir, f);
        let motion = Motion { zoom: 1.25, angle, ..Motion::NONE };
        let moved = warp_rgb(&prev, &motion, Border::Replicate);
        let (to_moved, to_prev) = (distance(&now, &moved), distance(&now, &prev));
        assert!(
            to_moved < 0.6 * to_prev,
            "frame {f}: {to_moved:.2} from the warped previous frame, {to_prev:.2} from it unwarped"
        );
        // Each frame carries its number and the animation's settings.
        let meta = png_meta(&dir.join(format!("frame_{f:05}.png")));
        assert_eq!(meta["frame"], f);
        assert_eq!(meta["iteration"], 2);
        assert_eq!(meta["settings"]["animation"]["zoom"], "1.25");
        assert_eq!(meta["settings"]["animation"]["angle"], "0:(10), 2:(-10)");
    }
    assert_eq!(png_meta(&dir.join("frame_00000.png"))["iteration"], 6);
}

/// The flags of the run the determinism and resume tests share: every piece of state
/// (the smoothed latent, frame 0's colours) in use.
const FULL: [&str; 15] = [
    "--frames",
    "5",
    "-i",
    "4",
    "--iterations-per-frame",
    "3",
    "--zoom",
    "0:(1.1), 4:(1.0)",
    "--translation-x",
    "0:(2*sin(t))",
    "--latent-smoothing",
    "0.3",
    "--color-coherence",
    "--border",
    "wrap",
];

#[test]
fn the_same_seed_makes_the_same_frames_and_a_png_brings_the_settings_back() {
    let d = tempfile::tempdir().unwrap();
    ok(&animate(d.path(), &[&FULL[..], &["--frames-dir", "a"]].concat()));
    ok(&animate(d.path(), &[&FULL[..], &["--frames-dir", "b"]].concat()));
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    for f in 0..5 {
        let name = format!("frame_{f:05}.png");
        assert_eq!(read(&a.join(&name)), read(&b.join(&name)), "{name}");
    }
    // A frame's PNG holds the whole animation: --settings makes it again.
    let out = bin()
        .current_dir(d.path())
        .args(["animate", "--settings", "a/frame_00003.png", "--frames-dir", "c"])
        .output()
        .unwrap();
    ok(&out);
    for f in 0..5 {
        let name = format!("frame_{f:05}.png");
        assert_eq!(read(&a.join(&name)), read(&d.path().join("c").join(&name)), "{name} from the PNG's settings");
    }
    // `generate` with a frame's settings makes one image, the animation's frame 0, and its
    // PNG claims no animation.
    let out =
        bin().current_dir(d.path()).args(["generate", "--settings", "a/frame_00003.png", "-o", "one.png"]).output();
    ok(&out.unwrap());
    let one = image::open(d.path().join("one.png")).unwrap().to_rgb8();
    assert_eq!(one.as_raw(), frame(&a, 0).as_raw());
    let meta = png_meta(&d.path().join("one.png"));
    assert!(meta["settings"].get("animation").is_none() && meta.get("frame").is_none(), "{meta}");
}

#[test]
fn an_animation_stopped_by_ctrl_c_resumes_to_the_same_frames() {
    let d = tempfile::tempdir().unwrap();
    ok(&animate(d.path(), &[&FULL[..], &["--frames-dir", "whole"]].concat()));
    let child = bin()
        .current_dir(d.path())
        .arg("animate")
        .args(BASE)
        .args(FULL)
        .args(["--frames-dir", "cut"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cut = d.path().join("cut");
    let started = Instant::now();
    while !cut.join("frame_00001.png").exists() {
        assert!(started.elapsed() < Duration::from_secs(300), "no frame 1");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(0) {
        panic!("the animation finished before Ctrl-C reached it: {stderr}");
    }
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume cut continues it"), "{stderr}");
    let done = files_in(&cut).iter().filter(|n| n.starts_with("frame_")).count();
    assert!((2..5).contains(&done), "{done} frames before the stop");
    // Changing a setting on resume is refused; the models, --device and outputs may be given.
    fails(
        &bin().current_dir(d.path()).args(["animate", "--resume", "cut", "--zoom", "2"]).output().unwrap(),
        2,
        "--resume continues with the animation's own settings",
    );
    let out = bin().current_dir(d.path()).args(["animate", "--resume", "cut", "--gif", "cut.gif"]).output().unwrap();
    assert!(ok(&out).stderr.contains(&format!("resuming at frame {done} of 5")));
    for f in 0..5 {
        let name = format!("frame_{f:05}.png");
        assert_eq!(read(&d.path().join("whole").join(&name)), read(&cut.join(&name)), "{name}");
    }
    let gif = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(read(&d.path().join("cut.gif")))).unwrap();
    use image::AnimationDecoder;
    let frames = gif.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 5);
    // 12 fps: 83 ms a frame, which GIF keeps in hundredths (80 ms).
    assert_eq!(frames[0].delay().numer_denom_ms(), (80, 1), "the animation's own 12 fps");
    // A finished animation can be exported again at another speed.
    let out =
        bin().current_dir(d.path()).args(["animate", "--resume", "cut", "--fps", "5", "--gif", "slow.gif"]).output();
    ok(&out.unwrap());
    let slow = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(read(&d.path().join("slow.gif")))).unwrap();
    assert_eq!(slow.into_frames().collect_frames().unwrap()[0].delay().numer_denom_ms(), (200, 1));
    // Resuming a finished animation makes nothing more.
    let out = bin().current_dir(d.path()).args(["animate", "--resume", "cut"]).output().unwrap();
    assert!(ok(&out).stderr.contains("5 frames in cut"));
}

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, image::Rgb(rgb))
}

#[test]
fn restyling_starts_each_frame_from_its_source_frame() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let colours = [[230, 40, 40], [40, 200, 60], [40, 60, 230]];
    for (i, c) in colours.iter().enumerate() {
        let mut img = solid(80, 80, *c);
        for x in 20..60 {
            for y in 20..60 {
                img.put_pixel(x, y, image::Rgb([240, 240, 240]));
            }
        }
        img.save(src.join(format!("in_{i}.png"))).unwrap();
    }
    std::fs::write(src.join("notes.txt"), "not a frame").unwrap();
    let out = animate(
        d.path(),
        &[
            "--input-frames",
            "src",
            "-i",
            "2",
            "--iterations-per-frame",
            "2",
            "--init-weight",
            "2",
            "--frames-dir",
            "out",
        ],
    );
    assert!(ok(&out).stderr.contains("3 frames in out"));
    let out_dir = d.path().join("out");
    for (f, _) in colours.iter().enumerate() {
        let made = frame(&out_dir, f);
        let dists: Vec<f64> = (0..3)
            .map(|i| {
                let s = image::open(src.join(format!("in_{i}.png"))).unwrap().to_rgb8();
                distance(&made, &image::imageops::resize(&s, 64, 64, image::imageops::FilterType::Lanczos3))
            })
            .collect();
        let nearest = (0..3).min_by(|a, b| dists[*a].total_cmp(&dists[*b])).unwrap();
        assert_eq!(nearest, f, "frame {f}: distances to the sources {dists:?}");
    }
    // Asking for more frames than the source has is refused.
    fails(&animate(d.path(), &["--input-frames", "src", "--frames", "4", "--frames-dir", "o2"]), 2, "holds 3 frames");
}

#[test]
fn the_motion_preview_moves_a_test_card_without_models() {
    let d = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = bin()
        .current_dir(d.path())
        .args([
            "animate",
            "--preview-motion",
            "--frames",
            "24",
            "-s",
            "96x64",
            "--translation-x",
            "3",
            "--border",
            "wrap",
        ])
        .args(["--frames-dir", "p", "--gif", "p.gif", "--vqgan", "no-such-model"])
        .output()
        .unwrap();
    assert!(ok(&out).stderr.contains("motion preview: 24 frames in p"));
    assert!(started.elapsed() < Duration::from_secs(30), "a preview takes seconds");
    let dir = d.path().join("p");
    assert_eq!(files_in(&dir).len(), 24);
    let (first, last) = (frame(&dir, 0), frame(&dir, 23));
    assert_eq!(first.dimensions(), (96, 64));
    // The blue corner square (top left of the card) has moved 23 × 3 = 69 pixels right,
    // and the green one (top right) has wrapped round to the left of it.
    let (blue, green) = (image::Rgb([40, 80, 230]), image::Rgb([40, 200, 60]));
    assert_eq!((first.get_pixel(2, 2), first.get_pixel(90, 2)), (&blue, &green));
    assert_eq!((last.get_pixel(71, 2), last.get_pixel(60, 2)), (&blue, &green));
    assert!(d.path().join("p.gif").exists());
}

fn one_error(extra: &[&str], needle: &str) {
    let d = tempfile::tempdir().unwrap();
    let before = files_in(d.path());
    fails(&animate(d.path(), extra), 2, needle);
    assert_eq!(files_in(d.path()), before, "nothing written for {extra:?}");
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    one_error(
        &["--zoom", "0:(1.0), 30:(1.04", "--frames-dir", "x"],
        "--zoom: at character 13: this '(' is never closed",
    );
    one_error(&["--angle", "0:(sin(q))", "--frames-dir", "x"], "--angle: at character 4: \"sin(q)\" uses \"q\"");
    one_error(&["--zoom", "0:(1), 3:(0)", "--frames", "4", "--frames-dir", "x"], "zoom: the value at frame 3 is 0");
    one_error(&["--translation-x", "0:(1/(t-2))", "--frames-dir", "x"], "at frame 2: gives inf");
    one_error(&["--border", "mirror", "--frames-dir", "x"], "--border must be replicate or wrap");
    one_error(&["--prompt-schedule", "{0: \"a\"}", "--frames-dir", "x"], "-p and --prompt-schedule both give");
    one_error(&["--latent-smoothing", "1", "--frames-dir", "x"], "latent smoothing must be in [0, 1)");
    one_error(&["--input-frames", "missing", "--frames-dir", "x"], "cannot read the input frames' folder");
    one_error(&["--frames-dir", "x", "--gif", "x/frame_00001.png"], "cannot write a GIF as .png");
    // A folder that holds an animation is not overwritten.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("x")).unwrap();
    std::fs::write(d.path().join("x/frame_00000.png"), b"earlier work").unwrap();
    fails(&animate(d.path(), &["--frames-dir", "x"]), 2, "x already holds an animation: --resume x continues it");
    assert_eq!(read(&d.path().join("x/frame_00000.png")), b"earlier work");
    // Without ffmpeg a video source is refused before anything is written.
    let out = bin()
        .current_dir(d.path())
        .env("PATH", "")
        .args(["animate", "--input-video", "clip.mp4", "--frames-dir", "v"])
        .output()
        .unwrap();
    fails(&out, 2, "ffmpeg");
    assert!(!d.path().join("v").exists());
}

/// Checks the first frame of an animation is the image `generate` makes with the same
/// settings and iterations.
#[test]
fn frame_zero_is_the_image_generate_makes() {
    let d = tempfile::tempdir().unwrap();
    ok(&animate(d.path(), &["--frames", "1", "-i", "5", "--frames-dir", "a"]));
    let out = bin().current_dir(d.path()).arg("generate").args(BASE).args(["-i", "5", "-o", "g.png"]).output().unwrap();
    ok(&out);
    let (a, g) = (frame(&d.path().join("a"), 0), image::open(d.path().join("g.png")).unwrap().to_rgb8());
    assert_eq!(a.as_raw(), g.as_raw());
}
