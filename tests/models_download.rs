//! The downloader against a real HTTP server on 127.0.0.1 (issue: "Model manager: the real
//! models, found, downloaded and verified", item 6): a full download; resume after the
//! server drops the connection mid-file (and after an earlier run left a part); a server
//! that ignores Range; a wrong hash rejected with nothing installed; a 404 falling through
//! to the next mirror; a private mirror tried first; a slow server still reporting
//! progress; a stalled server timing out; cancel leaving no partial file behind; and the
//! offline message when every address fails.

mod common;

use common::{files_in, read};

#[path = "support/http_server.rs"]
mod http_server;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clipcanvas::catalog::download::{DownloadObserver, DownloadOptions, Downloader, Progress};
use clipcanvas::catalog::entries::Catalog;
use clipcanvas::catalog::store::{Record, Root, RootKind, Store};
use clipcanvas::catalog::CatalogError;
use http_server::{sha256, Mode, Request, Server};

/// The tiny VQGAN fixture: a real YAML and a real Lightning checkpoint, so that every
/// download passes the format check.
fn fixture(rel: &str) -> Vec<u8> {
    read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel))
}

/// A one-model catalog: `model.yaml` and `last.ckpt`, each with the given URLs, size and
/// sha256 lines.
fn catalog(yaml_urls: &[String], ckpt_urls: &[String], ckpt_check: &str) -> Catalog {
    let list = |urls: &[String]| urls.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
    let text = format!(
        r#"
[[model]]
name = "test-vqgan"
kind = "vqgan"
description = "a test model"
licence = "MIT"
[[model.files]]
name = "model.yaml"
urls = [{}]
[[model.files]]
name = "last.ckpt"
{ckpt_check}
urls = [{}]
"#,
        list(yaml_urls),
        list(ckpt_urls)
    );
    Catalog::parse(&text, "test catalog").unwrap_or_else(|e| panic!("{e}"))
}

fn checked(data: &[u8]) -> String {
    format!("size = {}\nsha256 = \"{}\"", data.len(), sha256(data))
}

fn fast() -> DownloadOptions {
    DownloadOptions {
        progress_every: Duration::from_millis(1),
        resume_delay: Duration::from_millis(10),
        read_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..DownloadOptions::default()
    }
}

/// Records everything the downloader reports.
#[derive(Default, Clone)]
struct Seen {
    progress: Arc<Mutex<Vec<Progress>>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl DownloadObserver for Seen {
    fn progress(&mut self, p: &Progress) {
        self.progress.lock().expect("lock").push(p.clone());
    }

    fn note(&mut self, message: &str) {
        self.notes.lock().expect("lock").push(message.to_owned());
    }
}

impl Seen {
    fn for_file(&self, file: &str) -> Vec<Progress> {
        self.progress.lock().expect("lock").iter().filter(|p| p.file == file).cloned().collect()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("lock").clone()
    }
}

struct Setup {
    server: Server,
    root: tempfile::TempDir,
    yaml: Vec<u8>,
    weights: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let server = Server::start();
        let yaml = fixture("vqgan-tiny/model.yaml");
        let weights = fixture("vqgan-tiny/model.ckpt");
        server.route("/model.yaml", yaml.clone(), Mode::Serve);
        Self { server, root: tempfile::tempdir().expect("temp"), yaml, weights }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.root.path().join("test-vqgan")
    }

    fn install(
        &self,
        cat: &Catalog,
        opts: DownloadOptions,
        seen: &mut Seen,
    ) -> Result<std::path::PathBuf, CatalogError> {
        let entry = cat.find("test-vqgan").expect("entry");
        Downloader::new(opts).install(entry, self.root.path(), seen, &AtomicBool::new(false))
    }

    fn yaml_urls(&self) -> Vec<String> {
        vec![self.server.url("/model.yaml")]
    }
}

