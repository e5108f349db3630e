//! The one-step generator (CLIP-GEN, Wang et al. 2022): a GPT-style pre-LN causal
//! transformer that maps a unit CLIP embedding to a VQGAN token grid in raster order.
//! The embedding, projected to the transformer's width, is token 0; each further
//! position predicts the next code. It is trained on images alone (their CLIP image
//! embeddings as the condition, their VQGAN codes as the targets); at inference a CLIP
//! text embedding takes the image embedding's place, since both live in one space.
//!
//! The files are a folder with `config.json` ([`OneStepConfig`]) and
//! `model.safetensors`, read through [`crate::models::weights`] like CLIP and VQGAN.
//! Tensor names follow GPT-2's layout in spirit: `cond_proj`, `tok_emb`, `pos_emb`,
//! `blocks.{i}.{ln1,attn.qkv,attn.proj,ln2,mlp.fc1,mlp.fc2}`, `ln_f`, `head`.

pub mod config;
mod host;
pub mod sample;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

pub use config::OneStepConfig;
pub use sample::pick;

use crate::settings::Sampling;

use crate::models::error::{ModelError, Result};
use crate::models::nn::{LayerNorm, Linear};
use crate::models::ops::composed::{softmax_last_dim, Activation};
use crate::models::ops::{self, Path as OpPath};
use crate::models::weights::WeightFile;

/// Layer-norm epsilon of every norm in the model.
const EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(c: &OneStepConfig, vb: VarBuilder) -> CResult<Self> {
        let w = c.width;
        Ok(Self {
            ln1: LayerNorm::new(w, EPS, vb.pp("ln1"))?,
            qkv: Linear::new(w, 3 * w, vb.pp("attn").pp("qkv"))?,
            proj: Linear::new(w, w, vb.pp("attn").pp("proj"))?,
            ln2: LayerNorm::new(w, EPS, vb.pp("ln2"))?,
            fc1: Linear::new(w, c.mlp, vb.pp("mlp").pp("fc1"))?,
            fc2: Linear::new(c.mlp, w, vb.pp("mlp").pp("fc2"))?,
            heads: c.heads,
        })
    }

    fn scale(&self, width: usize) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "head widths are small")]
        let hd = (width / self.heads) as f64;
        hd.powf(-0.5)
    }

    fn mlp(&self, x: &Tensor) -> CResult<Tensor> {
        let h = self.fc1.forward(&self.ln2.forward(x)?)?;
        let h = if self.fc1.path(&h) == OpPath::Frozen {
            ops::quick_gelu::quick_gelu(&h)?
        } else {
            Activation::QuickGelu.forward(&h)?
        };
        self.fc2.forward(&h)
    }

    /// The whole sequence `[B, T, W]` at once, causally (training; the reference form).
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (b, t, w) = x.dims3()?;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?;
        let scale = self.scale(w);
        let attended = if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
            #[expect(clippy::cast_possible_truncation, reason = "the scale of an f32 model")]
            ops::attention::attention(&qkv, self.heads, scale as f32, true)?
        } else {
            let hd = w / self.heads;
            let split = |i: usize| -> CResult<Tensor> {
                qkv.narrow(2, i * w, w)?.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous()
            };
            let (q, k, v) = ((split(0)? * scale)?, split(1)?, split(2)?);
            let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(&causal_mask(t, x.dtype(), x.device())?)?;
            softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, w))?
        };
        let x = (x + self.proj.forward(&attended)?)?;
        &x + self.mlp(&x)?
    }

    /// One new position `[B, 1, W]` against the cached keys and values of the earlier
    /// ones (sampling).
    fn forward_cached(&self, x: &Tensor, cache: &mut LayerCache) -> CResult<Tensor> {
        let (b, _, w) = x.dims3()?;
        let hd = w / self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?;
        let heads = |i: usize| -> CResult<Tensor> {
            qkv.narrow(2, i * w, w)?.reshape((b, 1, self.heads, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = (heads(0)? * self.scale(w))?;
        let (k, v) = cache.append(&heads(1)?, &heads(2)?)?;
        let p = softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let attended = p.matmul(&v)?.transpose(1, 2)?.reshape((b, 1, w))?;
        let x = (x + self.proj.forward(&attended)?)?;
        &x + self.mlp(&x)?
    }
}

/// `[T, T]`: 0 on and below the diagonal, −∞ above.
fn causal_mask(t: usize, dtype: DType, device: &Device) -> CResult<Tensor> {
    let mask: Vec<f32> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)
}

/// One layer's keys and values so far, `[B, heads, T, head_dim]` each, in buffers
/// allocated once for the whole grid.
struct LayerCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerCache {
    fn new(b: usize, heads: usize, max: usize, hd: usize, dtype: DType, device: &Device) -> CResult<Self> {
        Ok(Self {
            k: Tensor::zeros((b, heads, max, hd), dtype, device)?,
            v: Tensor::zeros((b, heads, max, hd), dtype, device)?,
            len: 0,
        })
    }

    /// Appends one position and returns all keys and values so far.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> CResult<(Tensor, Tensor)> {
        self.k.slice_set(k, 2, self.len)?;
        self.v.slice_set(v, 2, self.len)?;
        self.len += 1;
        Ok((self.k.narrow(2, 0, self.len)?, self.v.narrow(2, 0, self.len)?))
    }
}

