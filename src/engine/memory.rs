//! How much memory a run needs, estimated from the models' configs and the run's
//! settings before anything big is allocated, and whether this machine has it.
//!
//! candle aborts the process when an allocation fails, so a run too big for the
//! machine must be refused before it starts: `generate`, `bench` and the studio's
//! worker call [`check`] (through [`Nets::of_settings`] or the benchmark's configs)
//! before they load models or build a session. The estimate counts, in f32:
//!
//! - the weights of the VQGAN, CLIP and one-step model, counted from their configs;
//! - one optimisation step: the decoder's activations that the backward pass keeps,
//!   level by level (a resnet block keeps its first convolution's output and its
//!   output; an attention block its projections and the `HW×HW` score matrices), the
//!   gradients alive at the finest level on the way back, the image and its cutouts,
//!   and CLIP's activations for every cutout;
//! - the other phases, of which only the largest counts (they do not overlap): the
//!   nearest-code search (`positions × codebook` distances), encoding an init image,
//!   and decoding one-step candidates.
//!
//! A calibration factor covers what the count leaves out (allocator slack, kernels'
//! work buffers); docs/hardening.md records the estimate beside the peak resident
//! memory measured for several sizes and models. What is available is Linux's
//! `MemAvailable`, lowered to the cgroup's limit where one is set; elsewhere nothing
//! is refused. `CLIPCANVAS_MEMORY_LIMIT_BYTES` replaces it (for tests and for
//! operators who know better). On a GPU the activations live in its memory, which
//! candle reports as an error rather than an abort, so only CPU runs are checked.
//!
//! One file of about 800 lines, half of them tests: the count of each network's
//! activations, the search for what fits, and the tests that hold them against
//! measured peaks are one model of memory, read and changed together.

use std::path::Path;

use super::error::{EngineError, Result};
use super::generator::vqgan::rounded_canvas;
use super::loaded::{onestep_dir, resolve_models, Models};
use crate::models::clip::{ClipConfig, ClipFiles};
use crate::models::onestep::{OneStepConfig, OneStepFiles};
use crate::models::ops::composed::Activation;
use crate::models::vqgan::{VqganConfig, VqganFiles};
use crate::settings::{Augment, CutMethod, GeneratorSettings, RunSettings};

/// The environment variable that, set to a number of bytes, replaces the memory the
/// machine reports as available.
pub const LIMIT_VAR: &str = "CLIPCANVAS_MEMORY_LIMIT_BYTES";

/// Headroom over the count for what it leaves out (allocator slack, kernels' work
/// buffers, threads): with it the estimate was 1.1–1.25 times the peak measured for
/// models of real size and 1.1–2.4 times for the tiny ones (docs/hardening.md).
const CALIBRATION: f64 = 1.15;

/// The process itself beside the tensors: code, the tokenizer, buffers, threads.
const BASE_BYTES: f64 = 96.0 * 1024.0 * 1024.0;

/// The architectures a run uses.
#[derive(Debug, Clone)]
pub struct Nets {
    /// None for a CLIP alone (the pixel and Fourier generators need no VQGAN).
    pub vqgan: Option<VqganConfig>,
    pub clip: ClipConfig,
    /// More CLIPs scoring beside `clip`.
    pub extra_clips: Vec<ClipConfig>,
    pub onestep: Option<OneStepConfig>,
}

impl Nets {
    /// The configs of the models `settings` name, read from their small config files
    /// (no weights are read).
    pub fn of_settings(settings: &RunSettings) -> Result<Self> {
        let source = resolve_models(settings)?;
        let vqgan = match &source.vqgan {
            Some(path) => Some(VqganFiles::locate(path, source.vqgan_config.as_deref())?.read_config()?),
            None => None,
        };
        let clip = ClipFiles::locate(&source.clip)?.read_config()?;
        let extra_clips =
            source.extra_clips.iter().map(|dir| Ok(ClipFiles::locate(dir)?.read_config()?)).collect::<Result<_>>()?;
        let onestep = match onestep_dir(settings, &source)? {
            Some(dir) => Some(OneStepFiles::locate(&dir)?.read_config()?),
            None => None,
        };
        Ok(Self { vqgan, clip, extra_clips, onestep })
    }

    /// The configs of loaded models.
    pub fn of_models(models: &Models) -> Self {
        Self {
            vqgan: models.vqgan.as_ref().map(|v| v.config().clone()),
            clip: models.clip.config().clone(),
            extra_clips: models.extra_clips.iter().map(|(c, _)| c.config().clone()).collect(),
            onestep: models.onestep.as_ref().map(|o| o.config().clone()),
        }
    }

