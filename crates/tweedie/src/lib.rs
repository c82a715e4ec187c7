//! tweedie: diffusion and flow generative models in Rust.
//!
//! This umbrella crate re-exports the workspace crates under short names:
//! [`core`] (math, no libtorch), [`samplers`], [`nets`] (libtorch networks) and
//! [`train`]. The `tweedie` binary in this crate is the command-line tool.
//!
//! Sampling from any closure D(x̃; σ̃) is one call; here data ~ N(0, σ_d²I) in 2-D, whose exact
//! denoiser is D(x̃; σ̃) = σ_d²/(σ_d² + σ̃²)·x̃ (Tweedie's formula for a Gaussian):
//!
//! ```
//! use ndarray::Array2;
//! use tweedie::samplers::{grids, plain_fn, sample, Init, SamplerKind};
//!
//! let sd2 = 0.25; // σ_d = 0.5
//! let model = plain_fn(move |x: &Array2<f64>, s: f64| x * (sd2 / (sd2 + s * s)));
//! let sigmas = grids::karras(32, 0.002, 80.0, 7.0)?;
//! let out = sample(&model, SamplerKind::Heun, &sigmas, Init::Noise(Array2::zeros((2000, 2))), 0)?;
//! assert_eq!(out.nfe, 63); // Heun: 2N − 1
//! // 4000 draws of N(0, 0.25): the sample variance has standard error 0.25·√(2/4000) ≈ 0.0056.
//! let var = out.samples.mapv(|v| v * v).mean().unwrap_or(0.0);
//! assert!((var - sd2).abs() < 0.03, "variance {var}");
//! # Ok::<(), tweedie::samplers::SamplerError>(())
//! ```
//!
//! Networks, checkpoints and training from Rust: `examples/train_from_code.rs` and
//! `examples/sample_checkpoint.rs` in this crate.

pub use tweedie_core as core;
pub use tweedie_nets as nets;
pub use tweedie_samplers as samplers;
pub use tweedie_train as train;

/// libtorch as linked by this build (re-exported so users need not pin tch themselves).
pub use tch;

/// The libtorch version this binary was built against, read from the installation by
/// build.rs (`version.py` or `build-version`); `None` if it could not be determined.
pub const LIBTORCH_VERSION: Option<&str> = option_env!("TWEEDIE_LIBTORCH_VERSION");

/// The libtorch library folder this binary was linked against (also its rpath).
pub const LIBTORCH_LIB: Option<&str> = option_env!("TWEEDIE_LIBTORCH_LIB");

/// Whether the linked libtorch is a CUDA build (libtorch_cuda linked): `Some("1")` or `Some("0")`.
pub const LIBTORCH_CUDA: Option<&str> = option_env!("TWEEDIE_LIBTORCH_CUDA");