/// The one-step generator.
#[derive(Debug, Clone)]
pub struct OneStep {
    config: OneStepConfig,
    cond_proj: Linear,
    tok_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
}

impl OneStep {
    pub fn new(vb: VarBuilder, c: &OneStepConfig) -> CResult<Self> {
        c.validate().map_err(candle_core::Error::msg)?;
        let cells = c.cells();
        Ok(Self {
            config: c.clone(),
            cond_proj: Linear::new(c.clip_dim, c.width, vb.pp("cond_proj"))?,
            tok_emb: vb.get((c.n_codes, c.width), "tok_emb.weight")?,
            pos_emb: vb.get((cells, c.width), "pos_emb.weight")?,
            blocks: (0..c.layers).map(|i| Block::new(c, vb.pp("blocks").pp(i))).collect::<CResult<_>>()?,
            ln_f: LayerNorm::new(c.width, EPS, vb.pp("ln_f"))?,
            head: Linear::new_no_bias(c.width, c.n_codes, vb.pp("head"))?,
        })
    }

    pub fn config(&self) -> &OneStepConfig {
        &self.config
    }

    /// Teacher-forced logits: `cond` `[B, clip_dim]` (unit CLIP embeddings) and the
    /// grid's codes `tokens` `[B, cells]` (u32) give `[B, cells, n_codes]`, where row `i`
    /// predicts code `i` from the condition and codes `0..i`.
    pub fn forward(&self, cond: &Tensor, tokens: &Tensor) -> CResult<Tensor> {
        let (b, cells) = tokens.dims2()?;
        if cells != self.config.cells() {
            candle_core::bail!("one-step model: {cells} codes given, its grid has {}", self.config.cells());
        }
        let c = self.cond_proj.forward(cond)?.unsqueeze(1)?;
        let mut x = c;
        if cells > 1 {
            let prev = tokens.narrow(1, 0, cells - 1)?.flatten_all()?;
            let t = self.tok_emb.index_select(&prev, 0)?.reshape((b, cells - 1, self.config.width))?;
            x = Tensor::cat(&[&x, &t], 1)?;
        }
        let mut x = x.broadcast_add(&self.pos_emb.unsqueeze(0)?)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.head.forward(&self.ln_f.forward(&x)?)
    }

    /// Draws one code grid `[B, h, w]` (u32) per row of `cond` `[B, clip_dim]`, one
    /// position at a time with cached keys and values, each code by `sampling` from its
    /// logits and a number of `uniform` (in `[0, 1)`; drawn once per grid at each
    /// position, grids in order).
    pub fn generate(&self, cond: &Tensor, sampling: &Sampling, uniform: impl FnMut() -> f64) -> CResult<Tensor> {
        self.generate_with(cond, &|row, u| pick(sampling, row, u), uniform)
    }

