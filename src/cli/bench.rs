//! `clipcanvas bench`: seconds per iteration and peak memory at standard settings, with
//! where the time goes; optionally beside a PyTorch run of the same iteration
//! (`tests/reference/bench_reference.py --json`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::error::CliError;
use crate::engine::bench::{self, BenchArch, BenchConfig, BenchReport};
use crate::engine::device::parse_device;
use crate::settings::Precision;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArchArg {
    /// CLIP ViT-B/32 and VQGAN imagenet f16-16384, random weights.
    Full,
    /// Tiny networks: checks the benchmark runs, measures nothing useful.
    Small,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Square canvas sides to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512")]
    pub sizes: Vec<usize>,
    /// Cutouts per iteration.
    #[arg(long, default_value_t = 32)]
    pub cutn: usize,
    /// Timed iterations per size.
    #[arg(short, long, default_value_t = 3)]
    pub iterations: usize,
    /// Untimed iterations before them.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, value_enum, default_value = "full")]
    pub arch: ArchArg,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16: the number format CLIP and the VQGAN run in.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A PyTorch report (bench_reference.py --json) to print beside these figures.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Time one-step drafts instead: the shapes world at 128×128 with this many
    /// candidates, drawn, decoded and ranked (its one-step model, or an untrained one
    /// of the same size where it is missing: the time does not depend on the weights).
    #[arg(long)]
    pub drafts: Option<usize>,
    /// Time animation frames instead: the warp, encoding, this many iterations and
    /// decoding, per frame of a slow zoom (-i timed frames after --warmup).
    #[arg(long)]
    pub animate: Option<usize>,
    /// Measure even sizes whose estimated memory is more than the machine has available
    /// (they are refused otherwise; with too little memory the process may be killed).
    #[arg(long)]
    pub no_memory_check: bool,
}

pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    if let Some(candidates) = args.drafts {
        return drafts(args, candidates);
    }
    let reference = match &args.compare {
        Some(path) => Some(read_report(path).map_err(CliError::Input)?),
        None => None,
    };
    let cfg = BenchConfig {
        arch: match args.arch {
            ArchArg::Full => BenchArch::Full,
            ArchArg::Small => BenchArch::Small,
        },
        sizes: args.sizes.clone(),
        cutn: args.cutn,
        iterations: args.iterations,
        warmup: args.warmup,
        device: parse_device(&args.device)?,
        precision: Precision::parse(&args.precision).ok_or_else(|| {
            CliError::Input(anyhow::anyhow!(
                "--precision: unknown format {:?} (expected f32, f16 or bf16)",
                args.precision
            ))
        })?,
        seed: args.seed,
        memory_check: !args.no_memory_check,
    };
    eprintln!("bench: {} on {} in {}, cutn {}", cfg.arch.describe(), args.device, cfg.precision.name(), cfg.cutn);
    if let Some(k) = args.animate {
        let frames = bench::animation(&cfg, k, &mut |line| eprintln!("  {line}")).map_err(|e| match e {
            crate::engine::EngineError::Memory(_) => {
                CliError::Input(anyhow::anyhow!("{e}; --no-memory-check measures it anyway"))
            }
            e => e.into(),
        })?;
        for f in frames {
            println!(
                "{0}x{0}: {1:.2} s a frame ({2} iterations per frame, {3} threads; mean of {4})",
                f.size,
                f.seconds_per_frame,
                f.iterations_per_frame,
                candle_core::utils::get_num_threads(),
                args.iterations
            );
        }
        return Ok(());
    }
    let report = bench::run(&cfg, &mut |line| eprintln!("  {line}")).map_err(|e| match e {
        crate::engine::EngineError::Memory(_) => {
            CliError::Input(anyhow::anyhow!("{e}; --no-memory-check measures it anyway"))
        }
        e => e.into(),
    })?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| CliError::Runtime(e.into()))?;
        crate::files::write_atomic(path, |w| w.write_all(text.as_bytes())).map_err(|e| CliError::Runtime(e.into()))?;
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{}", format_report(&report, reference.as_ref())).map_err(|e| CliError::Runtime(e.into()))?;
    Ok(())
}

