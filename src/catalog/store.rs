//! Where models live on this machine: the folders searched for them (the roots), whether
//! each catalog model is installed, missing or corrupt there, the record of what was
//! downloaded (so files can be checked later even where the catalog has no hash), hash
//! verification, and turning a model name into the paths the loaders take.
//!
//! A model is installed as `<root>/<name>/<file>`. Roots, in search order: folders given
//! explicitly (`--models-dir`, `--dir`), each entry of `CLIPCANVAS_MODELS`, the platform's
//! data folder (`…/clipcanvas/models`), `models/` beside the executable, and `models/` in
//! the source tree (so `cargo run` finds the bundled demo models). The first root holding
//! every file of a model wins. Listing checks presence and sizes only; hashing gigabytes
//! and checking formats is left to [`Store::verify`].
//!
//! The download record is only trusted when it reads back whole: a record that cannot be
//! parsed leaves the files it covered of unknown provenance, which `verify` reports as
//! unverified (an error) rather than as merely unpublished, and which `models download`
//! fetches again. `CLIPCANVAS_CATALOG` (not in `--help`; for tests and private catalogs)
//! names a catalog file that replaces the built-in one.
//!
//! One file although past 800 lines: listing, verification, the download record and name
//! resolution all answer "what must this file be" through one rule (`expected`, from the
//! catalog or else the record); about a fifth of the lines are its tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::entries::{Catalog, CatalogFile, ModelEntry, ModelKind};
use super::error::CatalogError;
use super::format;

/// Extra model folders, separated like `PATH`.
pub const MODELS_ENV: &str = "CLIPCANVAS_MODELS";
/// The record of downloaded files, kept in each model's folder.
pub const RECORD_FILE: &str = ".clipcanvas-download.json";
/// A catalog file used instead of the built-in one.
pub const CATALOG_ENV: &str = "CLIPCANVAS_CATALOG";
/// The largest download record or catalog file read (each is a few KB).
const MAX_SMALL_FILE: u64 = 4 << 20;

/// Why a folder is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// Given on the command line or in the settings.
    Explicit,
    /// From `CLIPCANVAS_MODELS`.
    Env,
    /// The platform's data folder.
    DataDir,
    /// `models/` beside the executable.
    BesideExe,
    /// `models/` in the source tree clipcanvas was built from.
    Source,
}

impl RootKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Explicit => "given",
            Self::Env => MODELS_ENV,
            Self::DataDir => "data folder",
            Self::BesideExe => "beside the program",
            Self::Source => "source tree",
        }
    }

    /// Whether downloads may go here without being asked for.
    fn installable(self) -> bool {
        matches!(self, Self::Explicit | Self::Env | Self::DataDir)
    }
}

/// A folder searched for models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub path: PathBuf,
    pub kind: RootKind,
}

/// The roots in search order, without duplicates: `explicit` first, then
/// `CLIPCANVAS_MODELS`, the data folder, beside the executable, the source tree.
pub fn default_roots(explicit: &[PathBuf]) -> Vec<Root> {
    let mut roots: Vec<Root> = explicit.iter().map(|p| Root { path: p.clone(), kind: RootKind::Explicit }).collect();
    if let Some(list) = std::env::var_os(MODELS_ENV) {
        roots.extend(
            std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|path| Root { path, kind: RootKind::Env }),
        );
    }
    if let Some(data) = data_models_dir() {
        roots.push(Root { path: data, kind: RootKind::DataDir });
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|p| p.join("models"))) {
        roots.push(Root { path: dir, kind: RootKind::BesideExe });
    }
    roots.push(Root { path: Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), kind: RootKind::Source });
    let mut seen = Vec::new();
    roots.retain(|r| {
        let key = std::fs::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
    roots
}

/// `<platform data folder>/clipcanvas/models`, e.g. `~/.local/share/clipcanvas/models`.
pub fn data_models_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("clipcanvas").join("models"))
}

