//! Timers: explicit decreasing time discretisations for samplers.
//!
//! Grid contract (every timer): `t` is strictly decreasing, `t.len() == steps + 1`, and the last
//! entry is the terminal point t = 0 with σ̃ = 0 (every built-in process has σ̃(0) = 0). Most
//! timers place `steps` noise levels and append the terminal 0 (the last step of a sampler is
//! then a jump to σ̃ = 0, as in Karras et al. 2022, Algorithm 1); `UniformTime` spaces all
//! `steps + 1` points evenly down to 0, and DDIM grids append t = 0 (ᾱ = 1) after the table
//! indices, as DDIM's final step to x₀ does.

use crate::defaults::de as d;
use crate::error::Invalid;
use crate::error::{check_lt, check_pos, check_sigma_range, CoreError, Result};
use crate::process::{iddpm_u_grid, Process};

/// A decreasing grid of times and the matching EDM noise levels σ̃ = σ/α.
///
/// `t.len() == sigma_tilde.len() == steps + 1`. The last entry is the terminal point
/// (σ̃ = 0 at t = 0, or t_min when the process has no σ̃ = 0): a sampler never guesses.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeGrid {
    /// Times, strictly decreasing, ending at 0.
    pub t: Vec<f64>,
    /// σ̃(t_i) = σ/α at each time (0 at the terminal point).
    pub sigma_tilde: Vec<f64>,
}

/// `f` of each entry, with 0 kept as 0: the terminal point is t = 0 ⇔ σ̃ = 0 by convention,
/// whatever a process's maps give at the ends of its interval.
fn zero_kept(v: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    v.iter()
        .map(|&x| if x == 0.0 { 0.0 } else { f(x) })
        .collect()
}

impl TimeGrid {
    /// Number of steps (`t.len() − 1`).
    pub fn steps(&self) -> usize {
        self.t.len().saturating_sub(1)
    }

    /// Grid from noise levels (decreasing, without the terminal 0), mapped to t by the process,
    /// with the terminal (t = 0, σ̃ = 0) appended.
    pub fn from_sigma_tilde(process: &dyn Process, sigma_tilde: Vec<f64>) -> Result<Self> {
        let mut s = sigma_tilde;
        s.push(0.0);
        Self::checked(Self::at_levels(process, s))
    }

    /// Grid from times (decreasing, including the terminal entry), σ̃ from the process.
    pub fn from_times(process: &dyn Process, t: Vec<f64>) -> Result<Self> {
        let sigma_tilde = zero_kept(&t, |t| process.sigma_tilde(t));
        Self::checked(TimeGrid { t, sigma_tilde })
    }

    /// The grid of the levels `sigma_tilde` as given (terminal 0 included or not), t = t(σ̃)
    /// and t = 0 at σ̃ = 0, without the checks of [`TimeGrid::from_sigma_tilde`]: for callers
    /// that validate their own σ̃ vectors (the samplers' front door, sub-runs).
    pub fn at_levels(process: &dyn Process, sigma_tilde: Vec<f64>) -> Self {
        let t = zero_kept(&sigma_tilde, |s| process.t_of_sigma_tilde(s));
        TimeGrid { t, sigma_tilde }
    }

