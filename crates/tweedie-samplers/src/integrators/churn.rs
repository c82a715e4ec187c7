//! Churn (Karras et al. 2022, Alg. 2, lines 4–6): before a step from σ̃, raise the noise level to
//! σ̂ = σ̃(1 + γ) by adding fresh noise, then take the step from σ̂. Any deterministic one-step
//! integrator becomes a stochastic sampler of the same marginals this way
//! ([`crate::SamplerKind::accepts_churn`] lists which).

use crate::error::Result;
use crate::integrators::Run;
use crate::model::ModelExt;
use crate::state::State;
use crate::step::{stream, CHURN_DRAW};

impl<S: State> Run<'_, '_, S> {
    /// (x̂, σ̂) with σ̂ = round(σ̃(1 + γ)), γ = min(S_churn/N, √2 − 1) for σ̃ ∈ [S_min, S_max]
    /// (else 0), x̂ = x̃ + √(σ̂² − σ̃²)·S_noise·ε; (x̃, σ̃) unchanged when the run has no churn.
    /// σ̂ is rounded to the model's noise levels as Karras et al. and NVlabs/edm do.
    pub(super) fn churn(&self, x: S, i: usize, s: f64) -> Result<(S, f64)> {
        let Some(c) = self.churn else {
            return Ok((x, s));
        };
        let gamma = if s >= c.s_min && s <= c.s_max {
            (c.s_churn / self.n() as f64).min(2f64.sqrt() - 1.0)
        } else {
            0.0
        };
        if !(gamma > 0.0) {
            return Ok((x, s));
        }
        let s_hat = self.m.round_sigma(s * (1.0 + gamma));
        let mut x = x;
        x.add_randn(
            (s_hat * s_hat - s * s).sqrt() * c.s_noise,
            self.seed,
            self.first_index,
            stream(i, CHURN_DRAW),
        )?;
        Ok((x, s_hat))
    }
}
