//! The taming-transformers YAML that accompanies each VQGAN checkpoint.
//!
//! Three layouts occur: a `VQModel`, a `GumbelVQ` (the OpenImages f8-8192 model), and a
//! `Net2NetTransformer` (the coco, faceshq and sflckr checkpoints), whose
//! `first_stage_config` holds the VQGAN and whose weights sit under `first_stage_model.`.
//! Keys of the architecture are checked strictly: an unknown or missing key is an error.

use serde_norway::{Mapping, Value};

/// The `ddconfig` of the Encoder/Decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct DdConfig {
    pub double_z: bool,
    pub z_channels: usize,
    pub resolution: usize,
    pub in_channels: usize,
    pub out_ch: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    /// Groups of every GroupNorm: taming's 32, unless the YAML's `num_groups` (a
    /// clipcanvas extension, used by the shapes world) says otherwise.
    pub num_groups: usize,
}

/// Which quantizer the first stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizerKind {
    /// `VectorQuantizer2`: nearest codebook vector (`quantize.embedding.weight`).
    Nearest,
    /// `GumbelQuantize`: `quantize.proj` logits and `quantize.embed.weight`.
    Gumbel,
}

/// A first stage's architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct VqganConfig {
    pub ddconfig: DdConfig,
    pub embed_dim: usize,
    pub n_embed: usize,
    pub quantizer: QuantizerKind,
    /// Where the first stage's weights sit in the checkpoint: `""` or `"first_stage_model."`.
    pub weight_prefix: String,
    /// The `target` class named in the YAML.
    pub target: String,
}

impl VqganConfig {
    /// taming's ImageNet f16-16384 first stage (`vqgan_imagenet_f16_16384.yaml`).
    pub fn imagenet_f16_16384() -> Self {
        Self {
            ddconfig: DdConfig {
                double_z: false,
                z_channels: 256,
                resolution: 256,
                in_channels: 3,
                out_ch: 3,
                ch: 128,
                ch_mult: vec![1, 1, 2, 2, 4],
                num_res_blocks: 2,
                attn_resolutions: vec![16],
                num_groups: 32,
            },
            embed_dim: 256,
            n_embed: 16384,
            quantizer: QuantizerKind::Nearest,
            weight_prefix: String::new(),
            target: "taming.models.vqgan.VQModel".to_owned(),
        }
    }

    /// The spatial downsampling factor, `2^(len(ch_mult) − 1)`.
    pub fn downsample_factor(&self) -> usize {
        1 << (self.ddconfig.ch_mult.len() - 1)
    }

    /// Parses the YAML text; errors are one-line descriptions without the path.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        check_depth(text)?;
        let root: Value = serde_norway::from_str(text).map_err(|e| format!("invalid YAML ({e})"))?;
        let model = get(&root, "model", "the top level")?;
        let target = get_str(model, "target", "model")?;
        let params = get(model, "params", "model")?;
        match target.as_str() {
            "taming.models.vqgan.VQModel" => first_stage(params, QuantizerKind::Nearest, "", &target),
            "taming.models.vqgan.GumbelVQ" => first_stage(params, QuantizerKind::Gumbel, "", &target),
            "taming.models.cond_transformer.Net2NetTransformer" => {
                let fs = get(params, "first_stage_config", "model.params")?;
                let fs_target = get_str(fs, "target", "first_stage_config")?;
                let kind = match fs_target.as_str() {
                    "taming.models.vqgan.VQModel" => QuantizerKind::Nearest,
                    "taming.models.vqgan.GumbelVQ" => QuantizerKind::Gumbel,
                    other => return Err(format!("unsupported first stage target '{other}'")),
                };
                let fs_params = get(fs, "params", "first_stage_config")?;
                first_stage(fs_params, kind, "first_stage_model.", &target)
            }
            other => Err(format!(
                "unsupported model target '{other}' (expected taming.models.vqgan.VQModel, GumbelVQ or cond_transformer.Net2NetTransformer)"
            )),
        }
    }
}

/// The deepest nesting a model config may have (taming's configs, Net2Net ones
/// included, are under 10 levels deep).
const MAX_YAML_DEPTH: usize = 64;

