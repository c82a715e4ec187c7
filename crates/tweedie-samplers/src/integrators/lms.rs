//! Linear multistep methods in σ̃ of order up to 4 on d = (x̃ − D)/σ̃ = dx̃/dσ̃: k-diffusion's
//! LMS (Lagrange weights on the actual grid, ρAB-DEIS's step) and iPNDM (fixed equal-step
//! Adams–Bashforth weights, Zhang & Chen 2023).

use std::collections::VecDeque;

use tweedie_core::multistep::ipndm_weights;

use crate::error::Result;
use crate::integrators::multistep::adams_bashforth_sigma;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    /// LMS: x̃′ = x̃ + Σ_j w_j·d_j, w_j = ∫_{σ̃}^{σ̃′} ℓ_j(ρ) dρ with ℓ_j the Lagrange basis on the
    /// last `order` σ̃_j (lower orders while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn lms(&mut self, x: S, order: usize) -> Result<S> {
        let mut hist: VecDeque<(f64, S)> = VecDeque::with_capacity(order + 1);
        self.steps(x, |_, _, s, s1, x, den| {
            hist.push_front((s, x.lincomb(1.0 / s, den, -1.0 / s)));
            hist.truncate(order);
            Ok(adams_bashforth_sigma(x, hist.iter(), s, s1))
        })
    }

    /// iPNDM: x̃′ = x̃ + (σ̃′ − σ̃)·Σ_j w_j·d_j with `tweedie_core::multistep::ipndm_weights`
    /// (orders 1, 2, … while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn ipndm(&mut self, x: S, order: usize) -> Result<S> {
        let mut hist: VecDeque<S> = VecDeque::with_capacity(order + 1);
        self.steps(x, |_, _, s, s1, x, den| {
            hist.push_front(x.lincomb(1.0 / s, den, -1.0 / s));
            hist.truncate(order);
            let w = ipndm_weights(hist.len())?;
            let mut xn = x;
            for (dj, wj) in hist.iter().zip(w) {
                xn.lincomb_assign(1.0, dj, (s1 - s) * wj);
            }
            Ok(xn)
        })
    }
}
