//! The fuzzer's inputs, replayed without AFL on every `cargo test`: each seed of
//! `fuzz/corpus/<target>/` (real-format files that clipcanvas must accept) and each
//! finding of `fuzz/regressions/<target>/` (inputs that once crashed, hung or ran away
//! with memory, now refused with one line). The targets are the fuzzer's own
//! (`fuzz/src/targets.rs`); docs/fuzzing.md tells how to run the fuzzer itself.

#[path = "../fuzz/src/targets.rs"]
#[allow(dead_code, reason = "shared with the fuzz crate")]
mod targets;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none when the folder is absent).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("fuzz").join(kind).join(target))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn run(target: &str, file: &Path) -> targets::Outcome {
    let data = std::fs::read(file).expect("read input");
    targets::run(target, &data, &root().join("tests/fixtures"))
}

#[test]
fn every_target_has_seeds_and_accepts_them() {
    for target in targets::TARGETS {
        let seeds = inputs("corpus", target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for seed in seeds {
            if let Err(e) = run(target, &seed) {
                panic!("{target}: seed {} refused: {e}", seed.display());
            }
        }
    }
}

#[test]
fn every_finding_is_now_refused_with_one_line_or_accepted() {
    let mut replayed = 0;
    for target in targets::TARGETS {
        for finding in inputs("regressions", target) {
            replayed += 1;
            // A panic here fails the test with the finding's name in the backtrace.
            if let Err(e) = run(target, &finding) {
                assert!(!e.trim().is_empty(), "{target}: {} refused without a message", finding.display());
                assert!(!e.contains('\n'), "{target}: {} refused with several lines: {e}", finding.display());
            }
        }
    }
    eprintln!("replayed {replayed} findings");
}
