//! Linear multistep methods in σ̃ of order up to 4 on d = (x̃ − D)/σ̃ = dx̃/dσ̃: k-diffusion's
//! LMS (Lagrange weights on the actual grid, as ρAB-DEIS) and iPNDM (fixed equal-step
//! Adams–Bashforth weights, Zhang & Chen 2023).

use std::collections::VecDeque;

use tweedie_core::multistep::ipndm_weights;

use crate::error::Result;
use crate::integrators::weights::poly_lagrange_weights;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    /// LMS: x̃′ = x̃ + Σ_j w_j·d_j, w_j = ∫_{σ̃}^{σ̃′} ℓ_j(ρ) dρ with ℓ_j the Lagrange basis on the
    /// last `order` σ̃_j (lower orders while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn lms(&mut self, mut x: S, order: usize) -> Result<S> {
        let mut hist: VecDeque<(f64, S)> = VecDeque::with_capacity(order + 1);
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = if s1 == 0.0 {
                den.clone()
            } else {
                hist.push_front((s, x.lincomb(1.0 / s, &den, -1.0 / s)));
                hist.truncate(order);
                let nodes: Vec<f64> = hist.iter().map(|(sj, _)| sj - s1).collect();
                let w = poly_lagrange_weights(&nodes, s - s1);
                let mut xn = x;
                for ((_, dj), wj) in hist.iter().zip(w) {
                    xn.lincomb_assign(1.0, dj, -wj);
                }
                xn
            };
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }

    /// iPNDM: x̃′ = x̃ + (σ̃′ − σ̃)·Σ_j w_j·d_j with `tweedie_core::multistep::ipndm_weights`
    /// (orders 1, 2, … while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn ipndm(&mut self, mut x: S, order: usize) -> Result<S> {
        let mut hist: VecDeque<S> = VecDeque::with_capacity(order + 1);
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = if s1 == 0.0 {
                den.clone()
            } else {
                hist.push_front(x.lincomb(1.0 / s, &den, -1.0 / s));
                hist.truncate(order);
                let w = ipndm_weights(hist.len())?;
                let mut xn = x;
                for (dj, wj) in hist.iter().zip(w) {
                    xn.lincomb_assign(1.0, dj, (s1 - s) * wj);
                }
                xn
            };
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }
}
