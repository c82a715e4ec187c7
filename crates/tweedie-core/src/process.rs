//! Noise processes x_t = α(t)·x₀ + σ(t)·ε.
//!
//! [`ProcessKind`] is the serde-facing description; [`ProcessKind::build`] turns it into a
//! `Box<dyn Process>` (the discrete DDPM tables are computed once there, which is why the enum
//! does not implement [`Process`] itself).

use crate::error::Invalid;
use crate::error::{check_lt, check_nonneg, check_pos, CoreError, Result};
use std::f64::consts::FRAC_PI_2;

/// A forward noising process with its coefficients and their time derivatives.
pub trait Process: Send + Sync + std::fmt::Debug {
    /// α(t).
    fn alpha(&self, t: f64) -> f64;
    /// σ(t).
    fn sigma(&self, t: f64) -> f64;
    /// dα/dt.
    fn alpha_dot(&self, t: f64) -> f64;
    /// dσ/dt.
    fn sigma_dot(&self, t: f64) -> f64;
    /// Inverse of σ̃(t) = σ(t)/α(t): the time at which the EDM noise level is `sigma_tilde`.
    fn t_of_sigma_tilde(&self, sigma_tilde: f64) -> f64;
    /// Time domain (t_min, t_max); sampling runs from t_max down to t_min (or 0).
    fn t_range(&self) -> (f64, f64);
    /// EDM noise level σ̃(t) = σ(t)/α(t).
    fn sigma_tilde(&self, t: f64) -> f64 {
        self.sigma(t) / self.alpha(t)
    }
    /// Half log-SNR λ(t) = log(α(t)/σ(t)) = −log σ̃(t).
    fn lambda(&self, t: f64) -> f64 {
        (self.alpha(t) / self.sigma(t)).ln()
    }
    /// Drift coefficient of the forward SDE dx = f(t)·x dt + g(t) dW: f(t) = α′/α
    /// (Song et al. 2021; Karras et al. 2022 eq. 4 with s = α).
    fn sde_drift(&self, t: f64) -> f64 {
        self.alpha_dot(t) / self.alpha(t)
    }
    /// Squared diffusion of the forward SDE: g²(t) = 2σσ′ − 2(α′/α)σ² (= d σ²/dt − 2fσ²).
    fn sde_diffusion_sq(&self, t: f64) -> f64 {
        let s = self.sigma(t);
        2.0 * s * self.sigma_dot(t) - 2.0 * self.sde_drift(t) * s * s
    }
    /// (f(t), g²(t)): reverse SDE dx = [f·x − g²·∇log p_t] dt + g dW̄, probability-flow ODE
    /// dx/dt = f·x − ½g²·∇log p_t (Song et al. 2021, eqs. 6 and 13).
    fn sde_coeffs(&self, t: f64) -> (f64, f64) {
        (self.sde_drift(t), self.sde_diffusion_sq(t))
    }
    /// Size N of the training table when the process is a discrete DDPM table (t = (j+1)/N
    /// ↔ table index j), `None` for continuous processes.
    fn table_len(&self) -> Option<usize> {
        None
    }
}

/// Last time of the continuous VP-cosine process: α(1) = 0 exactly, so we stop at
/// 1 − 1e-4 (σ̃ ≈ 6.4e3), in the spirit of iDDPM's clipping β ≤ 0.999.
pub const VP_COSINE_T_MAX: f64 = 1.0 - 1e-4;

