//! The fuzz targets: each takes arbitrary bytes, drives one of clipcanvas's readers or
//! parsers through its public API, and returns `Ok` when the input was accepted or the
//! one-line message it was refused with. A panic, an abort, a hang or an unbounded
//! allocation is a finding.
//!
//! Shared by the AFL binaries (`fuzz/src/bin/*.rs`) and by the main crate's
//! `tests/fuzz_regressions.rs`, which replays the seed corpora and every committed
//! finding through these same functions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use clipcanvas::engine::loaded::Models;
use clipcanvas::settings::{coarse, png::PngMeta, prompt, RunSettings};

/// Every target, by the name of its binary and corpus folder.
pub const TARGETS: &[&str] = &[
    "torch_zip",
    "torch_pickle",
    "safetensors",
    "taming_yaml",
    "hf_config",
    "settings_json",
    "png_meta",
    "session",
    "prompt",
    "catalog",
    "animation",
];

/// The outcome of one input: accepted, or refused with a message.
pub type Outcome = Result<(), String>;

/// Runs the target `name` on `data`; `fixtures` is the main crate's `tests/fixtures`.
pub fn run(name: &str, data: &[u8], fixtures: &Path) -> Outcome {
    match name {
        "torch_zip" => with_file(name, "bin", data, torch_zip),
        "torch_pickle" => torch_pickle(data),
        "safetensors" => with_file(name, "safetensors", data, safetensors),
        "taming_yaml" => taming_yaml(text(data)?),
        "hf_config" => hf_config(text(data)?),
        "settings_json" => settings_json(text(data)?),
        "png_meta" => with_file(name, "png", data, png_meta),
        "session" => with_file(name, "session", data, |p| session(p, fixtures)),
        "prompt" => prompts(text(data)?),
        "catalog" => catalog(text(data)?),
        "animation" => animation(text(data)?),
        other => panic!("no fuzz target named {other}"),
    }
}

fn text(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data).map_err(|e| format!("not UTF-8 ({e})"))
}

/// Writes `data` to this thread's scratch file for `name` (under `TMPDIR`, which the
/// fuzz script points at /dev/shm) and runs `f` on it: the readers under test take paths.
fn with_file(name: &str, ext: &str, data: &[u8], f: impl FnOnce(&Path) -> Outcome) -> Outcome {
    // One file per process and thread: the replay test runs targets on parallel threads.
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let path: PathBuf =
        std::env::temp_dir().join(format!("clipcanvas-fuzz-{}-{thread}-{name}.{ext}", std::process::id()));
    std::fs::write(&path, data).map_err(|e| format!("scratch file: {e}"))?;
    let outcome = f(&path);
    // Best effort: a scratch file left behind is harmless.
    let _ = std::fs::remove_file(&path);
    outcome
}

/// A torch `.bin`/`.ckpt` zip: opened both ways (top-level dict, Lightning
/// `state_dict`), every tensor read.
fn torch_zip(path: &Path) -> Outcome {
    use clipcanvas::models::weights::torch::TorchArchive;
    let mut first = Err(String::new());
    for key in [None, Some("state_dict")] {
        let outcome = TorchArchive::open(path, key).map_err(|e| e.to_string()).and_then(|archive| {
            let names: Vec<String> = archive.names().map(str::to_owned).collect();
            for name in names {
                archive.read_f32(&name).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        if key.is_none() {
            first = outcome;
        }
    }
    first
}

/// The pickle alone: the input replaces `data.pkl` in the seed archive
/// (`corpus/torch_zip/small.bin`, its storages kept), so mutations reach the pickle machine
/// past the zip layer.
fn torch_pickle(data: &[u8]) -> Outcome {
    use std::io::{Read, Write};
    static TEMPLATE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let bytes: &[u8] = include_bytes!("../corpus/torch_zip/small.bin");
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("the committed seed is a zip");
        (0..zip.len())
            .map(|i| {
                let mut entry = zip.by_index(i).expect("seed entry");
                let mut body = Vec::new();
                entry.read_to_end(&mut body).expect("seed entry body");
                (entry.name().expect("seed entry name").into_owned(), body)
            })
            .collect()
    });
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, body) in template {
        let body = if name.ends_with("/data.pkl") { data } else { body };
        out.start_file(name.as_str(), stored).map_err(|e| e.to_string())?;
        out.write_all(body).map_err(|e| e.to_string())?;
    }
    let bytes = out.finish().map_err(|e| e.to_string())?.into_inner();
    with_file("torch_pickle", "bin", &bytes, torch_zip)
}

