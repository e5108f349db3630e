//! The downloader: fetches a catalog model's files over HTTP(S) into a models root,
//! safely. Blocking; run it on a thread of its own.
//!
//! Each file streams into `<file>.part` beside its final place, is checked (size, sha256
//! where the catalog gives one, and its format: see [`super::format`]) and only then
//! renamed into place, so an installed file is always whole and what its name says. A
//! file the catalog gives only an approximate size for is refused when it is more than
//! twice off, from the server's Content-Length before any byte is fetched where it says;
//! the first bytes are checked as soon as they arrive, so an error page or a file of
//! zeros is abandoned at once. A file of the wrong format or size is deleted, not kept
//! for resuming. A connection that drops mid-file is resumed with an HTTP `Range`
//! request (a server that ignores it is read again from the start); a `.part` left by an
//! earlier, interrupted run is resumed too. URLs are tried in order — a private mirror
//! (`--mirror`, `CLIPCANVAS_MIRROR`) first, then the catalog's — and when all fail the
//! error lists each URL and why. Progress (bytes, rate, ETA) goes to the caller's
//! [`DownloadObserver`]; the caller's cancel flag is checked between chunks, and a
//! cancelled download leaves no partial file behind. Reads time out, so a dead server
//! cannot hang a download, and a server that trickles (less than
//! [`DownloadOptions::min_rate`] over [`DownloadOptions::stall_window`], 1 KB/s over 30 s
//! by default) is abandoned as stalled with its part kept, so the next run resumes it;
//! a slow server that keeps up that rate still finishes. The window can be set with
//! `CLIPCANVAS_DOWNLOAD_STALL_SECS` (not in `--help`; the tests use a short one).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::entries::{CatalogFile, ModelEntry, ModelKind};
use super::error::CatalogError;
use super::format;
use super::store::{self, Record, RecordedFile};

/// A private mirror laid out like the catalog, tried before the catalog's URLs.
pub const MIRROR_ENV: &str = "CLIPCANVAS_MIRROR";
/// The stall window in seconds (a decimal number), instead of 30.
pub const STALL_ENV: &str = "CLIPCANVAS_DOWNLOAD_STALL_SECS";

/// Where a download stands, reported to the observer.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub model: String,
    pub file: String,
    /// This file's place among the model's files, from 0.
    pub file_index: usize,
    pub file_count: usize,
    /// Bytes of this file on disk so far (a resumed part included).
    pub done: u64,
    /// The file's size, once the server has said.
    pub total: Option<u64>,
    /// Bytes per second over the last few seconds.
    pub rate: f64,
    /// Time left at that rate, when the size is known.
    pub eta: Option<Duration>,
}

/// What the caller hears of a download.
pub trait DownloadObserver {
    /// Called as bytes arrive (at most every [`DownloadOptions::progress_every`]), when a
    /// file starts and when it is complete.
    fn progress(&mut self, p: &Progress);
    /// Something worth a line: a mirror failed, a resume, a file already present.
    fn note(&mut self, _message: &str) {}
}

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// A private mirror's base URL, tried first for every file.
    pub mirror: Option<String>,
    pub connect_timeout: Duration,
    /// The longest wait for any one read; a server silent for longer is given up on.
    pub read_timeout: Duration,
    /// The shortest interval between progress reports.
    pub progress_every: Duration,
    /// How many times one URL is resumed after a drop without gaining bytes.
    pub resumes: u32,
    /// The pause before a resume.
    pub resume_delay: Duration,
    /// A download that gets less than `min_rate` × this in this long (resumes included)
    /// is abandoned as stalled. No single read or response header waits longer either.
    pub stall_window: Duration,
    /// The slowest average rate, in bytes per second, accepted over a stall window.
    pub min_rate: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            mirror: None,
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(30),
            progress_every: Duration::from_millis(200),
            resumes: 3,
            resume_delay: Duration::from_millis(500),
            stall_window: Duration::from_secs(30),
            min_rate: 1024,
        }
    }
}

