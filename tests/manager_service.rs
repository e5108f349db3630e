//! The studio's model-manager service on a real HTTP server on 127.0.0.1: a download
//! reported as progress then "finished" with fresh statuses, the paths of the installed
//! model, a cancel reported as such with no partial file, and a failure carrying the
//! by-hand instructions; the UI's waker is called.

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clipcanvas::catalog::download::DownloadOptions;
use clipcanvas::catalog::entries::Catalog;
use clipcanvas::catalog::service::{ManagerEvent, ModelManager, ModelPaths, ModelStatus};
use clipcanvas::catalog::store::{Root, RootKind, Store};
use http_server::{Mode, Server};

/// The tiny VQGAN fixture's files: every download passes the format check.
fn fixture(rel: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqgan-tiny").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn entry(name: &str, base: &str) -> String {
    format!(
        r#"
[[model]]
name = "{name}"
kind = "vqgan"
description = "test"
licence = "MIT"
[[model.files]]
name = "model.yaml"
urls = ["{base}/{name}/model.yaml"]
[[model.files]]
name = "last.ckpt"
urls = ["{base}/{name}/last.ckpt"]
"#
    )
}

struct Setup {
    server: Server,
    root: tempfile::TempDir,
    manager: ModelManager,
    wakes: Arc<AtomicUsize>,
}

fn setup() -> Setup {
    let server = Server::start();
    let text = ["fast", "slow", "gone"].iter().map(|n| entry(n, &server.base())).collect::<String>();
    let catalog = Catalog::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"));
    let root = tempfile::tempdir().expect("temp");
    let store = Store::new(catalog, vec![Root { path: root.path().to_path_buf(), kind: RootKind::Explicit }]);
    let wakes = Arc::new(AtomicUsize::new(0));
    let waker = {
        let wakes = Arc::clone(&wakes);
        Arc::new(move || {
            wakes.fetch_add(1, Ordering::Relaxed);
        })
    };
    let opts = DownloadOptions { progress_every: Duration::from_millis(5), ..DownloadOptions::default() };
    let manager = ModelManager::spawn(store, opts, waker).expect("spawn");
    Setup { server, root, manager, wakes }
}

