//! Math core of tweedie: every formula lives here once, in f64.
//!
//! Conventions (see docs/math.md): x_t = α(t)·x₀ + σ(t)·ε; the EDM noise level is
//! σ̃ = σ/α and the EDM input is x̃ = x_t/α; networks are denoisers D(x̃; σ̃) ≈ E[x₀ | x_t].
//!
//! No libtorch: the optional `tch` feature only adds [`space::TchTensor`].
//!
//! ```
//! use tweedie_core::process::{Edm, VpLinear};
//! use tweedie_core::{convert, Param, Process, Timer, TimerKind};
//!
//! // The 18-step EDM grid NVlabs/edm publishes: 80, 57.586, 40.786, …, 0.00753, 0.002, then 0.
//! let edm = Edm { sigma_min: 0.002, sigma_max: 80.0 };
//! let grid = TimerKind::edm().grid(&edm, 18)?;
//! assert!((grid.sigma_tilde[1] - 57.586).abs() < 5e-4 && grid.sigma_tilde[18] == 0.0);
//!
//! // Tweedie's formula and its relatives: for data x₀ ~ N(0, 1) under VP, the exact
//! // x₀-prediction at x_t is α·x_t/(α² + σ²); as an ε-prediction it is (x_t − α·x̂₀)/σ.
//! let vp = VpLinear { beta_min: 0.1, beta_d: 19.9, eps_t: 1e-3 };
//! let (t, x_t) = (0.4, 0.7);
//! let (a, s) = (vp.alpha(t), vp.sigma(t));
//! let x0_hat = a * x_t / (a * a + s * s);
//! let eps_hat = convert(Param::X0, Param::Eps, &vp, t, &x_t, &x0_hat);
//! assert!((eps_hat - (x_t - a * x0_hat) / s).abs() < 1e-14);
//! # Ok::<(), tweedie_core::CoreError>(())
//! ```

pub mod budget;
pub mod config;
pub mod defaults;
pub mod empirical;
pub mod error;
pub mod kernels;
pub mod likelihood;
pub mod linalg;
pub mod mixture;
pub mod multistep;
pub mod param;
pub mod precond;
pub mod process;
pub mod rng;
pub mod space;
pub mod timer;
pub mod weighting;

pub use config::{CoreConfig, Validate};
pub use empirical::EmpiricalGaussian;
pub use error::{CoreError, Invalid, InvalidValue, Result};
pub use mixture::{preset, GaussianMixture, MixtureSpec};
pub use param::{convert, convert_coeffs, Affine, Param};
pub use precond::{Precond, PrecondCoeffs};
pub use process::{iddpm_u_grid, BetaSchedule, DdpmStep, Process, ProcessKind};
pub use space::LinearSpace;
pub use timer::{DdimSpacing, TimeGrid, Timer, TimerKind};
pub use weighting::{Draw, LossWeight, NoiseDensity, NoiseLevel};
