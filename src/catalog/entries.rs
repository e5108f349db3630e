//! The model catalog: which models clipcanvas knows, the files each is made of, and where
//! to download them. The catalog is `models/catalog.toml`, compiled into the binary; this
//! module parses it and checks its rules (unique names, plain file names, a URL for every
//! file of a downloadable model, well-formed hashes), so a broken catalog is one clear
//! error, never a panic or a download to a strange place. It does no I/O.

use serde::Deserialize;

use super::error::CatalogError;

/// The catalog that ships with clipcanvas.
pub const BUILTIN_CATALOG: &str = include_str!("../../models/catalog.toml");

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A Hugging Face CLIP folder: config, weights, tokenizer.
    Clip,
    /// A taming-transformers checkpoint with its YAML.
    Vqgan,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Vqgan => "vqgan",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// The file's name inside the model's folder.
    pub name: String,
    /// The exact size in bytes, where known.
    pub size: Option<u64>,
    /// The sha256 as lowercase hex, where known.
    pub sha256: Option<String>,
    /// An approximate size, for display; a download more than twice off it is refused
    /// (see `store::approx_size_problem`).
    pub approx_size: Option<u64>,
    /// Download addresses, tried in order.
    #[serde(default)]
    pub urls: Vec<String>,
}

impl CatalogFile {
    /// The exact size if known, else the approximate one, for display.
    pub fn display_size(&self) -> Option<(u64, bool)> {
        self.size.map(|s| (s, true)).or(self.approx_size.map(|s| (s, false)))
    }
}

/// One model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub kind: ModelKind,
    pub description: String,
    pub licence: String,
    pub homepage: Option<String>,
    /// Ships with the source; never downloaded.
    #[serde(default)]
    pub bundled: bool,
    /// The folder under a models root, `/`-separated, when not `name`.
    dir: Option<String>,
    pub files: Vec<CatalogFile>,
}

impl ModelEntry {
    /// The model's folder under a models root, as path components.
    pub fn dir_components(&self) -> Vec<&str> {
        match &self.dir {
            Some(d) => d.split('/').collect(),
            None => vec![self.name.as_str()],
        }
    }

    /// The model's folder relative to a models root.
    pub fn rel_dir(&self) -> std::path::PathBuf {
        self.dir_components().iter().collect()
    }

    pub fn file(&self, name: &str) -> Option<&CatalogFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The total size for display: (bytes, exact?) from the files whose size is known,
    /// exact only if every file's is; `None` if no file's size is known.
    pub fn display_size(&self) -> Option<(u64, bool)> {
        let mut total = None::<u64>;
        let mut exact = true;
        for f in &self.files {
            match f.display_size() {
                Some((s, e)) => {
                    total = Some(total.unwrap_or(0).saturating_add(s));
                    exact &= e;
                }
                None => exact = false,
            }
        }
        total.map(|t| (t, exact))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogToml {
    #[serde(default)]
    model: Vec<ModelEntry>,
}

/// The parsed, checked catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    models: Vec<ModelEntry>,
}

impl Catalog {
    /// The catalog compiled into the binary.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(BUILTIN_CATALOG, "built-in catalog")
    }

