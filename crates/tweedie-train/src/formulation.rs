//! The `[diffusion]` section: which formulation is trained, resolved into a process, a
//! denoiser wrapper, a noise-level density and a loss weight, all from tweedie-core.
//!
//! | type    | process (x_t = α x₀ + σ ε)   | network / wrapper            | p(σ̃)                  | λ(σ̃) on ‖D − x₀‖²          |
//! |---------|------------------------------|------------------------------|------------------------|----------------------------|
//! | EDM     | α = 1, σ = t                 | EDM precond (σ_data)         | log σ̃ ~ N(P_mean, P_std²) | (σ̃² + σ_d²)/(σ̃σ_d)²     |
//! | VP      | VP linear β                  | VP precond                   | t ~ U(ε_t, 1)          | 1/σ̃²                       |
//! | VE      | α = 1, σ = √t                | VE precond                   | log-uniform σ̃          | 1/σ̃²                       |
//! | iDDPM   | cosine u-grid                | iDDPM precond                | σ̃ = u_j, j uniform     | 1/σ̃² (ε-loss; + λ·L_vlb with learned variance) |
//! | eps     | DDPM β table (linear)        | ε-network (Tweedie adapter)  | j ~ U{0..N−1}          | 1/σ̃² (ε-loss)              |
//! | v       | DDPM β table (cosine)        | v-network                    | j ~ U{0..N−1}          | c₀(v)² = (α²+σ²)²/σ² (v-loss) |
//! | flow    | α = 1 − t, σ = t             | velocity network             | t ~ U or logit-normal  | c₀(u)² = 1/t² (velocity loss) |
//!
//! Every λ is stated for the denoiser loss: a loss on another parametrization P is the same
//! loss, since ‖ΔP‖² = c₀(P)²‖Δx₀‖² (tweedie_core::weighting). `weighting` replaces λ by one
//! of core's weights (min-SNR, soft-min-SNR, …), again in denoiser space.

use serde::{Deserialize, Serialize};
use tweedie_core::defaults as df;
use tweedie_core::process::BetaSchedule;
use tweedie_core::weighting::{LossWeight, NoiseDensity};
use tweedie_core::Invalid;
use tweedie_core::{Param, Precond, ProcessKind};
use tweedie_nets::{ParamAdapter, Wrapper};

use crate::error::{Result, TrainError};

/// The training formulation (TOML `type = "EDM" | "VP" | "VE" | "iDDPM" | "flow" | "eps" | "v"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FormulationKind {
    /// Karras et al. 2022 (EDM).
    #[serde(rename = "EDM")]
    Edm,
    /// Variance preserving (Song et al. 2021) as in Karras et al. 2022.
    #[serde(rename = "VP")]
    Vp,
    /// Variance exploding (Song et al. 2021) as in Karras et al. 2022.
    #[serde(rename = "VE")]
    Ve,
    /// Improved DDPM (Nichol & Dhariwal 2021): cosine schedule, ε-loss, optionally the hybrid
    /// loss with learned variance (`learned_variance = true`).
    #[serde(rename = "iDDPM")]
    Iddpm,
    /// Rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022).
    #[serde(rename = "flow")]
    Flow,
    /// DDPM ε-prediction (Ho et al. 2020).
    #[serde(rename = "eps")]
    Eps,
    /// v-prediction (Salimans & Ho 2022).
    #[serde(rename = "v")]
    V,
}

impl FormulationKind {
    /// The name as written in TOML.
    pub fn name(self) -> &'static str {
        match self {
            FormulationKind::Edm => "EDM",
            FormulationKind::Vp => "VP",
            FormulationKind::Ve => "VE",
            FormulationKind::Iddpm => "iDDPM",
            FormulationKind::Flow => "flow",
            FormulationKind::Eps => "eps",
            FormulationKind::V => "v",
        }
    }
}

/// Override of the formulation's loss weight (TOML `weighting = "min_snr"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightingKind {
    /// The formulation's own weight (table above).
    Default,
    /// EDM's (σ̃² + σ_d²)/(σ̃σ_d)².
    Edm,
    /// 1/σ̃² (ε-loss).
    InvSigma2,
    /// 1 (plain x₀ loss).
    Unit,
    /// min(SNR, γ) (Hang et al. 2023).
    MinSnr,
    /// 1/(σ̃² + 1/γ) (Crowson et al. 2024).
    SoftMinSnr,
}

/// Flow-matching time density (TOML `t_density = "uniform" | "logit_normal"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeDensity {
    /// t ~ U(0, 1) (Liu et al. 2022).
    Uniform,
    /// t = sigmoid(m + s·z) (Esser et al. 2024).
    LogitNormal,
}

