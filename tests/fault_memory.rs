//! Hardening issue, item 1: sizes the program accepts must not crash it. candle aborts
//! the process when an allocation fails, so `generate` and `bench --sizes` estimate a
//! run's memory from the models' configs and refuse, before reading any weights, one
//! that will not fit: exit 2, one line naming the estimate, what is available and a
//! size (or cutout count) that fits. `CLIPCANVAS_MEMORY_LIMIT_BYTES` stands in for the
//! machine's available memory, so the refusals and suggestions here do not depend on
//! the machine; no test allocates more than a few hundred megabytes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use clipcanvas::engine::memory::{estimate, Nets, LIMIT_VAR};
use clipcanvas::settings::RunSettings;
use common::{bin, fails, files_in as names, fixture, model_args, ok, read};

/// `generate` on the fixture models in `dir`, with `limit` as the available memory
/// (`None`: the machine's own).
fn generate(dir: &Path, limit: Option<u64>, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-p", "a lighthouse", "--cutn", "2", "-i", "1"]);
    run(cmd.args(extra).current_dir(dir), limit)
}

fn run(cmd: &mut Command, limit: Option<u64>) -> Output {
    match limit {
        Some(bytes) => cmd.env(LIMIT_VAR, bytes.to_string()),
        None => cmd.env_remove(LIMIT_VAR),
    };
    cmd.output().expect("run clipcanvas")
}

/// The fixture models' estimate for a `width`×`height` run with `cutn` cutouts, the
/// weights included.
fn needs(width: usize, height: usize, cutn: usize) -> u64 {
    let settings = RunSettings {
        width,
        height,
        cutn,
        vqgan: Some(fixture("vqgan-tiny/model.ckpt")),
        clip: Some(fixture("clip-tiny")),
        ..RunSettings::default()
    };
    estimate(&Nets::of_settings(&settings).expect("configs"), &settings).bytes(false)
}

/// "…; 124x124 fits with 2 cutouts…" → (124, 124).
fn suggested_size(stderr: &str) -> (usize, usize) {
    let before = stderr.split(" fits with ").next().expect("a suggestion");
    let size = before.rsplit(' ').next().expect("a size");
    let (w, h) = size.split_once('x').expect("WxH");
    (w.parse().expect("width"), h.parse().expect("height"))
}

/// A size beyond any machine (the fixture VQGAN's attention alone would take hundreds
/// of terabytes at 8192²) is refused on this machine's own figure, before the weights
/// are read: the models here have valid configs and garbage weights, which a run at a
/// size that fits reports. Nothing is written.
#[test]
fn a_size_beyond_any_machine_is_refused_before_any_weight_is_read() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let clip = d.join("clip");
    std::fs::create_dir(&clip).expect("mkdir");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("clip-tiny").join(f), clip.join(f)).expect("copy");
    }
    std::fs::write(clip.join("model.safetensors"), b"not weights at all").expect("write");
    std::fs::copy(fixture("vqgan-tiny/model.yaml"), d.join("vq.yaml")).expect("copy");
    std::fs::write(d.join("vq.ckpt"), b"not a checkpoint").expect("write");
    let models = ["--vqgan", "vq.ckpt", "--clip", "clip"];
    let before = names(d);

    let mut cmd = bin();
    cmd.arg("generate").args(models).args(["-p", "a lighthouse", "-s", "8192x8192", "-o", "out.png"]);
    let out = run(cmd.current_dir(d), None);
    let stderr = fails(&out, 2, "not enough memory: a 8192x8192 run with 32 cutouts needs about ");
    assert!(stderr.contains(" TB of memory and ") && stderr.contains(" is available ("), "{stderr}");
    assert!(stderr.contains(" fits with 32 cutouts") && stderr.contains("--no-memory-check"), "{stderr}");
    let (w, h) = suggested_size(&stderr);
    assert!(w == h && w % 4 == 0 && w < 8192, "{w}x{h}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(names(d), before, "nothing written");

    // The same models at a size that fits: the garbage weights are found.
    let mut cmd = bin();
    cmd.arg("generate").args(models).args(["-p", "a lighthouse", "-s", "32x32", "-o", "out.png"]);
    let out = run(cmd.current_dir(d), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("not enough memory") && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(names(d), before, "nothing written");
}

/// With the available memory set, the refusal names the estimate and the limit, and
/// the largest size that fits; that size then runs under the same limit and gives an
/// image of that size.
#[test]
fn the_refusal_names_a_size_that_fits_and_that_size_runs() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::write(d.join("out.png"), b"an earlier image").expect("write");
    let limit = needs(128, 128, 2);
    let out = generate(d, Some(limit), &["-s", "512x256", "-o", "out.png"]);
    let stderr = fails(&out, 2, "not enough memory: a 512x256 run with 2 cutouts needs about ");
    assert!(stderr.contains(&format!("is available ({LIMIT_VAR})")), "{stderr}");
    let (w, h) = suggested_size(&stderr);
    assert!(w % 4 == 0 && h % 4 == 0 && w <= 512 && h <= 256 && w.abs_diff(2 * h) <= 8, "{w}x{h}");
    assert!(needs(w, h, 2) <= limit && needs(w + 4, h + 4, 2) > limit, "{w}x{h} fits and is the largest");
    assert_eq!(read(&d.join("out.png")), b"an earlier image", "the earlier image is kept");
    assert_eq!(names(d), ["out.png"]);

    let size = format!("{w}x{h}");
    ok(&generate(d, Some(limit), &["-s", &size, "-o", "out.png"]));
    let img = image::open(d.join("out.png")).expect("an image");
    assert_eq!((img.width() as usize, img.height() as usize), (w, h));
}