#[test]
fn a_full_download_installs_the_exact_bytes_and_records_them() {
    let s = Setup::new();
    s.server.route("/last.ckpt", s.weights.clone(), Mode::Serve);
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    let mut seen = Seen::default();
    let dir = s.install(&cat, fast(), &mut seen).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dir, s.dir());
    assert_eq!(read(&dir.join("last.ckpt")), s.weights);
    assert_eq!(read(&dir.join("model.yaml")), s.yaml);
    assert_eq!(files_in(&dir), vec![".clipcanvas-download.json", "last.ckpt", "model.yaml"], "no .part left");
    assert_eq!(s.server.requests_for("/last.ckpt"), vec![Request { path: "/last.ckpt".into(), range: None }]);
    let record = Record::read(&dir);
    assert_eq!(record.files["last.ckpt"].sha256, sha256(&s.weights));
    let len = s.weights.len() as u64;
    assert_eq!(record.files["last.ckpt"].size, len);
    assert_eq!(record.files["model.yaml"].url, s.server.url("/model.yaml"));
    let last = seen.for_file("last.ckpt").last().cloned().expect("progress");
    assert_eq!((last.done, last.total, last.file_index, last.file_count), (len, Some(len), 1, 2));

    // The store now sees it installed and resolves the name to the files.
    let store = Store::new(cat, vec![Root { path: s.root.path().to_path_buf(), kind: RootKind::Explicit }]);
    let (yaml, ckpt) = store.resolve_vqgan("test-vqgan").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((yaml, ckpt), (dir.join("model.yaml"), dir.join("last.ckpt")));

    // A second install finds both files present and asks the server for nothing.
    let before = s.server.requests().len();
    s.install(&store.catalog().clone(), fast(), &mut Seen::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.server.requests().len(), before);
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let s = Setup::new();
    s.server.route("/last.ckpt", s.weights.clone(), Mode::DropAfter { after: 100_000, times: 1 });
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    let mut seen = Seen::default();
    let dir = s.install(&cat, fast(), &mut seen).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&dir.join("last.ckpt")), s.weights, "resumed bytes join up exactly");
    let ranges: Vec<Option<String>> = s.server.requests_for("/last.ckpt").into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, vec![None, Some("bytes=100000-".to_owned())]);
    assert!(
        seen.notes().iter().any(|n| n.contains(&format!("100000 of {}", s.weights.len())) && n.contains("resuming")),
        "{:?}",
        seen.notes()
    );
    assert!(!dir.join("last.ckpt.part").exists());
    // Progress carried on from the resumed offset, never back to zero.
    let done: Vec<u64> = seen.for_file("last.ckpt").iter().map(|p| p.done).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
}

#[test]
fn a_part_left_by_an_interrupted_run_is_resumed_by_the_next() {
    let s = Setup::new();
    s.server.route("/last.ckpt", s.weights.clone(), Mode::DropAfter { after: 120_000, times: 1 });
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    let no_resume = DownloadOptions { resumes: 0, ..fast() };
    let err = s.install(&cat, no_resume, &mut Seen::default()).expect_err("the drop ends the first run");
    assert!(err.to_string().contains("connection"), "{err}");
    let part = s.dir().join("last.ckpt.part");
    assert_eq!(read(&part), s.weights[..120_000], "the part keeps what arrived");
    assert!(!s.dir().join("last.ckpt").exists());

    s.install(&cat, fast(), &mut Seen::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&s.dir().join("last.ckpt")), s.weights);
    let last = s.server.requests_for("/last.ckpt").pop().expect("request");
    assert_eq!(last.range.as_deref(), Some("bytes=120000-"));
    assert!(!part.exists());
}

#[test]
fn a_server_that_ignores_range_is_read_again_from_the_start() {
    let s = Setup::new();
    s.server.route("/last.ckpt", s.weights.clone(), Mode::IgnoreRange);
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    std::fs::create_dir_all(s.dir()).expect("mkdir");
    // A stale part whose bytes would corrupt the file if they were kept.
    std::fs::write(s.dir().join("last.ckpt.part"), vec![0xEE; 5000]).expect("part");
    let mut seen = Seen::default();
    s.install(&cat, fast(), &mut seen).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&s.dir().join("last.ckpt")), s.weights);
    assert_eq!(s.server.requests_for("/last.ckpt")[0].range.as_deref(), Some("bytes=5000-"));
    assert!(seen.notes().iter().any(|n| n.contains("cannot resume")), "{:?}", seen.notes());
}

