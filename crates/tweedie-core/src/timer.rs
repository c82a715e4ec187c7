//! Timers: explicit decreasing time discretisations for samplers.

use crate::process::Process;

/// A decreasing grid of times and the matching EDM noise levels σ̃ = σ/α.
///
/// `t.len() == sigma_tilde.len() == steps + 1`. The last entry is the terminal point
/// (σ̃ = 0 at t = 0, or t_min when the process has no σ̃ = 0): a sampler never guesses.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeGrid {
    pub t: Vec<f64>,
    pub sigma_tilde: Vec<f64>,
}

/// A time discretisation.
pub trait Timer: Send + Sync + std::fmt::Debug {
    /// The grid for `steps` steps under `process`.
    fn grid(&self, process: &dyn Process, steps: usize) -> crate::Result<TimeGrid>;
}

/// Every built-in timer (TOML: `timer = { type = "edm", rho = 7.0, ... }`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimerKind {
    /// Karras et al. 2022 ρ-schedule in σ̃: (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then 0.
    Edm { sigma_min: f64, sigma_max: f64, rho: f64 },
    // TODO(core helper): vp_linear, ve_geometric, iddpm, ddim{uniform,quadratic,trailing},
    //   exponential, uniform_logsnr, shift option for flow models.
}
