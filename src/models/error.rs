//! The models layer's error types: [`ModelError`] for reading and running a model,
//! [`ManagerError`] for the model manager (the catalog, finding installed models,
//! downloads and verification).

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or running a model.
///
/// Messages are one line and name the file and, where it applies, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("{}: tensor '{name}' is missing{hint}", path.display())]
    MissingTensor { path: PathBuf, name: String, hint: String },
    #[error("{}: tensor '{name}' has shape {found:?} but the model's config needs {expected:?}", path.display())]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error(transparent)]
    Torch(#[from] super::weights::torch::TorchError),
    #[error("{}: tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format { path: path.into(), msg: msg.into() }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Config { path: path.into(), msg: msg.into() }
    }
}

/// Everything that can go wrong in the model manager: a bad catalog, an unknown or
/// uninstalled model, a failed download.
///
/// Messages are one line. Where the user can fix things by hand (a model that is not
/// installed, a download that failed), [`ManagerError::help`] gives the exact files, their
/// URLs and the folder to put them in, for the caller to show below the message.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The catalog cannot be read or breaks a rule; `origin` names the catalog.
    #[error("{origin}: {msg}")]
    Catalog { origin: String, msg: String },
    #[error("unknown model '{name}' (known: {known})")]
    UnknownModel { name: String, known: String },
    #[error("'{name}' is a {found} model, not a {expected} model")]
    WrongKind { name: String, expected: &'static str, found: &'static str },
    #[error("model '{name}' is {reason}")]
    NotInstalled { name: String, reason: String, help: String },
    /// Every URL of a file failed; `attempts` says how, URL by URL.
    #[error("cannot download {name}/{file}: {attempts}")]
    Download { name: String, file: String, attempts: String, help: String },
    #[error("{name} is bundled with the source and cannot be downloaded; see README")]
    Bundled { name: String },
    #[error("download cancelled")]
    Cancelled,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Writing the download record failed.
    #[error(transparent)]
    Write(#[from] crate::export::ExportError),
    #[error("no folder to install models into: {reasons} (choose one with --dir or CLIPCANVAS_MODELS)")]
    NoInstallFolder { reasons: String },
}

impl ManagerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// How to install by hand: the files, their URLs and the folder, several lines.
    pub fn help(&self) -> Option<&str> {
        match self {
            Self::NotInstalled { help, .. } | Self::Download { help, .. } if !help.is_empty() => Some(help),
            _ => None,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
