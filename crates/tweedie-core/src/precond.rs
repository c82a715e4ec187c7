//! Preconditioning of Karras et al. 2022, Table 1: D(x̃;σ̃) = c_skip·x̃ + c_out·F(c_in·x̃; c_noise).

use crate::defaults::de as d;
use crate::error::Invalid;
use crate::error::{check_lt, check_pos, CoreError, Result};
use crate::process::{iddpm_u_grid, Process, VpLinear};

/// Preconditioning coefficients at one noise level σ̃.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecondCoeffs {
    /// Skip weight on x̃.
    pub c_skip: f64,
    /// Output scale of F.
    pub c_out: f64,
    /// Input scale of x̃.
    pub c_in: f64,
    /// Noise conditioning fed to F.
    pub c_noise: f64,
}

/// The preconditioning families of Karras et al. 2022 (Table 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Precond {
    /// VP: c_skip = 1, c_out = −σ, c_in = 1/√(σ²+1), c_noise = (M−1)·t(σ).
    Vp {
        #[serde(default = "d::vp_beta_min")]
        beta_min: f64,
        #[serde(default = "d::vp_beta_d")]
        beta_d: f64,
        #[serde(default = "d::vp_m")]
        m: f64,
        #[serde(default = "d::vp_eps_t")]
        eps_t: f64,
    },
    /// VE: c_skip = 1, c_out = σ, c_in = 1, c_noise = log(σ/2).
    Ve,
    /// iDDPM: c_noise = M−1−argmin_j |u_j − σ|; σ rounded to the u-grid.
    Iddpm {
        #[serde(default = "d::iddpm_c1")]
        c1: f64,
        #[serde(default = "d::iddpm_c2")]
        c2: f64,
        #[serde(default = "d::iddpm_m")]
        m: usize,
    },
    /// EDM: c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = ¼·log σ.
    Edm {
        #[serde(default = "d::sigma_data")]
        sigma_data: f64,
    },
}

impl Precond {
    /// VP preconditioning with β_min = 0.1, β_d = 19.9, M = 1000, ε_t = 1e-5 (Karras et al. 2022).
    pub fn vp() -> Self {
        Precond::Vp {
            beta_min: d::vp_beta_min(),
            beta_d: d::vp_beta_d(),
            m: d::vp_m(),
            eps_t: d::vp_eps_t(),
        }
    }
    /// VE preconditioning (Song et al. 2021 as in Karras et al. 2022).
    pub fn ve() -> Self {
        Precond::Ve
    }
    /// iDDPM preconditioning with C₁ = 0.001, C₂ = 0.008, M = 1000.
    pub fn iddpm() -> Self {
        Precond::Iddpm {
            c1: d::iddpm_c1(),
            c2: d::iddpm_c2(),
            m: d::iddpm_m(),
        }
    }
    /// EDM preconditioning with σ_data = 0.5.
    pub fn edm() -> Self {
        Precond::Edm {
            sigma_data: d::sigma_data(),
        }
    }

    /// Checks every parameter; errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        match self {
            Precond::Vp {
                beta_min,
                beta_d,
                m,
                eps_t,
            } => {
                if !(beta_min.is_finite() && *beta_min >= 0.0) {
                    return Err(CoreError::invalid(
                        "beta_min",
                        beta_min,
                        "must be finite and >= 0",
                    ));
                }
                check_pos("beta_d", *beta_d)?;
                check_pos("m", *m)?;
                check_pos("eps_t", *eps_t)?;
                check_lt("eps_t", *eps_t, "t_max", 1.0)
            }
            Precond::Ve => Ok(()),
            Precond::Iddpm { c1, c2, m } => crate::process::check_iddpm_grid(*c1, *c2, *m),
            Precond::Edm { sigma_data } => check_pos("sigma_data", *sigma_data),
        }
    }

    /// The iDDPM grid u_0 > … > u_M = 0 when this is iDDPM preconditioning.
    pub fn u_grid(&self) -> Option<Vec<f64>> {
        match self {
            Precond::Iddpm { c1, c2, m } => Some(iddpm_u_grid(*c1, *c2, *m)),
            _ => None,
        }
    }

    /// Coefficients at noise level σ̃ (Karras et al. 2022, Table 1). iDDPM recomputes its
    /// u-grid; use [`Precond::coeffs_with_grid`] in hot loops.
    pub fn coeffs(&self, sigma: f64) -> PrecondCoeffs {
        match self.u_grid() {
            Some(u) => self.coeffs_with_grid(sigma, &u),
            None => self.coeffs_with_grid(sigma, &[]),
        }
    }

    /// As [`Precond::coeffs`], with a precomputed iDDPM u-grid (ignored by other families).
    pub fn coeffs_with_grid(&self, sigma: f64, u: &[f64]) -> PrecondCoeffs {
        match self {
            Precond::Vp {
                beta_min,
                beta_d,
                m,
                eps_t,
            } => {
                let vp = VpLinear {
                    beta_min: *beta_min,
                    beta_d: *beta_d,
                    eps_t: *eps_t,
                };
                PrecondCoeffs {
                    c_skip: 1.0,
                    c_out: -sigma,
                    c_in: 1.0 / (sigma * sigma + 1.0).sqrt(),
                    c_noise: (m - 1.0) * vp.t_of_sigma_tilde(sigma),
                }
            }
            Precond::Ve => PrecondCoeffs {
                c_skip: 1.0,
                c_out: sigma,
                c_in: 1.0,
                c_noise: (0.5 * sigma).ln(),
            },
            Precond::Iddpm { m, .. } => PrecondCoeffs {
                c_skip: 1.0,
                c_out: -sigma,
                c_in: 1.0 / (sigma * sigma + 1.0).sqrt(),
                c_noise: *m as f64 - 1.0 - nearest(u, sigma) as f64,
            },
            Precond::Edm { sigma_data } => {
                let sd2 = sigma_data * sigma_data;
                let r = (sigma * sigma + sd2).sqrt();
                PrecondCoeffs {
                    c_skip: sd2 / (sigma * sigma + sd2),
                    c_out: sigma * sigma_data / r,
                    c_in: 1.0 / r,
                    c_noise: 0.25 * sigma.ln(),
                }
            }
        }
    }

    /// Rounds σ̃ to the nearest u_j for iDDPM (the network only knows the grid); identity otherwise.
    pub fn round_sigma(&self, sigma: f64) -> f64 {
        match self.u_grid() {
            Some(u) => u[nearest(&u, sigma)],
            None => sigma,
        }
    }
}

