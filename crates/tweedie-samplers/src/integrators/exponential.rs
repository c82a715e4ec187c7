//! DPM-Solver++ (Lu et al. 2022b): exponential integrators in λ = −log σ̃ with data prediction.
//! The linear part of dx̃/dλ = D − x̃ is solved exactly; D is held constant (2S's midpoint,
//! 2M's extrapolation from the previous step) over the step.

use crate::error::Result;
use crate::integrators::Run;
use crate::state::State;
use crate::step::stream;

impl<S: State> Run<'_, '_, S> {
    pub(super) fn dpmpp_2s(&mut self, mut x: S) -> Result<S> {
        for i in 0..self.n() {
            let (xc, s) = self.churn(x, i, self.s[i])?;
            x = xc;
            let s1 = self.s[i + 1];
            let den = self.den(&x, s)?;
            let (xn, last) = if s1 == 0.0 {
                (den.clone(), den)
            } else {
                let h = (s / s1).ln();
                let sm = (s * s1).sqrt();
                let u = x.lincomb(sm / s, &den, -(-0.5 * h).exp_m1());
                let den2 = self.den(&u, sm)?;
                x.lincomb_assign(s1 / s, &den2, -(-h).exp_m1());
                (x, den2)
            };
            x = self.end_step(i, xn, &last)?;
        }
        Ok(x)
    }

    pub(super) fn dpmpp_2m(&mut self, x: S) -> Result<S> {
        let mut prev: Option<(S, f64)> = None;
        self.steps(x, |_, _, s, s1, x, den| {
            let h = (s / s1).ln();
            let c = -(-h).exp_m1();
            // x̃′ = (σ̃′/σ̃)x̃ + c·D_d, D_d = (1 + 1/2r)D − (1/2r)D_{i−1}, formed in place.
            let mut xn = x;
            match &prev {
                Some((old, h_last)) => {
                    let r = h_last / h;
                    xn.lincomb_assign(s1 / s, den, c * (1.0 + 0.5 / r));
                    xn.lincomb_assign(1.0, old, -c * 0.5 / r);
                }
                None => xn.lincomb_assign(s1 / s, den, c),
            }
            prev = Some((den.clone(), h));
            Ok(xn)
        })
    }

    pub(super) fn dpmpp_2m_sde(&mut self, x: S, eta: f64) -> Result<S> {
        let mut prev: Option<(S, f64)> = None;
        self.steps(x, |run, i, s, s1, x, den| {
            let h = (s / s1).ln();
            let eh = eta * h;
            let c = -(-h - eh).exp_m1();
            let mut xn = x;
            match &prev {
                Some((old, h_last)) => {
                    let r = h_last / h;
                    xn.lincomb_assign(s1 / s * (-eh).exp(), den, c * (1.0 + 0.5 / r));
                    xn.lincomb_assign(1.0, old, -0.5 * c / r);
                }
                None => xn.lincomb_assign(s1 / s * (-eh).exp(), den, c),
            }
            if eta > 0.0 {
                xn.add_randn(
                    s1 * (-(-2.0 * eh).exp_m1()).sqrt(),
                    run.seed,
                    run.first_index,
                    stream(i, 0),
                )?;
            }
            prev = Some((den.clone(), h));
            Ok(xn)
        })
    }
}
