//! EnKG: ensemble Kalman diffusion guidance, derivative-free (Zheng et al. 2024, "Ensemble
//! Kalman diffusion guidance: a derivative-free method for inverse problems").

use serde::{Deserialize, Serialize};
use tweedie_core::{Invalid, LinearSpace};

use super::common::{self, sub_seed};
use super::CondSampler;
use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::rows::Rows;
use crate::sampler::{Init, SampleOutput, Sampler};
use crate::state::State;

/// EnKG (Zheng et al. 2024, Alg. 1) in EDM coordinates, the batch as the ensemble {x̃ʲ}: before
/// each step σ̃ → σ̃′, x̂₀ʲ = the ODE from x̃ʲ to 0 in `ode_steps` Euler steps, ŷʲ = A·x̂₀ʲ, and
/// x̃ʲ ← x̃ʲ − γ_k/‖C‖_F·Σᵢ Cʲⁱ(x̃ⁱ − x̄), Cʲⁱ = ⟨ŷʲ − y, ŷⁱ − ȳ⟩/J (the ensemble's
/// cross-covariance times the residual: a Kalman step with no gradient of A or of D), with
/// γ_k = γ·((1 − r)(N − k)/N + r); then one step of the conditional sampler's integrator.
/// Only forward evaluations A·x are used, so any operator works, even one without an adjoint.
/// Every sample depends on the whole batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enkg {
    /// γ > 0: step size of the Kalman update.
    #[serde(default = "scale")]
    pub scale: f64,
    /// r ∈ [0, 1]: the step decays linearly from γ to γ·r.
    #[serde(default)]
    pub lr_min_ratio: f64,
    /// Euler steps of the ODE to x̂₀ (≥ 1; 1 is Tweedie's D).
    #[serde(default = "ode_steps")]
    pub ode_steps: usize,
}

fn scale() -> f64 {
    0.5
}
fn ode_steps() -> usize {
    1
}

impl Default for Enkg {
    fn default() -> Self {
        Enkg {
            scale: scale(),
            lr_min_ratio: 0.0,
            ode_steps: ode_steps(),
        }
    }
}

impl Enkg {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(SamplerError::invalid(
                "scale",
                self.scale,
                "must be finite and > 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.lr_min_ratio) {
            return Err(SamplerError::invalid(
                "lr_min_ratio",
                self.lr_min_ratio,
                "must be in [0, 1]",
            ));
        }
        if self.ode_steps == 0 {
            return Err(SamplerError::invalid(
                "ode_steps",
                0,
                "need at least 1 step",
            ));
        }
        Ok(())
    }

    /// The parameters, and the sampler: it must run on a fixed grid (EnKG updates the ensemble
    /// between its steps).
    pub fn check(&self, kind: &SamplerKind) -> Result<()> {
        self.validate()?;
        if matches!(kind, SamplerKind::Adaptive { .. }) {
            return Err(SamplerError::invalid(
                "sampler",
                "adaptive",
                "EnKG updates the ensemble between the steps of a fixed grid",
            ));
        }
        Ok(())
    }

    /// Runs EnKG for `c` from `init`; `c.kind` must be a one-step integrator on a fixed grid.
    pub fn run<S: State>(&self, c: &CondSampler<S>, init: Init<S>) -> Result<SampleOutput<S>> {
        self.check(&c.kind)?;
        let begin = common::begin(c, init)?;
        let b = begin.x.nrows();
        if b < 2 {
            return Err(SamplerError::invalid(
                "n",
                b,
                "EnKG needs an ensemble of at least 2",
            ));
        }
        let y = begin.y_rows(b)?;
        let common::Begin {
            sig, like, mut x, ..
        } = begin;
        let n = sig.len() - 1;
        let mut nfe = 0;
        for k in 0..n {
            let (x0, e) = common::reverse_to_zero(
                c,
                &SamplerKind::Euler,
                &like,
                &x,
                sig[k],
                self.ode_steps,
                0,
            )?;
            nfe += e;
            let yh = x0.apply(c.op)?;
            let gamma = self.scale
                * ((1.0 - self.lr_min_ratio) * (n - k) as f64 / n as f64 + self.lr_min_ratio);
            x = x.lincomb(1.0, &kalman_step(&x, &yh, &y)?, -gamma);
            // One step of the integrator on this grid interval (multistep ones restart each step).
            let grid = tweedie_core::TimeGrid {
                t: c.grid.t[k..=k + 1].to_vec(),
                sigma_tilde: sig[k..=k + 1].to_vec(),
            };
            let out = Sampler::new(c.process, grid, c.kind.clone(), c.model)?
                .seed(sub_seed(c.seed, k))
                .first_index(c.first_index)
                .run(Init::Edm(like.with_device_rows(&x)?), None)?;
            nfe += out.nfe;
            // The sub-run returns process coordinates at t_{k+1}; back to x̃.
            let t1 = c.grid.t[k + 1];
            let alpha = if t1 == 0.0 { 1.0 } else { c.process.alpha(t1) };
            x = out.samples.device_rows().scale(1.0 / alpha);
        }
        common::finish(c, &like, &x, nfe)
    }
}

/// The normalised ensemble Kalman direction C·(X − x̄)/‖C‖_F, C = (Ŷ − y)(Ŷ − ȳ)ᵀ/J, computed
/// as (Ŷ − y)·[(Ŷ − ȳ)ᵀ(X − x̄)]/J and ‖C‖_F² = tr[(EᵀE)(ΔᵀΔ)]/J² so nothing is J×J; on the
/// rows' device (`y` repeated over the J rows), only ‖C‖_F comes back.
pub fn kalman_step<R: Rows>(x: &R, yh: &R, y: &R) -> Result<R> {
    let j = x.nrows() as f64;
    let dx = x.centered();
    let dy = yh.centered();
    let e = yh.lincomb(1.0, y, -1.0);
    let dir = e.matmul(&dy.t_matmul(&dx)?)?;
    // EᵀE and ΔᵀΔ are symmetric: tr[(EᵀE)(ΔᵀΔ)] is their elementwise inner product.
    let fro2 = e.t_matmul(&e)?.dot(&dy.t_matmul(&dy)?) / (j * j);
    if fro2 <= 0.0 || !fro2.is_finite() {
        return Ok(x.zeros_like());
    }
    Ok(dir.scale(1.0 / (j * (fro2.sqrt() + 1e-8))))
}
