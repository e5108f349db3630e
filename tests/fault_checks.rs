//! Run-level checks of the hardening issue, item 9 (silent corruption and nonsense): a
//! score that is not a number, stops out of reach, outputs that name one file, an
//! image written in the format its name promises, resumed runs that would ignore their
//! flags or go backwards, and a run that fails mid-way. Each process test checks the
//! exit code, the one error line, that nothing panicked, and the exact files left
//! behind.

mod common;

use std::path::Path;
use std::process::Output;

use candle_core::{DType, Device, Tensor};
use common::{bin, fails, fixture, model_args, names, ok, png_meta, read, tree};

/// A small, fast run: 32×32, 2 cutouts, every iteration reported.
fn generate(dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "--save-every", "1"]);
    cmd.args(extra).current_dir(dir);
    cmd.output().expect("run clipcanvas")
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8().into_raw()
}

/// Asserts a run did not start: no progress line on stderr.
fn did_not_run(stderr: &str) {
    assert!(!stderr.lines().any(|l| l.starts_with("iteration ")), "it ran: {stderr}");
}

// ---------------------------------------------------------------------------------------
// score: a score that is not a number is an error
// ---------------------------------------------------------------------------------------

/// A copy of the tiny CLIP in `dir/name` with one weight replaced by `f(weight)`.
fn damaged_clip(dir: &Path, name: &str, weight: &str, f: impl Fn(&Tensor) -> Tensor) -> String {
    let clip = dir.join(name);
    std::fs::create_dir(&clip).expect("mkdir");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("clip-tiny").join(file), clip.join(file)).expect("copy");
    }
    let mut tensors =
        candle_core::safetensors::load(fixture("clip-tiny/model.safetensors"), &Device::Cpu).expect("load");
    let damaged = f(&tensors[weight]);
    tensors.insert(weight.to_owned(), damaged);
    candle_core::safetensors::save(&tensors, clip.join("model.safetensors")).expect("save");
    clip.display().to_string()
}

/// Hardening issue, item 9: `score` printed NaN with exit 0 when CLIP's embedding had no
/// direction. A model whose image projection is all zeros, or whose text projection
/// holds NaN, now fails with exit 1 and one line naming which embedding, and prints no
/// score.
#[test]
fn score_refuses_to_print_a_score_that_is_not_a_number() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let zeros = damaged_clip(d, "zero-image", "visual_projection.weight", |w| w.zeros_like().expect("zeros"));
    let nan = damaged_clip(d, "nan-text", "text_projection.weight", |w| {
        Tensor::full(f32::NAN, w.shape(), &Device::Cpu).and_then(|t| t.to_dtype(DType::F16)).expect("nan")
    });
    let image = fixture("score/exact.png").display().to_string();
    let before = tree(d);
    let score = |clip: &str| {
        bin().args(["score", "--clip", clip, "--image", &image, "-p", "a cat", "-p", "a dog"]).output().expect("run")
    };
    let out = score(&zeros);
    fails(&out, 1, "CLIP's embedding of the image is all zeros, so it has no score");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = score(&nan);
    fails(&out, 1, "CLIP's embedding of prompt 1 (\"a cat\") is not finite");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(tree(d), before);
    // The undamaged model still scores.
    let out = ok(&score(&fixture("clip-tiny").display().to_string()));
    assert_eq!(out.stdout.lines().filter(|l| l.parse::<f32>().is_ok_and(f32::is_finite)).count(), 2);
}