/// β schedule name of the `eps` / `v` formulations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleName {
    /// 1e-4 … 0.02 (Ho et al. 2020).
    Linear,
    /// 0.00085 … 0.012 (Rombach et al. 2022).
    ScaledLinear,
    /// Cosine, s = 0.008 (Nichol & Dhariwal 2021).
    Cosine,
}

/// `[diffusion]`: the formulation and its parameters; a key the type does not use is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    #[serde(rename = "type")]
    pub kind: FormulationKind,
    /// σ_data of EDM preconditioning and weighting (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_data: Option<f64>,
    /// Smallest σ̃ of the sampling grid (and of VE's training density).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_min: Option<f64>,
    /// Largest σ̃ of the sampling grid (and of VE's training density).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_max: Option<f64>,
    /// ρ of the sampling grid (Karras et al. 2022, eq. 5; default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
    /// EDM: mean of log σ̃ (default −1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_mean: Option<f64>,
    /// EDM: std of log σ̃ (default 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_std: Option<f64>,
    /// VP: β_min (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_min: Option<f64>,
    /// VP: β_d (default 19.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_d: Option<f64>,
    /// VP: ε_t (default 1e-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps_t: Option<f64>,
    /// iDDPM: C₁ (default 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c1: Option<f64>,
    /// iDDPM: C₂ (default 0.008).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c2: Option<f64>,
    /// iDDPM: M; eps / v: table length N (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_steps: Option<usize>,
    /// eps / v: β schedule (default linear for eps, cosine for v).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleName>,
    /// flow: time density (default uniform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_density: Option<TimeDensity>,
    /// flow, logit-normal: mean m (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_mean: Option<f64>,
    /// flow, logit-normal: std s (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_std: Option<f64>,
    /// Loss weight override (default: the formulation's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighting: Option<WeightingKind>,
    /// γ of min-SNR / soft-min-SNR (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// iDDPM: learn the reverse-step variance with the hybrid loss (Nichol & Dhariwal 2021);
    /// the network gets twice the data's output channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_variance: Option<bool>,
    /// iDDPM with learned variance: λ of L_hybrid = L_simple + λ·L_vlb (default 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlb_weight: Option<f64>,
}

impl DiffusionConfig {
    /// A config of this type with every parameter at its default.
    pub fn new(kind: FormulationKind) -> Self {
        DiffusionConfig {
            kind,
            sigma_data: None,
            sigma_min: None,
            sigma_max: None,
            rho: None,
            p_mean: None,
            p_std: None,
            beta_min: None,
            beta_d: None,
            eps_t: None,
            c1: None,
            c2: None,
            num_steps: None,
            schedule: None,
            t_density: None,
            logit_mean: None,
            logit_std: None,
            weighting: None,
            gamma: None,
            learned_variance: None,
            vlb_weight: None,
        }
    }
}

/// A resolved formulation: everything the loss, the network wrapper and the sampler need.
#[derive(Debug, Clone, PartialEq)]
pub struct Formulation {
    pub kind: FormulationKind,
    /// The forward process (also what samplers run under).
    pub process: ProcessKind,
    /// How the network becomes a denoiser D(x̃; σ̃).
    pub wrapper: Wrapper,
    /// Training density of the noise level.
    pub density: NoiseDensity,
    /// Loss weight on ‖D − x₀‖².
    pub weight: Weight,
    /// σ_data (EDM preconditioning / weighting; also a data-scale hint).
    pub sigma_data: f64,
    /// Sampling grid: σ̃_min, σ̃_max, ρ.
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    /// iDDPM's hybrid loss with learned variance, when enabled.
    pub learned_variance: Option<LearnedVariance>,
}

/// iDDPM's learned reverse-step variance (Nichol & Dhariwal 2021, §3.1): the network emits
/// 2C channels, the extra C giving v of log σ² = v·log β + (1 − v)·log β̃, trained by
/// L_hybrid = L_simple + λ·L_vlb (see `crate::loss` for the exact per-sample estimator).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedVariance {
    /// λ on the per-sample VLB estimator M·L_j (bits per element).
    pub vlb_weight: f64,
}

