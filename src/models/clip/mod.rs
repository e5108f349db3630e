//! CLIP, the perceptor: a causal text transformer and a vision transformer, with their
//! projections into a shared embedding space, as Hugging Face's `CLIPModel` lays out
//! its weights (`text_model.*`, `vision_model.*`, `text_projection`, `visual_projection`,
//! `logit_scale`). Every op on the image path has a backward pass, so a loss on the image
//! embedding yields a gradient with respect to the input pixels.

pub mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

pub use config::{ClipConfig, TextConfig, VisionConfig};

use crate::models::error::{ModelError, Result};
use crate::models::nn::{LayerNorm, Linear};
use crate::models::ops::composed::{softmax_last_dim, Activation};
use crate::models::ops::encoder_layer::LayerWeights;
use crate::models::ops::{self, Path as OpPath};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::weights::WeightFile;

/// The per-channel mean CLIP's images are normalised with.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// The per-channel standard deviation CLIP's images are normalised with.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// How an attention layer makes its queries, keys and values.
#[derive(Debug, Clone)]
enum Projections {
    /// Frozen f32 weights on the CPU: one product makes all three side by side, and
    /// [`ops::attention::attention`] reads the heads from it in place.
    Packed(Linear),
    /// Anything else (training, a GPU): three products and tensor ops.
    Separate { q: Linear, k: Linear, v: Linear },
}

#[derive(Debug, Clone)]
struct Attention {
    projections: Projections,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(dim: usize, heads: usize, vb: VarBuilder) -> CResult<Self> {
        let q = Linear::new(dim, dim, vb.pp("q_proj"))?;
        let k = Linear::new(dim, dim, vb.pp("k_proj"))?;
        let v = Linear::new(dim, dim, vb.pp("v_proj"))?;
        let projections = if vb.device().is_cpu() && [&q, &k, &v].iter().all(|l| l.is_frozen()) {
            Projections::Packed(Linear::stacked(&[&q, &k, &v])?)
        } else {
            Projections::Separate { q, k, v }
        };
        Ok(Self { projections, out_proj: Linear::new(dim, dim, vb.pp("out_proj"))?, heads, head_dim: dim / heads })
    }

    fn split_heads(&self, x: &Tensor, b: usize, t: usize) -> CResult<Tensor> {
        x.reshape((b, t, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    /// Self-attention over `x` `[B, T, D]`; with `causal`, each position sees only
    /// itself and the positions before it.
    fn forward(&self, x: &Tensor, causal: bool) -> CResult<Tensor> {
        #[expect(clippy::cast_precision_loss, reason = "head dims are small")]
        let scale = (self.head_dim as f64).powf(-0.5);
        let out = match &self.projections {
            #[expect(clippy::cast_possible_truncation, reason = "the scale of an f32 model")]
            Projections::Packed(qkv) => ops::attention::attention(&qkv.forward(x)?, self.heads, scale as f32, causal)?,
            Projections::Separate { q, k, v } => {
                self.attend(&q.forward(x)?, &k.forward(x)?, &v.forward(x)?, scale, causal)?
            }
        };
        self.out_proj.forward(&out)
    }

    /// Attention from the projections `[B, T, D]` as tensor ops.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal: bool) -> CResult<Tensor> {
        let (b, t, d) = q.dims3()?;
        let q = self.split_heads(&(q * scale)?, b, t)?;
        let k = self.split_heads(k, b, t)?;
        let v = self.split_heads(v, b, t)?;
        let mut scores = q.matmul(&k.t()?.contiguous()?)?;
        if causal {
            scores = scores.broadcast_add(&causal_mask(t, scores.dtype(), scores.device())?)?;
        }
        let attn = softmax_last_dim(&scores)?;
        attn.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, d))
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_norm2: LayerNorm,
    activation: Activation,
    /// Frozen f32 weights on the CPU with QuickGELU: the whole layer as one op
    /// ([`ops::encoder_layer`]), the same values in one node of the graph.
    fused: Option<LayerWeights>,
}

impl EncoderLayer {
    fn new(dim: usize, inner: usize, heads: usize, act: Activation, eps: f64, vb: VarBuilder) -> CResult<Self> {
        let mut layer = Self {
            self_attn: Attention::new(dim, heads, vb.pp("self_attn"))?,
            layer_norm1: LayerNorm::new(dim, eps, vb.pp("layer_norm1"))?,
            fc1: Linear::new(dim, inner, vb.pp("mlp").pp("fc1"))?,
            fc2: Linear::new(inner, dim, vb.pp("mlp").pp("fc2"))?,
            layer_norm2: LayerNorm::new(dim, eps, vb.pp("layer_norm2"))?,
            activation: act,
            fused: None,
        };
        layer.fused = layer.fusable()?;
        Ok(layer)
    }