/// Where fewer cutouts make the asked size fit, the refusal says how many; they run.
#[test]
fn the_refusal_names_a_cutout_count_that_fits() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let limit = needs(32, 32, 200) - 1;
    let out = generate(d, Some(limit), &["-s", "32x32", "--cutn", "200", "-o", "out.png"]);
    let stderr = fails(&out, 2, "not enough memory: a 32x32 run with 200 cutouts needs about ");
    let n: usize = stderr
        .trim()
        .rsplit_once("32x32 with ")
        .and_then(|(_, n)| n.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a cutout count in {stderr}"));
    assert!((1..200).contains(&n) && needs(32, 32, n) <= limit && needs(32, 32, n + 1) > limit, "{n}");
    assert!(names(d).is_empty());
    ok(&generate(d, Some(limit), &["-s", "32x32", "--cutn", &n.to_string(), "-o", "out.png"]));
    assert_eq!(names(d), ["out.png"]);
}

/// `--no-memory-check` runs what the check refuses (here: everything, with one byte).
#[test]
fn no_memory_check_runs_a_refused_run_anyway() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let out = generate(d, Some(1), &["-s", "32x32", "-o", "out.png"]);
    let stderr = fails(&out, 2, "not enough memory");
    assert!(stderr.contains("even the smallest run of these models needs"), "{stderr}");
    assert!(names(d).is_empty());
    ok(&generate(d, Some(1), &["-s", "32x32", "-o", "out.png", "--no-memory-check"]));
    assert_eq!(names(d), ["out.png"]);
}

/// A resumed run is checked at the size it was saved with, before the session is
/// loaded again; its files stay as they were.
#[test]
fn a_resumed_run_is_checked_at_its_saved_size() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, None, &["-s", "64x64", "-o", "out.png", "--session", "run.session"]));
    let (image, session) = (read(&d.join("out.png")), read(&d.join("run.session")));
    let limit = needs(64, 64, 2) - 1;
    let out = generate(d, Some(limit), &["--resume", "run.session", "-i", "2", "-o", "out.png"]);
    fails(&out, 2, "not enough memory: a 64x64 run with 2 cutouts");
    assert_eq!((read(&d.join("out.png")), read(&d.join("run.session"))), (image, session));
    assert_eq!(names(d), ["out.png", "run.session"]);
    ok(&generate(d, Some(limit + 1), &["--resume", "run.session", "-i", "2", "-o", "out.png"]));
}

/// A limit that is not a number of bytes is bad input, named.
#[test]
fn a_limit_that_is_not_a_number_is_refused() {
    let dir = tempfile::tempdir().expect("temp");
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-p", "a lighthouse", "-s", "32x32", "-i", "1"]);
    let out = cmd.env(LIMIT_VAR, "8GB").current_dir(dir.path()).output().expect("run");
    fails(&out, 2, &format!("{LIMIT_VAR} must be a whole number of bytes, got \"8GB\""));
    assert!(names(dir.path()).is_empty());
}

fn bench(dir: &Path, limit: Option<u64>, sizes: &str) -> Output {
    let mut cmd = bin();
    cmd.args(["bench", "--arch", "small", "--cutn", "2", "-i", "1", "--warmup", "0", "--json", "report.json"]);
    run(cmd.args(["--sizes", sizes]).current_dir(dir), limit)
}

/// `bench --sizes` checks every size before building its models: one beyond the
/// machine is refused with the largest square that fits, which then runs under the
/// same limit. No report is written for a refused run.
#[test]
fn bench_refuses_a_size_that_does_not_fit_and_runs_the_one_it_names() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let out = bench(d, None, "32,8192");
    let stderr = fails(&out, 2, "not enough memory: a 8192x8192 run with 2 cutouts needs about ");
    assert!(stderr.contains("--no-memory-check"), "{stderr}");
    assert!(names(d).is_empty(), "no report");

    let out = bench(d, Some(1_000_000_000), "32,4096");
    let stderr = fails(&out, 2, "not enough memory: a 4096x4096 run with 2 cutouts");
    let (w, h) = suggested_size(&stderr);
    assert!(w == h && w % 2 == 0 && (32..4096).contains(&w), "{w}x{h}");
    assert!(names(d).is_empty(), "no report");
    ok(&bench(d, Some(1_000_000_000), &w.to_string()));
    assert_eq!(names(d), ["report.json"]);
    let report: serde_json::Value = serde_json::from_slice(&read(&d.join("report.json"))).expect("json");
    assert_eq!(report["results"][0]["size"], w);
}
