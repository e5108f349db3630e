//! `clipcanvas models`: list the known models and whether each is installed, download
//! them (progress on the terminal, Ctrl-C cancels cleanly; each file checked for its
//! size and format before it is installed), and verify installed files (hashes and
//! formats; a file whose download record is damaged is reported as unverified).
//! Also turns a model name given to `--clip`/`--vqgan` into the installed files' paths.
//! When a model cannot be had, the message lists the exact files, their URLs and the
//! folder to put them in.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::error::CliError;
use crate::catalog::download::{human_duration, DownloadObserver, DownloadOptions, Downloader, Progress};
use crate::catalog::entries::ModelEntry;
use crate::catalog::store::{human_bytes, CheckOutcome, ModelStatus, Store, MODELS_ENV};
use crate::catalog::CatalogError;
use crate::settings::RunSettings;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Show every known model: installed, missing or corrupt, and where.
    List(ListArgs),
    /// Download models: resumable, checked, installed only when whole.
    Download(DownloadArgs),
    /// Check installed models' files: their sizes, sha256 hashes and formats.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also search this folder for models, first; repeatable.
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The models to download (see `clipcanvas models list`).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// A private mirror laid out as URL/<model>/<file>, tried first (or CLIPCANVAS_MIRROR).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Install here instead of the first writable models folder.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also search this folder for installed models; repeatable.
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The models to check; all installed ones if none are named.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Also search this folder for models, first; repeatable.
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
}

pub fn run(args: &ModelsArgs) -> Result<(), CliError> {
    match &args.command {
        ModelsCommand::List(a) => list(a),
        ModelsCommand::Download(a) => download(a),
        ModelsCommand::Verify(a) => verify(a),
    }
}

fn runtime(e: impl Into<anyhow::Error>) -> CliError {
    CliError::Runtime(e.into())
}

/// A manager error as a command-line error: bad names are bad input; the rest failed at
/// run time. Help (the files, URLs and folder) follows the message on its own lines.
fn cli_error(e: CatalogError) -> CliError {
    let text = match e.help() {
        Some(help) => format!("{e}\n{help}"),
        None => e.to_string(),
    };
    match e {
        CatalogError::Catalog { .. }
        | CatalogError::UnknownModel { .. }
        | CatalogError::WrongKind { .. }
        | CatalogError::Bundled { .. }
        | CatalogError::NotInstalled { .. } => CliError::Input(anyhow::anyhow!(text)),
        _ => CliError::Runtime(anyhow::anyhow!(text)),
    }
}

fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(runtime)
}

/// The entries named, in order and without repeats; every name must be known.
fn entries<'a>(store: &'a Store, names: &[String]) -> Result<Vec<&'a ModelEntry>, CliError> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for name in names {
        let entry = store.catalog().find(name).map_err(cli_error)?;
        if seen.insert(name.as_str()) {
            found.push(entry);
        }
    }
    Ok(found)
}

fn size_text(entry: &ModelEntry) -> String {
    match entry.display_size() {
        Some((n, true)) => human_bytes(n),
        Some((n, false)) => format!("~{}", human_bytes(n)),
        None => "?".into(),
    }
}

fn list(args: &ListArgs) -> Result<(), CliError> {
    let store = Store::open(&args.models_dirs).map_err(cli_error)?;
    let mut rows = vec![["NAME".to_owned(), "KIND".into(), "SIZE".into(), "STATUS".into(), "LOCATION".into()]];
    for (entry, status) in store.statuses() {
        let (state, location) = match status {
            ModelStatus::Installed { dir } => ("installed".to_owned(), dir.display().to_string()),
            ModelStatus::Missing { .. } if entry.bundled => {
                ("missing (bundled with the source; see README)".to_owned(), String::new())
            }
            ModelStatus::Missing { files } if files.len() < entry.files.len() => {
                (format!("missing {}", files.join(", ")), String::new())
            }
            ModelStatus::Missing { .. } => ("missing".to_owned(), String::new()),
            ModelStatus::Corrupt { dir, file, reason } => {
                (format!("corrupt: {file} {reason}"), dir.display().to_string())
            }
        };
        rows.push([entry.name.clone(), entry.kind.to_string(), size_text(entry), state, location]);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        out(line.trim_end())?;
    }
    out("")?;
    out(&format!("Searched, in order (add folders with --models-dir or {MODELS_ENV}):"))?;
    for root in store.roots() {
        out(&format!("  {} ({})", root.path.display(), root.kind.describe()))?;
    }
    out("Download with: clipcanvas models download NAME")
}