    /// Parses and checks a catalog; `origin` names it in errors (a path, "built-in catalog").
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let err = |msg: String| CatalogError::Catalog { origin: origin.to_owned(), msg };
        let parsed: CatalogToml = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let msg = e.message().lines().next().unwrap_or("invalid TOML").trim().to_owned();
            err(match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            })
        })?;
        let catalog = Self { models: parsed.model };
        catalog.check().map_err(err)?;
        Ok(catalog)
    }

    fn check(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("no models".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut dirs = std::collections::HashSet::new();
        for m in &self.models {
            if !is_model_name(&m.name) {
                return Err(format!("model name '{}' must be lowercase letters, digits and '-'", m.name));
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("model '{}' is listed twice", m.name));
            }
            if let Some(d) = &m.dir {
                if !d.split('/').all(is_plain_name) {
                    return Err(format!("model '{}': dir '{d}' must be a relative folder without '..'", m.name));
                }
            }
            if !dirs.insert(m.rel_dir()) {
                return Err(format!("model '{}' shares its folder with another model", m.name));
            }
            if m.files.is_empty() {
                return Err(format!("model '{}' has no files", m.name));
            }
            let mut file_names = std::collections::HashSet::new();
            for f in &m.files {
                let what = format!("model '{}' file '{}'", m.name, f.name);
                if !is_plain_name(&f.name) {
                    return Err(format!("{what}: a file name must be a plain name, not a path"));
                }
                if !file_names.insert(f.name.as_str()) {
                    return Err(format!("{what} is listed twice"));
                }
                if let Some(h) = &f.sha256 {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                        return Err(format!("{what}: sha256 must be 64 lowercase hex digits"));
                    }
                }
                if f.size == Some(0) {
                    return Err(format!("{what}: size must be positive"));
                }
                if !m.bundled && f.urls.is_empty() {
                    return Err(format!("{what} has no download URL"));
                }
                if let Some(u) = f.urls.iter().find(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
                    return Err(format!("{what}: URL '{u}' must start with http:// or https://"));
                }
            }
            if m.kind == ModelKind::Vqgan && (m.config_file().is_none() || m.checkpoint_file().is_none()) {
                return Err(format!("VQGAN model '{}' needs a .yaml and a checkpoint file", m.name));
            }
        }
        Ok(())
    }

    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The model called `name`, or an error listing the known names.
    pub fn find(&self, name: &str) -> Result<&ModelEntry, CatalogError> {
        self.get(name).ok_or_else(|| CatalogError::UnknownModel { name: name.to_owned(), known: self.names() })
    }

    /// The known names, comma-separated.
    pub fn names(&self) -> String {
        self.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl ModelEntry {
    /// A VQGAN's YAML.
    pub fn config_file(&self) -> Option<&CatalogFile> {
        self.files.iter().find(|f| f.name.ends_with(".yaml") || f.name.ends_with(".yml"))
    }

    /// A VQGAN's checkpoint (`.ckpt` or `.safetensors`).
    pub fn checkpoint_file(&self) -> Option<&CatalogFile> {
        self.files.iter().find(|f| f.name.ends_with(".ckpt") || f.name.ends_with(".safetensors"))
    }
}

fn is_model_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-')
}

/// A file or folder name that stays inside its folder on every platform.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && !s.contains(['/', '\\', ':', '\0'])
        && s.trim() == s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalog, String> {
        Catalog::parse(text, "test.toml").map_err(|e| e.to_string())
    }

    const ONE: &str = r#"
