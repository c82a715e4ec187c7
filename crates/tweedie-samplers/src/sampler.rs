//! The unconditional sampler: timer grid + integrator + model, in EDM coordinates.

use tweedie_core::rng::streams;
use tweedie_core::{Process, TimeGrid};

use crate::adaptive;
use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::model::{Counted, Model};
use crate::state::State;

/// Largest starting σ̃: a grid that starts where α = 0 (σ̃ = ∞, e.g. rectified flow at t = 1)
/// starts at this σ̃ instead, where the data's share α·x₀ of x_t is 1e-5 of the noise.
pub const SIGMA_TILDE_CAP: f64 = 1e5;

/// Draws per step reserved in the noise stream: step i, draw j uses stream STEP_BASE + 8i + j.
const DRAWS_PER_STEP: u64 = 8;
/// The draw index reserved for [`StepHook`]s.
pub const HOOK_DRAW: u64 = 7;

/// How the sampler starts.
#[derive(Debug, Clone)]
pub enum Init<S> {
    /// x̃_T = σ̃_T·ε, i.e. x_T ~ N(0, σ(T)²I) (Karras et al. 2022); the argument fixes the shape `[B, …]`.
    Noise(S),
    /// x̃_T drawn from the model's exact marginal p_T (analytic models only); the argument fixes the shape.
    Exact(S),
    /// Given latents x_T in process coordinates (x̃_T = x_T/α(T)).
    Latents(S),
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

/// A per-step callback.
pub type Callback<'c, S> = &'c mut (dyn FnMut(&StepInfo<S>) + 'c);

/// What a per-step callback sees after step `step` (from σ̃ = `sigma` to `sigma_next`).
#[derive(Debug)]
pub struct StepInfo<'a, S> {
    pub step: usize,
    pub sigma: f64,
    pub sigma_next: f64,
    /// x̃ after the step.
    pub x: &'a S,
    /// The last denoiser output of the step, D(x̃; σ̃).
    pub denoised: &'a S,
}

/// Where a [`StepHook`] takes its noise from (row i keyed by `first_index + i`).
#[derive(Debug, Clone, Copy)]
pub struct NoiseKey {
    pub seed: u64,
    pub first_index: u64,
    /// Stream of this step's hook draw.
    pub stream: u64,
}

/// A correction applied to x̃ after every step (e.g. inpainting by replacement).
pub trait StepHook<S: State>: Send + Sync {
    /// The corrected x̃ at σ̃ = `sigma_next`.
    fn after_step(&self, step: usize, sigma_next: f64, x: S, noise: NoiseKey) -> Result<S>;
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
        let x = match init {
            Init::Noise(like) => like
                .randn_like(self.seed, self.first_index, streams::INIT)?
                .scale(s0),
            Init::Exact(like) => self
                .model
                .sample_marginal(&like, s0, self.seed, self.first_index)
                .ok_or_else(|| {
                    SamplerError::Unsupported("exact marginal sampling (Init::Exact)".into())
                })??,
            Init::Latents(x) => x.scale(1.0 / self.process.alpha(times[0])),
        };
        if self.hook.is_some() && matches!(self.kind, SamplerKind::Adaptive { .. }) {
            return Err(SamplerError::invalid(
                "sampler",
                "adaptive",
                "step hooks (e.g. replacement) need a fixed grid",
            ));
        }
        let counted = Counted::new(self.model);
        let mut run = Run {
            d: self,
            m: &counted,
            s: sigmas,
            t: times,
            traj: Vec::new(),
            traj_s: Vec::new(),
            cb: callback,
        };
        if self.record {
            run.traj.push(x.clone());
            run.traj_s.push(run.s[0]);
        }
        let x = match self.kind.clone() {
            SamplerKind::Euler => run.euler(x),
            SamplerKind::Heun => run.heun(x, None),
            SamplerKind::EdmStochastic {
                s_churn,
                s_min,
                s_max,
                s_noise,
            } => run.heun(
                x,
                Some(Churn {
                    s_churn,
                    s_min,
                    s_max,
                    s_noise,
                }),
            ),
            SamplerKind::EulerAncestral { eta, s_noise } => run.euler_ancestral(x, eta, s_noise),
            SamplerKind::Ddim { eta } => run.ddim(x, eta),
            SamplerKind::DdpmAncestral { learned_variance } => run.ddpm(x, learned_variance),
            SamplerKind::DpmSolverPp2s => run.dpmpp_2s(x),
            SamplerKind::DpmSolverPp2m => run.dpmpp_2m(x),
            SamplerKind::DpmSolverPp2mSde { eta } => run.dpmpp_2m_sde(x, eta),
            SamplerKind::EulerMaruyama => run.euler_maruyama(x),
            SamplerKind::Deis3 => run.deis3(x),
            SamplerKind::Adaptive { rtol, atol } => run.adaptive(x, rtol, atol),
        }?;
        let t_end = *run.t.last().unwrap_or(&0.0);
        let alpha_end = if t_end == 0.0 {
            1.0
        } else {
            self.process.alpha(t_end)
        };
        let Run { traj, traj_s, .. } = run;
        Ok(SampleOutput {
            samples: x.scale(alpha_end),
            nfe: counted.nfe(),
            trajectory: traj,
            sigmas: traj_s,
        })
    }
}