impl DownloadOptions {
    /// The defaults, with the mirror from `CLIPCANVAS_MIRROR` and the stall window from
    /// `CLIPCANVAS_DOWNLOAD_STALL_SECS` if set (a value that is not a positive number of
    /// seconds is ignored).
    pub fn from_env() -> Self {
        let mirror = std::env::var(MIRROR_ENV).ok().filter(|m| !m.trim().is_empty());
        let defaults = Self::default();
        let stall_window = std::env::var(STALL_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or(defaults.stall_window);
        Self { mirror, stall_window, ..defaults }
    }

    /// The fewest bytes a stall window must bring.
    fn min_bytes_per_window(&self) -> u64 {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a small positive byte count")]
        let bytes = (self.min_rate as f64 * self.stall_window.as_secs_f64()).ceil() as u64;
        bytes
    }
}

/// "3m05s", "1h02m", "12s": a time left, for display.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Why one URL did not deliver the file.
enum Fetch {
    Cancelled,
    Failed(String),
}

/// The downloader: an HTTP agent and its options.
pub struct Downloader {
    agent: ureq::Agent,
    opts: DownloadOptions,
}

impl Downloader {
    pub fn new(opts: DownloadOptions) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout.min(opts.stall_window)))
            // Headers trickled a byte at a time would never trip the per-read limit.
            .timeout_recv_response(Some(opts.stall_window.max(opts.read_timeout)))
            .user_agent(format!("clipcanvas/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Self { agent: ureq::Agent::new_with_config(config), opts }
    }

    pub fn options(&self) -> &DownloadOptions {
        &self.opts
    }

    /// Downloads the files of `entry` that are not already in `root/<model folder>`, and
    /// returns that folder. Files already complete stay as they are; each new file is
    /// installed as soon as it is whole and checked.
    pub fn install(
        &self,
        entry: &ModelEntry,
        root: &Path,
        observer: &mut dyn DownloadObserver,
        cancel: &AtomicBool,
    ) -> Result<PathBuf, CatalogError> {
        if entry.bundled {
            return Err(CatalogError::Bundled { name: entry.name.clone() });
        }
        let dir = root.join(entry.rel_dir());
        let fresh = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| CatalogError::io(&dir, e))?;
        let result = self.install_files(entry, &dir, observer, cancel);
        if result.is_err() && fresh {
            // Leave no empty folder behind (a folder with files in it is kept).
            let _ = std::fs::remove_dir(&dir);
        }
        result.map(|()| dir)
    }

    fn install_files(
        &self,
        entry: &ModelEntry,
        dir: &Path,
        observer: &mut dyn DownloadObserver,
        cancel: &AtomicBool,
    ) -> Result<(), CatalogError> {
        for (index, file) in entry.files.iter().enumerate() {
            let target = dir.join(&file.name);
            match already_present(entry, &target, file, dir) {
                Present::Yes(size) => {
                    observer.note(&format!(
                        "{}/{} is already present ({})",
                        entry.name,
                        file.name,
                        store::human_bytes(size)
                    ));
                    continue;
                }
                Present::Distrusted(why) => observer.note(&format!(
                    "{}/{} is present but cannot be trusted ({why}); downloading it again",
                    entry.name, file.name
                )),
                Present::No => {}
            }
            let mut ctx = Ctx {
                progress: Progress {
                    model: entry.name.clone(),
                    file: file.name.clone(),
                    file_index: index,
                    file_count: entry.files.len(),
                    done: 0,
                    total: file.size,
                    rate: 0.0,
                    eta: None,
                },
                observer: &mut *observer,
                every: self.opts.progress_every,
                last: None,
                samples: VecDeque::new(),
            };
            self.install_file(entry, file, dir, &mut ctx, cancel)?;
        }
        Ok(())
    }

    fn install_file(
        &self,
        entry: &ModelEntry,
        file: &CatalogFile,
        dir: &Path,
        ctx: &mut Ctx<'_>,
        cancel: &AtomicBool,
    ) -> Result<(), CatalogError> {
        let target = dir.join(&file.name);
        let part = dir.join(format!("{}.part", file.name));
        let urls: Vec<String> = store::mirror_url(self.opts.mirror.as_deref(), entry, file)
            .into_iter()
            .chain(file.urls.iter().cloned())
            .collect();
        let mut attempts = Vec::new();
        // Which address the bytes in the part came from; a part left by an earlier run is
        // taken to be from the first, where every run starts.
        let mut part_from = part.exists().then_some(0);
        for (i, url) in urls.iter().enumerate() {
            if part_from.is_some_and(|from| from != i) && file.sha256.is_none() {
                // Without a hash to catch it, bytes from two servers must never be joined.
                remove_if_exists(&part);
            }
            match self.fetch(url, entry.kind, file, &part, ctx, cancel) {
                Ok((sha256, size)) => {
                    finish(&part, &target)?;
                    ctx.report(true);
                    Record::add(dir, &file.name, RecordedFile { size, sha256, url: url.clone() })?;
                    return Ok(());
                }
                Err(Fetch::Cancelled) => {
                    remove_if_exists(&part);
                    return Err(CatalogError::Cancelled);
                }
                Err(Fetch::Failed(reason)) => {
                    if i + 1 < urls.len() {
                        ctx.observer.note(&format!("{url}: {reason}; trying the next address"));
                    }
                    attempts.push(format!("{url} ({reason})"));
                    part_from = std::fs::metadata(&part).is_ok_and(|m| m.len() > 0).then_some(i);
                }
            }
        }
        if part_from.is_some_and(|from| from != 0) && file.sha256.is_none() {
            // Kept bytes are resumed from the first address on the next run.
            remove_if_exists(&part);
        }
        Err(CatalogError::Download {
            name: entry.name.clone(),
            file: file.name.clone(),
            attempts: attempts.join("; "),
            help: store::manual_help(entry, dir, self.opts.mirror.as_deref()),
        })
    }

    /// Fetches one URL into `part`, resuming what is there; returns the whole file's
    /// sha256 and size once it is complete and matches the catalog.
    #[expect(clippy::too_many_lines, reason = "one request/response loop; its cases read best together")]
    fn fetch(
        &self,
        url: &str,
        kind: ModelKind,
        file: &CatalogFile,
        part: &Path,
        ctx: &mut Ctx<'_>,
        cancel: &AtomicBool,
    ) -> Result<(String, u64), Fetch> {
        let failed_io = |e: std::io::Error| Fetch::Failed(format!("{}: {e}", part.display()));
        let mut resumes_left = self.opts.resumes;
        let mut best = 0u64;
        // The hash of the part's first `hashed` bytes, carried across resumes.
        let mut hasher = Sha256::new();
        let mut hashed = 0u64;
        let mut use_range = true;
        // The most bytes the file may have: the catalog's exact size, or twice its
        // approximate one.
        let limit = file.size.or(file.approx_size.map(|a| a.saturating_mul(2)));
        // The stall window: bytes received (from every response of this URL) since it began.
        let mut received = 0u64;
        let mut window = (Instant::now(), 0u64);
        let stalled = |received: u64, window: &mut (Instant, u64)| -> Option<String> {
            let elapsed = window.0.elapsed();
            if elapsed < self.opts.stall_window {
                return None;
            }
            let got = received - window.1;
            if got < self.opts.min_bytes_per_window() {
                return Some(format!(
                    "download stalled: {} in the last {:.1} s, less than {}/s",
                    store::human_bytes(got),
                    elapsed.as_secs_f64(),
                    store::human_bytes(self.opts.min_rate)
                ));
            }
            *window = (Instant::now(), received);
            None
        };
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Fetch::Cancelled);
            }
            let mut offset = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
            if file.size.is_some_and(|s| offset > s) || !use_range {
                truncate(part).map_err(failed_io)?;
                offset = 0;
            }
            let mut request = self.agent.get(url);
            if offset > 0 {
                request = request.header("Range", format!("bytes={offset}-"));
            }
            let response = match request.call() {
                Ok(r) => r,
                Err(e) => {
                    if best > 0 && resumes_left > 0 {
                        resumes_left -= 1;
                        std::thread::sleep(self.opts.resume_delay);
                        continue;
                    }
                    return Err(Fetch::Failed(describe_error(&e)));
                }
            };
            let status = response.status().as_u16();
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
            let total = match status {
                206 if offset > 0 => match header("content-range").as_deref().and_then(parse_content_range) {
                    Some((start, total)) if start == offset => total.or(length.map(|l| offset + l)),
                    _ => {
                        ctx.observer.note(&format!("{url}: the server resumed at the wrong place; starting over"));
                        use_range = false;
                        continue;
                    }
                },
                200 => {
                    if offset > 0 {
                        ctx.observer.note(&format!("{url}: the server cannot resume; starting over"));
                        truncate(part).map_err(failed_io)?;
                        offset = 0;
                    }
                    length
                }
                416 if offset > 0 => {
                    let server_total = header("content-range").as_deref().and_then(parse_content_range_total);
                    if server_total.or(file.size) == Some(offset) {
                        // The part is already whole.
                        return complete(part, kind, file, offset, &mut hasher, &mut hashed);
                    }
                    use_range = false;
                    continue;
                }
                _ => {
                    let reason = response.status().canonical_reason().unwrap_or("");
                    return Err(Fetch::Failed(format!("HTTP {status} {reason}").trim_end().to_owned()));
                }
            };
            let is_html = header("content-type").is_some_and(|t| t.to_ascii_lowercase().starts_with("text/html"));
            if is_html && !file.name.ends_with(".html") {
                return Err(Fetch::Failed("the server sent a web page instead of the file".into()));
            }
            if let (Some(t), Some(s)) = (total, file.size) {
                if t != s {
                    remove_if_exists(part);
                    return Err(Fetch::Failed(format!("the server's file has {t} bytes, the catalog expects {s}")));
                }
            }
            if let Some(problem) = total.zip(file.approx_size).and_then(|(t, a)| store::approx_size_problem(t, a)) {
                remove_if_exists(part);
                return Err(Fetch::Failed(format!("the server's file is {problem}")));
            }
            if hashed != offset {
                (hasher, hashed) = hash_prefix(part, offset).map_err(failed_io)?;
            }
            let mut out = OpenOptions::new().create(true).append(true).open(part).map_err(failed_io)?;
            ctx.start(offset, total);
            let mut reader = response.into_body().into_reader();
            let mut buf = vec![0u8; 64 * 1024];
            let mut done = offset;
            let mut interrupted = None;
            // The first bytes are checked once there are enough of them (a file that
            // arrives whole is checked in full right after).
            let mut head_checked = false;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    drop(out);
                    return Err(Fetch::Cancelled);
                }
                if !head_checked && done >= format::HEAD_LEN as u64 && total != Some(done) {
                    head_checked = true;
                    if let Some(problem) = part_head_problem(kind, &file.name, part, total) {
                        drop(out);
                        remove_if_exists(part);
                        return Err(Fetch::Failed(problem));
                    }
                }
                if let Some(why) = stalled(received, &mut window) {
                    // The bytes so far are good; the next run resumes from them.
                    return Err(Fetch::Failed(why));
                }
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if limit.is_some_and(|l| done + n as u64 > l) {
                            drop(out);
                            remove_if_exists(part);
                            return Err(Fetch::Failed(match file.size {
                                Some(s) => format!("the server sent more than the {s} bytes the catalog expects"),
                                None => format!(
                                    "the server sent more than {}, twice what the catalog expects",
                                    store::human_bytes(limit.unwrap_or_default())
                                ),
                            }));
                        }
                        out.write_all(&buf[..n]).map_err(failed_io)?;
                        hasher.update(&buf[..n]);
                        done += n as u64;
                        received += n as u64;
                        hashed = done;
                        ctx.advance(done);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        interrupted = Some(e);
                        break;
                    }
                }
            }
            out.flush().map_err(failed_io)?;
            drop(out);
            let short = total.is_some_and(|t| done < t);
            if interrupted.is_some() || short {
                let why = match (&interrupted, total) {
                    (Some(e), Some(t)) => format!("connection lost at {done} of {t} bytes ({e})"),
                    (Some(e), None) => format!("connection lost after {done} bytes ({e})"),
                    (None, Some(t)) => format!("connection closed at {done} of {t} bytes"),
                    (None, None) => format!("connection closed after {done} bytes"),
                };
                if done > best {
                    best = done;
                    resumes_left = self.opts.resumes;
                }
                if resumes_left == 0 {
                    return Err(Fetch::Failed(why));
                }
                if let Some(stall) = stalled(received, &mut window) {
                    return Err(Fetch::Failed(format!("{why}; {stall}")));
                }
                resumes_left -= 1;
                ctx.observer.note(&format!("{url}: {why}; resuming"));
                std::thread::sleep(self.opts.resume_delay);
                continue;
            }
            return complete(part, kind, file, done, &mut hasher, &mut hashed);
        }
    }
}

