//! The iteration benchmark behind `clipcanvas bench` and `benches/iteration.rs`: full-size
//! architectures with random weights (no download), one text prompt, the default
//! cutouts and augmentations, timed per stage, with the process's peak resident memory
//! for each canvas size. `tests/reference/bench_reference.py` runs the same iteration
//! in PyTorch and writes the same JSON.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};
use super::loaded::Models;
use super::memory::{self as estimate, Nets};
use super::profile::StageTimes;
use super::session::Session;
use crate::models::clip::{Clip, ClipConfig};
use crate::models::random::RandomWeights;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vqgan::{Vqgan, VqganConfig};
use crate::settings::{Precision, RunSettings};

/// Which networks to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchArch {
    /// CLIP ViT-B/32 and the ImageNet VQGAN f16-16384: what artists run.
    Full,
    /// A few-layer CLIP and VQGAN, for checking the benchmark itself quickly.
    Small,
}

impl BenchArch {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Full => "CLIP ViT-B/32 + VQGAN imagenet f16-16384 (random weights)",
            Self::Small => "small CLIP + VQGAN (random weights, for testing the bench)",
        }
    }

    fn configs(self) -> (ClipConfig, VqganConfig) {
        let mut clip = ClipConfig::vit_b_32();
        let mut vqgan = VqganConfig::imagenet_f16_16384();
        if self == Self::Small {
            clip.text.hidden_size = 64;
            clip.text.intermediate_size = 128;
            clip.text.num_hidden_layers = 1;
            clip.text.num_attention_heads = 2;
            clip.vision.hidden_size = 64;
            clip.vision.intermediate_size = 128;
            clip.vision.num_hidden_layers = 2;
            clip.vision.num_attention_heads = 2;
            clip.vision.image_size = 32;
            clip.vision.patch_size = 8;
            clip.projection_dim = 32;
            let dd = &mut vqgan.ddconfig;
            dd.z_channels = 16;
            dd.ch = 32;
            dd.ch_mult = vec![1, 2];
            dd.num_res_blocks = 1;
            dd.attn_resolutions = vec![8];
            dd.resolution = 16;
            dd.num_groups = 8;
            vqgan.embed_dim = 16;
            vqgan.n_embed = 64;
        }
        (clip, vqgan)
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub arch: BenchArch,
    /// Square canvas sides, each measured in turn.
    pub sizes: Vec<usize>,
    pub cutn: usize,
    /// Timed iterations per size.
    pub iterations: usize,
    /// Untimed iterations first (allocator and caches warm up).
    pub warmup: usize,
    pub device: Device,
    /// The frozen networks' number format.
    pub precision: Precision,
    pub seed: u64,
    /// Refuse, before building the models, sizes that will not fit in the memory
    /// available (`engine::memory`; CPU only).
    pub memory_check: bool,
}

/// One canvas size's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeReport {
    pub size: usize,
    /// Mean seconds per timed iteration.
    pub seconds_per_iteration: f64,
    /// Fastest timed iteration.
    pub min_seconds: f64,
    /// Mean seconds per stage, in `StageTimes::NAMES` order.
    pub stages: Vec<(String, f64)>,
    /// Peak resident memory of the process while this size ran, if the OS says.
    pub peak_rss_bytes: Option<u64>,
    /// On a GPU, the most device memory this run added (see `profile::device_peak`),
    /// beyond what was in use before the models were built.
    #[serde(default)]
    pub peak_device_bytes: Option<u64>,
    /// What the last timed iteration copied between host and device (`engine::transfer`).
    #[serde(default)]
    pub transfers: Option<super::transfer::Transfers>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// `clipcanvas` (candle) or `pytorch`.
    pub implementation: String,
    pub arch: String,
    pub device: String,
    /// f32, f16 or bf16 (reports without it were f32).
    #[serde(default = "f32_name")]
    pub precision: String,
    pub threads: usize,
    pub cutn: usize,
    pub iterations: usize,
    pub warmup: usize,
    pub results: Vec<SizeReport>,
}

