//! Gradient guidance: an estimate ĝ ≈ ∇log p(y | x̃) added to the model, so that any sampler
//! runs the guided denoiser D(x̃; σ̃ | y) = D(x̃; σ̃) + σ̃²·ĝ(x̃) (Tweedie's formula).

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};
use tweedie_core::Invalid;
use tweedie_core::LinearSpace;

use crate::error::{Result, SamplerError};
use crate::model::{Capabilities, Model, ModelExt};
use crate::ops::ForwardModel;
use crate::rows::{cg, cg_solve, RepeatedRow, Rows};
use crate::state::State;

/// An estimate of ∇log p(y|x̃) from r = y − A·D(x̃; σ̃), J = ∂D/∂x̃ (a vector-Jacobian product)
/// and s, the noise std of the operator. Every one needs the model's VJP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GradientGuidance {
    /// DPS (Chung et al. 2023): p(y|x̃) ≈ N(y; A·D(x̃), s²I), so ∇log p(y|x̃) ≈ ζ·Jᵀ Aᵀ r / s² (ζ = `scale`).
    Dps {
        #[serde(default = "one")]
        scale: f64,
    },
    /// ΠGDM (Song et al. 2023): p(x₀|x̃) ≈ N(D, r_t²I), r_t² = σ̃²σ_d²/(σ̃² + σ_d²), so
    /// ∇log p(y|x̃) ≈ Jᵀ Aᵀ (r_t² AAᵀ + s²I)⁻¹ r (solved by conjugate gradients).
    Pigdm {
        #[serde(default = "half")]
        sigma_data: f64,
    },
    /// TMP (Boys et al. 2023, Tweedie moment projection): p(x₀|x̃) ≈ N(D, σ̃²J) (Tweedie's covariance),
    /// ∇log p(y|x̃) ≈ Jᵀ Aᵀ (σ̃² A J Aᵀ + s²I)⁻¹ r, the solve by CG with one VJP per iteration
    /// (at most `cg_iters`: the iterate there is used, converged or not).
    Tmp {
        #[serde(default = "cg_iters")]
        cg_iters: usize,
        #[serde(default = "cg_tol")]
        cg_tol: f64,
    },
}

fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn cg_iters() -> usize {
    50
}
fn cg_tol() -> f64 {
    1e-8
}