    /// The weights' bytes (f32).
    pub fn weight_bytes(&self) -> f64 {
        let onestep = self.onestep.as_ref().map_or(0.0, onestep_params);
        let vqgan = self.vqgan.as_ref().map_or(0.0, vqgan_params);
        let clips: f64 = std::iter::once(&self.clip).chain(&self.extra_clips).map(clip_params).sum();
        4.0 * (vqgan + clips + onestep)
    }

    /// The VQGAN's downsampling factor (16, the common one, without a VQGAN: the step
    /// sizes are searched in).
    pub fn factor(&self) -> usize {
        self.vqgan.as_ref().map_or(16, VqganConfig::downsample_factor)
    }
}

/// A run's estimated peak memory, in bytes, by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The models' weights.
    pub weights: f64,
    /// The largest phase of the run (a step, the code search, encoding, drafting),
    /// calibrated, with the process's own share.
    pub work: f64,
}

impl Estimate {
    /// The whole peak; without the weights when they are loaded already.
    pub fn bytes(&self, weights_loaded: bool) -> u64 {
        let total = if weights_loaded { self.work } else { self.work + self.weights };
        to_bytes(total)
    }
}

#[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to u64's range first")]
fn to_bytes(v: f64) -> u64 {
    if v.is_nan() {
        u64::MAX
    } else {
        v.clamp(0.0, 1.8e19) as u64
    }
}

#[expect(clippy::cast_precision_loss, reason = "sizes far below 2^52")]
fn f(v: usize) -> f64 {
    v as f64
}

/// The canvas a run of `settings` gets: its size rounded down to the VQGAN's factor
/// (at least one token each way).
pub fn canvas(vqgan: &VqganConfig, width: usize, height: usize) -> (usize, usize) {
    // A side below the factor (refused when the run starts) is counted as one token.
    let fac = vqgan.downsample_factor().max(1);
    rounded_canvas(fac, width.max(fac), height.max(fac)).unwrap_or((fac, fac))
}

/// The canvas of a run of `settings`: the VQGAN's rounded down to its factor, the
/// other generators' as asked.
pub fn run_canvas(nets: &Nets, settings: &RunSettings) -> (usize, usize) {
    match (&settings.generator, &nets.vqgan) {
        (GeneratorSettings::Vqgan, Some(vqgan)) => canvas(vqgan, settings.width, settings.height),
        _ => (settings.width.max(1), settings.height.max(1)),
    }
}

/// The estimated peak memory of a run of `settings` on `nets`.
pub fn estimate(nets: &Nets, settings: &RunSettings) -> Estimate {
    // The VQGAN when the run draws with it (a run that asks for it without one fails
    // when it loads its models).
    let vqgan = nets.vqgan.as_ref().filter(|_| settings.generator.is_vqgan());
    let (width, height) = run_canvas(nets, settings);
    let fac = nets.factor();
    let latent = f(width / fac) * f(height / fac);
    let pixels = f(width) * f(height);
    let code_search = vqgan.map_or(0.0, |v| 4.0 * latent * f(v.n_embed));
    let render = match settings.generator {
        GeneratorSettings::Vqgan => vqgan.map_or(0.0, |v| decoder_step(v, latent)),
        // The two gathers and their gradients.
        GeneratorSettings::Pixel { .. } => 4.0 * 3.0 * pixels,
        // The transform's constant matrices; the scaled half spectra, their row
        // transforms and gradients; the image, normalised, mixed, and their gradients.
        GeneratorSettings::Fft(_) => {
            let half = f(height) * f(width / 2 + 1);
            2.0 * f(height) * f(height) + 2.0 * f(width / 2 + 1) * f(width) + 12.0 * 3.0 * half + 8.0 * 3.0 * pixels
        }
    };
    // Each mask of masked region prompts is one more batch of cutouts through CLIP,
    // kept for the backward pass like the first.
    // Every CLIP scores its own cutouts, all kept for the one backward pass.
    let passes = f(1 + settings.region_passes());
    let perceive: f64 = std::iter::once(&nets.clip)
        .chain(&nets.extra_clips)
        .map(|clip| image_and_cutouts(clip, settings, pixels) + clip_step(clip, settings))
        .sum();
    let step = render + passes * perceive;
    let encode = match vqgan {
        Some(v) if settings.init_image.is_some() || settings.init_noise != crate::settings::InitNoise::Codes => {
            encoder_forward(v, latent)
        }
        _ => 0.0,
    };
    let draft = match (&nets.onestep, &settings.one_step, vqgan) {
        (Some(one), Some(_), Some(v)) => drafting(nets, v, one, settings),
        _ => 0.0,
    };
    let floats = step.max(code_search).max(encode).max(draft);
    Estimate { weights: nets.weight_bytes(), work: 4.0 * floats * CALIBRATION + BASE_BYTES }
}