#[derive(Clone, Copy)]
struct Churn {
    s_churn: f64,
    s_min: f64,
    s_max: f64,
    s_noise: f64,
}

struct Run<'r, 'c, 'a, S: State> {
    d: &'r Sampler<'a, S>,
    m: &'r Counted<'a, S>,
    s: Vec<f64>,
    t: Vec<f64>,
    traj: Vec<S>,
    traj_s: Vec<f64>,
    cb: Option<Callback<'c, S>>,
}

impl<S: State> Run<'_, '_, '_, S> {
    fn n(&self) -> usize {
        self.s.len() - 1
    }
    fn den(&self, x: &S, sigma: f64) -> Result<S> {
        self.m.denoise(x, sigma)
    }
    fn noise(&self, like: &S, step: usize, draw: u64) -> Result<S> {
        like.randn_like(
            self.d.seed,
            self.d.first_index,
            streams::STEP_BASE + DRAWS_PER_STEP * step as u64 + draw,
        )
    }
    fn end_step(&mut self, i: usize, x: S, denoised: &S) -> Result<S> {
        let x = match self.d.hook {
            Some(h) => h.after_step(
                i,
                self.s[i + 1],
                x,
                NoiseKey {
                    seed: self.d.seed,
                    first_index: self.d.first_index,
                    stream: streams::STEP_BASE + DRAWS_PER_STEP * i as u64 + HOOK_DRAW,
                },
            )?,
            None => x,
        };
        if !x.all_finite() {
            return Err(SamplerError::Numerical(format!(
                "non-finite state after step {i} (σ̃ = {})",
                self.s[i + 1]
            )));
        }
        if self.d.record {
            self.traj.push(x.clone());
            self.traj_s.push(self.s[i + 1]);
        }
        if let Some(cb) = self.cb.as_mut() {
            cb(&StepInfo {
                step: i,
                sigma: self.s[i],
                sigma_next: self.s[i + 1],
                x: &x,
                denoised,
            });
        }
        Ok(x)
    }

    /// x̃ + (σ′ − σ)(x̃ − D)/σ = (σ′/σ)x̃ + (1 − σ′/σ)D, exact at σ′ = 0.
    fn euler_to(x: &S, den: &S, s: f64, s_next: f64) -> S {
        let r = s_next / s;
        x.lincomb(r, den, 1.0 - r)
    }

    fn euler(&mut self, mut x: S) -> Result<S> {
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = Self::euler_to(&x, &den, s, s1);
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    fn heun(&mut self, mut x: S, churn: Option<Churn>) -> Result<S> {
        let n = self.n();
        for i in 0..n {
            let (mut s, s1) = (self.s[i], self.s[i + 1]);
            if let Some(c) = churn {
                let gamma = if s >= c.s_min && s <= c.s_max {
                    (c.s_churn / n as f64).min(2f64.sqrt() - 1.0)
                } else {
                    0.0
                };
                if gamma > 0.0 {
                    // Karras et al. 2022 Alg. 2 (and NVlabs/edm) round σ̂ to the model's noise levels.
                    let s_hat = self.m.round_sigma(s * (1.0 + gamma));
                    let eps = self.noise(&x, i, 0)?;
                    x = x.lincomb(1.0, &eps, (s_hat * s_hat - s * s).sqrt() * c.s_noise);
                    s = s_hat;
                }
            }
            let den = self.den(&x, s)?;
            // d = (x − D)/σ; Euler predictor.
            let d = x.lincomb(1.0 / s, &den, -1.0 / s);
            let xe = x.lincomb(1.0, &d, s1 - s);
            let (xn, last_den) = if s1 > 0.0 {
                let den2 = self.den(&xe, s1)?;
                let d2 = xe.lincomb(1.0 / s1, &den2, -1.0 / s1);
                (
                    x.lincomb3(1.0, &d, 0.5 * (s1 - s), &d2, 0.5 * (s1 - s)),
                    den2,
                )
            } else {
                (xe, den)
            };
            x = self.end_step(i, xn, &last_den)?;
        }
        Ok(x)
    }

    fn euler_ancestral(&mut self, mut x: S, eta: f64, s_noise: f64) -> Result<S> {
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let up = (eta * (s1 * s1 * (s * s - s1 * s1) / (s * s)).sqrt()).min(s1);
            let down = (s1 * s1 - up * up).max(0.0).sqrt();
            let mut xn = Self::euler_to(&x, &den, s, down);
            if up > 0.0 {
                let eps = self.noise(&x, i, 0)?;
                xn = xn.lincomb(1.0, &eps, s_noise * up);
            }
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    fn alpha_sigma(&self, i: usize) -> (f64, f64) {
        let t = self.t[i];
        if self.s[i] == 0.0 {
            (
                if t == 0.0 {
                    1.0
                } else {
                    self.d.process.alpha(t)
                },
                0.0,
            )
        } else {
            // σ from α and the grid's σ̃ keeps x̃ = x/α consistent with the grid exactly.
            let a = self.d.process.alpha(t);
            (a, a * self.s[i])
        }
    }

    fn ddim(&mut self, mut x: S, eta: f64) -> Result<S> {
        for i in 0..self.n() {
            let ((a, sg), (a1, sg1)) = (self.alpha_sigma(i), self.alpha_sigma(i + 1));
            let den = self.den(&x, self.s[i])?;
            // Process coordinates: x_t = a·x̃; ε̂ = (x_t − a·D)/σ.
            let xt = x.scale(a);
            let eps_hat = xt.lincomb(1.0 / sg, &den, -a / sg);
            let ratio = (a * sg1) / (a1 * sg);
            let sd = eta * sg1 * (1.0 - ratio * ratio).max(0.0).sqrt();
            let mut xn = den.lincomb(a1, &eps_hat, (sg1 * sg1 - sd * sd).max(0.0).sqrt());
            if sd > 0.0 {
                let eps = self.noise(&x, i, 0)?;
                xn = xn.lincomb(1.0, &eps, sd);
            }
            let xn = xn.scale(1.0 / a1);
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    /// Ancestral DDPM; with `learned_variance` a model's v sets the per-element variance
    /// β̃·(β/β̃)^v = exp(v·log β + (1 − v)·log β̃), so v = 0 is exactly the fixed-variance step.
    fn ddpm(&mut self, mut x: S, learned_variance: bool) -> Result<S> {
        for i in 0..self.n() {
            let ((a, sg), (a1, sg1)) = (self.alpha_sigma(i), self.alpha_sigma(i + 1));
            let (den, v) = if learned_variance {
                self.m.denoise_with_variance(&x, self.s[i])?
            } else {
                (self.den(&x, self.s[i])?, None)
            };
            let xt = x.scale(a);
            let step = tweedie_core::DdpmStep::new(a, sg, a1, sg1);
            let var = step.beta_tilde;
            let mut xn = xt.lincomb(step.coef_xt, &den, step.coef_x0);
            if var > 0.0 {
                let eps = self.noise(&x, i, 0)?;
                let eps = match &v {
                    // std = √β̃·exp(½·v·(log β − log β̃)).
                    Some(v) => eps.mul_exp(v, 0.5 * step.learned_log_variance(var.ln()).1)?,
                    None => eps,
                };
                xn = xn.lincomb(1.0, &eps, var.sqrt());
            }
            let xn = xn.scale(1.0 / a1);
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    fn dpmpp_2s(&mut self, mut x: S) -> Result<S> {
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let (xn, last) = if s1 == 0.0 {
                (den.clone(), den)
            } else {
                let h = (s / s1).ln();
                let sm = (s * s1).sqrt();
                let u = x.lincomb(sm / s, &den, -(-0.5 * h).exp_m1());
                let den2 = self.den(&u, sm)?;
                (x.lincomb(s1 / s, &den2, -(-h).exp_m1()), den2)
            };
            x = self.end_step(i, xn, &last)?;
        }
        Ok(x)
    }

    fn dpmpp_2m(&mut self, mut x: S) -> Result<S> {
        let mut prev: Option<(S, f64)> = None;
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = if s1 == 0.0 {
                den.clone()
            } else {
                let h = (s / s1).ln();
                let dd = match &prev {
                    Some((old, h_last)) => {
                        let r = h_last / h;
                        den.lincomb(1.0 + 0.5 / r, old, -0.5 / r)
                    }
                    None => den.clone(),
                };
                prev = Some((den.clone(), h));
                x.lincomb(s1 / s, &dd, -(-h).exp_m1())
            };
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    fn dpmpp_2m_sde(&mut self, mut x: S, eta: f64) -> Result<S> {
        let mut prev: Option<(S, f64)> = None;
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = if s1 == 0.0 {
                den.clone()
            } else {
                let h = (s / s1).ln();
                let eh = eta * h;
                let c = -(-h - eh).exp_m1();
                let mut xn = x.lincomb(s1 / s * (-eh).exp(), &den, c);
                if let Some((old, h_last)) = &prev {
                    let r = h_last / h;
                    xn = xn.lincomb3(1.0, &den, 0.5 * c / r, old, -0.5 * c / r);
                }
                if eta > 0.0 {
                    let eps = self.noise(&x, i, 0)?;
                    xn = xn.lincomb(1.0, &eps, s1 * (-(-2.0 * eh).exp_m1()).sqrt());
                }
                prev = Some((den.clone(), h));
                xn
            };
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    fn euler_maruyama(&mut self, mut x: S) -> Result<S> {
        let p = self.d.process;
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = if s1 == 0.0 {
                den.clone()
            } else {
                let ((a, sg), (a1, _)) = (self.alpha_sigma(i), self.alpha_sigma(i + 1));
                let (f, g2) = p.sde_coeffs(self.t[i]);
                let dt = self.t[i + 1] - self.t[i];
                // x_t′ = x_t + (f·x_t − g²·(a·D − x_t)/σ²)·dt + g√|dt|·ε, with x_t = a·x̃; then x̃′ = x_t′/a′.
                let cx = a / a1 * (1.0 + f * dt + g2 * dt / (sg * sg));
                let cd = -a / a1 * g2 * dt / (sg * sg);
                let eps = self.noise(&x, i, 0)?;
                x.lincomb3(cx, &den, cd, &eps, (g2 * dt.abs()).sqrt() / a1)
            };
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    fn deis3(&mut self, mut x: S) -> Result<S> {
        // ρAB-DEIS: the ODE dx̃/dσ̃ = ε(x̃; σ̃), ε = (x̃ − D)/σ̃, is integrated exactly for the
        // polynomial through the last three ε_j in σ̃ itself. Extrapolating in σ̃ rather than in
        // λ = −log σ̃ keeps the steps near σ̃_min tiny in absolute terms, so a ρ = 7 grid of 18
        // steps is stable without lowering the order on the last steps.
        let mut hist: Vec<(f64, S)> = Vec::new();
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = if s1 == 0.0 {
                den.clone()
            } else {
                hist.push((s, x.lincomb(1.0 / s, &den, -1.0 / s)));
                if hist.len() > 3 {
                    hist.remove(0);
                }
                let nodes: Vec<f64> = hist.iter().map(|(sj, _)| sj - s1).collect();
                let w = poly_lagrange_weights(&nodes, s - s1);
                let mut xn = x.clone();
                for ((_, ej), wj) in hist.iter().zip(w) {
                    xn = xn.lincomb(1.0, ej, -wj);
                }
                xn
            };
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    /// Adaptive exponential integrator 3(2) in λ = −log σ̃ (see `adaptive`) from the grid's
    /// first σ̃ to its last positive one, then D there when the grid ends at 0. D at the start
    /// of a step is kept across rejections: an attempt costs 2 evaluations, an accepted step 3.
    fn adaptive(&mut self, x: S, rtol: f64, atol: f64) -> Result<S> {
        const MAX_ATTEMPTS: usize = 100_000;
        // A first step of 0.1 in λ: the controller grows it 5× per accepted step if it can.
        const FIRST_STEP: f64 = 0.1;
        let sigma_end = self
            .s
            .iter()
            .rev()
            .find(|v| **v > 0.0)
            .copied()
            .unwrap_or(self.s[0]);
        let lam_end = -sigma_end.ln();
        let mut x = x;
        let mut sigma = self.s[0];
        let mut h = FIRST_STEP;
        let mut d0: Option<S> = None;
        let mut controller = adaptive::Controller::default();
        let mut accepted = 0usize;
        let mut attempts = 0usize;
        while sigma > sigma_end {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                return Err(SamplerError::Numerical(format!(
                    "adaptive solver exceeded {MAX_ATTEMPTS} step attempts (σ̃ = {sigma})"
                )));
            }
            let lam = -sigma.ln();
            // Land on σ̃_end exactly rather than leave a sliver of less than 1e-9 in λ.
            let sigma_next = if lam + h >= lam_end - 1e-9 {
                sigma_end
            } else {
                (-(lam + h)).exp()
            };
            let den0 = match d0.take() {
                Some(d) => d,
                None => self.den(&x, sigma)?,
            };
            let step = adaptive::ExpStep { sigma, sigma_next };
            let r = step.run(&x, &den0, |u, sg| self.den(u, sg))?;
            let e = adaptive::batch_error(&r.err, &x, &r.x, atol, rtol);
            if !e.is_finite() {
                return Err(SamplerError::Numerical(format!(
                    "non-finite error estimate at σ̃ = {sigma}"
                )));
            }
            let (accept, factor) = controller.propose(e);
            if accept {
                if !r.x.all_finite() {
                    return Err(SamplerError::Numerical(format!(
                        "non-finite state after the step to σ̃ = {sigma_next}"
                    )));
                }
                x = r.x;
                self.adaptive_step_done(accepted, sigma, sigma_next, &x, &r.last_denoised);
                sigma = sigma_next;
                accepted += 1;
            } else {
                d0 = Some(den0);
            }
            h = step.h() * factor;
            if h < 1e-12 {
                return Err(SamplerError::Numerical(format!(
                    "adaptive step size underflow at σ̃ = {sigma}"
                )));
            }
        }
        if *self.s.last().unwrap_or(&0.0) == 0.0 {
            let den = match d0 {
                Some(d) => d,
                None => self.den(&x, sigma_end)?,
            };
            self.adaptive_step_done(accepted, sigma_end, 0.0, &den, &den);
            return Ok(den);
        }
        Ok(x)
    }

    /// Records an accepted step of the adaptive solver and shows it to the callback.
    fn adaptive_step_done(&mut self, step: usize, sigma: f64, sigma_next: f64, x: &S, den: &S) {
        if self.d.record {
            self.traj.push(x.clone());
            self.traj_s.push(sigma_next);
        }
        if let Some(cb) = self.cb.as_mut() {
            cb(&StepInfo {
                step,
                sigma,
                sigma_next,
                x,
                denoised: den,
            });
        }
    }
}

/// c_j = ∫_{−h}^{0} e^{v} ℓ_j(v) dv for the Lagrange basis ℓ_j on `nodes` (v = λ − λ′):
/// the weights of an exponential integrator with polynomial data prediction.
pub fn exp_lagrange_weights(nodes: &[f64], h: f64) -> Vec<f64> {
    let ints: Vec<f64> = (0..nodes.len()).map(|n| exp_moment(n, h)).collect();
    lagrange_weights(nodes, &ints)
}

/// w_j = ∫_0^H ℓ_j(v) dv for the Lagrange basis ℓ_j on `nodes` (v = σ̃ − σ̃′, H = σ̃ − σ̃′):
/// the weights of ρAB-DEIS, Adams–Bashforth in σ̃ (Zhang & Chen 2023, §4).
pub fn poly_lagrange_weights(nodes: &[f64], big_h: f64) -> Vec<f64> {
    let ints: Vec<f64> = (0..nodes.len())
        .map(|n| big_h.powi(n as i32 + 1) / (n as f64 + 1.0))
        .collect();
    lagrange_weights(nodes, &ints)
}

/// Σ_n a_{j,n}·ints[n], with a_{j,n} the coefficients of the Lagrange basis polynomial ℓ_j on
/// `nodes` and ints[n] a moment ∫ w(v) vⁿ dv.
fn lagrange_weights(nodes: &[f64], ints: &[f64]) -> Vec<f64> {
    let m = nodes.len();
    (0..m)
        .map(|j| {
            // Coefficients (ascending powers of v) of Π_{k≠j} (v − v_k)/(v_j − v_k).
            let mut poly = vec![1.0];
            let mut denom = 1.0;
            for (k, vk) in nodes.iter().enumerate() {
                if k == j {
                    continue;
                }
                let mut next = vec![0.0; poly.len() + 1];
                for (p, c) in poly.iter().enumerate() {
                    next[p + 1] += c;
                    next[p] -= c * vk;
                }
                poly = next;
                denom *= nodes[j] - vk;
            }
            poly.iter().zip(ints).map(|(c, i)| c * i).sum::<f64>() / denom
        })
        .collect()
}

/// I_n(h) = ∫_{−h}^{0} e^{v} vⁿ dv (series for small h, integration by parts otherwise).
fn exp_moment(n: usize, h: f64) -> f64 {
    if h < 1.0 {
        // Σ_k −(−h)^{n+k+1} / ((n+k+1)·k!)
        let mut sum = 0.0;
        let mut fact = 1.0;
        for k in 0..40 {
            if k > 0 {
                fact *= k as f64;
            }
            let p = (n + k + 1) as i32;
            sum -= (-h).powi(p) / (p as f64 * fact);
        }
        sum
    } else {
        let e = (-h).exp();
        let mut i = 1.0 - e;
        for k in 1..=n {
            i = -e * (-h).powi(k as i32) - k as f64 * i;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_moments_and_weights() {
        for &h in &[0.01, 0.5, 0.99, 1.0, 2.5] {
            // Composite Simpson reference.
            for n in 0..3 {
                let m = 20000;
                let dv = h / m as f64;
                let f = |v: f64| v.exp() * v.powi(n as i32);
                let mut s = f(-h) + f(0.0);
                for k in 1..m {
                    let v = -h + k as f64 * dv;
                    s += if k % 2 == 1 { 4.0 } else { 2.0 } * f(v);
                }
                let r = s * dv / 3.0;
                assert!(
                    (exp_moment(n, h) - r).abs() < 1e-12,
                    "n={n} h={h}: {} vs {r}",
                    exp_moment(n, h)
                );
            }
            // Weights integrate polynomials of degree ≤ 2 exactly: Σ c_j p(v_j) = ∫ e^v p(v).
            let nodes = [-h, -1.7 * h, -2.2 * h];
            let c = exp_lagrange_weights(&nodes, h);
            let p = |v: f64| 0.3 - 1.1 * v + 0.7 * v * v;
            let lhs: f64 = c.iter().zip(nodes).map(|(c, v)| c * p(v)).sum();
            let rhs = 0.3 * exp_moment(0, h) - 1.1 * exp_moment(1, h) + 0.7 * exp_moment(2, h);
            assert!(
                (lhs - rhs).abs() < 1e-10 * (1.0 + rhs.abs()),
                "{lhs} vs {rhs}"
            );
        }
    }

    /// ρAB-DEIS weights integrate quadratics exactly: Σ w_j p(v_j) = ∫_0^H p(v) dv, and with one
    /// node the step is Euler (w = H); two nodes give the variable-step AB2 weights.
    #[test]
    fn poly_weights_integrate_quadratics_exactly() {
        for &big_h in &[1e-3, 0.4, 7.0, 55.0] {
            let nodes = [big_h, 1.6 * big_h, 2.9 * big_h];
            let w = poly_lagrange_weights(&nodes, big_h);
            let p = |v: f64| 0.3 - 1.1 * v + 0.7 * v * v;
            let lhs: f64 = w.iter().zip(nodes).map(|(w, v)| w * p(v)).sum();
            let hh = big_h;
            let rhs = 0.3 * hh - 1.1 * hh * hh / 2.0 + 0.7 * hh * hh * hh / 3.0;
            assert!(
                (lhs - rhs).abs() < 1e-10 * (1.0 + rhs.abs()),
                "H={big_h}: {lhs} vs {rhs}"
            );
            assert_eq!(poly_lagrange_weights(&[big_h], big_h), vec![big_h]);
            // AB2 with previous step r·H: w = H·(1 + 1/(2r)), −H/(2r); here r = 0.6.
            let w2 = poly_lagrange_weights(&[big_h, 1.6 * big_h], big_h);
            let r = 0.6;
            assert!((w2[0] - big_h * (1.0 + 0.5 / r)).abs() < 1e-12 * big_h.max(1.0));
            assert!((w2[1] + big_h * 0.5 / r).abs() < 1e-12 * big_h.max(1.0));
        }
    }
}
