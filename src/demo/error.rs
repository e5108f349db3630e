//! The shapes world's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Train(String),
    #[error("cancelled")]
    Cancelled,
}

impl DemoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

pub type Result<T, E = DemoError> = std::result::Result<T, E>;
