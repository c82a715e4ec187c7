//! Conditional sampling x₀ ~ p(x₀ | y) for y = A·x₀ + n: guidance turns the model into a
//! conditional denoiser D(x̃; σ̃ | y) = x̃ + σ̃²·∇log p(x̃ | y) (Tweedie's formula), which every
//! integrator can then run; replacement is a per-step correction instead.

use ndarray::{Array1, Array2, Axis, Zip};
use serde::{Deserialize, Serialize};
use tweedie_core::rng::normal_rows;
use tweedie_core::Invalid;
use tweedie_core::{Process, TimeGrid};

use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::model::{Capabilities, Counted, Model, ModelExt};
use crate::ops::ForwardModel;
use crate::sampler::{Callback, Init, NoiseKey, SampleOutput, Sampler, StepHook};
use crate::state::State;

mod common;
pub mod daps;
pub mod diffpir;
pub mod dps_gsg;
pub mod enkg;
pub mod fps;
pub mod pnpdm;
pub mod smc;

pub use daps::Daps;
pub use diffpir::Diffpir;
pub use dps_gsg::DpsGsg;
pub use enkg::Enkg;
pub use fps::{Fps, FpsNoise};
pub use pnpdm::Pnpdm;
pub use smc::Resampling;

/// How the measurement enters sampling. ∇log p(x̃|y) = ∇log p(x̃) + ∇log p(y|x̃); r = y − A·D(x̃; σ̃),
/// J = ∂D/∂x̃ (a vector-Jacobian product), s = noise std of the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Guidance {
    /// Sample the model's exact posterior p(x₀|y) (analytic models, e.g. the mixture's posterior mixture).
    ExactPosterior,
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
    /// ∇log p(y|x̃) ≈ Jᵀ Aᵀ (σ̃² A J Aᵀ + s²I)⁻¹ r, the solve by CG with one VJP per iteration.
    Tmp {
        #[serde(default = "cg_iters")]
        cg_iters: usize,
        #[serde(default = "cg_tol")]
        cg_tol: f64,
    },
    /// Inpainting by replacement (Song et al. 2021 App. I; Lugmayr et al. 2022 without resampling):
    /// after each step, observed coordinates are set to y + σ̃′·ε. Needs a selection operator (mask).
    Replacement,
    /// FPS-SMC (Dou & Song 2024): filtering with a noisy-measurement path and particle weights (see [`Fps`]).
    Fps(Fps),
    /// DiffPIR (Zhu et al. 2023): proximal data step on x̂₀, then re-noising (see [`Diffpir`]).
    Diffpir(Diffpir),
    /// DAPS (Zhang et al. 2024): ODE to x̂₀, Langevin on p(x₀ | x̃, y), re-noise (see [`Daps`]).
    Daps(Daps),
    /// PnP-DM (Wu et al. 2024): split Gibbs with annealed coupling ρ (see [`Pnpdm`]).
    Pnpdm(Pnpdm),
    /// EnKG (Zheng et al. 2024): derivative-free ensemble Kalman guidance (see [`Enkg`]).
    Enkg(Enkg),
    /// DPS-GSG: DPS with a Gaussian-smoothed zeroth-order gradient (see [`DpsGsg`]).
    DpsGsg(DpsGsg),
}

/// The names [`Guidance::from_name`] knows.
pub const GUIDANCE_NAMES: &str =
    "exact_posterior, dps, pigdm, tmp, replacement, fps, diffpir, daps, pnpdm, enkg, dps_gsg";

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

