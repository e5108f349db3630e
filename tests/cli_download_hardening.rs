//! `clipcanvas models download` and `verify` against a hostile or broken server on
//! 127.0.0.1 (the hardening issue, item 8): files of the wrong format (zeros named
//! `pytorch_model.bin`, an HTML page sent as `application/octet-stream`, a bad safetensors
//! header) refused with nothing installed; a size far from the catalog's approximate one
//! refused from the Content-Length alone; a server that trickles abandoned as stalled with
//! its part kept for the next run to resume; a damaged download record never read as a
//! clean bill of health; and a good download still installed and verified. Each test
//! checks the exit code, the one error line, that nothing panicked, and the exact files
//! left in the model's folder.
//!
//! The binary reads a test catalog (`CLIPCANVAS_CATALOG`) whose every URL is on the local
//! server, so no test can reach the network.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{fails, files_in, fixture, ok, read};

#[path = "support/http_server.rs"]
mod http_server;

use http_server::{sha256, Mode, Server};

/// A temporary home, a models folder and a catalog file, and the local server.
struct Env {
    tmp: tempfile::TempDir,
    server: Server,
}

impl Env {
    /// The catalog has `test-clip` (config.json, pytorch_model.bin, tokenizer.json) and
    /// `test-vqgan` (model.yaml, last.ckpt); `approx` gives files an `approx_size`.
    fn new(approx: &[(&str, u64)]) -> Self {
        let tmp = tempfile::tempdir().expect("temp");
        let server = Server::start();
        let file = |model: &str, name: &str| {
            let approx = approx.iter().find(|(n, _)| *n == name).map(|(_, a)| format!("approx_size = {a}\n"));
            format!(
                "[[model.files]]\nname = \"{name}\"\n{}urls = [\"{}\"]\n",
                approx.unwrap_or_default(),
                server.url(&format!("/{model}/{name}"))
            )
        };
        let mut text = String::from(
            "[[model]]\nname = \"test-clip\"\nkind = \"clip\"\ndescription = \"tiny CLIP\"\nlicence = \"MIT\"\n",
        );
        for name in ["config.json", "pytorch_model.bin", "tokenizer.json"] {
            text.push_str(&file("test-clip", name));
        }
        text.push_str(
            "[[model]]\nname = \"test-vqgan\"\nkind = \"vqgan\"\ndescription = \"tiny VQGAN\"\nlicence = \"MIT\"\n",
        );
        for name in ["model.yaml", "last.ckpt"] {
            text.push_str(&file("test-vqgan", name));
        }
        std::fs::write(tmp.path().join("catalog.toml"), text).expect("catalog");
        Self { tmp, server }
    }

    fn models(&self) -> PathBuf {
        self.tmp.path().join("models")
    }

    fn dir(&self, model: &str) -> PathBuf {
        self.models().join(model)
    }

    fn bin(&self) -> Command {
        let home = self.tmp.path().join("home");
        let mut c = common::bin();
        c.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("APPDATA", home.join("appdata"))
            .env("CLIPCANVAS_CATALOG", self.tmp.path().join("catalog.toml"))
            .env_remove("CLIPCANVAS_MODELS")
            .env_remove("CLIPCANVAS_MIRROR")
            .env_remove("CLIPCANVAS_DOWNLOAD_STALL_SECS")
            .current_dir(self.tmp.path());
        c
    }

    fn download(&self, model: &str) -> Output {
        let dir = self.models();
        self.bin().args(["models", "download", model, "--dir"]).arg(dir).output().expect("run clipcanvas")
    }

    fn verify(&self, model: &str) -> Output {
        let dir = self.models();
        self.bin().args(["models", "verify", model, "--models-dir"]).arg(dir).output().expect("run clipcanvas")
    }

    /// Serves the tiny fixture models under their catalog names.
    fn serve_good(&self) {
        for (name, rel) in [
            ("config.json", "clip-tiny-bin/config.json"),
            ("pytorch_model.bin", "clip-tiny-bin/pytorch_model.bin"),
            ("tokenizer.json", "clip-tiny/tokenizer.json"),
        ] {
            self.server.route(&format!("/test-clip/{name}"), read(&fixture(rel)), Mode::Serve);
        }
        self.server.route("/test-vqgan/model.yaml", read(&fixture("vqgan-tiny/model.yaml")), Mode::Serve);
        self.server.route("/test-vqgan/last.ckpt", read(&fixture("vqgan-tiny/model.ckpt")), Mode::Serve);
    }
}