/// `bench --drafts K`: seconds per one-step draft of the shapes world.
fn drafts(args: &BenchArgs, candidates: usize) -> Result<(), CliError> {
    use crate::engine::draft::{draft_timed, embed_text, DraftTimes};
    use crate::settings::{OneStepSettings, RunSettings};
    let input = |e: String| CliError::Input(anyhow::anyhow!(e));
    let runtime = |e: crate::engine::EngineError| CliError::Runtime(e.into());
    let world = crate::catalog::bundled::shapes_world()
        .ok_or_else(|| input("the shapes world (models/shapes-world) was not found".into()))?;
    let tmp = std::env::temp_dir().join(format!("clipcanvas-bench-onestep-{}", std::process::id()));
    let (dir, untrained) = match &world.onestep {
        Some(dir) => (dir.clone(), false),
        None => {
            let clip = crate::models::clip::ClipFiles::locate(&world.clip).map_err(|e| input(e.to_string()))?;
            let config = clip.read_config().map_err(|e| input(e.to_string()))?;
            let arch = crate::training::onestep::Arch::SHAPES;
            let c = crate::models::onestep::OneStepConfig {
                clip_dim: config.projection_dim,
                n_codes: 2048,
                grid: [16, 16],
                width: arch.width,
                layers: arch.layers,
                heads: arch.heads,
                mlp: 4 * arch.width,
                ..Default::default()
            };
            crate::training::onestep::write_untrained(&tmp, &c, 0).map_err(|e| CliError::Runtime(e.into()))?;
            (tmp.clone(), true)
        }
    };
    let one = OneStepSettings { model: Some(dir.clone()), candidates, ..OneStepSettings::default() };
    one.validate().map_err(input)?;
    let settings = RunSettings { one_step: Some(one.clone()), ..RunSettings::shapes_world() };
    let device = parse_device(&args.device)?;
    let models = crate::engine::loaded::load_models(&settings, &device);
    if untrained {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let models = models?;
    let onestep = models.onestep.as_ref().ok_or_else(|| input("no one-step model loaded".into()))?;
    let prompt = "a big red circle on a blue background";
    let target = (embed_text(&models, prompt).map_err(runtime)?, 1.0);
    eprintln!(
        "bench: one-step drafts of the shapes world{} at 128x128, {candidates} candidates, on {}",
        if untrained { " (untrained weights: its model is missing)" } else { "" },
        args.device
    );
    let mut rng = crate::engine::rng::Rng::new(args.seed);
    let mut sum = DraftTimes::default();
    let mut full_pass = 0.0;
    for i in 0..args.warmup + args.iterations {
        let (drafts, t) =
            draft_timed(&models, onestep, std::slice::from_ref(&target), &one, &mut rng).map_err(runtime)?;
        // One pass over whole grids, as a parallel (MaskGIT-style) decoder makes at each
        // of its 8–12 steps: the cost the cached causal sampling is weighed against.
        let codes: Vec<candle_core::Tensor> = drafts
            .iter()
            .map(|c| c.codes.flatten_from(1))
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::Runtime(e.into()))?;
        let codes = candle_core::Tensor::cat(&codes, 0).map_err(|e| CliError::Runtime(e.into()))?;
        let cond = target
            .0
            .broadcast_as((candidates, target.0.dim(1).map_err(|e| CliError::Runtime(e.into()))?))
            .and_then(|c| c.contiguous())
            .map_err(|e| CliError::Runtime(e.into()))?;
        let clock = std::time::Instant::now();
        onestep.forward(&cond, &codes).map_err(|e| CliError::Runtime(e.into()))?;
        let pass = clock.elapsed().as_secs_f64();
        eprintln!("  draft {}: {:.3} s{}", i + 1, t.total(), if i < args.warmup { " (warm-up)" } else { "" });
        if i >= args.warmup {
            full_pass += pass;
            sum.sample += t.sample;
            sum.decode += t.decode;
            sum.rank += t.rank;
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "iteration counts")]
    let n = args.iterations.max(1) as f64;
    println!(
        "one-step draft, 128x128, {candidates} candidates, {} threads: {:.3} s (sample {:.3}, decode {:.3}, rank {:.3}); mean of {}",
        candle_core::utils::get_num_threads(),
        sum.total() / n,
        sum.sample / n,
        sum.decode / n,
        sum.rank / n,
        args.iterations
    );
    println!(
        "one pass over all {candidates} whole grids (each step of a parallel, MaskGIT-style decoder of this size): {:.3} s",
        full_pass / n
    );
    Ok(())
}

fn read_report(path: &std::path::Path) -> anyhow::Result<BenchReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a bench report", path.display()))
}

/// A plain-text table: one row per size, stage columns, and the ratio to the reference
/// where it measured the same size.
pub fn format_report(report: &BenchReport, reference: Option<&BenchReport>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} — {} in {}, {} threads, cutn {}; peak MB: {}",
        report.arch,
        report.device,
        report.precision,
        report.threads,
        report.cutn,
        if report.results.iter().any(|r| r.peak_device_bytes.is_some()) { "GPU memory" } else { "resident memory" }
    );
    let stage_names: Vec<&str> =
        report.results.first().map(|r| r.stages.iter().map(|(n, _)| n.as_str()).collect()).unwrap_or_default();
    let _ = write!(s, "{:<10} {:<11} {:>8} {:>8}", "size", "impl", "s/it", "peak MB");
    for n in &stage_names {
        let _ = write!(s, " {n:>9}");
    }
    let _ = writeln!(s, " {:>7}", "ratio");
    for r in &report.results {
        let theirs = reference.and_then(|rf| rf.results.iter().find(|x| x.size == r.size));
        let mut row = |name: &str, x: &bench::SizeReport, ratio: Option<f64>| {
            let peak = x.peak_device_bytes.or(x.peak_rss_bytes);
            let mb = peak.map_or_else(|| "-".to_owned(), |b| format!("{:.0}", b as f64 / 1e6));
            let _ =
                write!(s, "{:<10} {:<11} {:>8.2} {:>8}", format!("{0}x{0}", x.size), name, x.seconds_per_iteration, mb);
            for n in &stage_names {
                match x.stages.iter().find(|(m, _)| m == n) {
                    Some((_, v)) => {
                        let _ = write!(s, " {v:>9.3}");
                    }
                    None => {
                        let _ = write!(s, " {:>9}", "-");
                    }
                }
            }
            let _ = writeln!(s, " {:>7}", ratio.map_or_else(String::new, |q| format!("{q:.2}")));
        };
        row(&report.implementation, r, theirs.map(|t| r.seconds_per_iteration / t.seconds_per_iteration));
        if let Some(t) = theirs {
            row(reference.map_or("reference", |rf| rf.implementation.as_str()), t, None);
        }
    }
    for r in &report.results {
        if let Some(t) = r.transfers {
            let _ = writeln!(
                s,
                "{0}x{0}: host→device {1} copies ({2:.1} MB), device→host {3} ({4} B) an iteration",
                r.size,
                t.uploads,
                t.upload_bytes as f64 / 1e6,
                t.downloads,
                t.download_bytes
            );
        }
    }
    s
}
