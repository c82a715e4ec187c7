//! [`ProcessKind`]: the serde-facing description of every built-in process, its published
//! defaults, validation and [`ProcessKind::build`].

use super::*;
use crate::defaults::de as d;

/// Every built-in process, as a serde-friendly enum (TOML: `type = "vp" | ...`).
///
/// Missing fields take the published defaults of the constructors below.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessKind {
    /// VP with linear β (Song et al. 2021; EDM defaults β_min = 0.1, β_d = 19.9, ε_t = 1e-5).
    Vp {
        #[serde(default = "d::vp_beta_min")]
        beta_min: f64,
        #[serde(default = "d::vp_beta_d")]
        beta_d: f64,
        #[serde(default = "d::vp_eps_t")]
        eps_t: f64,
    },
    /// VP cosine (Nichol & Dhariwal 2021, continuous ᾱ(t), s = 0.008).
    VpCosine {
        #[serde(default = "d::cosine_s")]
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
        #[serde(default = "d::flow_t_max")]
        t_max: f64,
    },
    /// Discrete DDPM β table (Ho et al. 2020) of `num_steps` entries; table index j sits at
    /// t = (j+1)/N and log ᾱ is linear in t between entries (see [`DiscreteDdpm`]).
    Ddpm {
        #[serde(default)]
        schedule: BetaSchedule,
        #[serde(default = "d::ddpm_steps")]
        num_steps: usize,
    },
}

/// β tables of discrete DDPM models.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BetaSchedule {
    /// β_j = linspace(β_start, β_end, N) (Ho et al. 2020: 1e-4 … 0.02).
    Linear {
        #[serde(default = "d::ddpm_linear_beta_start")]
        beta_start: f64,
        #[serde(default = "d::ddpm_linear_beta_end")]
        beta_end: f64,
    },
    /// β_j = linspace(√β_start, √β_end, N)² (Stable Diffusion / LDM: 0.00085 … 0.012).
    ScaledLinear {
        #[serde(default = "d::scaled_linear_beta_start")]
        beta_start: f64,
        #[serde(default = "d::scaled_linear_beta_end")]
        beta_end: f64,
    },
    /// β_j = min(1 − ᾱ(j+1)/ᾱ(j), max_beta), ᾱ(j) = cos²((j/N + s)/(1 + s)·π/2)
    /// (Nichol & Dhariwal 2021, eq. 17; s = 0.008, max_beta = 0.999).
    Cosine {
        #[serde(default = "d::cosine_s")]
        s: f64,
        #[serde(default = "d::cosine_max_beta")]
        max_beta: f64,
    },
}

impl Default for BetaSchedule {
    fn default() -> Self {
        BetaSchedule::Linear {
            beta_start: d::ddpm_linear_beta_start(),
            beta_end: d::ddpm_linear_beta_end(),
        }
    }
}

impl ProcessKind {
    /// VP linear β with the EDM defaults β_min = 0.1, β_d = 19.9, ε_t = 1e-5.
    pub fn vp() -> Self {
        ProcessKind::Vp {
            beta_min: d::vp_beta_min(),
            beta_d: d::vp_beta_d(),
            eps_t: d::vp_eps_t(),
        }
    }
    /// VP cosine with s = 0.008 (Nichol & Dhariwal 2021).
    pub fn vp_cosine() -> Self {
        ProcessKind::VpCosine { s: d::cosine_s() }
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
            num_steps: d::ddpm_steps(),
        }
    }
    /// DDPM scaled-linear β table, 0.00085 … 0.012, N = 1000 (Rombach et al. 2022).
    pub fn ddpm_scaled_linear() -> Self {
        ProcessKind::Ddpm {
            schedule: BetaSchedule::ScaledLinear {
                beta_start: d::scaled_linear_beta_start(),
                beta_end: d::scaled_linear_beta_end(),
            },
            num_steps: d::ddpm_steps(),
        }
    }
    /// DDPM cosine β table, s = 0.008, β ≤ 0.999, N = 1000 (Nichol & Dhariwal 2021).
    pub fn ddpm_cosine() -> Self {
        ProcessKind::Ddpm {
            schedule: BetaSchedule::Cosine {
                s: d::cosine_s(),
                max_beta: d::cosine_max_beta(),
            },
            num_steps: d::ddpm_steps(),
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
            } => check_sigma_range(*sigma_min, *sigma_max),
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
                // β, ᾱ and their logs: a handful of f64 tables of num_steps entries each.
                crate::budget::check_array("num_steps", num_steps, &[*num_steps, 4], 8)?;
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
