//! `train-onestep`: trains a [`OneStep`] generator for a CLIP + VQGAN pair.
//!
//! Language-free: the condition is the unit CLIP image embedding of a view of each
//! image, perturbed LAFITE-style (Zhou et al. 2022: `e + ξ‖e‖·ε/‖ε‖`, renormalised) so
//! that the text embeddings a prompt gives at inference, which lie near but not on the
//! image embeddings, fall inside what the model has seen. In the shapes world, where
//! captions come free, a share of the rows is conditioned on caption embeddings too.
//! The target is the image's VQGAN code grid, learnt by next-code cross-entropy with
//! AdamW (0.9, 0.95) on a cosine schedule, as HFAiLab/clip-gen trains.
//!
//! Work in progress lives in `<out>.checkpoint/`: the data (made once) and the latest
//! state (weights, optimiser moments, random state, step), written atomically every
//! `checkpoint_every` steps and when the run is cancelled. A resumed run continues to
//! the same result as one never stopped. The model is written to `<out>` only when
//! training ends, and the checkpoint folder is then removed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::data::{self, DataSpec, Dataset, Encoders, Source};
use super::{cosine_lr, init_vars, load_with_state, save_with_state, AdamW, Init, Progress, Result, TrainError, Vars};
use crate::engine::rng::Rng;
use crate::models::clip::Clip;
use crate::models::onestep::config::TrainedWith;
use crate::models::onestep::{OneStep, OneStepConfig};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vqgan::Vqgan;

/// The transformer's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
}

impl Arch {
    /// The shapes world's model: small enough to train in two hours on two cores.
    pub const SHAPES: Self = Self { width: 128, layers: 6, heads: 4 };
    /// For real CLIP + VQGAN pairs, on a GPU (CLIP-GEN's is 24 layers of 1 024; this
    /// is a size an artist's folder of a few thousand images can feed).
    pub const STANDARD: Self = Self { width: 512, layers: 12, heads: 8 };
}

/// Everything a training run depends on; a checkpoint is resumed only with the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub data: DataSpec,
    pub arch: Arch,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// LAFITE's ξ: the relative size of the noise added to image embeddings.
    pub cond_noise: f64,
    /// Share of the rows conditioned on a caption's text embedding (when there are any).
    pub caption_share: f64,
    /// Images held out of training to measure the loss on.
    pub held_out: usize,
}

/// Training steps between checkpoints (and held-out evaluations).
pub const CHECKPOINT_EVERY: usize = 100;

/// The state saved in a checkpoint besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    options: Options,
    step: usize,
    rng: Rng,
    losses: Vec<f64>,
    held_out: Vec<(usize, f64)>,
    seconds: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Mean training loss of each step.
    pub losses: Vec<f64>,
    /// (step, loss on the held-out images).
    pub held_out: Vec<(usize, f64)>,
    /// Training time, resumed runs' included (the data's not).
    pub seconds: f64,
    pub data_seconds: f64,
    pub parameters: usize,
}

/// The folder a run's work in progress lives in.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_else(|| "onestep".into());
    name.push(".checkpoint");
    out.with_file_name(name)
}

/// The model's config for these models and options.
pub fn model_config(opts: &Options, clip: &Clip, vqgan: &Vqgan) -> Result<OneStepConfig> {
    let f = vqgan.config().downsample_factor();
    if f == 0 || !opts.data.side.is_multiple_of(f) {
        return Err(TrainError::Input(format!(
            "image side {} is not a multiple of the VQGAN's downsampling factor {f}",
            opts.data.side
        )));
    }
    let g = opts.data.side / f;
    let config = OneStepConfig {
        clip_dim: clip.config().projection_dim,
        n_codes: vqgan.config().n_embed,
        grid: [g, g],
        width: opts.arch.width,
        layers: opts.arch.layers,
        heads: opts.arch.heads,
        mlp: 4 * opts.arch.width,
        trained_with: TrainedWith {
            clip_sha256: opts.data.clip_sha256.clone(),
            vqgan_sha256: opts.data.vqgan_sha256.clone(),
            image_side: opts.data.side,
        },
        ..OneStepConfig::default()
    };
    config.validate().map_err(TrainError::Input)?;
    Ok(config)
}

fn init_rule(layers: usize) -> impl Fn(&str, &[usize]) -> Init {
    #[expect(clippy::cast_precision_loss, reason = "layer counts")]
    let residual = 0.02 / (2.0 * layers as f64).sqrt();
    move |name: &str, shape: &[usize]| {
        if name.contains("ln") && name.ends_with("weight") {
            Init::Ones
        } else if shape.len() == 1 {
            Init::Zeros
        } else if name.ends_with("attn.proj.weight") || name.ends_with("fc2.weight") {
            Init::Normal(residual)
        } else {
            Init::Normal(0.02)
        }
    }
}

