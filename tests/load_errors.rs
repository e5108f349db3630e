//! Loading errors name the file and, where it applies, the tensor; bad files never panic.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use clipcanvas::models::weights::WeightFile;
use clipcanvas::models::{clip, vqgan, ModelError};
use common::fixture;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn vqgan_err(ckpt: &Path, yaml: Option<&Path>) -> String {
    vqgan::load(ckpt, yaml, DType::F32, &Device::Cpu).expect_err("must fail").to_string()
}

fn clip_err(dir: &Path) -> String {
    clip::load(dir, DType::F32, &Device::Cpu).expect_err("must fail").to_string()
}

/// A copy of the tiny VQGAN (ckpt + yaml) in a temp dir.
fn vqgan_copy(dir: &Path) -> (PathBuf, PathBuf) {
    let ckpt = dir.join("model.ckpt");
    let yaml = dir.join("model.yaml");
    std::fs::copy(fixture("vqgan-tiny/model.ckpt"), &ckpt).expect("copy");
    std::fs::copy(fixture("vqgan-tiny/model.yaml"), &yaml).expect("copy");
    (ckpt, yaml)
}

fn truncate(path: &Path, keep: f64) {
    let bytes = std::fs::read(path).expect("read");
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let n = (bytes.len() as f64 * keep) as usize;
    std::fs::write(path, &bytes[..n]).expect("write");
}

/// The tiny VQGAN's first-stage tensors, read from its .ckpt.
fn vqgan_tensors() -> HashMap<String, candle_core::Tensor> {
    let ckpt = WeightFile::open(&fixture("vqgan-tiny/model.ckpt")).expect("open");
    ckpt.names()
        .into_iter()
        .filter(|n| !n.starts_with("loss."))
        .map(|n| {
            let (shape, values) = ckpt.read_f32(&n).expect("read");
            let t = candle_core::Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor");
            (n, t)
        })
        .collect()
}

#[test]
fn missing_checkpoint_is_named() {
    let err = vqgan_err(Path::new("/no/such/vqgan.ckpt"), None);
    assert!(err.contains("/no/such/vqgan.ckpt") && err.contains("not found"), "{err}");
    let err = clip_err(Path::new("/no/such/clip"));
    assert!(err.contains("/no/such/clip") && err.contains("not found"), "{err}");
}

#[test]
fn missing_yaml_says_how_to_give_one() {
    let dir = temp();
    let ckpt = dir.path().join("lonely.ckpt");
    std::fs::copy(fixture("vqgan-tiny/model.ckpt"), &ckpt).expect("copy");
    let err = vqgan_err(&ckpt, None);
    assert!(err.contains("lonely.yaml") && err.contains("--vqgan-config"), "{err}");
}

