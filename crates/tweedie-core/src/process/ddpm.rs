//! Discrete DDPM β tables as processes, the iDDPM u-grid and the Gaussian reverse step.

use super::*;

/// β table of a discrete DDPM schedule, in training order (β_0 is the least noisy step).
pub fn beta_table(schedule: &BetaSchedule, n: usize) -> Vec<f64> {
    let lin = |a: f64, b: f64, j: usize| {
        if n == 1 {
            a
        } else {
            a + (b - a) * j as f64 / (n - 1) as f64
        }
    };
    match schedule {
        BetaSchedule::Linear {
            beta_start,
            beta_end,
        } => (0..n).map(|j| lin(*beta_start, *beta_end, j)).collect(),
        BetaSchedule::ScaledLinear {
            beta_start,
            beta_end,
        } => (0..n)
            .map(|j| lin(beta_start.sqrt(), beta_end.sqrt(), j).powi(2))
            .collect(),
        BetaSchedule::Cosine { s, max_beta } => {
            let f = |j: usize| {
                ((j as f64 / n as f64 + s) / (1.0 + s) * FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|j| (1.0 - f(j + 1) / f(j)).min(*max_beta))
                .collect()
        }
    }
}

/// Discrete DDPM table as a continuous process: knots t_k = k/N carry L_k = log ᾱ_{k−1}
/// (L_0 = 0, ᾱ_j = ∏_{i≤j}(1−β_i), so table index j ↔ t = (j+1)/N) and L is linear in t
/// between knots; α = exp(L/2), σ = √(1 − exp L). Beyond t = 1 the last segment is extended.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteDdpm {
    log_abar: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl DiscreteDdpm {
    /// Computes the table; `schedule` must have been validated.
    pub fn new(schedule: &BetaSchedule, n: usize) -> Self {
        let betas = beta_table(schedule, n);
        let mut log_abar = Vec::with_capacity(n + 1);
        let mut acc = 0.0;
        log_abar.push(0.0);
        for b in &betas {
            acc += (-b).ln_1p();
            log_abar.push(acc);
        }
        let alphas_cumprod = log_abar[1..].iter().map(|l| l.exp()).collect();
        DiscreteDdpm {
            log_abar,
            alphas_cumprod,
        }
    }
    /// ᾱ_j for j = 0..N−1.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }
    /// Number N of table entries.
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }
    /// Whether the table is empty (never, for a validated schedule).
    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }
    /// Table index j = N·t − 1 of time t (fractional between knots); the ε-network input.
    pub fn timestep_of_t(&self, t: f64) -> f64 {
        self.len() as f64 * t - 1.0
    }
    /// Time t = (j+1)/N of table index j.
    pub fn t_of_timestep(&self, j: f64) -> f64 {
        (j + 1.0) / self.len() as f64
    }
    /// (L(t), dL/dt).
    fn log_abar_and_slope(&self, t: f64) -> (f64, f64) {
        let n = self.len();
        let x = t * n as f64;
        let k = (x.floor().max(0.0) as usize).min(n - 1);
        let slope = self.log_abar[k + 1] - self.log_abar[k];
        (self.log_abar[k] + (x - k as f64) * slope, slope * n as f64)
    }
}