/// Where a model stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// Every file is present (with the right size, where known) in `dir`.
    Installed { dir: PathBuf },
    /// Not complete anywhere; `files` are those still needed.
    Missing { files: Vec<String> },
    /// A file in `dir` has the wrong size.
    Corrupt { dir: PathBuf, file: String, reason: String },
}

impl ModelStatus {
    pub fn is_installed(&self) -> bool {
        matches!(self, Self::Installed { .. })
    }
}

/// What clipcanvas recorded about a file it downloaded and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFile {
    pub size: u64,
    pub sha256: String,
    pub url: String,
}

/// The download record of one model folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub files: BTreeMap<String, RecordedFile>,
    /// An earlier record of this folder could not be read: a file without an entry here
    /// may have been recorded in it, so its provenance is unknown (not merely unpublished).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost_entries: bool,
    /// Why the record on disk could not be read (not saved).
    #[serde(skip)]
    pub damage: Option<String>,
}

impl Record {
    /// Reads a folder's record. A missing one is empty. One that cannot be read or parsed
    /// is empty with [`Record::lost_entries`] set and [`Record::damage`] saying why: the
    /// hashes it held are gone, and files it may have covered are of unknown provenance.
    pub fn read(dir: &Path) -> Self {
        let path = dir.join(RECORD_FILE);
        match read_small(&path) {
            Ok(None) => Self::default(),
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| Self::damaged(format!("not valid ({e})"))),
            Err(e) => Self::damaged(e),
        }
    }

    fn damaged(reason: String) -> Self {
        Self { files: BTreeMap::new(), lost_entries: true, damage: Some(reason) }
    }

    /// Why a file without an entry cannot be trusted, if the record was ever damaged.
    fn provenance_problem(&self) -> Option<String> {
        self.lost_entries.then(|| match &self.damage {
            Some(reason) => format!("the download record {RECORD_FILE} is damaged: {reason}"),
            None => format!("an earlier download record {RECORD_FILE} was damaged and its entry for this file lost"),
        })
    }

    /// Adds one file to a folder's record, atomically. A damaged record is replaced by one
    /// that keeps [`Record::lost_entries`], so its loss is never forgotten.
    pub fn add(dir: &Path, file: &str, entry: RecordedFile) -> Result<(), CatalogError> {
        let mut record = Self::read(dir);
        record.files.insert(file.to_owned(), entry);
        let path = dir.join(RECORD_FILE);
        let json = serde_json::to_string_pretty(&record).map_err(|e| CatalogError::io(&path, e.into()))?;
        crate::files::write_atomic(&path, |w| std::io::Write::write_all(w, json.as_bytes()))?;
        Ok(())
    }
}

/// Reads a small file (a download record, a catalog) as text: `None` if it does not
/// exist; an error if it is not a regular file, is over [`MAX_SMALL_FILE`] or unreadable.
fn read_small(path: &Path) -> Result<Option<String>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable ({e})")),
    };
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_SMALL_FILE {
        return Err(format!("{} bytes, far too large", meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("unreadable ({e})"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_SMALL_FILE), &mut text)
        .map_err(|e| format!("unreadable ({e})"))?;
    Ok(Some(text))
}

/// The catalog: the file `CLIPCANVAS_CATALOG` names, else the built-in one.
pub fn catalog_from_env() -> Result<Catalog, CatalogError> {
    let Some(path) = std::env::var_os(CATALOG_ENV).filter(|p| !p.is_empty()).map(PathBuf::from) else {
        return Catalog::builtin();
    };
    let origin = format!("{} ({CATALOG_ENV})", path.display());
    match read_small(&path) {
        Ok(Some(text)) => Catalog::parse(&text, &origin),
        Ok(None) => Err(CatalogError::Catalog { origin, msg: "no such file".into() }),
        Err(msg) => Err(CatalogError::Catalog { origin, msg }),
    }
}

/// The size and sha256 a file must have, from the catalog or else the download record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// "catalog" or "download record".
    pub source: &'static str,
    /// Why nothing vouches for the file although something once may have (a damaged
    /// download record), when neither the catalog nor the record gives a sha256.
    pub unknown_provenance: Option<String>,
}

