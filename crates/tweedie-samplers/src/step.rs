//! What every step shares: noise keys (which stream a step's draws come from), per-step
//! corrections ([`StepHook`]) and the callback's view of a step.
//!
//! Noise is keyed, not drawn from a running generator: step i, draw j of sample k uses stream
//! `STEP_BASE + 8i + j` of generator (seed, first_index + k) (`tweedie_core::rng`), so a sample
//! depends on its seed and index only, whatever the batch, thread count, device or integrator.

use tweedie_core::rng::streams;

use crate::error::Result;
use crate::state::State;

/// Draws per step reserved in the noise stream: step i, draw j uses stream STEP_BASE + 8i + j.
pub const DRAWS_PER_STEP: u64 = 8;
/// The draw index reserved for [`StepHook`]s.
pub const HOOK_DRAW: u64 = 7;
/// The draw index of churn's noise (EDM's S_churn): the step's own draws start at 0, and no
/// integrator that accepts churn draws noise of its own.
pub const CHURN_DRAW: u64 = 0;

/// The noise stream of draw `draw` of step `step`.
pub fn stream(step: usize, draw: u64) -> u64 {
    streams::STEP_BASE + DRAWS_PER_STEP * step as u64 + draw
}

/// A per-step callback.
pub type Callback<'c, S> = &'c mut (dyn FnMut(&StepInfo<S>) + 'c);

/// What a per-step callback sees after step `step` (from σ̃ = `sigma` to `sigma_next`).
#[derive(Debug)]
pub struct StepInfo<'a, S> {
    pub step: usize,
    pub sigma: f64,
    pub sigma_next: f64,
    /// x̃ after the step.
    pub x: &'a S,
    /// The last denoiser output of the step, D(x̃; σ̃).
    pub denoised: &'a S,
}

/// Where a [`StepHook`] takes its noise from (row i keyed by `first_index + i`).
#[derive(Debug, Clone, Copy)]
pub struct NoiseKey {
    pub seed: u64,
    pub first_index: u64,
    /// Stream of this step's hook draw.
    pub stream: u64,
}

/// A correction applied to x̃ after every step (e.g. inpainting by replacement).
pub trait StepHook<S: State>: Send + Sync {
    /// The corrected x̃ at σ̃ = `sigma_next`.
    fn after_step(&self, step: usize, sigma_next: f64, x: S, noise: NoiseKey) -> Result<S>;
}
