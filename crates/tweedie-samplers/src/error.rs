//! Typed errors of the samplers.

use tweedie_core::CoreError;

/// Errors of tweedie-samplers; messages name the offending key and value.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SamplerError {
    /// A sampler, guidance or operator parameter is out of its valid range.
    #[error("invalid value for `{key}`: {value} ({reason})")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    /// A sampler name that is not known; lists the known names.
    #[error("unknown sampler `{name}`; known samplers: {known}")]
    UnknownSampler { name: String, known: String },
    /// Shapes of inputs do not match.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The model lacks a capability the method needs (e.g. a vector-Jacobian product).
    #[error("model does not support {0}")]
    Unsupported(String),
    /// A numerical failure (non-finite state, step size underflow, CG breakdown).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// An error from the math core.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SamplerError>;

impl SamplerError {
    /// Shorthand for [`SamplerError::InvalidValue`].
    pub fn invalid(key: &str, value: impl std::fmt::Display, reason: &str) -> Self {
        SamplerError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}