/// Doubles the network's outputs for a learned-variance formulation (U-Net `out_channels`,
/// MLP `out_dim`); `net` must already be fitted to the data. No-op otherwise.
pub fn widen_for_learned_variance(f: &Formulation, net: &mut tweedie_nets::NetConfig) {
    if f.learned_variance.is_none() {
        return;
    }
    match net {
        tweedie_nets::NetConfig::Unet(u) => u.out_channels = 2 * u.in_channels,
        tweedie_nets::NetConfig::Dhariwal(u) => u.out_channels = 2 * u.in_channels,
        tweedie_nets::NetConfig::Mlp(m) => m.out_dim = Some(2 * m.dim),
    }
}

/// A loss weight in denoiser space.
#[derive(Debug, Clone, PartialEq)]
pub enum Weight {
    /// One of tweedie-core's weights λ(σ̃).
    Core(LossWeight),
    /// Unit weight on the loss of parametrization P: λ = c₀(P, t)² (tweedie_core::Param::coeffs).
    Native(Param),
}

impl Weight {
    /// λ at time t / noise level σ̃ = σ(t)/α(t) of `process`.
    pub fn at(&self, process: &dyn tweedie_core::Process, t: f64, sigma_tilde: f64) -> f64 {
        match self {
            Weight::Core(w) => w.weight(sigma_tilde),
            Weight::Native(p) => {
                let c0 = p.coeffs(process, t).1;
                c0 * c0
            }
        }
    }
}

/// Time-scale of the noise input of ε/v/velocity networks: c_noise = 999·t, the range of DDPM
/// timestep inputs, which suits the positional embedding of the networks.
pub const PARAM_TIME_SCALE: f64 = 999.0;

fn pos(key: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(TrainError::invalid(key, v, "must be finite and > 0"))
    }
}

impl DiffusionConfig {
    /// Names of the keys set in this section that `type` does not use.
    fn unused_keys(&self) -> Vec<&'static str> {
        use FormulationKind::*;
        let k = self.kind;
        let checks: [(&'static str, bool, bool); 16] = [
            ("p_mean", self.p_mean.is_some(), k == Edm),
            ("p_std", self.p_std.is_some(), k == Edm),
            ("beta_min", self.beta_min.is_some(), k == Vp),
            ("beta_d", self.beta_d.is_some(), k == Vp),
            ("eps_t", self.eps_t.is_some(), k == Vp),
            ("c1", self.c1.is_some(), k == Iddpm),
            ("c2", self.c2.is_some(), k == Iddpm),
            (
                "num_steps",
                self.num_steps.is_some(),
                matches!(k, Iddpm | Eps | V),
            ),
            ("schedule", self.schedule.is_some(), matches!(k, Eps | V)),
            ("t_density", self.t_density.is_some(), k == Flow),
            ("logit_mean", self.logit_mean.is_some(), k == Flow),
            ("logit_std", self.logit_std.is_some(), k == Flow),
            (
                "gamma",
                self.gamma.is_some(),
                matches!(
                    self.weighting,
                    Some(WeightingKind::MinSnr | WeightingKind::SoftMinSnr)
                ),
            ),
            ("sigma_data", self.sigma_data.is_some(), true),
            (
                "learned_variance",
                self.learned_variance == Some(true),
                k == Iddpm,
            ),
            (
                "vlb_weight",
                self.vlb_weight.is_some(),
                k == Iddpm && self.learned_variance == Some(true),
            ),
        ];
        checks
            .iter()
            .filter(|(_, set, used)| *set && !*used)
            .map(|(n, _, _)| *n)
            .collect()
    }

