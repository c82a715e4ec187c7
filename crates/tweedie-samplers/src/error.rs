//! Typed errors of the samplers.

use std::sync::Arc;

use tweedie_core::{CoreError, InvalidValue};

/// Errors of tweedie-samplers; messages name the offending key and value.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SamplerError {
    /// A sampler, guidance or operator parameter is out of its valid range.
    #[error(transparent)]
    InvalidValue(#[from] InvalidValue),
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
    /// Conjugate gradients stopped at its iteration limit before every row met its tolerance.
    #[error(
        "conjugate gradients did not converge: relative residual {residual:.2e} after {iterations} iterations (tolerance {tol:.0e})"
    )]
    NotConverged {
        iterations: usize,
        residual: f64,
        tol: f64,
    },
    /// An error from the math core.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// An error of the model itself (a network, a checkpoint), with its own message and type.
    #[error(transparent)]
    Model(ModelError),
}

/// A model's own error carried through a sampler unchanged: same message, and the original
/// type through [`ModelError::downcast_ref`] (a network's error stays a network error).
#[derive(Debug, Clone)]
pub struct ModelError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl ModelError {
    /// Wraps a model's error.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        ModelError(Arc::new(e))
    }

    /// The original error, when it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Two model errors are equal when they say the same (the wrapped types need not be `PartialEq`).
impl PartialEq for ModelError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SamplerError>;

/// A libtorch error as the samplers report it.
#[cfg(feature = "tch")]
pub(crate) fn tch_err(e: tch::TchError) -> SamplerError {
    SamplerError::Numerical(format!("libtorch: {e}"))
}
