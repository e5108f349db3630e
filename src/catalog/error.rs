//! The model catalog's one error type: a model not in the catalog or not installed (with
//! the exact files, URLs and folder to install it by hand), a failed or cancelled
//! download, a file that cannot be written.

use std::path::PathBuf;

/// Everything that can go wrong in the model manager: a bad catalog, an unknown or
/// uninstalled model, a failed download.
///
/// Messages are one line. Where the user can fix things by hand (a model that is not
/// installed, a download that failed), [`CatalogError::help`] gives the exact files, their
/// URLs and the folder to put them in, for the caller to show below the message.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
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
    Write(#[from] crate::files::FileError),
    #[error("no folder to install models into: {reasons} (choose one with --dir or CLIPCANVAS_MODELS)")]
    NoInstallFolder { reasons: String },
}

impl CatalogError {
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
