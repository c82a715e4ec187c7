//! The common σ̃ grids as plain vectors for [`crate::sample`], k-diffusion style (`get_sigmas_*`):
//! N noise levels, decreasing, then 0. Each is a `tweedie_core` timer evaluated under the
//! process whose σ̃ it is defined by; no formula is re-derived here.

use tweedie_core::process::{Edm, VpLinear};
use tweedie_core::{Timer, TimerKind};

use crate::error::Result;

/// Karras et al. 2022 (EDM) ρ-schedule: σ̃_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,
/// then 0 (`TimerKind::Edm`; k-diffusion `get_sigmas_karras`).
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Result<Vec<f64>> {
    let timer = TimerKind::Edm {
        sigma_min,
        sigma_max,
        rho,
    };
    edm_levels(&timer, n, sigma_min, sigma_max)
}

/// Log-uniform σ̃ from σ_max to σ_min (uniform in λ = −log σ̃), then 0 (`TimerKind::Exponential`;
/// k-diffusion `get_sigmas_exponential`).
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Result<Vec<f64>> {
    let timer = TimerKind::Exponential {
        sigma_min,
        sigma_max,
    };
    edm_levels(&timer, n, sigma_min, sigma_max)
}

/// The σ̃ levels of a timer defined in σ̃ alone, evaluated under the EDM process of the same
/// range (σ̃ = t there, so the grid is the timer's own).
fn edm_levels(timer: &TimerKind, n: usize, sigma_min: f64, sigma_max: f64) -> Result<Vec<f64>> {
    let process = Edm {
        sigma_min,
        sigma_max,
    };
    Ok(timer.grid(&process, n)?.sigma_tilde)
}

/// VP with linear β (Song et al. 2021): t uniform from 1 to ε_s, σ̃(t) = √(exp(½β_d t² + β_min t) − 1),
/// then 0 (`TimerKind::VpLinear` under `process::VpLinear`; k-diffusion `get_sigmas_vp`).
pub fn vp(n: usize, beta_d: f64, beta_min: f64, eps_s: f64) -> Result<Vec<f64>> {
    let process = VpLinear {
        beta_min,
        beta_d,
        eps_t: eps_s,
    };
    Ok(TimerKind::VpLinear { eps_s }.grid(&process, n)?.sigma_tilde)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published 18-step EDM grid (NVlabs/edm): 80, 57.586, 40.786, …, 0.00753, 0.002, then 0;
    /// the exponential grid is geometric; the VP grid ends near NVlabs/edm's σ range 0.0010 … 152.2.
    #[test]
    fn published_values() {
        let k = karras(18, 0.002, 80.0, 7.0).unwrap();
        assert_eq!(k.len(), 19);
        for (got, want) in k.iter().zip([80.0, 57.586, 40.786]) {
            assert!((got - want).abs() < 5e-4, "{got} vs {want}");
        }
        assert!((k[16] - 0.00753).abs() < 5e-6 && (k[17] - 0.002).abs() < 1e-15);
        assert_eq!(k[18], 0.0);
        let e = exponential(5, 0.01, 100.0).unwrap();
        for (i, want) in [100.0, 10.0, 1.0, 0.1, 0.01, 0.0].iter().enumerate() {
            assert!((e[i] - want).abs() < 1e-12 * want.max(1.0), "{e:?}");
        }
        let v = vp(1000, 19.9, 0.1, 1e-5).unwrap();
        assert!(
            (v[0] - 152.2).abs() < 0.1 && (v[999] - 0.0010).abs() < 5e-5,
            "{v:?}"
        );
        assert!(karras(18, 80.0, 0.002, 7.0).is_err());
    }
}
