//! `SamplerKind`: every integrator with its parameters, serde-friendly and parseable by name.

use serde::{Deserialize, Serialize};
use tweedie_core::Invalid;

pub use tweedie_core::multistep::UniPcVariant;

use crate::error::{Result, SamplerError};

/// Every built-in integrator (TOML: `sampler = { type = "heun" }`, `{ type = "ddim", eta = 0.5 }`).
///
/// Update rules are in EDM coordinates x̃ = x/α, σ̃ = σ/α unless noted (Karras et al. 2022 §3:
/// every deterministic sampler is an ODE in σ̃ after this rescaling), d = (x̃ − D(x̃; σ̃))/σ̃,
/// h = λ′ − λ = log(σ̃/σ̃′), ε fresh standard normals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerKind {
    /// Euler on the probability-flow ODE: x̃′ = x̃ + (σ̃′ − σ̃)·d (Karras et al. 2022, Alg. 1 without the correction). NFE = N.
    Euler,
    /// Heun (Karras et al. 2022, Alg. 1): Euler predictor, trapezoidal corrector x̃′ = x̃ + (σ̃′ − σ̃)(d + d′)/2
    /// except on the last step to σ̃ = 0. NFE = 2N − 1.
    Heun,
    /// EDM stochastic sampler (Karras et al. 2022, Alg. 2): churn σ̂ = σ̃(1 + γ), γ = min(S_churn/N, √2 − 1)
    /// for σ̃ ∈ [S_min, S_max], x̂ = x̃ + √(σ̂² − σ̃²)·S_noise·ε, then a Heun step σ̂ → σ̃′.
    EdmStochastic {
        #[serde(default = "d::s_churn")]
        s_churn: f64,
        #[serde(default)]
        s_min: f64,
        #[serde(default = "d::inf")]
        s_max: f64,
        #[serde(default = "d::one")]
        s_noise: f64,
    },
    /// Euler ancestral (k-diffusion): σ_up = min(σ̃′, η·σ̃′√(1 − σ̃′²/σ̃²)), σ_down = √(σ̃′² − σ_up²),
    /// x̃′ = x̃ + (σ_down − σ̃)·d + S_noise·σ_up·ε. η = 1 is ancestral DDPM sampling.
    EulerAncestral {
        #[serde(default = "d::one")]
        eta: f64,
        #[serde(default = "d::one")]
        s_noise: f64,
    },
    /// DDIM (Song, Meng & Ermon 2021, eq. 12) in process coordinates: x′ = α′x̂₀ + √(σ′² − s²)·ε̂ + s·ε,
    /// ε̂ = (x − αx̂₀)/σ, s = η·σ′√(1 − (ασ′/(α′σ))²). η = 0 is deterministic (≡ Euler in σ̃).
    Ddim {
        #[serde(default)]
        eta: f64,
    },
    /// Ancestral DDPM (Ho et al. 2020) for any process: draw x′ ~ q(x_{t′} | x_t, x₀ = x̂₀), the Gaussian
    /// posterior with mean (aσ′²/σ²)·x + (α′b²/σ²)·x̂₀ and variance β̃ = σ′²b²/σ², a = α/α′, b² = σ² − a²σ′²
    /// (`tweedie_core::process::DdpmStep`). With `learned_variance` (default) a model that supplies
    /// v (`Model::denoise_with_variance`, iDDPM) gets the variance exp(v·log b² + (1 − v)·log β̃)
    /// per element (Nichol & Dhariwal 2021, eq. 15); `ddpm_fixed` always uses β̃.
    DdpmAncestral {
        #[serde(default = "d::yes")]
        learned_variance: bool,
    },
    /// DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1, r = ½): midpoint σ̃_s = √(σ̃σ̃′) in λ,
    /// u = (σ̃_s/σ̃)x̃ − expm1(−h/2)·D, x̃′ = (σ̃′/σ̃)x̃ − expm1(−h)·D(u; σ̃_s). NFE = 2N − 1.
    DpmSolverPp2s,
    /// DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): D_d = (1 + 1/2r)·D_i − (1/2r)·D_{i−1}, r = h_{i−1}/h_i,
    /// x̃′ = (σ̃′/σ̃)x̃ − expm1(−h)·D_d. NFE = N.
    DpmSolverPp2m,
    /// DPM-Solver++(2M) SDE (Lu et al. 2022b; k-diffusion midpoint variant): x̃′ = (σ̃′/σ̃)e^{−ηh}x̃
    /// + (1 − e^{−(1+η)h})·D + ½(1 − e^{−(1+η)h})/r·(D − D_{i−1}) + σ̃′√(1 − e^{−2ηh})·ε.
    DpmSolverPp2mSde {
        #[serde(default = "d::one")]
        eta: f64,
    },
    /// Euler–Maruyama on the process's own reverse SDE dx = [f·x − g²∇log p_t] dt + g dW̄, f = α′/α,
    /// g² = 2σσ′ − 2fσ² (Song et al. 2021, eq. 6), in process coordinates; the last step to σ̃ = 0 is D.
    EulerMaruyama,
    /// Third-order multistep ρAB-DEIS (Zhang & Chen 2023, §4): Adams–Bashforth in σ̃ on
    /// ε = (x̃ − D)/σ̃, x̃′ = x̃ − Σ_j w_j·ε_j, w_j = ∫_{σ̃′}^{σ̃} ℓ_j(ρ) dρ with ℓ_j the Lagrange
    /// basis on the last three σ̃_j (orders 1, 2 on the first steps). NFE = N; stable from ~16
    /// steps on the ρ = 7 EDM grid, where extrapolating D in λ needed ≥ 24.
    Deis3,
    /// Linear multistep in σ̃ (k-diffusion's LMS): x̃′ = x̃ + Σ_j w_j·d_j, d_j = (x̃_j − D_j)/σ̃_j,
    /// w_j = ∫_{σ̃}^{σ̃′} ℓ_j(ρ) dρ with ℓ_j the Lagrange basis on the last `order` (1–4) σ̃_j
    /// (lower orders on the first steps; order 3 is `deis3`). NFE = N.
    Lms {
        #[serde(default = "d::four")]
        order: usize,
    },
    /// iPNDM (Zhang & Chen 2023; Liu et al. 2022): x̃′ = x̃ + (σ̃′ − σ̃)·Σ_j w_j·d_j with the
    /// equal-step Adams–Bashforth weights of order 1–4 ([55, −59, 37, −9]/24 for 4), used on any
    /// grid. NFE = N.
    Ipndm {
        #[serde(default = "d::four")]
        order: usize,
    },
    /// DPM-Solver++(3M) (Lu et al. 2022b): x̃′ = (σ̃′/σ̃)x̃ + Σ_j c_j·D_j, c_j = ∫_{−h}^0 e^v ℓ_j(v) dv
    /// with ℓ_j the Lagrange basis on the last three λ_j − λ′ (the quadratic through D in λ,
    /// integrated exactly). NFE = N.
    DpmSolverPp3m,
    /// DPM-Solver++(3M) as DPM-Solver's reference code writes it (`multistep_dpm_solver_third_update`;
    /// also diffusers' `DPMSolverMultistepScheduler` of order 3 and k-diffusion's `dpmpp_3m_sde` with
    /// η = 0): x̃′ = (σ̃′/σ̃)x̃ − φ₁D₀ + φ₂D₁ − φ₃D₂ with φ₁ = e^{−h} − 1, φ₂ = φ₁/h + 1,
    /// φ₃ = φ₂/h − ½, D₁ = h·(the quadratic's slope at λ), D₂ = h²·D[λ₀, λ₁, λ₂]. The exact
    /// quadratic integral (`dpmpp_3m`) has −2φ₃D₂, so this form is second order (local orders
    /// 1.16 → 1.92 from 20 to 320 steps against the closed-form Gaussian flow, `tests/low_nfe.rs`); at low NFE on the ρ = 7 grid
    /// it is the more accurate of the two. NFE = N.
    DpmSolverPp3mDamped,
    /// DEIS in log σ̃ (Zhang & Chen 2023; diffusers' `DEISMultistepScheduler`, `deis_type =
    /// "logrho"`): x̃′ = x̃ + ∫_{σ̃}^{σ̃′} ε(ρ) dρ with ε the polynomial in log ρ through the last
    /// `order` (1–3, default 3) ε_j = (x̃_j − D_j)/σ̃_j, integrated exactly: x̃′ = x̃ − σ̃·Σ_j c_j·ε_j,
    /// c_j = ∫_{−h}^0 e^v ℓ_j(v) dv on v_j = ln(σ̃_j/σ̃). The step to σ̃ = 0 is a step like the
    /// others (h = ∞; the integral converges), so a grid may end well above σ̃ = 0.002. NFE = N.
    DeisLogRho {
        #[serde(default = "d::three")]
        order: usize,
    },
    /// DPM-Solver++(3M) SDE (k-diffusion `dpmpp_3m_sde`): x̃′ = e^{−(1+η)h}x̃ + Σ_j c_j·D_j
    /// + σ̃′√(1 − e^{−2ηh})·ε, c_j as in 3M on the nodes (1+η)(λ_j − λ′).
    DpmSolverPp3mSde {
        #[serde(default = "d::one")]
        eta: f64,
    },
    /// UniPC (Zhao et al. 2023, data prediction): predictor UniP-p, x̃′ = (σ̃′/σ̃)x̃ − (e^{−h} − 1)·D_0
    /// − B(−h)·Σ_k ρ_k·(D_k − D_0)/r_k, r_k = (λ_k − λ_0)/h, ρ from the order conditions
    /// (`tweedie_core::multistep::unipc_weights`), B(h) = h (`bh1`) or e^h − 1 (`bh2`); with
    /// `corrector`, UniC-p re-solves each step with D at its end point (order p + 1, no extra
    /// NFE). Orders 1–3; on grids under 15 steps the order drops on the final steps. NFE = N.
    UniPc {
        #[serde(default = "d::three")]
        order: usize,
        #[serde(default = "d::bh2")]
        variant: UniPcVariant,
        #[serde(default = "d::yes")]
        corrector: bool,
    },
    /// Adaptive exponential integrator 3(2) in λ = −log σ̃ (DPM-Solver-3's stages in data
    /// prediction, Lu et al. 2022): the linear part of dx̃/dλ = D − x̃ is solved exactly and D is
    /// integrated as the quadratic through D at λ, λ + h/3, λ + 2h/3; the line through the first
    /// two gives the embedded second-order solution. Error ‖err/(atol + rtol·max(|x̃|, |x̃′|))‖
    /// as an RMS over every element of the batch ≤ 1, PI step-size control, then D at the
    /// grid's last positive σ̃ when the grid ends at 0. Uses only the grid's end points; the NFE
    /// it used is reported (3 per accepted step, 2 per rejected one, + 1).
    Adaptive {
        #[serde(default = "d::rtol")]
        rtol: f64,
        #[serde(default = "d::atol")]
        atol: f64,
    },
}

