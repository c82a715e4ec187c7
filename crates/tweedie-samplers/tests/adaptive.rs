//! The adaptive solver against the closed-form probability-flow ODE of one Gaussian.
//!
//! For x₀ ~ N(μ, Σ), Σ = Q·diag(s²)·Qᵀ, the exact denoiser is D = μ + Σ(Σ + σ̃²I)⁻¹(x̃ − μ) and
//! the ODE dx̃/dσ̃ = (x̃ − D)/σ̃ = σ̃(Σ + σ̃²I)⁻¹(x̃ − μ) is solved, per eigen-direction, by
//! x̃(σ̃) = μ + √((s² + σ̃²)/(s² + σ̃_T²))·(x̃_T − μ).

mod common;

use std::sync::Mutex;

use common::gaussian;
use ndarray::{Array1, Array2, Axis};
use tweedie_core::process::{Edm, VpLinear};
use tweedie_core::rng::normal_rows;
use tweedie_core::{Process, TimeGrid};
use tweedie_samplers::{
    GaussianMixture, Init, Model, Sampler, SamplerError, SamplerKind, StepHook, StepInfo,
};

const SIGMA_T: f64 = 80.0;
const SIGMA_END: f64 = 0.002;
const DIM: usize = 8;
const BATCH: usize = 64;

/// N(μ, Q·diag(s²)·Qᵀ) with Q = I − 2vvᵀ/‖v‖² (a reflection, so Qᵀ = Q = Q⁻¹) and s² spread over
/// [0.01, 4]: the eigen-directions cross σ̃ = s at different times of the solve.
struct Gauss {
    mu: Array1<f64>,
    q: Array2<f64>,
    s2: Array1<f64>,
}

impl Gauss {
    fn new() -> Self {
        let v = Array1::from_shape_fn(DIM, |i| 1.0 + 0.3 * i as f64);
        let q = Array2::<f64>::eye(DIM)
            - 2.0 / v.dot(&v) * v.clone().insert_axis(Axis(1)).dot(&v.insert_axis(Axis(0)));
        let s2 = Array1::from_shape_fn(DIM, |i| 0.01 * 400f64.powf(i as f64 / (DIM - 1) as f64));
        let mu = Array1::from_shape_fn(DIM, |i| 0.5 - 0.2 * i as f64);
        Gauss { mu, q, s2 }
    }
    fn model(&self) -> GaussianMixture {
        let cov = self.q.dot(&Array2::from_diag(&self.s2)).dot(&self.q);
        gaussian(self.mu.clone(), cov)
    }
    /// x̃(σ̃) from x̃_T at σ̃_T, rows of `x_t`.
    fn exact(&self, x_t: &Array2<f64>, sigma: f64) -> Array2<f64> {
        let scale = self
            .s2
            .mapv(|s2| ((s2 + sigma * sigma) / (s2 + SIGMA_T * SIGMA_T)).sqrt());
        let centred = x_t - &self.mu;
        // Rows: μ + Q·diag(scale)·Q·(x − μ).
        (centred.dot(&self.q) * &scale.insert_axis(Axis(0))).dot(&self.q) + &self.mu
    }
    /// The largest factor by which the flow carries a perturbation from σ̃ to σ̃_END (≤ 1).
    fn contraction(&self, sigma: f64) -> f64 {
        self.s2
            .iter()
            .map(|s2| ((s2 + SIGMA_END * SIGMA_END) / (s2 + sigma * sigma)).sqrt())
            .fold(0.0, f64::max)
    }
}

/// x̃_T ~ N(μ, Σ + σ̃_T²I) is not needed: any start works; μ + σ̃_T·ε is the usual one.
fn start(g: &Gauss) -> Array2<f64> {
    normal_rows(3, 0, BATCH, 0, DIM) * SIGMA_T + &g.mu
}

/// A two-point grid σ̃_T → `sigma_end` for `p` (t from the process's inverse).
fn grid(p: &dyn Process, sigma_end: f64) -> TimeGrid {
    TimeGrid {
        t: vec![
            p.t_of_sigma_tilde(SIGMA_T),
            if sigma_end == 0.0 {
                0.0
            } else {
                p.t_of_sigma_tilde(sigma_end)
            },
        ],
        sigma_tilde: vec![SIGMA_T, sigma_end],
    }
}

fn adaptive(tol: f64) -> SamplerKind {
    SamplerKind::Adaptive {
        rtol: tol,
        atol: tol,
    }
}

/// RMS over all elements.
fn rms(a: &Array2<f64>) -> f64 {
    (a.mapv(|v| v * v).sum() / a.len() as f64).sqrt()
}

