//! The integrators, by family, all driven by one per-run context [`Run`]: it evaluates the
//! model, draws keyed noise and closes every step (hook, finiteness check, trajectory,
//! callback), so an integrator is only its update rule.
//!
//! - [`ode`]: Euler and Heun on the probability-flow ODE in σ̃ (Karras et al. 2022).
//! - [`stochastic`]: ancestral and SDE samplers (Euler ancestral in σ̃; DDIM, DDPM and
//!   Euler–Maruyama in process coordinates).
//! - [`exponential`]: DPM-Solver++ (2S, 2M, 2M SDE), exponential integrators in λ = −log σ̃.
//! - [`multistep`]: ρAB-DEIS, Adams–Bashforth in σ̃.
//! - [`lms`]: k-diffusion's LMS (orders 1–4, Lagrange in σ̃) and iPNDM.
//! - [`dpmpp3m`]: DPM-Solver++(3M), its SDE form and the reference code's damped form.
//! - [`logrho`]: DEIS with ε polynomial in log σ̃ (diffusers' `logrho`), stepping to σ̃ = 0.
//! - [`unipc`]: UniPC's predictor and corrector (B₁/B₂, orders 1–3).
//! - [`adaptive`]: the embedded exponential 3(2) solver with step-size control.
//! - [`churn`]: EDM's S_churn noise injection before a step, for the samplers it suits.
//! - [`weights`]: the quadrature weights the multistep and exponential integrators share.
//!
//! A new integrator is a method on [`Run`] in its family's file and one arm in [`integrate`].

pub mod adaptive;
pub mod churn;
pub mod dpmpp3m;
pub mod exponential;
pub mod history;
pub mod lms;
pub mod logrho;
pub mod multistep;
pub mod ode;
pub mod stochastic;
pub mod unipc;
pub mod weights;

use tweedie_core::Process;

use crate::error::{Result, SamplerError};
use crate::integrators::history::History;
use crate::kind::{Churn, SamplerKind};
use crate::model::Model;
use crate::state::State;
use crate::step::{stream, Callback, NoiseKey, StepHook, StepInfo, HOOK_DRAW};

/// One sampling run: the grid (σ̃ and t), the model, the noise key, and what is recorded.
pub(crate) struct Run<'r, 'c, S: State> {
    process: &'r dyn Process,
    m: &'r dyn Model<S>,
    s: Vec<f64>,
    t: Vec<f64>,
    seed: u64,
    first_index: u64,
    record: bool,
    hook: Option<&'r dyn StepHook<S>>,
    churn: Option<Churn>,
    traj: Vec<S>,
    traj_s: Vec<f64>,
    cb: Option<Callback<'c, S>>,
}

/// What the run leaves besides the final state: x̃ and σ̃ at every recorded point.
pub(crate) struct Recorded<S> {
    pub trajectory: Vec<S>,
    pub sigmas: Vec<f64>,
}

/// Everything a [`Run`] is built from.
pub(crate) struct RunSpec<'r, 'c, S: State> {
    pub process: &'r dyn Process,
    pub model: &'r dyn Model<S>,
    pub sigmas: Vec<f64>,
    pub times: Vec<f64>,
    pub seed: u64,
    pub first_index: u64,
    pub record: bool,
    pub hook: Option<&'r dyn StepHook<S>>,
    pub churn: Option<Churn>,
    pub callback: Option<Callback<'c, S>>,
}

impl<'r, 'c, S: State> Run<'r, 'c, S> {
    pub(crate) fn new(spec: RunSpec<'r, 'c, S>) -> Self {
        Run {
            process: spec.process,
            m: spec.model,
            s: spec.sigmas,
            t: spec.times,
            seed: spec.seed,
            first_index: spec.first_index,
            record: spec.record,
            hook: spec.hook,
            churn: spec.churn,
            traj: Vec::new(),
            traj_s: Vec::new(),
            cb: spec.callback,
        }
    }

    /// The recorded trajectory.
    pub(crate) fn into_recorded(self) -> Recorded<S> {
        Recorded {
            trajectory: self.traj,
            sigmas: self.traj_s,
        }
    }

    /// Records the initial state (when recording).
    pub(crate) fn start(&mut self, x: &S) {
        if self.record {
            self.traj.push(x.clone());
            self.traj_s.push(self.s[0]);
        }
    }

    fn n(&self) -> usize {
        self.s.len() - 1
    }
    fn den(&self, x: &S, sigma: f64) -> Result<S> {
        self.m.denoise(x, sigma)
    }
    fn noise(&self, like: &S, step: usize, draw: u64) -> Result<S> {
        like.randn_like(self.seed, self.first_index, stream(step, draw))
    }
    /// Closes step i on its new state x̃: the hook, the finiteness check, the trajectory and the
    /// callback. `finite` is what the update's own pass found (`None`: it could not tell, and
    /// the check is a pass of its own here); a hook's output is always checked here.
    fn end_step(&mut self, i: usize, x: S, finite: Option<bool>, denoised: &S) -> Result<S> {
        let (x, finite) = match self.hook {
            Some(h) => (
                h.after_step(
                    i,
                    self.s[i + 1],
                    x,
                    NoiseKey {
                        seed: self.seed,
                        first_index: self.first_index,
                        stream: stream(i, HOOK_DRAW),
                    },
                )?,
                None,
            ),
            None => (x, finite),
        };
        self.close_step(i, x, finite, Some(denoised))
    }

