//! `clipcanvas models` as a process (issue: "Model manager: the real models, found,
//! downloaded and verified"): download from a private mirror on 127.0.0.1, list showing
//! installed / missing / corrupt, verify naming a damaged file, Ctrl-C leaving no partial
//! file, unknown names, and `generate` taking catalog names (and saying what to download
//! when a named model is not installed). Each process gets its own HOME, so the user's
//! real data folder is never read or written.

mod common;

use common::{fails, ok, read};

#[path = "support/http_server.rs"]
mod http_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use http_server::{Mode, Server};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A temporary home (so the platform data folder is inside it) and a models folder.
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self { tmp: tempfile::tempdir().expect("temp") }
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn models(&self) -> PathBuf {
        self.tmp.path().join("models")
    }

    /// The binary with HOME and the data folder inside the temp dir, and
    /// `CLIPCANVAS_MODELS` pointing at our models folder.
    fn bin(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_clipcanvas"));
        c.env("HOME", self.home())
            .env("XDG_DATA_HOME", self.home().join("data"))
            .env("APPDATA", self.home().join("appdata"))
            .env("CLIPCANVAS_MODELS", self.models())
            .env_remove("CLIPCANVAS_MIRROR")
            .env_remove("CLIPCANVAS_CATALOG")
            .env_remove("CLIPCANVAS_DOWNLOAD_STALL_SECS")
            .current_dir(self.tmp.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.bin().args(args).output().expect("run clipcanvas")
    }
}

/// The `models list` line of one model.
fn line_of(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} in {list}"))
        .to_owned()
}

/// A mirror serving the tiny VQGAN fixture as `vqgan-sflckr` and the tiny CLIP fixture as
/// `clip-vit-l-14` (the catalog's files for those names).
fn mirror() -> Server {
    let s = Server::start();
    s.route("/vqgan-sflckr/model.yaml", read(&fixture("vqgan-tiny/model.yaml")), Mode::Serve);
    s.route("/vqgan-sflckr/last.ckpt", read(&fixture("vqgan-tiny/model.ckpt")), Mode::Serve);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        s.route(&format!("/clip-vit-l-14/{f}"), read(&fixture(&format!("clip-tiny/{f}"))), Mode::Serve);
    }
    s
}

