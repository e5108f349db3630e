//! What the CLIP's and the VQGAN's training share: the options and progress types, the
//! two models' architecture presets (the files they are written with), and the helpers
//! both loops use (initialisation by name, the schedule, reading the variables).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::super::data::{CLIP_SIDE, CONTEXT};
use super::super::error::{DemoError, Result};
use super::clip_lr::CLIP_LR;
use crate::engine::rng::Rng;
use crate::models::weights::ShapeRecorder;

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

pub(super) enum InitKind {
    Zeros,
    Ones,
    Normal(f64),
    Const(f64),
}

/// Builds a `VarMap` holding every tensor the model asks for, initialised by `rule`.
pub(super) fn init_vars(
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

pub(super) fn fan_in(shape: &[usize]) -> f64 {
    shape.iter().skip(1).product::<usize>().max(1) as f64
}

pub(super) fn cosine_lr(step: usize, steps: usize, peak: f64, warmup: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

pub(super) fn collect(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| DemoError::Train("variable map poisoned".into()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect())
}

pub(super) fn variable(varmap: &VarMap, name: &str) -> Result<Var> {
    let data = varmap.data().lock().map_err(|_| DemoError::Train("variable map poisoned".into()))?;
    data.get(name).cloned().ok_or_else(|| DemoError::Train(format!("no variable '{name}'")))
}