#[test]
fn a_wrong_hash_is_rejected_and_nothing_is_installed() {
    let s = Setup::new();
    let mut tampered = s.weights.clone();
    tampered[1234] ^= 0x01;
    s.server.route("/a/last.ckpt", tampered.clone(), Mode::Serve);
    s.server.route("/b/last.ckpt", tampered, Mode::Serve);
    let urls = [s.server.url("/a/last.ckpt"), s.server.url("/b/last.ckpt")];
    let cat = catalog(&s.yaml_urls(), &urls, &checked(&s.weights));
    let err = s.install(&cat, fast(), &mut Seen::default()).expect_err("hash mismatch");
    let msg = err.to_string();
    assert!(matches!(err, CatalogError::Download { .. }), "{msg}");
    assert_eq!(msg.matches("sha256 mismatch").count(), 2, "both mirrors named: {msg}");
    assert!(msg.contains(&urls[0]) && msg.contains(&urls[1]), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    let dir = s.dir();
    assert!(!dir.join("last.ckpt").exists(), "nothing installed");
    assert!(!dir.join("last.ckpt.part").exists(), "no part kept");
    // Both mirrors were asked for the whole file: the bad part was not resumed.
    assert!(s.server.requests_for("/b/last.ckpt").iter().all(|r| r.range.is_none()));
    let help = err.help().expect("help");
    assert!(help.contains(&dir.display().to_string()) && help.contains(&urls[1]), "{help}");
}

#[test]
fn a_size_the_catalog_disagrees_with_is_rejected_before_downloading() {
    let s = Setup::new();
    s.server.route("/last.ckpt", s.weights[..1000].to_vec(), Mode::Serve);
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    let err = s.install(&cat, fast(), &mut Seen::default()).expect_err("wrong size");
    let want = format!("has 1000 bytes, the catalog expects {}", s.weights.len());
    assert!(err.to_string().contains(&want), "{err}");
    assert!(!s.dir().join("last.ckpt").exists());
    assert!(!s.dir().join("last.ckpt.part").exists());
}

#[test]
fn a_404_falls_through_to_the_next_mirror() {
    let s = Setup::new();
    s.server.route("/gone/last.ckpt", Vec::new(), Mode::NotFound);
    s.server.route("/good/last.ckpt", s.weights.clone(), Mode::Serve);
    let urls = [s.server.url("/gone/last.ckpt"), s.server.url("/good/last.ckpt")];
    let cat = catalog(&s.yaml_urls(), &urls, "");
    let mut seen = Seen::default();
    s.install(&cat, fast(), &mut seen).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&s.dir().join("last.ckpt")), s.weights);
    let paths: Vec<String> =
        s.server.requests().into_iter().map(|r| r.path).filter(|p| p.ends_with("last.ckpt")).collect();
    assert_eq!(paths, vec!["/gone/last.ckpt", "/good/last.ckpt"], "the 404 mirror first, then the next");
    assert!(seen.notes().iter().any(|n| n.contains("HTTP 404") && n.contains("/gone/")), "{:?}", seen.notes());
    assert_eq!(Record::read(&s.dir()).files["last.ckpt"].url, urls[1]);
}

#[test]
fn a_private_mirror_is_tried_before_the_catalog() {
    let s = Setup::new();
    s.server.route("/mirror/test-vqgan/model.yaml", s.yaml.clone(), Mode::Serve);
    s.server.route("/mirror/test-vqgan/last.ckpt", s.weights.clone(), Mode::Serve);
    s.server.route("/last.ckpt", Vec::new(), Mode::NotFound);
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    let opts = DownloadOptions { mirror: Some(format!("{}/mirror/", s.server.base())), ..fast() };
    s.install(&cat, opts, &mut Seen::default()).unwrap_or_else(|e| panic!("{e}"));
    let paths: Vec<String> = s.server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/mirror/test-vqgan/model.yaml", "/mirror/test-vqgan/last.ckpt"]);
    assert_eq!(read(&s.dir().join("last.ckpt")), s.weights);
}