/// The decoder's levels from the finest: (channels, pixels per latent position, whether
/// its blocks have attention).
fn levels(c: &VqganConfig) -> Vec<(f64, f64, bool)> {
    let dd = &c.ddconfig;
    let n = dd.ch_mult.len();
    dd.ch_mult
        .iter()
        .enumerate()
        .map(|(i, &mult)| {
            let scale = f(1 << (n - 1 - i));
            (f(dd.ch * mult), scale * scale, dd.attn_resolutions.contains(&(dd.resolution >> i)))
        })
        .collect()
}

/// Floats an attention block over `c` channels and `px` positions keeps for the
/// backward pass: the normalised input, queries (and their transposed copy), keys,
/// values, output and projection; and seven `px×px` matrices (the scores, scaled,
/// shifted, exponentiated, normalised and transposed, as measured: 6.8).
fn attention_kept(c: f64, px: f64) -> f64 {
    8.0 * c * px + 7.0 * px * px
}

/// One step's decoder: what the forward pass keeps for the backward pass, and the
/// gradients alive at once on the way back.
fn decoder_step(c: &VqganConfig, latent: f64) -> f64 {
    let dd = &c.ddconfig;
    let lv = levels(c);
    let Some(&(top_c, _, _)) = lv.last() else { return 0.0 };
    let blocks = f(dd.num_res_blocks + 1);
    // The latent, its quantised copy, post_quant_conv, conv_in; the middle's two resnet
    // blocks (each keeps its first convolution's output and its output) and attention.
    let mut kept = (4.0 * f(c.embed_dim) + f(dd.z_channels) + top_c) * latent
        + 4.0 * top_c * latent
        + attention_kept(top_c, latent);
    let mut largest_attention = latent;
    for (i, &(ch, scale, attn)) in lv.iter().enumerate() {
        let px = latent * scale;
        kept += blocks * 2.0 * ch * px;
        if attn {
            kept += blocks * attention_kept(ch, px);
            largest_attention = largest_attention.max(px);
        }
        if i > 0 {
            // The upsampled input of the upsampling convolution and its output.
            kept += 2.0 * ch * px * 4.0;
        }
    }
    let (fine_c, fine_scale, _) = lv[0];
    let fine = latent * fine_scale;
    // norm_out + SiLU and conv_out.
    kept += fine_c * fine + f(dd.out_ch) * fine;
    // On the way back: the block's output and input gradients and its two inner ones,
    // and the convolution kernels' work buffers; an attention's score gradients (eight
    // matrices, as measured: 7.9).
    let back = 6.0 * fine_c * fine + 8.0 * largest_attention * largest_attention;
    kept + back
}

/// Copies of a cutout an augmentation makes and keeps (or holds at once on the way
/// back), counted from their tensor ops and checked against measurements: a warp
/// gathers four taps per channel through an index as large (and scatters them back).
fn augment_copies(a: Augment) -> f64 {
    match a {
        Augment::Affine | Augment::Perspective => 30.0,
        Augment::Jitter => 16.0,
        Augment::Erase | Augment::Blur => 6.0,
        Augment::Flip | Augment::Noise => 4.0,
    }
}

/// The image (scaled, clamped, the smoothness loss) and the cutouts: resampled crops,
/// their concatenation and normalised copy, and what each augmentation adds.
fn image_and_cutouts(clip: &ClipConfig, s: &RunSettings, pixels: f64) -> f64 {
    let side = f(clip.vision.image_size);
    let pooled = if s.cut_method == CutMethod::Pooled { 4.0 * 3.0 * pixels } else { 0.0 };
    let copies = 8.0 + s.augments.iter().map(|&a| augment_copies(a)).sum::<f64>();
    8.0 * 3.0 * pixels + pooled + copies * f(s.cutn) * 3.0 * side * side
}

/// CLIP's vision tower over `cutn` cutouts: per layer what is kept for the backward
/// pass, and one layer's gradients on the way back. A QuickGELU layer runs on the CPU as
/// one op (`ops::encoder_layer`) that keeps its input, queries/keys/values, attention
/// probabilities, first residual sum and MLP pre-activation; a GELU one as separate
/// ops, whose graph also holds the layer norms' outputs, the attention output, the
/// projections and the activation.
fn clip_step(clip: &ClipConfig, s: &RunSettings) -> f64 {
    let v = &clip.vision;
    let tokens = f((v.image_size / v.patch_size.max(1)).pow(2) + 1);
    let (d, inner, heads) = (f(v.hidden_size), f(v.intermediate_size), f(v.num_attention_heads));
    let layer = if v.activation == Activation::QuickGelu {
        5.0 * tokens * d + tokens * inner + heads * tokens * tokens
    } else {
        10.0 * tokens * d + 2.0 * tokens * inner + heads * tokens * tokens
    };
    let back = 4.0 * tokens * d + 2.0 * tokens * inner + 2.0 * heads * tokens * tokens;
    f(s.cutn) * (f(v.num_hidden_layers) * layer + back + 3.0 * tokens * d)
}