impl Process for DiscreteDdpm {
    fn alpha(&self, t: f64) -> f64 {
        (0.5 * self.log_abar_and_slope(t).0).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-self.log_abar_and_slope(t).0.exp_m1()).max(0.0).sqrt()
    }
    fn alpha_dot(&self, t: f64) -> f64 {
        let (l, dl) = self.log_abar_and_slope(t);
        0.5 * (0.5 * l).exp() * dl
    }
    fn sigma_dot(&self, t: f64) -> f64 {
        let (l, dl) = self.log_abar_and_slope(t);
        -0.5 * l.exp() * dl / (-l.exp_m1()).sqrt()
    }
    fn sigma_tilde(&self, t: f64) -> f64 {
        (-self.log_abar_and_slope(t).0).exp_m1().max(0.0).sqrt()
    }
    fn t_of_sigma_tilde(&self, sigma_tilde: f64) -> f64 {
        let target = -(sigma_tilde * sigma_tilde).ln_1p();
        let n = self.len();
        // log_abar is strictly decreasing: find k with L_{k+1} <= target <= L_k.
        let k = self.log_abar[1..]
            .partition_point(|&l| l > target)
            .min(n - 1);
        let (lk, lk1) = (self.log_abar[k], self.log_abar[k + 1]);
        (k as f64 + (target - lk) / (lk1 - lk)) / n as f64
    }
    fn t_range(&self) -> (f64, f64) {
        (1.0 / self.len() as f64, 1.0)
    }
    fn table_len(&self) -> Option<usize> {
        Some(self.len())
    }
}

/// iDDPM noise grid u_0 > u_1 > … > u_M = 0 (Nichol & Dhariwal 2021 as used by Karras et al.
/// 2022, Table 1): u_{j−1} = √((u_j² + 1)/max(ᾱ_{j−1}/ᾱ_j, C₁) − 1), ᾱ_j = sin²(π/2·j/(M(C₂+1))).
/// Returns all M+1 entries, like NVlabs/edm `iDDPMPrecond.u` (σ_max = u_0, σ_min = u_{M−1}).
pub fn iddpm_u_grid(c1: f64, c2: f64, m: usize) -> Vec<f64> {
    let abar = |j: usize| (FRAC_PI_2 * j as f64 / m as f64 / (c2 + 1.0)).sin().powi(2);
    let mut u = vec![0.0; m + 1];
    for j in (1..=m).rev() {
        u[j - 1] = ((u[j] * u[j] + 1.0) / (abar(j - 1) / abar(j)).max(c1) - 1.0).sqrt();
    }
    u
}

/// Checks iDDPM's grid parameters (C₁, C₂ > 0, M ≥ 2), shared by every type that carries
/// them (preconditioning, training density, timer); errors name the key and the value.
pub fn check_iddpm_grid(c1: f64, c2: f64, m: usize) -> Result<()> {
    check_pos("c1", c1)?;
    check_pos("c2", c2)?;
    if m < 2 {
        return Err(CoreError::invalid("m", m, "must be >= 2"));
    }
    // The u table of m + 1 levels is built in full.
    crate::budget::check_array("m", m, &[m.saturating_add(1)], 8)?;
    Ok(())
}

/// [`iddpm_u_grid`], computed once per (C₁, C₂, M) and shared: training draws one u_j per sample,
/// and recomputing the M-step recursion for each draw made iDDPM training twice as slow.
pub fn iddpm_u_grid_shared(c1: f64, c2: f64, m: usize) -> std::sync::Arc<[f64]> {
    use std::sync::{Arc, Mutex, OnceLock};
    type Entry = ((u64, u64, usize), Arc<[f64]>);
    static CACHE: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();
    let key = (c1.to_bits(), c2.to_bits(), m);
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    // A poisoned lock only means another thread panicked mid-push; the entries are still valid.
    let mut grids = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, g)) = grids.iter().find(|(k, _)| *k == key) {
        return g.clone();
    }
    let g: Arc<[f64]> = iddpm_u_grid(c1, c2, m).into();
    grids.push((key, g.clone()));
    g
}

