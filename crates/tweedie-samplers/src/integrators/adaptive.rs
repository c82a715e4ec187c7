//! The adaptive solver's pieces: an embedded exponential integrator 3(2) in λ = −log σ̃
//! (DPM-Solver-3's stages in data prediction, as in DPM-Solver++; Lu et al. 2022a §3.3, 2022b)
//! and its step-size controller.
//!
//! In λ the probability-flow ODE in EDM coordinates is dx̃/dλ = D(x̃; e^{−λ}) − x̃. Its linear
//! part is solved exactly (variation of constants): over a step of size h
//!
//!   x̃(λ + h) = e^{−h}·x̃(λ) + ∫₀ʰ e^{−(h−τ)} D(λ + τ) dτ,
//!
//! and only the data prediction D, smooth and bounded in λ, is replaced by a polynomial whose
//! integral against e^{−(h−τ)} is exact ([`exp_lagrange_weights`]). An explicit Runge–Kutta
//! method on the same ODE (the former Bogacki–Shampine solver) also approximates e^{−h}, the
//! part that dominates where D barely moves (large σ̃).

use crate::error::{Result, SamplerError};
use crate::integrators::weights::exp_lagrange_weights;
use crate::integrators::Run;
use crate::state::State;
use crate::step::StepInfo;
use tweedie_core::Invalid;

/// Stage points of the step as fractions of h.
const C1: f64 = 1.0 / 3.0;
const C2: f64 = 2.0 / 3.0;

/// One step from λ to λ + h (σ̃ → σ̃′ = σ̃e^{−h}) given D₀ = D(x̃; σ̃); two more evaluations.
///
/// Stages at c₁ = ⅓ and c₂ = ⅔: u₁ = e^{−c₁h}x̃ + (1 − e^{−c₁h})D₀ (a DDIM step), u₂ from the
/// line through D₀, D₁ integrated exactly. The third-order solution integrates the quadratic
/// through D₀, D₁, D₂ exactly (so it is exact whenever D is quadratic in λ); the embedded
/// second-order one the line through D₀, D₁. Their difference, a multiple of the second
/// difference D₂ − 2D₁ + D₀, is the error estimate of local order 3.
pub struct ExpStep {
    pub sigma: f64,
    pub sigma_next: f64,
}

/// What one step attempt gives: the third-order state, its error estimate and D₂.
pub struct StepResult<S> {
    pub x: S,
    pub err: S,
    pub last_denoised: S,
}

impl ExpStep {
    /// The step size in λ.
    pub fn h(&self) -> f64 {
        (self.sigma / self.sigma_next).ln()
    }

    /// σ̃ at the fraction c of the step in λ.
    fn sigma_at(&self, c: f64) -> f64 {
        self.sigma * (-c * self.h()).exp()
    }

    /// Runs the step with `den(x̃, σ̃)`.
    pub fn run<S: State>(
        &self,
        x: &S,
        d0: &S,
        mut den: impl FnMut(&S, f64) -> Result<S>,
    ) -> Result<StepResult<S>> {
        let h = self.h();
        // Nodes are λ_j − λ_end of the sub-step they serve (exp_lagrange_weights' convention).
        let e1 = (-C1 * h).exp();
        let u1 = x.lincomb(e1, d0, 1.0 - e1);
        let d1 = den(&u1, self.sigma_at(C1))?;
        let w = exp_lagrange_weights(&[-C2 * h, -(C2 - C1) * h], C2 * h);
        let u2 = x.lincomb3((-C2 * h).exp(), d0, w[0], &d1, w[1]);
        let d2 = den(&u2, self.sigma_at(C2))?;
        let high = exp_lagrange_weights(&[-h, -(1.0 - C1) * h, -(1.0 - C2) * h], h);
        let low = exp_lagrange_weights(&[-h, -(1.0 - C1) * h], h);
        // e^{−h} as the ratio of the end points, so the last step lands on σ̃_end exactly.
        let e = self.sigma_next / self.sigma;
        let x_next = x
            .lincomb3(e, d0, high[0], &d1, high[1])
            .lincomb(1.0, &d2, high[2]);
        let err = d0.lincomb3(high[0] - low[0], &d1, high[1] - low[1], &d2, high[2]);
        Ok(StepResult {
            x: x_next,
            err,
            last_denoised: d2,
        })
    }
}

