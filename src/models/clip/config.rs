//! CLIP's architecture, read from a Hugging Face `config.json`.

use serde::Deserialize;

use crate::models::ops::composed::Activation;

/// The text transformer's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    /// The end-of-text id the pooled output is taken at; `2` marks the legacy HF
    /// configs that pool at the largest id instead (the same place for CLIP's vocab).
    pub eos_token_id: u32,
}

/// The vision transformer's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
}

/// A whole CLIP model.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
}

impl ClipConfig {
    /// OpenAI's ViT-B/32, as `openai/clip-vit-base-patch32`'s `config.json` describes it.
    pub fn vit_b_32() -> Self {
        Self {
            text: TextConfig {
                vocab_size: 49408,
                hidden_size: 512,
                intermediate_size: 2048,
                num_hidden_layers: 12,
                num_attention_heads: 8,
                max_position_embeddings: 77,
                activation: Activation::QuickGelu,
                layer_norm_eps: 1e-5,
                eos_token_id: 2,
            },
            vision: VisionConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                image_size: 224,
                patch_size: 32,
                num_channels: 3,
                activation: Activation::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 512,
        }
    }
}

impl VisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

// The raw JSON, with the defaults transformers' CLIPTextConfig / CLIPVisionConfig use.
#[derive(Debug, Deserialize, Default)]
struct RawText {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    eos_token_id: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
struct RawVision {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    num_channels: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct RawClip {
    model_type: Option<String>,
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
    // Older configs carry the real values in these "_dict" overrides.
    text_config_dict: Option<RawText>,
    vision_config_dict: Option<RawVision>,
    projection_dim: Option<usize>,
}

fn activation(name: Option<&str>) -> Result<Activation, String> {
    match name.unwrap_or("quick_gelu") {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        other => Err(format!("unsupported hidden_act '{other}' (expected quick_gelu or gelu)")),
    }
}

fn positive(name: &str, v: usize) -> Result<usize, String> {
    if v == 0 {
        Err(format!("{name} must be positive"))
    } else {
        Ok(v)
    }
}

impl ClipConfig {
    /// Parses a `config.json`; errors are one-line descriptions without the path.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawClip = serde_json::from_str(text).map_err(|e| format!("invalid JSON ({e})"))?;
        if let Some(kind) = raw.model_type.as_deref() {
            if kind != "clip" {
                return Err(format!("model_type is '{kind}', expected 'clip'"));
            }
        }
        let (Some(t), Some(v)) = (raw.text_config, raw.vision_config) else {
            return Err("not a CLIP config: text_config and vision_config are required".into());
        };
        let td = raw.text_config_dict.unwrap_or_default();
        let vd = raw.vision_config_dict.unwrap_or_default();
        let text = TextConfig {
            vocab_size: positive("vocab_size", td.vocab_size.or(t.vocab_size).unwrap_or(49408))?,
            hidden_size: positive("text hidden_size", td.hidden_size.or(t.hidden_size).unwrap_or(512))?,
            intermediate_size: td.intermediate_size.or(t.intermediate_size).unwrap_or(2048),
            num_hidden_layers: td.num_hidden_layers.or(t.num_hidden_layers).unwrap_or(12),
            num_attention_heads: positive(
                "text num_attention_heads",
                td.num_attention_heads.or(t.num_attention_heads).unwrap_or(8),
            )?,
            max_position_embeddings: positive(
                "max_position_embeddings",
                td.max_position_embeddings.or(t.max_position_embeddings).unwrap_or(77),
            )?,
            activation: activation(td.hidden_act.as_deref().or(t.hidden_act.as_deref()))?,
            layer_norm_eps: td.layer_norm_eps.or(t.layer_norm_eps).unwrap_or(1e-5),
            eos_token_id: td.eos_token_id.or(t.eos_token_id).unwrap_or(49407),
        };
        let vision = VisionConfig {
            hidden_size: positive("vision hidden_size", vd.hidden_size.or(v.hidden_size).unwrap_or(768))?,
            intermediate_size: vd.intermediate_size.or(v.intermediate_size).unwrap_or(3072),
            num_hidden_layers: vd.num_hidden_layers.or(v.num_hidden_layers).unwrap_or(12),
            num_attention_heads: positive(
                "vision num_attention_heads",
                vd.num_attention_heads.or(v.num_attention_heads).unwrap_or(12),
            )?,
            image_size: positive("image_size", vd.image_size.or(v.image_size).unwrap_or(224))?,
            patch_size: positive("patch_size", vd.patch_size.or(v.patch_size).unwrap_or(32))?,
            num_channels: vd.num_channels.or(v.num_channels).unwrap_or(3),
            activation: activation(vd.hidden_act.as_deref().or(v.hidden_act.as_deref()))?,
            layer_norm_eps: vd.layer_norm_eps.or(v.layer_norm_eps).unwrap_or(1e-5),
        };
        if !text.hidden_size.is_multiple_of(text.num_attention_heads) {
            return Err("text hidden_size is not a multiple of num_attention_heads".into());
        }
        if !vision.hidden_size.is_multiple_of(vision.num_attention_heads) {
            return Err("vision hidden_size is not a multiple of num_attention_heads".into());
        }
        if !vision.image_size.is_multiple_of(vision.patch_size) {
            return Err("image_size is not a multiple of patch_size".into());
        }
        Ok(Self { text, vision, projection_dim: positive("projection_dim", raw.projection_dim.unwrap_or(512))? })
    }
}