fn expected(file: &CatalogFile, record: &Record) -> Expected {
    if file.size.is_some() || file.sha256.is_some() {
        return Expected { size: file.size, sha256: file.sha256.clone(), source: "catalog", unknown_provenance: None };
    }
    match record.files.get(&file.name) {
        Some(r) => Expected {
            size: Some(r.size),
            sha256: Some(r.sha256.clone()),
            source: "download record",
            unknown_provenance: None,
        },
        None => Expected { unknown_provenance: record.provenance_problem(), ..Expected::default() },
    }
}

/// "truncated: X of Y bytes" or "X bytes, expected Y".
pub fn size_problem(found: u64, want: u64) -> Option<String> {
    match found.cmp(&want) {
        std::cmp::Ordering::Less => Some(format!("truncated: {found} of {want} bytes")),
        std::cmp::Ordering::Greater => Some(format!("{found} bytes, expected {want}")),
        std::cmp::Ordering::Equal => None,
    }
}

/// Why a file of `found` bytes is far from the catalog's `approx` size: less than half or
/// more than twice it. Approximate sizes are remembered figures, so only a file that
/// cannot be the model (an error page, a different model) is this far off.
pub fn approx_size_problem(found: u64, approx: u64) -> Option<String> {
    let far = found.saturating_mul(2) < approx || found > approx.saturating_mul(2);
    far.then(|| {
        format!(
            "{} ({found} bytes), far from the ~{} the catalog expects (more than 2\u{d7} off)",
            human_bytes(found),
            human_bytes(approx)
        )
    })
}

/// Why an installed file cannot be trusted as it is: it is not of its format, or its
/// download record is damaged and the catalog has no hash to check it by. `path` may be
/// the weights' other name (see [`weights_alternative`]).
pub fn distrust(entry: &ModelEntry, file: &CatalogFile, path: &Path, record: &Record) -> Option<String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(&file.name);
    if let Err(problem) = format::check(entry.kind, name, path) {
        return Some(problem);
    }
    expected(file, record).unknown_provenance
}

/// The other name a CLIP folder's weights may have.
fn weights_alternative(kind: ModelKind, file: &str) -> Option<&'static str> {
    match (kind, file) {
        (ModelKind::Clip, "model.safetensors") => Some("pytorch_model.bin"),
        (ModelKind::Clip, "pytorch_model.bin") => Some("model.safetensors"),
        _ => None,
    }
}

/// The state of one model folder.
enum DirState {
    Absent,
    Complete,
    Partial(Vec<String>),
    Corrupt { file: String, reason: String },
}

/// How one file of an installed copy checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Size and sha256 match what the catalog or the download record expect.
    Ok {
        sha256: String,
        against: &'static str,
    },
    /// Present, but there is no sha256 to compare with (the catalog has none and the file
    /// was not downloaded by clipcanvas); its sha256 is shown for checking by hand.
    Unchecked {
        sha256: String,
    },
    /// Present, of its format, but nothing vouches for it: the download record that held
    /// its sha256 is damaged and the catalog has none. Never counted as verified.
    Unverified {
        sha256: String,
        reason: String,
    },
    Missing,
    Corrupt {
        reason: String,
    },
}

/// The check of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    pub model: String,
    pub file: String,
    pub path: PathBuf,
    pub outcome: CheckOutcome,
}

/// The catalog and the roots: everything needed to find models.
#[derive(Debug, Clone)]
pub struct Store {
    catalog: Catalog,
    roots: Vec<Root>,
}

impl Store {
    pub fn new(catalog: Catalog, roots: Vec<Root>) -> Self {
        Self { catalog, roots }
    }