/// Refuses YAML nested deeper than [`MAX_YAML_DEPTH`] before the parser sees it: the
/// YAML parser takes time quadratic in the depth (a 100 000-deep file took 54 s) before
/// serde's own limit of 128 levels applies. One pass, an estimate from above: block
/// nesting by indentation (the indents of the lines still open), compact entries opening
/// levels on one line (`- - x`, `? x`), and flow brackets open outside quotes and
/// comments.
fn check_depth(text: &str) -> Result<(), String> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        let mut compact = 0;
        if flow == 0 && !body.is_empty() && !body.starts_with('#') {
            let indent = line.len() - body.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut rest = body;
            while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
                compact += 1;
                rest = r.trim_start_matches(' ');
                if compact > MAX_YAML_DEPTH {
                    break;
                }
            }
        }
        let deepest_flow = scan_flow(body, &mut flow);
        if indents.len() + compact + deepest_flow > MAX_YAML_DEPTH {
            return Err(format!("invalid YAML (nested deeper than {MAX_YAML_DEPTH} levels at line {})", n + 1));
        }
    }
    Ok(())
}

/// Follows the flow brackets of one line (outside quotes and comments) from depth
/// `flow`, leaving the depth at the line's end there; the deepest it reached.
fn scan_flow(line: &str, flow: &mut usize) -> usize {
    let mut deepest = *flow;
    let mut quote: Option<char> = None;
    let mut after_space = true;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if after_space => break,
            (None, '[' | '{') => {
                *flow += 1;
                deepest = deepest.max(*flow);
                if deepest > MAX_YAML_DEPTH {
                    break;
                }
            }
            (None, ']' | '}') => *flow = flow.saturating_sub(1),
            _ => {}
        }
        after_space = c == ' ' || c == '\t';
    }
    deepest
}

const PARAM_KEYS: &[&str] = &[
    "embed_dim",
    "n_embed",
    "ddconfig",
    "lossconfig",
    "ckpt_path",
    "ignore_keys",
    "image_key",
    "colorize_nlabels",
    "monitor",
    "remap",
    "sane_index_shape",
    "kl_weight",
    "temperature_scheduler_config",
    "use_ema",
];

const DD_KEYS: &[&str] = &[
    "double_z",
    "z_channels",
    "resolution",
    "in_channels",
    "out_ch",
    "ch",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "dropout",
    "num_groups",
];

fn first_stage(params: &Value, quantizer: QuantizerKind, prefix: &str, target: &str) -> Result<VqganConfig, String> {
    let map = as_map(params, "params")?;
    check_keys(map, PARAM_KEYS, "params")?;
    let dd = get(params, "ddconfig", "params")?;
    check_keys(as_map(dd, "ddconfig")?, DD_KEYS, "ddconfig")?;
    let ch_mult = get_usize_list(dd, "ch_mult")?;
    if ch_mult.is_empty() || ch_mult.len() > 8 || ch_mult.contains(&0) {
        return Err("ddconfig.ch_mult must hold 1 to 8 positive numbers".into());
    }
    let ddconfig = DdConfig {
        double_z: get(dd, "double_z", "ddconfig")?.as_bool().ok_or("ddconfig.double_z must be true or false")?,
        z_channels: get_usize(dd, "z_channels")?,
        resolution: get_usize(dd, "resolution")?,
        in_channels: get_usize(dd, "in_channels")?,
        out_ch: get_usize(dd, "out_ch")?,
        ch: get_usize(dd, "ch")?,
        ch_mult,
        num_res_blocks: get_usize(dd, "num_res_blocks")?,
        attn_resolutions: get_usize_list(dd, "attn_resolutions")?,
        num_groups: match dd.get("num_groups") {
            None => 32,
            Some(_) => get_usize(dd, "num_groups")?,
        },
    };
    if ddconfig.num_groups == 0 {
        return Err("ddconfig.num_groups must be positive".into());
    }
    // taming's Normalize is GroupNorm(32): every channel count must split into the groups.
    for &m in &ddconfig.ch_mult {
        if !(ddconfig.ch * m).is_multiple_of(ddconfig.num_groups) {
            return Err(format!(
                "ddconfig: ch × ch_mult = {} is not a multiple of {} (GroupNorm groups)",
                ddconfig.ch * m,
                ddconfig.num_groups
            ));
        }
    }
    if !ddconfig.ch.is_multiple_of(32) {
        return Err(format!("ddconfig.ch = {} is not a multiple of 32 (GroupNorm groups)", ddconfig.ch));
    }
    let cfg = VqganConfig {
        embed_dim: get_usize(params, "embed_dim")?,
        n_embed: get_usize(params, "n_embed")?,
        ddconfig,
        quantizer,
        weight_prefix: prefix.to_owned(),
        target: target.to_owned(),
    };
    Ok(cfg)
}