#[test]
fn truncated_ckpt_is_reported_not_panicked() {
    for keep in [0.1, 0.5, 0.97] {
        let dir = temp();
        let (ckpt, _) = vqgan_copy(dir.path());
        truncate(&ckpt, keep);
        let err = vqgan_err(&ckpt, None);
        assert!(err.contains("model.ckpt"), "keep {keep}: {err}");
    }
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = temp();
    copy_dir(&fixture("clip-tiny"), dir.path());
    truncate(&dir.path().join("model.safetensors"), 0.6);
    let err = clip_err(dir.path());
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn garbage_files_are_rejected_with_their_names() {
    let dir = temp();
    let (ckpt, _) = vqgan_copy(dir.path());
    std::fs::write(&ckpt, b"this is not a checkpoint at all, just some text\n".repeat(50)).expect("write");
    let err = vqgan_err(&ckpt, None);
    assert!(err.contains("model.ckpt") && err.contains("not a PyTorch"), "{err}");

    let clip_dir = dir.path().join("clip");
    copy_dir(&fixture("clip-tiny"), &clip_dir);
    // A safetensors header claiming an absurd size must not make the loader allocate it.
    let mut bad = u64::MAX.to_le_bytes().to_vec();
    bad.extend_from_slice(b"{}");
    std::fs::write(clip_dir.join("model.safetensors"), bad).expect("write");
    let err = clip_err(&clip_dir);
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors"), "{err}");
}

#[test]
fn a_clip_folder_given_as_the_vqgan_is_recognised() {
    let err = vqgan_err(&fixture("clip-tiny"), None);
    assert!(err.contains("CLIP folder"), "{err}");
    let err = vqgan_err(&fixture("clip-tiny/model.safetensors"), Some(&fixture("vqgan-tiny/model.yaml")));
    assert!(err.contains("it is a CLIP model"), "{err}");
}

#[test]
fn a_vqgan_given_as_the_clip_is_recognised() {
    let err = clip_err(&fixture("vqgan-tiny/model.ckpt"));
    assert!(err.contains("expected a CLIP folder"), "{err}");
    let dir = temp();
    copy_dir(&fixture("clip-tiny"), dir.path());
    candle_core::safetensors::save(&vqgan_tensors(), dir.path().join("model.safetensors")).expect("save");
    let err = clip_err(dir.path());
    assert!(err.contains("does not look like a CLIP model"), "{err}");
}

#[test]
fn mismatched_shapes_name_the_tensor() {
    let dir = temp();
    let (ckpt, yaml) = vqgan_copy(dir.path());
    let text = std::fs::read_to_string(&yaml).expect("yaml");
    std::fs::write(&yaml, text.replace("n_embed: 64", "n_embed: 128")).expect("write");
    let err = vqgan::load(&ckpt, None, DType::F32, &Device::Cpu).expect_err("mismatch");
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.ckpt") && msg.contains("quantize.embedding.weight") && msg.contains("[64, 8]"),
        "{msg}"
    );

    let clip_dir = dir.path().join("clip");
    copy_dir(&fixture("clip-tiny"), &clip_dir);
    let cfg = std::fs::read_to_string(clip_dir.join("config.json")).expect("config");
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    let mut cfg = cfg;
    cfg["projection_dim"] = serde_json::json!(24);
    std::fs::write(clip_dir.join("config.json"), cfg.to_string()).expect("write");
    let msg = clip_err(&clip_dir);
    assert!(msg.contains("model.safetensors") && msg.contains("projection"), "{msg}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = temp();
    let path = dir.path().join("partial.safetensors");
    let mut tensors = vqgan_tensors();
    tensors.remove("decoder.mid.attn_1.q.weight");
    candle_core::safetensors::save(&tensors, &path).expect("save");
    let err = vqgan_err(&path, Some(&fixture("vqgan-tiny/model.yaml")));
    assert!(err.contains("partial.safetensors") && err.contains("'decoder.mid.attn_1.q.weight' is missing"), "{err}");
}

#[test]
fn yaml_with_unknown_or_missing_keys_is_named() {
    let dir = temp();
    let (ckpt, yaml) = vqgan_copy(dir.path());
    let text = std::fs::read_to_string(&yaml).expect("yaml");
    std::fs::write(&yaml, text.replace("num_res_blocks", "num_resnet_blocks")).expect("write");
    let err = vqgan_err(&ckpt, None);
    assert!(err.contains("model.yaml") && err.contains("num_resnet_blocks"), "{err}");

    let text = text.lines().filter(|l| !l.trim_start().starts_with("z_channels")).collect::<Vec<_>>().join("\n");
    std::fs::write(&yaml, text).expect("write");
    let err = vqgan_err(&ckpt, None);
    assert!(err.contains("model.yaml") && err.contains("z_channels"), "{err}");

    std::fs::write(&yaml, "model: [unclosed").expect("write");
    let err = vqgan_err(&ckpt, None);
    assert!(err.contains("model.yaml") && err.contains("invalid YAML"), "{err}");
}

#[test]
fn broken_clip_config_is_named() {
    let dir = temp();
    copy_dir(&fixture("clip-tiny"), dir.path());
    std::fs::write(dir.path().join("config.json"), "{ \"text_config\": ").expect("write");
    let err = clip_err(dir.path());
    assert!(err.contains("config.json") && err.contains("invalid JSON"), "{err}");
    std::fs::remove_file(dir.path().join("tokenizer.json")).expect("rm");
    std::fs::write(dir.path().join("config.json"), std::fs::read(fixture("clip-tiny/config.json")).expect("read"))
        .expect("write");
    let err = clip_err(dir.path());
    assert!(err.contains("tokenizer.json is missing"), "{err}");
}