/// Every built-in process, as a serde-friendly enum (TOML: `type = "vp" | ...`).
///
/// Missing fields take the published defaults of the constructors below.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessKind {
    /// VP with linear β (Song et al. 2021; EDM defaults β_min = 0.1, β_d = 19.9, ε_t = 1e-5).
    Vp {
        #[serde(default = "d::beta_min")]
        beta_min: f64,
        #[serde(default = "d::beta_d")]
        beta_d: f64,
        #[serde(default = "d::eps_t")]
        eps_t: f64,
    },
    /// VP cosine (Nichol & Dhariwal 2021, continuous ᾱ(t), s = 0.008).
    VpCosine {
        #[serde(default = "d::cos_s")]
        s: f64,
    },
    /// VE: α = 1, σ(t) = √t (Song et al. 2021 as written in Karras et al. 2022).
    Ve {
        #[serde(default = "d::ve_sigma_min")]
        sigma_min: f64,
        #[serde(default = "d::ve_sigma_max")]
        sigma_max: f64,
    },
    /// EDM: α = 1, σ = t (Karras et al. 2022).
    Edm {
        #[serde(default = "d::edm_sigma_min")]
        sigma_min: f64,
        #[serde(default = "d::edm_sigma_max")]
        sigma_max: f64,
    },
    /// Rectified flow: α = 1 − t, σ = t (Liu et al. 2022, Lipman et al. 2022).
    Flow {
        #[serde(default)]
        t_min: f64,
        #[serde(default = "d::one")]
        t_max: f64,
    },
    /// Discrete DDPM β table (Ho et al. 2020) of `num_steps` entries; table index j sits at
    /// t = (j+1)/N and log ᾱ is linear in t between entries (see [`DiscreteDdpm`]).
    Ddpm {
        #[serde(default)]
        schedule: BetaSchedule,
        #[serde(default = "d::ddpm_n")]
        num_steps: usize,
    },
}

/// β tables of discrete DDPM models.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BetaSchedule {
    /// β_j = linspace(β_start, β_end, N) (Ho et al. 2020: 1e-4 … 0.02).
    Linear {
        #[serde(default = "d::lin_start")]
        beta_start: f64,
        #[serde(default = "d::lin_end")]
        beta_end: f64,
    },
    /// β_j = linspace(√β_start, √β_end, N)² (Stable Diffusion / LDM: 0.00085 … 0.012).
    ScaledLinear {
        #[serde(default = "d::sl_start")]
        beta_start: f64,
        #[serde(default = "d::sl_end")]
        beta_end: f64,
    },
    /// β_j = min(1 − ᾱ(j+1)/ᾱ(j), max_beta), ᾱ(j) = cos²((j/N + s)/(1 + s)·π/2)
    /// (Nichol & Dhariwal 2021, eq. 17; s = 0.008, max_beta = 0.999).
    Cosine {
        #[serde(default = "d::cos_s")]
        s: f64,
        #[serde(default = "d::max_beta")]
        max_beta: f64,
    },
}

impl Default for BetaSchedule {
    fn default() -> Self {
        BetaSchedule::Linear {
            beta_start: d::lin_start(),
            beta_end: d::lin_end(),
        }
    }
}

