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
//! is left to [`Store::verify`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::entries::{Catalog, CatalogFile, ModelEntry, ModelKind};
use super::error::CatalogError;

/// Extra model folders, separated like `PATH`.
pub const MODELS_ENV: &str = "CLIPCANVAS_MODELS";
/// The record of downloaded files, kept in each model's folder.
pub const RECORD_FILE: &str = ".clipcanvas-download.json";

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
}

impl Record {
    /// Reads a folder's record; a missing or unreadable one is empty (it is only a cache
    /// of what was checked at download time).
    pub fn read(dir: &Path) -> Self {
        std::fs::read_to_string(dir.join(RECORD_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Adds one file to a folder's record, atomically.
    pub fn add(dir: &Path, file: &str, entry: RecordedFile) -> Result<(), CatalogError> {
        let mut record = Self::read(dir);
        record.files.insert(file.to_owned(), entry);
        let path = dir.join(RECORD_FILE);
        let json = serde_json::to_string_pretty(&record).map_err(|e| CatalogError::io(&path, e.into()))?;
        crate::files::write_atomic(&path, |w| std::io::Write::write_all(w, json.as_bytes()))?;
        Ok(())
    }
}

/// The size and sha256 a file must have, from the catalog or else the download record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// "catalog" or "download record".
    pub source: &'static str,
}

fn expected(file: &CatalogFile, record: &Record) -> Expected {
    if file.size.is_some() || file.sha256.is_some() {
        return Expected { size: file.size, sha256: file.sha256.clone(), source: "catalog" };
    }
    match record.files.get(&file.name) {
        Some(r) => Expected { size: Some(r.size), sha256: Some(r.sha256.clone()), source: "download record" },
        None => Expected::default(),
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

    /// The built-in catalog and the default roots, `explicit` first.
    pub fn open(explicit: &[PathBuf]) -> Result<Self, CatalogError> {
        Ok(Self::new(Catalog::builtin()?, default_roots(explicit)))
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

    /// Checks every file of every copy of `entry` against the catalog's or the download
    /// record's size and sha256. `on_file` is called before each file is hashed.
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
                let outcome = check_file(&path, &expected(f, &record), on_file);
                checks.push(FileCheck { model: entry.name.clone(), file: f.name.clone(), path, outcome });
            }
        }
        checks
    }
}

fn check_file(path: &Path, want: &Expected, on_file: &mut dyn FnMut(&Path)) -> CheckOutcome {
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
    match &want.sha256 {
        Some(h) if *h == found => CheckOutcome::Ok { sha256: found, against: want.source },
        Some(h) => {
            CheckOutcome::Corrupt { reason: format!("sha256 mismatch: {found}, expected {h} ({})", want.source) }
        }
        None => CheckOutcome::Unchecked { sha256: found },
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

    #[test]
    fn the_download_record_supplies_sizes_and_hashes_the_catalog_lacks() {
        let a = tempfile::tempdir().unwrap();
        let s = store(&[a.path()]);
        let v = s.catalog().find("v").unwrap();
        let dir = a.path().join("v");
        put(&dir, "model.yaml", b"yaml!");
        put(&dir, "last.ckpt", b"1234");
        let sha = crate::files::file_sha256(&dir.join("model.yaml")).unwrap();
        Record::add(&dir, "model.yaml", RecordedFile { size: 5, sha256: sha.clone(), url: "u".into() }).unwrap();
        let checks = s.verify(v, &mut |_| {});
        assert_eq!(checks[0].outcome, CheckOutcome::Ok { sha256: sha.clone(), against: "download record" });
        assert!(matches!(checks[1].outcome, CheckOutcome::Unchecked { .. }), "{checks:?}");
        // One byte changed, same size: only the hash tells.
        put(&dir, "model.yaml", b"yamL!");
        let checks = s.verify(v, &mut |_| {});
        let CheckOutcome::Corrupt { reason } = &checks[0].outcome else { panic!("{checks:?}") };
        assert!(reason.starts_with("sha256 mismatch") && reason.contains(&sha), "{reason}");
        assert!(s.status(v).is_installed(), "listing does not hash");
        // Truncated: listing sees it through the record's size.
        put(&dir, "model.yaml", b"ya");
        assert!(matches!(s.status(v), ModelStatus::Corrupt { .. }));
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