impl Guidance {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        match self {
            Guidance::Dps { scale } if !(*scale >= 0.0 && scale.is_finite()) => Err(
                SamplerError::invalid("scale", scale, "must be finite and ≥ 0"),
            ),
            Guidance::Pigdm { sigma_data } if !(*sigma_data > 0.0 && sigma_data.is_finite()) => {
                Err(SamplerError::invalid(
                    "sigma_data",
                    sigma_data,
                    "must be positive",
                ))
            }
            Guidance::Tmp { cg_iters, cg_tol } if *cg_iters == 0 || !(*cg_tol > 0.0) => {
                Err(SamplerError::invalid(
                    "cg_iters/cg_tol",
                    format!("{cg_iters}/{cg_tol}"),
                    "need ≥ 1 iteration, tol > 0",
                ))
            }
            Guidance::Fps(m) => m.validate(),
            Guidance::Diffpir(m) => m.validate(),
            Guidance::Daps(m) => m.validate(),
            Guidance::Pnpdm(m) => m.validate(),
            Guidance::Enkg(m) => m.validate(),
            Guidance::DpsGsg(m) => m.validate(),
            _ => Ok(()),
        }
    }
    /// Parse a guidance by name with default parameters.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "exact" | "exact_posterior" => Guidance::ExactPosterior,
            "dps" => Guidance::Dps { scale: 1.0 },
            "pigdm" | "pgdm" | "πgdm" => Guidance::Pigdm { sigma_data: half() },
            "tmp" => Guidance::Tmp {
                cg_iters: cg_iters(),
                cg_tol: cg_tol(),
            },
            "replacement" | "replace" => Guidance::Replacement,
            "fps" | "fps_smc" => Guidance::Fps(Fps::default()),
            "diffpir" => Guidance::Diffpir(Diffpir::default()),
            "daps" => Guidance::Daps(Daps::default()),
            "pnpdm" | "pnp_dm" => Guidance::Pnpdm(Pnpdm::default()),
            "enkg" => Guidance::Enkg(Enkg::default()),
            "dps_gsg" | "dpsgsg" => Guidance::DpsGsg(DpsGsg::default()),
            _ => {
                return Err(SamplerError::invalid(
                    "guidance",
                    name,
                    format!("known: {GUIDANCE_NAMES}"),
                ))
            }
        })
    }
}

/// Batched conjugate gradients for SPD systems M_i u_i = b_i, one per row (each row its own matrix).
pub fn cg_rows<F>(matvec: F, b: &Array2<f64>, iters: usize, tol: f64) -> Result<Array2<f64>>
where
    F: Fn(&Array2<f64>) -> Result<Array2<f64>>,
{
    let mut u = Array2::<f64>::zeros(b.raw_dim());
    let mut r = b.clone();
    let mut p = r.clone();
    let rr0: Array1<f64> = (&r * &r).sum_axis(Axis(1));
    let mut rr = rr0.clone();
    for _ in 0..iters {
        if Zip::from(&rr)
            .and(&rr0)
            .all(|a, b| *a <= tol * tol * b.max(1e-300))
        {
            break;
        }
        let mp = matvec(&p)?;
        let pmp = (&p * &mp).sum_axis(Axis(1));
        let alpha =
            Zip::from(&rr)
                .and(&pmp)
                .map_collect(|a, b| if *b > 0.0 && *a > 0.0 { a / b } else { 0.0 });
        if pmp.iter().any(|v| !v.is_finite()) {
            return Err(SamplerError::Numerical("CG: non-finite curvature".into()));
        }
        u = u + &p * &alpha.clone().insert_axis(Axis(1));
        r = r - &mp * &alpha.insert_axis(Axis(1));
        let rr_new = (&r * &r).sum_axis(Axis(1));
        let beta = Zip::from(&rr_new)
            .and(&rr)
            .map_collect(|a, b| if *b > 0.0 { a / b } else { 0.0 });
        p = &r + &(p * &beta.insert_axis(Axis(1)));
        rr = rr_new;
    }
    Ok(u)
}

/// The model guided towards y: D(x̃; σ̃ | y) = D(x̃; σ̃) + σ̃²·ĝ(x̃), ĝ ≈ ∇log p(y | x̃) by DPS, ΠGDM or TMP.
pub struct GuidedModel<'a, S: State> {
    model: &'a dyn Model<S>,
    op: &'a dyn ForwardModel,
    y: Array2<f64>,
    guidance: Guidance,
}

