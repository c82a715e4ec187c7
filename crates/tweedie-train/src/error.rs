//! Typed errors of tweedie-train: every message names the file, key or value at fault.

use std::path::PathBuf;

use tweedie_core::Invalid;

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
    /// The run was interrupted (Ctrl-C) after saving a checkpoint; the CLI exits with 130.
    #[error("interrupted at step {step}: checkpoint saved, no evaluation; resume with --resume {}", run_dir.display())]
    Interrupted { step: u64, run_dir: PathBuf },
    /// Ctrl-C stopped sampling or evaluation between two batches.
    #[error("stopped by Ctrl-C")]
    Stopped,
    /// Ctrl-C after training, while the final samples or the evaluation ran: the training
    /// state and the model are saved; the CLI exits with 130.
    #[error("interrupted after training: checkpoint and model saved in {}, evaluation stopped (no report); evaluate with `tweedie eval {}`", run_dir.display(), run_dir.display())]
    InterruptedAfterTraining { run_dir: PathBuf },
    /// Another live process holds the run directory's lock.
    #[error("run directory {run_dir} is in use by {}: wait for it to finish or stop it first", holder.map_or("another process".to_string(), |p| format!("process {p}")))]
    RunLocked {
        run_dir: PathBuf,
        holder: Option<u32>,
    },
    /// A fresh run was pointed at a directory it must not write into.
    #[error("cannot start a run in {run_dir}: {reason}")]
    RunDirTaken { run_dir: PathBuf, reason: String },
    /// `--resume` with a config or data that differ from the run's.
    #[error("cannot resume {run_dir}: {}", resume_mismatch_text(differences))]
    ResumeMismatch {
        run_dir: PathBuf,
        /// (key, old value, new value) of each difference not allowed.
        differences: Vec<(String, String, String)>,
    },
    /// No font for the text of plots (none found, or the file is not a font).
    #[error("plot font: {0}")]
    Font(String),
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

fn resume_mismatch_text(d: &[(String, String, String)]) -> String {
    let lines: Vec<String> = d
        .iter()
        .map(|(k, old, new)| format!("\n  {k}: {old} → {new}"))
        .collect();
    format!(
        "{} setting(s) differ from the run's:{}\nresume with the run's settings, or accept a \
         change explicitly with --allow-change KEY (repeatable) or --allow-any-change",
        d.len(),
        lines.concat()
    )
}

/// Result alias of tweedie-train.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Deserialises one config section (or part of one) from TOML; errors start with `label` and
/// name the key at fault (`[training] steps: invalid type …`).
pub(crate) fn section_value<T: serde::de::DeserializeOwned>(
    label: &str,
    value: toml::Value,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().message().to_string();
        TrainError::Config(if path == "." {
            format!("{label}: {msg}")
        } else {
            format!("{label} {path}: {msg}")
        })
    })
}

/// `v` itself when finite and > 0, else an error naming `key` and `v`.
pub(crate) fn positive(key: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(TrainError::invalid(key, v, "must be finite and > 0"))
    }
}

/// A count that must be ≥ 1, else an error naming `key`.
pub(crate) fn at_least_one(key: &str, v: u64) -> Result<()> {
    if v == 0 {
        return Err(TrainError::invalid(key, 0, "must be ≥ 1"));
    }
    Ok(())
}

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