    /// [`Self::generate`] with any rule `pick` for a code from its row of logits and a
    /// uniform number. On the CPU the arithmetic runs over plain buffers (`host.rs`);
    /// elsewhere as tensor ops on the model's device.
    pub fn generate_with(
        &self,
        cond: &Tensor,
        pick: &(dyn Fn(&[f32], f64) -> u32 + Sync),
        mut uniform: impl FnMut() -> f64,
    ) -> CResult<Tensor> {
        let c = &self.config;
        let b = cond.dim(0)?;
        if cond.dims2()?.1 != c.clip_dim {
            candle_core::bail!(
                "one-step model: a condition of width {} given, it takes {}",
                cond.dims2()?.1,
                c.clip_dim
            );
        }
        if self.pos_emb.device().is_cpu() {
            let host = host::HostModel::new(self)?;
            let cond = cond.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let codes = host.generate(&cond, b, pick, &mut uniform)?;
            return Tensor::from_vec(codes, (b, c.grid[0], c.grid[1]), self.pos_emb.device());
        }
        self.generate_tensors(cond, pick, uniform)
    }

    /// [`Self::generate_with`] as tensor ops.
    fn generate_tensors(
        &self,
        cond: &Tensor,
        pick: &(dyn Fn(&[f32], f64) -> u32 + Sync),
        mut uniform: impl FnMut() -> f64,
    ) -> CResult<Tensor> {
        let c = &self.config;
        let b = cond.dim(0)?;
        let cells = c.cells();
        let dtype = self.pos_emb.dtype();
        let device = self.pos_emb.device();
        let mut caches = (0..c.layers)
            .map(|_| LayerCache::new(b, c.heads, cells, c.width / c.heads, dtype, device))
            .collect::<CResult<Vec<_>>>()?;
        let mut codes = vec![0u32; b * cells];
        let mut x = self.cond_proj.forward(&cond.to_dtype(dtype)?)?.unsqueeze(1)?;
        for i in 0..cells {
            x = x.broadcast_add(&self.pos_emb.narrow(0, i, 1)?.unsqueeze(0)?)?;
            for (block, cache) in self.blocks.iter().zip(&mut caches) {
                x = block.forward_cached(&x, cache)?;
            }
            let logits = self.head.forward(&self.ln_f.forward(&x)?)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            let mut picked = Vec::with_capacity(b);
            for (r, row) in logits.chunks_exact(c.n_codes).enumerate() {
                let code = pick(row, uniform());
                codes[r * cells + i] = code;
                picked.push(code);
            }
            if i + 1 < cells {
                let ids = Tensor::from_vec(picked, b, device)?;
                x = self.tok_emb.index_select(&ids, 0)?.unsqueeze(1)?;
            }
        }
        Tensor::from_vec(codes, (b, c.grid[0], c.grid[1]), device)
    }
}

/// The files of a one-step model folder.
#[derive(Debug, Clone)]
pub struct OneStepFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
}

impl OneStepFiles {
    /// Finds `config.json` and `model.safetensors` in `dir`.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let why = if dir.exists() { "expected a folder, got a file" } else { "one-step model folder not found" };
            return Err(ModelError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, why)));
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(ModelError::format(dir, "not a one-step model folder: config.json is missing"));
        }
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(ModelError::format(dir, "not a one-step model folder: model.safetensors is missing"));
        }
        Ok(Self { dir: dir.to_path_buf(), config, weights })
    }

    pub fn read_config(&self) -> Result<OneStepConfig> {
        let text = crate::files::read_text_bounded(&self.config, crate::files::MAX_CONFIG_BYTES, "model config")?;
        OneStepConfig::from_json(&text).map_err(|m| ModelError::config(&self.config, m))
    }
}

