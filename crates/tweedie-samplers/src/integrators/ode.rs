//! Euler and Heun on the probability-flow ODE in EDM coordinates, dx̃/dσ̃ = (x̃ − D(x̃; σ̃))/σ̃
//! (Karras et al. 2022, Alg. 1), with optional churn before each step (Alg. 2).

use crate::error::Result;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    pub(super) fn euler(&mut self, mut x: S) -> Result<S> {
        for i in 0..self.n() {
            let (mut xn, s) = self.churn(x, i, self.s[i])?;
            let s1 = self.s[i + 1];
            let den = self.den(&xn, s)?;
            // In place: the step allocates nothing besides the model's output, and its pass
            // checks finiteness.
            let r = s1 / s;
            let finite = xn.combine_assign(r, &[(1.0 - r, &den)]);
            x = self.end_step(i, xn, finite, &den)?;
        }
        Ok(x)
    }

    pub(super) fn heun(&mut self, mut x: S) -> Result<S> {
        let n = self.n();
        // The Euler predictor's buffer, allocated once per run.
        let mut xe: Option<S> = None;
        for i in 0..n {
            // Karras et al. 2022 Alg. 2 churns before the Heun step (when the run has churn).
            let (xc, s) = self.churn(x, i, self.s[i])?;
            x = xc;
            let s1 = self.s[i + 1];
            let den = self.den(&x, s)?;
            // Euler predictor x̃_e = x̃ + (σ′ − σ)·d = (σ′/σ)x̃ + (1 − σ′/σ)D, d = (x̃ − D)/σ.
            let r = s1 / s;
            let (finite, last_den) = if s1 > 0.0 {
                let e = xe.get_or_insert_with(|| x.zeros_like());
                e.assign_combination(&[(r, &x), (1.0 - r, &den)]);
                // Trapezoid x̃ + (σ′ − σ)(d + d′)/2 with d′ = (x̃_e − D′)/σ′, one pass over x̃.
                let den2 = self.den(e, s1)?;
                let (a, b) = (0.5 * (s1 - s) / s, 0.5 * (s1 - s) / s1);
                let finite = x.combine_assign(1.0 + a, &[(-a, &den), (b, e), (-b, &den2)]);
                (finite, den2)
            } else {
                (x.combine_assign(r, &[(1.0 - r, &den)]), den)
            };
            x = self.end_step(i, x, finite, &last_den)?;
        }
        Ok(x)
    }
}