/// One reverse step t → s (σ̃_s < σ̃_t) of a Gaussian chain x_t = α_t·x₀ + σ_t·ε, in process
/// coordinates (Ho et al. 2020, eqs. 6–7, for any α and σ): the transition is
/// x_t = (α_t/α_s)·x_s + √β·z with β = σ_t² − (α_t/α_s)²·σ_s² (for VP: β = 1 − ᾱ_t/ᾱ_s), and the
/// posterior is q(x_s | x_t, x₀) = N(coef_x0·x₀ + coef_xt·x_t, β̃·I) with β̃ = σ_s²·β/σ_t².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdpmStep {
    /// Variance β of the forward transition x_s → x_t.
    pub beta: f64,
    /// Posterior variance β̃ (0 when σ_s = 0).
    pub beta_tilde: f64,
    /// Posterior-mean weight on x₀: α_s·β/σ_t².
    pub coef_x0: f64,
    /// Posterior-mean weight on x_t: (α_t/α_s)·σ_s²/σ_t².
    pub coef_xt: f64,
}

impl DdpmStep {
    /// The step from (α_t, σ_t) to (α_s, σ_s); needs σ_t > 0.
    pub fn new(alpha_t: f64, sigma_t: f64, alpha_s: f64, sigma_s: f64) -> Self {
        let q = alpha_t / alpha_s;
        let beta = (sigma_t * sigma_t - q * q * sigma_s * sigma_s).max(0.0);
        let s2 = sigma_t * sigma_t;
        DdpmStep {
            beta,
            beta_tilde: sigma_s * sigma_s * beta / s2,
            coef_x0: alpha_s * beta / s2,
            coef_xt: q * sigma_s * sigma_s / s2,
        }
    }

    /// The step between EDM noise levels σ̃_t > σ̃_s ≥ 0 in VP coordinates x = √ᾱ·x̃,
    /// ᾱ = 1/(1 + σ̃²): the chain of the iDDPM u-grid.
    pub fn vp(sigma_tilde_t: f64, sigma_tilde_s: f64) -> Self {
        let (a_t, a_s) = (Self::vp_alpha(sigma_tilde_t), Self::vp_alpha(sigma_tilde_s));
        Self::new(a_t, sigma_tilde_t * a_t, a_s, sigma_tilde_s * a_s)
    }

    /// α = √ᾱ = 1/√(1 + σ̃²) of a VP process at EDM noise level σ̃ (x = α·x̃).
    pub fn vp_alpha(sigma_tilde: f64) -> f64 {
        1.0 / (1.0 + sigma_tilde * sigma_tilde).sqrt()
    }

    /// The learned log-variance of Nichol & Dhariwal 2021 (eq. 15), log σ² = v·log β +
    /// (1 − v)·log β̃, as the line a + b·v: returns (a, b) = (log β̃, log β − log β̃), with
    /// `log_beta_tilde` passed in so callers can use a clipped β̃ ([`iddpm_clipped_log_beta_tilde`]).
    pub fn learned_log_variance(&self, log_beta_tilde: f64) -> (f64, f64) {
        (log_beta_tilde, self.beta.ln() - log_beta_tilde)
    }
}

/// The M reverse steps u_j → u_{j+1} (j = 0..M−1) of an iDDPM u-grid u_0 > … > u_M = 0.
pub fn iddpm_steps(u: &[f64]) -> Vec<DdpmStep> {
    u.windows(2).map(|w| DdpmStep::vp(w[0], w[1])).collect()
}

/// log β̃_j of [`iddpm_steps`] with the last step's β̃ = 0 (u_M = 0, the posterior is a point)
/// replaced by the previous step's β̃_{M−2}, as the reference clips it
/// (`posterior_log_variance_clipped` of openai/improved-diffusion), so that the learned
/// log-variance stays finite on the last step. A single step falls back to its β.
pub fn iddpm_clipped_log_beta_tilde(steps: &[DdpmStep]) -> Vec<f64> {
    let n = steps.len();
    (0..n)
        .map(|j| {
            let s = &steps[j];
            if s.beta_tilde > 0.0 {
                s.beta_tilde.ln()
            } else if j > 0 && steps[j - 1].beta_tilde > 0.0 {
                steps[j - 1].beta_tilde.ln()
            } else {
                s.beta.ln()
            }
        })
        .collect()
}