/// Churn (Karras et al. 2022, Alg. 2): before each step from σ̃ ∈ [S_min, S_max], raise the noise
/// level to σ̂ = σ̃(1 + γ), γ = min(S_churn/N, √2 − 1), with x̂ = x̃ + √(σ̂² − σ̃²)·S_noise·ε.
/// [`SamplerKind::EdmStochastic`] is Heun with churn; `Sampler::churn` adds it to Euler and
/// DPM-Solver++(2S) too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// S_churn ≥ 0: total churn over the N steps (γ per step = S_churn/N, capped).
    #[serde(default = "d::s_churn")]
    pub s_churn: f64,
    /// Churn only for σ̃ ≥ S_min.
    #[serde(default)]
    pub s_min: f64,
    /// Churn only for σ̃ ≤ S_max.
    #[serde(default = "d::inf")]
    pub s_max: f64,
    /// Scale of the added noise (S_noise; 1 adds exactly the variance σ̂² − σ̃²).
    #[serde(default = "d::one")]
    pub s_noise: f64,
}

impl Default for Churn {
    /// EDM's defaults: S_churn = 40 on every σ̃, S_noise = 1.
    fn default() -> Self {
        Churn {
            s_churn: d::s_churn(),
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

impl Churn {
    /// Checks S_churn, S_min, S_noise ≥ 0 and S_max ≥ S_min; errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [
            ("s_churn", self.s_churn),
            ("s_min", self.s_min),
            ("s_noise", self.s_noise),
        ] {
            if !(v >= 0.0) {
                return Err(SamplerError::invalid(k, v, "must be ≥ 0"));
            }
        }
        if !(self.s_max >= self.s_min) {
            return Err(SamplerError::invalid(
                "s_max",
                self.s_max,
                "must be ≥ s_min",
            ));
        }
        Ok(())
    }
}

mod d {
    pub fn s_churn() -> f64 {
        40.0
    }
    pub fn inf() -> f64 {
        f64::INFINITY
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn rtol() -> f64 {
        1e-3
    }
    pub fn atol() -> f64 {
        1e-3
    }
    pub fn yes() -> bool {
        true
    }
    pub fn three() -> usize {
        3
    }
    pub fn four() -> usize {
        4
    }
    pub fn bh2() -> super::UniPcVariant {
        super::UniPcVariant::Bh2
    }
}

/// Names accepted by [`SamplerKind::from_name`].
pub const SAMPLER_NAMES: [&str; 21] = [
    "euler",
    "heun",
    "edm_stochastic",
    "euler_ancestral",
    "ddim",
    "ddpm_ancestral",
    "ddpm_fixed",
    "dpmpp_2s",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "euler_maruyama",
    "deis3",
    "lms",
    "ipndm",
    "dpmpp_3m",
    "dpmpp_3m_sde",
    "dpmpp_3m_damped",
    "deis_logrho",
    "unipc",
    "unipc_bh1",
    "adaptive",
];

impl SamplerKind {
    /// The sampler called `name` with its default parameters (aliases: `edm`, `euler_a`, `ddpm`, `em`,
    /// `dpm++2m`, …); unknown names give an error listing the known ones.
    pub fn from_name(name: &str) -> Result<Self> {
        let n = name
            .trim()
            .to_ascii_lowercase()
            .replace("++", "pp")
            .replace(['-', '+', ' '], "_");
        Ok(match n.as_str() {
            "euler" => SamplerKind::Euler,
            "heun" => SamplerKind::Heun,
            "edm_stochastic" | "edm" | "edm_sde" => SamplerKind::EdmStochastic {
                s_churn: d::s_churn(),
                s_min: 0.0,
                s_max: f64::INFINITY,
                s_noise: 1.0,
            },
            "euler_ancestral" | "euler_a" => SamplerKind::EulerAncestral {
                eta: 1.0,
                s_noise: 1.0,
            },
            "ddim" => SamplerKind::Ddim { eta: 0.0 },
            "ddpm_ancestral" | "ddpm" => SamplerKind::DdpmAncestral {
                learned_variance: true,
            },
            "ddpm_fixed" | "ddpm_fixed_variance" => SamplerKind::DdpmAncestral {
                learned_variance: false,
            },
            "dpmpp_2s" | "dpm_solver_pp_2s" => SamplerKind::DpmSolverPp2s,
            "dpmpp_2m" | "dpmpp2m" | "dpm_solver_pp_2m" => SamplerKind::DpmSolverPp2m,
            "dpmpp_2m_sde" | "dpm_solver_pp_2m_sde" => SamplerKind::DpmSolverPp2mSde { eta: 1.0 },
            "euler_maruyama" | "em" => SamplerKind::EulerMaruyama,
            "deis3" | "deis" | "deis_3" => SamplerKind::Deis3,
            "lms" => SamplerKind::Lms { order: 4 },
            "ipndm" => SamplerKind::Ipndm { order: 4 },
            "dpmpp_3m" | "dpm_solver_pp_3m" => SamplerKind::DpmSolverPp3m,
            "dpmpp_3m_sde" | "dpm_solver_pp_3m_sde" => SamplerKind::DpmSolverPp3mSde { eta: 1.0 },
            "dpmpp_3m_damped" | "dpm_solver_pp_3m_damped" => SamplerKind::DpmSolverPp3mDamped,
            "deis_logrho" | "deis_logrho3" => SamplerKind::DeisLogRho { order: 3 },
            "unipc" | "unipc_bh2" => SamplerKind::UniPc {
                order: 3,
                variant: UniPcVariant::Bh2,
                corrector: true,
            },
            "unipc_bh1" => SamplerKind::UniPc {
                order: 3,
                variant: UniPcVariant::Bh1,
                corrector: true,
            },
            "adaptive" | "dpm_adaptive" => SamplerKind::Adaptive {
                rtol: d::rtol(),
                atol: d::atol(),
            },
            _ => {
                return Err(SamplerError::UnknownSampler {
                    name: name.to_string(),
                    known: SAMPLER_NAMES.join(", "),
                })
            }
        })
    }

