//! Noise processes x_t = α(t)·x₀ + σ(t)·ε.

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
    /// Half log-SNR λ(t) = log(α(t)/σ(t)).
    fn lambda(&self, t: f64) -> f64 {
        (self.alpha(t) / self.sigma(t)).ln()
    }
}

/// Every built-in process, as a serde-friendly enum (TOML: `type = "vp" | ...`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessKind {
    /// VP with linear β (Song et al. 2021; EDM defaults β_min = 0.1, β_d = 19.9, ε_t = 1e-5).
    Vp { beta_min: f64, beta_d: f64, eps_t: f64 },
    /// VP cosine (Nichol & Dhariwal 2021, continuous ᾱ(t), s = 0.008).
    VpCosine { s: f64 },
    /// VE: α = 1, σ(t) = √t (Song et al. 2021 as written in Karras et al. 2022).
    Ve { sigma_min: f64, sigma_max: f64 },
    /// EDM: α = 1, σ = t (Karras et al. 2022).
    Edm { sigma_min: f64, sigma_max: f64 },
    /// Rectified flow: α = 1 − t, σ = t (Liu et al. 2022, Lipman et al. 2022).
    Flow { t_min: f64, t_max: f64 },
    // TODO(core helper): discrete DDPM tables (linear, scaled_linear, cosine).
}
