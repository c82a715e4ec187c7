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

use crate::error::{positive, section_value, Result, TrainError};

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
    /// Every formulation, in the order of the docs' table.
    pub const ALL: [FormulationKind; 7] = [
        FormulationKind::Edm,
        FormulationKind::Vp,
        FormulationKind::Ve,
        FormulationKind::Iddpm,
        FormulationKind::Flow,
        FormulationKind::Eps,
        FormulationKind::V,
    ];

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

/// Declares the parameter struct of each `[diffusion]` type: the keys every type takes (the
/// sampling grid, σ_data, the loss-weight override) and the type's own keys, all optional (an
/// absent key takes its published default from `tweedie_core::defaults` in
/// [`DiffusionConfig::resolve`]); any other key is a deserialisation error naming it.
macro_rules! diffusion_params {
    ($( $(#[$doc:meta])* $name:ident { $( $(#[$fdoc:meta])* $field:ident : $ty:ty ),* $(,)? } )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// σ_data of EDM preconditioning and weighting (default 0.5).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub sigma_data: Option<f64>,
            /// Smallest σ̃ of the sampling grid (and of VE's process and training density).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub sigma_min: Option<f64>,
            /// Largest σ̃ of the sampling grid (and of VE's process and training density).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub sigma_max: Option<f64>,
            /// ρ of the sampling grid (Karras et al. 2022, eq. 5; default 7).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub rho: Option<f64>,
            /// Loss weight override (default: the formulation's own).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub weighting: Option<WeightingKind>,
            /// γ of min-SNR / soft-min-SNR (default 5).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub gamma: Option<f64>,
            $(
                $(#[$fdoc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            fn common(&self) -> Common {
                Common {
                    sigma_data: self.sigma_data,
                    sigma_min: self.sigma_min,
                    sigma_max: self.sigma_max,
                    rho: self.rho,
                    weighting: self.weighting,
                    gamma: self.gamma,
                }
            }
        }
    )*};
}

/// The keys every `[diffusion]` type takes, as set (`None`: the default).
#[derive(Debug, Clone, Copy)]
struct Common {
    sigma_data: Option<f64>,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    rho: Option<f64>,
    weighting: Option<WeightingKind>,
    gamma: Option<f64>,
}

diffusion_params! {
    /// `type = "EDM"`: log-normal σ̃ density.
    EdmParams {
        /// Mean of log σ̃ (default −1.2).
        p_mean: f64,
        /// Std of log σ̃ (default 1.2).
        p_std: f64,
    }
    /// `type = "VP"`: the linear-β VP process.
    VpParams {
        /// β_min (default 0.1).
        beta_min: f64,
        /// β_d (default 19.9).
        beta_d: f64,
        /// ε_t (default 1e-5).
        eps_t: f64,
    }
    /// `type = "VE"`: σ̃ range from `sigma_min`, `sigma_max`.
    VeParams {}
    /// `type = "iDDPM"`: the u-grid and, optionally, the learned variance.
    IddpmParams {
        /// C₁ (default 0.001).
        c1: f64,
        /// C₂ (default 0.008).
        c2: f64,
        /// M, the u-grid length (default 1000).
        num_steps: usize,
        /// Learn the reverse-step variance with the hybrid loss (Nichol & Dhariwal 2021); the
        /// network gets twice the data's output channels.
        learned_variance: bool,
        /// With learned variance: λ of L_hybrid = L_simple + λ·L_vlb (default 0.001).
        vlb_weight: f64,
    }
    /// `type = "eps"` / `"v"`: a discrete DDPM β table.
    TableParams {
        /// Table length N (default 1000).
        num_steps: usize,
        /// β schedule (default linear for eps, cosine for v).
        schedule: ScheduleName,
    }
    /// `type = "flow"`: rectified flow's time density.
    FlowParams {
        /// Time density (default uniform).
        t_density: TimeDensity,
        /// Logit-normal: mean m (default 0).
        logit_mean: f64,
        /// Logit-normal: std s (default 1).
        logit_std: f64,
    }
}

/// `[diffusion]`: the formulation (`type`) and its parameters, typed per formulation, so a key
/// the type does not take is rejected when the config is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DiffusionConfig {
    #[serde(rename = "EDM")]
    Edm(EdmParams),
    #[serde(rename = "VP")]
    Vp(VpParams),
    #[serde(rename = "VE")]
    Ve(VeParams),
    #[serde(rename = "iDDPM")]
    Iddpm(IddpmParams),
    #[serde(rename = "flow")]
    Flow(FlowParams),
    #[serde(rename = "eps")]
    Eps(TableParams),
    #[serde(rename = "v")]
    V(TableParams),
}