    /// Checks the parameters; errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        let nonneg = |k: &str, v: f64| {
            if v >= 0.0 && !v.is_nan() {
                Ok(())
            } else {
                Err(SamplerError::invalid(k, v, "must be ≥ 0"))
            }
        };
        let eta01 = |v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(SamplerError::invalid("eta", v, "must lie in [0, 1]"))
            }
        };
        match self {
            SamplerKind::EdmStochastic {
                s_churn,
                s_min,
                s_max,
                s_noise,
            } => Churn {
                s_churn: *s_churn,
                s_min: *s_min,
                s_max: *s_max,
                s_noise: *s_noise,
            }
            .validate(),
            SamplerKind::EulerAncestral { eta, s_noise } => {
                eta01(*eta)?;
                nonneg("s_noise", *s_noise)
            }
            SamplerKind::Ddim { eta }
            | SamplerKind::DpmSolverPp2mSde { eta }
            | SamplerKind::DpmSolverPp3mSde { eta } => eta01(*eta),
            SamplerKind::Lms { order } | SamplerKind::Ipndm { order } => {
                if (1..=4).contains(order) {
                    Ok(())
                } else {
                    Err(SamplerError::invalid("order", order, "must lie in 1 … 4"))
                }
            }
            SamplerKind::UniPc { order, .. } | SamplerKind::DeisLogRho { order } => {
                if (1..=3).contains(order) {
                    Ok(())
                } else {
                    Err(SamplerError::invalid("order", order, "must lie in 1 … 3"))
                }
            }
            SamplerKind::Adaptive { rtol, atol } => {
                if !(*rtol > 0.0 || *atol > 0.0)
                    || rtol.is_nan()
                    || atol.is_nan()
                    || *rtol < 0.0
                    || *atol < 0.0
                {
                    return Err(SamplerError::invalid(
                        "rtol/atol",
                        format!("{rtol}/{atol}"),
                        "need ≥ 0, not both 0",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether [`Churn`] can precede this sampler's steps: the deterministic one-step samplers
    /// in σ̃ (Euler, Heun, DPM-Solver++(2S); EDM's stochastic sampler is Heun with churn).
    /// Samplers with noise of their own already are SDE solvers; multistep ones would mix
    /// history from before and after the jump; DDIM works in process coordinates; the adaptive
    /// solver has no grid.
    pub fn accepts_churn(&self) -> bool {
        matches!(
            self,
            SamplerKind::Euler
                | SamplerKind::Heun
                | SamplerKind::EdmStochastic { .. }
                | SamplerKind::DpmSolverPp2s
        )
    }

    /// Whether the sampler draws noise after the initial state.
    pub fn is_stochastic(&self) -> bool {
        match self {
            SamplerKind::EdmStochastic { s_churn, .. } => *s_churn > 0.0,
            SamplerKind::EulerAncestral { eta, .. }
            | SamplerKind::Ddim { eta }
            | SamplerKind::DpmSolverPp2mSde { eta }
            | SamplerKind::DpmSolverPp3mSde { eta } => *eta > 0.0,
            SamplerKind::DdpmAncestral { .. } | SamplerKind::EulerMaruyama => true,
            _ => false,
        }
    }

    /// The short name (the first of [`SAMPLER_NAMES`] that parses to this kind).
    pub fn name(&self) -> &'static str {
        match self {
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
            SamplerKind::EdmStochastic { .. } => "edm_stochastic",
            SamplerKind::EulerAncestral { .. } => "euler_ancestral",
            SamplerKind::Ddim { .. } => "ddim",
            SamplerKind::DdpmAncestral {
                learned_variance: true,
            } => "ddpm_ancestral",
            SamplerKind::DdpmAncestral {
                learned_variance: false,
            } => "ddpm_fixed",
            SamplerKind::DpmSolverPp2s => "dpmpp_2s",
            SamplerKind::DpmSolverPp2m => "dpmpp_2m",
            SamplerKind::DpmSolverPp2mSde { .. } => "dpmpp_2m_sde",
            SamplerKind::EulerMaruyama => "euler_maruyama",
            SamplerKind::Deis3 => "deis3",
            SamplerKind::Lms { .. } => "lms",
            SamplerKind::Ipndm { .. } => "ipndm",
            SamplerKind::DpmSolverPp3m => "dpmpp_3m",
            SamplerKind::DpmSolverPp3mSde { .. } => "dpmpp_3m_sde",
            SamplerKind::DpmSolverPp3mDamped => "dpmpp_3m_damped",
            SamplerKind::DeisLogRho { .. } => "deis_logrho",
            SamplerKind::UniPc {
                variant: UniPcVariant::Bh1,
                ..
            } => "unipc_bh1",
            SamplerKind::UniPc { .. } => "unipc",
            SamplerKind::Adaptive { .. } => "adaptive",
        }
    }
}

/// Parameters set next to a sampler's name (`[sampling]` keys of a train config, flags of
/// `tweedie sample`); `None` keeps the sampler's default. [`SamplerKind::with_params`] is the
/// one place that maps them onto a [`SamplerKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplerParams {
    /// S_churn of EDM's stochastic sampler (Karras et al. 2022, Alg. 2).
    pub s_churn: Option<f64>,
    /// S_min: churn only for σ̃ ≥ S_min.
    pub s_min: Option<f64>,
    /// S_max: churn only for σ̃ ≤ S_max.
    pub s_max: Option<f64>,
    /// S_noise: scale of the fresh noise (EDM stochastic, Euler ancestral).
    pub s_noise: Option<f64>,
    /// η of DDIM, ancestral and SDE samplers.
    pub eta: Option<f64>,
}

impl SamplerParams {
    /// The parameters that are set, with their names.
    fn set(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("s_churn", self.s_churn),
            ("s_min", self.s_min),
            ("s_max", self.s_max),
            ("s_noise", self.s_noise),
            ("eta", self.eta),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

impl SamplerKind {
    /// The sampler called `name` with `params` applied and validated. `heun` with S_churn > 0 is
    /// EDM's stochastic sampler (Karras et al. 2022, Alg. 2 is Heun with churn); a parameter the
    /// sampler does not take is an error naming it.
    pub fn with_params(name: &str, params: &SamplerParams) -> Result<Self> {
        let mut kind = SamplerKind::from_name(name)?;
        if kind == SamplerKind::Heun && params.s_churn.is_some_and(|c| c > 0.0) {
            kind = SamplerKind::from_name("edm_stochastic")?;
        }
        let p = params;
        let mut used: &[&str] = match &mut kind {
            SamplerKind::EdmStochastic {
                s_churn,
                s_min,
                s_max,
                s_noise,
            } => {
                *s_churn = p.s_churn.unwrap_or(*s_churn);
                *s_min = p.s_min.unwrap_or(*s_min);
                *s_max = p.s_max.unwrap_or(*s_max);
                *s_noise = p.s_noise.unwrap_or(*s_noise);
                &["s_churn", "s_min", "s_max", "s_noise"]
            }
            SamplerKind::EulerAncestral { eta, s_noise } => {
                *eta = p.eta.unwrap_or(*eta);
                *s_noise = p.s_noise.unwrap_or(*s_noise);
                &["eta", "s_noise"]
            }
            SamplerKind::Ddim { eta }
            | SamplerKind::DpmSolverPp2mSde { eta }
            | SamplerKind::DpmSolverPp3mSde { eta } => {
                *eta = p.eta.unwrap_or(*eta);
                &["eta"]
            }
            _ => &[],
        };
        if kind == SamplerKind::Heun {
            // Heun with S_churn = 0 is plain Heun: the churn keys are accepted and unused.
            used = &["s_churn", "s_min", "s_max", "s_noise"];
        }
        if let Some((key, value)) = p.set().find(|(k, _)| !used.contains(k)) {
            return Err(SamplerError::invalid(
                key,
                value,
                format!(
                    "not a parameter of sampler `{}` (S_churn, S_min, S_max: edm_stochastic or \
                     heun; S_noise: also euler_ancestral; η: ddim, euler_ancestral, \
                     dpmpp_2m_sde, dpmpp_3m_sde)",
                    name.trim()
                ),
            ));
        }
        kind.validate()?;
        Ok(kind)
    }
}

/// A sampler and its step count, validated (steps ≥ 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    /// The integrator.
    pub kind: SamplerKind,
    /// Number of steps N of the timer grid.
    pub steps: usize,
}

impl SamplerSpec {
    /// Parse a name and step count: `steps = 0` and unknown names are errors.
    pub fn parse(name: &str, steps: usize) -> Result<Self> {
        let spec = SamplerSpec {
            kind: SamplerKind::from_name(name)?,
            steps,
        };
        spec.validate()?;
        Ok(spec)
    }
    /// Checks steps ≥ 1 and the kind's parameters.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(SamplerError::invalid("steps", 0, "must be at least 1"));
        }
        self.kind.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_errors() {
        for n in SAMPLER_NAMES {
            let k = SamplerKind::from_name(n).unwrap();
            assert_eq!(k.name(), n);
            k.validate().unwrap();
        }
        assert_eq!(
            SamplerKind::from_name("DPM++ 2M").unwrap(),
            SamplerKind::DpmSolverPp2m
        );
        let e = SamplerKind::from_name("eulr").unwrap_err().to_string();
        assert!(e.contains("eulr") && e.contains("heun"), "{e}");
        let e = SamplerSpec::parse("heun", 0).unwrap_err().to_string();
        assert!(e.contains("steps") && e.contains('0'), "{e}");
        assert!(SamplerSpec::parse("ddim", 10).is_ok());
        assert!(SamplerKind::Ddim { eta: 1.5 }.validate().is_err());
    }

    #[test]
    fn serde_toml_and_json() {
        let k: SamplerKind = toml::from_str("type = \"ddpm_ancestral\"").unwrap();
        assert_eq!(
            k,
            SamplerKind::DdpmAncestral {
                learned_variance: true
            }
        );
        let k: SamplerKind = toml::from_str("type = \"ddim\"\neta = 0.5").unwrap();
        assert_eq!(k, SamplerKind::Ddim { eta: 0.5 });
        let k: SamplerKind = toml::from_str("type = \"edm_stochastic\"\ns_churn = 10.0").unwrap();
        assert_eq!(
            k,
            SamplerKind::EdmStochastic {
                s_churn: 10.0,
                s_min: 0.0,
                s_max: f64::INFINITY,
                s_noise: 1.0
            }
        );
        assert!(toml::from_str::<SamplerKind>("type = \"ddim\"\netta = 0.5").is_err());
        let j = serde_json::to_string(&SamplerKind::DpmSolverPp2mSde { eta: 1.0 }).unwrap();
        assert_eq!(
            serde_json::from_str::<SamplerKind>(&j).unwrap(),
            SamplerKind::DpmSolverPp2mSde { eta: 1.0 }
        );
        let s: SamplerSpec = toml::from_str("steps = 18\n[kind]\ntype = \"heun\"").unwrap();
        assert_eq!(s.steps, 18);
    }

    #[test]
    fn params_map_onto_the_sampler_and_unused_ones_are_named() {
        let p = |s_churn, eta| SamplerParams {
            s_churn,
            eta,
            ..Default::default()
        };
        assert_eq!(
            SamplerKind::with_params("heun", &p(Some(10.0), None)).unwrap(),
            SamplerKind::EdmStochastic {
                s_churn: 10.0,
                s_min: 0.0,
                s_max: f64::INFINITY,
                s_noise: 1.0
            }
        );
        assert_eq!(
            SamplerKind::with_params("heun", &p(Some(0.0), None)).unwrap(),
            SamplerKind::Heun
        );
        assert_eq!(
            SamplerKind::with_params("dpmpp_3m_sde", &p(None, Some(0.5))).unwrap(),
            SamplerKind::DpmSolverPp3mSde { eta: 0.5 }
        );
        let e = SamplerKind::with_params("euler", &p(Some(5.0), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s_churn") && e.contains("euler"), "{e}");
        let e = SamplerKind::with_params("ddim", &p(None, Some(2.0)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("eta") && e.contains('2'), "{e}");
    }
}