/// PI step-size control (Gustafsson 1991; Hairer, Nørsett & Wanner, Solving ODEs I, §II.4) for
/// an error estimate of local order k = 3: accept when the scaled error e ≤ 1, and after an
/// accepted step h ← h·0.9·e^{−0.7/k}·e_prev^{0.4/k}, e_prev the previous accepted step's error.
/// The e_prev term brakes when the error grows from step to step (it does, steeply, as σ̃ falls
/// from 80 to ~1): the plain h·0.9·e^{−1/k} rule overshoots there and rejects one attempt in
/// four. After a rejection h ← h·0.9·e^{−1/k}, and the step after a rejection does not grow.
#[derive(Debug, Default)]
pub struct Controller {
    prev_err: Option<f64>,
    rejected: bool,
}

impl Controller {
    const ORDER: f64 = 3.0;
    const SAFETY: f64 = 0.9;
    const MIN_FACTOR: f64 = 0.2;
    const MAX_FACTOR: f64 = 5.0;
    /// Floor on e, so that e = 0 (a step where D is locally linear in λ) grows h by MAX_FACTOR.
    const MIN_ERR: f64 = 1e-10;

    /// (accept, factor for the next h) for the scaled error `e` of the attempted step.
    pub fn propose(&mut self, e: f64) -> (bool, f64) {
        let e = e.max(Self::MIN_ERR);
        let accept = e <= 1.0;
        let i_term = Self::SAFETY * e.powf(-1.0 / Self::ORDER);
        let mut factor = match (accept, self.prev_err) {
            (true, Some(prev)) => {
                Self::SAFETY * e.powf(-0.7 / Self::ORDER) * prev.powf(0.4 / Self::ORDER)
            }
            _ => i_term,
        }
        .clamp(Self::MIN_FACTOR, Self::MAX_FACTOR);
        if accept {
            if self.rejected {
                factor = factor.min(1.0);
            }
            self.prev_err = Some(e);
        }
        self.rejected = !accept;
        (accept, factor)
    }
}

/// The batch's error: RMS over samples of the per-sample scaled RMS errors
/// ‖err/(atol + rtol·max(|x̃|, |x̃′|))‖_RMS, i.e. the RMS over every element of the batch.
pub fn batch_error<S: State>(err: &S, x: &S, x_next: &S, atol: f64, rtol: f64) -> f64 {
    let per_sample = err.scaled_rms(x, x_next, atol, rtol);
    let n = per_sample.len().max(1) as f64;
    (per_sample.iter().map(|e| e * e).sum::<f64>() / n).sqrt()
}