/// Published defaults (serde default functions).
mod d {
    pub fn beta_min() -> f64 {
        0.1
    }
    pub fn beta_d() -> f64 {
        19.9
    }
    pub fn eps_t() -> f64 {
        1e-5
    }
    pub fn cos_s() -> f64 {
        0.008
    }
    pub fn ve_sigma_min() -> f64 {
        0.02
    }
    pub fn ve_sigma_max() -> f64 {
        100.0
    }
    pub fn edm_sigma_min() -> f64 {
        0.002
    }
    pub fn edm_sigma_max() -> f64 {
        80.0
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn ddpm_n() -> usize {
        1000
    }
    pub fn lin_start() -> f64 {
        1e-4
    }
    pub fn lin_end() -> f64 {
        0.02
    }
    pub fn sl_start() -> f64 {
        0.00085
    }
    pub fn sl_end() -> f64 {
        0.012
    }
    pub fn max_beta() -> f64 {
        0.999
    }
}

impl ProcessKind {
    /// VP linear β with the EDM defaults β_min = 0.1, β_d = 19.9, ε_t = 1e-5.
    pub fn vp() -> Self {
        ProcessKind::Vp {
            beta_min: d::beta_min(),
            beta_d: d::beta_d(),
            eps_t: d::eps_t(),
        }
    }
    /// VP cosine with s = 0.008 (Nichol & Dhariwal 2021).
    pub fn vp_cosine() -> Self {
        ProcessKind::VpCosine { s: d::cos_s() }
    }
    /// VE with σ_min = 0.02, σ_max = 100 (Song et al. 2021).
    pub fn ve() -> Self {
        ProcessKind::Ve {
            sigma_min: d::ve_sigma_min(),
            sigma_max: d::ve_sigma_max(),
        }
    }
    /// EDM with σ_min = 0.002, σ_max = 80 (Karras et al. 2022).
    pub fn edm() -> Self {
        ProcessKind::Edm {
            sigma_min: d::edm_sigma_min(),
            sigma_max: d::edm_sigma_max(),
        }
    }
    /// Rectified flow on t ∈ [0, 1].
    pub fn flow() -> Self {
        ProcessKind::Flow {
            t_min: 0.0,
            t_max: 1.0,
        }
    }
    /// DDPM linear β table, 1e-4 … 0.02, N = 1000 (Ho et al. 2020).
    pub fn ddpm_linear() -> Self {
        ProcessKind::Ddpm {
            schedule: BetaSchedule::default(),
            num_steps: d::ddpm_n(),
        }
    }
    /// DDPM scaled-linear β table, 0.00085 … 0.012, N = 1000 (Rombach et al. 2022).
    pub fn ddpm_scaled_linear() -> Self {
        ProcessKind::Ddpm {
            schedule: BetaSchedule::ScaledLinear {
                beta_start: d::sl_start(),
                beta_end: d::sl_end(),
            },
            num_steps: d::ddpm_n(),
        }
    }
    /// DDPM cosine β table, s = 0.008, β ≤ 0.999, N = 1000 (Nichol & Dhariwal 2021).
    pub fn ddpm_cosine() -> Self {
        ProcessKind::Ddpm {
            schedule: BetaSchedule::Cosine {
                s: d::cos_s(),
                max_beta: d::max_beta(),
            },
            num_steps: d::ddpm_n(),
        }
    }

