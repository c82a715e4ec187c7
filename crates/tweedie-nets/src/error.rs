//! Typed errors of tweedie-nets; every message names the offending key, file or tensor.

use std::path::PathBuf;

/// Errors of tweedie-nets.
#[derive(Debug, thiserror::Error)]
pub enum NetsError {
    /// A configuration value is out of its valid range.
    #[error(transparent)]
    InvalidValue(#[from] tweedie_core::InvalidValue),
    /// No preset has this name.
    #[error("unknown network preset `{name}` (known: {known})")]
    UnknownPreset { name: String, known: String },
    /// A device string is not `auto`, `cpu`, `cuda` or `cuda:N`, or names a missing GPU.
    #[error("invalid device `{value}`: {reason}")]
    InvalidDevice { value: String, reason: String },
    /// A checkpoint file does not exist.
    #[error("checkpoint `{}` not found", path.display())]
    CheckpointNotFound { path: PathBuf },
    /// A checkpoint exists but could not be read or written.
    #[error("cannot access checkpoint `{}`: {reason}", path.display())]
    CheckpointIo { path: PathBuf, reason: String },
    /// A checkpoint is truncated or not a valid safetensors file.
    #[error("checkpoint `{}` is corrupt or truncated: {reason}", path.display())]
    CheckpointCorrupt { path: PathBuf, reason: String },
    /// A checkpoint's metadata (config JSON) is missing or invalid.
    #[error("checkpoint `{}` has invalid metadata: {reason}", path.display())]
    CheckpointMetadata { path: PathBuf, reason: String },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("checkpoint `{}` lacks tensor `{name}`", path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// The checkpoint has a tensor the model does not know.
    #[error("checkpoint `{}` has unexpected tensor `{name}`", path.display())]
    UnexpectedTensor { path: PathBuf, name: String },
    /// A tensor's shape differs between checkpoint and model.
    #[error("tensor `{name}` in `{}` has shape {found:?}, the model expects {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    /// A tensor of a checkpoint holds NaN or ±∞.
    #[error("tensor `{name}` in `{}` has NaN or infinite values", path.display())]
    NonFiniteTensor { path: PathBuf, name: String },
    /// A tensor has a dtype the loader does not convert.
    #[error("tensor `{name}` in `{}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// An input tensor has the wrong shape for the network.
    #[error("shape error: {0}")]
    Shape(String),
    /// Preconditioning or parametrization coefficients could not be computed.
    #[error("math core: {0}")]
    Core(#[from] tweedie_core::CoreError),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of tweedie-nets.
pub type Result<T> = std::result::Result<T, NetsError>;