impl<'a, S: State> GuidedModel<'a, S> {
    /// Guide `model` with `guidance` (DPS, ΠGDM or TMP) for measurement `y` of `op`.
    pub fn new(
        model: &'a dyn Model<S>,
        op: &'a dyn ForwardModel,
        y: &Array1<f64>,
        guidance: Guidance,
    ) -> Result<Self> {
        guidance.validate()?;
        if y.len() != op.out_dim() {
            return Err(SamplerError::Shape(format!(
                "measurement has {} entries, operator output {}",
                y.len(),
                op.out_dim()
            )));
        }
        match guidance {
            Guidance::Dps { .. } | Guidance::Pigdm { .. } | Guidance::Tmp { .. } => {}
            _ => {
                return Err(SamplerError::invalid(
                    "guidance",
                    format!("{guidance:?}"),
                    "not a gradient guidance",
                ))
            }
        }
        if !model.has_vjp() {
            return Err(SamplerError::Unsupported(format!(
                "{guidance:?} needs a vector-Jacobian product"
            )));
        }
        if matches!(guidance, Guidance::Dps { .. }) && op.noise_std() <= 0.0 {
            return Err(SamplerError::invalid(
                "noise_std",
                op.noise_std(),
                "DPS's likelihood N(y; A·D, s²I) needs s > 0",
            ));
        }
        Ok(GuidedModel {
            model,
            op,
            y: y.clone().insert_axis(Axis(0)),
            guidance,
        })
    }

    fn residual(&self, den: &S) -> Result<Array2<f64>> {
        let ad = self.op.apply(&den.to_rows())?;
        Ok(&self.y - &ad)
    }
}

impl<S: State> Model<S> for GuidedModel<'_, S> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        let den = self.model.denoise(x, sigma)?;
        let r = self.residual(&den)?;
        if x.sample_len() != self.op.in_dim() {
            return Err(SamplerError::Shape(format!(
                "state has {} elements per sample, operator input {}",
                x.sample_len(),
                self.op.in_dim()
            )));
        }
        let s2 = self.op.noise_std().powi(2);
        let weighted = match &self.guidance {
            Guidance::Dps { scale } => r * (*scale / s2),
            Guidance::Pigdm { sigma_data } => {
                let rt2 = sigma * sigma * sigma_data * sigma_data
                    / (sigma * sigma + sigma_data * sigma_data);
                let op = self.op;
                cg_rows(
                    |u| Ok(op.apply(&op.adjoint(u)?)? * rt2 + u * s2),
                    &r,
                    100,
                    1e-10,
                )?
            }
            Guidance::Tmp { cg_iters, cg_tol } => {
                let (op, model) = (self.op, self.model);
                let matvec = |u: &Array2<f64>| -> Result<Array2<f64>> {
                    let v = x.with_rows(&op.adjoint(u)?)?;
                    let (_, jv) = model.denoise_vjp(x, sigma, &v)?;
                    Ok(op.apply(&jv.to_rows())? * (sigma * sigma) + u * s2)
                };
                cg_rows(matvec, &r, *cg_iters, *cg_tol)?
            }
            _ => return Err(SamplerError::Unsupported("guidance kind".into())),
        };
        let v = x.with_rows(&self.op.adjoint(&weighted)?)?;
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

/// Replacement for selection operators: x̃[obs] ← y + σ̃′·ε after every step (σ̃′ = 0: exactly y).
pub struct Replacement<'a> {
    op: &'a dyn ForwardModel,
    y: Array2<f64>,
}