impl GradientGuidance {
    /// DPS at its paper's scale 1.
    pub fn dps() -> Self {
        GradientGuidance::Dps { scale: one() }
    }
    /// ΠGDM with σ_data = 0.5.
    pub fn pigdm() -> Self {
        GradientGuidance::Pigdm { sigma_data: half() }
    }
    /// TMP with 50 CG iterations to a relative tolerance of 1e-8.
    pub fn tmp() -> Self {
        GradientGuidance::Tmp {
            cg_iters: cg_iters(),
            cg_tol: cg_tol(),
        }
    }

    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        match self {
            GradientGuidance::Dps { scale } if !(*scale >= 0.0 && scale.is_finite()) => Err(
                SamplerError::invalid("scale", scale, "must be finite and ≥ 0"),
            ),
            GradientGuidance::Pigdm { sigma_data }
                if !(*sigma_data > 0.0 && sigma_data.is_finite()) =>
            {
                Err(SamplerError::invalid(
                    "sigma_data",
                    sigma_data,
                    "must be positive",
                ))
            }
            GradientGuidance::Tmp { cg_iters, cg_tol } if *cg_iters == 0 || !(*cg_tol > 0.0) => {
                Err(SamplerError::invalid(
                    "cg_iters/cg_tol",
                    format!("{cg_iters}/{cg_tol}"),
                    "need ≥ 1 iteration, tol > 0",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The parameters, and what the guidance needs of the model and the operator: a VJP, and
    /// for DPS a noisy measurement.
    pub fn check(&self, has_vjp: bool, op: &dyn ForwardModel) -> Result<()> {
        self.validate()?;
        if !has_vjp {
            return Err(SamplerError::Unsupported(format!(
                "{self:?} needs a vector-Jacobian product"
            )));
        }
        if matches!(self, GradientGuidance::Dps { .. }) && op.noise_std() <= 0.0 {
            return Err(SamplerError::invalid(
                "noise_std",
                op.noise_std(),
                "DPS's likelihood N(y; A·D, s²I) needs s > 0",
            ));
        }
        Ok(())
    }
}

/// Batched conjugate gradients for SPD systems M_i u_i = b_i, one per row (each row its own
/// matrix), on host rows: [`crate::rows::cg`] (an error when a row has not converged after
/// `iters` iterations).
pub fn cg_rows<F>(matvec: F, b: &Array2<f64>, iters: usize, tol: f64) -> Result<Array2<f64>>
where
    F: Fn(&Array2<f64>) -> Result<Array2<f64>>,
{
    crate::rows::cg(matvec, b, iters, tol)
}

/// The model guided towards y: D(x̃; σ̃ | y) = D(x̃; σ̃) + σ̃²·ĝ(x̃), ĝ ≈ ∇log p(y | x̃) by DPS, ΠGDM or TMP.
///
/// Residuals, CG solves and operators run on the state's rows where they live
/// ([`State::device_rows`]): on a GPU state nothing of the batch goes to the host per step.
pub struct GuidedModel<'a, S: State> {
    model: &'a dyn Model<S>,
    op: &'a dyn ForwardModel,
    guidance: GradientGuidance,
    /// y repeated over the batch's rows, where they live.
    y: RepeatedRow<S::Rows>,
}

impl<'a, S: State> GuidedModel<'a, S> {
    /// Guide `model` with `guidance` (DPS, ΠGDM or TMP) for measurement `y` of `op`.
    pub fn new(
        model: &'a dyn Model<S>,
        op: &'a dyn ForwardModel,
        y: &Array1<f64>,
        guidance: GradientGuidance,
    ) -> Result<Self> {
        guidance.check(model.has_vjp(), op)?;
        if y.len() != op.out_dim() {
            return Err(SamplerError::Shape(format!(
                "measurement has {} entries, operator output {}",
                y.len(),
                op.out_dim()
            )));
        }
        Ok(GuidedModel {
            model,
            op,
            guidance,
            y: RepeatedRow::new(y.clone().insert_axis(Axis(0))),
        })
    }
}

impl<S: State> Model<S> for GuidedModel<'_, S> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        if x.sample_len() != self.op.in_dim() {
            return Err(SamplerError::Shape(format!(
                "state has {} elements per sample, operator input {}",
                x.sample_len(),
                self.op.in_dim()
            )));
        }
        let op = self.op;
        let den = self.model.denoise(x, sigma)?;
        let d = den.device_rows();
        let r = self.y.like(&d)?.lincomb(1.0, &d.apply(op)?, -1.0);
        let s2 = op.noise_std().powi(2);
        let weighted = match &self.guidance {
            GradientGuidance::Dps { scale } => r.scale(*scale / s2),
            GradientGuidance::Pigdm { sigma_data } => {
                let rt2 = sigma * sigma * sigma_data * sigma_data
                    / (sigma * sigma + sigma_data * sigma_data);
                cg(
                    |u: &S::Rows| Ok(u.adjoint(op)?.apply(op)?.lincomb(rt2, u, s2)),
                    &r,
                    100,
                    1e-10,
                )?
            }
            GradientGuidance::Tmp { cg_iters, cg_tol } => {
                let model = self.model;
                let matvec = |u: &S::Rows| -> Result<S::Rows> {
                    let v = x.with_device_rows(&u.adjoint(op)?)?;
                    let (_, jv) = model.denoise_vjp(x, sigma, &v)?;
                    Ok(jv.device_rows().apply(op)?.lincomb(sigma * sigma, u, s2))
                };
                // Truncated CG is TMP's own approximation (its budget is a method
                // parameter, and J need not be symmetric): the iterate at the limit is used.
                cg_solve(matvec, &r, *cg_iters, *cg_tol)?.u
            }
        };
        let v = x.with_device_rows(&weighted.adjoint(op)?)?;
        let (_, jv) = self.model.denoise_vjp(x, sigma, &v)?;
        Ok(den.lincomb(1.0, &jv, sigma * sigma))
    }
    /// The prior's exact marginal draws (at the starting σ̃ the prior and posterior marginals
    /// differ by O(1/σ̃²)) and σ̃ rounding; no VJP of the guided D.
    fn capabilities(&self) -> Capabilities<'_, S> {
        let inner = self.model.capabilities();
        Capabilities {
            exact_marginal: inner.exact_marginal,
            sigma_rounding: inner.sigma_rounding,
            ..Capabilities::none()
        }
    }
}
