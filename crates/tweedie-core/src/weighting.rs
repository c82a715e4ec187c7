//! Noise-level densities p(σ̃) and loss weights λ(σ̃) for training.
//!
//! Densities turn one draw the caller makes (uniform in [0, 1) or standard normal, see
//! [`NoiseDensity::draw`]) into a noise level, so trainers keep their own seeded RNG.
//! Loss weights are stated for the denoiser loss λ(σ̃)·‖D(x̃; σ̃) − x₀‖² (networks are
//! denoisers: docs/architecture.md); [`LossWeight::weight_for`] re-expresses them for any other parametrization.

use crate::defaults::de as d;
use crate::error::Invalid;
use crate::error::{check_lt, check_pos, CoreError, Result};
use crate::param::Param;
use crate::process::{iddpm_u_grid_shared, Process};

/// Which draw a density consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// u ~ U[0, 1).
    Uniform,
    /// z ~ N(0, 1).
    Normal,
}

/// A sampled noise level: time and EDM noise level σ̃ = σ/α.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// Time of the process.
    pub t: f64,
    /// EDM noise level σ̃(t).
    pub sigma_tilde: f64,
}

/// Training densities of the noise level.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NoiseDensity {
    /// log σ̃ ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1: −1.2, 1.2).
    EdmLogNormal {
        #[serde(default = "d::edm_p_mean")]
        p_mean: f64,
        #[serde(default = "d::edm_p_std")]
        p_std: f64,
    },
    /// t ~ U(ε_t, 1) (Song et al. 2021 VP; Karras et al. 2022, Table 1).
    VpUniform {
        #[serde(default = "d::vp_eps_t")]
        eps_t: f64,
    },
    /// log σ̃ ~ U(log σ_min, log σ_max) (Song et al. 2021 VE; Karras et al. 2022, Table 1).
    VeLogUniform {
        #[serde(default = "d::ve_sigma_min")]
        sigma_min: f64,
        #[serde(default = "d::ve_sigma_max")]
        sigma_max: f64,
    },
    /// DDPM: table index j ~ U{0, …, N−1}, t = (j+1)/N (Ho et al. 2020).
    Discrete {
        #[serde(default = "d::ddpm_steps")]
        num_steps: usize,
    },
    /// iDDPM: j ~ U{0, …, M−1}, σ̃ = u_j (Nichol & Dhariwal 2021 via Karras et al. 2022).
    IddpmIndex {
        #[serde(default = "d::iddpm_c1")]
        c1: f64,
        #[serde(default = "d::iddpm_c2")]
        c2: f64,
        #[serde(default = "d::iddpm_m")]
        m: usize,
    },
    /// Rectified flow: t ~ U[0, 1) (Liu et al. 2022).
    FlowUniform,
    /// Rectified flow: t = sigmoid(m + s·z) (Esser et al. 2024, SD3, eq. 19).
    FlowLogitNormal {
        #[serde(default)]
        mean: f64,
        #[serde(default = "d::logit_normal_std")]
        std: f64,
    },
}

impl NoiseDensity {
    /// EDM log-normal with P_mean = −1.2, P_std = 1.2.
    pub fn edm() -> Self {
        NoiseDensity::EdmLogNormal {
            p_mean: d::edm_p_mean(),
            p_std: d::edm_p_std(),
        }
    }

    /// The draw this density consumes.
    pub fn draw(&self) -> Draw {
        match self {
            NoiseDensity::EdmLogNormal { .. } | NoiseDensity::FlowLogitNormal { .. } => {
                Draw::Normal
            }
            _ => Draw::Uniform,
        }
    }

