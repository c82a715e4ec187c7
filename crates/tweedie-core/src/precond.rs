//! Preconditioning of Karras et al. 2022, Table 1: D(x̃;σ̃) = c_skip·x̃ + c_out·F(c_in·x̃; c_noise).

/// Preconditioning coefficients at one noise level σ̃.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecondCoeffs {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

/// The preconditioning families of Karras et al. 2022 (Table 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Precond {
    /// VP: c_skip = 1, c_out = −σ, c_in = 1/√(σ²+1), c_noise = (M−1)·t(σ).
    Vp { beta_min: f64, beta_d: f64, m: f64, eps_t: f64 },
    /// VE: c_skip = 1, c_out = σ, c_in = 1, c_noise = log(σ/2).
    Ve,
    /// iDDPM: c_noise = M−1−argmin_j |u_j − σ|; σ rounded to the u-grid.
    Iddpm { c1: f64, c2: f64, m: usize },
    /// EDM: c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = ¼·log σ.
    Edm { sigma_data: f64 },
}

// TODO(core helper): impl Precond { pub fn coeffs(&self, sigma: f64) -> PrecondCoeffs;
//   pub fn round_sigma(&self, sigma: f64) -> f64 /* identity except iDDPM */ }
