//! The samplers under test, how many steps fit an NFE budget, and their counterparts in
//! k-diffusion and diffusers.

use anyhow::{Context, Result};
use ndarray::Array2;
use tweedie_core::process::Edm;
use tweedie_core::{Timer, TimerKind};
use tweedie_samplers::{Init, Model, Sampler, SamplerKind};

/// How a sampler is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    /// ODE solver on a fixed grid: endpoint error and convergence order.
    Deterministic,
    /// SDE / ancestral sampler: distribution errors only.
    Stochastic,
    /// Error-controlled solver: swept over tolerances; the NFE is an outcome.
    Adaptive,
}

/// One of our samplers.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub kind: CaseKind,
    sampler: SamplerKind,
    /// Denoiser calls per step on a grid of N steps ending at 0: nfe = a·N + b.
    nfe_per_step: (usize, isize),
    seed: u64,
    /// The time grid (the reference libraries always run on the Karras grid).
    grid: Grid,
}

/// Time grids from the bench's σ_max, then 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// Karras et al. 2022 (eq. 5), ρ = 7, down to σ_min = 0.002: every library's default for
    /// EDM-style sampling, and the grid of every reference-library run.
    Karras,
    /// Uniform in log σ̃ (= uniform log-SNR; DPM-Solver's recommendation for its multistep
    /// solvers, Lu et al. 2022), same end points.
    LogSnr,
    /// Karras ρ = 10 down to σ_min = 0.01 (`TUNED_KARRAS`), for the samplers whose step to
    /// σ̃ = 0 integrates the ODE rather than returning D.
    KarrasTuned,
    /// Uniform log-SNR down to σ_min = 0.1 (`TUNED_LOGSNR_SIGMA_MIN`), likewise.
    LogSnrTuned,
}

/// (ρ, σ_min) of [`Grid::KarrasTuned`] and σ_min of [`Grid::LogSnrTuned`]: picked by
/// `scripts/tune_grids.py` on two mixtures that are not the benchmark's (2-D, 3 components;
/// 16-D, 4 components), best median error of `deis_logrho` at NFE 10 and 20 (Karras) and at
/// NFE 5 (log-SNR) over ρ ∈ {3, 5, 7, 10} × σ_min ∈ {0.002, 0.01, 0.03, 0.1}.
pub const TUNED_KARRAS: (f64, f64) = (10.0, 0.01);
/// See [`TUNED_KARRAS`].
pub const TUNED_LOGSNR_SIGMA_MIN: f64 = 0.1;

/// The process of every bench run: EDM, α = 1, σ(t) = t (Karras et al. 2022), so σ̃ = σ.
pub fn process() -> Edm {
    Edm {
        sigma_min: super::SIGMA_MIN,
        sigma_max: super::SIGMA_MAX,
    }
}

fn timer(grid: Grid, sigma_min: f64, sigma_max: f64, rho: f64) -> TimerKind {
    match grid {
        Grid::KarrasTuned => TimerKind::Edm {
            sigma_min: TUNED_KARRAS.1,
            sigma_max,
            rho: TUNED_KARRAS.0,
        },
        Grid::LogSnrTuned => TimerKind::Exponential {
            sigma_min: TUNED_LOGSNR_SIGMA_MIN,
            sigma_max,
        },
        Grid::Karras => TimerKind::Edm {
            sigma_min,
            sigma_max,
            rho,
        },
        Grid::LogSnr => TimerKind::Exponential {
            sigma_min,
            sigma_max,
        },
    }
}