impl<S: State> Run<'_, '_, S> {
    /// Adaptive exponential integrator 3(2) in λ = −log σ̃ (see `adaptive`) from the grid's
    /// first σ̃ to its last positive one, then D there when the grid ends at 0. D at the start
    /// of a step is kept across rejections: an attempt costs 2 evaluations, an accepted step 3.
    pub(super) fn adaptive(&mut self, x: S, rtol: f64, atol: f64) -> Result<S> {
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
        // A grid with one positive level (e.g. 1 step to 0) leaves nothing to integrate: the
        // result would be D(x_T; σ_max), samples collapsed on the mean, reported as NFE 1.
        if !(sigma_end < self.s[0]) {
            return Err(SamplerError::invalid(
                "steps",
                self.s.len().saturating_sub(1),
                format!(
                    "adaptive integrates from the grid's first σ̃ ({}) to its last positive one \
                     ({sigma_end}); this grid has no range between them: use steps ≥ 2",
                    self.s[0]
                ),
            ));
        }
        let lam_end = -sigma_end.ln();
        let mut x = x;
        let mut sigma = self.s[0];
        let mut h = FIRST_STEP;
        let mut d0: Option<S> = None;
        let mut controller = Controller::default();
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
            let step = ExpStep { sigma, sigma_next };
            let r = step.run(&x, &den0, |u, sg| self.den(u, sg))?;
            let e = batch_error(&r.err, &x, &r.x, atol, rtol);
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
        if self.record {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, Array2};

    /// With D constant in x̃ and λ (D ≡ c) the step is exact: x̃′ = e^{−h}x̃ + (1 − e^{−h})c,
    /// and the error estimate (a second difference of D) is zero up to rounding.
    #[test]
    fn constant_denoiser_is_integrated_exactly() {
        let x: Array2<f64> = arr2(&[[3.0, -1.0], [0.5, 2.0]]);
        let c: Array2<f64> = arr2(&[[1.0, 2.0], [-1.0, 0.0]]);
        let (s, s1) = (2.0, 2.0 * (-0.7f64).exp());
        let step = ExpStep {
            sigma: s,
            sigma_next: s1,
        };
        let r = step.run(&x, &c, |_, _| Ok(c.clone())).unwrap();
        let e = s1 / s;
        let exact = &x * e + &c * (1.0 - e);
        assert!((&r.x - &exact).iter().all(|d| d.abs() < 1e-15));
        assert!(r.err.iter().all(|d| d.abs() < 1e-15), "{:?}", r.err);
    }

    /// D = a + bλ + cλ² (independent of x̃) is integrated exactly:
    /// ∫₀ʰ e^{−(h−τ)} g(τ) dτ = [g − g′ + g″](h) − e^{−h}[g − g′ + g″](0) for quadratic g.
    /// The error estimate is zero when D is linear in λ (c = 0) and not when c ≠ 0.
    #[test]
    fn denoiser_quadratic_in_lambda_is_integrated_exactly() {
        let x: Array2<f64> = arr2(&[[3.0, -1.0]]);
        let (a, b) = (0.4, -1.3);
        for c in [0.0, 0.8] {
            let g = |lam: f64| a + b * lam + c * lam * lam;
            let g1 = |lam: f64| b + 2.0 * c * lam;
            let d_at = |sigma: f64| Array2::from_elem((1, 2), g(-sigma.ln()));
            let (s, h) = (5.0f64, 0.9f64);
            let step = ExpStep {
                sigma: s,
                sigma_next: s * (-h).exp(),
            };
            let r = step.run(&x, &d_at(s), |_, sg| Ok(d_at(sg))).unwrap();
            let (l0, l1, e) = (-s.ln(), -s.ln() + h, (-h).exp());
            let ibp = |lam: f64| g(lam) - g1(lam) + 2.0 * c;
            let integral = ibp(l1) - e * ibp(l0);
            for (xi, x0) in r.x.iter().zip(x.iter()) {
                assert!((xi - (e * x0 + integral)).abs() < 1e-13, "c={c}: {xi}");
            }
            // Linear interpolant through λ₀, λ₀ + h/3 misses cλ²: the error term is
            // c·∫₀ʰ e^{−(h−τ)} τ(τ − h/3) dτ = c·[h² − 2h + 2 − 2e^{−h} − (h/3)(h − 1 + e^{−h})].
            let miss = c * (h * h - 2.0 * h + 2.0 - 2.0 * e - h / 3.0 * (h - 1.0 + e));
            for v in r.err.iter() {
                assert!((v - miss).abs() < 1e-13, "c={c}: err {v} vs {miss}");
            }
        }
    }

    #[test]
    fn controller_is_integral_first_then_pi() {
        let mut c = Controller::default();
        // First step: I-control, 0.9·e^{−1/3}.
        assert_eq!(c.propose(1.0), (true, 0.9));
        // e = 1/8 after e_prev = 1: 0.9·8^{0.7/3}.
        let (ok, f) = c.propose(0.125);
        assert!(ok && (f - 0.9 * 8f64.powf(0.7 / 3.0)).abs() < 1e-14, "{f}");
        // Rejected e = 8: I-control 0.9/2; the accepted step after it may not grow h (PI would
        // give 0.9·0.001^{−0.7/3}·(1/8)^{0.4/3} ≈ 3.4 for e = 0.001).
        let (ok, f) = c.propose(8.0);
        assert!(!ok && (f - 0.45).abs() < 1e-15);
        assert_eq!(c.propose(0.001), (true, 1.0));
        // Then PI again, from e_prev = 0.001.
        let (ok, f) = c.propose(0.5);
        let pi = 0.9 * 0.5f64.powf(-0.7 / 3.0) * 0.001f64.powf(0.4 / 3.0);
        assert!(ok && (f - pi).abs() < 1e-14, "{f}");
        // Clamps, and e = 0 grows by the maximum.
        assert_eq!(Controller::default().propose(1e9), (false, 0.2));
        assert_eq!(Controller::default().propose(0.0), (true, 5.0));
    }

    #[test]
    fn batch_error_is_the_rms_over_all_elements() {
        let x = Array2::<f64>::zeros((2, 2));
        let err = arr2(&[[3.0, 4.0], [0.0, 0.0]]);
        // atol 1, rtol 0: per-sample RMS 5/√2 and 0, batch RMS 2.5.
        assert_eq!(batch_error(&err, &x, &x, 1.0, 0.0), 2.5);
    }
}