impl DiffusionConfig {
    /// A config of this type with every parameter at its default.
    pub fn new(kind: FormulationKind) -> Self {
        match kind {
            FormulationKind::Edm => DiffusionConfig::Edm(EdmParams::default()),
            FormulationKind::Vp => DiffusionConfig::Vp(VpParams::default()),
            FormulationKind::Ve => DiffusionConfig::Ve(VeParams::default()),
            FormulationKind::Iddpm => DiffusionConfig::Iddpm(IddpmParams::default()),
            FormulationKind::Flow => DiffusionConfig::Flow(FlowParams::default()),
            FormulationKind::Eps => DiffusionConfig::Eps(TableParams::default()),
            FormulationKind::V => DiffusionConfig::V(TableParams::default()),
        }
    }

    /// The formulation type.
    pub fn kind(&self) -> FormulationKind {
        match self {
            DiffusionConfig::Edm(_) => FormulationKind::Edm,
            DiffusionConfig::Vp(_) => FormulationKind::Vp,
            DiffusionConfig::Ve(_) => FormulationKind::Ve,
            DiffusionConfig::Iddpm(_) => FormulationKind::Iddpm,
            DiffusionConfig::Flow(_) => FormulationKind::Flow,
            DiffusionConfig::Eps(_) => FormulationKind::Eps,
            DiffusionConfig::V(_) => FormulationKind::V,
        }
    }

    fn common(&self) -> Common {
        match self {
            DiffusionConfig::Edm(c) => c.common(),
            DiffusionConfig::Vp(c) => c.common(),
            DiffusionConfig::Ve(c) => c.common(),
            DiffusionConfig::Iddpm(c) => c.common(),
            DiffusionConfig::Flow(c) => c.common(),
            DiffusionConfig::Eps(c) | DiffusionConfig::V(c) => c.common(),
        }
    }

