//! Math core of tweedie: every formula lives here once, in f64.
//!
//! Conventions (see docs/math.md): x_t = α(t)·x₀ + σ(t)·ε; the EDM noise level is
//! σ̃ = σ/α and the EDM input is x̃ = x_t/α; networks are denoisers D(x̃; σ̃) ≈ E[x₀ | x_t].
//!
//! No libtorch: the optional `tch` feature only adds [`space::TchTensor`].

pub mod config;
pub mod error;
pub mod linalg;
pub mod mixture;
pub mod param;
pub mod precond;
pub mod process;
pub mod rng;
pub mod space;
pub mod timer;
pub mod weighting;

pub use config::{CoreConfig, Validate};
pub use error::{CoreError, Result};
pub use mixture::{preset, GaussianMixture, MixtureSpec};
pub use param::{convert, convert_coeffs, Affine, Param};
pub use precond::{Precond, PrecondCoeffs};
pub use process::{iddpm_u_grid, BetaSchedule, DdpmStep, Process, ProcessKind};
pub use space::LinearSpace;
pub use timer::{DdimSpacing, TimeGrid, Timer, TimerKind};
pub use weighting::{Draw, LossWeight, NoiseDensity, NoiseLevel};