/// What a run to σ̃_END gives: x̃ at the end, its RMS error per element against the closed
/// form, the NFE, and the bound on that error derived from the tolerance (see below).
struct Solve {
    x_end: Array2<f64>,
    err: f64,
    nfe: usize,
    bound: f64,
}

/// Runs the solver in process `p` from x̃_T (latents x_T = α_T·x̃_T) to σ̃_END.
///
/// The bound: an accepted step's error estimate satisfies ‖err/(tol + tol·max(|x̃|, |x̃′|))‖_RMS
/// ≤ 1, so its local error is at most tol·(1 + max |x̃|) in RMS (the estimate is that of the
/// embedded second-order solution; the third-order one we keep is more accurate). The flow
/// carries an error made at σ̃′ to σ̃_END multiplied by at most `contraction(σ̃′)` ≤ 1, and the
/// global error is at most the sum of the carried local errors.
fn solve(p: &dyn Process, g: &Gauss, x_t: &Array2<f64>, tol: f64) -> Solve {
    let mix = g.model();
    let d = Sampler::new(p, grid(p, SIGMA_END), adaptive(tol), &mix).unwrap();
    let alpha_t = p.alpha(p.t_of_sigma_tilde(SIGMA_T));
    let mut prev_max = x_t.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut bound = 0.0;
    let mut cb = |s: &StepInfo<Array2<f64>>| {
        let max = s.x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        bound += g.contraction(s.sigma_next) * tol * (1.0 + max.max(prev_max));
        prev_max = max;
    };
    let out = d.run(Init::Latents(x_t * alpha_t), Some(&mut cb)).unwrap();
    let x_end = out.samples / p.alpha(p.t_of_sigma_tilde(SIGMA_END));
    let err = rms(&(&x_end - &g.exact(x_t, SIGMA_END)));
    Solve {
        x_end,
        err,
        nfe: out.nfe,
        bound,
    }
}

#[test]
fn closed_form_itself() {
    // The closed form at σ̃_T is the identity, and it solves the ODE: a central difference
    // of x̃(σ̃) matches σ̃(Σ + σ̃²I)⁻¹(x̃ − μ) = (x̃ − D)/σ̃ from the mixture's own denoiser.
    let g = Gauss::new();
    let x_t = start(&g);
    assert!(rms(&(g.exact(&x_t, SIGMA_T) - &x_t)) < 1e-12);
    let (s, ds) = (1.3, 1e-5);
    let x = g.exact(&x_t, s);
    let slope = (g.exact(&x_t, s + ds) - g.exact(&x_t, s - ds)) / (2.0 * ds);
    let den = Model::denoise(&g.model(), &x, s).unwrap();
    assert!(rms(&(slope - (&x - &den) / s)) < 1e-8);
}

/// At tol 1e-6 the error is below the bound derived in [`solve`], in EDM and VP coordinates;
/// and it falls with the tolerance as a third-order method's should: error ∝ NFE^{−3}.
#[test]
fn gaussian_error_within_the_tolerance_bound_and_third_order() {
    let g = Gauss::new();
    let x_t = start(&g);
    let edm = Edm {
        sigma_min: SIGMA_END,
        sigma_max: SIGMA_T,
    };
    let vp = VpLinear {
        beta_min: 0.1,
        beta_d: 19.9,
        eps_t: 1e-5,
    };
    let runs: Vec<Solve> = [1e-4, 1e-5, 1e-6]
        .iter()
        .map(|&tol| solve(&edm, &g, &x_t, tol))
        .collect();
    for (tol, r) in [1e-4, 1e-5, 1e-6].iter().zip(&runs) {
        eprintln!(
            "tol {tol:e}: NFE {} err {:.3e} bound {:.3e}",
            r.nfe, r.err, r.bound
        );
    }
    let tight = &runs[2];
    assert!(tight.err < tight.bound, "{} ≥ {}", tight.err, tight.bound);
    // Same ODE in VP coordinates (x_t = α·x̃): same answer as the EDM run to rounding.
    let vp_run = solve(&vp, &g, &x_t, 1e-6);
    eprintln!("VP tol 1e-6: NFE {} err {:.3e}", vp_run.nfe, vp_run.err);
    assert!(vp_run.err < vp_run.bound);
    assert!(rms(&(&vp_run.x_end - &tight.x_end)) < 1e-9);
    // Errors fall with the tolerance, at the rate NFE^{−3} of a third-order method.
    for w in runs.windows(2) {
        assert!(w[1].err < w[0].err && w[1].nfe > w[0].nfe);
    }
    let order = -(runs[2].err / runs[0].err).ln() / (runs[2].nfe as f64 / runs[0].nfe as f64).ln();
    eprintln!("observed order in NFE: {order:.2}");
    assert!((2.5..=4.0).contains(&order), "order {order}");
}

