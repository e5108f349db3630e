//! The VQGAN generator: the taming-transformers first stage — Encoder, Decoder,
//! `quant_conv`, `post_quant_conv` and the quantizer (nearest-code `VectorQuantizer2`
//! or the Gumbel quantizer of the OpenImages f8-8192 model) — with the upstream weight
//! names. The decoder is differentiable end to end with respect to the latent.

pub mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Result as CResult, Tensor, D};
use candle_nn::VarBuilder;

pub use config::{DdConfig, QuantizerKind, VqganConfig};

use crate::models::error::{ModelError, Result};
use crate::models::nn::{Conv2d, GroupNorm};
use crate::models::ops::composed::{self, softmax_last_dim};
use crate::models::ops::{self, resnet, Path as OpPath};
use crate::models::weights::WeightFile;

fn normalize(groups: usize, channels: usize, vb: VarBuilder) -> CResult<GroupNorm> {
    GroupNorm::new(groups, channels, 1e-6, vb)
}

fn conv3(in_ch: usize, out_ch: usize, vb: VarBuilder) -> CResult<Conv2d> {
    Conv2d::new(in_ch, out_ch, 3, 1, 1, true, vb)
}

fn conv1(in_ch: usize, out_ch: usize, vb: VarBuilder) -> CResult<Conv2d> {
    Conv2d::new(in_ch, out_ch, 1, 1, 0, true, vb)
}

#[derive(Debug, Clone)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
    /// The same weights for the fused CPU op, when they are all frozen f32.
    fused: Option<resnet::ResnetWeights>,
}

impl ResnetBlock {
    fn new(in_ch: usize, out_ch: usize, groups: usize, vb: VarBuilder) -> CResult<Self> {
        let mut block = Self {
            norm1: normalize(groups, in_ch, vb.pp("norm1"))?,
            conv1: conv3(in_ch, out_ch, vb.pp("conv1"))?,
            norm2: normalize(groups, out_ch, vb.pp("norm2"))?,
            conv2: conv3(out_ch, out_ch, vb.pp("conv2"))?,
            nin_shortcut: if in_ch == out_ch { None } else { Some(conv1(in_ch, out_ch, vb.pp("nin_shortcut"))?) },
            fused: None,
        };
        block.fused = block.fused_weights();
        Ok(block)
    }

    fn fused_weights(&self) -> Option<resnet::ResnetWeights> {
        let shortcut = match &self.nin_shortcut {
            Some(s) => Some(s.weights()?),
            None => None,
        };
        resnet::ResnetWeights::new(
            self.norm1.weights(),
            self.conv1.weights()?,
            self.norm2.weights(),
            self.conv2.weights()?,
            shortcut,
        )
    }
}

