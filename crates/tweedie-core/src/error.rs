//! Typed errors of the math core, and the error vocabulary every tweedie crate shares.

use std::fmt::Display;

/// A configuration value out of its valid range, naming key, value and reason: the one
/// "invalid value" error of every tweedie crate (each crate's error type wraps it unchanged).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("invalid value for `{key}`: {value} ({reason})")]
pub struct InvalidValue {
    /// The key, with its section where known (`timer.sigma_max`).
    pub key: String,
    /// The value as written.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

impl InvalidValue {
    /// `key` = `value` refused for `reason`.
    pub fn new(key: &str, value: impl Display, reason: impl Into<String>) -> Self {
        InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// The same error with its key prefixed by `section` (`sigma_max` → `timer.sigma_max`).
    pub fn in_section(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

/// `E::invalid(key, value, reason)` for every error type that wraps [`InvalidValue`]: the one
/// shorthand, so that no crate declares its own.
pub trait Invalid: From<InvalidValue> {
    /// An [`InvalidValue`] as this error type.
    fn invalid(key: &str, value: impl Display, reason: impl Into<String>) -> Self {
        InvalidValue::new(key, value, reason).into()
    }
}

impl<E: From<InvalidValue>> Invalid for E {}

/// Errors of tweedie-core; messages name the offending key and value.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CoreError {
    /// A configuration value is out of its valid range.
    #[error(transparent)]
    InvalidValue(#[from] InvalidValue),
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

/// Checks a noise-level range: `sigma_min` and `sigma_max` finite and > 0, `sigma_min` <
/// `sigma_max` (processes and timers name them alike).
pub(crate) fn check_sigma_range(sigma_min: f64, sigma_max: f64) -> Result<()> {
    check_pos("sigma_min", sigma_min)?;
    check_pos("sigma_max", sigma_max)?;
    check_lt("sigma_min", sigma_min, "sigma_max", sigma_max)
}

/// Checks `lo < hi` and names the `hi` key in the error.
pub(crate) fn check_lt(lo_key: &str, lo: f64, hi_key: &str, hi: f64) -> Result<()> {
    if lo < hi {
        Ok(())
    } else {
        Err(CoreError::invalid(
            hi_key,
            hi,
            format!("must be > `{lo_key}` = {lo}"),
        ))
    }
}