    /// Reads the `[diffusion]` table: `type` first, then the rest into that type's parameters,
    /// so that errors name the key (serde's tagged enums lose the key path).
    pub fn from_toml(value: toml::Value) -> Result<Self> {
        let mut table = match value {
            toml::Value::Table(t) => t,
            other => return Err(TrainError::invalid("diffusion", other, "must be a table")),
        };
        let kind: FormulationKind = match table.remove("type") {
            None => {
                return Err(TrainError::Config(
                    "[diffusion] type: missing (EDM, VP, VE, iDDPM, flow, eps or v)".into(),
                ))
            }
            Some(v) => section_value("[diffusion] type", v)?,
        };
        let label = format!("[diffusion] (type = \"{}\")", kind.name());
        let rest = toml::Value::Table(table);
        Ok(match kind {
            FormulationKind::Edm => DiffusionConfig::Edm(section_value(&label, rest)?),
            FormulationKind::Vp => DiffusionConfig::Vp(section_value(&label, rest)?),
            FormulationKind::Ve => DiffusionConfig::Ve(section_value(&label, rest)?),
            FormulationKind::Iddpm => DiffusionConfig::Iddpm(section_value(&label, rest)?),
            FormulationKind::Flow => DiffusionConfig::Flow(section_value(&label, rest)?),
            FormulationKind::Eps => DiffusionConfig::Eps(section_value(&label, rest)?),
            FormulationKind::V => DiffusionConfig::V(section_value(&label, rest)?),
        })
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

impl DiffusionConfig {
    /// Validates and resolves the section, absent keys taking the published defaults of
    /// `tweedie_core::defaults`; errors name the key and value.
    pub fn resolve(&self) -> Result<Formulation> {
        let kind = self.kind();
        let common = self.common();
        let sigma_data = positive(
            "diffusion.sigma_data",
            common.sigma_data.unwrap_or(df::SIGMA_DATA),
        )?;
        let (def_min, def_max) = match kind {
            FormulationKind::Ve => (df::VE_SIGMA_MIN, df::VE_SIGMA_MAX),
            // DDPM's linear table ends at σ̃ ≈ 157 and starts at σ̃ = 0.01.
            FormulationKind::Eps => (0.01, df::EDM_SIGMA_MAX),
            _ => (df::EDM_SIGMA_MIN, df::EDM_SIGMA_MAX),
        };
        let sigma_min = positive("diffusion.sigma_min", common.sigma_min.unwrap_or(def_min))?;
        let sigma_max = positive("diffusion.sigma_max", common.sigma_max.unwrap_or(def_max))?;
        if sigma_min >= sigma_max {
            return Err(TrainError::invalid(
                "diffusion.sigma_min",
                sigma_min,
                format!("must be < diffusion.sigma_max = {sigma_max}"),
            ));
        }
        let rho = positive("diffusion.rho", common.rho.unwrap_or(df::EDM_RHO))?;
        let steps = |n: Option<usize>| {
            let n = n.unwrap_or(df::DDPM_STEPS);
            if n < 2 {
                return Err(TrainError::invalid("diffusion.num_steps", n, "must be ≥ 2"));
            }
            Ok(n)
        };
        let table = |c: &TableParams, default: ScheduleName| -> Result<ProcessKind> {
            let schedule = match c.schedule.unwrap_or(default) {
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
            Ok(ProcessKind::Ddpm {
                schedule,
                num_steps: steps(c.num_steps)?,
            })
        };
        let adapter = |param: Param, process: &ProcessKind| {
            Wrapper::Param(ParamAdapter {
                param,
                process: process.clone(),
                time_scale: PARAM_TIME_SCALE,
            })
        };
        let mut learned_variance = None;
        let (process, wrapper, density, weight) = match self {
            DiffusionConfig::Edm(c) => (
                ProcessKind::Edm {
                    sigma_min,
                    sigma_max,
                },
                Wrapper::Precond(Precond::Edm { sigma_data }),
                NoiseDensity::EdmLogNormal {
                    p_mean: c.p_mean.unwrap_or(df::EDM_P_MEAN),
                    p_std: c.p_std.unwrap_or(df::EDM_P_STD),
                },
                Weight::Core(LossWeight::Edm { sigma_data }),
            ),
            DiffusionConfig::Vp(c) => {
                let beta_min = c.beta_min.unwrap_or(df::VP_BETA_MIN);
                let beta_d = c.beta_d.unwrap_or(df::VP_BETA_D);
                let eps_t = c.eps_t.unwrap_or(df::VP_EPS_T);
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
            DiffusionConfig::Ve(_) => (
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
            DiffusionConfig::Iddpm(c) => {
                let (c1, c2) = (c.c1.unwrap_or(df::IDDPM_C1), c.c2.unwrap_or(df::IDDPM_C2));
                let m = steps(c.num_steps)?;
                match (c.learned_variance, c.vlb_weight) {
                    (Some(true), w) => {
                        learned_variance = Some(LearnedVariance {
                            vlb_weight: positive(
                                "diffusion.vlb_weight",
                                w.unwrap_or(df::IDDPM_VLB_WEIGHT),
                            )?,
                        })
                    }
                    (_, Some(_)) => {
                        return Err(TrainError::invalid(
                            "diffusion.vlb_weight",
                            "(set)",
                            "used only with learned_variance = true",
                        ))
                    }
                    _ => {}
                }
                (
                    ProcessKind::VpCosine { s: df::COSINE_S },
                    Wrapper::Precond(Precond::Iddpm { c1, c2, m }),
                    NoiseDensity::IddpmIndex { c1, c2, m },
                    Weight::Core(LossWeight::InvSigma2),
                )
            }
            DiffusionConfig::Eps(c) => {
                let p = table(c, ScheduleName::Linear)?;
                let w = adapter(Param::Eps, &p);
                let n = steps(c.num_steps)?;
                (
                    p,
                    w,
                    NoiseDensity::Discrete { num_steps: n },
                    Weight::Core(LossWeight::InvSigma2),
                )
            }
            DiffusionConfig::V(c) => {
                let p = table(c, ScheduleName::Cosine)?;
                let w = adapter(Param::V, &p);
                let n = steps(c.num_steps)?;
                (
                    p,
                    w,
                    NoiseDensity::Discrete { num_steps: n },
                    Weight::Native(Param::V),
                )
            }
            DiffusionConfig::Flow(c) => {
                let p = ProcessKind::Flow {
                    t_min: 0.0,
                    t_max: df::FLOW_T_MAX,
                };
                let w = adapter(Param::Velocity, &p);
                let d = match c.t_density.unwrap_or(TimeDensity::Uniform) {
                    TimeDensity::Uniform => NoiseDensity::FlowUniform,
                    TimeDensity::LogitNormal => NoiseDensity::FlowLogitNormal {
                        mean: c.logit_mean.unwrap_or(0.0),
                        std: c.logit_std.unwrap_or(df::LOGIT_NORMAL_STD),
                    },
                };
                (p, w, d, Weight::Native(Param::Velocity))
            }
        };
        let weighting = common.weighting.unwrap_or(WeightingKind::Default);
        let gamma = match (weighting, common.gamma) {
            (WeightingKind::MinSnr | WeightingKind::SoftMinSnr, g) => {
                positive("diffusion.gamma", g.unwrap_or(df::MIN_SNR_GAMMA))?
            }
            (_, Some(g)) => {
                return Err(TrainError::invalid(
                    "diffusion.gamma",
                    g,
                    "used only with weighting = \"min_snr\" or \"soft_min_snr\"",
                ))
            }
            (_, None) => df::MIN_SNR_GAMMA,
        };
        let weight = match weighting {
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
            kind,
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
        for k in FormulationKind::ALL {
            let f = DiffusionConfig::new(k).resolve()?;
            assert_eq!(f.kind, k);
            let s: DiffusionConfig = toml::from_str(&format!("type = \"{}\"", k.name()))
                .map_err(|e| TrainError::Config(e.to_string()))?;
            assert_eq!(s.kind(), k);
        }
        Ok(())
    }

    /// `[diffusion]` read as a config file reads it.
    fn parse(text: &str) -> Result<DiffusionConfig> {
        let v: toml::Value = toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?;
        DiffusionConfig::from_toml(v)
    }

    #[test]
    fn keys_of_other_types_and_bad_values_are_named() {
        // Read and resolved, as a config file is.
        let check = |text: &str| parse(text)?.resolve();
        let e = check("type = \"VP\"\np_mean = -1.0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[diffusion]") && e.contains("p_mean") && e.contains("VP"),
            "{e}"
        );
        let e = check("type = \"EDM\"\nsigma_min = 5.0\nsigma_max = 1.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("diffusion.sigma_min") && e.contains('5'), "{e}");
        let e = check("type = \"EDM\"\np_std = -2.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("diffusion.p_std") && e.contains("-2"), "{e}");
        // A value of the wrong type names its key.
        let e = check("type = \"EDM\"\np_std = \"wide\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[diffusion]") && e.contains("p_std"), "{e}");
        let e = check("type = \"EDM\"\nsigma_dta = 1.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sigma_dta"), "{e}");
        let e = check("type = \"edm\"").unwrap_err().to_string();
        assert!(e.contains("edm") && e.contains("type"), "{e}");
        let e = check("sigma_data = 1.0").unwrap_err().to_string();
        assert!(e.contains("[diffusion] type"), "{e}");
        let e = check("type = \"EDM\"\nlearned_variance = true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("learned_variance") && e.contains("EDM"), "{e}");
        let e = check("type = \"iDDPM\"\nvlb_weight = 0.01")
            .unwrap_err()
            .to_string();
        assert!(e.contains("diffusion.vlb_weight"), "{e}");
        let mut c = IddpmParams {
            learned_variance: Some(true),
            vlb_weight: Some(0.01),
            ..Default::default()
        };
        let resolve = |c: &IddpmParams| DiffusionConfig::Iddpm(c.clone()).resolve();
        assert_eq!(
            resolve(&c).unwrap().learned_variance,
            Some(LearnedVariance { vlb_weight: 0.01 })
        );
        c.vlb_weight = Some(-1.0);
        let e = resolve(&c).unwrap_err().to_string();
        assert!(
            e.contains("diffusion.vlb_weight") && e.contains("-1"),
            "{e}"
        );
        c.vlb_weight = None;
        assert_eq!(
            resolve(&c).unwrap().learned_variance,
            Some(LearnedVariance { vlb_weight: 0.001 })
        );
        let e = check("type = \"EDM\"\ngamma = 3.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("diffusion.gamma"), "{e}");
        let e = check("type = \"EDM\"\nweighting = \"min_snr\"\ngamma = 0.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("diffusion.gamma"), "{e}");
    }

    /// Serialising and reading back gives the same config, for every type (the run directory
    /// keeps the resolved config and `tweedie eval` reads it again).
    #[test]
    fn every_type_round_trips_through_toml() -> Result<()> {
        let all = [
            "type = \"EDM\"\np_mean = -1.0\nsigma_data = 1.0",
            "type = \"VP\"\nbeta_d = 10.0\nrho = 3.0",
            "type = \"VE\"\nsigma_min = 0.05",
            "type = \"iDDPM\"\nnum_steps = 100\nlearned_variance = true",
            "type = \"flow\"\nt_density = \"logit_normal\"\nlogit_std = 0.5",
            "type = \"eps\"\nschedule = \"scaled_linear\"\nweighting = \"min_snr\"\ngamma = 2.0",
            "type = \"v\"\nnum_steps = 50",
        ];
        for text in all {
            let c = parse(text)?;
            let back = toml::to_string(&c).map_err(|e| TrainError::Config(e.to_string()))?;
            assert_eq!(parse(&back)?, c, "{text}");
            c.resolve()?;
        }
        Ok(())
    }
}
