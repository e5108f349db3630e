//! `PngMeta`: what clipcanvas keeps in every PNG it writes (an iTXt chunk, see
//! `export::write_png`) — the settings that make the image again, the iteration it shows,
//! and which model files made it (names and SHA-256). One type, written and read by the
//! command line and the studio alike. A settings file is a bare [`RunSettings`]; both
//! forms are read by [`settings_from_text`].

use serde::{Deserialize, Serialize};

use super::RunSettings;

/// A model file that made an image: its name (a file or folder name) and the SHA-256 of
/// its weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub name: String,
    pub sha256: String,
}

/// The model files of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<FileId>,
    /// The built-in world's folder name, when its models ran because none were given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<String>,
    /// More CLIPs, in the settings' order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_clips: Vec<FileId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onestep: Option<FileId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vqgan: Option<FileId>,
}

/// The metadata of a clipcanvas PNG. Fields are in name order, as earlier versions
/// wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PngMeta {
    /// The version of clipcanvas that wrote it.
    pub clipcanvas: String,
    /// The animation frame it is (`clipcanvas animate`), from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<usize>,
    /// The iteration the image shows (0: the start, or a one-step draft).
    pub iteration: usize,
    /// Absent in PNGs written by studios before 0.1.0's one-step drafts.
    #[serde(default)]
    pub models: ModelFiles,
    pub seed: u64,
    pub settings: RunSettings,
}

impl PngMeta {
    /// The metadata of an image made by this build.
    pub fn new(settings: &RunSettings, iteration: usize, models: ModelFiles) -> Self {
        Self {
            clipcanvas: env!("CARGO_PKG_VERSION").to_owned(),
            frame: None,
            iteration,
            models,
            seed: settings.seed,
            settings: settings.clone(),
        }
    }

    /// The metadata as compact JSON. An error (a one-line message) rather than an empty
    /// string, which would cost a PNG its settings without a word.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| format!("cannot write the clipcanvas metadata ({e})"))
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("unreadable clipcanvas metadata ({e})"))
    }
}

/// Settings from the text of a settings file (bare [`RunSettings`]) or of a PNG's
/// metadata ([`PngMeta`], or any envelope with a `settings` field).
pub fn settings_from_text(text: &str) -> Result<RunSettings, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("unreadable settings ({e})"))?;
    match value.get("settings") {
        // The envelope (its other fields are not needed to run again).
        Some(settings) => serde_json::from_value(settings.clone()).map_err(|e| format!("invalid settings ({e})")),
        None => RunSettings::from_json(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_both_forms() {
        let settings = RunSettings { prompts: vec!["a red circle:1".into()], seed: 9, ..RunSettings::default() };
        let models = ModelFiles {
            clip: Some(FileId { name: "clip".into(), sha256: "ab".repeat(32) }),
            demo: Some("shapes-world".into()),
            ..ModelFiles::default()
        };
        let meta = PngMeta::new(&settings, 7, models);
        let text = meta.to_json().unwrap();
        assert_eq!(PngMeta::from_json(&text), Ok(meta));
        // Fields in name order; a model that did not run is left out.
        assert!(text.starts_with("{\"clipcanvas\":") && !text.contains("\"onestep\":"), "{text}");
        assert_eq!(settings_from_text(&text), Ok(settings.clone()));
        assert_eq!(settings_from_text(&settings.to_json().unwrap()), Ok(settings.clone()));
        // Studios before this type wrote no models.
        let old = format!(
            "{{\"clipcanvas\":\"0.1.0\",\"iteration\":3,\"seed\":9,\"settings\":{}}}",
            serde_json::to_string(&settings).unwrap()
        );
        assert_eq!(PngMeta::from_json(&old).map(|m| m.models), Ok(ModelFiles::default()));
        assert!(settings_from_text("{\"colour\": 3}").unwrap_err().contains("colour"));
        assert!(settings_from_text("not json").unwrap_err().contains("unreadable settings"));
    }
}
