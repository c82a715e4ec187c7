//! tweedie-samplers: a sampler is a timer grid + an integrator + a model.
//!
//! Models are denoisers in EDM form D(x̃; σ̃) ≈ E[x₀ | x̃], x̃ = x_t/α, σ̃ = σ/α (Karras et al.
//! 2022); integrators evolve x̃ along the grid's σ̃ (process coordinates where the process
//! matters: DDIM, DDPM, Euler–Maruyama). Noise is drawn per sample from
//! `tweedie_core::rng`, so a sample depends on its seed and index only. Conditional sampling
//! wraps the model (DPS, ΠGDM, TMP), replaces coordinates (inpainting) or samples the exact
//! posterior of analytic models. Everything is proven on Gaussian mixtures (see tests/).

// Negated float comparisons (`!(x > 0.0)`) are deliberate: they also reject NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod api;
pub mod cond;
pub mod error;
mod integrators;
pub mod kind;
mod linalg;
pub mod mixture;
pub mod model;
pub mod ops;
pub mod sampler;
pub mod state;
pub mod step;
#[cfg(feature = "tch")]
pub mod tch_state;

pub use cond::{CondSampler, Guidance, GuidedModel, Replacement};
pub use error::{Result, SamplerError};
pub use kind::{Churn, SamplerKind, SamplerSpec, SAMPLER_NAMES};
pub use mixture::MixtureModel;
pub use model::{Cfg, ClassModel, Counted, Model, ParamModel, TimeModel};
pub use ops::{Blur, Downsample, ForwardModel, Mask, MatrixOp};
pub use sampler::{Init, SampleOutput, Sampler, StepHook, StepInfo};
pub use state::State;