/// Waits for the first event matching `want`, returning the events seen before it too.
fn wait_for(m: &ModelManager, want: impl Fn(&ManagerEvent) -> bool) -> (ManagerEvent, Vec<ManagerEvent>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        while let Some(e) = m.try_event() {
            if want(&e) {
                return (e, seen);
            }
            seen.push(e);
        }
        assert!(Instant::now() < deadline, "timed out; saw {seen:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn status_of(e: &ManagerEvent, name: &str) -> Option<ModelStatus> {
    match e {
        ManagerEvent::Statuses(rows) => rows.iter().find(|r| r.name == name).and_then(|r| r.status.clone()),
        _ => None,
    }
}

#[test]
fn a_download_reports_progress_then_finishes_and_the_statuses_follow() {
    let s = setup();
    let (first, _) = wait_for(&s.manager, |e| matches!(e, ManagerEvent::Statuses(_)));
    assert!(matches!(status_of(&first, "fast"), Some(ModelStatus::Missing { .. })), "{first:?}");

    let weights = fixture("model.ckpt");
    let len = weights.len() as u64;
    s.server.route("/fast/model.yaml", fixture("model.yaml"), Mode::Serve);
    s.server.route("/fast/last.ckpt", weights.clone(), Mode::Slow { chunk: 20_000, delay: Duration::from_millis(10) });
    assert!(s.manager.download("fast"));
    assert!(!s.manager.download("fast"), "already queued");
    assert!(s.manager.busy("fast"));
    let mut progress = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.manager.busy("fast") {
        if let Some(p) = s.manager.progress() {
            progress.push((p.file.clone(), p.done));
        }
        assert!(Instant::now() < deadline, "download did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (done, _) = wait_for(&s.manager, |e| matches!(e, ManagerEvent::Finished { .. }));
    let dir = s.root.path().join("fast");
    assert_eq!(done, ManagerEvent::Finished { model: "fast".into(), dir: dir.clone() });
    assert!(progress.iter().any(|(f, n)| f == "last.ckpt" && *n > 0 && *n < len), "{progress:?}");
    let (statuses, _) = wait_for(&s.manager, |e| matches!(e, ManagerEvent::Statuses(_)));
    assert_eq!(status_of(&statuses, "fast"), Some(ModelStatus::Installed { dir: dir.clone() }));
    assert_eq!(std::fs::read(dir.join("last.ckpt")).expect("read"), weights);
    assert_eq!(
        s.manager.paths("fast").unwrap_or_else(|e| panic!("{e}")),
        ModelPaths::Vqgan { config: dir.join("model.yaml"), checkpoint: dir.join("last.ckpt") }
    );
    assert!(s.manager.progress().is_none(), "no stale progress after the job");
    assert!(s.wakes.load(Ordering::Relaxed) > 2, "the UI was woken");
}

#[test]
fn cancel_is_reported_and_leaves_no_partial_file() {
    let s = setup();
    s.server.route("/slow/model.yaml", fixture("model.yaml"), Mode::Serve);
    s.server.route(
        "/slow/last.ckpt",
        fixture("model.ckpt"),
        Mode::Slow { chunk: 4_000, delay: Duration::from_millis(20) },
    );
    assert!(s.manager.download("slow"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.manager.progress().is_some_and(|p| p.file == "last.ckpt" && p.done > 0) {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.manager.cancel("slow");
    let (e, _) = wait_for(&s.manager, |e| matches!(e, ManagerEvent::Cancelled { .. }));
    assert_eq!(e, ManagerEvent::Cancelled { model: "slow".into() });
    assert!(!s.root.path().join("slow/last.ckpt.part").exists());
    assert!(!s.root.path().join("slow/last.ckpt").exists());
    assert!(!s.manager.busy("slow"));
}

#[test]
fn a_failure_carries_the_instructions_for_installing_by_hand() {
    let s = setup();
    s.server.route("/gone/model.yaml", Vec::new(), Mode::NotFound);
    assert!(s.manager.download("gone"));
    let (e, _) = wait_for(&s.manager, |e| matches!(e, ManagerEvent::Failed { .. }));
    let ManagerEvent::Failed { model, message, help } = e else { unreachable!() };
    assert_eq!(model, "gone");
    assert!(message.contains("HTTP 404"), "{message}");
    let help = help.expect("help");
    assert!(help.contains(&s.root.path().join("gone").display().to_string()), "{help}");
    assert!(help.contains(&s.server.url("/gone/last.ckpt")), "{help}");
}

#[test]
fn closing_the_manager_starts_no_queued_download_and_keeps_the_running_part() {
    let s = setup();
    s.server.route("/slow/model.yaml", fixture("model.yaml"), Mode::Serve);
    s.server.route(
        "/slow/last.ckpt",
        fixture("model.ckpt"),
        Mode::Slow { chunk: 20_000, delay: Duration::from_millis(20) },
    );
    s.server.route("/fast/model.yaml", fixture("model.yaml"), Mode::Serve);
    assert!(s.manager.download("slow"));
    assert!(s.manager.download("fast"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.manager.progress().is_some_and(|p| p.file == "last.ckpt" && p.done > 0) {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let Setup { server, root, manager, .. } = s;
    drop(manager);
    // The running download was not cancelled: its part is still there (an exiting studio
    // leaves it for the next download to resume), and it runs on to the end.
    assert!(root.path().join("slow/last.ckpt.part").exists());
    while !root.path().join("slow/last.ckpt").exists() {
        assert!(Instant::now() < deadline, "the running download stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.requests().iter().all(|r| !r.path.starts_with("/fast/")), "the queued download started");
}
