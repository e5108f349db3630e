//! The model-manager service for the studio: runs downloads one at a time on a named
//! background thread ("clipcanvas-models") and scans the model folders off the UI thread,
//! reporting back over a bounded channel. Progress goes through a newest-wins slot (a slow
//! UI skips stale progress); notes, statuses, completions, failures and cancellations are
//! events that are never dropped. The UI supplies a waker that asks for a repaint; this
//! module knows nothing of egui.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender};

pub use crate::catalog::download::{human_duration, Progress};
use crate::catalog::download::{DownloadObserver, DownloadOptions, Downloader};
pub use crate::catalog::entries::ModelKind;
pub use crate::catalog::store::human_bytes;
pub use crate::catalog::store::ModelStatus;
use crate::catalog::store::{self, Store};
use crate::catalog::CatalogError;

/// Pending downloads the queue holds at most.
const MAX_QUEUED: usize = 32;
/// Events waiting for the UI at most; the service waits when it is full.
const MAX_EVENTS: usize = 256;

/// What the studio shows of one catalog model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub name: String,
    pub kind: ModelKind,
    pub description: String,
    pub licence: String,
    pub bundled: bool,
    /// "~958.0 MB", "?" where unknown.
    pub size: String,
    /// `None` until the folders have been scanned.
    pub status: Option<ModelStatus>,
    /// Where a download would go, and how to install by hand: files, URLs, folder.
    pub manual: String,
}

/// What the service reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ManagerEvent {
    /// A fresh scan of every model's status.
    Statuses(Vec<ModelRow>),
    /// A line worth showing: a mirror failed, a resume, a file already present.
    Note { model: String, message: String },
    /// The model is installed in `dir`.
    Finished { model: String, dir: PathBuf },
    /// The download failed; `help` says how to install by hand.
    Failed { model: String, message: String, help: Option<String> },
    /// The download was cancelled; no partial file was left.
    Cancelled { model: String },
}

/// The paths a run needs for an installed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPaths {
    Clip(PathBuf),
    Vqgan { config: PathBuf, checkpoint: PathBuf },
}

struct Job {
    name: String,
    cancel: Arc<AtomicBool>,
}

/// Shared between the UI side and the threads.
struct Shared {
    store: Store,
    progress: Mutex<Option<Progress>>,
    /// Cancel flags of queued and running downloads, by model name.
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
    waker: Arc<dyn Fn() + Send + Sync>,
    /// The studio is closing: start no more downloads.
    closed: AtomicBool,
}

impl Shared {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicBool>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rows(&self) -> Vec<ModelRow> {
        self.store
            .catalog()
            .models()
            .iter()
            .map(|m| ModelRow {
                name: m.name.clone(),
                kind: m.kind,
                description: m.description.clone(),
                licence: m.licence.clone(),
                bundled: m.bundled,
                size: match m.display_size() {
                    Some((n, true)) => human_bytes(n),
                    Some((n, false)) => format!("~{}", human_bytes(n)),
                    None => "?".into(),
                },
                status: None,
                manual: store::manual_help(m, &self.store.install_dir_hint(m), None),
            })
            .collect()
    }

    fn scanned_rows(&self) -> Vec<ModelRow> {
        let mut rows = self.rows();
        for (row, m) in rows.iter_mut().zip(self.store.catalog().models()) {
            row.status = Some(self.store.status(m));
        }
        rows
    }
}

/// Reports a download's progress to the shared slot and its notes as events.
struct Reporter<'a> {
    model: &'a str,
    shared: &'a Shared,
    events: &'a Sender<ManagerEvent>,
}

impl DownloadObserver for Reporter<'_> {
    fn progress(&mut self, p: &Progress) {
        *self.shared.progress.lock().unwrap_or_else(PoisonError::into_inner) = Some(p.clone());
        (self.shared.waker)();
    }

    fn note(&mut self, message: &str) {
        let _ = self.events.send(ManagerEvent::Note { model: self.model.to_owned(), message: message.to_owned() });
        (self.shared.waker)();
    }
}

/// The studio's handle on the service.
pub struct ModelManager {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    events_tx: Sender<ManagerEvent>,
    events: Receiver<ManagerEvent>,
}