// ---------------------------------------------------------------------------------------
// Stops beyond the reach of the distance
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 9: a stop that is not finite, or beyond ±π²/2 (the reach of
/// the spherical distance it is compared with), is refused with exit 2 before anything
/// is written: in text and image prompts and in a settings file alike (the studio
/// validates settings with the same parser). A stop within reach runs.
#[test]
fn stops_out_of_reach_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::copy(fixture("score/exact.png"), d.join("ref.png")).expect("copy");
    std::fs::write(d.join("s.json"), r#"{"prompts": ["a cat:1:7"]}"#).expect("write");
    let before = tree(d);
    let cases: [(&[&str], &str); 6] = [
        (&["-p", "a cat:1:5"], "stop 5 in prompt \"a cat:1:5\" is out of range"),
        (&["-p", "a cat:1:inf"], "stop inf in prompt"),
        (&["-p", "a cat:-1:-inf"], "stop -inf in prompt"),
        (&["-p", "a cat:1:1e300"], "is out of range"),
        (&["-p", "x", "--image-prompt", "ref.png:1:-9"], "stop -9 in prompt \"ref.png:1:-9\""),
        (&["--settings", "s.json", "-o", "out.png"], "stop 7 in prompt \"a cat:1:7\""),
    ];
    for (flags, needle) in cases {
        let out = generate(d, &[&["-i", "2"][..], flags].concat());
        let stderr = fails(&out, 2, needle);
        assert!(stderr.contains("leave it out for no stop"), "{stderr}");
        did_not_run(&stderr);
        assert_eq!(tree(d), before, "{flags:?}");
    }
    // Within reach (the PyTorch reference's step uses 1.2071) it runs.
    ok(&generate(d, &["-i", "1", "-p", "a cat:1:1.2071", "--image-prompt", "ref.png:0.5:-4.9", "-o", "ok.png"]));
    assert_eq!(png_meta(&d.join("ok.png"))["settings"]["prompts"][0], "a cat:1:1.2071");
}

// ---------------------------------------------------------------------------------------
// Outputs that name one file
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 9: --out naming the same file as --session, --gif or --video,
/// the session being resumed, or the frames folder (or one of its frames) is refused
/// with exit 2 before any work, however the names are spelled (`./`, `..`, a symbolic
/// link to the folder), and nothing is written or changed.
#[cfg(unix)]
#[test]
fn outputs_that_name_one_file_are_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::create_dir(d.join("real")).expect("mkdir");
    std::os::unix::fs::symlink("real", d.join("link")).expect("symlink");
    std::fs::create_dir(d.join("frames")).expect("mkdir");
    // A session with no extension, so an image or a GIF could be named like it.
    ok(&generate(d, &["-p", "x", "-i", "1", "-o", "first.png", "--session", "run"]));
    let before = tree(d);
    let cases: [(&[&str], &str); 9] = [
        (&["-o", "a.png", "--session", "a.png"], "--out and --session name the same file (a.png)"),
        (&["-o", "a.png", "--session", "./real/../a.png"], "--out and --session name the same file"),
        (&["-o", "real/a.png", "--session", "link/a.png"], "--out and --session name the same file"),
        (&["-o", "anim", "--gif", "anim"], "--out and --gif name the same file (anim)"),
        (&["-o", "a.png", "--gif", "clip", "--video", "./clip"], "--gif and --video name the same file"),
        (&["--resume", "run", "-o", "run"], "--out names the session being resumed (run)"),
        (&["--resume", "run", "-o", "b.png", "--gif", "real/../run"], "--gif names the session being resumed"),
        (&["--frames", "frames", "-o", "frames/frame_000001.png"], "is the --frames folder or one of its frames"),
        (&["--frames", "new-frames", "--session", "./new-frames"], "--session ./new-frames is the --frames folder"),
    ];
    for (flags, needle) in cases {
        let prompt: &[&str] = if flags.contains(&"--resume") { &[] } else { &["-p", "x"] };
        let out = generate(d, &[prompt, &["-i", "2"], flags].concat());
        let stderr = fails(&out, 2, needle);
        did_not_run(&stderr);
        assert_eq!(tree(d), before, "{flags:?}");
    }
    // Resuming into the same session file is what --session is for.
    ok(&generate(d, &["--resume", "run", "-i", "2", "-o", "second.png", "--session", "run"]));
    assert_eq!(png_meta(&d.join("second.png"))["iteration"], 2);
}

