//! DEIS in log σ̃ (Zhang & Chen 2023; diffusers' `DEISMultistepScheduler` with
//! `deis_type = "logrho"`): Adams–Bashforth on dx̃/dσ̃ = ε with ε interpolated in log σ̃.

use std::collections::VecDeque;

use crate::error::Result;
use crate::integrators::weights::exp_lagrange_weights;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    /// x̃′ = x̃ + ∫_{σ̃}^{σ̃′} ε(ρ) dρ for ε the polynomial in log ρ through the last `order`
    /// ε_j = (x̃_j − D_j)/σ̃_j. With ρ = σ̃·e^v: x̃′ = x̃ − σ̃·Σ_j c_j·ε_j, c_j = ∫_{−h}^0 e^v ℓ_j(v) dv
    /// on the nodes v_j = ln(σ̃_j/σ̃), h = ln(σ̃/σ̃′). The step to σ̃′ = 0 has h = ∞ and is a step
    /// like the others (the integral converges), not D: hence its own loop, not `Run::steps`.
    pub(super) fn deis_logrho(&mut self, mut x: S, order: usize) -> Result<S> {
        let mut hist: VecDeque<(f64, S)> = VecDeque::with_capacity(order + 1);
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            hist.push_front((s, x.lincomb(1.0 / s, &den, -1.0 / s)));
            hist.truncate(order);
            let nodes: Vec<f64> = hist.iter().map(|(sj, _)| (sj / s).ln()).collect();
            let h = if s1 == 0.0 {
                f64::INFINITY
            } else {
                (s / s1).ln()
            };
            let c = exp_lagrange_weights(&nodes, h);
            let mut xn = x;
            for ((_, ej), cj) in hist.iter().zip(c) {
                xn.lincomb_assign(1.0, ej, -s * cj);
            }
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }
}
