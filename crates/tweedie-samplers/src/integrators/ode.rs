//! Euler and Heun on the probability-flow ODE in EDM coordinates, dx̃/dσ̃ = (x̃ − D(x̃; σ̃))/σ̃
//! (Karras et al. 2022, Alg. 1), with optional churn before each step (Alg. 2).

use crate::error::Result;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    /// x̃ + (σ′ − σ)(x̃ − D)/σ = (σ′/σ)x̃ + (1 − σ′/σ)D, exact at σ′ = 0.
    pub(super) fn euler_to(x: &S, den: &S, s: f64, s_next: f64) -> S {
        let r = s_next / s;
        x.lincomb(r, den, 1.0 - r)
    }

    pub(super) fn euler(&mut self, mut x: S) -> Result<S> {
        for i in 0..self.n() {
            let (x0, s) = self.churn(x, i, self.s[i])?;
            let s1 = self.s[i + 1];
            let den = self.den(&x0, s)?;
            let xn = Self::euler_to(&x0, &den, s, s1);
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    pub(super) fn heun(&mut self, mut x: S) -> Result<S> {
        let n = self.n();
        for i in 0..n {
            // Karras et al. 2022 Alg. 2 churns before the Heun step (when the run has churn).
            let (xc, s) = self.churn(x, i, self.s[i])?;
            x = xc;
            let s1 = self.s[i + 1];
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
}