#[test]
fn an_html_page_instead_of_the_file_is_refused() {
    let s = Setup::new();
    s.server.route("/last.ckpt", Vec::new(), Mode::Html);
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], "");
    let err = s.install(&cat, fast(), &mut Seen::default()).expect_err("html");
    assert!(err.to_string().contains("web page instead of the file"), "{err}");
    assert!(!s.dir().join("last.ckpt").exists());
}

#[test]
fn a_file_of_the_wrong_format_from_one_address_falls_through_to_the_next() {
    let s = Setup::new();
    // An HTML error page under a 200 and application/octet-stream: only its bytes tell.
    s.server.route("/bad/last.ckpt", b"<html><body>Bandwidth exceeded</body></html>".to_vec(), Mode::Serve);
    s.server.route("/good/last.ckpt", s.weights.clone(), Mode::Serve);
    let urls = [s.server.url("/bad/last.ckpt"), s.server.url("/good/last.ckpt")];
    let cat = catalog(&s.yaml_urls(), &urls, "");
    let mut seen = Seen::default();
    s.install(&cat, fast(), &mut seen).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&s.dir().join("last.ckpt")), s.weights);
    assert!(
        seen.notes().iter().any(|n| n.contains("/bad/") && n.contains("it looks like an HTML page")),
        "{:?}",
        seen.notes()
    );
    assert_eq!(Record::read(&s.dir()).files["last.ckpt"].url, urls[1]);
    assert_eq!(files_in(&s.dir()), vec![".clipcanvas-download.json", "last.ckpt", "model.yaml"]);
}

#[test]
fn a_trickle_below_the_minimum_rate_is_abandoned_keeping_the_part() {
    let s = Setup::new();
    s.server.route("/last.ckpt", s.weights.clone(), Mode::Slow { chunk: 10, delay: Duration::from_millis(50) });
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    // 200 B/s against a minimum of 1 KB/s over 0.5 s windows.
    let opts = DownloadOptions { stall_window: Duration::from_millis(500), ..fast() };
    let err = s.install(&cat, opts, &mut Seen::default()).expect_err("stalled");
    let msg = err.to_string();
    assert!(msg.contains("download stalled: ") && msg.contains("less than 1.0 KB/s"), "{msg}");
    let part = read(&s.dir().join("last.ckpt.part"));
    assert!(!part.is_empty() && part[..] == s.weights[..part.len()], "{} bytes kept", part.len());
    assert!(!s.dir().join("last.ckpt").exists());
    assert_eq!(s.server.requests_for("/last.ckpt").len(), 1, "a stall is not resumed from the same server");
}

#[test]
fn a_slow_server_still_reports_progress_with_rate_and_eta() {
    let s = Setup::new();
    let data = s.weights.clone();
    let len = data.len() as u64;
    s.server.route("/last.ckpt", data.clone(), Mode::Slow { chunk: 40_000, delay: Duration::from_millis(40) });
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&data));
    // Reads time out after 2 s of silence; the server is slow (40 ms per chunk), not dead.
    let opts =
        DownloadOptions { read_timeout: Duration::from_secs(2), progress_every: Duration::from_millis(50), ..fast() };
    let mut seen = Seen::default();
    let started = Instant::now();
    s.install(&cat, opts, &mut seen).unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() >= Duration::from_millis(600), "the server really was slow");
    assert_eq!(read(&s.dir().join("last.ckpt")), data);
    let reports = seen.for_file("last.ckpt");
    assert!(reports.len() > 5, "only {} progress reports", reports.len());
    let done: Vec<u64> = reports.iter().map(|p| p.done).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "bytes never go back: {done:?}");
    assert!(done.windows(2).filter(|w| w[0] < w[1]).count() > 4, "bytes increase: {done:?}");
    assert_eq!(done.last(), Some(&len));
    let mid = &reports[reports.len() / 2];
    assert!(mid.rate > 10_000.0 && mid.rate < 2_000_000.0, "rate {} B/s", mid.rate);
    assert!(mid.eta.is_some_and(|e| e < Duration::from_secs(30)), "{:?}", mid.eta);
    assert_eq!(mid.total, Some(len));
}

