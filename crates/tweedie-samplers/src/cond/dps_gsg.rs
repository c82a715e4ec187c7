//! DPS-GSG: DPS with a Gaussian-smoothed zeroth-order gradient of the data misfit (the
//! derivative-free DPS baseline of Zheng et al. 2024; the estimator of Nesterov & Spokoiny 2017).

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use tweedie_core::rng::normal_rows;
use tweedie_core::{Invalid, LinearSpace};

use super::common::{self, stream};
use super::CondSampler;
use crate::error::{Result, SamplerError};
use crate::model::{Capabilities, Counted, Model};
use crate::ops::ForwardModel;
use crate::rows::{RepeatedRow, Rows};
use crate::sampler::{Init, SampleOutput, Sampler};
use crate::state::State;

/// DPS-GSG: D(x̃; σ̃ | y) = D − ζ·r_σ̃²·ĝ/(2s²), ĝ ≈ ∇‖y − A·x₀‖² at x₀ = D by central Gaussian
/// smoothing ĝ = (1/Q)Σ_q u_q[L(D + μu_q) − L(D − μu_q)]/(2μ), u_q ~ N(0, I), and the
/// denoiser's Jacobian replaced by r_σ̃²/σ̃² = σ_d²/(σ̃² + σ_d²) (exact for data N(m, σ_d²I), as
/// in ΠGDM). Needs forward evaluations A·x only (2Q per call) and no VJP of the model, so it
/// runs with any integrator. With Q → ∞ on an isotropic Gaussian prior it is DPS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpsGsg {
    /// ζ ≥ 0: guidance scale (1: the likelihood N(y; A·D, s²I) at face value).
    #[serde(default = "scale")]
    pub scale: f64,
    /// Q ≥ 1: smoothing directions per evaluation.
    #[serde(default = "queries")]
    pub queries: usize,
    /// μ > 0: smoothing radius.
    #[serde(default = "mu")]
    pub mu: f64,
    /// σ_d > 0: the data std in the Jacobian's stand-in.
    #[serde(default = "sigma_data")]
    pub sigma_data: f64,
}

fn scale() -> f64 {
    1.0
}
fn queries() -> usize {
    64
}
fn mu() -> f64 {
    0.01
}
fn sigma_data() -> f64 {
    0.5
}

impl Default for DpsGsg {
    fn default() -> Self {
        DpsGsg {
            scale: scale(),
            queries: queries(),
            mu: mu(),
            sigma_data: sigma_data(),
        }
    }
}

/// The Gaussian-smoothed gradient of L(x) = ‖y − A·x‖² per row: (1/Q)Σ_q u_q[L(x + μu_q) −
/// L(x − μu_q)]/(2μ) with u_q = `noise(q)` (host rows [B, D], e.g. `normal_rows(seed,
/// first_index, B, stream_q, D)`, sent where `x` lives). `y` has B rows or one, repeated.
/// On a device only the 2Q·B losses come back to the host.
pub fn gsg_gradient<R: Rows>(
    op: &dyn ForwardModel,
    y: &R,
    x: &R,
    queries: usize,
    mu: f64,
    mut noise: impl FnMut(usize) -> Array2<f64>,
) -> Result<R> {
    let b = x.nrows();
    let y = match y.nrows() {
        n if n == b => y.clone(),
        1 => y.select_rows(&vec![0; b])?,
        n => {
            return Err(SamplerError::Shape(format!(
                "a measurement of {n} rows for {b} samples"
            )))
        }
    };
    let loss = |z: &R| -> Result<Vec<f64>> {
        let r = y.lincomb(1.0, &z.apply(op)?, -1.0);
        r.row_dots(&r)
    };
    let mut g = x.zeros_like();
    for q in 0..queries {
        let u = x.host_like(&noise(q))?;
        let lp = loss(&x.lincomb(1.0, &u, mu))?;
        let lm = loss(&x.lincomb(1.0, &u, -mu))?;
        let c: Vec<f64> = lp
            .iter()
            .zip(&lm)
            .map(|(p, m)| (p - m) / (2.0 * mu * queries as f64))
            .collect();
        g = g.lincomb(1.0, &u.scale_rows(&c)?, 1.0);
    }
    Ok(g)
}

