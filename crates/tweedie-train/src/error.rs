//! Typed errors of tweedie-train: every message names the file, key or value at fault.

use std::path::PathBuf;

/// Errors of tweedie-train.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file exists but its content is not what its format requires.
    #[error("{path}: {reason}")]
    BadData { path: PathBuf, reason: String },
    /// A data set's content is inconsistent (shapes, sizes, labels).
    #[error("data: {0}")]
    Data(String),
    /// A configuration value is out of range or unknown.
    #[error(transparent)]
    InvalidValue(#[from] tweedie_core::InvalidValue),
    /// A configuration could not be parsed.
    #[error("config: {0}")]
    Config(String),
    /// The loss became NaN or infinite.
    #[error("loss is {value} at step {step}: stopping; the last good checkpoint (step {last_good}) is kept")]
    NonFinite {
        step: u64,
        value: f64,
        last_good: u64,
    },
    /// A checkpoint or training state could not be used.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// An error from the math core.
    #[error(transparent)]
    Core(#[from] tweedie_core::CoreError),
    /// An error from libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// An error from the networks (tweedie-nets).
    #[error("network: {0}")]
    Nets(#[from] tweedie_nets::NetsError),
    /// The run was interrupted (Ctrl-C) after saving a checkpoint.
    #[error("interrupted at step {step}; checkpoint saved, resume with --resume {run_dir}")]
    Interrupted { step: u64, run_dir: PathBuf },
    /// No font for the text of plots (none found, or the file is not a font).
    #[error("plot font: {0}")]
    Font(String),
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

/// Result alias of tweedie-train.
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// Shorthand for [`TrainError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
    /// Shorthand for [`TrainError::BadData`].
    pub fn bad(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TrainError::BadData {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