impl Module for ResnetBlock {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        if let Some(fused) = &self.fused {
            // `fused` is made from frozen weights only; the fused op runs on the CPU.
            if x.device().is_cpu() && ops::path(x, &fused.tensors()) == OpPath::Frozen {
                return resnet::resnet_block(x, fused);
            }
        }
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

impl ResnetBlock {
    /// The block with circular padding (the fused op where it runs, as in `forward`).
    fn forward_circular(&self, x: &Tensor) -> CResult<Tensor> {
        if let Some(fused) = &self.fused {
            if x.device().is_cpu() && ops::path(x, &fused.tensors()) == OpPath::Frozen {
                return resnet::resnet_block_circular(x, fused);
            }
        }
        let h = self.conv1.forward_circular(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward_circular(&self.norm2.forward_silu(&h)?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

#[derive(Debug, Clone)]
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(ch: usize, groups: usize, vb: VarBuilder) -> CResult<Self> {
        Ok(Self {
            norm: normalize(groups, ch, vb.pp("norm"))?,
            q: conv1(ch, ch, vb.pp("q"))?,
            k: conv1(ch, ch, vb.pp("k"))?,
            v: conv1(ch, ch, vb.pp("v"))?,
            proj_out: conv1(ch, ch, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        let q = self.q.forward(&n)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?; // [B, HW, C]
        let k = self.k.forward(&n)?.reshape((b, c, h * w))?; // [B, C, HW]
        let v = self.v.forward(&n)?.reshape((b, c, h * w))?; // [B, C, HW]
        #[expect(clippy::cast_precision_loss, reason = "channel counts are small")]
        let scale = (c as f64).powf(-0.5);
        let weights = softmax_last_dim(&(q.matmul(&k)? * scale)?)?; // [B, HWq, HWk]
        let out = v.matmul(&weights.transpose(1, 2)?.contiguous()?)?.reshape((b, c, h, w))?;
        x + self.proj_out.forward(&out)?
    }
}

#[derive(Debug, Clone)]
struct Level {
    blocks: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    /// Downsample or upsample conv.
    resample: Option<Conv2d>,
}

impl Level {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.forward_padded(x, false)
    }

    /// The level's blocks, their convolutions padded circularly with `circular`.
    fn forward_padded(&self, x: &Tensor, circular: bool) -> CResult<Tensor> {
        let mut h = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            h = if circular { block.forward_circular(&h)? } else { block.forward(&h)? };
            if let Some(attn) = self.attns.get(i) {
                h = attn.forward(&h)?;
            }
        }
        Ok(h)
    }
}

#[derive(Debug, Clone)]
struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn new(ch: usize, groups: usize, vb: VarBuilder) -> CResult<Self> {
        Ok(Self {
            block_1: ResnetBlock::new(ch, ch, groups, vb.pp("block_1"))?,
            attn_1: AttnBlock::new(ch, groups, vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(ch, ch, groups, vb.pp("block_2"))?,
        })
    }
}

impl Module for Mid {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.block_2.forward(&self.attn_1.forward(&self.block_1.forward(x)?)?)
    }
}

/// The taming `Encoder`: image `[B, 3, H, W]` in `[-1, 1]` to `[B, z_channels, H/f, W/f]`.
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(vb: VarBuilder, c: &DdConfig) -> CResult<Self> {
        let levels = c.ch_mult.len();
        let mut curr_res = c.resolution;
        let mut down = Vec::with_capacity(levels);
        let mut block_in = c.ch;
        for (i, &mult) in c.ch_mult.iter().enumerate() {
            let vb_l = vb.pp("down").pp(i);
            block_in = c.ch * if i == 0 { 1 } else { c.ch_mult[i - 1] };
            let block_out = c.ch * mult;
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for j in 0..c.num_res_blocks {
                blocks.push(ResnetBlock::new(block_in, block_out, c.num_groups, vb_l.pp("block").pp(j))?);
                block_in = block_out;
                if c.attn_resolutions.contains(&curr_res) {
                    attns.push(AttnBlock::new(block_in, c.num_groups, vb_l.pp("attn").pp(j))?);
                }
            }
            let resample = if i + 1 == levels {
                None
            } else {
                curr_res /= 2;
                Some(Conv2d::new(block_in, block_in, 3, 2, 0, true, vb_l.pp("downsample").pp("conv"))?)
            };
            down.push(Level { blocks, attns, resample });
        }
        let z_out = if c.double_z { 2 * c.z_channels } else { c.z_channels };
        Ok(Self {
            conv_in: conv3(c.in_channels, c.ch, vb.pp("conv_in"))?,
            down,
            mid: Mid::new(block_in, c.num_groups, vb.pp("mid"))?,
            norm_out: normalize(c.num_groups, block_in, vb.pp("norm_out"))?,
            conv_out: conv3(block_in, z_out, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for level in &self.down {
            h = level.forward(&h)?;
            if let Some(conv) = &level.resample {
                // taming pads right and bottom by one, then convolves with stride 2.
                h = conv.forward(&h.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(D::Minus2, 0, 1)?)?;
            }
        }
        let h = self.mid.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// The taming `Decoder`: `[B, z_channels, h, w]` to an image `[B, 3, h·f, w·f]`, roughly in `[-1, 1]`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid: Mid,
    /// Indexed as upstream: `up[0]` is the finest level, run last.
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(vb: VarBuilder, c: &DdConfig) -> CResult<Self> {
        let levels = c.ch_mult.len();
        let mut block_in = c.ch * c.ch_mult[levels - 1];
        let mut curr_res = c.resolution >> (levels - 1);
        let conv_in = conv3(c.z_channels, block_in, vb.pp("conv_in"))?;
        let mid = Mid::new(block_in, c.num_groups, vb.pp("mid"))?;
        let mut up: Vec<Level> = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let vb_l = vb.pp("up").pp(i);
            let block_out = c.ch * c.ch_mult[i];
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for j in 0..=c.num_res_blocks {
                blocks.push(ResnetBlock::new(block_in, block_out, c.num_groups, vb_l.pp("block").pp(j))?);
                block_in = block_out;
                if c.attn_resolutions.contains(&curr_res) {
                    attns.push(AttnBlock::new(block_in, c.num_groups, vb_l.pp("attn").pp(j))?);
                }
            }
            let resample = if i == 0 {
                None
            } else {
                curr_res *= 2;
                Some(conv3(block_in, block_in, vb_l.pp("upsample").pp("conv"))?)
            };
            up.push(Level { blocks, attns, resample });
        }
        up.reverse();
        Ok(Self {
            conv_in,
            mid,
            up,
            norm_out: normalize(c.num_groups, block_in, vb.pp("norm_out"))?,
            conv_out: conv3(block_in, c.out_ch, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> CResult<Tensor> {
        let mut h = self.mid.forward(&self.conv_in.forward(z)?)?;
        for level in self.up.iter().rev() {
            h = level.forward(&h)?;
            if let Some(conv) = &level.resample {
                h = conv.forward_upsampled(&h)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

impl Decoder {
    /// The decoder with every padded convolution wrapping around the edges (PyTorch's
    /// `padding_mode="circular"`, as tiling notebooks set it): the image of a latent on a
    /// torus, which tiles without a seam.
    pub fn forward_circular(&self, z: &Tensor) -> CResult<Tensor> {
        let mid = &self.mid;
        let h = self.conv_in.forward_circular(z)?;
        let mut h = mid.block_2.forward_circular(&mid.attn_1.forward(&mid.block_1.forward_circular(&h)?)?)?;
        for level in self.up.iter().rev() {
            h = level.forward_padded(&h, true)?;
            if let Some(conv) = &level.resample {
                h = conv.forward_upsampled_circular(&h)?;
            }
        }
        self.conv_out.forward_circular(&self.norm_out.forward_silu(&h)?)
    }
}

/// The quantizer's weights.
#[derive(Debug, Clone)]
enum Quantizer {
    Nearest { codebook: Tensor },
    Gumbel { proj: Conv2d, codebook: Tensor },
}

/// A taming first stage: encode images to code indices, decode latents to images.
#[derive(Debug, Clone)]
pub struct Vqgan {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    quantizer: Quantizer,
    /// The codebook in the format latents are in ([`composed::io_dtype`]): in f32 when
    /// the weights are in half precision, so that latents, their nearest codes and the
    /// optimiser stay f32.
    codebook: Tensor,
    config: VqganConfig,
}

impl Vqgan {
    /// Builds the first stage; `vb` is already at the first stage's prefix.
    pub fn new(vb: VarBuilder, c: &VqganConfig) -> CResult<Self> {
        let dd = &c.ddconfig;
        let z_out = if dd.double_z { 2 * dd.z_channels } else { dd.z_channels };
        let q = vb.pp("quantize");
        let quantizer = match c.quantizer {
            QuantizerKind::Nearest => {
                Quantizer::Nearest { codebook: q.pp("embedding").get((c.n_embed, c.embed_dim), "weight")? }
            }
            QuantizerKind::Gumbel => Quantizer::Gumbel {
                proj: conv1(dd.z_channels, c.n_embed, q.pp("proj"))?,
                codebook: q.pp("embed").get((c.n_embed, c.embed_dim), "weight")?,
            },
        };
        let codebook = match &quantizer {
            Quantizer::Nearest { codebook } | Quantizer::Gumbel { codebook, .. } => {
                codebook.to_dtype(composed::io_dtype(codebook.dtype()))?
            }
        };
        Ok(Self {
            codebook,
            encoder: Encoder::new(vb.pp("encoder"), dd)?,
            decoder: Decoder::new(vb.pp("decoder"), dd)?,
            quant_conv: conv1(z_out, c.embed_dim, vb.pp("quant_conv"))?,
            post_quant_conv: conv1(c.embed_dim, dd.z_channels, vb.pp("post_quant_conv"))?,
            quantizer,
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &VqganConfig {
        &self.config
    }

    /// The codebook, `[n_embed, embed_dim]`, in the latents' format (f32 for a model in
    /// half precision).
    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    /// The format the weights are in; inputs are cast to it, and outputs come back in
    /// the codebook's.
    pub fn dtype(&self) -> DType {
        match &self.quantizer {
            Quantizer::Nearest { codebook } | Quantizer::Gumbel { codebook, .. } => codebook.dtype(),
        }
    }

    /// Encoder and `quant_conv`: the latent before quantisation, `[B, embed_dim, h, w]`.
    pub fn encode_prequant(&self, x: &Tensor) -> CResult<Tensor> {
        self.quant_conv.forward(&self.encoder.forward(&x.to_dtype(self.dtype())?)?)?.to_dtype(self.codebook.dtype())
    }

    /// The code indices `[B, h, w]` an image encodes to: the nearest codebook vector,
    /// or for the Gumbel quantizer the most likely code (its noise-free hard choice).
    pub fn encode_indices(&self, x: &Tensor) -> CResult<Tensor> {
        let h = self.encode_prequant(x)?;
        match &self.quantizer {
            Quantizer::Nearest { .. } => nearest_indices(&h, &self.codebook),
            Quantizer::Gumbel { proj, .. } => proj.forward(&h.to_dtype(self.dtype())?)?.argmax(1),
        }
    }

    /// An image `[B, 3, H, W]` in `[-1, 1]` to its quantised latent `[B, embed_dim, h, w]`.
    pub fn encode(&self, x: &Tensor) -> CResult<Tensor> {
        self.embed_indices(&self.encode_indices(x)?)
    }

    /// Code indices `[B, h, w]` to latents `[B, embed_dim, h, w]`.
    pub fn embed_indices(&self, indices: &Tensor) -> CResult<Tensor> {
        let (b, h, w) = indices.dims3()?;
        let flat = indices.flatten_all()?;
        let vectors = self.codebook().index_select(&flat, 0)?; // [B·h·w, C]
        vectors.reshape((b, h, w, self.config.embed_dim))?.permute((0, 3, 1, 2))?.contiguous()
    }

    /// Straight-through vector quantisation: the nearest codebook vectors in value, the
    /// identity in gradient.
    pub fn quantize_st(&self, z: &Tensor) -> CResult<Tensor> {
        let q = self.embed_indices(&nearest_indices(z, self.codebook())?)?;
        z + (q - z)?.detach()
    }

    /// `post_quant_conv` and the decoder: a latent to an image, roughly in `[-1, 1]`.
    pub fn decode(&self, z: &Tensor) -> CResult<Tensor> {
        let out = self.decoder.forward(&self.post_quant_conv.forward(&z.to_dtype(self.dtype())?)?)?;
        out.to_dtype(self.codebook.dtype())
    }

    /// [`Self::decode`] with the decoder's padding circular: a tile that continues across
    /// its own edges (`--tile`).
    pub fn decode_circular(&self, z: &Tensor) -> CResult<Tensor> {
        let out = self.decoder.forward_circular(&self.post_quant_conv.forward(&z.to_dtype(self.dtype())?)?)?;
        out.to_dtype(self.codebook.dtype())
    }
}

/// The index of the nearest codebook row for every latent position, `[B, h, w]`.
pub fn nearest_indices(z: &Tensor, codebook: &Tensor) -> CResult<Tensor> {
    let (b, c, h, w) = z.dims4()?;
    let flat = z.detach().permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
    // ‖z‖² + ‖e‖² − 2 z·e, as VectorQuantizer2 computes it.
    let zz = flat.sqr()?.sum_keepdim(1)?;
    let ee = codebook.sqr()?.sum(1)?.unsqueeze(0)?;
    let ze = flat.matmul(&codebook.t()?)?;
    let d = zz.broadcast_add(&ee)?.sub(&(ze * 2.0)?)?;
    d.argmin(1)?.reshape((b, h, w))
}

/// The files of a VQGAN: a checkpoint and its YAML.
#[derive(Debug, Clone)]
pub struct VqganFiles {
    pub checkpoint: PathBuf,
    pub config: PathBuf,
}

impl VqganFiles {
    /// The checkpoint and its YAML: `config` if given, else the `.yaml` with the
    /// checkpoint's stem beside it.
    pub fn locate(checkpoint: &Path, config: Option<&Path>) -> Result<Self> {
        if checkpoint.is_dir() {
            let hint = if checkpoint.join("config.json").is_file() { " (it looks like a CLIP folder)" } else { "" };
            return Err(ModelError::format(
                checkpoint,
                format!("is a folder, expected a VQGAN checkpoint (.ckpt or .safetensors){hint}"),
            ));
        }
        if !checkpoint.is_file() {
            return Err(ModelError::io(
                checkpoint,
                std::io::Error::new(std::io::ErrorKind::NotFound, "VQGAN checkpoint not found"),
            ));
        }
        let config = match config {
            Some(c) => c.to_path_buf(),
            None => {
                let beside = checkpoint.with_extension("yaml");
                if !beside.is_file() {
                    return Err(ModelError::config(
                        &beside,
                        "no YAML config beside the checkpoint (give one with --vqgan-config)",
                    ));
                }
                beside
            }
        };
        Ok(Self { checkpoint: checkpoint.to_path_buf(), config })
    }

    pub fn read_config(&self) -> Result<VqganConfig> {
        let text = crate::files::read_text_bounded(&self.config, crate::files::MAX_CONFIG_BYTES, "model config")?;
        VqganConfig::from_yaml(&text).map_err(|m| ModelError::config(&self.config, m))
    }
}

/// Loads a VQGAN first stage in `dtype` on `device`. The loss, discriminator and
/// perceptual weights, and a Net2Net model's transformer, are never read.
pub fn load(checkpoint: &Path, config: Option<&Path>, dtype: DType, device: &Device) -> Result<Vqgan> {
    let files = VqganFiles::locate(checkpoint, config)?;
    let cfg = files.read_config()?;
    let weights = Arc::new(WeightFile::open(&files.checkpoint)?);
    let mut prefix = cfg.weight_prefix.clone();
    // A first stage saved on its own (safetensors export) has no Net2Net prefix.
    if !prefix.is_empty()
        && !weights.contains(&format!("{prefix}decoder.conv_in.weight"))
        && weights.contains("decoder.conv_in.weight")
    {
        prefix.clear();
    }
    let signature = format!("{prefix}decoder.conv_in.weight");
    if !weights.contains(&signature) {
        let hint = if weights.contains("text_model.embeddings.token_embedding.weight") {
            "it is a CLIP model, not a VQGAN checkpoint".to_owned()
        } else {
            format!("does not look like a VQGAN checkpoint (no tensor '{signature}')")
        };
        return Err(ModelError::format(&files.checkpoint, hint));
    }
    let (vb, report) = weights.var_builder(&prefix, dtype, device);
    report.finish(Vqgan::new(vb, &cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::check_gradient;
    use crate::models::weights::RandomBackend;

    #[test]
    fn decoder_gradient_matches_finite_differences() {
        let cfg = VqganConfig {
            ddconfig: DdConfig {
                double_z: false,
                z_channels: 2,
                resolution: 8,
                in_channels: 3,
                out_ch: 3,
                ch: 32,
                ch_mult: vec![1, 1],
                num_res_blocks: 1,
                attn_resolutions: vec![4],
                num_groups: 32,
            },
            embed_dim: 2,
            n_embed: 4,
            quantizer: QuantizerKind::Nearest,
            weight_prefix: String::new(),
            target: String::new(),
        };
        let model = Vqgan::new(RandomBackend::var_builder(0.2, DType::F64), &cfg).unwrap();
        let z = (Tensor::arange(0f64, 32.0, &Device::Cpu).unwrap().reshape((1, 2, 4, 4)).unwrap() / 7.0)
            .unwrap()
            .cos()
            .unwrap();
        check_gradient("vqgan decoder", &z, |z| {
            let w = Tensor::arange(0f64, 192.0, z.device())?.reshape((1, 3, 8, 8))?.sin()?;
            model.decode(z)?.mul(&w)?.sum_all()
        });
    }
}