/// Builds the models, then runs `warmup + iterations` steps at each size. `progress`
/// hears one line per finished step.
pub fn run(cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<BenchReport> {
    if cfg.iterations == 0 {
        return Err(EngineError::Input("bench needs at least one timed iteration".into()));
    }
    if cfg.sizes.is_empty() {
        return Err(EngineError::Input("bench needs at least one size".into()));
    }
    // Every size's settings are checked before the (slow) model building.
    let factor = cfg.arch.configs().1.downsample_factor();
    let runs = cfg
        .sizes
        .iter()
        .map(|&size| {
            if size < factor || size % factor != 0 {
                return Err(EngineError::Input(format!(
                    "size {size} is not a multiple of the VQGAN's factor {factor}"
                )));
            }
            let settings = RunSettings {
                prompts: vec!["a watercolour painting of a lighthouse at dawn".to_owned()],
                width: size,
                height: size,
                cutn: cfg.cutn,
                iterations: cfg.warmup + cfg.iterations,
                seed: cfg.seed,
                ..RunSettings::default()
            };
            settings.validate().map_err(EngineError::Input)?;
            Ok((size, settings))
        })
        .collect::<Result<Vec<_>>>()?;
    if cfg.memory_check && cfg.device.is_cpu() {
        let (clip, vqgan) = cfg.arch.configs();
        let nets = Nets { vqgan: Some(vqgan), clip, extra_clips: Vec::new(), onestep: None };
        for (_, settings) in &runs {
            estimate::check(&nets, settings, false)?;
        }
    }
    super::device::check_precision(&cfg.device, cfg.precision)?;
    let baseline = super::device::memory_in_use(&cfg.device);
    let models = Arc::new(random_models(cfg.arch, &cfg.device, cfg.seed, cfg.precision)?);
    let mut results = Vec::new();
    for (size, settings) in runs {
        memory::reset_peak();
        super::profile::reset_device_peak();
        let mut session = Session::new(models.clone(), settings)?;
        session.set_profiling(true);
        let mut sum = StageTimes::default();
        let mut total = 0.0;
        let mut min = f64::INFINITY;
        let mut transfers = None;
        for i in 0..cfg.warmup + cfg.iterations {
            let t0 = Instant::now();
            let before = super::transfer::counts();
            let out = session.step()?;
            transfers = Some(super::transfer::counts().since(before));
            let secs = t0.elapsed().as_secs_f64();
            let timed = i >= cfg.warmup;
            if timed {
                sum.add(&out.stages);
                total += secs;
                min = min.min(secs);
            }
            progress(&format!(
                "{size}x{size} {} {}/{}: {secs:.2} s",
                if timed { "iteration" } else { "warm-up" },
                if timed { i - cfg.warmup + 1 } else { i + 1 },
                if timed { cfg.iterations } else { cfg.warmup },
            ));
        }
        #[expect(clippy::cast_precision_loss, reason = "iteration counts are small")]
        let n = cfg.iterations as f64;
        let mean = sum.scaled(1.0 / n);
        results.push(SizeReport {
            size,
            seconds_per_iteration: total / n,
            min_seconds: min,
            stages: StageTimes::NAMES.iter().map(|s| (*s).to_owned()).zip(mean.values()).collect(),
            peak_rss_bytes: memory::peak_rss(),
            peak_device_bytes: super::profile::device_peak().map(|p| p.saturating_sub(baseline.unwrap_or(0))),
            transfers,
        });
    }
    Ok(BenchReport {
        implementation: "clipcanvas".to_owned(),
        arch: cfg.arch.describe().to_owned(),
        device: describe_device(&cfg.device),
        precision: cfg.precision.name().to_owned(),
        threads: candle_core::utils::get_num_threads(),
        cutn: cfg.cutn,
        iterations: cfg.iterations,
        warmup: cfg.warmup,
        results,
    })
}

/// One canvas size's animation figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameReport {
    pub size: usize,
    pub iterations_per_frame: usize,
    /// Mean seconds per timed frame: the warp, encoding, the iterations, decoding.
    pub seconds_per_frame: f64,
}