    /// Enforces the grid contract: no NaN, t and σ̃ ≥ 0, t strictly decreasing and σ̃
    /// non-increasing. A timer whose parameters do not suit the process (e.g. `t_max = 2` for
    /// flow, whose t ≤ 1) is refused here instead of yielding negative or unordered levels.
    fn checked(self) -> Result<Self> {
        let steps = self.t.len().saturating_sub(1);
        if let Some(i) = (0..self.t.len())
            .find(|&i| self.t[i].is_nan() || self.sigma_tilde.get(i).is_none_or(|s| s.is_nan()))
        {
            return Err(CoreError::invalid(
                "grid",
                format!("{steps} steps"),
                format!(
                    "entry {i} is NaN (t = {}); check the timer's parameters",
                    self.t[i]
                ),
            ));
        }
        if let Some(i) = (0..self.t.len()).find(|&i| self.t[i] < 0.0 || self.sigma_tilde[i] < 0.0) {
            return Err(CoreError::invalid(
                "grid",
                format!("{steps} steps"),
                format!(
                    "entry {i} is negative (t = {}, σ̃ = {}): the timer's range does not fit \
                     the process",
                    self.t[i], self.sigma_tilde[i]
                ),
            ));
        }
        for (i, w) in self.t.windows(2).enumerate() {
            let (s0, s1) = (self.sigma_tilde[i], self.sigma_tilde[i + 1]);
            if w[0] <= w[1] || s0 < s1 {
                return Err(CoreError::invalid(
                    "grid",
                    format!("{steps} steps"),
                    format!(
                        "not decreasing at entry {i}: t = {} then {}, σ̃ = {s0} then {s1}; \
                         check the timer's parameters (and steps) against the process",
                        w[0], w[1]
                    ),
                ));
            }
        }
        Ok(self)
    }
}

/// A time discretisation.
pub trait Timer: Send + Sync + std::fmt::Debug {
    /// The grid for `steps` steps under `process`.
    fn grid(&self, process: &dyn Process, steps: usize) -> crate::Result<TimeGrid>;
}

/// DDIM sub-sequences of a T-step training table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DdimSpacing {
    /// j_i = i·⌊T/S⌋, i = 0..S−1 (Song et al. 2021 DDIM "uniform"; diffusers "leading").
    #[default]
    Uniform,
    /// j_i = ⌊(i/(S−1)·√(0.8T))²⌋ (Song et al. 2021 DDIM "quadratic").
    Quadratic,
    /// j_i = round(T − i·T/S) − 1 (Lin et al. 2024, "trailing"; starts at j = T−1).
    Trailing,
}

/// Every built-in timer (TOML: `timer = { type = "edm", rho = 7.0, ... }`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimerKind {
    /// Karras et al. 2022 ρ-schedule in σ̃: (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then 0.
    Edm {
        #[serde(default = "d::edm_sigma_min")]
        sigma_min: f64,
        #[serde(default = "d::edm_sigma_max")]
        sigma_max: f64,
        #[serde(default = "d::edm_rho")]
        rho: f64,
    },
    /// VP: t_i = t_max + i/(N−1)·(ε_s − t_max), then 0 (Song et al. 2021; Karras et al. 2022, Table 1).
    VpLinear {
        #[serde(default = "d::vp_eps_s")]
        eps_s: f64,
    },
    /// VE: σ̃_i = σ_max·(σ_min/σ_max)^{i/(N−1)}, then 0 (Song et al. 2021; Karras et al. 2022, Table 1).
    VeGeometric {
        #[serde(default = "d::ve_sigma_min")]
        sigma_min: f64,
        #[serde(default = "d::ve_sigma_max")]
        sigma_max: f64,
    },
    /// iDDPM: σ̃_i = u_{⌊j₀ + (M−1−j₀)·i/(N−1) + ½⌋}, then 0 (Karras et al. 2022, Table 1; j₀ = 8).
    Iddpm {
        #[serde(default = "d::iddpm_c1")]
        c1: f64,
        #[serde(default = "d::iddpm_c2")]
        c2: f64,
        #[serde(default = "d::iddpm_m")]
        m: usize,
        #[serde(default = "d::iddpm_j0")]
        j0: usize,
    },
    /// DDIM sub-sequence of a `num_train_steps` table, table index j at t = (j+1)/T, then t = 0.
    Ddim {
        #[serde(default)]
        spacing: DdimSpacing,
        #[serde(default = "d::ddpm_steps")]
        num_train_steps: usize,
    },
    /// Log-uniform σ̃ from σ_max to σ_min, then 0 (k-diffusion `get_sigmas_exponential`;
    /// the same formula as `VeGeometric`, with EDM default bounds).
    Exponential {
        #[serde(default = "d::edm_sigma_min")]
        sigma_min: f64,
        #[serde(default = "d::edm_sigma_max")]
        sigma_max: f64,
    },
    /// Polynomial in log σ̃: ln σ̃_i = ln σ_min + (1 − i/(N−1))^ρ·(ln σ_max − ln σ_min), then 0
    /// (k-diffusion `get_sigmas_polyexponential`); ρ = 1 is `Exponential`, ρ > 1 puts more
    /// steps at low noise.
    PolyExponential {
        #[serde(default = "d::edm_sigma_min")]
        sigma_min: f64,
        #[serde(default = "d::edm_sigma_max")]
        sigma_max: f64,
        #[serde(default = "d::poly_rho")]
        rho: f64,
    },
    /// Align Your Steps (Sabour, Fidler & Kreis 2024): the published 10-step noise levels
    /// optimised for Stable Diffusion 1.5 (σ̃ from 14.615 to 0.0292), log-linearly
    /// interpolated to N + 1 levels with the last set to 0, as the authors prescribe.
    AlignYourSteps,
    /// Uniform in λ = log(α/σ) = −log σ̃ from λ(t_max) to λ(t_min), then 0 (Lu et al. 2022,
    /// DPM-Solver "logSNR" steps); bounds default to the process's `t_range` (t_min = 1e-3 when
    /// σ̃(t_min) = 0, DPM-Solver's ε).
    UniformLogsnr {
        #[serde(default)]
        t_min: Option<f64>,
        #[serde(default)]
        t_max: Option<f64>,
    },
    /// t_i = t_max·(1 − i/N), i = 0..N, ending at 0 (flow Euler grid); t_max defaults to the
    /// process's.
    UniformTime {
        #[serde(default)]
        t_max: Option<f64>,
    },
    /// A base grid with every noise level scaled, σ̃′ = s·σ̃; for rectified flow this is
    /// t′ = s·t/(1 + (s−1)·t) (Esser et al. 2024, SD3, eq. 23).
    Shifted { shift: f64, base: Box<TimerKind> },
}