/// Encoding an image (an init image or noise) without gradients: a resnet block's
/// input, output and two inner tensors at the finest level, and an attention's scores.
fn encoder_forward(c: &VqganConfig, latent: f64) -> f64 {
    let lv = levels(c);
    let Some(&(fine_c, fine_scale, _)) = lv.first() else { return 0.0 };
    let largest_attention =
        lv.iter().filter(|(_, _, attn)| *attn).map(|(_, scale, _)| latent * scale).fold(latent, f64::max);
    5.0 * fine_c * latent * fine_scale + 4.0 * largest_attention * largest_attention + 4.0 * latent * f(c.n_embed)
}

/// One-step drafts: the sampler's key/value cache and logits, then the candidates
/// decoded in chunks of about a million pixels (without gradients) and ranked by CLIP.
fn drafting(nets: &Nets, vqgan: &VqganConfig, one: &OneStepConfig, s: &RunSettings) -> f64 {
    let candidates = f(s.one_step.as_ref().map_or(1, |o| o.candidates));
    let cells = f(one.cells() + 1);
    let sampler = candidates * (2.0 * f(one.layers) * cells * f(one.width) + 4.0 * f(one.n_codes));
    let fac = vqgan.downsample_factor();
    let (w, h) = canvas(vqgan, s.width, s.height);
    let image = f(w) * f(h);
    let chunk = (1_048_576.0 / image).floor().clamp(1.0, candidates);
    let latent = f(w / fac) * f(h / fac);
    let decode = chunk * encoder_forward(vqgan, latent);
    let side = f(nets.clip.vision.image_size);
    sampler + decode + candidates * 3.0 * image + chunk * 4.0 * 3.0 * side * side
}

fn conv(cin: usize, cout: usize, k: usize) -> f64 {
    f(cin * cout * k * k + cout)
}

fn resnet(cin: usize, cout: usize) -> f64 {
    let shortcut = if cin == cout { 0.0 } else { conv(cin, cout, 1) };
    f(2 * cin) + conv(cin, cout, 3) + f(2 * cout) + conv(cout, cout, 3) + shortcut
}

fn attention(c: usize) -> f64 {
    f(2 * c) + 4.0 * conv(c, c, 1)
}

/// The first stage's parameters: encoder, decoder, the two 1×1 convolutions and the
/// codebook (with the Gumbel quantizer's projection).
fn vqgan_params(c: &VqganConfig) -> f64 {
    let dd = &c.ddconfig;
    let n = dd.ch_mult.len();
    let top = dd.ch * dd.ch_mult.last().copied().unwrap_or(1);
    let mid = 2.0 * resnet(top, top) + attention(top);
    let z_out = if dd.double_z { 2 * dd.z_channels } else { dd.z_channels };
    // Encoder.
    let mut p = conv(dd.in_channels, dd.ch, 3) + mid + f(2 * top) + conv(top, z_out, 3);
    let mut block_in = dd.ch;
    for (i, &mult) in dd.ch_mult.iter().enumerate() {
        let out = dd.ch * mult;
        for _ in 0..dd.num_res_blocks {
            p += resnet(block_in, out);
            block_in = out;
            if dd.attn_resolutions.contains(&(dd.resolution >> i)) {
                p += attention(out);
            }
        }
        if i + 1 < n {
            p += conv(out, out, 3);
        }
    }
    // Decoder.
    p += conv(dd.z_channels, top, 3) + mid;
    let mut block_in = top;
    for i in (0..n).rev() {
        let out = dd.ch * dd.ch_mult[i];
        for _ in 0..=dd.num_res_blocks {
            p += resnet(block_in, out);
            block_in = out;
            if dd.attn_resolutions.contains(&(dd.resolution >> i)) {
                p += attention(out);
            }
        }
        if i > 0 {
            p += conv(out, out, 3);
        }
    }
    p += f(2 * dd.ch * dd.ch_mult[0]) + conv(dd.ch * dd.ch_mult[0], dd.out_ch, 3);
    let quantizer = match c.quantizer {
        crate::models::vqgan::QuantizerKind::Nearest => 0.0,
        crate::models::vqgan::QuantizerKind::Gumbel => conv(dd.z_channels, c.n_embed, 1),
    };
    p + conv(z_out, c.embed_dim, 1) + conv(c.embed_dim, dd.z_channels, 1) + f(c.n_embed * c.embed_dim) + quantizer
}

