//! log p(x₀) by the probability-flow ODE with the instantaneous change of variables (Song et al.
//! 2021, App. D.2; Chen et al. 2018; Grathwohl et al. 2019 for Hutchinson's estimator).
//!
//! In u = ln σ̃: dx̃/du = x̃ − D(x̃; σ̃), d log p/du = −(n − tr J), J = ∂D/∂x̃
//! (`tweedie_core::likelihood`). Classic RK4 with `steps` equal steps in u from σ̃_min to σ̃_max
//! carries x̃ and ∫(n − tr J) du together; then log p_{σ̃_min}(x₀) = log p_{σ̃_max}(x̃_T) + ∫(n − tr J) du
//! (p_{σ̃_max} ≈ N(0, σ̃_max²I) unless the caller knows it exactly). The trace is exact (n
//! vector-Jacobian products per evaluation: small n) or Hutchinson's vᵀJv with K fixed probes per
//! sample (Rademacher or Gaussian, keyed by (seed, sample index, probe)), whose mean over probes is
//! unbiased; its standard error is reported.

use ndarray::Array2;
use tweedie_core::likelihood::{gaussian_log_density, velocity_divergence};
use tweedie_core::rng::{normal_rows, streams};
use tweedie_core::Invalid;

use crate::error::{Result, SamplerError};
use crate::model::{Model, ModelExt};
use crate::state::State;

/// Distribution of Hutchinson probes v (E[vvᵀ] = I for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// v_i = ±1 with probability ½: Var(vᵀJv) = 2(‖J_s‖²_F − Σ J_ii²), J_s = (J + Jᵀ)/2.
    Rademacher,
    /// v ~ N(0, I): Var(vᵀJv) = 2‖J_s‖²_F.
    Gaussian,
}

/// How tr J is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// Σ_i e_iᵀJe_i: n vector-Jacobian products per evaluation (small n).
    Exact,
    /// Hutchinson's estimator (Hutchinson 1990) with `probes` ≥ 1 probes per sample.
    Hutchinson {
        /// Probe distribution.
        probe: Probe,
        /// Number of probes K (≥ 2 for a standard error).
        probes: usize,
    },
}

/// The probability-flow likelihood computation.
#[derive(Debug, Clone)]
pub struct Likelihood {
    /// σ̃ where the data enter (x̃(σ̃_min) = x₀); the result is log p_{σ̃_min}(x₀).
    pub sigma_min: f64,
    /// σ̃ where the prior is evaluated.
    pub sigma_max: f64,
    /// RK4 steps in u = ln σ̃ (4 model evaluations each).
    pub steps: usize,
    /// Trace computation.
    pub divergence: Divergence,
    /// Seed of the probes.
    pub seed: u64,
    /// Global index of the batch's first sample (probes depend on (seed, index) only).
    pub first_index: u64,
}

/// Per-sample results.
#[derive(Debug, Clone)]
pub struct LikelihoodOutput {
    /// log p_{σ̃_min}(x₀) in nats (the mean over probes for Hutchinson).
    pub log_p: Vec<f64>,
    /// Standard error of `log_p` over the probes (Hutchinson with K ≥ 2), else `None`.
    pub std_err: Option<Vec<f64>>,
    /// x̃ at σ̃_max, rows `[B, n]` (the prior's argument).
    pub latents: Array2<f64>,
    /// Vector-Jacobian products used.
    pub nfe: usize,
}

/// A log-density of x̃ at σ̃_max for every row.
pub type Prior<'p> = &'p dyn Fn(&Array2<f64>) -> Result<Vec<f64>>;

impl Likelihood {
    fn validate(&self) -> Result<()> {
        if !(self.sigma_min > 0.0 && self.sigma_min < self.sigma_max && self.sigma_max.is_finite())
        {
            return Err(SamplerError::invalid(
                "sigma",
                format!("[{}, {}]", self.sigma_min, self.sigma_max),
                "need 0 < σ̃_min < σ̃_max < ∞",
            ));
        }
        if self.steps == 0 {
            return Err(SamplerError::invalid("steps", 0, "need at least 1 step"));
        }
        if let Divergence::Hutchinson { probes: 0, .. } = self.divergence {
            return Err(SamplerError::invalid("probes", 0, "need at least 1 probe"));
        }
        Ok(())
    }

    /// log p_{σ̃_min}(x₀) for every sample of `x0` (EDM coordinates, x̃ = x₀); `prior` defaults
    /// to N(0, σ̃_max²I).
    pub fn run<S: State>(
        &self,
        model: &dyn Model<S>,
        x0: &S,
        prior: Option<Prior<'_>>,
    ) -> Result<LikelihoodOutput> {
        self.run_with_progress(model, x0, prior, &mut |_| {})
    }