    /// The layer's weights for [`ops::encoder_layer`], when it can run as one op: packed
    /// frozen projections (CPU, f32), frozen norms and MLP, QuickGELU.
    fn fusable(&self) -> CResult<Option<LayerWeights>> {
        let Projections::Packed(qkv) = &self.self_attn.projections else { return Ok(None) };
        let linear = |l: &Linear| l.parts().1.map(|b| (l.parts().0.clone(), b.clone()));
        let norm = |n: &LayerNorm| (n.parts().0.clone(), n.parts().1.clone());
        let (Some(qkv), Some(out), Some(fc1), Some(fc2)) =
            (linear(qkv), linear(&self.self_attn.out_proj), linear(&self.fc1), linear(&self.fc2))
        else {
            return Ok(None);
        };
        let weights = LayerWeights {
            norm1: norm(&self.layer_norm1),
            qkv,
            out,
            norm2: norm(&self.layer_norm2),
            fc1,
            fc2,
            eps: self.layer_norm1.parts().2,
            heads: self.self_attn.heads,
        };
        let frozen = weights.norm1.0.device().is_cpu()
            && ops::frozen(&[&weights.norm1.0, &weights.norm1.1, &weights.norm2.0, &weights.norm2.1])
            && [&self.self_attn.out_proj, &self.fc1, &self.fc2].iter().all(|l| l.is_frozen());
        let same_eps = self.layer_norm1.parts().2.to_bits() == self.layer_norm2.parts().2.to_bits();
        if self.activation != Activation::QuickGelu || !frozen || !same_eps {
            return Ok(None);
        }
        weights.checked().map(Some)
    }

    fn forward(&self, x: &Tensor, causal: bool) -> CResult<Tensor> {
        if let Some(weights) = &self.fused {
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                return ops::encoder_layer::encoder_layer(x, weights, causal);
            }
        }
        let h = self.self_attn.forward(&self.layer_norm1.forward(x)?, causal)?;
        let x = (x + h)?;
        let h = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        // Frozen layers (generation) take the fused activation; training keeps the
        // composition its committed models were made with.
        let h = if self.activation == Activation::QuickGelu && self.fc1.path(&h) == OpPath::Frozen {
            ops::quick_gelu::quick_gelu(&h)?
        } else {
            self.activation.forward(&h)?
        };
        let h = self.fc2.forward(&h)?;
        x + h
    }
}

#[derive(Debug, Clone)]
struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    fn new(
        dim: usize,
        inner: usize,
        heads: usize,
        depth: usize,
        act: Activation,
        eps: f64,
        vb: VarBuilder,
    ) -> CResult<Self> {
        let vb = vb.pp("layers");
        let layers =
            (0..depth).map(|i| EncoderLayer::new(dim, inner, heads, act, eps, vb.pp(i))).collect::<CResult<_>>()?;
        Ok(Self { layers })
    }

    fn forward(&self, x: &Tensor, causal: bool) -> CResult<Tensor> {
        self.layers.iter().try_fold(x.clone(), |x, layer| layer.forward(&x, causal))
    }
}

/// The causal text transformer (`text_model.*`).
#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    config: TextConfig,
}

impl TextTransformer {
    pub fn new(vb: VarBuilder, c: &TextConfig) -> CResult<Self> {
        let emb = vb.pp("embeddings");
        Ok(Self {
            token_embedding: emb.pp("token_embedding").get((c.vocab_size, c.hidden_size), "weight")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((c.max_position_embeddings, c.hidden_size), "weight")?,
            encoder: Encoder::new(
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.num_hidden_layers,
                c.activation,
                c.layer_norm_eps,
                vb.pp("encoder"),
            )?,
            final_layer_norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
            config: c.clone(),
        })
    }