/// A pre-LN transformer layer of width `d` and MLP width `inner`.
fn transformer_layer(d: usize, inner: usize) -> f64 {
    f(4 * (d * d + d) + 4 * d + 2 * d * inner + inner + d)
}

fn clip_params(c: &ClipConfig) -> f64 {
    let t = &c.text;
    let v = &c.vision;
    let text = f((t.vocab_size + t.max_position_embeddings) * t.hidden_size)
        + f(t.num_hidden_layers) * transformer_layer(t.hidden_size, t.intermediate_size)
        + f(2 * t.hidden_size + t.hidden_size * c.projection_dim);
    let patches = (v.image_size / v.patch_size.max(1)).pow(2) + 1;
    let vision = f(v.num_channels * v.patch_size * v.patch_size * v.hidden_size)
        + f((patches + 1) * v.hidden_size)
        + f(v.num_hidden_layers) * transformer_layer(v.hidden_size, v.intermediate_size)
        + f(4 * v.hidden_size + v.hidden_size * c.projection_dim);
    text + vision
}

fn onestep_params(c: &OneStepConfig) -> f64 {
    f(c.n_codes * c.width + (c.cells() + 1) * c.width + c.clip_dim * c.width)
        + f(c.layers) * transformer_layer(c.width, c.mlp)
        + f(c.width * c.n_codes)
}

/// Memory this process may still use, and where the figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    pub source: &'static str,
}

/// What is available: [`LIMIT_VAR`] when set; on Linux `MemAvailable`, lowered to
/// what the cgroup's limit leaves; elsewhere unknown (`None`: nothing is refused).
pub fn available() -> Result<Option<Available>> {
    if let Some(v) = std::env::var_os(LIMIT_VAR) {
        let text = v.to_string_lossy();
        let bytes = text.trim().parse::<u64>().map_err(|_| {
            EngineError::Input(format!("{LIMIT_VAR} must be a whole number of bytes, got {:?}", text.trim()))
        })?;
        return Ok(Some(Available { bytes, source: LIMIT_VAR }));
    }
    Ok(system_available())
}

#[cfg(target_os = "linux")]
fn system_available() -> Option<Available> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = field(&meminfo, "MemAvailable:")?;
    let mut found = Available { bytes: kb.saturating_mul(1024), source: "MemAvailable" };
    if let Some(left) = cgroup_left() {
        if left < found.bytes {
            found = Available { bytes: left, source: "the cgroup's memory limit" };
        }
    }
    Some(found)
}

#[cfg(not(target_os = "linux"))]
fn system_available() -> Option<Available> {
    None
}

/// A `name value` line's number (`/proc/meminfo`, cgroup `memory.stat`).
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What the process's cgroup still allows: its limit less its usage, page cache it can
/// drop not counted as used. `None` without a limit (or where it cannot be read).
#[cfg(target_os = "linux")]
fn cgroup_left() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // cgroup v2 (`0::/path`), then v1's memory controller (`N:memory:/path`); a
    // container usually sees its own group at the mount's root.
    let v2 = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/");
    let v1 = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p)).unwrap_or("/");
    let candidates = [
        (format!("/sys/fs/cgroup{v2}"), "memory.max", "memory.current", "inactive_file "),
        ("/sys/fs/cgroup".to_owned(), "memory.max", "memory.current", "inactive_file "),
        (
            format!("/sys/fs/cgroup/memory{v1}"),
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file ",
        ),
        ("/sys/fs/cgroup/memory".to_owned(), "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file "),
    ];
    for (dir, limit, usage, inactive) in candidates {
        let dir = Path::new(&dir);
        let Some(limit) = read_u64(&dir.join(limit)) else { continue };
        // "max" (v2) does not parse; v1 says "no limit" with a number near 2^63.
        if limit >= 1 << 60 {
            return None;
        }
        let used = read_u64(&dir.join(usage)).unwrap_or(0);
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        let cache = field(&stat, inactive).unwrap_or(0);
        return Some(limit.saturating_sub(used.saturating_sub(cache)));
    }
    None
}

/// Bytes as "1.2 GB", "340 MB" or "12 B", rounded to nearest.
pub fn human(bytes: u64) -> String {
    human_rounded(bytes, f64::round)
}