    /// The catalog (`CLIPCANVAS_CATALOG`'s, else the built-in one) and the default
    /// roots, `explicit` first.
    pub fn open(explicit: &[PathBuf]) -> Result<Self, CatalogError> {
        Ok(Self::new(catalog_from_env()?, default_roots(explicit)))
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    fn check_dir(entry: &ModelEntry, dir: &Path) -> DirState {
        if !dir.is_dir() {
            return DirState::Absent;
        }
        let record = Record::read(dir);
        let mut missing = Vec::new();
        for f in &entry.files {
            let path = dir.join(&f.name);
            let Ok(meta) = std::fs::metadata(&path) else {
                let alt = weights_alternative(entry.kind, &f.name);
                if !alt.is_some_and(|a| dir.join(a).is_file()) {
                    missing.push(f.name.clone());
                }
                continue;
            };
            if !meta.is_file() {
                return DirState::Corrupt { file: f.name.clone(), reason: "not a file".into() };
            }
            if let Some(want) = expected(f, &record).size {
                if let Some(reason) = size_problem(meta.len(), want) {
                    return DirState::Corrupt { file: f.name.clone(), reason };
                }
            }
        }
        if missing.is_empty() {
            DirState::Complete
        } else if missing.len() == entry.files.len() {
            DirState::Absent
        } else {
            DirState::Partial(missing)
        }
    }

    /// Installed in the first root that holds it whole; else corrupt or missing, as found
    /// in the first root that holds any of it.
    pub fn status(&self, entry: &ModelEntry) -> ModelStatus {
        let mut fallback = None;
        for root in &self.roots {
            let dir = root.path.join(entry.rel_dir());
            match Self::check_dir(entry, &dir) {
                DirState::Complete => return ModelStatus::Installed { dir },
                DirState::Absent => {}
                DirState::Partial(files) => {
                    fallback.get_or_insert(ModelStatus::Missing { files });
                }
                DirState::Corrupt { file, reason } => {
                    if !matches!(fallback, Some(ModelStatus::Corrupt { .. })) {
                        fallback = Some(ModelStatus::Corrupt { dir, file, reason });
                    }
                }
            }
        }
        fallback.unwrap_or_else(|| ModelStatus::Missing { files: entry.files.iter().map(|f| f.name.clone()).collect() })
    }

    /// Every catalog model with its status, in catalog order.
    pub fn statuses(&self) -> Vec<(&ModelEntry, ModelStatus)> {
        self.catalog.models().iter().map(|m| (m, self.status(m))).collect()
    }

    /// Where downloads go: the first explicit, `CLIPCANVAS_MODELS` or data-folder root that
    /// can be created and written to.
    pub fn install_root(&self) -> Result<PathBuf, CatalogError> {
        let mut reasons = Vec::new();
        for root in self.roots.iter().filter(|r| r.kind.installable()) {
            match probe_writable(&root.path) {
                Ok(()) => return Ok(root.path.clone()),
                Err(e) => reasons.push(format!("{}: {e}", root.path.display())),
            }
        }
        if reasons.is_empty() {
            reasons.push("the platform has no data folder".into());
        }
        Err(CatalogError::NoInstallFolder { reasons: reasons.join("; ") })
    }

    /// The folder a model would be installed in by default, for messages: under the first
    /// root downloads may go to. No I/O (the root may not exist yet).
    pub fn install_dir_hint(&self, entry: &ModelEntry) -> PathBuf {
        let root = self
            .roots
            .iter()
            .find(|r| r.kind.installable())
            .map_or_else(|| PathBuf::from("models"), |r| r.path.clone());
        root.join(entry.rel_dir())
    }

    fn not_installed(&self, entry: &ModelEntry) -> CatalogError {
        let (reason, help) = match self.status(entry) {
            ModelStatus::Corrupt { dir, file, reason } => {
                (format!("damaged: {} ({reason})", dir.join(&file).display()), manual_help(entry, &dir, None))
            }
            _ if entry.bundled => (
                "not installed (it is bundled with the source; see README)".to_owned(),
                manual_help(entry, Path::new(""), None),
            ),
            _ => (
                format!("not installed (run `clipcanvas models download {}`)", entry.name),
                manual_help(entry, &self.install_dir_hint(entry), None),
            ),
        };
        CatalogError::NotInstalled { name: entry.name.clone(), reason, help }
    }

    fn installed(&self, name: &str, kind: ModelKind) -> Result<(&ModelEntry, PathBuf), CatalogError> {
        let entry = self.catalog.find(name)?;
        if entry.kind != kind {
            return Err(CatalogError::WrongKind {
                name: name.to_owned(),
                expected: kind.name(),
                found: entry.kind.name(),
            });
        }
        match self.status(entry) {
            ModelStatus::Installed { dir } => Ok((entry, dir)),
            _ => Err(self.not_installed(entry)),
        }
    }

    /// The folder of an installed CLIP model.
    pub fn resolve_clip(&self, name: &str) -> Result<PathBuf, CatalogError> {
        self.installed(name, ModelKind::Clip).map(|(_, dir)| dir)
    }

    /// The YAML and the checkpoint of an installed VQGAN model.
    pub fn resolve_vqgan(&self, name: &str) -> Result<(PathBuf, PathBuf), CatalogError> {
        let (entry, dir) = self.installed(name, ModelKind::Vqgan)?;
        match (entry.config_file(), entry.checkpoint_file()) {
            (Some(c), Some(k)) => Ok((dir.join(&c.name), dir.join(&k.name))),
            // The catalog's rules make this unreachable; say so rather than panic.
            _ => Err(CatalogError::Catalog {
                origin: "catalog".into(),
                msg: format!("VQGAN model '{name}' lacks a .yaml or a checkpoint"),
            }),
        }
    }

    /// The folders holding any file of `entry`, in search order.
    pub fn copies(&self, entry: &ModelEntry) -> Vec<PathBuf> {
        self.roots
            .iter()
            .map(|r| r.path.join(entry.rel_dir()))
            .filter(|d| !matches!(Self::check_dir(entry, d), DirState::Absent))
            .collect()
    }

    /// The first file of the copy of `entry` in `dir` that cannot be trusted as it is,
    /// and why (see [`distrust`]); `None` if every present file can.
    pub fn distrusted(&self, entry: &ModelEntry, dir: &Path) -> Option<(String, String)> {
        let record = Record::read(dir);
        entry.files.iter().find_map(|f| {
            let mut path = dir.join(&f.name);
            if !path.is_file() {
                path = weights_alternative(entry.kind, &f.name).map(|a| dir.join(a)).filter(|a| a.is_file())?;
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            distrust(entry, f, &path, &record).map(|why| (name, why))
        })
    }

    /// Checks every file of every copy of `entry` against the catalog's or the download
    /// record's size and sha256, and that it has its format. `on_file` is called before
    /// each file is hashed.
    pub fn verify(&self, entry: &ModelEntry, on_file: &mut dyn FnMut(&Path)) -> Vec<FileCheck> {
        let mut checks = Vec::new();
        for dir in self.copies(entry) {
            let record = Record::read(&dir);
            for f in &entry.files {
                let mut path = dir.join(&f.name);
                if !path.is_file() {
                    if let Some(alt) = weights_alternative(entry.kind, &f.name).map(|a| dir.join(a)) {
                        if alt.is_file() {
                            path = alt;
                        }
                    }
                }
                let outcome = check_file(entry.kind, &path, &expected(f, &record), on_file);
                checks.push(FileCheck { model: entry.name.clone(), file: f.name.clone(), path, outcome });
            }
        }
        checks
    }
}

fn check_file(kind: ModelKind, path: &Path, want: &Expected, on_file: &mut dyn FnMut(&Path)) -> CheckOutcome {
    let Ok(meta) = std::fs::metadata(path) else { return CheckOutcome::Missing };
    if !meta.is_file() {
        return CheckOutcome::Corrupt { reason: "not a file".into() };
    }
    if let Some(reason) = want.size.and_then(|s| size_problem(meta.len(), s)) {
        return CheckOutcome::Corrupt { reason };
    }
    on_file(path);
    let found = match crate::files::file_sha256(path) {
        Ok(h) => h,
        Err(e) => return CheckOutcome::Corrupt { reason: format!("unreadable ({e})") },
    };
    if let Some(h) = want.sha256.as_ref().filter(|h| **h != found) {
        return CheckOutcome::Corrupt { reason: format!("sha256 mismatch: {found}, expected {h} ({})", want.source) };
    }
    // A matching hash says the bytes are those downloaded, not that they are a model.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Err(reason) = format::check(kind, &name, path) {
        return CheckOutcome::Corrupt { reason };
    }
    match (&want.sha256, &want.unknown_provenance) {
        (Some(_), _) => CheckOutcome::Ok { sha256: found, against: want.source },
        (None, Some(reason)) => CheckOutcome::Unverified { sha256: found, reason: reason.clone() },
        (None, None) => CheckOutcome::Unchecked { sha256: found },
    }
}

/// How to install a model by hand: each file with its URLs (a private mirror's first),
/// and the folder to put them in. Several lines.
pub fn manual_help(entry: &ModelEntry, folder: &Path, mirror: Option<&str>) -> String {
    if entry.bundled {
        return format!(
            "{} ships with the clipcanvas source in models/{}/ (see README)",
            entry.name,
            entry.dir_components().join("/")
        );
    }
    let mut out = format!(
        "To install {} by hand, download each file (from any one of its URLs) into {}{}",
        entry.name,
        folder.display(),
        std::path::MAIN_SEPARATOR
    );
    for f in &entry.files {
        out.push_str("\n  ");
        out.push_str(&f.name);
        if let Some((size, exact)) = f.display_size() {
            let approx = if exact { "" } else { "about " };
            out.push_str(&format!(" ({approx}{})", human_bytes(size)));
        }
        for url in mirror_url(mirror, entry, f).iter().chain(&f.urls) {
            out.push_str("\n      ");
            out.push_str(url);
        }
    }
    out
}

/// The URL of a file on a private mirror: `<base>/<model name>/<file name>`.
pub fn mirror_url(base: Option<&str>, entry: &ModelEntry, file: &CatalogFile) -> Option<String> {
    base.map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| format!("{}/{}/{}", b.trim_end_matches('/'), entry.name, file.name))
}