    /// Hidden states after the final layer norm, `[B, T, D]`, for token ids `[B, T]`.
    pub fn hidden_states(&self, ids: &Tensor) -> CResult<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!("{t} tokens exceed the model's {} positions", self.config.max_position_embeddings)
        }
        let max_id = ids.max_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
        if max_id as usize >= self.config.vocab_size {
            candle_core::bail!("token id {max_id} is outside the model's vocabulary of {}", self.config.vocab_size)
        }
        let tokens = self.token_embedding.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, ()))?;
        let x = tokens.broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        let x = self.encoder.forward(&x, true)?;
        self.final_layer_norm.forward(&x)
    }

    /// The pooled output: the hidden state at each sequence's end-of-text token.
    pub fn pooled(&self, ids: &Tensor) -> CResult<Tensor> {
        let hidden = self.hidden_states(ids)?;
        let ids_host: Vec<Vec<u32>> = ids.to_dtype(DType::U32)?.to_vec2()?;
        let positions: Vec<u32> = ids_host.iter().map(|row| eot_position(row, self.config.eos_token_id)).collect();
        let rows =
            positions.iter().enumerate().map(|(i, &p)| hidden.i((i, p as usize))).collect::<CResult<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    }
}

/// Where a sequence's end-of-text token is: the first `eos` id, or for the legacy
/// configs (`eos_token_id == 2`) the largest id, as transformers does.
fn eot_position(row: &[u32], eos: u32) -> u32 {
    let pos = if eos == 2 {
        row.iter().enumerate().rev().max_by_key(|(_, &v)| v).map(|(i, _)| i)
    } else {
        row.iter().position(|&v| v == eos)
    };
    #[expect(clippy::cast_possible_truncation, reason = "sequences are at most a few hundred tokens")]
    pos.map_or(row.len().saturating_sub(1) as u32, |p| p as u32)
}

fn causal_mask(t: usize, dtype: DType, device: &Device) -> CResult<Tensor> {
    let values: Vec<f32> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(values, (t, t), device)?.to_dtype(dtype)
}

/// The vision transformer (`vision_model.*`).
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    config: VisionConfig,
}