#[test]
fn download_then_list_and_verify_find_installed_corrupt_and_truncated_files() {
    let env = Env::new();
    let server = mirror();
    let dest = env.tmp.path().join("dest");
    let out =
        env.run(&["models", "download", "vqgan-sflckr", "--mirror", &server.base(), "--dir", &dest.to_string_lossy()]);
    let stdout = ok(&out).stdout;
    let dir = dest.join("vqgan-sflckr");
    assert!(stdout.contains(&format!("installed vqgan-sflckr in {}", dir.display())), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("downloading vqgan-sflckr/last.ckpt (2/2)"), "{stderr}");
    assert_eq!(read(&dir.join("last.ckpt")), read(&fixture("vqgan-tiny/model.ckpt")));
    assert_eq!(read(&dir.join("model.yaml")), read(&fixture("vqgan-tiny/model.yaml")));
    assert!(!dir.join("last.ckpt.part").exists() && !dir.join("model.yaml.part").exists());
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/vqgan-sflckr/model.yaml", "/vqgan-sflckr/last.ckpt"], "only the mirror was asked");

    // Found through CLIPCANVAS_MODELS.
    let list = |env: &Env| {
        let mut c = env.bin();
        c.env("CLIPCANVAS_MODELS", &dest);
        ok(&c.args(["models", "list"]).output().expect("run")).stdout
    };
    let listed = list(&env);
    let header = listed.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>();
    assert_eq!(header, ["NAME", "KIND", "SIZE", "STATUS", "LOCATION"]);
    let line = line_of(&listed, "vqgan-sflckr");
    assert!(line.contains(" installed ") && line.ends_with(&dir.display().to_string()), "{line}");
    let coco = line_of(&listed, "vqgan-coco");
    assert!(coco.contains("vqgan") && coco.contains("~8.4 GB") && coco.trim_end().ends_with("missing"), "{coco}");
    assert!(listed.contains(&format!("{} (CLIPCANVAS_MODELS)", dest.display())), "{listed}");

    let verify = |env: &Env| {
        let mut c = env.bin();
        c.env("CLIPCANVAS_MODELS", &dest);
        c.args(["models", "verify", "vqgan-sflckr"]).output().expect("run")
    };
    let checked = ok(&verify(&env)).stdout;
    assert!(checked.contains("ok       vqgan-sflckr/last.ckpt (sha256 matches the download record)"), "{checked}");

    // One flipped byte: same size, so `list` still says installed; `verify` names it.
    let ckpt = dir.join("last.ckpt");
    let mut bytes = read(&ckpt);
    bytes[4096] ^= 0x40;
    std::fs::write(&ckpt, &bytes).expect("write");
    assert!(line_of(&list(&env), "vqgan-sflckr").contains(" installed "));
    let out = verify(&env);
    let stderr = fails(&out, 1, &ckpt.display().to_string());
    assert!(stderr.contains("1 damaged or missing file(s)"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("CORRUPT  vqgan-sflckr/last.ckpt: sha256 mismatch"), "{stdout}");
    assert!(stdout.contains("ok       vqgan-sflckr/model.yaml"), "{stdout}");

    // Truncated: `list` sees it from the size alone.
    let full = bytes.len();
    std::fs::write(&ckpt, &bytes[..1000]).expect("write");
    let line = line_of(&list(&env), "vqgan-sflckr");
    assert!(line.contains(&format!("corrupt: last.ckpt truncated: 1000 of {full} bytes")), "{line}");

    // Downloading again repairs it.
    ok(&env.run(&["models", "download", "vqgan-sflckr", "--mirror", &server.base(), "--dir", &dest.to_string_lossy()]));
    assert_eq!(read(&ckpt), read(&fixture("vqgan-tiny/model.ckpt")));
    ok(&verify(&env));
}

#[test]
fn bundled_models_are_listed_as_bundled_and_not_downloadable() {
    let env = Env::new();
    let listed = ok(&env.run(&["models", "list"])).stdout;
    let line = line_of(&listed, "shapes-clip");
    let bundled_here = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shapes-world/clip/config.json").is_file();
    if bundled_here {
        assert!(line.contains(" installed "), "{line}");
    } else {
        assert!(line.contains("missing (bundled with the source; see README)"), "{line}");
    }
    fails(
        &env.run(&["models", "download", "shapes-vqgan"]),
        2,
        "shapes-vqgan is bundled with the source and cannot be downloaded",
    );
}

#[test]
fn unknown_model_names_are_bad_input_listing_the_known_ones() {
    let env = Env::new();
    for args in [["models", "download", "vqgan-nope"], ["models", "verify", "vqgan-nope"]] {
        let stderr = fails(&env.run(&args), 2, "error: unknown model 'vqgan-nope' (known: clip-vit-b-32, ");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("vqgan-imagenet-f16-16384"), "{stderr}");
    }
    assert!(!env.home().join("data/clipcanvas").exists(), "nothing created for bad input");
}

