//! tweedie-samplers: a sampler is a timer grid + an integrator + a model.
//!
//! Models are denoisers in EDM form D(x̃; σ̃) ≈ E[x₀ | x̃], x̃ = x_t/α, σ̃ = σ/α (Karras et al.
//! 2022); integrators evolve x̃ along the grid's σ̃ (process coordinates where the process
//! matters: DDIM, DDPM, Euler–Maruyama). Noise is drawn per sample from
//! `tweedie_core::rng`, so a sample depends on its seed and index only. Conditional sampling
//! wraps the model (DPS, ΠGDM, TMP), replaces coordinates (inpainting) or samples the exact
//! posterior of analytic models. Everything is proven on Gaussian mixtures (see tests/).
//!
//! # One call
//!
//! [`sample`] is the front door, shaped like k-diffusion's `sample_heun(model, x, sigmas)`:
//! any closure D(x̃; σ̃) is a model ([`plain_fn`], [`from_fn`]), [`grids`] builds the common σ̃
//! grids, and a [`SamplerKind`] names the integrator.
//!
//! ```
//! use ndarray::Array2;
//! use tweedie_samplers::{grids, plain_fn, sample, Init, SamplerKind};
//!
//! // Data ~ N(0, I): the exact denoiser is D(x̃; σ̃) = x̃/(1 + σ̃²).
//! let model = plain_fn(|x: &Array2<f64>, s: f64| x / (1.0 + s * s));
//! let sigmas = grids::karras(64, 0.002, 80.0, 7.0)?;
//! let init = Init::Noise(Array2::<f64>::zeros((2000, 2)));
//! let out = sample(&model, SamplerKind::Heun, &sigmas, init, 0)?;
//! assert_eq!(out.nfe, 127); // Heun: 2N − 1
//! // 4000 draws of N(0, 1): the sample variance has standard error √(2/4000) ≈ 0.022
//! // (Heun's own bias at 64 steps is under 1 %).
//! let var = out.samples.mapv(|v| v * v).mean().unwrap_or(0.0);
//! assert!((var - 1.0).abs() < 0.1, "variance {var}");
//! # Ok::<(), tweedie_samplers::SamplerError>(())
//! ```
//!
//! Process-aware samplers (DDIM, ancestral DDPM, Euler–Maruyama) take the model's process
//! through a builder, `SamplerKind::Ddim { eta: 0.0 }.with_process(&vp)`, and churn likewise
//! (`with_churn`). [`Sampler`] is the full interface: step hooks, recording, callbacks,
//! chunked runs; [`CondSampler`] samples p(x₀ | y).

// Negated float comparisons (`!(x > 0.0)`) are deliberate: they also reject NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod api;
pub mod cond;
pub mod error;
pub mod grids;
mod integrators;
pub mod kind;
pub mod likelihood;
mod mixture;
pub mod model;
pub mod ops;
/// The tensor forms of the operators ([`ops::TensorOp`]), at their former path.
#[cfg(feature = "tch")]
pub mod ops_tch {
    pub use crate::ops::{DeviceCopy, TensorOp};
}
pub mod problems;
pub mod rows;
pub mod sampler;
pub mod state;
pub mod step;
#[cfg(feature = "tch")]
pub mod tch_state;
pub mod variational_bound;

pub use api::{sample, Method};
pub use cond::{
    cg_rows, ClassifierGradient, ClassifierGuided, CondSampler, Daps, Diffpir, DpsGsg, Enkg, Fps,
    FpsNoise, GradientGuidance, Guidance, GuidedModel, Pnpdm, PosteriorSampler, Replacement,
    Resampling, GUIDANCE_NAMES,
};
pub use error::{ModelError, Result, SamplerError};
pub use kind::{Churn, SamplerKind, SamplerParams, SamplerSpec, SAMPLER_NAMES};
pub use model::{
    from_fn, plain_fn, Capabilities, Cfg, ClassCapabilities, ClassLearnedVariance, ClassModel,
    Counted, ExactMarginal, ExactPosterior, FnModel, LearnedVariance, Model, ModelExt, ParamModel,
    PlainFnModel, SigmaRounding, TimeModel, Vjp,
};
pub use ops::{Blur, Boundary, Circulant, Downsample, ForwardModel, Mask, MatrixOp};
pub use rows::Rows;
pub use sampler::{Init, SampleOutput, Sampler, StepHook, StepInfo};
pub use state::State;
pub use tweedie_core::mixture::GaussianMixture;