/// Times animation frames: at each size, frame 0 (the random start, no iterations) then
/// `cfg.warmup` untimed and `cfg.iterations` timed frames of a slow zoom, each
/// `iterations_per_frame` iterations. `progress` hears one line per frame.
pub fn animation(
    cfg: &BenchConfig,
    iterations_per_frame: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<FrameReport>> {
    use super::animation::{Animation, AnimationObserver};
    use crate::settings::animation::{AnimationSettings, FramePlan};
    use crate::settings::schedule::Schedule;

    struct Clock<'a> {
        started: Instant,
        seconds: Vec<f64>,
        progress: &'a mut dyn FnMut(&str),
        size: usize,
    }
    impl AnimationObserver for Clock<'_> {
        fn frame_started(&mut self, _plan: &FramePlan) {
            self.started = Instant::now();
        }
        fn frame_done(&mut self, frame: usize, _image: &image::RgbImage, _a: &Animation) -> Result<(), String> {
            let secs = self.started.elapsed().as_secs_f64();
            (self.progress)(&format!("{0}x{0} frame {frame}: {secs:.2} s", self.size));
            self.seconds.push(secs);
            Ok(())
        }
    }

    if cfg.iterations == 0 {
        return Err(EngineError::Input("bench needs at least one timed frame".into()));
    }
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let per_frame = Schedule::constant(iterations_per_frame as f64);
    super::device::check_precision(&cfg.device, cfg.precision)?;
    let models = Arc::new(random_models(cfg.arch, &cfg.device, cfg.seed, cfg.precision)?);
    let mut out = Vec::new();
    for &size in &cfg.sizes {
        let settings = RunSettings {
            prompts: vec!["a watercolour painting of a lighthouse at dawn".to_owned()],
            width: size,
            height: size,
            cutn: cfg.cutn,
            iterations: 0,
            seed: cfg.seed,
            animation: Some(AnimationSettings {
                frames: 1 + cfg.warmup + cfg.iterations,
                zoom: Schedule::constant(1.02),
                iterations_per_frame: per_frame.clone(),
                ..AnimationSettings::default()
            }),
            ..RunSettings::default()
        };
        if cfg.memory_check && cfg.device.is_cpu() {
            let (clip, vqgan) = cfg.arch.configs();
            estimate::check(
                &Nets { vqgan: Some(vqgan), clip, extra_clips: Vec::new(), onestep: None },
                &settings,
                false,
            )?;
        }
        let mut animation = Animation::new(Arc::clone(&models), settings)?;
        let mut clock = Clock { started: Instant::now(), seconds: Vec::new(), progress: &mut *progress, size };
        animation.run(&mut clock, &std::sync::atomic::AtomicBool::new(false))?;
        let timed = &clock.seconds[1 + cfg.warmup..];
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let mean = timed.iter().sum::<f64>() / timed.len().max(1) as f64;
        out.push(FrameReport { size, iterations_per_frame, seconds_per_frame: mean });
    }
    Ok(out)
}

/// The benchmark's networks, with random weights.
pub fn random_models(arch: BenchArch, device: &Device, seed: u64, precision: Precision) -> Result<Models> {
    let (clip_cfg, vqgan_cfg) = arch.configs();
    let vb = RandomWeights::new(seed).var_builder(super::device::weights_dtype(precision), device);
    let clip = Clip::new(vb.clone(), &clip_cfg).map_err(EngineError::Candle)?;
    let vqgan = Vqgan::new(vb, &vqgan_cfg).map_err(EngineError::Candle)?;
    let tokenizer = ClipTokenizer::bundled(clip_cfg.text.max_position_embeddings)?;
    Ok(Models {
        vqgan: Some(vqgan),
        clip,
        tokenizer,
        extra_clips: Vec::new(),
        device: device.clone(),
        source: None,
        onestep: None,
    })
}

fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({})", cpu_name().unwrap_or_else(|| "unknown model".to_owned())),
        Device::Cuda(_) => "cuda".to_owned(),
        Device::Metal(_) => "metal".to_owned(),
    }
}

fn f32_name() -> String {
    Precision::F32.name().to_owned()
}

fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// The process's peak resident memory (Linux: `VmHWM`, reset through `clear_refs`).
mod memory {
    pub fn reset_peak() {
        // Writing 5 resets the peak to the current resident size (Linux ≥ 4.0); where it
        // cannot be written the peak simply covers the whole process.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    pub fn peak_rss() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    }
}