    /// [`Self::run`], calling `on_step(done)` after each RK4 step with the steps done so far (for
    /// a progress bar).
    pub fn run_with_progress<S: State>(
        &self,
        model: &dyn Model<S>,
        x0: &S,
        prior: Option<Prior<'_>>,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<LikelihoodOutput> {
        self.validate()?;
        if !model.has_vjp() {
            return Err(SamplerError::Unsupported(
                "likelihood without a vector-Jacobian product of the model".into(),
            ));
        }
        let (b, n) = (x0.batch(), x0.sample_len());
        let probes = self.probes(x0)?;
        // The exact trace is one "probe".
        let k = probes.len().max(1);
        let mut nfe = 0usize;
        // Velocity x̃ − D and, per probe, the divergence n − tr J for every sample.
        let mut field = |x: &S, sigma: f64| -> Result<(S, Vec<Vec<f64>>)> {
            let (den, traces) = self.trace(model, x, sigma, &probes, &mut nfe)?;
            let div = traces
                .into_iter()
                .map(|t| t.into_iter().map(|t| velocity_divergence(n, t)).collect())
                .collect();
            Ok((x.lincomb(1.0, &den, -1.0), div))
        };
        let (u0, u1) = (self.sigma_min.ln(), self.sigma_max.ln());
        let h = (u1 - u0) / self.steps as f64;
        let mut x = x0.clone();
        let mut ell = vec![vec![0.0; b]; k];
        for i in 0..self.steps {
            let u = u0 + i as f64 * h;
            let (k1, l1) = field(&x, u.exp())?;
            let (k2, l2) = field(&x.lincomb(1.0, &k1, 0.5 * h), (u + 0.5 * h).exp())?;
            let (k3, l3) = field(&x.lincomb(1.0, &k2, 0.5 * h), (u + 0.5 * h).exp())?;
            let (k4, l4) = field(&x.lincomb(1.0, &k3, h), (u + h).exp())?;
            x = x.lincomb3(1.0, &k1, h / 6.0, &k2, h / 3.0);
            x = x.lincomb3(1.0, &k3, h / 3.0, &k4, h / 6.0);
            for p in 0..k {
                for j in 0..b {
                    ell[p][j] += h / 6.0 * (l1[p][j] + 2.0 * l2[p][j] + 2.0 * l3[p][j] + l4[p][j]);
                }
            }
            on_step(i + 1);
        }
        if !x.all_finite() {
            return Err(SamplerError::Numerical(
                "non-finite state in the probability-flow ODE".into(),
            ));
        }
        let latents = x.to_rows();
        let log_prior = match prior {
            Some(f) => f(&latents)?,
            None => latents
                .rows()
                .into_iter()
                .map(|r| gaussian_log_density(r.dot(&r), n, self.sigma_max))
                .collect(),
        };
        if log_prior.len() != b {
            return Err(SamplerError::Shape(format!(
                "prior gave {} values for {b} samples",
                log_prior.len()
            )));
        }
        let mean: Vec<f64> = (0..b)
            .map(|j| ell.iter().map(|e| e[j]).sum::<f64>() / k as f64)
            .collect();
        let std_err = (k >= 2).then(|| {
            (0..b)
                .map(|j| {
                    let var =
                        ell.iter().map(|e| (e[j] - mean[j]).powi(2)).sum::<f64>() / (k - 1) as f64;
                    (var / k as f64).sqrt()
                })
                .collect()
        });
        Ok(LikelihoodOutput {
            log_p: mean.iter().zip(&log_prior).map(|(m, p)| m + p).collect(),
            std_err,
            latents,
            nfe,
        })
    }

    /// The probe states (empty for the exact trace).
    fn probes<S: State>(&self, like: &S) -> Result<Vec<S>> {
        let Divergence::Hutchinson { probe, probes } = self.divergence else {
            return Ok(Vec::new());
        };
        (0..probes)
            .map(|p| {
                let z = normal_rows(
                    self.seed,
                    self.first_index,
                    like.batch(),
                    streams::LIKELIHOOD + p as u64,
                    like.sample_len(),
                );
                let v = match probe {
                    Probe::Gaussian => z,
                    Probe::Rademacher => z.mapv(|v| if v < 0.0 { -1.0 } else { 1.0 }),
                };
                like.with_rows(&v)
            })
            .collect()
    }

    /// D(x̃; σ̃) and, per probe (or once for the exact trace), tr J for every sample.
    fn trace<S: State>(
        &self,
        model: &dyn Model<S>,
        x: &S,
        sigma: f64,
        probes: &[S],
        nfe: &mut usize,
    ) -> Result<(S, Vec<Vec<f64>>)> {
        let (b, n) = (x.batch(), x.sample_len());
        if probes.is_empty() {
            let mut tr = vec![0.0; b];
            let mut den = None;
            let mut e = Array2::<f64>::zeros((b, n));
            for i in 0..n {
                e.column_mut(i).fill(1.0);
                let (d, jte) = model.denoise_vjp(x, sigma, &x.with_rows(&e)?)?;
                *nfe += 1;
                e.column_mut(i).fill(0.0);
                let jte = jte.to_rows();
                tr.iter_mut().zip(jte.column(i)).for_each(|(t, v)| *t += v);
                den.get_or_insert(d);
            }
            let den = den.ok_or_else(|| SamplerError::Shape("samples of 0 elements".into()))?;
            return Ok((den, vec![tr]));
        }
        let mut den = None;
        let mut out = Vec::with_capacity(probes.len());
        for v in probes {
            let (d, jtv) = model.denoise_vjp(x, sigma, v)?;
            *nfe += 1;
            let (vr, jr) = (v.to_rows(), jtv.to_rows());
            out.push(
                vr.rows()
                    .into_iter()
                    .zip(jr.rows())
                    .map(|(a, c)| a.dot(&c))
                    .collect(),
            );
            den.get_or_insert(d);
        }
        let den = den.ok_or_else(|| SamplerError::Shape("no probes".into()))?;
        Ok((den, out))
    }
}