impl TimerKind {
    /// EDM ρ = 7 schedule, σ̃ ∈ [0.002, 80] (Karras et al. 2022, eq. 5).
    pub fn edm() -> Self {
        TimerKind::Edm {
            sigma_min: d::edm_sigma_min(),
            sigma_max: d::edm_sigma_max(),
            rho: d::edm_rho(),
        }
    }
    /// VP linear t with ε_s = 1e-3 (Karras et al. 2022, Table 1).
    pub fn vp_linear() -> Self {
        TimerKind::VpLinear {
            eps_s: d::vp_eps_s(),
        }
    }
    /// VE geometric σ̃ ∈ [0.02, 100].
    pub fn ve_geometric() -> Self {
        TimerKind::VeGeometric {
            sigma_min: d::ve_sigma_min(),
            sigma_max: d::ve_sigma_max(),
        }
    }
    /// iDDPM u-grid with C₁ = 0.001, C₂ = 0.008, M = 1000, j₀ = 8.
    pub fn iddpm() -> Self {
        TimerKind::Iddpm {
            c1: d::iddpm_c1(),
            c2: d::iddpm_c2(),
            m: d::iddpm_m(),
            j0: d::iddpm_j0(),
        }
    }
    /// DDIM with the given spacing on a 1000-step table.
    pub fn ddim(spacing: DdimSpacing) -> Self {
        TimerKind::Ddim {
            spacing,
            num_train_steps: d::ddpm_steps(),
        }
    }
    /// Uniform time down to 0 (flow models).
    pub fn uniform_time() -> Self {
        TimerKind::UniformTime { t_max: None }
    }
    /// `base` with σ̃ scaled by `shift`.
    pub fn shifted(shift: f64, base: TimerKind) -> Self {
        TimerKind::Shifted {
            shift,
            base: Box::new(base),
        }
    }