/// Which variables weight decay applies to: the matrices, not norms, biases or
/// embeddings.
fn decayed(name: &str) -> bool {
    name.ends_with(".weight") && !name.contains("ln") && !name.contains("emb")
}

/// The models a run trains for.
pub struct Models<'a> {
    pub clip: &'a Clip,
    pub tokenizer: &'a ClipTokenizer,
    pub vqgan: &'a Vqgan,
}

/// One batch: conditions `[B, dim]` and targets `[B, cells]`.
fn batch(data: &Dataset, rows: &[usize], opts: &Options, rng: &mut Rng, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut cond = Vec::with_capacity(rows.len() * data.dim);
    let mut tokens = Vec::with_capacity(rows.len() * data.cells);
    for &i in rows {
        if data.captions > 0 && rng.chance(opts.caption_share) {
            cond.extend_from_slice(data.caption(i, rng.below(data.captions)));
        } else {
            cond.extend(perturb(data.view(i, rng.below(data.views)), opts.cond_noise, rng));
        }
        tokens.extend_from_slice(data.tokens_of(i));
    }
    Ok((
        Tensor::from_vec(cond, (rows.len(), data.dim), device)?,
        Tensor::from_vec(tokens, (rows.len(), data.cells), device)?,
    ))
}

/// LAFITE's perturbation of a unit embedding: `normalise(e + ξ·ε/‖ε‖)` (‖e‖ = 1).
fn perturb(e: &[f32], xi: f64, rng: &mut Rng) -> Vec<f32> {
    if xi <= 0.0 {
        return e.to_vec();
    }
    let eps = rng.normals_f32(e.len());
    let norm = eps.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt().max(1e-12);
    #[expect(clippy::cast_possible_truncation, reason = "an f32 embedding")]
    let k = (xi / norm) as f32;
    let v: Vec<f32> = e.iter().zip(&eps).map(|(a, n)| a + k * n).collect();
    let len = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt().max(1e-12);
    #[expect(clippy::cast_possible_truncation, reason = "an f32 embedding")]
    v.iter().map(|x| x / len as f32).collect()
}

/// Mean next-code cross-entropy of `model` on `cond`/`tokens`.
fn loss(model: &OneStep, cond: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let logits = model.forward(cond, tokens)?;
    let (b, cells, k) = logits.dims3()?;
    let logp = candle_nn::ops::log_softmax(&logits.reshape((b * cells, k))?, D::Minus1)?;
    let picked = logp.gather(&tokens.reshape((b * cells, 1))?, 1)?;
    #[expect(clippy::cast_precision_loss, reason = "batch sizes")]
    let n = (b * cells) as f64;
    Ok((picked.sum_all()? * (-1.0 / n))?)
}

/// Mean loss on the held-out rows, with the image embeddings unperturbed.
fn held_out_loss(model: &OneStep, data: &Dataset, rows: &[usize], device: &Device) -> Result<f64> {
    let mut total = 0.0;
    for chunk in rows.chunks(16) {
        let cond: Vec<f32> = chunk.iter().flat_map(|&i| data.view(i, 0).to_vec()).collect();
        let tokens: Vec<u32> = chunk.iter().flat_map(|&i| data.tokens_of(i).to_vec()).collect();
        let cond = Tensor::from_vec(cond, (chunk.len(), data.dim), device)?;
        let tokens = Tensor::from_vec(tokens, (chunk.len(), data.cells), device)?;
        #[expect(clippy::cast_precision_loss, reason = "row counts")]
        let share = chunk.len() as f64 / rows.len() as f64;
        total += f64::from(loss(model, &cond, &tokens)?.to_scalar::<f32>()?) * share;
    }
    Ok(total)
}

/// Trains, resuming from `<out>.checkpoint/` when `resume`, and writes the model to
/// `out` when done. `files` are the folder's images (empty for the shapes world).
pub fn train(
    opts: &Options,
    files: &[PathBuf],
    models: &Models,
    out: &Path,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<Report> {
    let result = Run { opts, files, models, out, resume }.go(progress);
    // A run that failed or stopped before its first checkpoint leaves no empty folder.
    let dir = checkpoint_dir(out);
    if result.is_err() && std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
        let _ = std::fs::remove_dir(&dir);
    }
    result
}