/// A safetensors weights file: opened, every tensor read.
fn safetensors(path: &Path) -> Outcome {
    use clipcanvas::models::weights::WeightFile;
    let file = WeightFile::open_safetensors(path).map_err(|e| e.to_string())?;
    for name in file.names() {
        file.read_f32(&name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A taming-transformers model YAML.
fn taming_yaml(text: &str) -> Outcome {
    clipcanvas::models::vqgan::VqganConfig::from_yaml(text).map(drop)
}

/// Hugging Face / open_clip `config.json`, and the one-step generator's `config.json`.
fn hf_config(text: &str) -> Outcome {
    let clip = clipcanvas::models::clip::ClipConfig::from_json(text).map(drop);
    let onestep = clipcanvas::models::onestep::OneStepConfig::from_json(text).map(drop);
    clip.or(onestep)
}

/// A settings file (plain JSON or a PNG's metadata JSON), validated as a run would.
fn settings_json(text: &str) -> Outcome {
    let plain = RunSettings::from_json(text).and_then(|s| {
        s.validate()?;
        s.check_objective()?;
        // What is written must read back the same.
        let text = s.to_json()?;
        let again = RunSettings::from_json(&text)?;
        assert_eq!(again.to_json()?, text, "settings do not survive a round trip");
        Ok(())
    });
    let meta = PngMeta::from_json(text).map(drop);
    let either = clipcanvas::settings::png::settings_from_text(text).map(drop);
    plain.or(meta).or(either)
}

/// A PNG given to `--settings` or dropped on the studio.
fn png_meta(path: &Path) -> Outcome {
    let meta = clipcanvas::export::read_png_metadata(path).map_err(|e| e.to_string())?;
    clipcanvas::export::read_settings_file(path).map_err(|e| e.to_string())?;
    meta.map(drop).ok_or_else(|| "no clipcanvas metadata".to_owned())
}

/// A saved session: read without models (header, metadata, checksum, tensors); one that
/// reads is then resumed on the tiny fixture models and rendered. (Resuming costs tens of
/// milliseconds, so only inputs that pass the checksum reach it: the checksum is what
/// stands between a damaged file and the resume code.)
fn session(path: &Path, fixtures: &Path) -> Outcome {
    use clipcanvas::engine::session::Session;
    Session::read_settings(path).map_err(|e| e.to_string())?;
    let session = Session::resume(Arc::clone(models(fixtures)), path).map_err(|e| e.to_string())?;
    session.render().map_err(|e| e.to_string())?;
    Ok(())
}

fn models(fixtures: &Path) -> &'static Arc<Models> {
    use candle_core::{DType, Device};
    use clipcanvas::models::{clip, vqgan};
    static MODELS: OnceLock<Arc<Models>> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dev = Device::Cpu;
        let vqgan =
            vqgan::load(&fixtures.join("vqgan-tiny/model.ckpt"), None, DType::F32, &dev).expect("fixture vqgan");
        let (clip, tokenizer) = clip::load(&fixtures.join("clip-tiny"), DType::F32, &dev).expect("fixture clip");
        Arc::new(Models {
            vqgan: Some(vqgan),
            clip,
            tokenizer,
            extra_clips: Vec::new(),
            device: dev,
            source: None,
            onestep: None,
        })
    })
}

/// The prompt syntax (`text:weight:stop`, `|`, `^`, noise prompts) and the coarse
/// schedule, whose formatted form must parse back to itself.
fn prompts(text: &str) -> Outcome {
    let mut accepted = false;
    for stage in prompt::split_story(text) {
        for p in stage {
            accepted |= prompt::parse_prompt(&p).is_ok();
        }
    }
    for p in prompt::split_prompts(text) {
        accepted |= prompt::parse_prompt(&p).is_ok();
    }
    accepted |= prompt::parse_noise_prompt(text).is_ok();
    if let Ok(stages) = coarse::parse_schedule(text) {
        let formatted = coarse::format_schedule(&stages);
        let again = coarse::parse_schedule(&formatted).expect("a formatted schedule parses");
        assert_eq!(coarse::format_schedule(&again), formatted, "schedule does not survive a round trip");
        accepted |= coarse::validate_schedule(&stages).is_ok();
    }
    if accepted {
        Ok(())
    } else {
        Err("no prompt or schedule accepted".into())
    }
}

/// A model catalog (TOML).
fn catalog(text: &str) -> Outcome {
    clipcanvas::catalog::entries::Catalog::parse(text, "fuzz").map(drop).map_err(|e| e.to_string())
}

/// A keyframe schedule (`0:(1.0), 30:(1.04)`, expressions in `t`) evaluated over 97
/// frames both ways, or a prompt schedule (`{0: "a forest", 60: "a city"}`).
fn animation(text: &str) -> Outcome {
    use clipcanvas::settings::animation::parse_prompt_frames;
    use clipcanvas::settings::schedule::{Easing, Schedule};
    let schedule = Schedule::parse(text).and_then(|s| {
        assert_eq!(s.text(), text, "a schedule keeps its text");
        for easing in Easing::ALL {
            let values = s.values(97, easing)?;
            assert_eq!(values.len(), 97);
            assert!(values.iter().all(|v| v.is_finite()), "a schedule gave a value that is not finite: {values:?}");
        }
        Ok(())
    });
    schedule.or_else(|_| parse_prompt_frames(text).map(drop))
}