/// The Karras et al. 2022 (eq. 5) grid of `steps` noise levels followed by 0: the samplers'
/// own `grids::karras` (tweedie-core's EDM timer), as users of the front door get it.
pub fn karras_grid(steps: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Result<Vec<f64>> {
    tweedie_samplers::grids::karras(steps, sigma_min, sigma_max, rho).context("EDM timer grid")
}

impl Case {
    fn new(
        name: &'static str,
        kind: CaseKind,
        sampler: SamplerKind,
        nfe_per_step: (usize, isize),
        seed: u64,
    ) -> Self {
        Case {
            name,
            kind,
            sampler,
            nfe_per_step,
            seed,
            grid: Grid::Karras,
        }
    }

    /// The same sampler on another grid.
    fn on(mut self, grid: Grid) -> Self {
        self.grid = grid;
        self
    }

    /// NFE on a grid of `steps` steps.
    pub fn nfe(&self, steps: usize) -> usize {
        (self.nfe_per_step.0 as isize * steps as isize + self.nfe_per_step.1).max(0) as usize
    }

    /// The most steps whose NFE fits `budget` (at least 2 steps, so multistep methods take a
    /// step of their own order); `None` when even that exceeds the budget.
    pub fn steps_for_nfe(&self, budget: usize) -> Option<usize> {
        let mut steps = None;
        for s in 2..=budget.max(2) {
            if self.nfe(s) <= budget {
                steps = Some(s);
            } else {
                break;
            }
        }
        steps
    }

    /// Runs the sampler from latents `xt` (x at σ_max) on the Karras grid of `steps` steps, or
    /// for the adaptive solver with rtol = atol = `tol` between the same end points.
    pub fn run(
        &self,
        model: &dyn Model<Array2<f64>>,
        xt: Array2<f64>,
        steps: usize,
        tol: Option<f64>,
    ) -> Result<Array2<f64>> {
        let sampler = match (&self.sampler, tol) {
            (SamplerKind::Adaptive { .. }, Some(t)) => SamplerKind::Adaptive { rtol: t, atol: t },
            (k, _) => k.clone(),
        };
        // The adaptive solver uses only the grid's end points; any grid ending at 0 will do.
        let steps = if tol.is_some() { 2 } else { steps };
        let p = process();
        let grid = timer(self.grid, super::SIGMA_MIN, super::SIGMA_MAX, super::RHO)
            .grid(&p, steps)
            .context("EDM timer grid")?;
        let d = Sampler::new(&p, grid, sampler, model)?.seed(self.seed);
        let out = d.run(Init::Latents(xt), None)?;
        Ok(out.samples)
    }

    /// (library, sampler) of the reference runs to put next to this one at equal steps.
    pub fn reference_equivalents(&self) -> Vec<(&'static str, &'static str)> {
        match self.name {
            "euler" => vec![
                ("k-diffusion", "euler"),
                ("diffusers", "euler"),
                ("diffusers", "edm_euler"),
            ],
            "heun" => vec![
                ("k-diffusion", "heun"),
                ("diffusers", "heun"),
                ("k-diffusion", "dpm_2"),
            ],
            "dpmpp_2s" => vec![("k-diffusion", "dpmpp_2s")],
            "dpmpp_2m" => vec![("k-diffusion", "dpmpp_2m"), ("diffusers", "edm_dpmpp_2m")],
            // k-diffusion's linear multistep (order 4 in σ) is the nearest higher-order multistep.
            "deis3" => vec![("diffusers", "deis3")],
            "lms" => vec![("k-diffusion", "lms")],
            "dpmpp_3m" => vec![("diffusers", "dpmpp_3m"), ("k-diffusion", "dpmpp_3m")],
            // The same update as k-diffusion's dpmpp_3m_sde (η = 0) and diffusers' order-3
            // DPMSolverMultistep: the damped form of DPM-Solver's reference code.
            "dpmpp_3m_damped" => vec![("k-diffusion", "dpmpp_3m"), ("diffusers", "dpmpp_3m")],
            // diffusers' DEIS is logρ-DEIS; it ends with D(x; σ_min) where ours steps to 0.
            "deis_logrho" => vec![("diffusers", "deis3")],
            "edm_stochastic" => vec![("k-diffusion", "heun_churn")],
            "unipc" => vec![("diffusers", "unipc"), ("diffusers", "unipc3")],
            "euler_ancestral" => vec![("k-diffusion", "euler_ancestral")],
            "dpmpp_2m_sde" => vec![("k-diffusion", "dpmpp_2m_sde")],
            "dpmpp_3m_sde" => vec![("k-diffusion", "dpmpp_3m_sde")],
            _ => vec![],
        }
    }
}

/// Our sampler that a reference run is the counterpart of (same method, same grid), if any.
pub fn ours_for(lib: &str, sampler: &str) -> Option<&'static str> {
    match (lib, sampler) {
        ("k-diffusion", "euler") | ("diffusers", "euler") | ("diffusers", "edm_euler") => {
            Some("euler")
        }
        ("k-diffusion", "heun") | ("diffusers", "heun") => Some("heun"),
        ("k-diffusion", "dpmpp_2s") => Some("dpmpp_2s"),
        ("k-diffusion", "dpmpp_2m") | ("diffusers", "edm_dpmpp_2m") => Some("dpmpp_2m"),
        ("k-diffusion", "euler_ancestral") => Some("euler_ancestral"),
        ("k-diffusion", "dpmpp_2m_sde") => Some("dpmpp_2m_sde"),
        ("k-diffusion", "dpmpp_3m_sde") => Some("dpmpp_3m_sde"),
        ("k-diffusion", "lms") => Some("lms"),
        ("diffusers", "deis3") => Some("deis_logrho"),
        ("diffusers", "dpmpp_3m") | ("k-diffusion", "dpmpp_3m") => Some("dpmpp_3m_damped"),
        ("k-diffusion", "heun_churn") => Some("edm_stochastic"),
        // diffusers' default UniPC is order 2; its order-3 B2 run is ours.
        ("diffusers", "unipc3") => Some("unipc"),
        _ => None,
    }
}