    /// Closes the last step, to σ̃ = 0, whose x̃ is D_i itself: D_i is moved, not copied, unless
    /// a hook needs the two apart.
    fn end_with_denoised(&mut self, i: usize, den: S) -> Result<S> {
        if self.hook.is_some() {
            let x = den.clone();
            return self.end_step(i, x, None, &den);
        }
        self.close_step(i, den, None, None)
    }

    /// The finiteness check, the trajectory and the callback of step i (`denoised`: `None` when
    /// it is x̃ itself).
    fn close_step(
        &mut self,
        i: usize,
        x: S,
        finite: Option<bool>,
        denoised: Option<&S>,
    ) -> Result<S> {
        if !finite.unwrap_or_else(|| x.all_finite()) {
            return Err(SamplerError::Numerical(format!(
                "non-finite state after step {i} (σ̃ = {})",
                self.s[i + 1]
            )));
        }
        if self.record {
            self.traj.push(x.clone());
            self.traj_s.push(self.s[i + 1]);
        }
        if let Some(cb) = self.cb.as_mut() {
            cb(&StepInfo {
                step: i,
                sigma: self.s[i],
                sigma_next: self.s[i + 1],
                x: &x,
                denoised: denoised.unwrap_or(&x),
            });
        }
        Ok(x)
    }

    /// The step loop of the integrators that evaluate D once per step at the step's start:
    /// D_i = D(x̃_i; σ̃_i), then (x̃_{i+1}, finite) = `update(self, i, σ̃_i, σ̃_{i+1}, x̃_i, &D_i)`
    /// while σ̃_{i+1} > 0 (finite: what the update's pass found, see `end_step`), and D_i itself
    /// on the last step to σ̃ = 0; every step closes in `end_step`.
    fn steps(
        &mut self,
        x: S,
        mut update: impl FnMut(&Self, usize, f64, f64, S, &S) -> Result<(S, Option<bool>)>,
    ) -> Result<S> {
        self.steps_keeping_denoised(x, 0, |run, i, s, s1, x, den, _| {
            update(run, i, s, s1, x, den)
        })
    }

    /// [`Run::steps`] for the multistep methods whose history is D itself: `update` also sees
    /// the `cap` previous (σ̃_j, D_j), newest first, and after the step D_i moves into that
    /// history (no copy; the oldest entry leaves, and its buffer is the next output's).
    #[allow(clippy::type_complexity)]
    fn steps_keeping_denoised(
        &mut self,
        mut x: S,
        cap: usize,
        mut update: impl FnMut(&Self, usize, f64, f64, S, &S, &History<S>) -> Result<(S, Option<bool>)>,
    ) -> Result<S> {
        let mut older = History::new(cap);
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            if s1 == 0.0 {
                x = self.end_with_denoised(i, den)?;
                continue;
            }
            let (xn, finite) = update(self, i, s, s1, x, &den, &older)?;
            x = self.end_step(i, xn, finite, &den)?;
            older.push(s, den);
        }
        Ok(x)
    }

    /// (α, σ) at grid point i: σ from α and the grid's σ̃ keeps x̃ = x/α consistent with the
    /// grid exactly.
    fn alpha_sigma(&self, i: usize) -> (f64, f64) {
        let t = self.t[i];
        if self.s[i] == 0.0 {
            (if t == 0.0 { 1.0 } else { self.process.alpha(t) }, 0.0)
        } else {
            let a = self.process.alpha(t);
            (a, a * self.s[i])
        }
    }
}

/// Runs `kind` from `x` over the run's grid.
pub(crate) fn integrate<S: State>(run: &mut Run<'_, '_, S>, kind: &SamplerKind, x: S) -> Result<S> {
    match *kind {
        SamplerKind::Euler => run.euler(x),
        SamplerKind::Heun => run.heun(x),
        SamplerKind::EdmStochastic {
            s_churn,
            s_min,
            s_max,
            s_noise,
        } => {
            // Karras et al. 2022, Alg. 2: Heun with churn.
            run.churn = Some(Churn {
                s_churn,
                s_min,
                s_max,
                s_noise,
            });
            run.heun(x)
        }
        SamplerKind::EulerAncestral { eta, s_noise } => run.euler_ancestral(x, eta, s_noise),
        SamplerKind::Ddim { eta } => run.ddim(x, eta),
        SamplerKind::DdpmAncestral { learned_variance } => run.ddpm(x, learned_variance),
        SamplerKind::DpmSolverPp2s => run.dpmpp_2s(x),
        SamplerKind::DpmSolverPp2m => run.dpmpp_2m(x),
        SamplerKind::DpmSolverPp2mSde { eta } => run.dpmpp_2m_sde(x, eta),
        SamplerKind::EulerMaruyama => run.euler_maruyama(x),
        SamplerKind::Deis3 => run.deis3(x),
        SamplerKind::Lms { order } => run.lms(x, order),
        SamplerKind::Ipndm { order } => run.ipndm(x, order),
        SamplerKind::DpmSolverPp3m => run.dpmpp_3m(x, 0.0, false),
        SamplerKind::DpmSolverPp3mDamped => run.dpmpp_3m(x, 0.0, true),
        SamplerKind::DpmSolverPp3mSde { eta } => run.dpmpp_3m(x, eta, false),
        SamplerKind::DeisLogRho { order } => run.deis_logrho(x, order),
        SamplerKind::UniPc {
            order,
            variant,
            corrector,
        } => run.unipc(x, order, variant, corrector),
        SamplerKind::Adaptive { rtol, atol } => run.adaptive(x, rtol, atol),
    }
}
