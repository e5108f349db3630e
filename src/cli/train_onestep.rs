//! `clipcanvas train-onestep`: trains a one-step generator (see
//! [`crate::training::onestep`]) for a CLIP + VQGAN pair, from a folder of images or
//! the built-in shapes world, with a progress bar, checkpoints and `--resume`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::error::CliError;
use crate::catalog::bundled;
use crate::models::clip::ClipFiles;
use crate::training::data::{image_files, Source};
use crate::training::onestep::{self, Arch, Models};
use crate::training::{Progress, TrainError};

#[derive(Debug, Args)]
pub struct TrainOneStepArgs {
    /// Train on every image in this folder (no captions needed).
    #[arg(long, conflicts_with = "shapes_world", required_unless_present_any = ["shapes_world", "evaluate"])]
    pub images: Option<PathBuf>,
    /// Train on scenes of the built-in shapes world.
    #[arg(long)]
    pub shapes_world: bool,
    /// The CLIP folder (default: the shapes world's).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// The VQGAN checkpoint (default: the shapes world's).
    #[arg(long)]
    pub vqgan: Option<PathBuf>,
    /// The VQGAN's YAML, when it is not beside the checkpoint.
    #[arg(long)]
    pub vqgan_config: Option<PathBuf>,
    /// The folder to write the model into; work in progress goes to <out>.checkpoint.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the data, the initial weights and the batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run whose checkpoint is in <out>.checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Training steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Images per step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Side of the square images (a multiple of the VQGAN's downsampling factor).
    #[arg(long)]
    pub size: Option<usize>,
    /// Transformer width, layers and heads, as W,L,H (e.g. 512,12,8).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// LAFITE noise on the image embeddings (relative size ξ; 0 turns it off).
    #[arg(long)]
    pub cond_noise: Option<f64>,
    /// Shapes world: share of rows conditioned on a caption's text embedding.
    #[arg(long)]
    pub caption_share: Option<f64>,
    /// Augmented views per image whose embeddings are conditions.
    #[arg(long)]
    pub views: Option<usize>,
    /// Shapes world: how many scenes to make.
    #[arg(long)]
    pub scenes: Option<usize>,
    /// Images held out of training to report the loss on.
    #[arg(long)]
    pub held_out: Option<usize>,
    /// Do not train: run the shapes world's meaning test on the one-step model in --out
    /// (drafts judged from their pixels, never by CLIP), and on their refinement.
    #[arg(long, conflicts_with = "images")]
    pub evaluate: bool,
    /// Seeds of the meaning test, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub eval_seeds: Vec<u64>,
    /// Iterations of refinement after each draft in the meaning test (0: drafts only).
    #[arg(long, default_value_t = 50)]
    pub refine: usize,
    /// The refinement's init weight (how strongly it holds on to the draft).
    #[arg(long, default_value_t = 0.5)]
    pub refine_init_weight: f64,
    /// Keep the meaning test's images in this folder.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Candidates per draft in the meaning test.
    #[arg(long, default_value_t = 8)]
    pub candidates: usize,
    /// The meaning test's sampling (default: generate's).
    #[command(flatten)]
    pub sampling: super::run_args::SamplingArgs,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("'{s}' is not W,L,H (three whole numbers, e.g. 512,12,8)"))?;
    match v.as_slice() {
        [w, l, h] if *w > 0 && *l > 0 && *h > 0 && w % h == 0 => Ok(Arch { width: *w, layers: *l, heads: *h }),
        [w, _, h] if *h > 0 && w % h != 0 => Err(format!("width {w} does not split into {h} heads")),
        _ => Err(format!("'{s}' is not W,L,H (three positive whole numbers)")),
    }
}

struct Bar {
    bar: Option<ProgressBar>,
    cancel: Arc<AtomicBool>,
    stage: String,
    every: usize,
    started: Instant,
}