/// Progress on the terminal: a bar per file, or plain lines every few seconds.
struct CliProgress {
    bar: Option<ProgressBar>,
    terminal: bool,
    last_line: Option<Instant>,
    current: Option<(String, usize)>,
}

impl CliProgress {
    fn new() -> Self {
        Self { bar: None, terminal: std::io::stderr().is_terminal(), last_line: None, current: None }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn rate_text(p: &Progress) -> String {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "for display")]
    let rate = format!("{}/s", human_bytes(p.rate.max(0.0) as u64));
    match p.eta {
        Some(eta) => format!("{rate}, {} left", human_duration(eta)),
        None => rate,
    }
}

impl DownloadObserver for CliProgress {
    fn progress(&mut self, p: &Progress) {
        let key = (p.file.clone(), p.file_index);
        if self.current.as_ref() != Some(&key) {
            self.finish();
            self.current = Some(key);
            let label = format!("{}/{} ({}/{})", p.model, p.file, p.file_index + 1, p.file_count);
            if self.terminal {
                let bar = ProgressBar::new(p.total.unwrap_or(0));
                if let Ok(style) =
                    ProgressStyle::with_template("{prefix} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {msg}")
                {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(label);
                self.bar = Some(bar);
            } else {
                eprintln!("downloading {label}");
                self.last_line = Some(Instant::now());
            }
        }
        if let Some(bar) = &self.bar {
            if let Some(t) = p.total {
                bar.set_length(t);
            }
            bar.set_position(p.done);
            bar.set_message(rate_text(p));
        } else if self.last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) || p.total == Some(p.done) {
            self.last_line = Some(Instant::now());
            let of = p.total.map(|t| format!(" of {}", human_bytes(t))).unwrap_or_default();
            eprintln!("  {}/{}: {}{of} ({})", p.model, p.file, human_bytes(p.done), rate_text(p));
        }
    }

    fn note(&mut self, message: &str) {
        self.say(&format!("note: {message}"));
    }
}

fn download(args: &DownloadArgs) -> Result<(), CliError> {
    let mut explicit = args.dir.iter().cloned().collect::<Vec<_>>();
    explicit.extend(args.models_dirs.iter().cloned());
    let store = Store::open(&explicit).map_err(cli_error)?;
    let wanted = entries(&store, &args.names)?;
    if let Some(bundled) = wanted.iter().find(|e| e.bundled) {
        return Err(cli_error(CatalogError::Bundled { name: bundled.name.clone() }));
    }
    let root = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| runtime(anyhow::anyhow!("{}: {e}", dir.display())))?;
            dir.clone()
        }
        None => store.install_root().map_err(cli_error)?,
    };
    let mut opts = DownloadOptions::from_env();
    if let Some(m) = &args.mirror {
        opts.mirror = Some(m.clone());
    }
    let downloader = Downloader::new(opts);
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // A handler can be installed once per process; if one exists, Ctrl-C ends the
        // process as usual and the next run resumes or replaces the part file.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    for entry in wanted {
        if let ModelStatus::Installed { dir } = store.status(entry) {
            // A file that is not what its name says, or that nothing vouches for any more,
            // is fetched again (the downloader says which and why).
            if (args.dir.is_none() || dir.starts_with(&root)) && store.distrusted(entry, &dir).is_none() {
                out(&format!("{} is already installed in {}", entry.name, dir.display()))?;
                continue;
            }
        }
        let mut progress = CliProgress::new();
        let result = downloader.install(entry, &root, &mut progress, &cancel);
        progress.finish();
        match result {
            Ok(dir) => out(&format!("installed {} in {}", entry.name, dir.display()))?,
            Err(CatalogError::Cancelled) => {
                eprintln!("download of {} cancelled; no partial file left behind", entry.name);
                return Err(CliError::Interrupted);
            }
            Err(e) => return Err(cli_error(e)),
        }
    }
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<(), CliError> {
    let store = Store::open(&args.models_dirs).map_err(cli_error)?;
    let named = !args.names.is_empty();
    let wanted = if named { entries(&store, &args.names)? } else { store.catalog().models().iter().collect() };
    let terminal = std::io::stderr().is_terminal();
    let mut corrupt = Vec::new();
    let mut unverified = Vec::new();
    let mut absent = Vec::new();
    let mut checked = 0usize;
    for entry in wanted {
        let checks = store.verify(entry, &mut |path: &Path| {
            if terminal {
                eprint!("\rchecking {} ...\x1b[K", path.display());
            }
        });
        if terminal {
            eprint!("\r\x1b[K");
        }
        if checks.is_empty() {
            if named {
                out(&format!("{}: not installed", entry.name))?;
                absent.push(entry.name.clone());
            }
            continue;
        }
        for c in checks {
            checked += 1;
            let what = format!("{}/{}", c.model, c.file);
            let line = match &c.outcome {
                CheckOutcome::Ok { against, .. } => format!("ok       {what} (sha256 matches the {against})"),
                CheckOutcome::Unchecked { sha256 } => {
                    format!("unknown  {what}: no published sha256 to compare; it is {sha256}")
                }
                CheckOutcome::Unverified { sha256, reason } => {
                    unverified.push(c.path.display().to_string());
                    format!("UNVERIFIED {what}: {reason}; nothing vouches for its sha256 {sha256}")
                }
                CheckOutcome::Missing => {
                    corrupt.push(c.path.display().to_string());
                    format!("MISSING  {what}: {}", c.path.display())
                }
                CheckOutcome::Corrupt { reason } => {
                    corrupt.push(c.path.display().to_string());
                    format!("CORRUPT  {what}: {reason}: {}", c.path.display())
                }
            };
            out(&line)?;
        }
    }
    if !corrupt.is_empty() {
        return Err(runtime(anyhow::anyhow!(
            "{} damaged or missing file(s): {} (download again with `clipcanvas models download NAME`)",
            corrupt.len(),
            corrupt.join(", ")
        )));
    }
    if !unverified.is_empty() {
        return Err(runtime(anyhow::anyhow!(
            "{} file(s) could not be verified, their download record being damaged: {} \
             (download again with `clipcanvas models download NAME`)",
            unverified.len(),
            unverified.join(", ")
        )));
    }
    if !absent.is_empty() {
        return Err(runtime(anyhow::anyhow!("not installed: {}", absent.join(", "))));
    }
    if checked == 0 {
        out("no installed models to check")?;
    }
    Ok(())
}

