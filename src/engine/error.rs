//! The engine layer's one error type.

use std::path::PathBuf;

use crate::models::ModelError;

/// What can go wrong in the engine. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A file refused or unreadable before its format was looked at (not a regular file,
    /// too large, missing).
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("{}: cannot read image ({msg})", path.display())]
    Image { path: PathBuf, msg: String },
    #[error("invalid input: {0}")]
    Input(String),
    /// A run that would not fit in the memory available (see `engine::memory`).
    #[error("not enough memory: {0}")]
    Memory(String),
    #[error("device: {0}")]
    Device(String),
    #[error("the loss became NaN or infinite at iteration {iteration}; try a lower learning rate")]
    NanLoss { iteration: usize },
    /// A model computed something with no meaning: an embedding of zero length or with
    /// NaN or infinite values (damaged weights, or arithmetic that overflowed).
    #[error("{0}")]
    NotFinite(String),
    /// What the caller was handed could not be kept (an animation frame that could not be
    /// written): the caller's own one-line message.
    #[error("{0}")]
    Output(String),
    #[error("{}: {msg}", path.display())]
    Session { path: PathBuf, msg: String },
    #[error("computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