impl Progress for Bar {
    fn stage(&mut self, name: &str, steps: usize, done: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.stage = name.to_owned();
        self.started = Instant::now();
        self.every = (steps / 50).max(1);
        eprintln!("{name}: {steps} steps{}", if done > 0 { format!(", from {done}") } else { String::new() });
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>7} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(name.to_owned());
            bar.set_position(done as u64);
            bar.reset_eta();
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, step: usize, loss: f64, detail: &str) {
        let msg = if self.stage == "dataset" { detail.to_owned() } else { format!("loss {loss:.4} · {detail}") };
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64 + 1);
                bar.set_message(msg);
            }
            None if step.is_multiple_of(self.every) => {
                eprintln!("{} step {} {msg} ({:.0} s)", self.stage, step + 1, self.started.elapsed().as_secs_f64());
            }
            None => {}
        }
    }

    fn note(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

fn input(msg: impl std::fmt::Display) -> CliError {
    CliError::Input(anyhow::anyhow!("{msg}"))
}

fn hash(path: &Path) -> Result<String, CliError> {
    crate::files::file_sha256(path).map_err(input)
}

/// `--evaluate`: the meaning test of the shapes world's drafts.
fn evaluate(a: &TrainOneStepArgs, out: &Path) -> Result<(), CliError> {
    use crate::demo::meaning::{evaluate_drafts, evaluate_reconstructions, DraftEvalOptions};
    use crate::settings::{OneStepSettings, RunSettings};
    if a.clip.is_some() || a.vqgan.is_some() {
        return Err(input("--evaluate runs the shapes world's meaning test: give no --clip or --vqgan"));
    }
    let mut one =
        OneStepSettings { model: Some(out.to_path_buf()), candidates: a.candidates, ..OneStepSettings::default() };
    a.sampling.apply(&mut one.sampling);
    one.validate().map_err(input)?;
    let settings = RunSettings { one_step: Some(one.clone()), ..RunSettings::shapes_world() };
    let models = Arc::new(crate::engine::loaded::load_models(&settings, &Device::Cpu)?);
    if let Some(dir) = &a.keep {
        std::fs::create_dir_all(dir).map_err(|e| input(format!("{}: {e}", dir.display())))?;
    }
    let opts = DraftEvalOptions {
        seeds: a.eval_seeds.clone(),
        one_step: one,
        refine: (a.refine > 0).then_some((a.refine, a.refine_init_weight)),
        prompts: usize::MAX,
    };
    let started = Instant::now();
    let vqgan = models.vqgan()?;
    let side = models.onestep.as_ref().map_or(128, |m| m.config().grid[0] * vqgan.config().downsample_factor());
    let ceiling = evaluate_reconstructions(vqgan, &a.eval_seeds, side)?;
    let eval = evaluate_drafts(&models, &opts, a.keep.as_deref(), &mut |line| eprintln!("{line}"))?;
    println!("meaning test of {} ({:.1} min):", out.display(), started.elapsed().as_secs_f64() / 60.0);
    println!("  the VQGAN's reconstructions of drawn scenes (the ceiling): {}", ceiling.line());
    println!("  drafts:  {}", eval.drafts.line());
    if let Some(r) = eval.refined {
        println!("  refined ({} iterations, init weight {}): {}", a.refine, a.refine_init_weight, r.line());
    }
    Ok(())
}

pub fn run(a: &TrainOneStepArgs) -> Result<(), CliError> {
    let world = bundled::shapes_world();
    let clip_dir = match (&a.clip, &world) {
        (Some(c), _) => c.clone(),
        (None, Some(w)) => w.clip.clone(),
        (None, None) => return Err(input("no CLIP: give --clip (the shapes world's models were not found)")),
    };
    let vqgan_path = match (&a.vqgan, &world) {
        (Some(v), _) => v.clone(),
        (None, Some(w)) => w.vqgan.clone(),
        (None, None) => return Err(input("no VQGAN: give --vqgan (the shapes world's models were not found)")),
    };
    let out = match (&a.out, a.shapes_world || a.evaluate, &world) {
        (Some(o), _, _) => o.clone(),
        (None, true, Some(w)) => w.clip.with_file_name("onestep"),
        _ => return Err(input("give --out, the folder to write the model into")),
    };
    if a.evaluate {
        return evaluate(a, &out);
    }
    let source = match &a.images {
        Some(dir) => Source::Folder(dir.clone()),
        None => Source::ShapesWorld { scenes: a.scenes.unwrap_or(24_000) },
    };
    let files = match &a.images {
        Some(dir) => image_files(dir).map_err(input)?,
        None => Vec::new(),
    };
    let clip_files = ClipFiles::locate(&clip_dir).map_err(input)?;
    let mut opts = onestep::default_options(source, a.seed, hash(&clip_files.weights)?, hash(&vqgan_path)?);
    let d = &mut opts.data;
    d.side = a.size.unwrap_or(d.side);
    d.views = a.views.unwrap_or(d.views);
    opts.arch = a.arch.unwrap_or(opts.arch);
    opts.steps = a.steps.unwrap_or(opts.steps);
    opts.batch = a.batch.unwrap_or(opts.batch);
    opts.lr = a.lr.unwrap_or(opts.lr);
    opts.cond_noise = a.cond_noise.unwrap_or(opts.cond_noise);
    opts.caption_share = a.caption_share.unwrap_or(opts.caption_share);
    opts.held_out = a.held_out.unwrap_or(opts.held_out);
    if opts.steps == 0 || opts.batch == 0 || opts.data.views == 0 || opts.data.side == 0 {
        return Err(input("--steps, --batch, --views and --size must be at least 1"));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return Err(input(format!("--lr must be a positive number, got {}", opts.lr)));
    }
    if !(opts.cond_noise.is_finite() && opts.cond_noise >= 0.0) {
        return Err(input(format!("--cond-noise must be 0 or more, got {}", opts.cond_noise)));
    }
    if !(0.0..=1.0).contains(&opts.caption_share) {
        return Err(input(format!("--caption-share must be between 0 and 1, got {}", opts.caption_share)));
    }
    if a.images.is_some() && a.caption_share.is_some_and(|s| s > 0.0) {
        return Err(input("--caption-share needs captions: only the shapes world has them"));
    }
    let (clip, tokenizer) = crate::models::clip::load(&clip_dir, DType::F32, &Device::Cpu).map_err(input)?;
    let vqgan =
        crate::models::vqgan::load(&vqgan_path, a.vqgan_config.as_deref(), DType::F32, &Device::Cpu).map_err(input)?;
    // The model's config checks that the pair fits the options before any work.
    onestep::model_config(&opts, &clip, &vqgan).map_err(input)?;

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let mut bar = Bar { bar: None, cancel, stage: String::new(), every: 1, started: Instant::now() };
    let models = Models { clip: &clip, tokenizer: &tokenizer, vqgan: &vqgan };
    let report = match onestep::train(&opts, &files, &models, &out, a.resume, &mut bar) {
        Ok(r) => r,
        Err(TrainError::Cancelled) => {
            if let Some(b) = &bar.bar {
                b.finish_and_clear();
            }
            eprintln!(
                "cancelled; the checkpoint is in {} (continue with --resume)",
                onestep::checkpoint_dir(&out).display()
            );
            return Err(CliError::Interrupted);
        }
        Err(e @ (TrainError::Input(_) | TrainError::Engine(_) | TrainError::Model(_))) => return Err(input(e)),
        Err(e) => return Err(CliError::Runtime(e.into())),
    };
    if let Some(b) = &bar.bar {
        b.finish_and_clear();
    }
    let tail = &report.losses[report.losses.len().saturating_sub(50)..];
    #[expect(clippy::cast_precision_loss, reason = "step counts")]
    let last = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    println!(
        "trained {} parameters for {} steps in {:.1} min (data {:.1} min); final training loss {last:.4}",
        report.parameters,
        report.losses.len(),
        report.seconds / 60.0,
        report.data_seconds / 60.0
    );
    if let Some((step, h)) = report.held_out.last() {
        println!("held-out loss {h:.4} at step {step}");
    }
    println!("wrote {}", out.display());
    Ok(())
}
