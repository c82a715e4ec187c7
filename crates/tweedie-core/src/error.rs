//! Typed errors of the math core.

/// Errors of tweedie-core; messages name the offending key and value.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CoreError {
    /// A configuration value is out of its valid range.
    #[error("invalid value for `{key}`: {value} ({reason})")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    /// A configuration could not be parsed.
    #[error("config error: {0}")]
    Parse(String),
    /// Shapes of inputs do not match.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A matrix that must be symmetric positive definite is not.
    #[error("matrix `{0}` is not symmetric positive definite")]
    NotPositiveDefinite(String),
    /// A file could not be read.
    #[error("cannot read `{path}`: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

/// Result with a [`CoreError`].
pub type Result<T> = std::result::Result<T, CoreError>;

impl CoreError {
    /// Shorthand for [`CoreError::InvalidValue`].
    pub fn invalid(key: &str, value: impl std::fmt::Display, reason: &str) -> Self {
        CoreError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Checks that `value` is finite and strictly positive.
pub(crate) fn check_pos(key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(CoreError::invalid(key, value, "must be finite and > 0"))
    }
}

/// Checks that `value` is finite and ≥ 0.
pub(crate) fn check_nonneg(key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(CoreError::invalid(key, value, "must be finite and >= 0"))
    }
}

/// Checks `lo < hi` and names the `hi` key in the error.
pub(crate) fn check_lt(lo_key: &str, lo: f64, hi_key: &str, hi: f64) -> Result<()> {
    if lo < hi {
        Ok(())
    } else {
        Err(CoreError::invalid(
            hi_key,
            hi,
            &format!("must be > `{lo_key}` = {lo}"),
        ))
    }
}
