//! The models layer's error types: [`ModelError`] for reading and running a model,
//! (The model manager's errors are `catalog::CatalogError`.)
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
    /// A file refused or unreadable before its format was looked at (not a regular
    /// file, too large, missing).
    #[error(transparent)]
    File(#[from] crate::files::FileError),
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

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
