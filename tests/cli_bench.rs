//! `clipcanvas bench` as a process (issue 6): the small architecture, so it runs in
//! seconds; the figures themselves are measured by hand (README), never asserted on.

use std::process::Command;

fn clipcanvas() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clipcanvas"))
}

#[test]
fn bench_reports_every_size_and_stage_and_writes_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("bench.json");
    let out = clipcanvas()
        .args(["bench", "--arch", "small", "--sizes", "16,32", "--cutn", "3", "--iterations", "2", "--warmup", "1"])
        .arg("--json")
        .arg(&json)
        .env("RAYON_NUM_THREADS", "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    for stage in ["decode", "cutouts", "clip", "loss", "backward", "optimiser"] {
        assert!(stdout.contains(stage), "no {stage} column in:\n{stdout}");
    }
    assert!(stdout.contains("16x16") && stdout.contains("32x32"), "{stdout}");
    // One progress line per iteration, warm-up included.
    assert_eq!(stderr.matches("32x32 iteration").count(), 2, "{stderr}");
    assert_eq!(stderr.matches("32x32 warm-up").count(), 1, "{stderr}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert_eq!(report["implementation"], "clipcanvas");
    assert_eq!(report["cutn"], 3);
    let results = report["results"].as_array().ok_or_else(|| anyhow::anyhow!("no results"))?;
    assert_eq!(results.len(), 2);
    for r in results {
        let total = r["seconds_per_iteration"].as_f64().unwrap_or(-1.0);
        let min = r["min_seconds"].as_f64().unwrap_or(-1.0);
        assert!(total > 0.0 && min > 0.0 && min <= total + 1e-9, "{r}");
        let stages: f64 = r["stages"].as_array().map_or(0.0, |s| s.iter().filter_map(|p| p[1].as_f64()).sum());
        // The stages cover the step (the plan is drawn outside them).
        assert!(stages > 0.5 * total && stages <= total * 1.01, "stages {stages} vs total {total}");
        if cfg!(target_os = "linux") {
            assert!(r["peak_rss_bytes"].as_u64().unwrap_or(0) > 10_000_000, "{r}");
        }
        assert_eq!(r["transfers"]["downloads"], 1, "one read-back an iteration: {r}");
    }

    // Beside a reference report: a ratio column.
    let out = clipcanvas()
        .args(["bench", "--arch", "small", "--sizes", "32", "--cutn", "2", "--iterations", "1", "--warmup", "0"])
        .arg("--compare")
        .arg(&json)
        .env("RAYON_NUM_THREADS", "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ratio") && stdout.lines().filter(|l| l.starts_with("32x32 ")).count() == 2, "{stdout}");
    // And what an iteration copied between host and device.
    assert!(stdout.contains("32x32: host→device"), "{stdout}");
    Ok(())
}

#[test]
fn bench_rejects_bad_settings_in_one_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--sizes", "15"], "multiple"),
        (vec!["--iterations", "0"], "at least one"),
        (vec!["--cutn", "0"], "cutn"),
        (vec!["--device", "tpu"], "unknown device"),
    ];
    for (args, needle) in cases {
        let out = clipcanvas().args(["bench", "--arch", "small", "--sizes", "16"]).args(&args).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
    }
    let garbage = dir.path().join("torch.json");
    std::fs::write(&garbage, "not json")?;
    let out = clipcanvas().args(["bench", "--arch", "small", "--sizes", "16", "--compare"]).arg(&garbage).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a bench report"));
    Ok(())
}