    /// Validates and resolves the section; errors name the key and value.
    pub fn resolve(&self) -> Result<Formulation> {
        use FormulationKind::*;
        if let Some(key) = self.unused_keys().first() {
            return Err(TrainError::invalid(
                &format!("diffusion.{key}"),
                "(set)",
                format!("not used by type = \"{}\"", self.kind.name()),
            ));
        }
        let sigma_data = pos(
            "diffusion.sigma_data",
            self.sigma_data.unwrap_or(df::SIGMA_DATA),
        )?;
        let (def_min, def_max) = match self.kind {
            Ve => (df::VE_SIGMA_MIN, df::VE_SIGMA_MAX),
            // DDPM's linear table ends at σ̃ ≈ 157 and starts at σ̃ = 0.01.
            Eps => (0.01, df::EDM_SIGMA_MAX),
            _ => (df::EDM_SIGMA_MIN, df::EDM_SIGMA_MAX),
        };
        let sigma_min = pos("diffusion.sigma_min", self.sigma_min.unwrap_or(def_min))?;
        let sigma_max = pos("diffusion.sigma_max", self.sigma_max.unwrap_or(def_max))?;
        if sigma_min >= sigma_max {
            return Err(TrainError::invalid(
                "diffusion.sigma_min",
                sigma_min,
                format!("must be < diffusion.sigma_max = {sigma_max}"),
            ));
        }
        let rho = pos("diffusion.rho", self.rho.unwrap_or(df::EDM_RHO))?;
        let n = self.num_steps.unwrap_or(df::DDPM_STEPS);
        if n < 2 {
            return Err(TrainError::invalid("diffusion.num_steps", n, "must be ≥ 2"));
        }
        let table = |default: ScheduleName| {
            let schedule = match self.schedule.unwrap_or(default) {
                ScheduleName::Linear => BetaSchedule::Linear {
                    beta_start: df::DDPM_LINEAR_BETA_START,
                    beta_end: df::DDPM_LINEAR_BETA_END,
                },
                ScheduleName::ScaledLinear => BetaSchedule::ScaledLinear {
                    beta_start: df::SCALED_LINEAR_BETA_START,
                    beta_end: df::SCALED_LINEAR_BETA_END,
                },
                ScheduleName::Cosine => BetaSchedule::Cosine {
                    s: df::COSINE_S,
                    max_beta: df::COSINE_MAX_BETA,
                },
            };
            ProcessKind::Ddpm {
                schedule,
                num_steps: n,
            }
        };
        let adapter = |param: Param, process: &ProcessKind| {
            Wrapper::Param(ParamAdapter {
                param,
                process: process.clone(),
                time_scale: PARAM_TIME_SCALE,
            })
        };
        let (process, wrapper, density, weight) = match self.kind {
            Edm => (
                ProcessKind::Edm {
                    sigma_min,
                    sigma_max,
                },
                Wrapper::Precond(Precond::Edm { sigma_data }),
                NoiseDensity::EdmLogNormal {
                    p_mean: self.p_mean.unwrap_or(df::EDM_P_MEAN),
                    p_std: self.p_std.unwrap_or(df::EDM_P_STD),
                },
                Weight::Core(LossWeight::Edm { sigma_data }),
            ),
            Vp => {
                let (beta_min, beta_d) = (
                    self.beta_min.unwrap_or(df::VP_BETA_MIN),
                    self.beta_d.unwrap_or(df::VP_BETA_D),
                );
                let eps_t = self.eps_t.unwrap_or(df::VP_EPS_T);
                (
                    ProcessKind::Vp {
                        beta_min,
                        beta_d,
                        eps_t,
                    },
                    Wrapper::Precond(Precond::Vp {
                        beta_min,
                        beta_d,
                        m: df::VP_M,
                        eps_t,
                    }),
                    NoiseDensity::VpUniform { eps_t },
                    Weight::Core(LossWeight::InvSigma2),
                )
            }
            Ve => (
                ProcessKind::Ve {
                    sigma_min,
                    sigma_max,
                },
                Wrapper::Precond(Precond::Ve),
                NoiseDensity::VeLogUniform {
                    sigma_min,
                    sigma_max,
                },
                Weight::Core(LossWeight::InvSigma2),
            ),
            Iddpm => {
                let (c1, c2) = (
                    self.c1.unwrap_or(df::IDDPM_C1),
                    self.c2.unwrap_or(df::IDDPM_C2),
                );
                (
                    ProcessKind::VpCosine { s: df::COSINE_S },
                    Wrapper::Precond(Precond::Iddpm { c1, c2, m: n }),
                    NoiseDensity::IddpmIndex { c1, c2, m: n },
                    Weight::Core(LossWeight::InvSigma2),
                )
            }
            Eps => {
                let p = table(ScheduleName::Linear);
                let w = adapter(Param::Eps, &p);
                (
                    p,
                    w,
                    NoiseDensity::Discrete { num_steps: n },
                    Weight::Core(LossWeight::InvSigma2),
                )
            }
            V => {
                let p = table(ScheduleName::Cosine);
                let w = adapter(Param::V, &p);
                (
                    p,
                    w,
                    NoiseDensity::Discrete { num_steps: n },
                    Weight::Native(Param::V),
                )
            }
            Flow => {
                let p = ProcessKind::Flow {
                    t_min: 0.0,
                    t_max: df::FLOW_T_MAX,
                };
                let w = adapter(Param::Velocity, &p);
                let d = match self.t_density.unwrap_or(TimeDensity::Uniform) {
                    TimeDensity::Uniform => NoiseDensity::FlowUniform,
                    TimeDensity::LogitNormal => NoiseDensity::FlowLogitNormal {
                        mean: self.logit_mean.unwrap_or(0.0),
                        std: self.logit_std.unwrap_or(df::LOGIT_NORMAL_STD),
                    },
                };
                (p, w, d, Weight::Native(Param::Velocity))
            }
        };
        let learned_variance = match self.learned_variance {
            Some(true) => Some(LearnedVariance {
                vlb_weight: pos(
                    "diffusion.vlb_weight",
                    self.vlb_weight.unwrap_or(df::IDDPM_VLB_WEIGHT),
                )?,
            }),
            _ => None,
        };
        let gamma = pos("diffusion.gamma", self.gamma.unwrap_or(df::MIN_SNR_GAMMA))?;
        let weight = match self.weighting.unwrap_or(WeightingKind::Default) {
            WeightingKind::Default => weight,
            WeightingKind::Edm => Weight::Core(LossWeight::Edm { sigma_data }),
            WeightingKind::InvSigma2 => Weight::Core(LossWeight::InvSigma2),
            WeightingKind::Unit => Weight::Core(LossWeight::Unit),
            WeightingKind::MinSnr => Weight::Core(LossWeight::MinSnr { gamma }),
            WeightingKind::SoftMinSnr => Weight::Core(LossWeight::SoftMinSnr { gamma }),
        };
        let prefix = |e: tweedie_core::CoreError| match e {
            tweedie_core::CoreError::InvalidValue(v) => {
                TrainError::InvalidValue(v.in_section("diffusion"))
            }
            other => TrainError::Core(other),
        };
        process.validate().map_err(prefix)?;
        density.validate().map_err(prefix)?;
        if let Weight::Core(w) = &weight {
            w.validate().map_err(prefix)?;
        }
        Ok(Formulation {
            kind: self.kind,
            process,
            wrapper,
            density,
            weight,
            sigma_data,
            sigma_min,
            sigma_max,
            rho,
            learned_variance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_resolves_with_defaults() -> Result<()> {
        for k in [
            FormulationKind::Edm,
            FormulationKind::Vp,
            FormulationKind::Ve,
            FormulationKind::Iddpm,
            FormulationKind::Flow,
            FormulationKind::Eps,
            FormulationKind::V,
        ] {
            let f = DiffusionConfig::new(k).resolve()?;
            assert_eq!(f.kind, k);
            let s: DiffusionConfig = toml::from_str(&format!("type = \"{}\"", k.name()))
                .map_err(|e| TrainError::Config(e.to_string()))?;
            assert_eq!(s.kind, k);
        }
        Ok(())
    }

    #[test]
    fn keys_of_other_types_and_bad_values_are_named() {
        let mut c = DiffusionConfig::new(FormulationKind::Vp);
        c.p_mean = Some(-1.0);
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("diffusion.p_mean") && e.contains("VP"), "{e}");
        let mut c = DiffusionConfig::new(FormulationKind::Edm);
        c.sigma_min = Some(5.0);
        c.sigma_max = Some(1.0);
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("diffusion.sigma_min") && e.contains('5'), "{e}");
        let mut c = DiffusionConfig::new(FormulationKind::Edm);
        c.p_std = Some(-2.0);
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("diffusion.p_std") && e.contains("-2"), "{e}");
        let e = toml::from_str::<DiffusionConfig>("type = \"EDM\"\nsigma_dta = 1.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sigma_dta"), "{e}");
        let e = toml::from_str::<DiffusionConfig>("type = \"edm\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("edm"), "{e}");
        let mut c = DiffusionConfig::new(FormulationKind::Edm);
        c.learned_variance = Some(true);
        let e = c.resolve().unwrap_err().to_string();
        assert!(
            e.contains("diffusion.learned_variance") && e.contains("EDM"),
            "{e}"
        );
        let mut c = DiffusionConfig::new(FormulationKind::Iddpm);
        c.vlb_weight = Some(0.01);
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("diffusion.vlb_weight"), "{e}");
        c.learned_variance = Some(true);
        assert_eq!(
            c.resolve().unwrap().learned_variance,
            Some(LearnedVariance { vlb_weight: 0.01 })
        );
        c.vlb_weight = Some(-1.0);
        let e = c.resolve().unwrap_err().to_string();
        assert!(
            e.contains("diffusion.vlb_weight") && e.contains("-1"),
            "{e}"
        );
        c.vlb_weight = None;
        assert_eq!(
            c.resolve().unwrap().learned_variance,
            Some(LearnedVariance { vlb_weight: 0.001 })
        );
        let mut c = DiffusionConfig::new(FormulationKind::Edm);
        c.gamma = Some(3.0);
        assert!(c
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("diffusion.gamma"));
    }
}
