//! DAPS: decoupled annealing posterior sampling (Zhang et al. 2024, "Improving diffusion inverse
//! problem solving with decoupled noise annealing").

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use tweedie_core::{Invalid, LinearSpace};

use super::common::{self, stream};
use super::CondSampler;
use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::ops::ForwardModel;
use crate::rows::Rows;
use crate::sampler::{Init, SampleOutput};
use crate::state::State;

/// DAPS (Zhang et al. 2024, Alg. 1) in EDM coordinates: for each annealing level σ̃ → σ̃′ of the
/// grid, (1) x̂₀ = the probability-flow ODE from x̃ at σ̃ to 0 in `ode_steps` Euler steps;
/// (2) Langevin on p(x₀ | x̃, y) ∝ N(x₀; x̂₀, r²I)·N(y; Ax₀, τ²I) with r = σ̃:
/// x₀ ← x₀ − h∇U + √(2h)·ε, U = ‖x₀ − x̂₀‖²/(2r²) + ‖Ax₀ − y‖²/(2τ²), `langevin_steps` times;
/// (3) re-noise x̃′ = x₀ + σ̃′·ε. The step h = η/L uses U's Lipschitz constant
/// L = 1/r² + ‖A‖²/τ² (‖A‖ by power iteration), so one η fits every σ̃ and operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daps {
    /// Euler steps of the ODE to x̂₀ (≥ 1; 1 is Tweedie's D).
    #[serde(default = "ode_steps")]
    pub ode_steps: usize,
    /// Langevin steps per annealing level (≥ 1).
    #[serde(default = "langevin_steps")]
    pub langevin_steps: usize,
    /// η ∈ (0, 1]: Langevin step relative to 1/L.
    #[serde(default = "eta")]
    pub eta: f64,
    /// Likelihood std τ > 0 (None: the operator's noise std s).
    #[serde(default)]
    pub tau: Option<f64>,
}

fn ode_steps() -> usize {
    5
}
fn langevin_steps() -> usize {
    100
}
fn eta() -> f64 {
    0.1
}

impl Default for Daps {
    fn default() -> Self {
        Daps {
            ode_steps: ode_steps(),
            langevin_steps: langevin_steps(),
            eta: eta(),
            tau: None,
        }
    }
}

/// ‖A‖² = λ_max(AᵀA) by 50 power iterations from a fixed start (a few % high is harmless: it
/// only shortens the Langevin step).
pub(crate) fn op_norm2(op: &dyn ForwardModel) -> Result<f64> {
    let d = op.in_dim();
    let mut v = Array2::from_shape_fn((1, d), |(_, j)| 1.0 + 0.1 * ((j * 7919) % 13) as f64);
    let mut lam = 0.0;
    for _ in 0..50 {
        let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if nv == 0.0 {
            return Ok(0.0);
        }
        v /= nv;
        let w = op.adjoint(&op.apply(&v)?)?;
        lam = (&w * &v).sum();
        v = w;
    }
    Ok(lam)
}

impl Daps {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        if self.ode_steps == 0 {
            return Err(SamplerError::invalid(
                "ode_steps",
                0,
                "need at least 1 step",
            ));
        }
        if self.langevin_steps == 0 {
            return Err(SamplerError::invalid(
                "langevin_steps",
                0,
                "need at least 1 step",
            ));
        }
        if !(self.eta > 0.0 && self.eta <= 1.0) {
            return Err(SamplerError::invalid("eta", self.eta, "must be in (0, 1]"));
        }
        if let Some(t) = self.tau {
            if !(t > 0.0 && t.is_finite()) {
                return Err(SamplerError::invalid("tau", t, "must be finite and > 0"));
            }
        }
        Ok(())
    }

    /// Runs DAPS for `c` from `init`; the ODE to x̂₀ uses Euler, as in the paper.
    pub fn run<S: State>(&self, c: &CondSampler<S>, init: Init<S>) -> Result<SampleOutput<S>> {
        self.validate()?;
        let tau = match self.tau {
            Some(t) => t,
            None if c.op.noise_std() > 0.0 => c.op.noise_std(),
            None => {
                return Err(SamplerError::invalid(
                    "tau",
                    "none",
                    "the operator is noiseless (s = 0): DAPS needs a likelihood std τ > 0",
                ))
            }
        };
        let begin = common::begin(c, init)?;
        let (b, d) = (begin.x.nrows(), begin.x.ncols());
        let y = begin.y_rows(b)?;
        let common::Begin {
            sig, like, mut x, ..
        } = begin;
        let a2 = op_norm2(c.op)?;
        let n = sig.len() - 1;
        let mut nfe = 0;
        for k in 0..n {
            let (sg, sn) = (sig[k], sig[k + 1]);
            let (x0hat, e) =
                common::reverse_to_zero(c, &SamplerKind::Euler, &like, &x, sg, self.ode_steps, 0)?;
            nfe += e;
            let (r2, t2) = (sg * sg, tau * tau);
            let h = self.eta / (1.0 / r2 + a2 / t2);
            let mut x0 = x0hat.clone();
            for j in 0..self.langevin_steps {
                // ∇U = (x₀ − x̂₀)/r² + Aᵀ(Ax₀ − y)/τ².
                let misfit = x0.apply(c.op)?.lincomb(1.0, &y, -1.0).adjoint(c.op)?;
                let grad = x0
                    .lincomb(1.0, &x0hat, -1.0)
                    .lincomb(1.0 / r2, &misfit, 1.0 / t2);
                let z = common::normals(c, &x0, b, stream(k, 1 + j as u64), d)?;
                x0 = x0
                    .lincomb(1.0, &grad, -h)
                    .lincomb(1.0, &z, (2.0 * h).sqrt());
            }
            x = if sn > 0.0 {
                let z = common::normals(c, &x0, b, stream(k, 0), d)?;
                x0.lincomb(1.0, &z, sn)
            } else {
                x0
            };
        }
        common::finish(c, &like, &x, nfe)
    }
}
