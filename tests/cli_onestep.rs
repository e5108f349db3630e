//! Issue 21: `clipcanvas train-onestep` on a folder of images and `generate --one-step`,
//! as processes on the fixture models (the real file formats): determinism, Ctrl-C and
//! `--resume`, drafts reproduced from their PNG, refinement, and one-line errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{bin, fails, fixture, model_args, ok, read};

/// Six small images of different colours and layouts, one not square.
fn image_folder(dir: &Path) -> PathBuf {
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).expect("mkdir");
    for i in 0u8..6 {
        let (w, h) = if i == 0 { (48, 36) } else { (40, 40) };
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let left = x < w / 2;
            let c = [i * 40, 255 - i * 30, if left { 30 } else { 220 }];
            image::Rgb(if (x / 8 + y / 8 + u32::from(i)) % 3 == 0 { [c[1], c[0], c[2]] } else { c })
        });
        img.save(imgs.join(format!("img{i}.png"))).expect("save");
    }
    imgs
}

fn train(dir: &Path, out: &str, steps: usize, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args(["train-onestep", "--images", "imgs", "--out", out, "--size", "32", "--arch", "16,1,2"])
        .args(["--batch", "4", "--views", "2", "--steps", &steps.to_string()])
        .args(model_args())
        .args(extra)
        .current_dir(dir);
    cmd
}

fn draft(dir: &Path, model: &str, out: &str, extra: &[&str]) -> Output {
    bin()
        .arg("generate")
        .args(model_args())
        .args(["--one-step", "--onestep", model, "-s", "32x32", "--cutn", "2", "-p", "a lighthouse at dusk", "-o", out])
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("run clipcanvas")
}

#[test]
fn a_folder_trains_deterministically_and_drafts_reproduce_from_their_png() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    image_folder(d);
    ok(&train(d, "a", 8, &[]).output().expect("run"));
    ok(&train(d, "b", 8, &[]).output().expect("run"));
    assert_eq!(read(&d.join("a/model.safetensors")), read(&d.join("b/model.safetensors")), "one seed, one model");
    ok(&train(d, "c", 8, &["--seed", "5"]).output().expect("run"));
    assert_ne!(read(&d.join("a/model.safetensors")), read(&d.join("c/model.safetensors")), "another seed");
    // Sizes come from the models: CLIP width 16, 64 codes, an f4 VQGAN at 32².
    let config: serde_json::Value = serde_json::from_slice(&read(&d.join("a/config.json"))).expect("json");
    assert_eq!(config["clip_dim"], 16);
    assert_eq!(config["n_codes"], 64);
    assert_eq!(config["grid"], serde_json::json!([8, 8]));
    assert!(!d.join("a.checkpoint").exists(), "the checkpoint is removed when training ends");

    // A draft: iteration 0, the model and its hash in the PNG, reproduced byte for byte.
    let stderr = ok(&draft(d, "a", "draft.png", &["--candidates", "3", "--save-candidates"])).stderr;
    assert_eq!(stderr.matches("candidate ").count(), 3, "{stderr}");
    for rank in 0..3 {
        assert!(d.join(format!("draft.candidate-{rank}.png")).is_file());
    }
    assert_eq!(read(&d.join("draft.png")), read(&d.join("draft.candidate-0.png")), "the draft is the best candidate");
    let meta = clipcanvas::export::read_png_metadata(&d.join("draft.png")).expect("read").expect("metadata");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(meta["iteration"], 0);
    assert_eq!(meta["settings"]["one_step"]["candidates"], 3);
    assert_eq!(meta["models"]["onestep"]["sha256"].as_str().map(str::len), Some(64), "{meta}");
    let again =
        bin().args(["generate", "--settings", "draft.png", "-o", "again.png"]).current_dir(d).output().expect("run");
    ok(&again);
    assert_eq!(read(&d.join("draft.png")), read(&d.join("again.png")), "--settings reproduces the draft");
    // Another ranked candidate, from its own PNG.
    let second =
        bin().args(["generate", "--settings", "draft.candidate-1.png", "-o", "second.png"]).current_dir(d).output();
    ok(&second.expect("run"));
    assert_eq!(read(&d.join("draft.candidate-1.png")), read(&d.join("second.png")));

    // Refinement continues from the draft as iteration 0.
    ok(&draft(d, "a", "refined.png", &["--candidates", "3", "-i", "2", "--init-weight", "0.5"]));
    assert_ne!(read(&d.join("draft.png")), read(&d.join("refined.png")), "two iterations changed nothing");
    let meta = clipcanvas::export::read_png_metadata(&d.join("refined.png")).expect("read").expect("metadata");
    assert!(meta.contains("\"iteration\":2"), "{meta}");
}