#[test]
fn ctrl_c_cancels_a_download_and_leaves_no_partial_file() {
    let env = Env::new();
    let server = Server::start();
    server.route("/vqgan-faceshq/model.yaml", read(&fixture("vqgan-tiny/model.yaml")), Mode::Serve);
    // A real checkpoint (the first bytes are checked as they arrive), sent slowly.
    let ckpt = read(&fixture("vqgan-tiny/model.ckpt"));
    server.route("/vqgan-faceshq/last.ckpt", ckpt, Mode::Slow { chunk: 2_000, delay: Duration::from_millis(20) });
    let dest = env.tmp.path().join("dest");
    let mut child = env
        .bin()
        .args(["models", "download", "vqgan-faceshq", "--mirror", &server.base(), "--dir", &dest.to_string_lossy()])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    // Wait until the checkpoint is streaming, then interrupt.
    loop {
        let line = lines.next().expect("a progress line").expect("utf8");
        if line.contains("vqgan-faceshq/last.ckpt:") {
            break;
        }
    }
    let part = dest.join("vqgan-faceshq/last.ckpt.part");
    assert!(part.exists(), "downloading into a part file");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let code = child.wait().expect("wait").code();
    assert_eq!(code, Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("download of vqgan-faceshq cancelled; no partial file left behind")),
        "{rest:?}"
    );
    assert!(!part.exists(), "no partial file");
    assert!(!dest.join("vqgan-faceshq/last.ckpt").exists());
}

#[test]
fn generate_takes_catalog_names_for_installed_models() {
    let env = Env::new();
    let server = mirror();
    let models = env.models();
    // The tiny fixture is far smaller than the real ViT-L/14 the built-in catalog sizes
    // approximately: the same catalog without approximate sizes lets it through.
    let catalog = env.tmp.path().join("catalog.toml");
    let text: String = clipcanvas::catalog::entries::BUILTIN_CATALOG
        .lines()
        .filter(|l| !l.starts_with("approx_size"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&catalog, text).expect("catalog");
    let run = |args: &[&str]| env.bin().env("CLIPCANVAS_CATALOG", &catalog).args(args).output().expect("run");
    let out = run(&[
        "models",
        "download",
        "clip-vit-l-14",
        "vqgan-sflckr",
        "--mirror",
        &server.base(),
        "--dir",
        &models.to_string_lossy(),
    ]);
    let stdout = ok(&out).stdout;
    assert!(stdout.contains("installed clip-vit-l-14") && stdout.contains("installed vqgan-sflckr"), "{stdout}");
    let out = run(&[
        "generate",
        "--clip",
        "clip-vit-l-14",
        "--vqgan",
        "vqgan-sflckr",
        "-s",
        "32x32",
        "--cutn",
        "2",
        "-i",
        "2",
        "-p",
        "a lighthouse at dusk",
        "-o",
        "named.png",
    ]);
    ok(&out);
    let png = env.tmp.path().join("named.png");
    let meta = clipcanvas::export::read_png_metadata(&png).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["models"]["clip"]["name"], "clip-vit-l-14");
    assert_eq!(v["settings"]["vqgan"], models.join("vqgan-sflckr/last.ckpt").display().to_string());
    assert_eq!(v["settings"]["vqgan_config"], models.join("vqgan-sflckr/model.yaml").display().to_string());
}

#[test]
fn generate_with_a_model_that_is_not_installed_says_what_to_download_and_where() {
    let env = Env::new();
    let out = env.run(&["generate", "--clip", "clip-vit-b-32", "--vqgan", "vqgan-coco", "-p", "x"]);
    let stderr = fails(
        &out,
        2,
        "error: model 'clip-vit-b-32' is not installed (run `clipcanvas models download clip-vit-b-32`)",
    );
    let folder = env.models().join("clip-vit-b-32");
    assert!(stderr.contains(&format!("into {}", folder.display())), "{stderr}");
    for needle in [
        "config.json",
        "tokenizer.json",
        "https://huggingface.co/openai/clip-vit-base-patch32/resolve/main/pytorch_model.bin",
        "https://hf-mirror.com/openai/clip-vit-base-patch32/resolve/main/pytorch_model.bin",
    ] {
        assert!(stderr.contains(needle), "{needle} in {stderr}");
    }
    // A CLIP name given for the VQGAN is caught as bad input too.
    fails(&env.run(&["generate", "--vqgan", "clip-vit-b-32", "-p", "x"]), 2, "is a clip model, not a vqgan model");
}