    /// Checks the parameters; errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        match self {
            NoiseDensity::EdmLogNormal { p_mean, p_std } => {
                if !p_mean.is_finite() {
                    return Err(CoreError::invalid("p_mean", p_mean, "must be finite"));
                }
                check_pos("p_std", *p_std)
            }
            NoiseDensity::VpUniform { eps_t } => {
                check_pos("eps_t", *eps_t)?;
                check_lt("eps_t", *eps_t, "t_max", 1.0)
            }
            NoiseDensity::VeLogUniform {
                sigma_min,
                sigma_max,
            } => {
                check_pos("sigma_min", *sigma_min)?;
                check_lt("sigma_min", *sigma_min, "sigma_max", *sigma_max)
            }
            NoiseDensity::Discrete { num_steps } => {
                if *num_steps < 1 {
                    return Err(CoreError::invalid("num_steps", num_steps, "must be >= 1"));
                }
                Ok(())
            }
            NoiseDensity::IddpmIndex { c1, c2, m } => {
                crate::process::check_iddpm_grid(*c1, *c2, *m)
            }
            NoiseDensity::FlowUniform => Ok(()),
            NoiseDensity::FlowLogitNormal { mean, std } => {
                if !mean.is_finite() {
                    return Err(CoreError::invalid("mean", mean, "must be finite"));
                }
                check_pos("std", *std)
            }
        }
    }

    /// Maps one draw (of kind [`NoiseDensity::draw`]) to a noise level under `process`.
    /// Uniform draws are clamped into [0, 1).
    pub fn sample(&self, process: &dyn Process, draw: f64) -> NoiseLevel {
        let u = draw.clamp(0.0, 1.0 - f64::EPSILON);
        let from_sigma = |s: f64| NoiseLevel {
            t: process.t_of_sigma_tilde(s),
            sigma_tilde: s,
        };
        let from_t = |t: f64| NoiseLevel {
            t,
            sigma_tilde: process.sigma_tilde(t),
        };
        match self {
            NoiseDensity::EdmLogNormal { p_mean, p_std } => {
                from_sigma((p_mean + p_std * draw).exp())
            }
            NoiseDensity::VpUniform { eps_t } => from_t(1.0 + u * (eps_t - 1.0)),
            NoiseDensity::VeLogUniform {
                sigma_min,
                sigma_max,
            } => from_sigma(sigma_min * (sigma_max / sigma_min).powf(u)),
            NoiseDensity::Discrete { num_steps } => {
                let j = (u * *num_steps as f64).floor();
                from_t((j + 1.0) / *num_steps as f64)
            }
            NoiseDensity::IddpmIndex { c1, c2, m } => {
                let j = ((u * *m as f64).floor() as usize).min(m - 1);
                from_sigma(iddpm_u_grid_shared(*c1, *c2, *m)[j])
            }
            NoiseDensity::FlowUniform => from_t(u),
            NoiseDensity::FlowLogitNormal { mean, std } => {
                from_t(1.0 / (1.0 + (-(mean + std * draw)).exp()))
            }
        }
    }
}

/// Loss weights λ(σ̃) of the denoiser loss λ·‖D − x₀‖², SNR = 1/σ̃² = α²/σ².
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossWeight {
    /// λ = (σ̃² + σ_d²)/(σ̃·σ_d)² = 1/c_out² (Karras et al. 2022, Table 1).
    Edm {
        #[serde(default = "d::sigma_data")]
        sigma_data: f64,
    },
    /// λ = 1/σ̃²: the ε-prediction MSE (Ho et al. 2020; VP/VE rows of Karras et al. 2022, Table 1).
    InvSigma2,
    /// λ = 1: plain x₀ MSE.
    Unit,
    /// λ = min(SNR, γ) (Hang et al. 2023, min-SNR-γ; ε-loss weight min(SNR, γ)/SNR).
    MinSnr {
        #[serde(default = "d::min_snr_gamma")]
        gamma: f64,
    },
    /// λ = 1/(σ̃² + 1/γ) = γ·SNR/(γ + SNR), a smooth min(SNR, γ) (Crowson et al. 2024, HDiT,
    /// "soft-min-snr" with σ_d² = 1/γ).
    SoftMinSnr {
        #[serde(default = "d::min_snr_gamma")]
        gamma: f64,
    },
}

