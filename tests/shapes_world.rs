//! The shapes world (issue 5): the committed models load through the normal loaders
//! and meet their quality figures on held-out scenes, `generate` with no model flags
//! uses them and says so, and the images it makes match the words of the prompt as
//! measured by plain pixel statistics (no CLIP involved).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use clipcanvas::demo::scene::{colour_index, COLOURS};
use clipcanvas::demo::{eval, stats, train};

fn world() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/shapes-world")
}

/// The figures the shapes world's models reach on held-out scenes. The thresholds are
/// the measured figures, rounded down, so a retrained world that got worse fails here.
#[test]
fn committed_models_meet_their_figures_on_held_out_scenes() {
    let (clip, tok) = clipcanvas::models::clip::load(&train::clip_dir(&world()), DType::F32, &Device::Cpu)
        .expect("shapes CLIP loads like any CLIP");
    let vqgan = clipcanvas::models::vqgan::load(
        &train::vqgan_dir(&world()).join("model.safetensors"),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .expect("shapes VQGAN loads like any VQGAN");
    let z = eval::zero_shot(&clip, &tok, 200, eval::EVAL_SEED).expect("zero-shot");
    let psnr =
        eval::reconstruction_psnr(&vqgan, 24, clipcanvas::demo::data::SCENE_SIDE, eval::EVAL_SEED).expect("psnr");
    println!("{z:?} PSNR {psnr:.2} dB");
    assert!(z.colour >= MIN_COLOUR, "colour accuracy {:.3}", z.colour);
    assert!(z.shape >= MIN_SHAPE, "shape accuracy {:.3}", z.shape);
    assert!(z.background >= MIN_BACKGROUND, "background accuracy {:.3}", z.background);
    assert!(z.position >= MIN_POSITION, "position accuracy {:.3}", z.position);
    assert!(z.size >= MIN_SIZE, "size accuracy {:.3}", z.size);
    assert!(psnr >= MIN_PSNR, "PSNR {psnr:.2} dB");
}

// Measured on these scenes when the models were committed: colour 0.99, background 1.0,
// shape 0.90, position 1.0, size 1.0, PSNR 28.75 dB (the VQGAN of 2 800 steps; the one of
// 2 000 before it: 27.93 dB). Floors leave a few scenes' margin for other CPUs' sums;
// the PSNR floor is issue 5's target, 28 dB (train-demo's 100 scenes: 28.42 dB).
const MIN_COLOUR: f64 = 0.98;
const MIN_BACKGROUND: f64 = 0.98;
const MIN_SHAPE: f64 = 0.88;
const MIN_POSITION: f64 = 0.98;
const MIN_SIZE: f64 = 0.98;
const MIN_PSNR: f64 = 28.0;

/// (prompt, background colour, shape colour, where the shape sits if the prompt says)
const PROMPTS: [(&str, &str, &str, Option<&str>); 12] = [
    ("a big red circle on a blue background", "blue", "red", None),
    ("a big yellow square on a black background", "black", "yellow", None),
    ("a big green triangle on a white background", "white", "green", None),
    ("a big white star on a purple background", "purple", "white", None),
    ("a big blue ring on a yellow background", "yellow", "blue", None),
    ("a big orange cross on a cyan background", "cyan", "orange", None),
    ("a big pink circle on a green background", "green", "pink", None),
    ("a big black square on an orange background", "orange", "black", None),
    ("a big cyan triangle on a red background", "red", "cyan", None),
    ("a big red circle on the left on a white background", "white", "red", Some("left")),
    ("a big yellow square on the right on a blue background", "blue", "yellow", Some("right")),
    ("a big white circle at the top on a black background", "black", "white", Some("top")),
];

struct Verdict {
    background: bool,
    colour: bool,
    position: Option<bool>,
    line: String,
}

/// Runs every prompt with every seed (several processes at a time where there are cores
/// to spare) and measures each image.
fn meaning(seeds: &[u64]) -> Vec<Verdict> {
    let dir = tempfile::tempdir().expect("temp dir");
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // CLIPCANVAS_MEANING_JOBS runs that many processes at once, one thread each.
    let jobs_env = std::env::var("CLIPCANVAS_MEANING_JOBS").ok().and_then(|v| v.parse::<usize>().ok());
    let parallel = jobs_env.unwrap_or((cores / 2).max(1)).max(1);
    let threads = if jobs_env.is_some() { "1" } else { "2" };
    let jobs: Vec<(usize, u64)> = (0..PROMPTS.len()).flat_map(|i| seeds.iter().map(move |&s| (i, s))).collect();
    let mut verdicts = Vec::new();
    for batch in jobs.chunks(parallel) {
        let children: Vec<_> = batch
            .iter()
            .map(|&(i, seed)| {
                let out = format!("{i}-{seed}.png");
                let mut cmd = generate_command(dir.path(), PROMPTS[i].0, seed, &out);
                if parallel > 1 {
                    cmd.env("RAYON_NUM_THREADS", threads);
                }
                (i, seed, out, cmd.spawn().expect("run clipcanvas"))
            })
            .collect();
        for (i, seed, out, child) in children {
            let run = child.wait_with_output().expect("wait");
            let prompt = PROMPTS[i].0;
            assert!(run.status.success(), "{prompt}: {}", String::from_utf8_lossy(&run.stderr));
            if let Ok(keep) = std::env::var("CLIPCANVAS_KEEP_IMAGES") {
                let _ = std::fs::copy(dir.path().join(&out), Path::new(&keep).join(&out));
            }
            let verdict = judge(&dir.path().join(&out), i, seed);
            println!("{}", verdict.line);
            verdicts.push(verdict);
        }
    }
    verdicts
}

/// Measures the image made for `PROMPTS[i]` with `seed`.
fn judge(path: &Path, i: usize, seed: u64) -> Verdict {
    let (prompt, bg, fg, pos) = PROMPTS[i];
    let img = image::open(path).expect("output image").to_rgb8();
    let a = stats::analyse(&img);
    let blob = a.blob.as_ref();
    let background = a.background == colour_index(bg).expect("palette colour");
    let colour = blob.is_some_and(|b| b.colour == colour_index(fg).expect("palette colour"));
    let position = pos.map(|p| blob.is_some_and(|b| b.position.name() == p));
    let line = format!(
        "{prompt} (seed {seed}): background {} ({:.0}%), largest blob {}",
        COLOURS[a.background].name,
        a.background_share * 100.0,
        blob.map_or("none".to_owned(), |b| format!(
            "{} {:.0}% at {}",
            COLOURS[b.colour].name,
            b.share * 100.0,
            b.position.name()
        ))
    );
    Verdict { background, colour, position, line }
}

fn generate_command(dir: &Path, prompt: &str, seed: u64, out: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipcanvas"));
    // No model flags: the shapes world and its preset (16 cutouts, affine + noise,
    // coarse-to-fine); the size and iterations are spelled out.
    cmd.args(["generate", "-p", prompt, "-s", "128x128", "-i", "150"])
        .args(["--seed", &seed.to_string(), "-o", out])
        .env_remove("CLIPCANVAS_MODELS")
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Issue 5's end-to-end check: 12 prompts × 3 seeds, 150 iterations at 128×128 each,
/// judged by pixel statistics alone. About an hour of CPU, so it is not part of the
/// default run: `cargo test --release --test shapes_world -- --ignored` (README has
/// the figures).
#[test]
#[ignore = "about an hour of CPU; run with --ignored"]
fn generated_images_match_their_prompts() {
    // CLIPCANVAS_MEANING_SEEDS="1,2" runs fewer seeds.
    let seeds: Vec<u64> = std::env::var("CLIPCANVAS_MEANING_SEEDS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2, 3]);
    let verdicts = meaning(&seeds);
    summarise(&verdicts);
}

/// Judges images already made (`CLIPCANVAS_ANALYSE_DIR`, named `<prompt index>-<seed>.png`
/// as the meaning test keeps them), e.g. on a machine with more cores.
#[test]
#[ignore = "needs CLIPCANVAS_ANALYSE_DIR"]
fn judge_saved_images() {
    let dir = PathBuf::from(std::env::var("CLIPCANVAS_ANALYSE_DIR").expect("CLIPCANVAS_ANALYSE_DIR"));
    let mut verdicts = Vec::new();
    for i in 0..PROMPTS.len() {
        for seed in 1..=9 {
            let path = dir.join(format!("{i}-{seed}.png"));
            if path.is_file() {
                let v = judge(&path, i, seed);
                println!("{}", v.line);
                verdicts.push(v);
            }
        }
    }
    assert!(!verdicts.is_empty(), "no images in {}", dir.display());
    summarise(&verdicts);
}

fn summarise(verdicts: &[Verdict]) {
    let share = |f: &dyn Fn(&Verdict) -> Option<bool>| {
        let v: Vec<bool> = verdicts.iter().filter_map(f).collect();
        (v.iter().filter(|x| **x).count(), v.len())
    };
    let bg = share(&|v| Some(v.background));
    let fg = share(&|v| Some(v.colour));
    let pos = share(&|v| v.position);
    println!("background {}/{}, shape colour {}/{}, position {}/{}", bg.0, bg.1, fg.0, fg.1, pos.0, pos.1);
    assert!(bg.0 * 10 >= bg.1 * MIN_TENTHS, "backgrounds {bg:?}");
    assert!(fg.0 * 10 >= fg.1 * MIN_TENTHS, "shape colours {fg:?}");
    assert!(pos.0 * 10 >= pos.1 * MIN_TENTHS, "positions {pos:?}");
}

/// Share (in tenths) of runs whose measured background, shape colour and position must
/// match the prompt.
const MIN_TENTHS: usize = 8;

#[test]
fn generate_without_model_flags_uses_the_shapes_world_and_says_so_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_clipcanvas"))
        .args(["generate", "-p", "a red circle", "-s", "64x64", "-i", "1", "--cutn", "2", "-o", "x.png"])
        .env_remove("CLIPCANVAS_MODELS")
        .current_dir(dir.path())
        .output()
        .expect("run clipcanvas");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(stderr.matches("demo models: shapes world").count(), 1, "{stderr}");
    let meta = clipcanvas::export::read_png_metadata(&dir.path().join("x.png")).expect("readable").expect("metadata");
    assert!(meta.contains("shapes-world"), "{meta}");
    // The world's own preset is the base the flags apply to.
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    let preset = clipcanvas::settings::RunSettings::shapes_world();
    assert_eq!(v["settings"]["coarse"], serde_json::to_value(&preset.coarse).expect("json"));
    assert_eq!(v["settings"]["augments"], serde_json::json!(["affine", "noise"]));
    assert_eq!(v["settings"]["iterations"], 1, "flags override the preset");
}

#[test]
fn train_demo_is_deterministic_for_a_seed_and_writes_the_real_formats() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The last CLIP step hardens against two generate runs (see `demo::harden`).
    let train = |out: &str, seed: &str, harden: &str| {
        let run = Command::new(env!("CARGO_BIN_EXE_clipcanvas"))
            .args(["train-demo", "--out", out, "--seed", seed, "--clip-steps", "2", "--clip-batch", "4"])
            .args(["--vqgan-steps", "2", "--vqgan-batch", "1", "--eval-scenes", "10"])
            .args(["--harden-steps", harden, "--harden-pool", "2"])
            .current_dir(dir.path())
            .output()
            .expect("run clipcanvas");
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert!(stdout.contains("CLIP zero-shot") && stdout.contains("PSNR"), "{stdout}");
    };
    train("a", "3", "1");
    train("b", "3", "1");
    train("c", "4", "1");
    train("d", "3", "0");
    let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    for f in [
        "clip/model.safetensors",
        "clip/config.json",
        "clip/tokenizer.json",
        "vqgan/model.safetensors",
        "vqgan/model.yaml",
    ] {
        assert_eq!(read(&format!("a/{f}")), read(&format!("b/{f}")), "{f} differs between two runs with one seed");
    }
    assert_ne!(read("a/clip/model.safetensors"), read("c/clip/model.safetensors"), "another seed, other weights");
    // Hardening changed the CLIP and nothing else: the VQGAN is trained before it.
    assert_ne!(read("a/clip/model.safetensors"), read("d/clip/model.safetensors"), "hardening did nothing");
    assert_eq!(read("a/vqgan/model.safetensors"), read("d/vqgan/model.safetensors"), "hardening touched the VQGAN");
    // Nothing is left behind but the finished folders.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "d"]);
}

#[test]
fn train_demo_refuses_bad_options_in_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_clipcanvas"))
            .args(["train-demo", "--out", "w", "--clip-steps", "2", "--clip-batch", "4"])
            .args(["--vqgan-steps", "2", "--vqgan-batch", "1", "--eval-scenes", "4"])
            .args(extra)
            .current_dir(dir.path())
            .output()
            .expect("run clipcanvas");
        assert!(!out.status.success(), "{extra:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    assert!(run(&["--harden-steps", "3", "--harden-pool", "0"]).contains("--harden-pool"));
    assert!(run(&["--clip-lr", "0"]).contains("--clip-lr"));
    let missing = run(&["--clip-from", "no-such-clip"]);
    assert!(missing.contains("no-such-clip"), "{missing}");
    // A file of other weights (the VQGAN's) is refused before any training.
    let vqgan_dir = world().join("vqgan");
    let other = run(&["--clip-from", vqgan_dir.to_str().expect("utf-8 path")]);
    assert!(other.contains("not a shapes-world CLIP"), "{other}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
    assert!(left.is_empty(), "{} entries left behind", left.len());
}

/// Issue 21: one-step drafts show what the prompt says, judged from pixels alone (never
/// the CLIP): the meaning test's 15 prompts, which name every colour as subject and as
/// background, every shape, place and size, with one seed (README has three seeds and
/// the refinement). Floors: the measured figures, rounded down (see README).
#[test]
fn one_step_drafts_show_what_their_prompts_say() {
    use clipcanvas::demo::meaning::{evaluate_drafts, DraftEvalOptions};
    use clipcanvas::settings::{OneStepSettings, RunSettings};
    let settings = RunSettings { one_step: Some(OneStepSettings::default()), ..RunSettings::shapes_world() };
    let models = std::sync::Arc::new(
        clipcanvas::engine::loaded::load_models(&settings, &Device::Cpu)
            .expect("the shapes world and its one-step model"),
    );
    let opts =
        DraftEvalOptions { seeds: vec![1], one_step: OneStepSettings::default(), refine: None, prompts: usize::MAX };
    let eval = evaluate_drafts(&models, &opts, None, &mut |line| println!("{line}")).expect("drafts");
    let t = eval.drafts;
    println!("{}", t.line());
    assert_eq!((t.runs, t.placed), (15, 13));
    assert!(t.background >= MIN_DRAFT_BACKGROUND, "{}", t.line());
    assert!(t.colour >= MIN_DRAFT_COLOUR, "{}", t.line());
    assert!(t.position >= MIN_DRAFT_PLACE, "{}", t.line());
    assert!(t.shape >= MIN_DRAFT_SHAPE, "{}", t.line());
}

// Seed 1 of the committed one-step model measured 15/15 backgrounds, 15/15 subject
// colours, 13/13 places and 3/15 shapes (README has seeds 1–3); one run's margin each
// for other CPUs' sums. The shape floor is far below issue 21's 90 %: see README.
const MIN_DRAFT_BACKGROUND: usize = 14;
const MIN_DRAFT_COLOUR: usize = 14;
const MIN_DRAFT_PLACE: usize = 12;
const MIN_DRAFT_SHAPE: usize = 2;
