//! The unconditional sampler: timer grid + integrator + model, in EDM coordinates.

use tweedie_core::rng::streams;
use tweedie_core::Invalid;
use tweedie_core::{Process, TimeGrid};

use crate::error::{Result, SamplerError};
use crate::integrators::{self, Run, RunSpec};
use crate::kind::{Churn, SamplerKind};
use crate::model::{Counted, Model, ModelExt};
use crate::state::State;
pub use crate::step::{Callback, NoiseKey, StepHook, StepInfo, HOOK_DRAW};

/// Largest starting σ̃: a grid that starts where α = 0 (σ̃ = ∞, e.g. rectified flow at t = 1)
/// starts at this σ̃ instead, where the data's share α·x₀ of x_t is 1e-5 of the noise.
pub const SIGMA_TILDE_CAP: f64 = 1e5;

/// How the sampler starts.
#[derive(Debug, Clone)]
pub enum Init<S> {
    /// x̃_T = σ̃_T·ε, i.e. x_T ~ N(0, σ(T)²I) (Karras et al. 2022); the argument fixes the shape `[B, …]`.
    Noise(S),
    /// x̃_T drawn from the model's exact marginal p_T (analytic models only); the argument fixes the shape.
    Exact(S),
    /// Given latents x_T in process coordinates (x̃_T = x_T/α(T)).
    Latents(S),
    /// x̃_T itself, in EDM coordinates (k-diffusion's `x`: x̃_T = σ̃_T·ε for a noise start).
    Edm(S),
}

impl<S: State> Init<S> {
    /// x̃ at the first grid point, σ̃ = `sigma0` and α = `alpha0` there: noise and exact draws
    /// are keyed by (`seed`, `first_index`) on the initial stream.
    pub(crate) fn start(
        self,
        model: &dyn Model<S>,
        sigma0: f64,
        alpha0: f64,
        seed: u64,
        first_index: u64,
    ) -> Result<S> {
        Ok(match self {
            Init::Noise(like) => like
                .randn_like(seed, first_index, streams::INIT)?
                .scale(sigma0),
            Init::Exact(like) => model
                .sample_marginal(&like, sigma0, seed, first_index)
                .ok_or_else(|| {
                    SamplerError::Unsupported("exact marginal sampling (Init::Exact)".into())
                })??,
            Init::Latents(x) => scaled(x, 1.0 / alpha0),
            Init::Edm(x) => x,
        })
    }
}

/// a·x in x's own buffer (`x.scale(a)`'s values), and x itself when a = 1: a run on a process
/// with α = 1 (EDM, VE) copies its latents and samples nowhere.
fn scaled<S: State>(mut x: S, a: f64) -> S {
    if a != 1.0 {
        x.combine_assign(a, &[]);
    }
    x
}

/// What a sampling run returns.
#[derive(Debug, Clone)]
pub struct SampleOutput<S> {
    /// Samples at the end of the grid (x₀ when the grid ends at σ̃ = 0), process coordinates.
    pub samples: S,
    /// Denoiser evaluations used (for gradient guidance: network evaluations, each VJP counted once).
    pub nfe: usize,
    /// x̃ at every grid point (or accepted step) when recording was asked for.
    pub trajectory: Vec<S>,
    /// σ̃ of the trajectory entries (grid points, or accepted steps of the adaptive solver).
    pub sigmas: Vec<f64>,
}

/// A sampler: a time grid (from a timer) + an integrator + a model, for any process
/// (Karras et al. 2022 §3: x̃ = x/α evolves in σ̃ = σ/α for every process).
pub struct Sampler<'a, S: State> {
    process: &'a dyn Process,
    grid: TimeGrid,
    kind: SamplerKind,
    model: &'a dyn Model<S>,
    seed: u64,
    first_index: u64,
    record: bool,
    hook: Option<&'a dyn StepHook<S>>,
    churn: Option<Churn>,
}