impl ModelManager {
    /// Starts the download thread and a first scan of the model folders.
    pub fn spawn(store: Store, options: DownloadOptions, waker: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store,
            progress: Mutex::new(None),
            jobs: Mutex::default(),
            waker,
            closed: AtomicBool::new(false),
        });
        let (jobs, job_rx) = crossbeam_channel::bounded::<Job>(MAX_QUEUED);
        let (events_tx, events) = crossbeam_channel::bounded(MAX_EVENTS);
        {
            let shared = Arc::clone(&shared);
            let events = events_tx.clone();
            std::thread::Builder::new()
                .name("clipcanvas-models".into())
                .spawn(move || run_jobs(&shared, &job_rx, &events, &Downloader::new(options)))?;
        }
        let manager = Self { shared, jobs, events_tx, events };
        manager.refresh();
        Ok(manager)
    }

    /// The service on the built-in catalog, the default model folders and the download
    /// options from the environment (`CLIPCANVAS_MODELS`, `CLIPCANVAS_MIRROR`).
    pub fn spawn_default(waker: Arc<dyn Fn() + Send + Sync>) -> Result<Self, String> {
        let store = Store::open(&[]).map_err(|e| e.to_string())?;
        Self::spawn(store, DownloadOptions::from_env(), waker)
            .map_err(|e| format!("cannot start the model manager: {e}"))
    }

    /// The catalog's models, status not yet known; shown until a scan arrives.
    pub fn rows(&self) -> Vec<ModelRow> {
        self.shared.rows()
    }

    /// The folders searched, in order.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.shared.store.roots().iter().map(|r| r.path.clone()).collect()
    }

    /// Scans the model folders on a short-lived thread; the result arrives as
    /// [`ManagerEvent::Statuses`].
    pub fn refresh(&self) {
        let shared = Arc::clone(&self.shared);
        let events = self.events_tx.clone();
        // If no thread can be started the list keeps its last statuses.
        let _ = std::thread::Builder::new().name("clipcanvas-models-scan".into()).spawn(move || {
            let rows = shared.scanned_rows();
            if events.send(ManagerEvent::Statuses(rows)).is_ok() {
                (shared.waker)();
            }
        });
    }

    /// Queues a download; false if it is already queued or the queue is full.
    pub fn download(&self, name: &str) -> bool {
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut jobs = self.shared.jobs();
            if jobs.contains_key(name) {
                return false;
            }
            jobs.insert(name.to_owned(), Arc::clone(&cancel));
        }
        if self.jobs.try_send(Job { name: name.to_owned(), cancel }).is_err() {
            self.shared.jobs().remove(name);
            return false;
        }
        true
    }

    /// Cancels a queued or running download.
    pub fn cancel(&self, name: &str) {
        if let Some(flag) = self.shared.jobs().get(name) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a download of `name` is queued or running.
    pub fn busy(&self, name: &str) -> bool {
        self.shared.jobs().contains_key(name)
    }

    /// The next event, without blocking.
    pub fn try_event(&self) -> Option<ManagerEvent> {
        self.events.try_recv().ok()
    }

    /// The newest progress of the running download, if any.
    pub fn progress(&self) -> Option<Progress> {
        self.shared.progress.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The files a run needs for an installed model.
    pub fn paths(&self, name: &str) -> Result<ModelPaths, CatalogError> {
        let entry = self.shared.store.catalog().find(name)?;
        match entry.kind {
            ModelKind::Clip => self.shared.store.resolve_clip(name).map(ModelPaths::Clip),
            ModelKind::Vqgan => self
                .shared
                .store
                .resolve_vqgan(name)
                .map(|(config, checkpoint)| ModelPaths::Vqgan { config, checkpoint }),
        }
    }
}

impl Drop for ModelManager {
    fn drop(&mut self) {
        // Queued downloads never start. A running one is not cancelled (a cancel deletes
        // its part file): when the studio exits it is cut off, and the next download of
        // that model resumes from the part.
        self.shared.closed.store(true, Ordering::Relaxed);
    }
}

fn run_jobs(shared: &Shared, jobs: &Receiver<Job>, events: &Sender<ManagerEvent>, downloader: &Downloader) {
    for job in jobs {
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let event = if job.cancel.load(Ordering::Relaxed) {
            ManagerEvent::Cancelled { model: job.name.clone() }
        } else {
            match download(shared, events, downloader, &job) {
                Ok(dir) => ManagerEvent::Finished { model: job.name.clone(), dir },
                Err(CatalogError::Cancelled) => ManagerEvent::Cancelled { model: job.name.clone() },
                Err(e) => ManagerEvent::Failed {
                    model: job.name.clone(),
                    message: e.to_string(),
                    help: e.help().map(str::to_owned),
                },
            }
        };
        *shared.progress.lock().unwrap_or_else(PoisonError::into_inner) = None;
        shared.jobs().remove(&job.name);
        let rows = shared.scanned_rows();
        if events.send(event).is_err() || events.send(ManagerEvent::Statuses(rows)).is_err() {
            return;
        }
        (shared.waker)();
    }
}

fn download(
    shared: &Shared,
    events: &Sender<ManagerEvent>,
    downloader: &Downloader,
    job: &Job,
) -> Result<PathBuf, CatalogError> {
    let entry = shared.store.catalog().find(&job.name)?;
    if let ModelStatus::Installed { dir } = shared.store.status(entry) {
        // Files that are not what their names say, or that nothing vouches for any more,
        // are fetched again.
        if shared.store.distrusted(entry, &dir).is_none() {
            return Ok(dir);
        }
    }
    let root = shared.store.install_root()?;
    downloader.install(entry, &root, &mut Reporter { model: &job.name, shared, events }, &job.cancel)
}