impl DpsGsg {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        if !(self.scale >= 0.0 && self.scale.is_finite()) {
            return Err(SamplerError::invalid(
                "scale",
                self.scale,
                "must be finite and ≥ 0",
            ));
        }
        if self.queries == 0 {
            return Err(SamplerError::invalid(
                "queries",
                0,
                "need at least 1 direction",
            ));
        }
        if !(self.mu > 0.0 && self.mu.is_finite()) {
            return Err(SamplerError::invalid(
                "mu",
                self.mu,
                "must be finite and > 0",
            ));
        }
        if !(self.sigma_data > 0.0 && self.sigma_data.is_finite()) {
            return Err(SamplerError::invalid(
                "sigma_data",
                self.sigma_data,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// The parameters, and the operator: its likelihood N(y; A·D, s²I) needs s > 0.
    pub fn check(&self, op: &dyn ForwardModel) -> Result<()> {
        self.validate()?;
        if op.noise_std() <= 0.0 {
            return Err(SamplerError::invalid(
                "noise_std",
                op.noise_std(),
                "DPS-GSG's likelihood N(y; A·D, s²I) needs s > 0",
            ));
        }
        Ok(())
    }

    /// Runs `c`'s integrator on the DPS-GSG-guided model from `init`.
    pub fn run<S: State>(&self, c: &CondSampler<S>, init: Init<S>) -> Result<SampleOutput<S>> {
        self.check(c.op)?;
        let y = common::checked_y(c.op, &c.y)?;
        let inner = Counted::new(c.model);
        let gm = GsgModel {
            inner: &inner,
            op: c.op,
            y: RepeatedRow::new(y),
            p: self.clone(),
            seed: c.seed,
            first_index: c.first_index,
            calls: AtomicUsize::new(0),
        };
        let like = match &init {
            Init::Noise(l) | Init::Exact(l) | Init::Latents(l) | Init::Edm(l) => l,
        };
        if like.sample_len() != c.op.in_dim() {
            return Err(SamplerError::Shape(format!(
                "state has {} elements per sample, the operator's input has {}",
                like.sample_len(),
                c.op.in_dim()
            )));
        }
        let mut out = Sampler::new(c.process, c.grid.clone(), c.kind.clone(), &gm)?
            .seed(c.seed)
            .first_index(c.first_index)
            .run(init, None)?;
        out.nfe = inner.nfe();
        Ok(out)
    }
}

/// The DPS-GSG-guided denoiser (see [`DpsGsg`]); call j draws its directions from stream j.
struct GsgModel<'a, S: State> {
    inner: &'a dyn Model<S>,
    op: &'a dyn ForwardModel,
    /// y repeated over the batch's rows, where they live.
    y: RepeatedRow<S::Rows>,
    p: DpsGsg,
    seed: u64,
    first_index: u64,
    calls: AtomicUsize,
}

impl<S: State> Model<S> for GsgModel<'_, S> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        let den = self.inner.denoise(x, sigma)?;
        let d = den.device_rows();
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let (b, n) = (d.nrows(), d.ncols());
        let y = self.y.like(&d)?;
        let g = gsg_gradient(self.op, &y, &d, self.p.queries, self.p.mu, |q| {
            normal_rows(self.seed, self.first_index, b, stream(call, q as u64), n)
        })?;
        let sd2 = self.p.sigma_data * self.p.sigma_data;
        let rt2 = sigma * sigma * sd2 / (sigma * sigma + sd2);
        let s2 = self.op.noise_std().powi(2);
        x.with_device_rows(&d.lincomb(1.0, &g, -(self.p.scale * rt2 / (2.0 * s2))))
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        // The start is drawn from the prior's p_T and σ̃ rounded as the prior does, as for DPS;
        // D itself changed, so no VJP, posterior or learned variance carries over.
        let inner = self.inner.capabilities();
        Capabilities {
            exact_marginal: inner.exact_marginal,
            sigma_rounding: inner.sigma_rounding,
            ..Capabilities::none()
        }
    }
}