#[test]
fn ctrl_c_keeps_the_checkpoint_and_resume_reaches_the_same_model() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    image_folder(d);
    ok(&train(d, "straight", 400, &[]).output().expect("run"));

    let mut child = train(d, "stopped", 400, &[]).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    // Interrupt once training is under way.
    for line in lines.by_ref() {
        if line.expect("utf8").starts_with("train step") {
            break;
        }
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.wait().expect("wait").code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("--resume")), "{rest:?}");
    assert!(!d.join("stopped").exists(), "no half-written model");
    assert!(d.join("stopped.checkpoint/state.safetensors").is_file(), "the checkpoint stays");

    // Without --resume the checkpoint is not overwritten.
    fails(&train(d, "stopped", 400, &[]).output().expect("run"), 2, "--resume");
    // With other options it is refused.
    fails(&train(d, "stopped", 401, &["--resume"]).output().expect("run"), 2, "other options");
    let resumed = ok(&train(d, "stopped", 400, &["--resume"]).output().expect("run")).stderr;
    assert!(resumed.contains("resuming at step"), "{resumed}");
    assert_eq!(
        read(&d.join("straight/model.safetensors")),
        read(&d.join("stopped/model.safetensors")),
        "a resumed run ends where the uninterrupted one does"
    );
    assert!(!d.join("stopped.checkpoint").exists());
}

#[test]
fn bad_input_gets_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::create_dir_all(d.join("imgs")).expect("mkdir");
    fails(&train(d, "o", 2, &[]).output().expect("run"), 2, "no images");
    std::fs::write(d.join("imgs/broken.png"), b"not an image").expect("write");
    fails(&train(d, "o", 2, &[]).output().expect("run"), 2, "broken.png");
    std::fs::remove_file(d.join("imgs/broken.png")).expect("rm");
    image_folder(d);
    fails(&train(d, "o", 2, &["--size", "30"]).output().expect("run"), 2, "multiple of the VQGAN's");
    fails(&train(d, "o", 2, &["--arch", "10,1,3"]).output().expect("run"), 2, "heads");
    fails(&train(d, "o", 2, &["--caption-share", "0.5"]).output().expect("run"), 2, "captions");
    fails(&train(d, "o", 2, &["--resume"]).output().expect("run"), 2, "no checkpoint");
    fails(&train(d, "o", 2, &["--lr", "0"]).output().expect("run"), 2, "--lr");
    let names: Vec<String> =
        std::fs::read_dir(d).expect("list").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    assert_eq!(names, ["imgs"], "nothing written beside the images");

    // A one-step model and the models it does not fit.
    ok(&train(d, "m", 2, &[]).output().expect("run"));
    fails(&draft(d, "m", "x.png", &["-s", "64x64"]), 2, "draws 32x32 images");
    fails(&draft(d, "no-such-model", "x.png", &[]), 2, "no-such-model");
    // The same CLIP with one weight changed: trained for another CLIP.
    let other = d.join("clip-other");
    std::fs::create_dir_all(&other).expect("mkdir");
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture("clip-tiny").join(f), other.join(f)).expect("copy");
    }
    let mut w = read(&other.join("model.safetensors"));
    let last = w.len() - 1;
    w[last] ^= 1;
    std::fs::write(other.join("model.safetensors"), w).expect("write");
    let out = bin()
        .arg("generate")
        .args(["--vqgan", &fixture("vqgan-tiny/model.ckpt").display().to_string(), "--clip", "clip-other"])
        .args(["--one-step", "--onestep", "m", "-s", "32x32", "-p", "x", "-o", "x.png"])
        .current_dir(d)
        .output()
        .expect("run");
    fails(&out, 2, "trained for another CLIP");
    // Sampling flags need --one-step.
    let out = bin()
        .arg("generate")
        .args(model_args())
        .args(["-s", "32x32", "-p", "x", "--top-k", "5"])
        .current_dir(d)
        .output();
    fails(&out.expect("run"), 2, "need --one-step");
    fails(&draft(d, "m", "x.png", &["--top-p", "0"]), 2, "top-p");
    fails(&draft(d, "m", "x.png", &["--candidates", "2", "--pick", "2"]), 2, "pick 2");
    assert!(!d.join("x.png").exists(), "a failed run writes no image");
}