impl<'a, S: State> Sampler<'a, S> {
    /// A sampler on `grid` (decreasing t, matching σ̃) with noise keyed by `seed`.
    pub fn new(
        process: &'a dyn Process,
        grid: TimeGrid,
        kind: SamplerKind,
        model: &'a dyn Model<S>,
    ) -> Result<Self> {
        kind.validate()?;
        if grid.t.len() < 2 || grid.t.len() != grid.sigma_tilde.len() {
            return Err(SamplerError::invalid(
                "steps",
                grid.t.len().saturating_sub(1),
                "grid needs at least 1 step",
            ));
        }
        for w in grid.sigma_tilde.windows(2) {
            if !(w[0] > w[1]) || w[1] < 0.0 {
                return Err(SamplerError::invalid(
                    "grid",
                    format!("{:?}", grid.sigma_tilde),
                    "σ̃ must be strictly decreasing and non-negative",
                ));
            }
        }
        Ok(Sampler {
            process,
            grid,
            kind,
            model,
            seed: 0,
            first_index: 0,
            record: false,
            hook: None,
            churn: None,
        })
    }
    /// Noise seed (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Global index of the batch's first sample, so chunked runs draw the same noise (default 0).
    pub fn first_index(mut self, i: u64) -> Self {
        self.first_index = i;
        self
    }
    /// Record x̃ at every grid point.
    pub fn record(mut self, on: bool) -> Self {
        self.record = on;
        self
    }
    /// Apply `hook` after every step.
    pub fn hook(mut self, hook: &'a dyn StepHook<S>) -> Self {
        self.hook = Some(hook);
        self
    }
    /// Churn before every step (Karras et al. 2022, Alg. 2): for Euler, Heun and
    /// DPM-Solver++(2S) ([`SamplerKind::accepts_churn`]); Heun with churn is
    /// [`SamplerKind::EdmStochastic`]. Other samplers give an error at [`Sampler::run`].
    pub fn churn(mut self, churn: Churn) -> Self {
        self.churn = Some(churn);
        self
    }
    /// The grid actually used (σ̃₀ capped at [`SIGMA_TILDE_CAP`]).
    pub fn sigmas(&self) -> Vec<f64> {
        let mut s = self.grid.sigma_tilde.clone();
        if !(s[0] <= SIGMA_TILDE_CAP) {
            s[0] = SIGMA_TILDE_CAP;
        }
        s
    }
    fn times(&self) -> Vec<f64> {
        let mut t = self.grid.t.clone();
        if !(self.grid.sigma_tilde[0] <= SIGMA_TILDE_CAP) {
            t[0] = self.process.t_of_sigma_tilde(SIGMA_TILDE_CAP);
        }
        t
    }

    /// Run the sampler from `init`; `callback` sees every step.
    pub fn run(&self, init: Init<S>, callback: Option<Callback<'_, S>>) -> Result<SampleOutput<S>> {
        let sigmas = self.sigmas();
        let times = self.times();
        let s0 = sigmas[0];
        let x = init.start(
            self.model,
            s0,
            self.process.alpha(times[0]),
            self.seed,
            self.first_index,
        )?;
        if self.hook.is_some() && matches!(self.kind, SamplerKind::Adaptive { .. }) {
            return Err(SamplerError::invalid(
                "sampler",
                "adaptive",
                "step hooks (e.g. replacement) need a fixed grid",
            ));
        }
        if let Some(c) = &self.churn {
            c.validate()?;
            if !self.kind.accepts_churn() || matches!(self.kind, SamplerKind::EdmStochastic { .. })
            {
                return Err(SamplerError::invalid(
                    "churn",
                    self.kind.name(),
                    "churn applies to euler, heun and dpmpp_2s (edm_stochastic has its own)",
                ));
            }
        }
        let counted = Counted::new(self.model);
        let mut run = Run::new(RunSpec {
            process: self.process,
            model: &counted,
            sigmas,
            times: times.clone(),
            seed: self.seed,
            first_index: self.first_index,
            record: self.record,
            hook: self.hook,
            churn: self.churn,
            callback,
        });
        run.start(&x);
        let x = integrators::integrate(&mut run, &self.kind, x)?;
        let t_end = *times.last().unwrap_or(&0.0);
        let alpha_end = if t_end == 0.0 {
            1.0
        } else {
            self.process.alpha(t_end)
        };
        let rec = run.into_recorded();
        Ok(SampleOutput {
            samples: scaled(x, alpha_end),
            nfe: counted.nfe(),
            trajectory: rec.trajectory,
            sigmas: rec.sigmas,
        })
    }
}