fn as_map<'a>(v: &'a Value, what: &str) -> Result<&'a Mapping, String> {
    v.as_mapping().ok_or_else(|| format!("{what} must be a mapping"))
}

fn check_keys(map: &Mapping, known: &[&str], what: &str) -> Result<(), String> {
    for key in map.keys() {
        let Some(k) = key.as_str() else {
            return Err(format!("{what} has a non-text key"));
        };
        if !known.contains(&k) {
            return Err(format!("unknown key '{what}.{k}'"));
        }
    }
    Ok(())
}

fn get<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing key '{key}' in {what}"))
}

fn get_str(v: &Value, key: &str, what: &str) -> Result<String, String> {
    get(v, key, what)?.as_str().map(str::to_owned).ok_or_else(|| format!("{what}.{key} must be text"))
}

fn get_usize(v: &Value, key: &str) -> Result<usize, String> {
    let n = v
        .get(key)
        .ok_or_else(|| format!("missing key '{key}'"))?
        .as_u64()
        .ok_or_else(|| format!("'{key}' must be a non-negative whole number"))?;
    if n == 0 || n > 1 << 20 {
        return Err(format!("'{key}' = {n} is out of range"));
    }
    usize::try_from(n).map_err(|_| format!("'{key}' is too large"))
}

fn get_usize_list(v: &Value, key: &str) -> Result<Vec<usize>, String> {
    let seq = v
        .get(key)
        .ok_or_else(|| format!("missing key '{key}'"))?
        .as_sequence()
        .ok_or_else(|| format!("'{key}' must be a list"))?;
    seq.iter()
        .map(|x| {
            x.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| format!("'{key}' must hold whole numbers"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const F16: &str = "model:\n  target: taming.models.vqgan.VQModel\n  params:\n    embed_dim: 256\n    n_embed: 1024\n    ddconfig:\n      double_z: false\n      z_channels: 256\n      resolution: 256\n      in_channels: 3\n      out_ch: 3\n      ch: 128\n      ch_mult: [1,1,2,2,4]\n      num_res_blocks: 2\n      attn_resolutions: [16]\n      dropout: 0.0\n";

    #[test]
    fn parses_f16() {
        let c = VqganConfig::from_yaml(F16).expect("valid");
        assert_eq!(c.downsample_factor(), 16);
        assert_eq!(c.n_embed, 1024);
        assert_eq!(c.quantizer, QuantizerKind::Nearest);
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let err = VqganConfig::from_yaml(&F16.replace("dropout", "droput")).expect_err("unknown");
        assert!(err.contains("ddconfig.droput"), "{err}");
        let err = VqganConfig::from_yaml(&F16.replace("      z_channels: 256\n", "")).expect_err("missing");
        assert!(err.contains("z_channels"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = 100_000;
        for text in [
            format!("model: {}{}", "[".repeat(deep), "]".repeat(deep)),
            format!("model: {}", "{a: ".repeat(deep)),
            format!("model:\n  - {}x", "- ".repeat(deep)),
            (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect(),
        ] {
            let err = VqganConfig::from_yaml(&text).expect_err("deep");
            assert!(err.contains("nested deeper than 64 levels"), "{err}");
        }
        // Brackets in quotes and comments, and real configs, pass the check.
        let quoted = format!("{F16}      note: '{}' # {}\n", "[".repeat(100), "{".repeat(100));
        assert_eq!(check_depth(&quoted), Ok(()));
        assert_eq!(check_depth(&format!("a: {}1{}", "[".repeat(60), "]".repeat(60))), Ok(()));
        assert!(VqganConfig::from_yaml(F16).is_ok());
    }
}