/// What the part's first bytes say against the file's format, if they rule it out.
fn part_head_problem(kind: ModelKind, name: &str, part: &Path, total: Option<u64>) -> Option<String> {
    let mut head = Vec::with_capacity(format::HEAD_LEN);
    // Unreadable now, the part is checked in full when complete.
    File::open(part).and_then(|f| f.take(format::HEAD_LEN as u64).read_to_end(&mut head)).ok()?;
    format::head_problem(kind, name, &head, total)
}

/// The last step of a fetch: the part is whole; check its size and hash against the
/// catalog, and its format. A mismatch deletes the part (its bytes are wrong, not merely
/// incomplete).
fn complete(
    part: &Path,
    kind: ModelKind,
    file: &CatalogFile,
    size: u64,
    hasher: &mut Sha256,
    hashed: &mut u64,
) -> Result<(String, u64), Fetch> {
    if *hashed != size {
        (*hasher, *hashed) = hash_prefix(part, size).map_err(|e| Fetch::Failed(format!("{}: {e}", part.display())))?;
    }
    let sha256 = hex(&hasher.clone().finalize());
    if let Some(problem) = file.size.and_then(|want| store::size_problem(size, want)) {
        remove_if_exists(part);
        return Err(Fetch::Failed(problem));
    }
    if let Some(problem) = file.approx_size.and_then(|a| store::approx_size_problem(size, a)) {
        remove_if_exists(part);
        return Err(Fetch::Failed(format!("the file is {problem}")));
    }
    if let Some(want) = &file.sha256 {
        if *want != sha256 {
            remove_if_exists(part);
            return Err(Fetch::Failed(format!("sha256 mismatch: got {sha256}, expected {want}")));
        }
    }
    if let Err(problem) = format::check(kind, &file.name, part) {
        remove_if_exists(part);
        return Err(Fetch::Failed(problem));
    }
    Ok((sha256, size))
}

