//! DiffPIR: denoising diffusion models for plug-and-play image restoration (Zhu et al. 2023, CVPR).

use serde::{Deserialize, Serialize};
use tweedie_core::{Invalid, LinearSpace};

use super::common::{self, stream};
use super::CondSampler;
use crate::error::{Result, SamplerError};
use crate::rows::Rows;
use crate::sampler::{Init, SampleOutput};
use crate::state::State;

/// DiffPIR (Zhu et al. 2023, Alg. 1) in EDM coordinates: for each step σ̃ → σ̃′, x̂₀ = D(x̃; σ̃),
/// the proximal data step z = argmin ‖y − Az‖² + ρ‖z − x̂₀‖², ρ = λs²/σ̃², i.e.
/// z = x̂₀ + Aᵀ(AAᵀ + ρI)⁻¹(y − Ax̂₀), then re-noising x̃′ = z + σ̃′(√(1 − ζ)·ε̂ + √ζ·ε) with
/// ε̂ = (x̃ − z)/σ̃ and ε fresh noise. Any linear operator; s = 0 makes the data step a projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diffpir {
    /// λ > 0: weight of the prior against the data term (ρ = λs²/σ̃²).
    #[serde(default = "lambda")]
    pub lambda: f64,
    /// ζ ∈ [0, 1]: share of fresh noise in the re-noising (0: DDIM-like, 1: all fresh).
    #[serde(default = "zeta")]
    pub zeta: f64,
}

fn lambda() -> f64 {
    1.0
}
fn zeta() -> f64 {
    0.3
}

impl Default for Diffpir {
    fn default() -> Self {
        Diffpir {
            lambda: lambda(),
            zeta: zeta(),
        }
    }
}

impl Diffpir {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return Err(SamplerError::invalid(
                "lambda",
                self.lambda,
                "must be finite and > 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.zeta) {
            return Err(SamplerError::invalid(
                "zeta",
                self.zeta,
                "must be in [0, 1]",
            ));
        }
        Ok(())
    }

    /// Runs DiffPIR for `c` from `init`.
    pub fn run<S: State>(&self, c: &CondSampler<S>, init: Init<S>) -> Result<SampleOutput<S>> {
        self.validate()?;
        let begin = common::begin(c, init)?;
        let (b, d) = (begin.x.nrows(), begin.x.ncols());
        let y = begin.y_rows(b)?;
        let common::Begin {
            sig, like, mut x, ..
        } = begin;
        let s2 = c.op.noise_std().powi(2);
        let n = sig.len() - 1;
        for k in 0..n {
            let (sg, sn) = (sig[k], sig[k + 1]);
            let den = common::denoise_rows(c.model, &like, &x, sg)?;
            let rho = self.lambda * s2 / (sg * sg);
            let r = y.lincomb(1.0, &den.apply(c.op)?, -1.0);
            let u = common::solve_cov(c.op, 1.0, rho, &r)?;
            let z = den.lincomb(1.0, &u.adjoint(c.op)?, 1.0);
            if sn == 0.0 {
                x = z;
                continue;
            }
            let eps_hat = x.lincomb(1.0, &z, -1.0).scale(1.0 / sg);
            let eps = common::normals(c, &x, b, stream(k, 0), d)?;
            let noise = eps_hat.lincomb((1.0 - self.zeta).sqrt(), &eps, self.zeta.sqrt());
            x = z.lincomb(1.0, &noise, sn);
        }
        common::finish(c, &like, &x, n)
    }
}
