//! The variational bound of a discrete-time diffusion chain in bits/dim (Ho et al. 2020, eq. 5;
//! Nichol & Dhariwal 2021, §2 and their `calc_bpd_loop`), for models with a learned
//! reverse-step variance (iDDPM) and, with the fixed variance β̃, for any denoiser.
//!
//! The chain runs on a grid of EDM noise levels u_0 > … > u_K = 0 (the iDDPM u-grid or a
//! sub-grid of it) in VP coordinates x = α·x̃, α = 1/√(1 + u²). With step j: u_j → u_{j+1}
//! (β_j, β̃_j, the posterior-mean weights c_x0, c_xt of `tweedie_core::DdpmStep`):
//!
//! −log p_θ(x₀) ≤ L = L_prior + Σ_{j=0}^{K−2} L_j + L_dec, where
//!
//! - L_prior = KL(q(x_{u_0} | x₀) ‖ N(0, I)), q(x_u | x₀) = N(α_u·x₀, (1 − α_u²)I);
//! - L_j = E_{x̃ ~ N(x₀, u_j²I)} KL(N(μ̃, β̃_j) ‖ N(μ_θ, σ_θ²)) with x_t = α_{u_j}·x̃,
//!   μ̃ = c_x0·x₀ + c_xt·x_t (the posterior q(x_{u_{j+1}} | x_t, x₀)),
//!   μ_θ = c_x0·D(x̃; u_j) + c_xt·x_t and log σ_θ² = v·log β_j + (1 − v)·log β̃_j, v the
//!   model's learned interpolation (v = 0, σ_θ² = β̃_j, when it has none);
//! - L_dec = −log p_θ(x₀ | x_{u_{K−1}}) with μ_θ = D(x̃; u_{K−1}) (c_x0 = 1, c_xt = 0 on the last
//!   step) and log β̃ replaced by the previous step's, as in training
//!   (`tweedie_core::process::iddpm_clipped_log_beta_tilde`): the Gaussian density
//!   N(x₀; μ_θ, σ_θ²) for continuous data ([`Decoder::Continuous`], a bound on −log p(x₀)), or
//!   the probability of x₀'s bin for L-level data ([`Decoder::Discretized`], Ho et al. 2020
//!   eq. 13, a bound on −log P(x₀) of the discrete data).
//!
//! Every expectation over x̃ is one draw per step and sample (unbiased, as the reference does),
//! keyed by (seed, sample index, `streams::VLB + j`); K model evaluations per batch.

use ndarray::{Array2, Zip};
use tweedie_core::likelihood::{discretized_gaussian_nll, gaussian_kl, gaussian_nll, Dequantizer};
use tweedie_core::process::{iddpm_clipped_log_beta_tilde, DdpmStep};
use tweedie_core::rng::{normal_rows, streams};
use tweedie_core::Invalid;

use crate::error::{Result, SamplerError};
use crate::model::{Model, ModelExt};
use crate::state::State;

/// The last term, −log p_θ(x₀ | x₁).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoder {
    /// The Gaussian density N(x₀; μ_θ, σ_θ²): a bound on the density of continuous data.
    Continuous,
    /// The probability N(μ_θ, σ_θ²) gives x₀'s bin ([`Dequantizer::bin`]): data on the level
    /// centres x/c − 1, a bound on the probability of the discrete levels.
    Discretized(Dequantizer),
}

/// The variational bound on a grid of noise levels.
#[derive(Debug, Clone)]
pub struct VariationalBound {
    /// u_0 > … > u_K = 0, K ≥ 1 (EDM noise levels of the chain's states).
    pub grid: Vec<f64>,
    /// The decoder term.
    pub decoder: Decoder,
    /// Seed of the draws x̃.
    pub seed: u64,
    /// Global index of the batch's first sample (draws depend on (seed, index) only).
    pub first_index: u64,
}

/// Per-sample terms of the bound, in nats (sum over the sample's elements).
#[derive(Debug, Clone)]
pub struct BoundTerms {
    /// L_prior.
    pub prior: Vec<f64>,
    /// Σ_{j ≤ K−2} L_j.
    pub diffusion: Vec<f64>,
    /// L_dec.
    pub decoder: Vec<f64>,
    /// Model evaluations used.
    pub nfe: usize,
    /// Whether the model supplied its learned variance (else σ_θ² = β̃ throughout).
    pub learned_variance: bool,
}

impl BoundTerms {
    /// L = L_prior + Σ L_j + L_dec per sample: −log p_θ(x₀) ≤ L.
    pub fn total(&self) -> Vec<f64> {
        (0..self.prior.len())
            .map(|i| self.prior[i] + self.diffusion[i] + self.decoder[i])
            .collect()
    }
}

impl VariationalBound {
    fn validate(&self) -> Result<()> {
        let g = &self.grid;
        let ok = g.len() >= 2
            && g.last() == Some(&0.0)
            && g.windows(2).all(|w| w[0] > w[1])
            && g[0].is_finite();
        if !ok {
            return Err(SamplerError::invalid(
                "grid",
                format!("{} levels from {:?} to {:?}", g.len(), g.first(), g.last()),
                "need finite, strictly decreasing noise levels u_0 > … > u_K = 0 with K ≥ 1",
            ));
        }
        Ok(())
    }