/// Whether a `--clip`/`--vqgan` value may be a model name: no such file, one plain word.
fn catalog_name(value: &Path) -> Option<&str> {
    let s = value.to_str()?;
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (plain && !value.exists()).then_some(s)
}

/// Replaces model names in `--clip` and `--vqgan` (and the same fields of a settings file)
/// by the installed files' paths. A value that is an existing path, or not a catalog name,
/// is left for the loader as it is.
pub fn resolve_names(mut s: RunSettings) -> Result<RunSettings, CliError> {
    let clip = s.clip.as_deref().and_then(catalog_name).map(str::to_owned);
    let vqgan = s.vqgan.as_deref().and_then(catalog_name).map(str::to_owned);
    let extra: Vec<Option<String>> = s.extra_clips.iter().map(|c| catalog_name(&c.path).map(str::to_owned)).collect();
    if clip.is_none() && vqgan.is_none() && extra.iter().all(Option::is_none) {
        return Ok(s);
    }
    let store = Store::open(&[]).map_err(cli_error)?;
    if let Some(name) = clip.filter(|n| store.catalog().get(n).is_some()) {
        s.clip = Some(store.resolve_clip(&name).map_err(cli_error)?);
    }
    for (c, name) in s.extra_clips.iter_mut().zip(extra) {
        if let Some(name) = name.filter(|n| store.catalog().get(n).is_some()) {
            c.path = store.resolve_clip(&name).map_err(cli_error)?;
        }
    }
    if let Some(name) = vqgan.filter(|n| store.catalog().get(n).is_some()) {
        let (config, checkpoint) = store.resolve_vqgan(&name).map_err(cli_error)?;
        s.vqgan = Some(checkpoint);
        if s.vqgan_config.is_none() {
            s.vqgan_config = Some(config);
        }
    }
    Ok(s)
}

/// The catalog's CLIPs installed here, smallest first: the ones a quality preset adds.
pub fn installed_clips() -> Result<Vec<PathBuf>, CliError> {
    let store = Store::open(&[]).map_err(cli_error)?;
    let mut out = Vec::new();
    for name in ["clip-vit-b-32", "clip-vit-b-16", "clip-vit-l-14"] {
        if store.catalog().get(name).is_some_and(|e| store.status(e).is_installed()) {
            out.push(store.resolve_clip(name).map_err(cli_error)?);
        }
    }
    Ok(out)
}

/// A `--clip` value for commands that take only a CLIP folder: a path, or a model name.
pub fn resolve_clip_arg(value: &Path) -> Result<PathBuf, CliError> {
    let settings = RunSettings { clip: Some(value.to_path_buf()), ..RunSettings::default() };
    Ok(resolve_names(settings)?.clip.unwrap_or_else(|| value.to_path_buf()))
}