#[test]
fn a_stalled_server_times_out_instead_of_hanging() {
    let s = Setup::new();
    s.server.route("/last.ckpt", s.weights.clone(), Mode::Stall { after: 1000, silence: Duration::from_secs(20) });
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&s.weights));
    let opts = DownloadOptions { read_timeout: Duration::from_millis(300), resumes: 0, ..fast() };
    let started = Instant::now();
    let err = s.install(&cat, opts, &mut Seen::default()).expect_err("stalled");
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    let want = format!("connection lost at 1000 of {} bytes", s.weights.len());
    assert!(err.to_string().contains(&want), "{err}");
    assert!(!s.dir().join("last.ckpt").exists());
}

#[test]
fn cancel_stops_the_download_and_leaves_no_partial_file() {
    let s = Setup::new();
    let data = s.weights.clone();
    s.server.route("/last.ckpt", data.clone(), Mode::Slow { chunk: 4_000, delay: Duration::from_millis(20) });
    let cat = catalog(&s.yaml_urls(), &[s.server.url("/last.ckpt")], &checked(&data));
    let cancel = Arc::new(AtomicBool::new(false));
    let seen = Seen::default();
    let root = s.root.path().to_path_buf();
    let worker = {
        let (cancel, mut seen, cat) = (Arc::clone(&cancel), seen.clone(), cat.clone());
        std::thread::Builder::new()
            .name("test-download".into())
            .spawn(move || {
                let entry = cat.find("test-vqgan").expect("entry");
                Downloader::new(fast()).install(entry, &root, &mut seen, &cancel)
            })
            .expect("spawn")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.for_file("last.ckpt").iter().all(|p| p.done < 20_000) {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(s.dir().join("last.ckpt.part").exists(), "the part exists while downloading");
    let asked = Instant::now();
    cancel.store(true, Ordering::Relaxed);
    let result = worker.join().expect("join");
    assert!(asked.elapsed() < Duration::from_secs(2), "cancel took {:?}", asked.elapsed());
    assert!(matches!(result, Err(CatalogError::Cancelled)), "{result:?}");
    assert!(!s.dir().join("last.ckpt.part").exists(), "no partial file");
    assert!(!s.dir().join("last.ckpt").exists());
    assert_eq!(read(&s.dir().join("model.yaml")), s.yaml, "the file completed before the cancel stays");
}

#[test]
fn when_every_address_fails_the_error_says_what_to_fetch_by_hand_and_where() {
    let s = Setup::new();
    s.server.route("/gone/last.ckpt", Vec::new(), Mode::NotFound);
    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let urls = [s.server.url("/gone/last.ckpt"), format!("http://127.0.0.1:{closed}/last.ckpt")];
    let cat = catalog(&s.yaml_urls(), &urls, "");
    let err = s.install(&cat, fast(), &mut Seen::default()).expect_err("offline");
    let msg = err.to_string();
    assert!(msg.starts_with("cannot download test-vqgan/last.ckpt: "), "{msg}");
    assert!(msg.contains(&format!("{} (HTTP 404 Not Found)", urls[0])), "{msg}");
    assert!(msg.contains(&urls[1]), "{msg}");
    let help = err.help().expect("help");
    let dir = s.dir().display().to_string();
    assert!(help.contains(&format!("into {dir}")), "{help}");
    for needle in ["model.yaml", "last.ckpt", urls[0].as_str(), urls[1].as_str()] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
    assert!(!s.dir().join("last.ckpt").exists());
}