/// Loads a one-step model folder in `dtype` on `device`.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<OneStep> {
    let files = OneStepFiles::locate(dir)?;
    let config = files.read_config()?;
    let weights = Arc::new(WeightFile::open_safetensors(&files.weights)?);
    if !weights.contains("tok_emb.weight") {
        return Err(ModelError::format(&files.weights, "does not look like a one-step model (no tok_emb.weight)"));
    }
    let (vb, report) = weights.var_builder("", dtype, device);
    report.finish(OneStep::new(vb, &config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::weights::RandomBackend;

    pub(crate) fn tiny() -> OneStepConfig {
        OneStepConfig {
            clip_dim: 6,
            n_codes: 11,
            grid: [2, 3],
            width: 8,
            layers: 2,
            heads: 2,
            mlp: 16,
            ..Default::default()
        }
    }

    /// Greedy sampling through `generate_with` (`host`) or the tensor path, recording
    /// each step's logits in the order of the uniform numbers drawn (position by
    /// position, rows in order), whichever thread picks.
    fn greedy(model: &OneStep, cond: &Tensor, host: bool) -> (Tensor, Vec<Vec<f32>>) {
        let seen = std::sync::Mutex::new(std::collections::BTreeMap::new());
        let pick = |row: &[f32], u: f64| {
            seen.lock().unwrap().insert((u * 1e6).round() as u64, row.to_vec());
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
            u32::try_from(best).unwrap()
        };
        let mut draws = 0u32;
        let uniform = || {
            draws += 1;
            f64::from(draws) * 1e-4
        };
        let grid =
            if host { model.generate_with(cond, &pick, uniform) } else { model.generate_tensors(cond, &pick, uniform) };
        (grid.unwrap(), seen.into_inner().unwrap().into_values().collect())
    }

    #[test]
    fn cached_sampling_sees_what_the_full_forward_sees() {
        let model = OneStep::new(RandomBackend::var_builder(0.5, DType::F32), &tiny()).unwrap();
        let cond =
            Tensor::new(&[[0.1f32, -0.3, 0.5, 0.2, 0.0, 0.7], [0.4, 0.4, -0.1, 0.0, 0.3, -0.2]], &Device::Cpu).unwrap();
        for host in [true, false] {
            let (grid, seen) = greedy(&model, &cond, host);
            assert_eq!(grid.dims(), [2, 2, 3]);
            let tokens = grid.flatten_from(1).unwrap();
            let full = model.forward(&cond, &tokens).unwrap();
            assert_eq!(full.dims(), [2, 6, 11]);
            let full: Vec<Vec<Vec<f32>>> = full.to_vec3().unwrap();
            for i in 0..6 {
                for r in 0..2 {
                    let cached = &seen[i * 2 + r];
                    for (a, b) in cached.iter().zip(&full[r][i]) {
                        assert!((a - b).abs() < 1e-4, "host {host}, position {i} row {r}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn host_sampling_draws_what_the_tensor_path_draws() {
        // A model of the shapes world's proportions (several heads, a grid of many
        // positions), so the host's attention and products are checked at scale.
        let c = OneStepConfig {
            clip_dim: 16,
            n_codes: 64,
            grid: [4, 5],
            width: 32,
            layers: 3,
            heads: 4,
            mlp: 128,
            ..Default::default()
        };
        let model = OneStep::new(RandomBackend::var_builder(0.3, DType::F32), &c).unwrap();
        let cond = Tensor::randn(0f32, 1.0, (3, 16), &Device::Cpu).unwrap();
        let (a, seen_a) = greedy(&model, &cond, true);
        let (b, seen_b) = greedy(&model, &cond, false);
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<u32>().unwrap()
        );
        for (x, y) in seen_a.iter().zip(&seen_b) {
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() < 1e-4, "{p} vs {q}");
            }
        }
    }

    #[test]
    fn a_condition_of_the_wrong_width_is_an_error() {
        let model = OneStep::new(RandomBackend::var_builder(0.5, DType::F32), &tiny()).unwrap();
        let cond = Tensor::zeros((1, 5), DType::F32, &Device::Cpu).unwrap();
        let err = model.generate(&cond, &Sampling::default(), || 0.5).unwrap_err().to_string();
        assert!(err.contains("width 5"), "{err}");
    }

    #[test]
    fn position_i_does_not_see_code_i() {
        let model = OneStep::new(RandomBackend::var_builder(0.5, DType::F32), &tiny()).unwrap();
        let cond = Tensor::new(&[[0.1f32, -0.3, 0.5, 0.2, 0.0, 0.7]], &Device::Cpu).unwrap();
        let a = Tensor::new(&[[1u32, 2, 3, 4, 5, 6]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1u32, 2, 3, 9, 5, 6]], &Device::Cpu).unwrap();
        let la: Vec<Vec<f32>> = model.forward(&cond, &a).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let lb: Vec<Vec<f32>> = model.forward(&cond, &b).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        // Code 3 (index 3) changed: rows 0..=3 predict without it, rows 4.. see it.
        for i in 0..4 {
            assert_eq!(la[i], lb[i], "row {i} saw a later code");
        }
        assert_ne!(la[4], lb[4]);
    }
}