/// Whether a model's file is already installed.
enum Present {
    /// Complete: of the catalog's or the download record's size where one is known, of
    /// its format, and vouched for; its size.
    Yes(u64),
    /// There, but not to be kept: why (see [`store::distrust`]).
    Distrusted(String),
    No,
}

fn already_present(entry: &ModelEntry, target: &Path, file: &CatalogFile, dir: &Path) -> Present {
    let Some(meta) = std::fs::metadata(target).ok().filter(std::fs::Metadata::is_file) else {
        return Present::No;
    };
    let record = Record::read(dir);
    let want = file.size.or_else(|| record.files.get(&file.name).map(|r| r.size));
    if want.is_some_and(|w| w != meta.len()) {
        return Present::No;
    }
    match store::distrust(entry, file, target, &record) {
        Some(why) => Present::Distrusted(why),
        None => Present::Yes(meta.len()),
    }
}

/// Syncs the part and renames it over the target, then syncs the folder.
fn finish(part: &Path, target: &Path) -> Result<(), CatalogError> {
    File::open(part).and_then(|f| f.sync_all()).map_err(|e| CatalogError::io(part, e))?;
    std::fs::rename(part, target).map_err(|e| {
        remove_if_exists(part);
        CatalogError::io(target, e)
    })?;
    #[cfg(unix)]
    if let Some(dir) = target.parent() {
        // Best effort: the data is already on disk; this makes the new name durable.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn truncate(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new().write(true).open(path) {
        Ok(f) => f.set_len(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_if_exists(path: &Path) {
    // Nothing to do if it is already gone; any other failure leaves a stray part file
    // that the next download resumes or replaces.
    let _ = std::fs::remove_file(path);
}

/// The sha256 state after the first `len` bytes of `path`.
fn hash_prefix(path: &Path, len: u64) -> std::io::Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    if len == 0 {
        return Ok((hasher, 0));
    }
    let mut f = File::open(path)?;
    f.rewind()?;
    let mut limited = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = limited.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    Ok((hasher, read))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes START-END/TOTAL` → (START, TOTAL if not `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// `bytes */TOTAL` (a 416's answer) → TOTAL.
fn parse_content_range_total(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes")?.trim_start().split_once('/')?.1.trim().parse().ok()
}

/// One line for a failed request.
fn describe_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::HostNotFound => "host not found (offline?)".into(),
        ureq::Error::ConnectionFailed => "cannot connect".into(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string().lines().next().unwrap_or("request failed").to_owned(),
    }
}

/// Progress bookkeeping for one file.
struct Ctx<'a> {
    progress: Progress,
    observer: &'a mut dyn DownloadObserver,
    every: Duration,
    last: Option<Instant>,
    /// (when, bytes) over the last few seconds, for the rate.
    samples: VecDeque<(Instant, u64)>,
}

impl Ctx<'_> {
    const WINDOW: Duration = Duration::from_secs(5);

    fn start(&mut self, done: u64, total: Option<u64>) {
        self.progress.done = done;
        if total.is_some() {
            self.progress.total = total;
        }
        self.samples.clear();
        self.samples.push_back((Instant::now(), done));
        self.report(true);
    }

    fn advance(&mut self, done: u64) {
        self.progress.done = done;
        let now = Instant::now();
        self.samples.push_back((now, done));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > Self::WINDOW)
        {
            self.samples.pop_front();
        }
        self.report(false);
    }

    fn report(&mut self, force: bool) {
        let now = Instant::now();
        if !force && self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            return;
        }
        self.last = Some(now);
        if let (Some((t0, b0)), Some((t1, b1))) = (self.samples.front(), self.samples.back()) {
            let secs = t1.duration_since(*t0).as_secs_f64();
            if secs > 0.0 {
                #[expect(clippy::cast_precision_loss, reason = "a rate")]
                let rate = b1.saturating_sub(*b0) as f64 / secs;
                self.progress.rate = rate;
            }
        }
        self.progress.eta = match self.progress.total {
            Some(t) if self.progress.rate > 0.0 => {
                #[expect(clippy::cast_precision_loss, reason = "an estimate")]
                let left = t.saturating_sub(self.progress.done) as f64 / self.progress.rate;
                Duration::try_from_secs_f64(left).ok()
            }
            _ => None,
        };
        self.observer.progress(&self.progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range_total("bytes */4096"), Some(4096));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h02m");
    }
}
