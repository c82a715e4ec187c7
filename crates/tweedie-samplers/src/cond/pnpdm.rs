//! PnP-DM: split Gibbs sampling with a diffusion prior (Wu et al. 2024, NeurIPS, "Principled
//! probabilistic imaging using diffusion models as plug-and-play priors").

use serde::{Deserialize, Serialize};
use tweedie_core::Invalid;

use super::common::{self, stream, sub_seed};
use super::CondSampler;
use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::rows::Rows;
use crate::sampler::{Init, SampleOutput};
use crate::state::State;

/// PnP-DM (Wu et al. 2024, Alg. 1): Gibbs sampling of π(x, z) ∝ p(x)·N(z; x, ρ²I)·p(y | z) with
/// ρ annealed as ρ_k = max(ρ_min, ρ₀·δ^k). Likelihood step: z ~ N(x, ρ²I) conditioned on
/// y = Az + n, drawn exactly for linear operators (Matheron's rule; the paper's Langevin is for
/// non-linear ones). Prior step: x ~ p(x | x + ρε = z), the denoising posterior, by running the
/// conditional sampler's stochastic integrator from x̃ = z at σ̃ = ρ to 0 in `prior_steps` steps.
/// The x-marginal of π is p(x)·N(y; Ax, s²I + ρ²AAᵀ): exact as ρ_min → 0. Starts from
/// x = D(x̃_T; σ̃_T); the grid only sets σ̃_T.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pnpdm {
    /// ρ₀ > 0: the first coupling strength.
    #[serde(default = "rho_max")]
    pub rho_max: f64,
    /// ρ_min ∈ (0, ρ₀]: the floor of the annealing.
    #[serde(default = "rho_min")]
    pub rho_min: f64,
    /// δ ∈ (0, 1]: annealing factor per iteration.
    #[serde(default = "decay")]
    pub decay: f64,
    /// Gibbs iterations K ≥ 1.
    #[serde(default = "iterations")]
    pub iterations: usize,
    /// Integrator steps of each prior step (≥ 1).
    #[serde(default = "prior_steps")]
    pub prior_steps: usize,
}

fn rho_max() -> f64 {
    10.0
}
fn rho_min() -> f64 {
    0.05
}
fn decay() -> f64 {
    0.9
}
fn iterations() -> usize {
    60
}
fn prior_steps() -> usize {
    10
}

impl Default for Pnpdm {
    fn default() -> Self {
        Pnpdm {
            rho_max: rho_max(),
            rho_min: rho_min(),
            decay: decay(),
            iterations: iterations(),
            prior_steps: prior_steps(),
        }
    }
}

impl Pnpdm {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        if !(self.rho_max > 0.0 && self.rho_max.is_finite()) {
            return Err(SamplerError::invalid(
                "rho_max",
                self.rho_max,
                "must be finite and > 0",
            ));
        }
        if !(self.rho_min > 0.0 && self.rho_min <= self.rho_max) {
            return Err(SamplerError::invalid(
                "rho_min",
                self.rho_min,
                format!("must be in (0, rho_max = {}]", self.rho_max),
            ));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(SamplerError::invalid(
                "decay",
                self.decay,
                "must be in (0, 1]",
            ));
        }
        if self.iterations == 0 {
            return Err(SamplerError::invalid("iterations", 0, "need at least 1"));
        }
        if self.prior_steps == 0 {
            return Err(SamplerError::invalid("prior_steps", 0, "need at least 1"));
        }
        Ok(())
    }

    /// ρ_k = max(ρ_min, ρ₀·δ^k).
    pub fn rho(&self, k: usize) -> f64 {
        (self.rho_max * self.decay.powi(k as i32)).max(self.rho_min)
    }

    /// The parameters, and the sampler: it must be stochastic (the prior step samples p(x | z)).
    pub fn check(&self, kind: &SamplerKind) -> Result<()> {
        self.validate()?;
        if !kind.is_stochastic() {
            return Err(SamplerError::invalid(
                "sampler",
                kind.name(),
                "PnP-DM's prior step draws x ~ p(x | z) and needs a stochastic sampler \
                 (euler_ancestral, ddpm_ancestral, edm_stochastic, dpmpp_2m_sde, euler_maruyama)",
            ));
        }
        Ok(())
    }

    /// Runs PnP-DM for `c` from `init`; `c.kind` must be stochastic (see [`Pnpdm::check`]).
    pub fn run<S: State>(&self, c: &CondSampler<S>, init: Init<S>) -> Result<SampleOutput<S>> {
        self.check(&c.kind)?;
        let begin = common::begin(c, init)?;
        let (b, d) = (begin.x.nrows(), begin.x.ncols());
        let y = begin.y_rows(b)?;
        let m = begin.y.ncols();
        let common::Begin {
            sig, like, x: x_t, ..
        } = begin;
        let mut x = common::denoise_rows(c.model, &like, &x_t, sig[0])?;
        let mut nfe = 1;
        for k in 0..self.iterations {
            let rho = self.rho(k);
            let zx = common::normals(c, &x, b, stream(k, 0), d)?;
            let zy = common::normals(c, &x, b, stream(k, 1), m)?;
            let z = common::condition_gaussian(c.op, &x, rho * rho, &y, Some(&zx), Some(&zy))?;
            let (xn, e) = common::reverse_to_zero(
                c,
                &c.kind,
                &like,
                &z,
                rho,
                self.prior_steps,
                sub_seed(c.seed, k),
            )?;
            x = xn;
            nfe += e;
        }
        common::finish(c, &like, &x, nfe)
    }
}