impl VisionTransformer {
    pub fn new(vb: VarBuilder, c: &VisionConfig) -> CResult<Self> {
        let emb = vb.pp("embeddings");
        let d = c.hidden_size;
        Ok(Self {
            class_embedding: emb.get(d, "class_embedding")?,
            patch_embedding: emb
                .pp("patch_embedding")
                .get((d, c.num_channels, c.patch_size, c.patch_size), "weight")?,
            position_embedding: emb.pp("position_embedding").get((c.num_patches() + 1, d), "weight")?,
            // "pre_layrnorm" is the upstream name, typo included.
            pre_layrnorm: LayerNorm::new(d, c.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(
                d,
                c.intermediate_size,
                c.num_attention_heads,
                c.num_hidden_layers,
                c.activation,
                c.layer_norm_eps,
                vb.pp("encoder"),
            )?,
            post_layernorm: LayerNorm::new(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
            config: c.clone(),
        })
    }

    /// The pooled, post-layer-normed class token, `[B, D]`, for normalised pixels
    /// `[B, 3, S, S]` with `S` the model's input size.
    pub fn pooled(&self, pixels: &Tensor) -> CResult<Tensor> {
        self.pool(&self.hidden_states(pixels)?)
    }

    /// The post-layer-normed class token of [`Self::hidden_states`]' output.
    pub fn pool(&self, hidden: &Tensor) -> CResult<Tensor> {
        self.post_layernorm.forward(&hidden.i((.., 0))?)
    }

    /// The encoder's last hidden states `[B, 1 + N, D]` (the class token, then the
    /// patches in row-major order) for normalised pixels `[B, 3, S, S]`.
    pub fn hidden_states(&self, pixels: &Tensor) -> CResult<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let s = self.config.image_size;
        if c != self.config.num_channels || h != s || w != s {
            candle_core::bail!(
                "CLIP expects images of [B, {}, {s}, {s}], got [{b}, {c}, {h}, {w}]",
                self.config.num_channels
            )
        }
        let p = self.config.patch_size;
        let patches = crate::models::nn::conv2d_layer(pixels, &self.patch_embedding, None, p, 0)?; // [B, D, S/p, S/p]
        let d = self.config.hidden_size;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // [B, N, D]
        let class = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let x = x.broadcast_add(&self.position_embedding)?;
        let x = self.pre_layrnorm.forward(&x)?;
        self.encoder.forward(&x, false)
    }
}

/// A CLIP model: both towers, their projections and the logit scale.
#[derive(Debug, Clone)]
pub struct Clip {
    text: TextTransformer,
    vision: VisionTransformer,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: Tensor,
    config: ClipConfig,
}

impl Clip {
    pub fn new(vb: VarBuilder, c: &ClipConfig) -> CResult<Self> {
        Ok(Self {
            text: TextTransformer::new(vb.pp("text_model"), &c.text)?,
            vision: VisionTransformer::new(vb.pp("vision_model"), &c.vision)?,
            text_projection: Linear::new_no_bias(c.text.hidden_size, c.projection_dim, vb.pp("text_projection"))?,
            visual_projection: Linear::new_no_bias(c.vision.hidden_size, c.projection_dim, vb.pp("visual_projection"))?,
            logit_scale: vb.get((), "logit_scale")?,
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The side of the square images the vision tower takes.
    pub fn image_size(&self) -> usize {
        self.config.vision.image_size
    }

    pub fn text_model(&self) -> &TextTransformer {
        &self.text
    }

    pub fn vision_model(&self) -> &VisionTransformer {
        &self.vision
    }

    /// The format the weights are in. Pixels are cast to it; embeddings come back in f32
    /// when it is a half-precision one ([`ops::composed::io_dtype`]).
    pub fn dtype(&self) -> DType {
        self.logit_scale.dtype()
    }

    fn out(&self, t: &Tensor) -> CResult<Tensor> {
        t.to_dtype(ops::composed::io_dtype(self.dtype()))
    }

    /// Projected (not normalised) text embeddings `[B, P]` for token ids `[B, T]`.
    pub fn encode_text(&self, ids: &Tensor) -> CResult<Tensor> {
        self.out(&self.text_projection.forward(&self.text.pooled(ids)?)?)
    }

    /// Projected (not normalised) image embeddings `[B, P]` for CLIP-normalised pixels.
    pub fn encode_image(&self, pixels: &Tensor) -> CResult<Tensor> {
        self.out(&self.visual_projection.forward(&self.vision.pooled(&pixels.to_dtype(self.dtype())?)?)?)
    }

    /// [`Self::encode_image`] together with the vision tower's last hidden states
    /// `[B, 1 + N, D]`, which training reads per patch.
    pub fn encode_image_and_patches(&self, pixels: &Tensor) -> CResult<(Tensor, Tensor)> {
        let hidden = self.vision.hidden_states(&pixels.to_dtype(self.dtype())?)?;
        Ok((self.out(&self.visual_projection.forward(&self.vision.pool(&hidden)?)?)?, self.out(&hidden)?))
    }

    /// The learned temperature, `exp(logit_scale)`.
    pub fn logit_scale(&self) -> CResult<f32> {
        self.logit_scale.to_dtype(DType::F32)?.exp()?.to_scalar()
    }

    /// Normalises pixels in `[0, 1]` with CLIP's mean and standard deviation.
    /// Channel by channel with constants, so nothing is copied to a GPU for it.
    pub fn normalize(pixels: &Tensor) -> CResult<Tensor> {
        let channels = (0..3)
            .map(|c| (pixels.narrow(1, c, 1)? - f64::from(CLIP_MEAN[c]))? / f64::from(CLIP_STD[c]))
            .collect::<CResult<Vec<_>>>()?;
        Tensor::cat(&channels, 1)
    }

    /// Cosine similarity of each image embedding row with each text embedding row.
    pub fn cosine(image: &Tensor, text: &Tensor) -> CResult<Tensor> {
        let a = ops::composed::l2_normalize(image)?;
        let b = ops::composed::l2_normalize(text)?;
        a.matmul(&b.t()?)
    }
}

/// The files of a Hugging Face CLIP folder.
#[derive(Debug, Clone)]
pub struct ClipFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

impl ClipFiles {
    /// Finds `config.json`, `model.safetensors` (or `pytorch_model.bin`) and
    /// `tokenizer.json` in `dir`.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            return Err(ModelError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "CLIP folder not found"),
            ));
        }
        if !dir.is_dir() {
            return Err(ModelError::format(
                dir,
                "expected a CLIP folder (config.json, model.safetensors, tokenizer.json), got a file",
            ));
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(ModelError::format(dir, "not a CLIP folder: config.json is missing"));
        }
        let weights =
            ["model.safetensors", "pytorch_model.bin"].iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(
                || ModelError::format(dir, "no CLIP weights: neither model.safetensors nor pytorch_model.bin"),
            )?;
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(ModelError::format(dir, "tokenizer.json is missing"));
        }
        Ok(Self { dir: dir.to_path_buf(), config, weights, tokenizer })
    }

    pub fn read_config(&self) -> Result<ClipConfig> {
        let text = crate::files::read_text_bounded(&self.config, crate::files::MAX_CONFIG_BYTES, "model config")?;
        ClipConfig::from_json(&text).map_err(|m| ModelError::config(&self.config, m))
    }
}

