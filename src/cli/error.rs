//! The command line's one error type: how a failed command exits (2 for bad input, 1
//! for a failure at run time, 130 when stopped by Ctrl-C, SIGTERM or SIGHUP after saving).

/// How a failed command should exit: 2 for bad input, 1 for failures at run time.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Input(anyhow::Error),
    #[error("{0}")]
    Runtime(anyhow::Error),
    /// Stopped by Ctrl-C, SIGTERM or SIGHUP after saving; the message was already printed.
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    /// The same error with `note` added to its one line (what was saved, or was not).
    #[must_use]
    pub fn with_note(self, note: &str) -> Self {
        match self {
            Self::Input(e) => Self::Input(anyhow::anyhow!("{e}; {note}")),
            Self::Runtime(e) => Self::Runtime(anyhow::anyhow!("{e}; {note}")),
            Self::Interrupted => Self::Interrupted,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Input(_) => 2,
            Self::Runtime(_) => 1,
            Self::Interrupted => 130,
        }
    }
}

impl From<crate::engine::EngineError> for CliError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::Candle(_) | E::NanLoss { .. } | E::NotFinite(_) | E::Output(_) => Self::Runtime(e.into()),
            E::Model(crate::models::ModelError::Candle(_)) => Self::Runtime(e.into()),
            _ => Self::Input(e.into()),
        }
    }
}
