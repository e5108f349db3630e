//! `clipcanvas batch` (issue 27) as a process, on the tiny fixture models: jobs and a 2×2
//! grid from one TOML file, each a PNG with its settings that `generate --settings` makes
//! again; a labelled contact sheet; `--resume` skipping what is done, also after a
//! SIGTERM mid-batch; a bad file one line naming the key, with nothing run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{bin, fails, files_in, fixture, ok, png_meta};

fn batch_file(dir: &Path, iterations: usize, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[base]\nvqgan = {:?}\nclip = {:?}\nwidth = 32\nheight = 32\ncutn = 2\niterations = {iterations}\n\
         prompts = [\"a lighthouse on a hill\"]\n\n[[job]]\nname = \"storm\"\nprompts = [\"a lighthouse in a storm\"]\n\n\
         [grid]\nx = {{ key = \"seed\", values = [1, 2] }}\ny = {{ key = \"lr\", values = [0.05, 0.2] }}\n{extra}",
        fixture("vqgan-tiny/model.ckpt").display().to_string(),
        fixture("clip-tiny").display().to_string(),
    );
    let path = dir.join("batch.toml");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn jobs_and_a_grid_make_pngs_and_a_labelled_contact_sheet() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    batch_file(d, 3, "");
    let out = ok(&bin().args(["batch", "batch.toml", "-o", "out"]).current_dir(d).output().expect("run"));
    assert_eq!(
        files_in(&d.join("out")),
        ["grid-x0-y0.png", "grid-x0-y1.png", "grid-x1-y0.png", "grid-x1-y1.png", "grid.png", "storm.png"]
    );
    assert!(out.stderr.contains("[5/5] grid-x1-y1: wrote"), "{}", out.stderr);
    // Each cell has its axes' values; each job's PNG makes itself again.
    let meta = png_meta(&d.join("out/grid-x1-y0.png"));
    assert_eq!((meta["settings"]["seed"].as_u64(), meta["settings"]["lr"].as_f64()), (Some(2), Some(0.05)));
    assert_eq!(png_meta(&d.join("out/storm.png"))["settings"]["prompts"][0], "a lighthouse in a storm");
    ok(&bin()
        .args(["generate", "--settings", "out/grid-x1-y0.png", "-o", "again.png"])
        .current_dir(d)
        .output()
        .expect("run"));
    let pixels = |p: &str| image::open(d.join(p)).expect("png").to_rgb8();
    assert_eq!(pixels("again.png"), pixels("out/grid-x1-y0.png"));
    // The sheet: the four cells in place, labels around them.
    let sheet = pixels("out/grid.png");
    assert!(sheet.width() > 2 * 32 && sheet.height() > 2 * 32);
    let cell = pixels("out/grid-x1-y1.png");
    let found = (0..=sheet.width() - 32)
        .any(|x| (0..=sheet.height() - 32).any(|y| image::imageops::crop_imm(&sheet, x, y, 32, 32).to_image() == cell));
    assert!(found, "the bottom-right cell is on the sheet");
    // --resume: everything is done.
    let again = ok(&bin().args(["batch", "batch.toml", "-o", "out", "--resume"]).current_dir(d).output().expect("run"));
    assert_eq!(again.stderr.matches("done already").count(), 5, "{}", again.stderr);
}

#[test]
fn a_stopped_batch_keeps_its_finished_jobs_and_resumes() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    batch_file(d, 150, "");
    let mut child =
        bin().args(["batch", "batch.toml", "-o", "out"]).current_dir(d).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    // The first job written, then a signal while the second runs.
    for line in lines.by_ref() {
        if line.expect("utf8").contains("storm: wrote") {
            break;
        }
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.wait().expect("wait").code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped; the jobs before it are kept")), "{rest:?}");
    let written = files_in(&d.join("out"));
    assert!(written.contains(&"storm.png".to_owned()) && !written.contains(&"grid.png".to_owned()), "{written:?}");
    assert!(!written.iter().any(|f| !f.ends_with(".png")), "no half-written file: {written:?}");
    // --resume skips the finished job and does the rest.
    let out = ok(&bin().args(["batch", "batch.toml", "-o", "out", "--resume"]).current_dir(d).output().expect("run"));
    assert!(out.stderr.contains("[1/5] storm: done already"), "{}", out.stderr);
    assert_eq!(out.stderr.matches("done already").count(), 1, "{}", out.stderr);
    assert_eq!(files_in(&d.join("out")).len(), 6);
}

#[test]
fn a_bad_batch_file_is_one_line_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    batch_file(d, 3, "[[job]]\nseeed = 3\n");
    fails(
        &bin().args(["batch", "batch.toml", "-o", "out"]).current_dir(d).output().expect("run"),
        2,
        "unknown field `seeed`",
    );
    assert!(!d.join("out").exists(), "nothing runs before the whole file is checked");
    fails(&bin().args(["batch", "missing.toml"]).current_dir(d).output().expect("run"), 2, "missing.toml");
    std::fs::write(d.join("empty.toml"), "").expect("write");
    fails(&bin().args(["batch", "empty.toml"]).current_dir(d).output().expect("run"), 2, "nothing to run");
}