/// Loads a CLIP folder: the model in `dtype` on `device`, and its tokenizer.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<(Clip, ClipTokenizer)> {
    let files = ClipFiles::locate(dir)?;
    let config = files.read_config()?;
    let weights = Arc::new(WeightFile::open(&files.weights)?);
    if !weights.contains("text_model.embeddings.token_embedding.weight")
        && !weights.contains("vision_model.embeddings.class_embedding")
    {
        return Err(ModelError::format(
            &files.weights,
            "does not look like a CLIP model (no text_model.* or vision_model.* tensors)",
        ));
    }
    let (vb, report) = weights.var_builder("", dtype, device);
    let clip = report.finish(Clip::new(vb, &config))?;
    let tokenizer = ClipTokenizer::from_file(&files.tokenizer, config.text.max_position_embeddings)?;
    tokenizer.check_fits(config.text.vocab_size)?;
    Ok((clip, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ops::composed::{l2_normalize, spherical_dist};
    use crate::models::testing::check_gradient;
    use crate::models::weights::RandomBackend;

    fn tiny_config(act: Activation) -> ClipConfig {
        ClipConfig {
            text: TextConfig {
                vocab_size: 50,
                hidden_size: 8,
                intermediate_size: 16,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                max_position_embeddings: 6,
                activation: act,
                layer_norm_eps: 1e-5,
                eos_token_id: 49,
            },
            vision: VisionConfig {
                hidden_size: 8,
                intermediate_size: 16,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                image_size: 4,
                patch_size: 2,
                num_channels: 3,
                activation: act,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 4,
        }
    }

    #[test]
    fn image_path_gradient_matches_finite_differences() {
        for act in [Activation::QuickGelu, Activation::Gelu] {
            let clip = Clip::new(RandomBackend::var_builder(0.5, DType::F64), &tiny_config(act)).unwrap();
            let target = l2_normalize(&Tensor::new(&[[0.3f64, -0.2, 0.9, 0.1]], &Device::Cpu).unwrap()).unwrap();
            let pixels = (Tensor::arange(0f64, 48.0, &Device::Cpu).unwrap().reshape((1, 3, 4, 4)).unwrap() / 20.0)
                .unwrap()
                .sin()
                .unwrap();
            check_gradient("clip image path", &pixels, |x| {
                let e = l2_normalize(&clip.encode_image(&Clip::normalize(x)?)?)?;
                spherical_dist(&e, &target)?.mean_all()
            });
        }
    }

    #[test]
    fn image_embedding_with_patches_is_the_image_embedding_and_the_encoder_output() {
        let clip = Clip::new(RandomBackend::var_builder(0.5, DType::F32), &tiny_config(Activation::QuickGelu)).unwrap();
        let pixels = (Tensor::arange(0f32, 96.0, &Device::Cpu).unwrap().reshape((2, 3, 4, 4)).unwrap() / 30.0)
            .unwrap()
            .cos()
            .unwrap();
        let plain = clip.encode_image(&pixels).unwrap();
        let (embeds, hidden) = clip.encode_image_and_patches(&pixels).unwrap();
        // The class token, then (4/2)² patches, each of the tower's width.
        assert_eq!(hidden.dims(), [2, 5, 8]);
        let diff = (plain - embeds).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff == 0.0, "embeddings differ by {diff}");
    }

    #[test]
    fn text_pools_at_the_end_of_text_token() {
        assert_eq!(eot_position(&[49406, 5, 7, 49407, 0, 0], 49407), 3);
        // Legacy configs (eos 2) pool at the largest id.
        assert_eq!(eot_position(&[49406, 5, 7, 49407, 0, 0], 2), 3);
    }

    #[test]
    fn out_of_vocabulary_ids_are_an_error_not_a_panic() {
        let clip = Clip::new(RandomBackend::var_builder(0.5, DType::F32), &tiny_config(Activation::QuickGelu)).unwrap();
        let ids = Tensor::new(&[[1u32, 2, 60, 49]], &Device::Cpu).unwrap();
        let err = clip.encode_text(&ids).unwrap_err().to_string();
        assert!(err.contains("outside the model's vocabulary"), "{err}");
    }
}