    /// Checks the parameters (not the step count); errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        match self {
            TimerKind::Edm {
                sigma_min,
                sigma_max,
                rho,
            } => {
                check_sigma_range(*sigma_min, *sigma_max)?;
                check_pos("rho", *rho)?;
                // The ramp runs in σ̃^{1/ρ}: a small ρ overflows σ_max^{1/ρ} or underflows
                // σ_min^{1/ρ} to 0, and every level would be ∞ or 0.
                let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
                if !(a.is_finite() && b > 0.0 && a > b) {
                    return Err(CoreError::invalid(
                        "rho",
                        rho,
                        format!(
                            "σ_max^(1/ρ) = {a:e} and σ_min^(1/ρ) = {b:e} leave f64 range for \
                             σ̃ in [{sigma_min}, {sigma_max}]; use a larger rho"
                        ),
                    ));
                }
                Ok(())
            }
            TimerKind::VpLinear { eps_s } => check_pos("eps_s", *eps_s),
            TimerKind::VeGeometric {
                sigma_min,
                sigma_max,
            }
            | TimerKind::Exponential {
                sigma_min,
                sigma_max,
            } => check_sigma_range(*sigma_min, *sigma_max),
            TimerKind::Iddpm { c1, c2, m, j0 } => {
                crate::process::check_iddpm_grid(*c1, *c2, *m)?;
                if *j0 >= m - 1 {
                    return Err(CoreError::invalid(
                        "j0",
                        j0,
                        format!("must be < m − 1 = {}", m - 1),
                    ));
                }
                Ok(())
            }
            TimerKind::Ddim {
                num_train_steps, ..
            } => {
                if *num_train_steps < 1 {
                    return Err(CoreError::invalid(
                        "num_train_steps",
                        num_train_steps,
                        "must be >= 1",
                    ));
                }
                crate::budget::check_array(
                    "num_train_steps",
                    num_train_steps,
                    &[*num_train_steps],
                    8,
                )?;
                Ok(())
            }
            TimerKind::PolyExponential {
                sigma_min,
                sigma_max,
                rho,
            } => {
                check_sigma_range(*sigma_min, *sigma_max)?;
                check_pos("rho", *rho)
            }
            TimerKind::AlignYourSteps => Ok(()),
            TimerKind::UniformLogsnr { t_min, t_max } => {
                if let Some(v) = t_min {
                    check_pos("t_min", *v)?;
                }
                if let Some(v) = t_max {
                    check_pos("t_max", *v)?;
                }
                if let (Some(a), Some(b)) = (t_min, t_max) {
                    check_lt("t_min", *a, "t_max", *b)?;
                }
                Ok(())
            }
            TimerKind::UniformTime { t_max } => match t_max {
                Some(v) => check_pos("t_max", *v),
                None => Ok(()),
            },
            TimerKind::Shifted { shift, base } => {
                check_pos("shift", *shift)?;
                base.validate()
            }
        }
    }
}

/// Align Your Steps' published noise levels for Stable Diffusion 1.5, 10 steps (Sabour et al.
/// 2024, project page "how to" table).
pub const AYS_SD15: [f64; 11] = [
    14.6146412293,
    6.4745760956,
    3.8636745985,
    2.6946151520,
    1.8841921177,
    1.3943805092,
    0.9642583904,
    0.6523686016,
    0.3977456272,
    0.1515232662,
    0.0291671582,
];

/// n decreasing levels interpolating `levels` (decreasing) piecewise linearly in ln σ̃ at equally
/// spaced positions: the published levels are the knots at positions i/(len − 1).
fn loglinear_resample(levels: &[f64], n: usize) -> Vec<f64> {
    let m = levels.len() - 1;
    ramp(n, 0.0, m as f64)
        .into_iter()
        .map(|p| {
            let k = (p.floor() as usize).min(m - 1);
            let f = p - k as f64;
            (levels[k].ln() * (1.0 - f) + levels[k + 1].ln() * f).exp()
        })
        .collect()
}

/// x_i = a + i/(n−1)·(b − a), i = 0..n−1 (just `a` when n = 1).
fn ramp(n: usize, a: f64, b: f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if n == 1 {
                a
            } else {
                a + (b - a) * i as f64 / (n - 1) as f64
            }
        })
        .collect()
}

