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

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::data::{CLIP_SIDE, CONTEXT};
use super::error::{DemoError, Result};
use crate::engine::rng::Rng;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::weights::ShapeRecorder;

mod clip;
mod vqgan;

pub use clip::train_clip;
use clip::{read_clip_weights, CLIP_LR};
pub use vqgan::train_vqgan;

/// The real CLIP BPE vocabulary, shipped with the binary.
pub const TOKENIZER_JSON: &[u8] = crate::models::tokenizer::BUNDLED_JSON;

/// The shapes CLIP's `config.json` (the Hugging Face layout).
pub fn clip_config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": 64,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": 49408,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "max_position_embeddings": CONTEXT,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 96,
            "intermediate_size": 384,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": CLIP_SIDE,
            "patch_size": 8,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5
        }
    })
}

/// The shapes VQGAN's taming YAML: f8, 2048 codes of 16 dimensions. Its GroupNorms
/// have one group: with taming's 32 groups of one or two channels, a flat-coloured
/// region normalises to zero and its colour is lost, and this world is all flat colour.
pub fn vqgan_yaml() -> String {
    "# The shapes world's VQGAN, trained by `clipcanvas train-demo`.\n\
model:\n  target: taming.models.vqgan.VQModel\n  params:\n    embed_dim: 16\n    n_embed: 2048\n    ddconfig:\n      \
double_z: false\n      z_channels: 64\n      resolution: 128\n      in_channels: 3\n      out_ch: 3\n      ch: 32\n      \
ch_mult:\n      - 1\n      - 1\n      - 2\n      - 2\n      num_res_blocks: 1\n      attn_resolutions: []\n      num_groups: 1\n      \
dropout: 0.0\n"
        .to_owned()
}

/// How long to train each model, and with what.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub seed: u64,
    pub clip_steps: usize,
    pub clip_batch: usize,
    pub vqgan_steps: usize,
    pub vqgan_batch: usize,
    /// Side of the VQGAN's training crops.
    pub vqgan_crop: usize,
    /// Train only this model and keep the other from the output folder.
    pub only: Option<Part>,
    /// The CLIP's peak learning rate.
    pub clip_lr: f64,
    /// The last this many CLIP steps also train against `generate` runs (see
    /// [`super::harden`]); they need the VQGAN, which is then trained first.
    pub harden_steps: usize,
    /// `generate` runs chasing captions while the CLIP hardens.
    pub harden_pool: usize,
    /// Crops of each run's image (and of its real scene) the hardening loss sees.
    pub harden_views: usize,
    /// Start the CLIP from these weights (a CLIP folder) instead of at random.
    pub clip_from: Option<PathBuf>,
}

/// One of the two models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Clip,
    Vqgan,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            clip_steps: 1800,
            clip_batch: 64,
            vqgan_steps: 2800,
            vqgan_batch: 4,
            vqgan_crop: 64,
            only: None,
            clip_lr: CLIP_LR,
            harden_steps: 0,
            harden_pool: 8,
            harden_views: 4,
            clip_from: None,
        }
    }
}

/// Progress of a training run, and its cancellation.
pub trait TrainObserver {
    /// A stage ("clip", "vqgan", "evaluate") begins with this many steps.
    fn stage(&mut self, name: &str, steps: usize);
    /// One step finished with this loss; `detail` is a short line of extra figures.
    fn step(&mut self, step: usize, loss: f64, detail: &str);
    /// Checked between steps: true stops the run without writing anything.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Loss curves of a finished training, for the report.
#[derive(Debug, Clone, Default)]
pub struct TrainLog {
    pub clip_loss: Vec<f64>,
    pub vqgan_loss: Vec<f64>,
    pub clip_seconds: f64,
    pub vqgan_seconds: f64,
}

enum InitKind {
    Zeros,
    Ones,
    Normal(f64),
    Const(f64),
}

/// Builds a `VarMap` holding every tensor the model asks for, initialised by `rule`.
fn init_vars(
    build: impl Fn(VarBuilder) -> candle_core::Result<()>,
    rule: impl Fn(&str, &[usize]) -> InitKind,
    rng: &mut Rng,
    device: &Device,
) -> Result<VarMap> {
    let recorder = ShapeRecorder::default();
    build(recorder.var_builder(device))?;
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().map_err(|_| DemoError::Train("variable map poisoned".into()))?;
        for (name, shape) in recorder.requested() {
            let n: usize = shape.iter().product();
            let t = match rule(&name, &shape) {
                InitKind::Zeros => Tensor::zeros(shape.as_slice(), DType::F32, device)?,
                InitKind::Ones => Tensor::ones(shape.as_slice(), DType::F32, device)?,
                InitKind::Const(v) => (Tensor::ones(shape.as_slice(), DType::F32, device)? * v)?,
                InitKind::Normal(std) => {
                    let v: Vec<f32> = rng.normals_f32(n).into_iter().map(|x| x * std as f32).collect();
                    Tensor::from_vec(v, shape.as_slice(), device)?
                }
            };
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

fn fan_in(shape: &[usize]) -> f64 {
    shape.iter().skip(1).product::<usize>().max(1) as f64
}

fn cosine_lr(step: usize, steps: usize, peak: f64, warmup: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

fn collect(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| DemoError::Train("variable map poisoned".into()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect())
}

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

pub(super) fn variable(varmap: &VarMap, name: &str) -> Result<Var> {
    let data = varmap.data().lock().map_err(|_| DemoError::Train("variable map poisoned".into()))?;
    data.get(name).cloned().ok_or_else(|| DemoError::Train(format!("no variable '{name}'")))
}
