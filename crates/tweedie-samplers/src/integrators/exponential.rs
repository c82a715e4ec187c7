//! DPM-Solver++ (Lu et al. 2022b): exponential integrators in λ = −log σ̃ with data prediction.
//! The linear part of dx̃/dλ = D − x̃ is solved exactly; D is held constant (2S's midpoint,
//! 2M's extrapolation from the previous step) over the step.

use crate::error::Result;
use crate::integrators::Run;
use crate::state::State;
use crate::step::stream;

impl<S: State> Run<'_, '_, S> {
    pub(super) fn dpmpp_2s(&mut self, mut x: S) -> Result<S> {
        // The midpoint state's buffer, allocated once per run.
        let mut u: Option<S> = None;
        for i in 0..self.n() {
            let (xc, s) = self.churn(x, i, self.s[i])?;
            x = xc;
            let s1 = self.s[i + 1];
            let den = self.den(&x, s)?;
            if s1 == 0.0 {
                x = self.end_with_denoised(i, den)?;
                continue;
            }
            let h = (s / s1).ln();
            let sm = (s * s1).sqrt();
            let u = u.get_or_insert_with(|| x.zeros_like());
            u.assign_combination(&[(sm / s, &x), (-(-0.5 * h).exp_m1(), &den)]);
            let den2 = self.den(u, sm)?;
            let finite = x.combine_assign(s1 / s, &[(-(-h).exp_m1(), &den2)]);
            x = self.end_step(i, x, finite, &den2)?;
        }
        Ok(x)
    }

    pub(super) fn dpmpp_2m(&mut self, x: S) -> Result<S> {
        self.dpmpp_2m_any(x, 0.0)
    }

    pub(super) fn dpmpp_2m_sde(&mut self, x: S, eta: f64) -> Result<S> {
        self.dpmpp_2m_any(x, eta)
    }

    /// x̃′ = (σ̃′/σ̃)e^{−ηh}x̃ + c·D_d (+ σ̃′√(1 − e^{−2ηh})·ε when η > 0), c = 1 − e^{−(1+η)h},
    /// D_d = (1 + 1/2r)D − (1/2r)D_{i−1}, r = h_{i−1}/h (D on the first step); η = 0 is 2M.
    fn dpmpp_2m_any(&mut self, x: S, eta: f64) -> Result<S> {
        // D_{i−1} (the model's previous output itself, kept: no copy) and its σ̃.
        self.steps_keeping_denoised(x, 1, |run, i, s, s1, x, den, prev| {
            let h = (s / s1).ln();
            let eh = eta * h;
            let c = -(-h - eh).exp_m1();
            let mut xn = x;
            let a = if eta == 0.0 {
                s1 / s
            } else {
                s1 / s * (-eh).exp()
            };
            let terms: Vec<(f64, &S)> = match prev.get(0) {
                Some((s_last, old)) => {
                    // h_{i−1} = ln(σ̃_{i−1}/σ̃_i), as step i − 1 computed its own h.
                    let h_last = (s_last / s).ln();
                    let r = h_last / h;
                    vec![(c * (1.0 + 0.5 / r), den), (-0.5 * c / r, old)]
                }
                None => vec![(c, den)],
            };
            let finite = if eta > 0.0 {
                xn.combine_add_randn(
                    (a, &terms, s1 * (-(-2.0 * eh).exp_m1()).sqrt()),
                    run.seed,
                    run.first_index,
                    stream(i, 0),
                )?
            } else {
                xn.combine_assign(a, &terms)
            };
            Ok((xn, finite))
        })
    }
}