/// The error line of a failed run.
fn error_line(stderr: &str) -> String {
    stderr.lines().find(|l| l.starts_with("error")).unwrap_or_default().to_owned()
}

/// Hardening issue, item 8: 12 KB of zeros served as `pytorch_model.bin` is refused,
/// naming the file and what it is; only the good file before it stays installed.
#[test]
fn zeros_named_pytorch_model_bin_are_refused_and_not_installed() {
    let env = Env::new(&[]);
    env.serve_good();
    env.server.route("/test-clip/pytorch_model.bin", vec![0u8; 12_288], Mode::Serve);
    let out = env.download("test-clip");
    let stderr = fails(&out, 1, "not a PyTorch checkpoint: it looks like 12288 bytes of zeros");
    let line = error_line(&stderr);
    assert!(line.starts_with("error: cannot download test-clip/pytorch_model.bin: "), "{line}");
    let dir = env.dir("test-clip");
    assert_eq!(files_in(&dir), [".clipcanvas-download.json", "config.json"], "no .bin, no part, no tokenizer");
    assert!(env.server.requests_for("/test-clip/tokenizer.json").is_empty(), "stopped at the bad file");
}

/// Hardening issue, item 8: a file of zeros that an earlier version installed (its record
/// vouching for its sha256) is CORRUPT to `verify`, and `download` replaces it.
#[test]
fn verify_does_not_vouch_for_a_recorded_file_of_zeros_and_download_replaces_it() {
    let env = Env::new(&[]);
    env.serve_good();
    let dir = env.dir("test-clip");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let zeros = vec![0u8; 12_288];
    let good = [
        ("config.json", read(&fixture("clip-tiny-bin/config.json"))),
        ("pytorch_model.bin", zeros.clone()),
        ("tokenizer.json", read(&fixture("clip-tiny/tokenizer.json"))),
    ];
    let mut record = serde_json::json!({ "files": {} });
    for (name, bytes) in &good {
        std::fs::write(dir.join(name), bytes).expect("write");
        record["files"][name] = serde_json::json!({ "size": bytes.len(), "sha256": sha256(bytes), "url": "u" });
    }
    std::fs::write(dir.join(".clipcanvas-download.json"), record.to_string()).expect("record");

    let out = env.verify("test-clip");
    let stderr = fails(&out, 1, "1 damaged or missing file(s)");
    assert!(error_line(&stderr).contains(&dir.join("pytorch_model.bin").display().to_string()), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(
            "CORRUPT  test-clip/pytorch_model.bin: not a PyTorch checkpoint: it looks like 12288 bytes of zeros"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("ok       test-clip/config.json") && stdout.contains("ok       test-clip/tokenizer.json"));
    assert_eq!(read(&dir.join("pytorch_model.bin")), zeros, "verify changes nothing");

    let s = ok(&env.download("test-clip"));
    assert!(
        s.stderr
            .contains("note: test-clip/pytorch_model.bin is present but cannot be trusted (not a PyTorch checkpoint"),
        "{}",
        s.stderr
    );
    assert!(s.stderr.contains("note: test-clip/config.json is already present"), "{}", s.stderr);
    assert_eq!(read(&dir.join("pytorch_model.bin")), read(&fixture("clip-tiny-bin/pytorch_model.bin")));
    assert_eq!(files_in(&dir), [".clipcanvas-download.json", "config.json", "pytorch_model.bin", "tokenizer.json"]);
    let s = ok(&env.verify("test-clip"));
    assert_eq!(s.stdout.matches("ok       test-clip/").count(), 3, "{}", s.stdout);
}

/// Hardening issue, item 8: an HTML page sent as `application/octet-stream` is refused
/// from its first bytes, without waiting for the rest (the server stalls after them).
#[test]
fn an_html_page_sent_as_octet_stream_is_refused_from_its_first_bytes() {
    let env = Env::new(&[]);
    env.serve_good();
    let mut page = b"<!DOCTYPE html>\n<html><head><title>Quota exceeded</title></head><body>".to_vec();
    while page.len() < 50_000 {
        page.extend_from_slice(b"<p>This file is unavailable right now. Try again later.</p>\n");
    }
    // Everything but the page's first 8000 bytes is held back for 20 s: only a check of
    // the first bytes can answer before the 30 s read timeout.
    env.server.route("/test-vqgan/last.ckpt", page, Mode::Stall { after: 8_000, silence: Duration::from_secs(20) });
    let out = env.download("test-vqgan");
    let stderr = fails(&out, 1, "not a PyTorch checkpoint: it looks like an HTML page");
    assert!(error_line(&stderr).starts_with("error: cannot download test-vqgan/last.ckpt: "), "{stderr}");
    assert_eq!(files_in(&env.dir("test-vqgan")), [".clipcanvas-download.json", "model.yaml"], "no checkpoint, no part");
}

/// Hardening issue, item 8: a safetensors file whose header is not valid JSON is refused.
#[test]
fn a_bad_safetensors_header_is_refused() {
    let env = Env::new(&[]);
    env.serve_good();
    let text = std::fs::read_to_string(env.tmp.path().join("catalog.toml")).expect("catalog");
    let text = text.replace("pytorch_model.bin", "model.safetensors");
    std::fs::write(env.tmp.path().join("catalog.toml"), text).expect("catalog");
    let header = br#"{"text_model.embeddings.token_embedding.weight": {"dtype": "F32", "shape": [2"#;
    let mut bad = (header.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(header);
    bad.extend_from_slice(&[0u8; 64]);
    env.server.route("/test-clip/model.safetensors", bad, Mode::Serve);
    let out = env.download("test-clip");
    let stderr = fails(&out, 1, "(not a usable safetensors file: invalid JSON in header: ");
    assert!(error_line(&stderr).starts_with("error: cannot download test-clip/model.safetensors: "), "{stderr}");
    assert_eq!(files_in(&env.dir("test-clip")), [".clipcanvas-download.json", "config.json"]);
}

/// Hardening issue, item 8: a file far from the catalog's approximate size is refused
/// from the server's Content-Length, before its body is read (the server sends no body).
#[test]
fn a_size_far_from_the_approximate_one_is_refused_from_the_content_length() {
    let env = Env::new(&[("last.ckpt", 100_000_000)]);
    env.serve_good();
    let ckpt = read(&fixture("vqgan-tiny/model.ckpt"));
    let len = ckpt.len();
    env.server.route("/test-vqgan/last.ckpt", ckpt, Mode::Stall { after: 0, silence: Duration::from_secs(20) });
    let out = env.download("test-vqgan");
    let stderr = fails(
        &out,
        1,
        &format!("the server's file is 1.7 MB ({len} bytes), far from the ~100.0 MB the catalog expects (more than 2\u{d7} off)"),
    );
    assert!(error_line(&stderr).starts_with("error: cannot download test-vqgan/last.ckpt: "), "{stderr}");
    assert_eq!(files_in(&env.dir("test-vqgan")), [".clipcanvas-download.json", "model.yaml"], "no part kept");
}

/// Hardening issue, item 8: a server that sends a byte at a time is abandoned once a
/// stall window (1.5 s here, set by the hidden variable) brings less than the minimum;
/// the part is kept and the next run resumes from it.
#[test]
fn a_trickling_server_is_abandoned_as_stalled_and_the_next_run_resumes() {
    let env = Env::new(&[]);
    env.serve_good();
    let ckpt = read(&fixture("vqgan-tiny/model.ckpt"));
    env.server.route("/test-vqgan/last.ckpt", ckpt.clone(), Mode::Slow { chunk: 1, delay: Duration::from_millis(100) });
    let out = env
        .bin()
        .env("CLIPCANVAS_DOWNLOAD_STALL_SECS", "1.5")
        .args(["models", "download", "test-vqgan", "--dir"])
        .arg(env.models())
        .output()
        .expect("run");
    let stderr = fails(&out, 1, "download stalled: ");
    assert!(error_line(&stderr).starts_with("error: cannot download test-vqgan/last.ckpt: "), "{stderr}");
    let dir = env.dir("test-vqgan");
    assert_eq!(files_in(&dir), [".clipcanvas-download.json", "last.ckpt.part", "model.yaml"]);
    let part = read(&dir.join("last.ckpt.part"));
    assert!(!part.is_empty() && part.len() < 1000, "{} bytes kept", part.len());
    assert_eq!(part[..], ckpt[..part.len()], "the part holds the file's first bytes");

    env.server.route("/test-vqgan/last.ckpt", ckpt.clone(), Mode::Serve);
    let s = ok(&env.download("test-vqgan"));
    assert!(s.stdout.contains("installed test-vqgan in"), "{}", s.stdout);
    let last = env.server.requests_for("/test-vqgan/last.ckpt").pop().expect("request");
    assert_eq!(last.range, Some(format!("bytes={}-", part.len())), "resumed from the part");
    assert_eq!(read(&dir.join("last.ckpt")), ckpt);
    assert_eq!(files_in(&dir), [".clipcanvas-download.json", "last.ckpt", "model.yaml"]);
}

/// Hardening issue, item 8: a malformed download record never passes for verified: the
/// files it covered are UNVERIFIED (exit 1), and downloading again restores the check.
#[test]
fn a_malformed_download_record_leaves_files_unverified_until_downloaded_again() {
    let env = Env::new(&[]);
    env.serve_good();
    ok(&env.download("test-vqgan"));
    let dir = env.dir("test-vqgan");
    let record = dir.join(".clipcanvas-download.json");
    let text = std::fs::read_to_string(&record).expect("record");
    std::fs::write(&record, &text[..text.len() / 2]).expect("truncate the record");

    let out = env.verify("test-vqgan");
    let stderr = fails(&out, 1, "2 file(s) could not be verified, their download record being damaged");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for f in ["model.yaml", "last.ckpt"] {
        assert!(
            stdout.contains(&format!(
                "UNVERIFIED test-vqgan/{f}: the download record .clipcanvas-download.json is damaged: not valid"
            )),
            "{stdout}"
        );
    }
    assert!(!stdout.contains("ok ") && !stdout.contains("unknown "), "{stdout}");
    assert!(stderr.trim().lines().count() == 1, "{stderr}");
    let before = (read(&dir.join("model.yaml")), read(&dir.join("last.ckpt")));

    let s = ok(&env.download("test-vqgan"));
    for f in ["model.yaml", "last.ckpt"] {
        let note = format!("note: test-vqgan/{f} is present but cannot be trusted (");
        assert!(s.stderr.contains(&note), "{}", s.stderr);
    }
    assert!(s.stderr.contains("download record .clipcanvas-download.json is damaged: not valid"), "{}", s.stderr);
    assert_eq!((read(&dir.join("model.yaml")), read(&dir.join("last.ckpt"))), before, "the same files again");
    let rewritten: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record).expect("record"))
        .expect("the record is whole JSON again");
    assert_eq!(rewritten["lost_entries"], true, "{rewritten}");
    let s = ok(&env.verify("test-vqgan"));
    assert_eq!(s.stdout.matches("(sha256 matches the download record)").count(), 2, "{}", s.stdout);
    assert_eq!(files_in(&dir), [".clipcanvas-download.json", "last.ckpt", "model.yaml"]);
}

