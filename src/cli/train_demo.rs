//! `clipcanvas train-demo`: trains the shapes world's CLIP and VQGAN (see
//! [`crate::demo`]), shows progress, then evaluates the written files through the
//! same loaders the studio uses and prints the figures.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::error::CliError;
use crate::demo::train::{self, TrainObserver, TrainOptions};
use crate::demo::{eval, DemoError};

#[derive(Debug, Args)]
pub struct TrainDemoArgs {
    /// Folder to write the models into (its `clip/` and `vqgan/`); replaced only when
    /// training finishes.
    #[arg(long, default_value = "models/shapes-world")]
    pub out: PathBuf,
    /// Seed of the data and the initial weights; the same seed gives the same files on
    /// the same machine.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CLIP training steps.
    #[arg(long)]
    pub clip_steps: Option<usize>,
    /// Scenes per CLIP step.
    #[arg(long)]
    pub clip_batch: Option<usize>,
    /// VQGAN training steps.
    #[arg(long)]
    pub vqgan_steps: Option<usize>,
    /// Crops per VQGAN step.
    #[arg(long)]
    pub vqgan_batch: Option<usize>,
    /// The CLIP's peak learning rate.
    #[arg(long)]
    pub clip_lr: Option<f64>,
    /// The last this many CLIP steps also train against generate runs (the VQGAN is
    /// then needed, and trained first).
    #[arg(long)]
    pub harden_steps: Option<usize>,
    /// Generate runs chasing captions while the CLIP hardens.
    #[arg(long)]
    pub harden_pool: Option<usize>,
    /// Start the CLIP from the weights in this CLIP folder (fine-tuning) instead of at
    /// random.
    #[arg(long)]
    pub clip_from: Option<PathBuf>,
    /// Train only this model; the other is kept from --out.
    #[arg(long, value_enum)]
    pub only: Option<train::Part>,
    /// Only evaluate the models already in --out.
    #[arg(long)]
    pub evaluate_only: bool,
    /// Held-out scenes for the evaluation.
    #[arg(long, default_value_t = 500)]
    pub eval_scenes: usize,
}

struct Progress {
    bar: Option<ProgressBar>,
    cancel: Arc<AtomicBool>,
    stage: String,
    every: usize,
    started: Instant,
}

impl TrainObserver for Progress {
    fn stage(&mut self, name: &str, steps: usize) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.stage = name.to_owned();
        self.started = Instant::now();
        self.every = (steps / 50).max(1);
        eprintln!("training the shapes {name}: {steps} steps");
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>6} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(name.to_owned());
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, step: usize, loss: f64, detail: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64 + 1);
                bar.set_message(format!("loss {loss:.4} · {detail}"));
            }
            None => {
                if step.is_multiple_of(self.every) {
                    eprintln!(
                        "{} step {} loss {loss:.4} · {detail} ({:.0} s)",
                        self.stage,
                        step + 1,
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

pub fn run(a: &TrainDemoArgs) -> Result<(), CliError> {
    let defaults = TrainOptions::default();
    let opts = TrainOptions {
        seed: a.seed,
        clip_steps: a.clip_steps.unwrap_or(defaults.clip_steps),
        clip_batch: a.clip_batch.unwrap_or(defaults.clip_batch),
        vqgan_steps: a.vqgan_steps.unwrap_or(defaults.vqgan_steps),
        vqgan_batch: a.vqgan_batch.unwrap_or(defaults.vqgan_batch),
        only: a.only,
        clip_lr: a.clip_lr.unwrap_or(defaults.clip_lr),
        harden_steps: a.harden_steps.unwrap_or(defaults.harden_steps),
        harden_pool: a.harden_pool.unwrap_or(defaults.harden_pool),
        clip_from: a.clip_from.clone(),
        ..defaults
    };
    if opts.clip_batch < 2 || opts.vqgan_batch == 0 {
        return Err(CliError::Input(anyhow::anyhow!("--clip-batch must be at least 2 and --vqgan-batch at least 1")));
    }
    if opts.harden_steps > 0 && opts.harden_pool == 0 {
        return Err(CliError::Input(anyhow::anyhow!("--harden-pool must be at least 1 when --harden-steps is given")));
    }
    if !(opts.clip_lr.is_finite() && opts.clip_lr > 0.0) {
        return Err(CliError::Input(anyhow::anyhow!("--clip-lr must be a positive number, got {}", opts.clip_lr)));
    }
    if !a.evaluate_only {
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let cancel = cancel.clone();
            let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
        }
        let mut progress = Progress { bar: None, cancel, stage: String::new(), every: 1, started: Instant::now() };
        let started = Instant::now();
        let log = match train::train_demo(&opts, &a.out, &mut progress) {
            Ok(log) => log,
            Err(DemoError::Cancelled) => {
                eprintln!("cancelled; nothing was written");
                return Err(CliError::Interrupted);
            }
            Err(e) => return Err(CliError::Runtime(e.into())),
        };
        if let Some(bar) = &progress.bar {
            bar.finish_and_clear();
        }
        let last = |v: &[f64]| {
            let tail = &v[v.len().saturating_sub(20)..];
            tail.iter().sum::<f64>() / tail.len().max(1) as f64
        };
        println!("trained in {:.1} min", started.elapsed().as_secs_f64() / 60.0);
        if !log.clip_loss.is_empty() {
            println!("  CLIP: {:.1} min, final loss {:.4}", log.clip_seconds / 60.0, last(&log.clip_loss));
        }
        if !log.vqgan_loss.is_empty() {
            println!("  VQGAN: {:.1} min, final loss {:.4}", log.vqgan_seconds / 60.0, last(&log.vqgan_loss));
        }
        println!("wrote {}", a.out.display());
    }
    evaluate(&a.out, a.eval_scenes, a.seed)
}

/// Loads the models from `dir` the way the studio does and prints their figures.
fn evaluate(dir: &Path, scenes: usize, seed: u64) -> Result<(), CliError> {
    let load_err = |e: crate::models::ModelError| CliError::Input(e.into());
    let eval_seed = seed.wrapping_add(eval::EVAL_SEED);
    let (clip, tok) = crate::models::clip::load(&train::clip_dir(dir), DType::F32, &Device::Cpu).map_err(load_err)?;
    let z = eval::zero_shot(&clip, &tok, scenes, eval_seed).map_err(|e| CliError::Runtime(e.into()))?;
    println!(
        "CLIP zero-shot on {} held-out scenes: colour {:.1}%, shape {:.1}%, position {:.1}%, background {:.1}%, size {:.1}%",
        z.scenes,
        z.colour * 100.0,
        z.shape * 100.0,
        z.position * 100.0,
        z.background * 100.0,
        z.size * 100.0
    );
    let vqgan =
        crate::models::vqgan::load(&train::vqgan_dir(dir).join("model.safetensors"), None, DType::F32, &Device::Cpu)
            .map_err(load_err)?;
    let n = (scenes / 5).max(1);
    let psnr = eval::reconstruction_psnr(&vqgan, n, crate::demo::data::SCENE_SIDE, eval_seed)
        .map_err(|e| CliError::Runtime(e.into()))?;
    println!("VQGAN reconstruction PSNR on {n} held-out {0}x{0} scenes: {psnr:.2} dB", crate::demo::data::SCENE_SIDE);
    Ok(())
}