    /// Checks every parameter; errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        match self {
            ProcessKind::Vp {
                beta_min,
                beta_d,
                eps_t,
            } => {
                check_nonneg("beta_min", *beta_min)?;
                check_pos("beta_d", *beta_d)?;
                check_pos("eps_t", *eps_t)?;
                check_lt("eps_t", *eps_t, "t_max", 1.0)
            }
            ProcessKind::VpCosine { s } => check_pos("s", *s),
            ProcessKind::Ve {
                sigma_min,
                sigma_max,
            }
            | ProcessKind::Edm {
                sigma_min,
                sigma_max,
            } => {
                check_pos("sigma_min", *sigma_min)?;
                check_pos("sigma_max", *sigma_max)?;
                check_lt("sigma_min", *sigma_min, "sigma_max", *sigma_max)
            }
            ProcessKind::Flow { t_min, t_max } => {
                check_nonneg("t_min", *t_min)?;
                if !(t_max.is_finite() && *t_max <= 1.0) {
                    return Err(CoreError::invalid("t_max", t_max, "must be <= 1"));
                }
                check_lt("t_min", *t_min, "t_max", *t_max)
            }
            ProcessKind::Ddpm {
                schedule,
                num_steps,
            } => {
                if *num_steps < 2 {
                    return Err(CoreError::invalid("num_steps", num_steps, "must be >= 2"));
                }
                match schedule {
                    BetaSchedule::Linear {
                        beta_start,
                        beta_end,
                    }
                    | BetaSchedule::ScaledLinear {
                        beta_start,
                        beta_end,
                    } => {
                        check_pos("beta_start", *beta_start)?;
                        check_lt("beta_start", *beta_start, "beta_end", *beta_end)?;
                        if *beta_end >= 1.0 {
                            return Err(CoreError::invalid("beta_end", beta_end, "must be < 1"));
                        }
                        Ok(())
                    }
                    BetaSchedule::Cosine { s, max_beta } => {
                        check_pos("s", *s)?;
                        check_pos("max_beta", *max_beta)?;
                        if *max_beta >= 1.0 {
                            return Err(CoreError::invalid("max_beta", max_beta, "must be < 1"));
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// Builds the process, validating first.
    pub fn try_build(&self) -> Result<Box<dyn Process>> {
        self.validate()?;
        Ok(self.build())
    }

    /// Builds the process without validation (configs loaded through [`crate::config`] are
    /// already validated; use [`ProcessKind::try_build`] otherwise).
    pub fn build(&self) -> Box<dyn Process> {
        match self {
            ProcessKind::Vp {
                beta_min,
                beta_d,
                eps_t,
            } => Box::new(VpLinear {
                beta_min: *beta_min,
                beta_d: *beta_d,
                eps_t: *eps_t,
            }),
            ProcessKind::VpCosine { s } => Box::new(VpCosine { s: *s }),
            ProcessKind::Ve {
                sigma_min,
                sigma_max,
            } => Box::new(Ve {
                sigma_min: *sigma_min,
                sigma_max: *sigma_max,
            }),
            ProcessKind::Edm {
                sigma_min,
                sigma_max,
            } => Box::new(Edm {
                sigma_min: *sigma_min,
                sigma_max: *sigma_max,
            }),
            ProcessKind::Flow { t_min, t_max } => Box::new(Flow {
                t_min: *t_min,
                t_max: *t_max,
            }),
            ProcessKind::Ddpm {
                schedule,
                num_steps,
            } => Box::new(DiscreteDdpm::new(schedule, *num_steps)),
        }
    }
}

/// VP with linear β: σ̃(t) = √(exp(½β_d t² + β_min t) − 1), α = 1/√(1+σ̃²), σ = √(1−α²)
/// (Song et al. 2021; Karras et al. 2022, Table 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpLinear {
    /// β_min.
    pub beta_min: f64,
    /// β_d = β_max − β_min.
    pub beta_d: f64,
    /// Smallest training/sampling time ε_t.
    pub eps_t: f64,
}

impl VpLinear {
    /// Exponent ½β_d t² + β_min t = −2 log α(t).
    fn expo(&self, t: f64) -> f64 {
        0.5 * self.beta_d * t * t + self.beta_min * t
    }
}

impl Process for VpLinear {
    fn alpha(&self, t: f64) -> f64 {
        (-0.5 * self.expo(t)).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        // 1 − α² = −expm1(−E): accurate at small t.
        (-(-self.expo(t)).exp_m1()).sqrt()
    }
    fn alpha_dot(&self, t: f64) -> f64 {
        -0.5 * (self.beta_d * t + self.beta_min) * self.alpha(t)
    }
    fn sigma_dot(&self, t: f64) -> f64 {
        let a = self.alpha(t);
        -a * self.alpha_dot(t) / self.sigma(t)
    }
    fn sigma_tilde(&self, t: f64) -> f64 {
        self.expo(t).exp_m1().sqrt()
    }
    fn t_of_sigma_tilde(&self, sigma_tilde: f64) -> f64 {
        let l = (sigma_tilde * sigma_tilde).ln_1p();
        ((self.beta_min * self.beta_min + 2.0 * self.beta_d * l).sqrt() - self.beta_min)
            / self.beta_d
    }
    fn t_range(&self) -> (f64, f64) {
        (self.eps_t, 1.0)
    }
}

/// Continuous VP cosine: α(t) = cos(θ(t))/cos(θ(0)), θ(t) = (t+s)/(1+s)·π/2, σ = √(1−α²)
/// (Nichol & Dhariwal 2021, eq. 17, ᾱ = α²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpCosine {
    /// Offset s of the cosine schedule.
    pub s: f64,
}

impl VpCosine {
    fn theta(&self, t: f64) -> f64 {
        (t + self.s) / (1.0 + self.s) * FRAC_PI_2
    }
}

impl Process for VpCosine {
    fn alpha(&self, t: f64) -> f64 {
        self.theta(t).cos() / self.theta(0.0).cos()
    }
    fn sigma(&self, t: f64) -> f64 {
        let a = self.alpha(t);
        ((1.0 - a) * (1.0 + a)).max(0.0).sqrt()
    }
    fn alpha_dot(&self, t: f64) -> f64 {
        -self.theta(t).sin() * FRAC_PI_2 / (1.0 + self.s) / self.theta(0.0).cos()
    }
    fn sigma_dot(&self, t: f64) -> f64 {
        -self.alpha(t) * self.alpha_dot(t) / self.sigma(t)
    }
    fn t_of_sigma_tilde(&self, sigma_tilde: f64) -> f64 {
        let a = 1.0 / (1.0 + sigma_tilde * sigma_tilde).sqrt();
        let theta = (a * self.theta(0.0).cos()).clamp(-1.0, 1.0).acos();
        theta / FRAC_PI_2 * (1.0 + self.s) - self.s
    }
    fn t_range(&self) -> (f64, f64) {
        (0.0, VP_COSINE_T_MAX)
    }
}

/// VE: α = 1, σ(t) = √t, t ∈ [σ_min², σ_max²] (Song et al. 2021; Karras et al. 2022, Table 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ve {
    /// Smallest noise level σ_min.
    pub sigma_min: f64,
    /// Largest noise level σ_max.
    pub sigma_max: f64,
}

impl Process for Ve {
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t.sqrt()
    }
    fn alpha_dot(&self, _t: f64) -> f64 {
        0.0
    }
    fn sigma_dot(&self, t: f64) -> f64 {
        0.5 / t.sqrt()
    }
    fn t_of_sigma_tilde(&self, sigma_tilde: f64) -> f64 {
        sigma_tilde * sigma_tilde
    }
    fn t_range(&self) -> (f64, f64) {
        (
            self.sigma_min * self.sigma_min,
            self.sigma_max * self.sigma_max,
        )
    }
}

/// EDM: α = 1, σ(t) = t, t ∈ [σ_min, σ_max] (Karras et al. 2022, Table 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edm {
    /// Smallest noise level σ_min.
    pub sigma_min: f64,
    /// Largest noise level σ_max.
    pub sigma_max: f64,
}