impl TimerKind {
    /// Refuses a timer that is not defined for `process`: DDIM's sub-sequences index a discrete
    /// DDPM table, and the VP linear-time grid (Song et al. 2021) is a VP-family grid; any other
    /// pair is checked by range on the grid itself ([`TimerKind::check_grid_range`]).
    pub fn check_process(&self, process: &crate::ProcessKind) -> Result<()> {
        use crate::ProcessKind as P;
        let (ok, wants) = match self {
            TimerKind::Ddim { .. } => (matches!(process, P::Ddpm { .. }), "ddpm"),
            TimerKind::VpLinear { .. } => (
                matches!(process, P::Vp { .. } | P::VpCosine { .. } | P::Ddpm { .. }),
                "vp, vp_cosine or ddpm",
            ),
            TimerKind::Shifted { base, .. } => return base.check_process(process),
            _ => (true, ""),
        };
        if ok {
            return Ok(());
        }
        let name = toml::Value::try_from(process)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("{process:?}"));
        Err(CoreError::invalid(
            "timer",
            self.type_name(),
            format!("is defined for the process {wants}, not {name}"),
        ))
    }

    /// The TOML `type` of this timer (`edm`, `vp_linear`, …).
    pub fn type_name(&self) -> String {
        toml::Value::try_from(self)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default()
    }

    /// Refuses a grid that starts beyond the process's last time (e.g. σ̃ = 100 for an EDM
    /// process with σ_max = 80): the sampler would leave the process's domain.
    pub fn check_grid_range(&self, process: &dyn Process, grid: &TimeGrid) -> Result<()> {
        let t_max = process.t_range().1;
        match grid.t.first() {
            Some(&t0) if t0 > t_max * (1.0 + 1e-9) => Err(CoreError::invalid(
                "timer",
                self.type_name(),
                format!(
                    "its grid starts at t = {t0} (σ̃ = {}), beyond the process's t_max = {t_max}; \
                     lower the timer's upper bound",
                    grid.sigma_tilde[0]
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl Timer for TimerKind {
    fn grid(&self, process: &dyn Process, steps: usize) -> Result<TimeGrid> {
        if steps < 1 {
            return Err(CoreError::invalid("steps", steps, "must be >= 1"));
        }
        // t and σ̃, steps + 1 values each, plus the timer's own scratch of the same size.
        crate::budget::check_array("steps", steps, &[steps.saturating_add(1), 4], 8)?;
        self.validate()?;
        let n = steps;
        match self {
            TimerKind::Edm {
                sigma_min,
                sigma_max,
                rho,
            } => {
                let s = ramp(n, sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho))
                    .into_iter()
                    .map(|v| v.powf(*rho))
                    .collect();
                TimeGrid::from_sigma_tilde(process, s)
            }
            TimerKind::VpLinear { eps_s } => {
                let t_max = process.t_range().1;
                check_lt("eps_s", *eps_s, "t_max", t_max)?;
                let mut t = ramp(n, t_max, *eps_s);
                t.push(0.0);
                TimeGrid::from_times(process, t)
            }
            TimerKind::VeGeometric {
                sigma_min,
                sigma_max,
            }
            | TimerKind::Exponential {
                sigma_min,
                sigma_max,
            } => {
                let s = ramp(n, sigma_max.ln(), sigma_min.ln())
                    .into_iter()
                    .map(f64::exp)
                    .collect();
                TimeGrid::from_sigma_tilde(process, s)
            }
            TimerKind::PolyExponential {
                sigma_min,
                sigma_max,
                rho,
            } => {
                let (lo, hi) = (sigma_min.ln(), sigma_max.ln());
                let s = ramp(n, 1.0, 0.0)
                    .into_iter()
                    .map(|r| (lo + r.powf(*rho) * (hi - lo)).exp())
                    .collect();
                TimeGrid::from_sigma_tilde(process, s)
            }
            TimerKind::AlignYourSteps => {
                // N + 1 levels, the last replaced by 0 (the authors' recipe: at N = 10 the grid is
                // the published table with its final 0.0292 set to 0).
                let mut s = loglinear_resample(&AYS_SD15, n + 1);
                s.pop();
                TimeGrid::from_sigma_tilde(process, s)
            }
            TimerKind::Iddpm { c1, c2, m, j0 } => {
                let u = iddpm_u_grid(*c1, *c2, *m);
                let s = ramp(n, *j0 as f64, (*m - 1) as f64)
                    .into_iter()
                    .map(|j| u[((j + 0.5).floor() as usize).min(m - 1)])
                    .collect();
                TimeGrid::from_sigma_tilde(process, s)
            }
            TimerKind::Ddim {
                spacing,
                num_train_steps,
            } => {
                let big_t = *num_train_steps;
                if n > big_t {
                    return Err(CoreError::invalid(
                        "steps",
                        n,
                        format!("must be <= num_train_steps = {big_t}"),
                    ));
                }
                let js: Vec<f64> = match spacing {
                    DdimSpacing::Uniform => {
                        (0..n).rev().map(|i| (i * (big_t / n)) as f64).collect()
                    }
                    DdimSpacing::Quadratic => ramp(n, 0.0, (0.8 * big_t as f64).sqrt())
                        .into_iter()
                        .rev()
                        .map(|v| (v * v).floor())
                        .collect(),
                    DdimSpacing::Trailing => (0..n)
                        .map(|i| (big_t as f64 - i as f64 * big_t as f64 / n as f64).round() - 1.0)
                        .collect(),
                };
                let mut t: Vec<f64> = js.into_iter().map(|j| (j + 1.0) / big_t as f64).collect();
                t.push(0.0);
                TimeGrid::from_times(process, t)
            }
            TimerKind::UniformLogsnr { t_min, t_max } => {
                let (lo, hi) = process.t_range();
                // σ̃(t_min) = 0 would put λ at +∞: fall back to DPM-Solver's ε = 1e-3.
                let lo = t_min.unwrap_or(if process.sigma_tilde(lo) > 0.0 {
                    lo
                } else {
                    1e-3
                });
                let hi = t_max.unwrap_or(hi);
                check_lt("t_min", lo, "t_max", hi)?;
                let (l_hi, l_lo) = (process.sigma_tilde(hi).ln(), process.sigma_tilde(lo).ln());
                if !(l_hi.is_finite() && l_lo.is_finite()) {
                    return Err(CoreError::invalid(
                        "t_max",
                        hi,
                        "σ̃ must be finite and > 0 at both ends; set t_min/t_max",
                    ));
                }
                let s = ramp(n, l_hi, l_lo).into_iter().map(f64::exp).collect();
                TimeGrid::from_sigma_tilde(process, s)
            }
            TimerKind::UniformTime { t_max } => {
                let hi = t_max.unwrap_or(process.t_range().1);
                let t = (0..=n).map(|i| hi * (1.0 - i as f64 / n as f64)).collect();
                TimeGrid::from_times(process, t)
            }
            TimerKind::Shifted { shift, base } => {
                let g = base.grid(process, steps)?;
                let mut t = Vec::with_capacity(g.t.len());
                let mut s = Vec::with_capacity(g.t.len());
                for (&ti, &si) in g.t.iter().zip(&g.sigma_tilde) {
                    if si.is_infinite() || si == 0.0 {
                        t.push(ti);
                        s.push(si);
                    } else {
                        t.push(process.t_of_sigma_tilde(shift * si));
                        s.push(shift * si);
                    }
                }
                TimeGrid::checked(TimeGrid { t, sigma_tilde: s })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessKind;
    use approx::assert_relative_eq;

    fn check_contract(g: &TimeGrid, steps: usize) {
        assert_eq!(g.t.len(), steps + 1);
        assert_eq!(g.sigma_tilde.len(), steps + 1);
        assert_eq!(*g.t.last().unwrap(), 0.0);
        assert_eq!(*g.sigma_tilde.last().unwrap(), 0.0);
        assert!(g.t.windows(2).all(|w| w[0] > w[1]));
        assert!(g.sigma_tilde.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn edm_18_step_grid_matches_published_values() {
        let p = ProcessKind::edm().build();
        let g = TimerKind::edm().grid(p.as_ref(), 18).unwrap();
        check_contract(&g, 18);
        assert_relative_eq!(g.sigma_tilde[0], 80.0, epsilon = 1e-12);
        assert_relative_eq!(g.sigma_tilde[1], 57.586, epsilon = 5e-4);
        assert_relative_eq!(g.sigma_tilde[2], 40.786, epsilon = 5e-4);
        assert_relative_eq!(g.sigma_tilde[16], 0.00753, epsilon = 5e-6);
        assert_relative_eq!(g.sigma_tilde[17], 0.002, epsilon = 1e-12);
        assert_eq!(g.t, g.sigma_tilde);
    }

    /// AYS at its native 10 steps is the published table (last level → 0); at 20 steps every
    /// other level is a published one; polyexponential with ρ = 1 is the exponential grid.
    #[test]
    fn ays_and_polyexponential_grids() {
        let p = ProcessKind::edm().build();
        let g = TimerKind::AlignYourSteps.grid(p.as_ref(), 10).unwrap();
        check_contract(&g, 10);
        for (got, want) in g.sigma_tilde.iter().zip(&AYS_SD15[..10]) {
            assert_relative_eq!(*got, *want, max_relative = 1e-12);
        }
        let g20 = TimerKind::AlignYourSteps.grid(p.as_ref(), 20).unwrap();
        check_contract(&g20, 20);
        for (got, want) in g20.sigma_tilde.iter().step_by(2).zip(&AYS_SD15[..10]) {
            assert_relative_eq!(*got, *want, max_relative = 1e-12);
        }
        let e = TimerKind::Exponential {
            sigma_min: 0.002,
            sigma_max: 80.0,
        };
        let pe = TimerKind::PolyExponential {
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 1.0,
        };
        let (a, b) = (
            e.grid(p.as_ref(), 7).unwrap(),
            pe.grid(p.as_ref(), 7).unwrap(),
        );
        for (x, y) in a.sigma_tilde.iter().zip(&b.sigma_tilde) {
            assert_relative_eq!(*x, *y, max_relative = 1e-12);
        }
        // ρ = 2: the midpoint of the ramp sits at ln σ_min + ¼·(ln σ_max − ln σ_min).
        let p2 = TimerKind::PolyExponential {
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 2.0,
        };
        let g = p2.grid(p.as_ref(), 5).unwrap();
        let want = (0.002f64.ln() + 0.25 * (80f64.ln() - 0.002f64.ln())).exp();
        assert_relative_eq!(g.sigma_tilde[2], want, max_relative = 1e-12);
    }

    #[test]
    fn every_timer_obeys_the_contract_on_every_process() {
        let timers = vec![
            TimerKind::AlignYourSteps,
            TimerKind::PolyExponential {
                sigma_min: 0.002,
                sigma_max: 80.0,
                rho: 2.0,
            },
            TimerKind::edm(),
            TimerKind::vp_linear(),
            TimerKind::ve_geometric(),
            TimerKind::iddpm(),
            TimerKind::ddim(DdimSpacing::Uniform),
            TimerKind::ddim(DdimSpacing::Quadratic),
            TimerKind::ddim(DdimSpacing::Trailing),
            TimerKind::Exponential {
                sigma_min: 0.002,
                sigma_max: 80.0,
            },
            TimerKind::UniformLogsnr {
                t_min: None,
                t_max: None,
            },
            TimerKind::uniform_time(),
            TimerKind::shifted(3.0, TimerKind::uniform_time()),
        ];
        let procs = [
            ProcessKind::vp(),
            ProcessKind::vp_cosine(),
            ProcessKind::ddpm_linear(),
            ProcessKind::edm(),
        ];
        for tk in &timers {
            for pk in &procs {
                let p = pk.build();
                if matches!(tk, TimerKind::Ddim { .. }) && matches!(pk, ProcessKind::Edm { .. }) {
                    continue; // DDIM times live on [0, 1]
                }
                for steps in [1, 2, 10, 50] {
                    if steps == 50 && *tk == TimerKind::ddim(DdimSpacing::Quadratic) {
                        // ⌊(1/49·√800)²⌋ = ⌊(0/49·√800)²⌋ = 0: a repeated index is an error.
                        assert!(tk.grid(p.as_ref(), steps).is_err());
                        continue;
                    }
                    let g = tk
                        .grid(p.as_ref(), steps)
                        .unwrap_or_else(|e| panic!("{tk:?} {pk:?} {steps}: {e}"));
                    check_contract(&g, steps);
                    for (t, s) in g.t.iter().zip(&g.sigma_tilde) {
                        if *t > 0.0 && s.is_finite() {
                            assert_relative_eq!(p.sigma_tilde(*t), *s, max_relative = 1e-9);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vp_and_ve_and_iddpm_endpoints() {
        let vp = ProcessKind::vp().build();
        let g = TimerKind::vp_linear().grid(vp.as_ref(), 5).unwrap();
        for (a, b) in g.t.iter().zip([1.0, 0.75025, 0.5005, 0.25075, 0.001, 0.0]) {
            assert_relative_eq!(*a, b, epsilon = 1e-15);
        }
        let ve = ProcessKind::ve().build();
        let g = TimerKind::ve_geometric().grid(ve.as_ref(), 3).unwrap();
        assert_relative_eq!(
            g.sigma_tilde[1],
            (100.0_f64 * 0.02).sqrt(),
            max_relative = 1e-12
        );
        assert_relative_eq!(g.t[0], 1e4, max_relative = 1e-12);
        let edm = ProcessKind::edm().build();
        let g = TimerKind::iddpm().grid(edm.as_ref(), 2).unwrap();
        let u = iddpm_u_grid(0.001, 0.008, 1000);
        assert_eq!(g.sigma_tilde, vec![u[8], u[999], 0.0]);
    }

    #[test]
    fn ddim_index_sequences() {
        let p = ProcessKind::ddpm_linear().build();
        let idx = |sp| -> Vec<f64> {
            let g = TimerKind::ddim(sp).grid(p.as_ref(), 4).unwrap();
            g.t.iter().map(|t| (t * 1000.0 - 1.0).round()).collect()
        };
        assert_eq!(
            idx(DdimSpacing::Uniform),
            vec![750.0, 500.0, 250.0, 0.0, -1.0]
        );
        assert_eq!(
            idx(DdimSpacing::Trailing),
            vec![999.0, 749.0, 499.0, 249.0, -1.0]
        );
        // ⌊(i/3·√800)²⌋ = 0, 88, 355, 800.
        assert_eq!(
            idx(DdimSpacing::Quadratic),
            vec![800.0, 355.0, 88.0, 0.0, -1.0]
        );
        assert!(TimerKind::ddim(DdimSpacing::Quadratic)
            .grid(p.as_ref(), 900)
            .is_err());
    }

    #[test]
    fn flow_shift_matches_sd3_formula() {
        let p = ProcessKind::flow().build();
        let base = TimerKind::uniform_time().grid(p.as_ref(), 4).unwrap();
        assert_eq!(base.t, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        assert!(base.sigma_tilde[0].is_infinite());
        let g = TimerKind::shifted(3.0, TimerKind::uniform_time())
            .grid(p.as_ref(), 4)
            .unwrap();
        for (tb, ts) in base.t.iter().zip(&g.t) {
            assert_relative_eq!(*ts, 3.0 * tb / (1.0 + 2.0 * tb), max_relative = 1e-12);
        }
    }

    #[test]
    fn validation_errors_name_key_and_value() {
        let p = ProcessKind::edm().build();
        let e = TimerKind::edm()
            .grid(p.as_ref(), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("steps") && e.contains('0'), "{e}");
        let e = TimerKind::Edm {
            sigma_min: 1.0,
            sigma_max: 0.5,
            rho: 7.0,
        }
        .grid(p.as_ref(), 3)
        .unwrap_err()
        .to_string();
        assert!(e.contains("sigma_max") && e.contains("0.5"), "{e}");
        let e = TimerKind::Edm {
            sigma_min: 0.1,
            sigma_max: 0.5,
            rho: -2.0,
        }
        .grid(p.as_ref(), 3)
        .unwrap_err()
        .to_string();
        assert!(e.contains("rho") && e.contains("-2"), "{e}");
    }
}