    /// The bound's terms for every sample of `x0` (data space; level centres with
    /// [`Decoder::Discretized`]).
    pub fn run<S: State>(&self, model: &dyn Model<S>, x0: &S) -> Result<BoundTerms> {
        self.run_with_progress(model, x0, &mut |_| {})
    }

    /// [`Self::run`], calling `on_step(done)` after each chain step with the steps done so far
    /// (for a progress bar).
    pub fn run_with_progress<S: State>(
        &self,
        model: &dyn Model<S>,
        x0: &S,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<BoundTerms> {
        self.validate()?;
        let rows = x0.to_rows();
        if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
            return Err(SamplerError::invalid(
                "data",
                format!("element {i}"),
                "must be finite",
            ));
        }
        let bins = self.bins(&rows)?;
        let (b, n) = rows.dim();
        let steps: Vec<DdpmStep> = self
            .grid
            .windows(2)
            .map(|w| DdpmStep::vp(w[0], w[1]))
            .collect();
        let log_beta_tilde = iddpm_clipped_log_beta_tilde(&steps);
        let last = steps.len() - 1;

        let alpha = DdpmStep::vp_alpha(self.grid[0]);
        let log_var_prior = (1.0 - alpha * alpha).ln();
        let prior = rows
            .rows()
            .into_iter()
            .map(|r| {
                r.iter()
                    .map(|&x| gaussian_kl(alpha * x, log_var_prior, 0.0, 0.0))
                    .sum()
            })
            .collect();

        let mut diffusion = vec![0.0; b];
        let mut decoder = vec![0.0; b];
        let mut learned_variance = true;
        for (j, step) in steps.iter().enumerate() {
            let u = self.grid[j];
            let eps = normal_rows(self.seed, self.first_index, b, streams::VLB + j as u64, n);
            let x_tilde = &rows + &(eps * u);
            let (den, v) = model.denoise_with_variance(&x0.with_rows(&x_tilde)?, u)?;
            let den = den.to_rows();
            let v = v.map(|v| v.to_rows());
            learned_variance &= v.is_some();
            if den.dim() != (b, n) || v.as_ref().is_some_and(|v| v.dim() != (b, n)) {
                return Err(SamplerError::Shape(format!(
                    "the model returned {:?} (variance {:?}) for {b}×{n} rows",
                    den.dim(),
                    v.as_ref().map(|v| v.dim())
                )));
            }
            let a_t = DdpmStep::vp_alpha(u);
            let (lv_a, lv_b) = step.learned_log_variance(log_beta_tilde[j]);
            // log σ_θ² = a + b·v per element; v = 0 without a learned variance.
            let log_var = match v {
                Some(v) => v.mapv(|v| lv_a + lv_b * v),
                None => Array2::from_elem((b, n), lv_a),
            };
            let mean_model = &den * step.coef_x0 + &x_tilde * (a_t * step.coef_xt);
            let out = if j == last {
                &mut decoder
            } else {
                &mut diffusion
            };
            for (i, acc) in out.iter_mut().enumerate() {
                let mut sum = 0.0;
                Zip::indexed(mean_model.row(i))
                    .and(log_var.row(i))
                    .and(x_tilde.row(i))
                    .for_each(|k, &m, &l, &xt| {
                        let x = rows[[i, k]];
                        sum += if j < last {
                            let mean_true = step.coef_x0 * x + step.coef_xt * a_t * xt;
                            gaussian_kl(mean_true, step.beta_tilde.ln(), m, l)
                        } else {
                            match &bins {
                                Some(bins) => {
                                    let (lo, hi) = bins[[i, k]];
                                    discretized_gaussian_nll(lo, hi, m, l)
                                }
                                None => gaussian_nll(x, m, l),
                            }
                        };
                    });
                *acc += sum;
            }
            on_step(j + 1);
        }
        if let Some(i) = (0..b).find(|&i| !(diffusion[i] + decoder[i]).is_finite()) {
            return Err(SamplerError::Numerical(format!(
                "the variational bound of sample {} is not finite",
                self.first_index + i as u64
            )));
        }
        Ok(BoundTerms {
            prior,
            diffusion,
            decoder,
            nfe: steps.len(),
            learned_variance,
        })
    }

    /// Each element's bin (discretised decoder), checking the data are level centres.
    fn bins(&self, rows: &Array2<f64>) -> Result<Option<Array2<(f64, f64)>>> {
        let Decoder::Discretized(q) = self.decoder else {
            return Ok(None);
        };
        let mut out = Array2::from_elem(rows.dim(), (0.0, 0.0));
        for ((i, k), &y) in rows.indexed_iter() {
            let level = q.level_of_centre(y).map_err(|e| {
                SamplerError::invalid(
                    "data",
                    format!("sample {} element {k}", self.first_index + i as u64),
                    e.to_string(),
                )
            })?;
            out[[i, k]] = q.bin(level);
        }
        Ok(Some(out))
    }
}