/// [`human`], rounded with `round` in the last digit shown: up for what a run needs,
/// down for what is available, so the two never read the same when one exceeds the
/// other.
fn human_rounded(bytes: u64, round: fn(f64) -> f64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "for display")]
    let b = bytes as f64;
    let (value, unit, decimals) = if b >= 1e14 {
        (b / 1e12, "TB", 0)
    } else if b >= 1e12 {
        (b / 1e12, "TB", 1)
    } else if b >= 1e9 {
        (b / 1e9, "GB", 1)
    } else if b >= 1e6 {
        (b / 1e6, "MB", 0)
    } else {
        return format!("{bytes} B");
    };
    let scale = if decimals == 1 { 10.0 } else { 1.0 };
    format!("{:.*} {unit}", decimals, round(value * scale) / scale)
}

/// The largest canvas of `settings`' aspect, in multiples of the VQGAN's factor and no
/// larger than asked, whose run fits in `limit` bytes.
pub fn largest_size(nets: &Nets, settings: &RunSettings, limit: u64, weights_loaded: bool) -> Option<(usize, usize)> {
    let fac = nets.factor();
    let (w, h) = run_canvas(nets, settings);
    let (long, short) = (w.max(h) / fac, w.min(h) / fac);
    if long == 0 {
        return None;
    }
    let fits = |toks_long: usize| {
        let toks_short = (toks_long * short / long).max(1);
        let (tw, th) = if w >= h { (toks_long, toks_short) } else { (toks_short, toks_long) };
        let s = RunSettings { width: tw * fac, height: th * fac, ..settings.clone() };
        (estimate(nets, &s).bytes(weights_loaded) <= limit).then_some((tw * fac, th * fac))
    };
    // The estimate grows with the size: the largest fitting side by bisection.
    let mut best = fits(1)?;
    let (mut lo, mut hi) = (1, long);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match fits(mid) {
            Some(size) => {
                best = size;
                lo = mid;
            }
            None => hi = mid - 1,
        }
    }
    Some(best)
}

