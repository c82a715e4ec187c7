//! Linear multistep methods in σ̃ of order up to 4 on d = (x̃ − D)/σ̃ = dx̃/dσ̃: k-diffusion's
//! LMS (Lagrange weights on the actual grid, ρAB-DEIS's step) and iPNDM (fixed equal-step
//! Adams–Bashforth weights, Zhang & Chen 2023).

use tweedie_core::multistep::ipndm_weights;

use crate::error::Result;
use crate::integrators::history::History;
use crate::integrators::multistep::adams_bashforth_sigma;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    /// LMS: x̃′ = x̃ + Σ_j w_j·d_j, w_j = ∫_{σ̃}^{σ̃′} ℓ_j(ρ) dρ with ℓ_j the Lagrange basis on the
    /// last `order` σ̃_j (lower orders while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn lms(&mut self, x: S, order: usize) -> Result<S> {
        let mut hist = History::new(order);
        self.steps(x, |_, _, s, s1, x, den| {
            hist.push(s, &[(1.0 / s, &x), (-1.0 / s, den)]);
            Ok(adams_bashforth_sigma(x, hist.iter(), s, s1))
        })
    }

    /// iPNDM: x̃′ = x̃ + (σ̃′ − σ̃)·Σ_j w_j·d_j with `tweedie_core::multistep::ipndm_weights`
    /// (orders 1, 2, … while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn ipndm(&mut self, x: S, order: usize) -> Result<S> {
        let mut hist = History::new(order);
        self.steps(x, |_, _, s, s1, x, den| {
            hist.push(s, &[(1.0 / s, &x), (-1.0 / s, den)]);
            let w = ipndm_weights(hist.len())?;
            let terms: Vec<(f64, &S)> = hist
                .iter()
                .zip(w)
                .map(|((_, dj), wj)| ((s1 - s) * wj, dj))
                .collect();
            let mut xn = x;
            let finite = xn.combine_assign(1.0, &terms);
            Ok((xn, finite))
        })
    }
}