/// One call of [`train`].
struct Run<'a> {
    opts: &'a Options,
    files: &'a [PathBuf],
    models: &'a Models<'a>,
    out: &'a Path,
    resume: bool,
}

impl Run<'_> {
    fn go(&self, progress: &mut dyn Progress) -> Result<Report> {
        let Run { opts, files, models, out, resume } = *self;
        let device = Device::Cpu;
        let config = model_config(opts, models.clip, models.vqgan)?;
        let ckpt_dir = checkpoint_dir(out);
        let state_path = ckpt_dir.join("state.safetensors");
        let data_path = ckpt_dir.join("data.safetensors");
        if !resume && ckpt_dir.exists() {
            return Err(TrainError::Input(format!(
                "{} holds an earlier run's checkpoint: add --resume to continue it, or delete the folder",
                ckpt_dir.display()
            )));
        }
        if resume && !state_path.is_file() && !data_path.is_file() {
            return Err(TrainError::Input(format!("--resume: no checkpoint in {}", ckpt_dir.display())));
        }
        std::fs::create_dir_all(&ckpt_dir).map_err(|e| TrainError::io(&ckpt_dir, e))?;

        // The data, made once.
        let data_started = Instant::now();
        let spec_json = serde_json::to_string(&opts.data).unwrap_or_default();
        let data = if data_path.is_file() {
            let (tensors, state) = load_with_state(&data_path)?;
            if state != spec_json {
                return Err(TrainError::Input(format!(
                    "{} was made from other data or models than these options give; start again without --resume",
                    data_path.display()
                )));
            }
            Dataset::from_tensors(&tensors)?
        } else {
            let enc = Encoders { clip: models.clip, tokenizer: models.tokenizer, vqgan: models.vqgan, device: &device };
            let d = data::build(&opts.data, files, &enc, progress)?;
            save_with_state(&data_path, &d.tensors()?, &spec_json)?;
            d
        };
        let data_seconds = data_started.elapsed().as_secs_f64();
        if data.cells != config.cells() || data.dim != config.clip_dim {
            return Err(TrainError::Input("the data's grid or embedding width does not fit the models".into()));
        }
        let held = opts.held_out.min(data.n / 2);
        let train_rows = data.n - held;
        let held_rows: Vec<usize> = (train_rows..data.n).collect();

        // The model and its optimiser, fresh or from the checkpoint.
        let mut rng = Rng::new(opts.data.seed ^ 0x0005_7E90);
        let vars = init_vars(|vb| OneStep::new(vb, &config).map(|_| ()), init_rule(config.layers), &mut rng, &device)?;
        let model = OneStep::new(vars.var_builder(&device)?, &config)?;
        let parameters = vars.0.values().map(|v| v.elem_count()).sum();
        let mut opt = AdamW::new(&vars, 0.9, 0.95, opts.weight_decay, 1.0)?;
        let mut state = State {
            options: opts.clone(),
            step: 0,
            rng: rng.fork(),
            losses: Vec::new(),
            held_out: Vec::new(),
            seconds: 0.0,
        };
        if state_path.is_file() {
            let (tensors, json) = load_with_state(&state_path)?;
            let saved: State = serde_json::from_str(&json)
                .map_err(|e| TrainError::Input(format!("{}: unreadable state ({e})", state_path.display())))?;
            if saved.options != *opts {
                return Err(TrainError::Input(format!(
                    "the checkpoint in {} was made with other options; use the same ones to resume, or delete it",
                    ckpt_dir.display()
                )));
            }
            vars.load(&tensors, "w.")?;
            opt.load(&tensors, saved.step)?;
            state = saved;
            progress.note(&format!("resuming at step {}", state.step));
        }

        let write_checkpoint = |state: &State, vars: &Vars, opt: &AdamW| -> Result<()> {
            let mut t = vars.tensors("w.", DType::F32)?;
            t.extend(opt.tensors());
            save_with_state(&state_path, &t, &serde_json::to_string(state).unwrap_or_default())
        };

        progress.stage("train", opts.steps, state.step);
        let started = Instant::now();
        let base_seconds = state.seconds;
        while state.step < opts.steps {
            if progress.cancelled() {
                state.seconds = base_seconds + started.elapsed().as_secs_f64();
                write_checkpoint(&state, &vars, &opt)?;
                return Err(TrainError::Cancelled);
            }
            let rows: Vec<usize> = (0..opts.batch).map(|_| state.rng.below(train_rows)).collect();
            let (cond, tokens) = batch(&data, &rows, opts, &mut state.rng, &device)?;
            let l = loss(&model, &cond, &tokens)?;
            let value = f64::from(l.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(TrainError::Input(format!("the loss is not finite at step {}; lower --lr", state.step)));
            }
            let grads = l.backward()?;
            let lr = cosine_lr(state.step, opts.steps, opts.lr, opts.warmup);
            let norm = opt.step(&vars, &grads, lr, decayed)?;
            state.losses.push(value);
            state.step += 1;
            progress.step(state.step - 1, value, &format!("lr {lr:.2e} · |g| {norm:.2}"));
            if state.step.is_multiple_of(CHECKPOINT_EVERY) || state.step == opts.steps {
                if !held_rows.is_empty() {
                    let h = held_out_loss(&model, &data, &held_rows, &device)?;
                    state.held_out.push((state.step, h));
                    progress.note(&format!("step {}: held-out loss {h:.4}", state.step));
                }
                state.seconds = base_seconds + started.elapsed().as_secs_f64();
                write_checkpoint(&state, &vars, &opt)?;
            }
        }
        let seconds = state.seconds;
        write_model(out, &config, &vars)?;
        std::fs::remove_dir_all(&ckpt_dir).map_err(|e| TrainError::io(&ckpt_dir, e))?;
        Ok(Report { losses: state.losses, held_out: state.held_out, seconds, data_seconds, parameters })
    }
}