/// Creates `dir` if needed and checks a file can be created in it.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".clipcanvas-probe-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// 1234567 → "1.2 MB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    #[expect(clippy::cast_precision_loss, reason = "for display")]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAT: &str = r#"
[[model]]
name = "v"
kind = "vqgan"
description = "d"
licence = "MIT"
[[model.files]]
name = "model.yaml"
urls = ["http://127.0.0.1:9/v/model.yaml"]
[[model.files]]
name = "last.ckpt"
size = 4
urls = ["http://127.0.0.1:9/v/last.ckpt"]

[[model]]
name = "c"
kind = "clip"
description = "d"
licence = "MIT"
[[model.files]]
name = "config.json"
urls = ["http://127.0.0.1:9/c/config.json"]
[[model.files]]
name = "pytorch_model.bin"
urls = ["http://127.0.0.1:9/c/pytorch_model.bin"]
[[model.files]]
name = "tokenizer.json"
urls = ["http://127.0.0.1:9/c/tokenizer.json"]
"#;

    fn store(roots: &[&Path]) -> Store {
        let catalog = Catalog::parse(CAT, "test").unwrap();
        Store::new(catalog, roots.iter().map(|p| Root { path: p.to_path_buf(), kind: RootKind::Explicit }).collect())
    }

    fn put(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn status_is_missing_then_corrupt_then_installed_and_the_first_whole_root_wins() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let s = store(&[a.path(), b.path()]);
        let v = s.catalog().find("v").unwrap();
        assert_eq!(s.status(v), ModelStatus::Missing { files: vec!["model.yaml".into(), "last.ckpt".into()] });
        put(&a.path().join("v"), "model.yaml", b"y");
        assert_eq!(s.status(v), ModelStatus::Missing { files: vec!["last.ckpt".into()] });
        put(&a.path().join("v"), "last.ckpt", b"12");
        let ModelStatus::Corrupt { file, reason, .. } = s.status(v) else { panic!("{:?}", s.status(v)) };
        assert_eq!((file.as_str(), reason.as_str()), ("last.ckpt", "truncated: 2 of 4 bytes"));
        put(&b.path().join("v"), "model.yaml", b"y");
        put(&b.path().join("v"), "last.ckpt", b"1234");
        assert_eq!(s.status(v), ModelStatus::Installed { dir: b.path().join("v") });
        let (yaml, ckpt) = s.resolve_vqgan("v").unwrap();
        assert_eq!((yaml, ckpt), (b.path().join("v/model.yaml"), b.path().join("v/last.ckpt")));
        assert_eq!(s.copies(v).len(), 2);
    }

    #[test]
    fn a_clip_folder_with_safetensors_instead_of_bin_counts() {
        let a = tempfile::tempdir().unwrap();
        let s = store(&[a.path()]);
        let dir = a.path().join("c");
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            put(&dir, f, b"x");
        }
        assert_eq!(s.resolve_clip("c").unwrap(), dir);
    }

    #[test]
    fn resolving_names_the_problem() {
        let a = tempfile::tempdir().unwrap();
        let s = store(&[a.path()]);
        let e = s.resolve_clip("v").unwrap_err().to_string();
        assert_eq!(e, "'v' is a vqgan model, not a clip model");
        let e = s.resolve_clip("zzz").unwrap_err().to_string();
        assert_eq!(e, "unknown model 'zzz' (known: v, c)");
        let e = s.resolve_clip("c").unwrap_err();
        assert_eq!(e.to_string(), "model 'c' is not installed (run `clipcanvas models download c`)");
        let help = e.help().unwrap();
        assert!(help.contains(&a.path().join("c").display().to_string()), "{help}");
        assert!(help.contains("pytorch_model.bin\n      http://127.0.0.1:9/c/pytorch_model.bin"), "{help}");
    }

    fn fixture(rel: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)).unwrap()
    }

    #[test]
    fn the_download_record_supplies_sizes_and_hashes_the_catalog_lacks() {
        let a = tempfile::tempdir().unwrap();
        let s = store(&[a.path()]);
        let v = s.catalog().find("v").unwrap();
        let dir = a.path().join("v");
        let yaml = fixture("vqgan-tiny/model.yaml");
        put(&dir, "model.yaml", &yaml);
        put(&dir, "last.ckpt", b"1234");
        let sha = crate::files::file_sha256(&dir.join("model.yaml")).unwrap();
        let size = yaml.len() as u64;
        Record::add(&dir, "model.yaml", RecordedFile { size, sha256: sha.clone(), url: "u".into() }).unwrap();
        let checks = s.verify(v, &mut |_| {});
        assert_eq!(checks[0].outcome, CheckOutcome::Ok { sha256: sha.clone(), against: "download record" });
        // The catalog's size matches, but four bytes of text are no checkpoint.
        let CheckOutcome::Corrupt { reason } = &checks[1].outcome else { panic!("{checks:?}") };
        assert_eq!(reason, "not a PyTorch checkpoint: it looks like text beginning \"1234\"");
        // One byte changed, same size: only the hash tells.
        let mut changed = yaml.clone();
        changed[0] = b'M';
        put(&dir, "model.yaml", &changed);
        let checks = s.verify(v, &mut |_| {});
        let CheckOutcome::Corrupt { reason } = &checks[0].outcome else { panic!("{checks:?}") };
        assert!(reason.starts_with("sha256 mismatch") && reason.contains(&sha), "{reason}");
        assert!(s.status(v).is_installed(), "listing does not hash");
        // Truncated: listing sees it through the record's size.
        put(&dir, "model.yaml", b"ya");
        assert!(matches!(s.status(v), ModelStatus::Corrupt { .. }));
    }

    #[test]
    fn a_damaged_record_leaves_its_files_unverified_and_says_so_after_a_rewrite() {
        let a = tempfile::tempdir().unwrap();
        let s = store(&[a.path()]);
        let v = s.catalog().find("v").unwrap();
        let dir = a.path().join("v");
        let yaml = fixture("vqgan-tiny/model.yaml");
        put(&dir, "model.yaml", &yaml);
        put(&dir, RECORD_FILE, b"{\"files\": {\"model.yaml\": {\"size\": 1");
        let record = Record::read(&dir);
        assert!(record.lost_entries && record.files.is_empty());
        let checks = s.verify(v, &mut |_| {});
        let CheckOutcome::Unverified { reason, .. } = &checks[0].outcome else { panic!("{checks:?}") };
        assert!(reason.starts_with("the download record .clipcanvas-download.json is damaged: not valid"), "{reason}");
        assert_eq!(s.distrusted(v, &dir).map(|(f, _)| f).as_deref(), Some("model.yaml"));
        // Recording another file keeps the loss on record.
        let sha = crate::files::file_sha256(&dir.join("model.yaml")).unwrap();
        Record::add(&dir, "other.txt", RecordedFile { size: 1, sha256: sha, url: "u".into() }).unwrap();
        let checks = s.verify(v, &mut |_| {});
        let CheckOutcome::Unverified { reason, .. } = &checks[0].outcome else { panic!("{checks:?}") };
        assert!(reason.contains("earlier download record"), "{reason}");
        // A record that is not a file at all, or endless, is damaged too, never read whole.
        std::fs::remove_file(dir.join(RECORD_FILE)).unwrap();
        std::fs::create_dir(dir.join(RECORD_FILE)).unwrap();
        assert_eq!(Record::read(&dir).damage.as_deref(), Some("not a regular file"));
        // Without a record, a file put there by hand is merely unpublished.
        std::fs::remove_dir(dir.join(RECORD_FILE)).unwrap();
        assert!(matches!(s.verify(v, &mut |_| {})[0].outcome, CheckOutcome::Unchecked { .. }));
        assert_eq!(s.distrusted(v, &dir), None, "a good file by hand, and a missing one, are not distrusted");
    }

    #[test]
    fn approximate_sizes_refuse_only_what_is_more_than_twice_off() {
        assert_eq!(approx_size_problem(605_000_000, 605_000_000), None);
        assert_eq!(approx_size_problem(302_500_000, 605_000_000), None);
        assert_eq!(approx_size_problem(1_210_000_000, 605_000_000), None);
        let p = approx_size_problem(12_288, 605_000_000).unwrap();
        assert_eq!(p, "12.3 KB (12288 bytes), far from the ~605.0 MB the catalog expects (more than 2\u{d7} off)");
        assert!(approx_size_problem(1_210_000_001, 605_000_000).is_some());
    }

    #[test]
    fn mirror_urls_and_sizes_read_well() {
        let s = store(&[]);
        let v = s.catalog().find("v").unwrap();
        let f = v.file("last.ckpt").unwrap();
        assert_eq!(mirror_url(Some("http://m/x/"), v, f).as_deref(), Some("http://m/x/v/last.ckpt"));
        assert_eq!(mirror_url(Some(" "), v, f), None);
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(8_400_000_000), "8.4 GB");
    }
}
