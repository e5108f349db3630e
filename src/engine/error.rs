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
    /// Its first line: candle appends a backtrace when `RUST_BACKTRACE` is set.
    #[error("computation failed: {}", first_line(.0))]
    Candle(candle_core::Error),
}

fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

impl From<candle_core::Error> for EngineError {
    /// A device that ran out of memory is said so, with what to change; anything else
    /// is a failed computation.
    fn from(e: candle_core::Error) -> Self {
        let text = e.to_string();
        if text.contains("CUDA_ERROR_OUT_OF_MEMORY") || text.contains("out of memory") {
            return Self::Memory(
                "the GPU ran out of memory: try a smaller size, fewer cutouts or --precision f16".into(),
            );
        }
        Self::Candle(e)
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_out_of_memory_says_what_to_change_and_other_failures_are_one_line() {
        let oom = candle_core::Error::Msg("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into());
        let e = EngineError::from(oom);
        assert!(matches!(e, EngineError::Memory(_)), "{e:?}");
        assert!(e.to_string().contains("--precision f16"), "{e}");
        let other = candle_core::Error::Msg("shape mismatch\n   0: backtrace frame\n   1: another".into());
        assert_eq!(EngineError::from(other).to_string(), "computation failed: shape mismatch");
    }
}