/// Writes `config.json` and `model.safetensors` (f16) to a new folder beside `out`,
/// then puts it in `out`'s place, so `out` is never half-written.
pub fn write_model(out: &Path, config: &OneStepConfig, vars: &Vars) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let json = config.to_json();
    crate::files::write_atomic(&tmp.join("config.json"), |w| std::io::Write::write_all(w, json.as_bytes()))?;
    let tensors = vars.tensors("", DType::F16)?;
    save_with_state(&tmp.join("model.safetensors"), &tensors, "clipcanvas one-step model")?;
    if out.exists() {
        let old = out.with_extension(format!("old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(|e| TrainError::io(out, e))?;
        std::fs::rename(&tmp, out).map_err(|e| TrainError::io(out, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    } else {
        std::fs::rename(&tmp, out).map_err(|e| TrainError::io(out, e))?;
    }
    Ok(())
}

/// Writes a model of `config` with freshly initialised (untrained) weights to `out`:
/// for benchmarks and tests of the code around the model, not for drafts worth seeing.
pub fn write_untrained(out: &Path, config: &OneStepConfig, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    let device = Device::Cpu;
    let vars = init_vars(|vb| OneStep::new(vb, config).map(|_| ()), init_rule(config.layers), &mut rng, &device)?;
    write_model(out, config, &vars)
}

/// The default options for a source.
pub fn default_options(source: Source, seed: u64, clip_sha256: String, vqgan_sha256: String) -> Options {
    let shapes = matches!(source, Source::ShapesWorld { .. });
    Options {
        data: DataSpec {
            source,
            seed,
            side: if shapes { 128 } else { 256 },
            views: if shapes { 1 } else { 8 },
            captions: if shapes { 3 } else { 0 },
            flip: !shapes,
            clip_sha256,
            vqgan_sha256,
        },
        arch: if shapes { Arch::SHAPES } else { Arch::STANDARD },
        steps: if shapes { 4000 } else { 20000 },
        batch: 32,
        lr: if shapes { 1e-3 } else { 3e-4 },
        warmup: 200,
        weight_decay: 0.01,
        cond_noise: 0.5,
        caption_share: if shapes { 0.5 } else { 0.0 },
        held_out: if shapes { 256 } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbation_keeps_unit_length_and_moves_by_about_xi() {
        let mut rng = Rng::new(3);
        let e: Vec<f32> = {
            let v = rng.normals_f32(64);
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect()
        };
        let p = perturb(&e, 0.5, &mut rng);
        let len: f32 = p.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((len - 1.0).abs() < 1e-5);
        let cos: f32 = e.iter().zip(&p).map(|(a, b)| a * b).sum();
        // A random direction is nearly orthogonal in 64 dimensions: cos ≈ 1/√(1+ξ²).
        assert!((f64::from(cos) - 1.0 / 1.25f64.sqrt()).abs() < 0.15, "cos {cos}");
        assert_eq!(perturb(&e, 0.0, &mut rng), e);
    }

    #[test]
    fn checkpoints_sit_beside_the_model_folder() {
        assert_eq!(checkpoint_dir(Path::new("a/b/onestep")), Path::new("a/b/onestep.checkpoint"));
    }
}
