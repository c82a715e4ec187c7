//! Noise processes x_t = α(t)·x₀ + σ(t)·ε.
//!
//! [`ProcessKind`] is the serde-facing description; [`ProcessKind::build`] turns it into a
//! `Box<dyn Process>` (the discrete DDPM tables are computed once there, which is why the enum
//! does not implement [`Process`] itself).

use crate::error::Invalid;
use crate::error::{check_lt, check_nonneg, check_pos, check_sigma_range, CoreError, Result};
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

mod ddpm;
mod kind;

pub use ddpm::*;
pub use kind::*;

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

/// Every process at its published defaults: what the core's own tests run over.
#[cfg(test)]
pub(crate) fn all_defaults() -> Vec<ProcessKind> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

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
        for k in all_defaults() {
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
        for k in all_defaults() {
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
        for k in all_defaults() {
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
        for k in all_defaults() {
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