/// The largest cutout count below `settings`' that fits in `limit` bytes at its size.
pub fn largest_cutn(nets: &Nets, settings: &RunSettings, limit: u64, weights_loaded: bool) -> Option<usize> {
    let fits = |cutn: usize| estimate(nets, &RunSettings { cutn, ..settings.clone() }).bytes(weights_loaded) <= limit;
    if settings.cutn <= 1 || !fits(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, settings.cutn - 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// Refuses a run of `settings` on `nets` that will not fit in the memory available
/// (with the weights counted unless they are loaded already), with one line naming the
/// estimate, what is available, and the largest size (or cutout count) that fits.
pub fn check(nets: &Nets, settings: &RunSettings, weights_loaded: bool) -> Result<()> {
    let Some(avail) = available()? else { return Ok(()) };
    match refusal(nets, settings, avail, weights_loaded) {
        Some(why) => Err(EngineError::Memory(why)),
        None => Ok(()),
    }
}

/// [`check`]'s line for a run that does not fit in `avail`; `None` when it fits.
fn refusal(nets: &Nets, settings: &RunSettings, avail: Available, weights_loaded: bool) -> Option<String> {
    let need = estimate(nets, settings).bytes(weights_loaded);
    if need <= avail.bytes {
        return None;
    }
    let (w, h) = run_canvas(nets, settings);
    Some(format!(
        "a {w}x{h} run with {} cutouts needs about {} of memory and {} is available ({}); {}",
        settings.cutn,
        human_rounded(need, f64::ceil),
        human_rounded(avail.bytes, f64::floor),
        avail.source,
        advice(nets, settings, avail.bytes, weights_loaded)
    ))
}

/// What fits in `limit`: the largest size with the asked cutouts, and the most cutouts
/// at the asked size; failing both, the largest size with half, a quarter… of the
/// cutouts; failing that, what the smallest run needs.
fn advice(nets: &Nets, settings: &RunSettings, limit: u64, weights_loaded: bool) -> String {
    let (w, h) = run_canvas(nets, settings);
    let cutn = settings.cutn;
    let size = largest_size(nets, settings, limit, weights_loaded);
    match (size, largest_cutn(nets, settings, limit, weights_loaded)) {
        (Some((sw, sh)), Some(n)) => return format!("{sw}x{sh} fits with {cutn} cutouts, or {w}x{h} with {n}"),
        (Some((sw, sh)), None) => return format!("{sw}x{sh} fits with {cutn} cutouts"),
        (None, Some(n)) => return format!("{w}x{h} fits with {n} cutouts"),
        (None, None) => {}
    }
    let mut fewer = cutn / 2;
    while fewer > 0 {
        let s = RunSettings { cutn: fewer, ..settings.clone() };
        if let Some((sw, sh)) = largest_size(nets, &s, limit, weights_loaded) {
            return format!("{sw}x{sh} fits with {fewer} cutouts");
        }
        fewer /= 2;
    }
    let least = RunSettings { width: 1, height: 1, cutn: 1, ..settings.clone() };
    format!(
        "even the smallest run of these models needs {}",
        human_rounded(estimate(nets, &least).bytes(weights_loaded), f64::ceil)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use candle_core::{DType, Device, Shape, Tensor};
    use candle_nn::var_builder::SimpleBackend;
    use candle_nn::VarBuilder;

    use super::*;
    use crate::models::clip::Clip;
    use crate::models::vqgan::Vqgan;

    fn fixture(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
    }

    fn tiny_nets() -> Nets {
        let settings = RunSettings {
            vqgan: Some(fixture("vqgan-tiny/model.ckpt")),
            clip: Some(fixture("clip-tiny")),
            ..RunSettings::default()
        };
        Nets::of_settings(&settings).expect("the fixture models' configs")
    }

    fn full_nets() -> Nets {
        Nets {
            vqgan: Some(VqganConfig::imagenet_f16_16384()),
            clip: ClipConfig::vit_b_32(),
            extra_clips: Vec::new(),
            onestep: None,
        }
    }

    fn run(width: usize, height: usize, cutn: usize) -> RunSettings {
        RunSettings { width, height, cutn, ..RunSettings::default() }
    }

    /// Counts the values of every weight a model asks for, and hands out zeros that
    /// take no memory (one value, broadcast).
    struct Counting(Arc<AtomicUsize>);

    impl SimpleBackend for Counting {
        fn get(
            &self,
            s: Shape,
            _: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0.fetch_add(s.elem_count(), Ordering::Relaxed);
            Tensor::zeros((), dtype, dev)?.broadcast_as(s)
        }

        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("no shape for {name}")
        }

        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    fn counted(build: impl FnOnce(VarBuilder<'static>)) -> f64 {
        let n = Arc::new(AtomicUsize::new(0));
        build(VarBuilder::from_backend(Box::new(Counting(Arc::clone(&n))), DType::F32, Device::Cpu));
        f(n.load(Ordering::Relaxed))
    }

    #[test]
    fn the_weights_counted_from_the_configs_are_the_ones_the_models_load() {
        for nets in [full_nets(), tiny_nets()] {
            let vqgan = counted(|vb| {
                Vqgan::new(vb, nets.vqgan.as_ref().expect("a vqgan")).expect("vqgan");
            });
            let ours = vqgan_params(nets.vqgan.as_ref().expect("a vqgan"));
            assert!((ours - vqgan).abs() < 1.0, "{ours} vs {vqgan}");
            let clip = counted(|vb| {
                Clip::new(vb, &nets.clip).expect("clip");
            });
            // CLIP's position ids and logit scale are not weights the count needs.
            let ours = clip_params(&nets.clip);
            assert!((ours - clip).abs() <= 0.001 * clip, "{ours} vs {clip}");
        }
        let one = OneStepConfig::default();
        let onestep = counted(|vb| {
            crate::models::onestep::OneStep::new(vb, &one).expect("onestep");
        });
        assert!((onestep_params(&one) - onestep).abs() <= 0.01 * onestep, "{} vs {onestep}", onestep_params(&one));
    }

    #[test]
    fn the_estimate_grows_with_the_size_and_the_cutouts() {
        for nets in [full_nets(), tiny_nets()] {
            let fac = nets.factor();
            let mut last = 0;
            for side in [fac, 4 * fac, 16 * fac, 64 * fac, 8192 / fac * fac] {
                let b = estimate(&nets, &run(side, side, 8)).bytes(false);
                assert!(b > last, "{side}: {b} after {last}");
                last = b;
            }
            let mut last = 0;
            for cutn in [1, 2, 8, 32, 128, 1024] {
                let b = estimate(&nets, &run(16 * fac, 16 * fac, cutn)).bytes(false);
                assert!(b > last, "cutn {cutn}: {b} after {last}");
                last = b;
            }
            let e = estimate(&nets, &run(16 * fac, 16 * fac, 8));
            assert!(e.bytes(true) < e.bytes(false));
        }
        // The sizes with the models artists use: 1024² with 32 cutouts aborted
        // at 10 GB; 2048² asked for 17 GB at once.
        let full = full_nets();
        assert!(estimate(&full, &run(1024, 1024, 32)).bytes(false) > 10_000_000_000);
        assert!(estimate(&full, &run(2048, 2048, 32)).bytes(false) > 17_000_000_000);
    }

    #[test]
    fn the_suggested_size_and_cutouts_fit_and_are_the_largest_that_do() {
        for nets in [full_nets(), tiny_nets()] {
            let fac = nets.factor();
            let asked = run(4096, 2048, 32);
            for limit in [5_000_000_000u64, 12_000_000_000, 40_000_000_000] {
                let (w, h) = largest_size(&nets, &asked, limit, false).expect("some size fits");
                assert!(w % fac == 0 && h % fac == 0 && w <= 4096 && h <= 2048, "{w}x{h}");
                assert!(w.abs_diff(2 * h) <= 2 * fac, "{w}x{h} keeps the 2:1 aspect");
                assert!(estimate(&nets, &RunSettings { width: w, height: h, ..asked.clone() }).bytes(false) <= limit);
                let next = RunSettings { width: w + 2 * fac, height: h + fac, ..asked.clone() };
                assert!(estimate(&nets, &next).bytes(false) > limit, "{w}x{h} is not the largest under {limit}");
            }
            let asked = run(16 * fac, 16 * fac, 1000);
            let all = estimate(&nets, &asked).bytes(false);
            let one = estimate(&nets, &RunSettings { cutn: 1, ..asked.clone() }).bytes(false);
            let limit = one + (all - one) / 2;
            let n = largest_cutn(&nets, &asked, limit, false).expect("fewer cutouts fit");
            assert!(n < 1000 && estimate(&nets, &RunSettings { cutn: n, ..asked.clone() }).bytes(false) <= limit);
            assert!(estimate(&nets, &RunSettings { cutn: n + 1, ..asked.clone() }).bytes(false) > limit);
            // Nothing fits below the weights.
            assert_eq!(largest_size(&nets, &asked, 1, false), None);
            assert_eq!(largest_cutn(&nets, &asked, 1, false), None);
        }
    }

    #[test]
    fn a_refusal_names_what_fits_or_what_the_smallest_run_needs() {
        let nets = full_nets();
        let limit = |bytes| Available { bytes, source: "a test" };
        let asked = run(512, 512, 32);
        let need = estimate(&nets, &asked).bytes(false);
        assert_eq!(refusal(&nets, &asked, limit(need), false), None);
        let m = refusal(&nets, &asked, limit(need - 1), false).expect("refused");
        assert!(
            m.starts_with(
                "a 512x512 run with 32 cutouts needs about 7.1 GB of memory and 7.0 GB is available (a test); "
            ),
            "{m}"
        );
        assert!(m.contains(" fits with 32 cutouts, or 512x512 with "), "{m}");
        // Neither a smaller size with 32 cutouts nor fewer cutouts at 512² fit in 3 GB;
        // a smaller size with fewer does.
        let m = refusal(&nets, &asked, limit(3_000_000_000), false).expect("refused");
        let (size, n) = m.rsplit_once("; ").and_then(|(_, a)| a.split_once(" fits with ")).expect("advice");
        let n: usize = n.trim_end_matches(" cutouts").parse().expect("a count");
        let (w, h) = size.split_once('x').expect("a size");
        let fits =
            RunSettings { width: w.parse().expect("w"), height: h.parse().expect("h"), cutn: n, ..asked.clone() };
        assert!(n < 32 && fits.width < 512 && estimate(&nets, &fits).bytes(false) <= 3_000_000_000, "{m}");
        let m = refusal(&nets, &asked, limit(500_000_000), false).expect("refused");
        assert!(m.ends_with("; even the smallest run of these models needs 1.2 GB"), "{m}");
        // Loaded weights are not counted again.
        let weights = to_bytes(nets.weight_bytes());
        assert_eq!(refusal(&nets, &asked, limit(need - weights), true), None);
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human(1_234_567_890_123), "1.2 TB");
        assert_eq!(human(18_600_000_000), "18.6 GB");
        assert_eq!(human(340_000_000), "340 MB");
        assert_eq!(human(2_346_999_000_000_000), "2347 TB");
        assert_eq!(human(12), "12 B");
        assert_eq!(human_rounded(394_200_000, f64::ceil), "395 MB");
        assert_eq!(human_rounded(394_900_000, f64::floor), "394 MB");
        assert_eq!(human_rounded(18_610_000_000, f64::ceil), "18.7 GB");
        assert_eq!(field("MemTotal:  24683784 kB\nMemAvailable:   19588988 kB\n", "MemAvailable:"), Some(19_588_988));
        assert_eq!(field("inactive_file 24576\n", "inactive_file "), Some(24_576));
    }
}