[[model]]
name = "m"
kind = "vqgan"
description = "d"
licence = "MIT"
[[model.files]]
name = "model.yaml"
urls = ["http://127.0.0.1/a"]
[[model.files]]
name = "last.ckpt"
size = 10
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
urls = ["http://127.0.0.1/b"]
"#;

    #[test]
    fn the_builtin_catalog_parses_and_lists_the_known_models() {
        let c = Catalog::builtin().unwrap_or_else(|e| panic!("{e}"));
        for name in [
            "clip-vit-b-32",
            "clip-vit-b-16",
            "clip-vit-l-14",
            "vqgan-imagenet-f16-1024",
            "vqgan-imagenet-f16-16384",
            "vqgan-openimages-f8-8192",
            "vqgan-wikiart-f16-1024",
            "vqgan-wikiart-f16-16384",
            "vqgan-coco",
            "vqgan-faceshq",
            "vqgan-sflckr",
            "shapes-clip",
            "shapes-vqgan",
        ] {
            assert!(c.get(name).is_some(), "{name} missing from the catalog");
        }
        assert_eq!(c.models().len(), 13);
    }

    #[test]
    fn every_downloadable_entry_has_urls_and_every_clip_its_three_files() {
        let c = Catalog::builtin().unwrap_or_else(|e| panic!("{e}"));
        for m in c.models() {
            if !m.bundled {
                assert!(m.files.iter().all(|f| !f.urls.is_empty()), "{} has a file without URL", m.name);
                assert!(m.files.iter().all(|f| f.urls.iter().all(|u| u.starts_with("http"))), "{}", m.name);
            } else {
                assert!(m.files.iter().all(|f| f.urls.is_empty()), "bundled {} has URLs", m.name);
            }
            match m.kind {
                ModelKind::Clip => {
                    assert!(m.file("config.json").is_some() && m.file("tokenizer.json").is_some(), "{}", m.name);
                    assert!(m.file("model.safetensors").is_some() || m.file("pytorch_model.bin").is_some());
                }
                ModelKind::Vqgan => assert!(m.config_file().is_some() && m.checkpoint_file().is_some()),
            }
        }
        let names: std::collections::HashSet<_> = c.models().iter().map(|m| &m.name).collect();
        assert_eq!(names.len(), c.models().len(), "names are unique");
    }

    #[test]
    fn bundled_models_live_under_shapes_world() {
        let c = Catalog::builtin().unwrap_or_else(|e| panic!("{e}"));
        let clip = c.find("shapes-clip").unwrap_or_else(|e| panic!("{e}"));
        assert!(clip.bundled);
        assert_eq!(clip.rel_dir(), std::path::Path::new("shapes-world").join("clip"));
        let v = c.find("vqgan-coco").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.rel_dir(), std::path::Path::new("vqgan-coco"));
    }

    #[test]
    fn a_small_catalog_parses_with_its_fields() {
        let c = parse(ONE).unwrap_or_else(|e| panic!("{e}"));
        let m = c.find("m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.kind, ModelKind::Vqgan);
        assert_eq!(m.checkpoint_file().map(|f| f.size), Some(Some(10)));
        assert_eq!(m.config_file().map(|f| f.urls.clone()), Some(vec!["http://127.0.0.1/a".to_owned()]));
        // The YAML's size is unknown: the total is a lower bound, not exact.
        assert_eq!(m.display_size(), Some((10, false)));
    }

    #[test]
    fn malformed_toml_is_one_line_naming_the_line() {
        let e = parse("[[model]]\nname = \"x\"\nkind = \n").unwrap_err();
        assert!(e.starts_with("test.toml: line 3:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse(&ONE.replace("kind = \"vqgan\"\n", "")).unwrap_err();
        assert!(e.contains("missing field `kind`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse(&ONE.replace("\"vqgan\"", "\"gan\"")).unwrap_err();
        assert!(e.contains("line 4") && e.contains("gan"), "{e}");
    }

    #[test]
    fn broken_rules_are_named() {
        let cases = [
            (ONE.replace("name = \"last.ckpt\"", "name = \"../last.ckpt\""), "plain name"),
            (ONE.replace("urls = [\"http://127.0.0.1/b\"]", "urls = []"), "has no download URL"),
            (ONE.replace("http://127.0.0.1/b", "ftp://x/b"), "must start with http"),
            (
                ONE.replace("0000000000000000000000000000000000000000000000000000000000000000", "abc"),
                "64 lowercase hex",
            ),
            (format!("{ONE}{ONE}"), "listed twice"),
            (ONE.replace("name = \"m\"", "name = \"M m\""), "lowercase letters"),
            (ONE.replace("name = \"model.yaml\"", "name = \"notes.txt\""), "needs a .yaml"),
            (ONE.replace("size = 10", "size = 0"), "size must be positive"),
            (ONE.replace("licence = \"MIT\"", "licence = \"MIT\"\nwhat = 1"), "unknown field `what`"),
            (String::new(), "no models"),
        ];
        for (text, needle) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(needle), "expected {needle:?} in {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let c = parse(ONE).unwrap_or_else(|e| panic!("{e}"));
        let e = c.find("nope").unwrap_err().to_string();
        assert_eq!(e, "unknown model 'nope' (known: m)");
    }
}