impl LossWeight {
    /// Checks the parameters; errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        match self {
            LossWeight::Edm { sigma_data } => check_pos("sigma_data", *sigma_data),
            LossWeight::MinSnr { gamma } | LossWeight::SoftMinSnr { gamma } => {
                check_pos("gamma", *gamma)
            }
            LossWeight::InvSigma2 | LossWeight::Unit => Ok(()),
        }
    }

    /// λ(σ̃) for the denoiser (x₀) loss.
    pub fn weight(&self, sigma_tilde: f64) -> f64 {
        let s2 = sigma_tilde * sigma_tilde;
        match self {
            LossWeight::Edm { sigma_data } => {
                (s2 + sigma_data * sigma_data) / (s2 * sigma_data * sigma_data)
            }
            LossWeight::InvSigma2 => 1.0 / s2,
            LossWeight::Unit => 1.0,
            LossWeight::MinSnr { gamma } => (1.0 / s2).min(*gamma),
            LossWeight::SoftMinSnr { gamma } => 1.0 / (s2 + 1.0 / gamma),
        }
    }

    /// The same weight for a loss on another parametrization P: since P = c_x·x_t + c_0·x₀,
    /// ‖ΔP‖² = c_0²‖Δx₀‖², so λ_P = λ/c_0²(t) (e.g. λ_ε = λ·σ̃²).
    pub fn weight_for(&self, param: Param, process: &dyn Process, t: f64) -> f64 {
        let c0 = param.coeffs(process, t).1;
        self.weight(process.sigma_tilde(t)) / (c0 * c0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precond::Precond;
    use crate::process::{iddpm_u_grid, ProcessKind};
    use approx::assert_relative_eq;

    #[test]
    fn densities_map_draws_exactly() {
        let edm = ProcessKind::edm().build();
        let vp = ProcessKind::vp().build();
        let n = NoiseDensity::edm().sample(edm.as_ref(), 0.5);
        assert_relative_eq!(n.sigma_tilde, (-0.6_f64).exp(), epsilon = 1e-15);
        assert_relative_eq!(n.t, n.sigma_tilde, epsilon = 1e-15);
        let n = NoiseDensity::edm().sample(vp.as_ref(), 0.5);
        assert_relative_eq!(vp.sigma_tilde(n.t), (-0.6_f64).exp(), max_relative = 1e-12);
        let v = NoiseDensity::VpUniform { eps_t: 1e-5 };
        assert_eq!(v.sample(vp.as_ref(), 0.0).t, 1.0);
        assert_relative_eq!(
            v.sample(vp.as_ref(), 0.5).t,
            0.5 * (1.0 + 1e-5),
            epsilon = 1e-15
        );
        let ve = NoiseDensity::VeLogUniform {
            sigma_min: 0.02,
            sigma_max: 100.0,
        };
        assert_relative_eq!(
            ve.sample(edm.as_ref(), 0.0).sigma_tilde,
            0.02,
            epsilon = 1e-15
        );
        assert_relative_eq!(
            ve.sample(edm.as_ref(), 0.5).sigma_tilde,
            (0.02_f64 * 100.0).sqrt(),
            max_relative = 1e-12
        );
        let ddpm = ProcessKind::ddpm_linear().build();
        let dn = NoiseDensity::Discrete { num_steps: 1000 }.sample(ddpm.as_ref(), 0.9995);
        assert_relative_eq!(dn.t, 1.0, epsilon = 1e-15);
        let fl = ProcessKind::flow().build();
        let ln = NoiseDensity::FlowLogitNormal {
            mean: 0.0,
            std: 1.0,
        };
        assert_eq!(ln.draw(), Draw::Normal);
        assert_relative_eq!(ln.sample(fl.as_ref(), 0.0).t, 0.5, epsilon = 1e-15);
        assert_relative_eq!(
            ln.sample(fl.as_ref(), 1.0).t,
            1.0 / (1.0 + (-1.0_f64).exp()),
            epsilon = 1e-15
        );
        let u = iddpm_u_grid(0.001, 0.008, 1000);
        let id = NoiseDensity::IddpmIndex {
            c1: 0.001,
            c2: 0.008,
            m: 1000,
        };
        assert_eq!(id.sample(edm.as_ref(), 0.0).sigma_tilde, u[0]);
        assert_eq!(id.sample(edm.as_ref(), 0.9999).sigma_tilde, u[999]);
        // The shared grid is the same values, computed once.
        let shared = iddpm_u_grid_shared(0.001, 0.008, 1000);
        assert_eq!(&shared[..], &u[..]);
        assert!(std::sync::Arc::ptr_eq(
            &shared,
            &iddpm_u_grid_shared(0.001, 0.008, 1000)
        ));
    }

    #[test]
    fn edm_weight_is_inverse_c_out_squared() {
        let w = LossWeight::Edm { sigma_data: 0.5 };
        for s in [0.01, 0.3, 2.0, 50.0] {
            let c = Precond::edm().coeffs(s);
            assert_relative_eq!(w.weight(s) * c.c_out * c.c_out, 1.0, max_relative = 1e-12);
        }
    }

    #[test]
    fn snr_weights() {
        let edm = ProcessKind::edm().build();
        let m = LossWeight::MinSnr { gamma: 5.0 };
        // ε-space: min(SNR, γ)/SNR — 1 at low SNR, γ/SNR at high SNR (Hang et al. 2023).
        assert_relative_eq!(
            m.weight_for(Param::Eps, edm.as_ref(), 2.0),
            1.0,
            epsilon = 1e-12
        );
        assert_relative_eq!(
            m.weight_for(Param::Eps, edm.as_ref(), 0.1),
            5.0 / 100.0,
            epsilon = 1e-12
        );
        let s = LossWeight::SoftMinSnr { gamma: 4.0 };
        assert_relative_eq!(s.weight(1e-6), 4.0, max_relative = 1e-9);
        assert_relative_eq!(s.weight(1e3) * 1e6, 1.0, max_relative = 1e-6);
        assert!(s.weight(0.5) < m.weight(0.5).min(4.0));
        assert_relative_eq!(
            LossWeight::InvSigma2.weight_for(Param::Eps, edm.as_ref(), 0.7),
            1.0,
            epsilon = 1e-12
        );
        let vp = ProcessKind::vp().build();
        // v-space: c_0 = −(α²+σ²)/σ = −1/σ for VP, so λ_v = λ·σ².
        let t = 0.4;
        assert_relative_eq!(
            LossWeight::Unit.weight_for(Param::V, vp.as_ref(), t),
            vp.sigma(t).powi(2),
            max_relative = 1e-12
        );
    }

    #[test]
    fn validation() {
        let e = NoiseDensity::EdmLogNormal {
            p_mean: -1.2,
            p_std: 0.0,
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("p_std") && e.contains('0'), "{e}");
        let e = LossWeight::MinSnr { gamma: -1.0 }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("gamma") && e.contains("-1"), "{e}");
    }
}
