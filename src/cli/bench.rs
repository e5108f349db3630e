//! `clipcanvas bench`: seconds per iteration and peak memory at standard settings, with
//! where the time goes; optionally beside a PyTorch run of the same iteration
//! (`tests/reference/bench_reference.py --json`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::CliError;
use crate::engine::bench::{self, BenchArch, BenchConfig, BenchReport};
use crate::engine::device::parse_device;

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
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A PyTorch report (bench_reference.py --json) to print beside these figures.
    #[arg(long)]
    pub compare: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<(), CliError> {
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
        seed: args.seed,
    };
    eprintln!("bench: {} on {}, cutn {}", cfg.arch.describe(), args.device, cfg.cutn);
    let report = bench::run(&cfg, &mut |line| eprintln!("  {line}"))?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| CliError::Runtime(e.into()))?;
        crate::export::write_atomic(path, |w| w.write_all(text.as_bytes())).map_err(|e| CliError::Runtime(e.into()))?;
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{}", format_report(&report, reference.as_ref())).map_err(|e| CliError::Runtime(e.into()))?;
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
    let _ = writeln!(s, "{} — {}, {} threads, cutn {}", report.arch, report.device, report.threads, report.cutn);
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
            let mb = x.peak_rss_bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.0}", b as f64 / 1e6));
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
    s
}