/// Index of the grid entry nearest to `sigma` (first one on ties, like an argmin).
fn nearest(u: &[f64], sigma: f64) -> usize {
    let mut best = 0;
    for (j, v) in u.iter().enumerate() {
        if (v - sigma).abs() < (u[best] - sigma).abs() {
            best = j;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn edm_identities() {
        // Karras et al. 2022, App. B.6: unit input/target variance and c_skip minimising c_out.
        let sd = 0.5;
        let p = Precond::edm();
        for sigma in [0.002, 0.1, 0.5, 3.0, 80.0] {
            let c = p.coeffs(sigma);
            assert_relative_eq!(
                c.c_in * c.c_in * (sigma * sigma + sd * sd),
                1.0,
                epsilon = 1e-12
            );
            let target_var = (1.0 - c.c_skip).powi(2) * sd * sd + c.c_skip.powi(2) * sigma * sigma;
            assert_relative_eq!(c.c_out * c.c_out, target_var, max_relative = 1e-12);
            let var_at = |k: f64| (1.0 - k).powi(2) * sd * sd + k * k * sigma * sigma;
            assert!(
                var_at(c.c_skip) < var_at(c.c_skip + 1e-3)
                    && var_at(c.c_skip) < var_at(c.c_skip - 1e-3)
            );
            assert_relative_eq!(c.c_noise, 0.25 * sigma.ln(), epsilon = 1e-15);
        }
    }

    #[test]
    fn vp_ve_iddpm_are_eps_parametrised() {
        // D = x̃ − σ̃·F with F ≈ ε for VP/iDDPM; VE uses c_out = +σ.
        let vp = Precond::vp().coeffs(2.0);
        assert_eq!((vp.c_skip, vp.c_out), (1.0, -2.0));
        assert_relative_eq!(vp.c_in, 1.0 / 5.0_f64.sqrt(), epsilon = 1e-15);
        let t = VpLinear {
            beta_min: 0.1,
            beta_d: 19.9,
            eps_t: 1e-5,
        }
        .t_of_sigma_tilde(2.0);
        assert_relative_eq!(vp.c_noise, 999.0 * t, epsilon = 1e-12);
        let ve = Precond::ve().coeffs(4.0);
        assert_eq!((ve.c_skip, ve.c_out, ve.c_in), (1.0, 4.0, 1.0));
        assert_relative_eq!(ve.c_noise, 2.0_f64.ln(), epsilon = 1e-15);
    }

    #[test]
    fn iddpm_rounding_and_noise_index() {
        let p = Precond::iddpm();
        let u = p.u_grid().unwrap();
        assert_eq!(p.round_sigma(u[10] * 1.0001), u[10]);
        assert_eq!(p.coeffs(u[10]).c_noise, 989.0);
        assert_eq!(p.coeffs(u[999]).c_noise, 0.0);
        assert_eq!(p.coeffs(1e9).c_noise, 999.0);
        assert_eq!(Precond::edm().round_sigma(0.3), 0.3);
    }

    #[test]
    fn validation() {
        let e = Precond::Edm { sigma_data: 0.0 }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("sigma_data") && e.contains('0'), "{e}");
        let p: Precond = toml::from_str("type = \"edm\"").unwrap();
        assert_eq!(p, Precond::edm());
    }
}