impl Process for Edm {
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn alpha_dot(&self, _t: f64) -> f64 {
        0.0
    }
    fn sigma_dot(&self, _t: f64) -> f64 {
        1.0
    }
    fn t_of_sigma_tilde(&self, sigma_tilde: f64) -> f64 {
        sigma_tilde
    }
    fn t_range(&self) -> (f64, f64) {
        (self.sigma_min, self.sigma_max)
    }
}

/// Rectified flow: α = 1 − t, σ = t, σ̃ = t/(1−t) (Liu et al. 2022; Lipman et al. 2022).
/// At t = 1, σ̃ = +∞ and the inverse maps +∞ back to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flow {
    /// Smallest time.
    pub t_min: f64,
    /// Largest time (≤ 1).
    pub t_max: f64,
}

impl Process for Flow {
    fn alpha(&self, t: f64) -> f64 {
        1.0 - t
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn alpha_dot(&self, _t: f64) -> f64 {
        -1.0
    }
    fn sigma_dot(&self, _t: f64) -> f64 {
        1.0
    }
    fn t_of_sigma_tilde(&self, sigma_tilde: f64) -> f64 {
        if sigma_tilde.is_infinite() {
            1.0
        } else {
            sigma_tilde / (1.0 + sigma_tilde)
        }
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_min, self.t_max)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn all() -> Vec<ProcessKind> {
        vec![
            ProcessKind::vp(),
            ProcessKind::vp_cosine(),
            ProcessKind::ve(),
            ProcessKind::edm(),
            ProcessKind::flow(),
            ProcessKind::ddpm_linear(),
            ProcessKind::ddpm_scaled_linear(),
            ProcessKind::ddpm_cosine(),
        ]
    }

    /// Interior test times inside each process's range, away from DDPM knots.
    fn times(p: &dyn Process) -> Vec<f64> {
        let (lo, hi) = p.t_range();
        let hi = hi.min(0.999);
        (1..10)
            .map(|i| lo + (hi - lo) * (i as f64 / 10.0 + 0.0337))
            .filter(|t| *t < hi)
            .collect()
    }

    #[test]
    fn vp_sigma_range_matches_edm_paper() {
        let p = ProcessKind::vp().build();
        assert_relative_eq!(p.sigma_tilde(1e-5), 0.0010, max_relative = 1e-3);
        assert_relative_eq!(p.sigma_tilde(1.0), 152.2, max_relative = 1e-3);
        assert_relative_eq!(p.t_of_sigma_tilde(152.2), 1.0, max_relative = 1e-4);
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for k in all() {
            let p = k.build();
            for t in times(p.as_ref()) {
                let h = 1e-6 * t.max(1e-3);
                let fa = (p.alpha(t + h) - p.alpha(t - h)) / (2.0 * h);
                let fs = (p.sigma(t + h) - p.sigma(t - h)) / (2.0 * h);
                assert!(
                    (p.alpha_dot(t) - fa).abs() <= 1e-6 * (1.0 + fa.abs()),
                    "{k:?} α′ at {t}: {} vs {fa}",
                    p.alpha_dot(t)
                );
                assert!(
                    (p.sigma_dot(t) - fs).abs() <= 1e-6 * (1.0 + fs.abs()),
                    "{k:?} σ′ at {t}: {} vs {fs}",
                    p.sigma_dot(t)
                );
            }
        }
    }

    #[test]
    fn inverse_sigma_tilde_round_trips() {
        for k in all() {
            let p = k.build();
            for t in times(p.as_ref()) {
                let st = p.sigma_tilde(t);
                assert_relative_eq!(p.t_of_sigma_tilde(st), t, max_relative = 1e-9);
                assert_relative_eq!(st, p.sigma(t) / p.alpha(t), max_relative = 1e-12);
                assert_relative_eq!(p.lambda(t), -st.ln(), max_relative = 1e-9, epsilon = 1e-12);
            }
            assert!(p.t_of_sigma_tilde(0.0).abs() < 1e-12, "{k:?}");
        }
    }

    #[test]
    fn variance_preserving_processes_have_unit_norm() {
        for k in [
            ProcessKind::vp(),
            ProcessKind::vp_cosine(),
            ProcessKind::ddpm_cosine(),
        ] {
            let p = k.build();
            for t in times(p.as_ref()) {
                assert_relative_eq!(
                    p.alpha(t).powi(2) + p.sigma(t).powi(2),
                    1.0,
                    epsilon = 1e-12
                );
            }
        }
    }

    #[test]
    fn sde_coefficients_reproduce_marginal_variance() {
        // For x₀ = 0, Var x_t = σ² must satisfy dσ²/dt = 2fσ² + g².
        for k in all() {
            let p = k.build();
            for t in times(p.as_ref()) {
                let (f, g2) = p.sde_coeffs(t);
                let h = 1e-6 * t.max(1e-3);
                let dv = (p.sigma(t + h).powi(2) - p.sigma(t - h).powi(2)) / (2.0 * h);
                assert!(
                    (dv - (2.0 * f * p.sigma(t).powi(2) + g2)).abs() < 1e-6 * (1.0 + dv.abs()),
                    "{k:?} t={t}"
                );
            }
        }
        let ve = ProcessKind::ve().build();
        assert_relative_eq!(ve.sde_diffusion_sq(3.0), 1.0, epsilon = 1e-12);
    }

    #[test]
    fn ddpm_table_matches_cumulative_product() {
        let p = DiscreteDdpm::new(&BetaSchedule::default(), 1000);
        let betas = beta_table(&BetaSchedule::default(), 1000);
        let mut prod = 1.0;
        for (j, b) in betas.iter().enumerate() {
            prod *= 1.0 - b;
            let t = p.t_of_timestep(j as f64);
            assert_relative_eq!(p.alpha(t).powi(2), prod, max_relative = 1e-10);
        }
        assert_relative_eq!(betas[999], 0.02, epsilon = 1e-15);
        // Ho et al. 2020: ᾱ_T ≈ 4.0358e-5 for the linear schedule.
        assert_relative_eq!(p.alphas_cumprod()[999], 4.0358e-5, max_relative = 1e-3);
        let sl = beta_table(
            &BetaSchedule::ScaledLinear {
                beta_start: 0.00085,
                beta_end: 0.012,
            },
            1000,
        );
        assert_relative_eq!(sl[0], 0.00085, epsilon = 1e-15);
        assert_relative_eq!(sl[999], 0.012, epsilon = 1e-15);
        let c = beta_table(
            &BetaSchedule::Cosine {
                s: 0.008,
                max_beta: 0.999,
            },
            1000,
        );
        assert_relative_eq!(c[999], 0.999, epsilon = 1e-15);
        assert_eq!(p.table_len(), Some(1000));
    }

    #[test]
    fn iddpm_grid_ends() {
        let u = iddpm_u_grid(0.001, 0.008, 1000);
        assert_eq!(u.len(), 1001);
        assert_eq!(u[1000], 0.0);
        assert_relative_eq!(u[0], 2.0e4, max_relative = 0.02);
        assert_relative_eq!(u[999], 0.0064, max_relative = 0.01);
        assert!(u.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn validation_names_key_and_value() {
        let e = ProcessKind::Ve {
            sigma_min: 5.0,
            sigma_max: 1.0,
        }
        .validate()
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("sigma_max") && msg.contains('1'), "{msg}");
        let e = ProcessKind::Vp {
            beta_min: 0.1,
            beta_d: -1.0,
            eps_t: 1e-5,
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("beta_d") && e.to_string().contains("-1"));
        for k in all() {
            k.validate().unwrap();
        }
    }

    #[test]
    fn serde_defaults() {
        let k: ProcessKind = toml::from_str("type = \"vp\"").unwrap();
        assert_eq!(k, ProcessKind::vp());
        let k: ProcessKind =
            toml::from_str("type = \"ddpm\"\nschedule = { type = \"cosine\" }").unwrap();
        assert_eq!(k, ProcessKind::ddpm_cosine());
        assert!(toml::from_str::<ProcessKind>("type = \"vp\"\nbeta = 1.0").is_err());
    }

    /// u = (2, 1, 0): ᾱ = 1/(1 + u²) = (0.2, 0.5, 1).
    #[test]
    fn ddpm_steps_of_a_three_entry_grid_match_hand_values() {
        let steps = iddpm_steps(&[2.0, 1.0, 0.0]);
        assert_eq!(steps.len(), 2);
        // Step 0: β = 1 − 0.2/0.5 = 0.6, β̃ = (0.5/0.8)·0.6 = 0.375,
        // coef_x0 = √0.5·0.6/0.8 = 0.75·√0.5, coef_xt = √0.4·0.5/0.8 = 0.625·√0.4.
        let s0 = steps[0];
        assert_relative_eq!(s0.beta, 0.6, epsilon = 1e-15);
        assert_relative_eq!(s0.beta_tilde, 0.375, epsilon = 1e-15);
        assert_relative_eq!(s0.coef_x0, 0.75 * 0.5f64.sqrt(), epsilon = 1e-15);
        assert_relative_eq!(s0.coef_xt, 0.625 * 0.4f64.sqrt(), epsilon = 1e-15);
        // Step 1 (to u = 0): β = 1 − 0.5 = 0.5, β̃ = 0, mean = x₀ (coef_x0 = 0.5/0.5 = 1, coef_xt = 0).
        let s1 = steps[1];
        assert_relative_eq!(s1.beta, 0.5, epsilon = 1e-15);
        assert_eq!(s1.beta_tilde, 0.0);
        assert_relative_eq!(s1.coef_x0, 1.0, epsilon = 1e-15);
        assert_eq!(s1.coef_xt, 0.0);
        let lv = iddpm_clipped_log_beta_tilde(&steps);
        assert_relative_eq!(lv[0], 0.375f64.ln(), epsilon = 1e-15);
        assert_relative_eq!(lv[1], 0.375f64.ln(), epsilon = 1e-15);
        // v = 1 gives log β, v = 0 gives log β̃; v = ½ the geometric mean.
        let (a, b) = s0.learned_log_variance(lv[0]);
        assert_relative_eq!(a + b, 0.6f64.ln(), epsilon = 1e-15);
        assert_relative_eq!(a + 0.5 * b, (0.6f64 * 0.375).sqrt().ln(), epsilon = 1e-15);
    }
}
