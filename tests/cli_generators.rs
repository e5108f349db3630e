//! `clipcanvas generate --generator pixel|fft` as a process on the fixture CLIP: the
//! images they draw, their settings in the PNG, reproduction and resume, an init image,
//! and one-line errors for flags that belong to another generator.

mod common;

use std::path::Path;
use std::process::Output;

use common::{bin, fails, model_args, ok, read};

/// A small run: 32×32, 2 cutouts.
fn generate(dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-p", "a red barn in snow"]);
    cmd.args(extra).current_dir(dir);
    cmd.output().expect("run clipcanvas")
}

fn settings_json(png: &Path) -> serde_json::Value {
    let meta = clipcanvas::export::read_png_metadata(png).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    v["settings"].clone()
}

#[test]
fn the_pixel_generator_draws_flat_cells_that_move_and_reproduce_from_the_png() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["--generator", "pixel", "--pixel-size", "8x4", "-i", "0", "--seed", "5", "-o", "start.png"]));
    ok(&generate(d, &["--generator", "pixel", "--pixel-size", "8x4", "-i", "4", "--seed", "5", "-o", "a.png"]));
    let img = image::open(d.join("a.png")).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), (32, 32), "the size asked for");
    // 8 cells across and 4 down on 32×32: blocks of 4×8 pixels, each one colour.
    for (x, y, p) in img.enumerate_pixels() {
        assert_eq!(p, img.get_pixel(x / 4 * 4, y / 8 * 8), "pixel {x},{y} differs from its cell");
    }
    assert_ne!(read(&d.join("start.png")), read(&d.join("a.png")), "four iterations moved the cells");

    let s = settings_json(&d.join("a.png"));
    assert_eq!(s["generator"], serde_json::json!({"kind": "pixel", "cells_x": 8, "cells_y": 4}));
    assert_eq!(s["lr"], 0.05, "the pixel generator's own learning rate");
    ok(&bin().args(["generate", "--settings", "a.png", "-o", "b.png"]).current_dir(d).output().expect("run"));
    assert_eq!(read(&d.join("a.png")), read(&d.join("b.png")), "the PNG's settings make the same bytes");
}

#[test]
fn an_fft_run_resumes_exactly_as_the_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let fft = ["--generator", "fft", "--fft-decay", "1.2", "--seed", "9"];
    ok(&generate(d, &[&fft[..], &["-i", "4", "-o", "full.png"]].concat()));
    ok(&generate(d, &[&fft[..], &["-i", "2", "-o", "half.png", "--session", "half.session"]].concat()));
    let out = bin()
        .args(["generate", "--resume", "half.session", "-i", "4", "-o", "resumed.png"])
        .current_dir(d)
        .output()
        .expect("run");
    ok(&out);
    let full = image::open(d.join("full.png")).expect("full").to_rgb8();
    let resumed = image::open(d.join("resumed.png")).expect("resumed").to_rgb8();
    assert_eq!(full.as_raw(), resumed.as_raw(), "bit-exact continuation");
    let s = settings_json(&d.join("full.png"));
    assert_eq!(s["generator"]["kind"], "fft");
    assert_eq!(s["generator"]["decay"], 1.2);
    assert_eq!(s["lr"], 0.3, "pixray's fft learning rate");
}

#[test]
fn an_init_image_starts_the_pixel_cells_at_its_colours() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    // Left half red, right half blue.
    let init =
        image::RgbImage::from_fn(
            64,
            64,
            |x, _| if x < 32 { image::Rgb([220, 30, 30]) } else { image::Rgb([20, 40, 200]) },
        );
    init.save(d.join("init.png")).expect("save");
    ok(&generate(
        d,
        &["--generator", "pixel", "--pixel-size", "4x4", "--init-image", "init.png", "-i", "0", "-o", "a.png"],
    ));
    let img = image::open(d.join("a.png")).expect("png").to_rgb8();
    let near = |p: &image::Rgb<u8>, q: [u8; 3]| p.0.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= 3);
    assert!(near(img.get_pixel(2, 2), [220, 30, 30]), "{:?}", img.get_pixel(2, 2));
    assert!(near(img.get_pixel(29, 29), [20, 40, 200]), "{:?}", img.get_pixel(29, 29));
}

#[test]
fn a_clip_alone_draws_with_the_pixel_and_fourier_generators() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let clip = common::fixture("clip-tiny").display().to_string();
    let run = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.args(["generate", "--clip", &clip, "-s", "32x32", "--cutn", "2", "-p", "a red barn", "-i", "2"]);
        cmd.args(extra).current_dir(d).output().expect("run clipcanvas")
    };
    for name in ["pixel", "fft"] {
        let out = format!("{name}.png");
        ok(&run(&["--generator", name, "-o", &out]));
        let meta = clipcanvas::export::read_png_metadata(&d.join(&out)).expect("read").expect("metadata");
        let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
        assert_eq!(v["models"]["clip"]["name"], "clip-tiny");
        assert!(v["models"]["vqgan"].is_null(), "no VQGAN was used: {}", v["models"]);
        ok(&bin().args(["generate", "--settings", &out, "-o", "again.png"]).current_dir(d).output().expect("run"));
        assert_eq!(read(&d.join(&out)), read(&d.join("again.png")), "{name}: reproduced without a VQGAN");
    }
    fails(&run(&["-o", "v.png"]), 2, "a CLIP alone with --generator pixel or fft");
}

#[test]
fn an_animation_draws_every_frame_with_the_pixel_cells() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let mut cmd = bin();
    cmd.arg("animate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-p", "a red barn in snow"]);
    cmd.args(["--generator", "pixel", "--pixel-size", "8x4", "--frames", "3", "--iterations-per-frame", "2"]);
    cmd.args(["-i", "2", "--zoom", "1.1", "--frames-dir", "frames"]).current_dir(d);
    ok(&cmd.output().expect("run clipcanvas"));
    for n in 0..3 {
        let img = image::open(d.join(format!("frames/frame_{n:05}.png"))).expect("frame").to_rgb8();
        // Each warped frame is taken back into cells: flat on every 4×8 block.
        for (x, y, p) in img.enumerate_pixels() {
            assert_eq!(p, img.get_pixel(x / 4 * 4, y / 8 * 8), "frame {n}: pixel {x},{y} differs from its cell");
        }
    }
}

#[test]
fn flags_of_another_generator_and_impossible_combinations_get_one_line() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let e =
        fails(&generate(d, &["--pixel-size", "8x8", "-o", "x.png"]), 2, "--pixel-size belongs to the pixel generator");
    assert!(e.contains("vqgan generator"), "{e}");
    fails(
        &generate(d, &["--generator", "pixel", "--fft-decay", "2", "-o", "x.png"]),
        2,
        "--fft-decay belongs to the fft",
    );
    fails(&generate(d, &["--generator", "biggan", "-o", "x.png"]), 2, "unknown generator \"biggan\"");
    fails(&generate(d, &["--generator", "pixel", "--pixel-size", "8", "-o", "x.png"]), 2, "must be COLSxROWS");
    fails(&generate(d, &["--generator", "pixel", "--pixel-size", "64x8", "-o", "x.png"]), 2, "at most the canvas");
    fails(&generate(d, &["--generator", "fft", "--coarse", "2:10", "-o", "x.png"]), 2, "has none");
    fails(&generate(d, &["--generator", "fft", "--one-step", "-o", "x.png"]), 2, "cannot start a run of the fft");
    fails(&generate(d, &["--generator", "fft", "--fft-colors=-1", "-o", "x.png"]), 2, "fft colors");
    assert!(!d.join("x.png").exists(), "nothing written");
}