// ---------------------------------------------------------------------------------------
// --out writes the format its name promises
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 9: `--out x.jpg` wrote PNG bytes. The image is now written in
/// the format its extension names, as image editors do: a real JPEG for .jpg/.jpeg, a
/// lossless WebP for .webp (any case), with a note that only a PNG keeps the settings;
/// any other extension (and a GIF or video named as something else) is refused with
/// exit 2 before any work.
#[test]
fn out_is_written_in_the_format_its_name_promises() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    for (name, magic, format) in [
        ("a.jpg", &b"\xff\xd8\xff"[..], image::ImageFormat::Jpeg),
        ("b.JPEG", &b"\xff\xd8\xff"[..], image::ImageFormat::Jpeg),
        ("c.webp", &b"RIFF"[..], image::ImageFormat::WebP),
    ] {
        let s = ok(&generate(d, &["-p", "x", "-i", "1", "-o", name]));
        let what = if format == image::ImageFormat::Jpeg { "JPEG" } else { "WebP" };
        assert!(s.stderr.contains(&format!("note: {name} will be a {what}, which keeps no settings")), "{}", s.stderr);
        let bytes = read(&d.join(name));
        assert!(bytes.starts_with(magic), "{name}");
        assert_eq!(image::guess_format(&bytes).expect("format"), format, "{name}");
        let img = image::load_from_memory(&bytes).expect("decode");
        assert_eq!((img.width(), img.height()), (32, 32), "{name}");
    }
    // The lossless WebP holds exactly the PNG's pixels.
    ok(&generate(d, &["-p", "x", "-i", "1", "-o", "d.png"]));
    assert_eq!(pixels(&d.join("c.webp")), pixels(&d.join("d.png")));
    let before = tree(d);
    let cases: [(&[&str], &str); 6] = [
        (
            &["-o", "x.bmp"],
            "x.bmp: cannot write an image as .bmp: name it .png (which keeps the settings), .jpg or .webp",
        ),
        (&["-o", "x.session"], "cannot write an image as .session"),
        (&["-o", "x.gif"], "cannot write an image as .gif"),
        (&["--gif", "anim.png"], "anim.png: cannot write a GIF as .png: name it .gif"),
        (&["--video", "v.webm"], "v.webm: cannot write an MP4 video as .webm: name it .mp4"),
        (&["--video", "v.gif"], "cannot write an MP4 video as .gif"),
    ];
    for (flags, needle) in cases {
        let out = generate(d, &[&["-p", "x", "-i", "2"][..], flags].concat());
        did_not_run(&fails(&out, 2, needle));
        assert_eq!(tree(d), before, "{flags:?}");
    }
}

/// The studio's "Save image" shares the writer: a frame saved as .jpg is a JPEG and the
/// message says it keeps no settings; a PNG keeps them; an unknown extension is an
/// error naming the file, and nothing is written.
#[test]
fn the_studio_writer_picks_the_format_by_name_too() {
    use clipcanvas::settings::png::{ModelFiles, PngMeta};
    use clipcanvas::worker::files::write_image;
    use clipcanvas::worker::Frame;
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let frame = Frame::from_rgb(&image::RgbImage::from_pixel(8, 4, image::Rgb([200, 30, 10])));
    let meta = PngMeta::new(&clipcanvas::settings::RunSettings::default(), 5, ModelFiles::default());
    let note = write_image(&d.join("s.jpg"), &frame, &meta).expect("jpeg");
    assert_eq!(note, " (a JPEG keeps no settings: save a .png to keep them)");
    assert_eq!(image::guess_format(&read(&d.join("s.jpg"))).expect("format"), image::ImageFormat::Jpeg);
    assert_eq!(write_image(&d.join("s.png"), &frame, &meta).expect("png"), "");
    assert_eq!(png_meta(&d.join("s.png"))["iteration"], 5);
    let e = write_image(&d.join("s.tiff"), &frame, &meta).expect_err("tiff");
    assert!(e.contains("s.tiff: cannot write an image as .tiff"), "{e}");
    assert_eq!(names(d), ["s.jpg", "s.png"]);
}

