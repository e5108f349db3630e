//! `train-demo`: trains the shapes world's CLIP and VQGAN from scratch with candle, on
//! scenes drawn by [`crate::demo::scene`], and writes them in the real formats (a Hugging
//! Face CLIP folder; a taming YAML with safetensors weights) so they load through the
//! same code as downloaded models. The CLIP's training is in `clip`, the VQGAN's in
//! `vqgan`; here are the options, the architecture presets, what both share, and the
//! writing of the files.
//!
//! Training is deterministic for a seed on a given machine: every random choice is
//! drawn from the seeded host [`Rng`], and candle's CPU kernels are deterministic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use super::data::CONTEXT;
use super::error::{DemoError, Result};
use crate::models::tokenizer::ClipTokenizer;

mod clip;
mod clip_lr;
mod common;
mod vqgan;

use clip::read_clip_weights;
pub use clip::train_clip;
pub use common::{clip_config_json, vqgan_yaml, Part, TrainLog, TrainObserver, TrainOptions, TOKENIZER_JSON};
pub use vqgan::train_vqgan;

/// Where the two models go inside an output folder.
pub fn clip_dir(out: &Path) -> PathBuf {
    out.join("clip")
}

pub fn vqgan_dir(out: &Path) -> PathBuf {
    out.join("vqgan")
}

/// Saves tensors as f16 safetensors (the shipped files stay small). The writer goes
/// through a sibling temporary file and a rename; that file is private (0600), so the
/// result is given the usual permissions.
fn save_f16(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut half = HashMap::new();
    for (k, v) in tensors {
        half.insert(k.clone(), v.to_dtype(DType::F16)?);
    }
    candle_core::safetensors::save(&half, path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| DemoError::io(path, e))?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, |w| std::io::Write::write_all(w, bytes))
        .map_err(|e| DemoError::Train(e.to_string()))
}

/// Trains both models and writes them under `out` (`clip/`, `vqgan/`). Nothing is
/// written into `out` until both are trained: the files are made in a sibling
/// temporary folder that replaces `out` at the end.
pub fn train_demo(opts: &TrainOptions, out: &Path, observer: &mut dyn TrainObserver) -> Result<TrainLog> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| DemoError::io(parent, e))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "shapes-world".into());
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let result = train_into(opts, &staging, out, observer);
    let log = match result {
        Ok(log) => log,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).map_err(|e| DemoError::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(&staging, out) {
        if old.exists() {
            let _ = std::fs::rename(&old, out);
        }
        return Err(DemoError::io(out, e));
    }
    if old.exists() {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(log)
}

fn train_into(opts: &TrainOptions, dir: &Path, out: &Path, observer: &mut dyn TrainObserver) -> Result<TrainLog> {
    let (cdir, vdir) = (clip_dir(dir), vqgan_dir(dir));
    for d in [&cdir, &vdir] {
        std::fs::create_dir_all(d).map_err(|e| DemoError::io(d, e))?;
    }
    // The model not being trained is kept as it is.
    let keep = |from: PathBuf, to: &Path| -> Result<()> {
        let entries = std::fs::read_dir(&from).map_err(|e| DemoError::io(&from, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| DemoError::io(&from, e))?;
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target).map_err(|e| DemoError::io(&target, e))?;
        }
        Ok(())
    };
    match opts.only {
        Some(Part::Vqgan) => keep(clip_dir(out), &cdir)?,
        Some(Part::Clip) => keep(vqgan_dir(out), &vdir)?,
        None => {}
    }
    let mut log = TrainLog::default();
    // Read now, so a wrong --clip-from fails before any training.
    let start = match (&opts.clip_from, opts.only) {
        (Some(dir), only) if only != Some(Part::Vqgan) => Some(read_clip_weights(dir)?),
        _ => None,
    };
    // The VQGAN first: hardening the CLIP runs `generate` through it, as saved.
    if opts.only != Some(Part::Clip) {
        write(&vdir.join("model.yaml"), vqgan_yaml().as_bytes())?;
        let t1 = std::time::Instant::now();
        let vqgan = train_vqgan(opts, observer, &mut log.vqgan_loss)?;
        log.vqgan_seconds = t1.elapsed().as_secs_f64();
        save_f16(&vqgan, &vdir.join("model.safetensors"))?;
    }
    if opts.only != Some(Part::Vqgan) {
        write(&cdir.join("tokenizer.json"), TOKENIZER_JSON)?;
        let config = serde_json::to_string_pretty(&clip_config_json()).map_err(|e| DemoError::Train(e.to_string()))?;
        write(&cdir.join("config.json"), config.as_bytes())?;
        let tokenizer = ClipTokenizer::from_file(&cdir.join("tokenizer.json"), CONTEXT)?;
        let t0 = std::time::Instant::now();
        let clip = train_clip(
            opts,
            &tokenizer,
            start.as_ref(),
            Some(&vdir.join("model.safetensors")),
            observer,
            &mut log.clip_loss,
        )?;
        log.clip_seconds = t0.elapsed().as_secs_f64();
        save_f16(&clip, &cdir.join("model.safetensors"))?;
    }
    Ok(log)
}