/// Whether a reference run is stochastic (its endpoint is not comparable with the ODE solution).
pub fn is_stochastic(_lib: &str, sampler: &str) -> bool {
    matches!(
        sampler,
        "euler_ancestral" | "dpmpp_2s_ancestral" | "dpmpp_2m_sde" | "dpmpp_3m_sde" | "heun_churn"
    )
}

/// The k-diffusion run a sampler's per-step overhead is measured against: the same method
/// where k-diffusion has it, else its cheapest sampler of the same kind (Euler for a
/// one-evaluation ODE step, Euler ancestral for a stochastic step).
pub fn overhead_counterpart(ours: &str) -> Option<&'static str> {
    Some(match ours {
        "euler" | "ddim" | "deis3" | "unipc" | "ipndm" | "deis_logrho" => "euler",
        "heun" => "heun",
        "dpmpp_2s" => "dpmpp_2s",
        "dpmpp_2m" => "dpmpp_2m",
        "dpmpp_3m" | "dpmpp_3m_damped" => "dpmpp_3m",
        "lms" => "lms",
        "edm_stochastic" => "heun_churn",
        "euler_ancestral" | "ddpm_ancestral" | "euler_maruyama" => "euler_ancestral",
        "dpmpp_2m_sde" => "dpmpp_2m_sde",
        "dpmpp_3m_sde" => "dpmpp_3m_sde",
        _ => return None,
    })
}