// ---------------------------------------------------------------------------------------
// --resume: flags it would ignore, and going backwards
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 9: `--size` was ignored with `--resume`, with no note. A
/// resumed run continues exactly as saved, so a flag that would change it (size,
/// prompts, learning rate, seed…) is refused with exit 2 and one line giving the
/// session's value, and so is --settings; nothing is written. The same values as the
/// session's, and the flags a resumed run does take (-i, the models, --save-every), run.
#[test]
fn resume_refuses_the_flags_it_would_ignore() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-p", "x", "-i", "2", "-o", "first.png", "--session", "s.session"]));
    std::fs::write(d.join("s.json"), r#"{"prompts": ["x"]}"#).expect("write");
    let before = tree(d);
    let cases: [(&[&str], &str); 6] = [
        (&["-s", "64x64"], "--size does not apply to a resumed run, which continues with its session's size (32x32)"),
        (&["-p", "y"], "--prompt does not apply to a resumed run, which continues with its session's prompts (\"x\")"),
        (
            &["--lr", "0.3"],
            "--lr does not apply to a resumed run, which continues with its session's learning rate (0.1)",
        ),
        (&["--seed", "9"], "--seed does not apply"),
        (&["--cutn", "4"], "--cutn does not apply"),
        (&["--settings", "s.json"], "--settings and --resume cannot be combined"),
    ];
    for (flags, needle) in cases {
        let out = generate(d, &[&["--resume", "s.session", "-i", "3", "-o", "out.png"][..], flags].concat());
        did_not_run(&fails(&out, 2, needle));
        assert_eq!(tree(d), before, "{flags:?}");
    }
    // The command line that made the session, with --resume added, continues it.
    ok(&generate(d, &["-p", "x", "-i", "3", "-o", "out.png", "--resume", "s.session", "--save-every", "2"]));
    assert_eq!(png_meta(&d.join("out.png"))["iteration"], 3);
}

/// Hardening issue, item 9: `--resume` with fewer iterations than the session reached
/// wrote the saved image as if a shorter run had made it. -i is the total: below the
/// saved iteration it is refused with exit 2; equal, the session's own image is written
/// again with a note that there is nothing to run.
#[test]
fn resume_with_fewer_iterations_than_saved_is_refused() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-p", "x", "-i", "3", "-o", "first.png", "--session", "s.session"]));
    let before = tree(d);
    for i in ["0", "2"] {
        let out = generate(d, &["--resume", "s.session", "-i", i, "-o", "out.png"]);
        let stderr = fails(&out, 2, "the session is at iteration 3 already and -i is the total, not more: give -i 3");
        did_not_run(&stderr);
        assert_eq!(tree(d), before, "-i {i}");
    }
    let s = ok(&generate(d, &["--resume", "s.session", "-i", "3", "-o", "again.png"]));
    assert!(s.stderr.contains("note: the session is at iteration 3 already: nothing to run"), "{}", s.stderr);
    did_not_run(&s.stderr);
    assert_eq!(pixels(&d.join("again.png")), pixels(&d.join("first.png")));
    assert_eq!(png_meta(&d.join("again.png"))["iteration"], 3);
    assert_eq!(names(d), ["again.png", "first.png", "s.session"]);
}

// ---------------------------------------------------------------------------------------
// A run that fails mid-way
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 9 (with item 4's rule): a run that fails mid-way keeps what
/// its finished steps made — the last frame in --out and the session beside it — and
/// its one error line says why it stopped and where they are (exit 1). Here frame 2
/// cannot be written (a folder holds its name). The saved session is whole: resumed, it
/// ends bit-exactly where an uninterrupted run does.
#[test]
fn a_run_that_fails_mid_way_keeps_its_finished_steps_and_says_where() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::create_dir_all(d.join("frames/frame_000002.png")).expect("mkdir");
    let out = generate(d, &["-p", "x", "-i", "6", "--seed", "4", "--frames", "frames", "-o", "out.png"]);
    let stderr = fails(&out, 1, "frames/frame_000002.png: cannot write");
    let error = stderr.lines().find(|l| l.starts_with("error")).expect("error line");
    assert!(error.ends_with("; stopped at iteration 3: image in out.png, session in out.session"), "{error}");
    assert_eq!(
        names(d),
        [
            "frames/",
            "frames/frame_000000.png",
            "frames/frame_000001.png",
            "frames/frame_000002.png/",
            "out.png",
            "out.session"
        ]
    );
    assert_eq!(png_meta(&d.join("out.png"))["iteration"], 3);
    ok(&generate(d, &["--resume", "out.session", "-i", "6", "-o", "resumed.png"]));
    ok(&generate(d, &["-p", "x", "-i", "6", "--seed", "4", "-o", "straight.png"]));
    assert_eq!(pixels(&d.join("resumed.png")), pixels(&d.join("straight.png")), "bit-exact continuation");
}
