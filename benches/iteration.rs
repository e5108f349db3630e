//! `cargo bench --bench iteration`: the standard iteration benchmark (CLIP ViT-B/32 +
//! VQGAN f16-16384 with random weights, 256² and 512², cutn 32), through the same code
//! as `clipcanvas bench`. Settings from the environment: `CLIPCANVAS_BENCH_SIZES`
//! (`256,512`), `CLIPCANVAS_BENCH_ITERATIONS` (3), `CLIPCANVAS_BENCH_DEVICE` (`cpu`).
//! Kept out of CI: an iteration takes seconds to minutes on a CPU.

use clipcanvas::engine::bench::{run, BenchArch, BenchConfig};
use clipcanvas::engine::device::parse_device;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() -> anyhow::Result<()> {
    clipcanvas::process::tune();
    // `cargo bench` passes `--bench`; a filter argument is not meaningful here.
    let sizes = env_or("CLIPCANVAS_BENCH_SIZES", "256,512")
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = BenchConfig {
        arch: BenchArch::Full,
        sizes,
        cutn: 32,
        iterations: env_or("CLIPCANVAS_BENCH_ITERATIONS", "3").parse()?,
        warmup: 1,
        device: parse_device(&env_or("CLIPCANVAS_BENCH_DEVICE", "cpu"))?,
        precision: clipcanvas::settings::Precision::parse(&env_or("CLIPCANVAS_BENCH_PRECISION", "f32"))
            .ok_or_else(|| anyhow::anyhow!("CLIPCANVAS_BENCH_PRECISION: expected f32, f16 or bf16"))?,
        seed: 0,
        memory_check: true,
    };
    let report = run(&cfg, &mut |line| eprintln!("  {line}"))?;
    print!("{}", clipcanvas::cli::bench::format_report(&report, None));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