/// Every sampler of tweedie-samplers, in table order.
pub fn all(seed: u64) -> Result<Vec<Case>> {
    use CaseKind::*;
    let named = |n: &str| SamplerKind::from_name(n).with_context(|| format!("sampler `{n}`"));
    Ok(vec![
        Case::new("euler", Deterministic, named("euler")?, (1, 0), seed),
        Case::new("heun", Deterministic, named("heun")?, (2, -1), seed),
        Case::new("ddim", Deterministic, named("ddim")?, (1, 0), seed),
        Case::new("dpmpp_2s", Deterministic, named("dpmpp_2s")?, (2, -1), seed),
        Case::new("dpmpp_2m", Deterministic, named("dpmpp_2m")?, (1, 0), seed),
        Case::new("deis3", Deterministic, named("deis3")?, (1, 0), seed),
        Case::new("dpmpp_3m", Deterministic, named("dpmpp_3m")?, (1, 0), seed),
        Case::new("unipc", Deterministic, named("unipc")?, (1, 0), seed),
        Case::new("lms", Deterministic, named("lms")?, (1, 0), seed),
        Case::new("ipndm", Deterministic, named("ipndm")?, (1, 0), seed),
        Case::new(
            "dpmpp_3m_damped",
            Deterministic,
            named("dpmpp_3m_damped")?,
            (1, 0),
            seed,
        ),
        Case::new(
            "deis_logrho",
            Deterministic,
            named("deis_logrho")?,
            (1, 0),
            seed,
        ),
        // logρ-DEIS on the grids tuned on other mixtures (TUNED_KARRAS, TUNED_LOGSNR_SIGMA_MIN).
        Case::new(
            "deis_logrho_karras10",
            Deterministic,
            named("deis_logrho")?,
            (1, 0),
            seed,
        )
        .on(Grid::KarrasTuned),
        Case::new(
            "deis_logrho_logsnr",
            Deterministic,
            named("deis_logrho")?,
            (1, 0),
            seed,
        )
        .on(Grid::LogSnrTuned),
        // The multistep solvers on DPM-Solver's own grid (uniform log-SNR), same end points.
        Case::new("deis3_logsnr", Deterministic, named("deis3")?, (1, 0), seed).on(Grid::LogSnr),
        Case::new(
            "dpmpp_3m_logsnr",
            Deterministic,
            named("dpmpp_3m")?,
            (1, 0),
            seed,
        )
        .on(Grid::LogSnr),
        Case::new("unipc_logsnr", Deterministic, named("unipc")?, (1, 0), seed).on(Grid::LogSnr),
        Case::new("ipndm_logsnr", Deterministic, named("ipndm")?, (1, 0), seed).on(Grid::LogSnr),
        Case::new("adaptive", Adaptive, named("adaptive")?, (0, 0), seed),
        Case::new(
            "edm_stochastic",
            Stochastic,
            named("edm_stochastic")?,
            (2, -1),
            seed,
        ),
        Case::new(
            "euler_ancestral",
            Stochastic,
            named("euler_ancestral")?,
            (1, 0),
            seed,
        ),
        Case::new(
            "ddpm_ancestral",
            Stochastic,
            named("ddpm_ancestral")?,
            (1, 0),
            seed,
        ),
        Case::new(
            "dpmpp_2m_sde",
            Stochastic,
            named("dpmpp_2m_sde")?,
            (1, 0),
            seed,
        ),
        Case::new(
            "dpmpp_3m_sde",
            Stochastic,
            named("dpmpp_3m_sde")?,
            (1, 0),
            seed,
        ),
        Case::new(
            "euler_maruyama",
            Stochastic,
            named("euler_maruyama")?,
            (1, 0),
            seed,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fit_the_budget() {
        let cases = all(0).unwrap();
        let heun = cases.iter().find(|c| c.name == "heun").unwrap();
        assert_eq!(heun.steps_for_nfe(5), Some(3));
        assert_eq!(heun.steps_for_nfe(10), Some(5));
        assert_eq!(heun.steps_for_nfe(100), Some(50));
        let euler = cases.iter().find(|c| c.name == "euler").unwrap();
        assert_eq!(euler.steps_for_nfe(20), Some(20));
    }

    #[test]
    fn grid_is_the_published_karras_grid() {
        // EDM's 18-step grid starts 80, 57.586, 40.786 and ends 0.002 (Karras et al. 2022).
        let g = karras_grid(18, 0.002, 80.0, 7.0).unwrap();
        assert_eq!(g.len(), 19);
        assert!((g[1] - 57.586).abs() < 1e-3 && (g[2] - 40.786).abs() < 1e-3);
        assert!((g[17] - 0.002).abs() < 1e-12 && g[18] == 0.0);
    }
}