/// Hardening issue, item 8: with every check in place, a good download (sizes within the
/// approximate ones) still installs, verifies and loads.
#[test]
fn a_good_download_still_installs_and_verifies() {
    let bin_len = read(&fixture("clip-tiny-bin/pytorch_model.bin")).len() as u64;
    let env = Env::new(&[("pytorch_model.bin", bin_len * 3 / 2), ("tokenizer.json", 2_200_000)]);
    env.serve_good();
    let s = ok(&env.download("test-clip"));
    let dir = env.dir("test-clip");
    assert!(s.stdout.contains(&format!("installed test-clip in {}", dir.display())), "{}", s.stdout);
    assert!(!s.stderr.contains("panicked"), "{}", s.stderr);
    assert_eq!(files_in(&dir), [".clipcanvas-download.json", "config.json", "pytorch_model.bin", "tokenizer.json"]);
    assert_eq!(read(&dir.join("pytorch_model.bin")), read(&fixture("clip-tiny-bin/pytorch_model.bin")));
    let s = ok(&env.verify("test-clip"));
    assert_eq!(s.stdout.matches("(sha256 matches the download record)").count(), 3, "{}", s.stdout);
    // Run again: nothing to fetch.
    let before = env.server.requests().len();
    let s = ok(&env.download("test-clip"));
    assert!(s.stdout.contains("test-clip is already installed in"), "{}", s.stdout);
    assert_eq!(env.server.requests().len(), before);
}