impl<'a> Replacement<'a> {
    /// Replacement of the coordinates `op` selects by `y`.
    pub fn new(op: &'a dyn ForwardModel, y: &Array1<f64>) -> Result<Self> {
        if !op.is_selection() {
            return Err(SamplerError::invalid(
                "operator",
                format!("{op:?}"),
                "replacement needs a mask (selection) operator",
            ));
        }
        if y.len() != op.out_dim() {
            return Err(SamplerError::Shape(format!(
                "measurement has {} entries, operator output {}",
                y.len(),
                op.out_dim()
            )));
        }
        Ok(Replacement {
            op,
            y: y.clone().insert_axis(Axis(0)),
        })
    }
}

impl<S: State> StepHook<S> for Replacement<'_> {
    fn after_step(&self, _step: usize, sigma_next: f64, x: S, key: NoiseKey) -> Result<S> {
        let rows = x.to_rows();
        let b = rows.nrows();
        let z = normal_rows(key.seed, key.first_index, b, key.stream, self.op.out_dim());
        let target = &self.y + &(z * sigma_next);
        // x − AᵀA x + Aᵀ target, valid because A·Aᵀ = I for a selection.
        let keep = &rows - &self.op.adjoint(&self.op.apply(&rows)?)?;
        x.with_rows(&(keep + self.op.adjoint(&target)?))
    }
}

/// A conditional sampler: a [`Sampler`] + a guidance + a forward model, sampling x₀ ~ p(x₀ | y).
///
/// Classifier-free guidance for class-conditional models is [`crate::model::Cfg`] run by a plain [`Sampler`].
pub struct CondSampler<'a, S: State> {
    pub process: &'a dyn Process,
    pub grid: TimeGrid,
    pub kind: SamplerKind,
    pub model: &'a dyn Model<S>,
    pub op: &'a dyn ForwardModel,
    pub y: Array1<f64>,
    pub guidance: Guidance,
    pub seed: u64,
    pub first_index: u64,
}

impl<S: State> CondSampler<'_, S> {
    /// Run from `init` (see [`Init`]); `Init::Exact` draws from the exact p_T of the posterior for
    /// `ExactPosterior` and of the prior otherwise.
    pub fn run(&self, init: Init<S>, callback: Option<Callback<'_, S>>) -> Result<SampleOutput<S>> {
        self.guidance.validate()?;
        let go = |m: &dyn Model<S>, hook: Option<&dyn StepHook<S>>, init: Init<S>, cb| {
            let mut d = Sampler::new(self.process, self.grid.clone(), self.kind.clone(), m)?
                .seed(self.seed)
                .first_index(self.first_index);
            if let Some(h) = hook {
                if matches!(self.kind, SamplerKind::Adaptive { .. }) {
                    return Err(SamplerError::invalid(
                        "sampler",
                        "adaptive",
                        "replacement needs a fixed grid",
                    ));
                }
                d = d.hook(h);
            }
            d.run(init, cb)
        };
        match &self.guidance {
            Guidance::ExactPosterior => {
                let post = self
                    .model
                    .exact_posterior(self.op, &self.y)
                    .ok_or_else(|| SamplerError::Unsupported("an exact posterior".into()))??;
                go(post.as_ref(), None, init, callback)
            }
            Guidance::Replacement => {
                let hook = Replacement::new(self.op, &self.y)?;
                go(self.model, Some(&hook), init, callback)
            }
            Guidance::Fps(m) => m.run(self, init),
            Guidance::Diffpir(m) => m.run(self, init),
            Guidance::Daps(m) => m.run(self, init),
            Guidance::Pnpdm(m) => m.run(self, init),
            Guidance::Enkg(m) => m.run(self, init),
            Guidance::DpsGsg(m) => m.run(self, init),
            g => {
                // Count the network's own evaluations (forward or forward + VJP), not guided calls.
                let inner = Counted::new(self.model);
                let gm = GuidedModel::new(&inner, self.op, &self.y, g.clone())?;
                let mut out = go(&gm, None, init, callback)?;
                out.nfe = inner.nfe();
                Ok(out)
            }
        }
    }
}