/// A model that logs the σ̃ of every call.
struct Logged<'a> {
    inner: &'a GaussianMixture,
    sigmas: Mutex<Vec<f64>>,
}

impl Model<Array2<f64>> for Logged<'_> {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie_samplers::Result<Array2<f64>> {
        self.sigmas.lock().unwrap().push(sigma);
        self.inner.denoise(x, sigma)
    }
    fn capabilities(&self) -> tweedie_samplers::Capabilities<'_, Array2<f64>> {
        tweedie_samplers::Capabilities::none()
    }
}

/// NFE = calls made. D at a step's start is evaluated once however many attempts the step
/// takes (each attempt adds 2 calls, at σ̃e^{−h/3} and σ̃e^{−2h/3}), and a grid ending at 0
/// adds one call, D at σ̃_END, whose output is the sample.
#[test]
fn nfe_counts_every_call_and_reuses_d_at_the_step_start() {
    let g = Gauss::new();
    let mix = g.model();
    let logged = Logged {
        inner: &mix,
        sigmas: Mutex::new(Vec::new()),
    };
    let edm = Edm {
        sigma_min: SIGMA_END,
        sigma_max: SIGMA_T,
    };
    let x_t = start(&g);
    let mut grid_to_zero = grid(&edm, SIGMA_END);
    grid_to_zero.t.push(0.0);
    grid_to_zero.sigma_tilde.push(0.0);
    let mut starts = Vec::new();
    let mut last_x = None;
    let mut cb = |s: &StepInfo<Array2<f64>>| {
        starts.push(s.sigma);
        last_x = Some(s.x.clone());
    };
    let out = Sampler::new(&edm, grid_to_zero, adaptive(1e-5), &logged)
        .unwrap()
        .record(true)
        .run(Init::Latents(x_t.clone()), Some(&mut cb))
        .unwrap();
    let calls = logged.sigmas.into_inner().unwrap();
    assert_eq!(out.nfe, calls.len());
    // The callback saw every accepted step and then the jump σ̃_END → 0; the trajectory has the
    // start, every step's end, and the sample.
    let accepted = starts.len() - 1;
    assert_eq!(*starts.last().unwrap(), SIGMA_END);
    assert_eq!(out.sigmas.len(), accepted + 2);
    assert_eq!(out.sigmas[accepted], SIGMA_END);
    assert_eq!(*out.sigmas.last().unwrap(), 0.0);
    // Each accepted step's start σ̃ (and σ̃_END) is evaluated exactly once.
    for s in &starts {
        assert_eq!(calls.iter().filter(|c| *c == s).count(), 1, "σ̃ = {s}");
    }
    let attempt_calls = calls.len() - starts.len();
    assert_eq!(attempt_calls % 2, 0);
    assert!(attempt_calls / 2 >= accepted);
    // The sample is D(x̃(σ̃_END); σ̃_END), the same as the run that stops at σ̃_END, denoised.
    let stop = solve(&edm, &g, &x_t, 1e-5);
    assert_eq!(out.nfe, stop.nfe + 1);
    let den = Model::denoise(&mix, &stop.x_end, SIGMA_END).unwrap();
    assert_eq!(out.samples, den);
    assert_eq!(last_x.unwrap(), den);
}

struct Nothing;

impl StepHook<Array2<f64>> for Nothing {
    fn after_step(
        &self,
        _: usize,
        _: f64,
        x: Array2<f64>,
        _: tweedie_samplers::sampler::NoiseKey,
    ) -> tweedie_samplers::Result<Array2<f64>> {
        Ok(x)
    }
}

#[test]
fn step_hooks_are_refused() {
    let g = Gauss::new();
    let mix = g.model();
    let edm = Edm {
        sigma_min: SIGMA_END,
        sigma_max: SIGMA_T,
    };
    let err = Sampler::new(&edm, grid(&edm, SIGMA_END), adaptive(1e-3), &mix)
        .unwrap()
        .hook(&Nothing)
        .run(Init::Latents(start(&g)), None)
        .unwrap_err();
    assert!(matches!(err, SamplerError::InvalidValue { .. }), "{err}");
    assert!(err.to_string().contains("adaptive"), "{err}");
}
