//! Linear multistep methods in σ̃ of order up to 4 on d = (x̃ − D)/σ̃ = dx̃/dσ̃: k-diffusion's
//! LMS (Lagrange weights on the actual grid, ρAB-DEIS's step) and iPNDM (fixed equal-step
//! Adams–Bashforth weights, Zhang & Chen 2023).

use tweedie_core::multistep::ipndm_weights;

use crate::error::Result;
use crate::integrators::history::History;
use crate::integrators::multistep::{adams_bashforth_sigma, step_forming_d};
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    /// LMS: x̃′ = x̃ + Σ_j w_j·d_j, w_j = ∫_{σ̃}^{σ̃′} ℓ_j(ρ) dρ with ℓ_j the Lagrange basis on the
    /// last `order` σ̃_j (lower orders while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn lms(&mut self, x: S, order: usize) -> Result<S> {
        let mut hist = History::new(order);
        self.steps(x, |_, _, s, s1, x, den| {
            let coeffs = |sigmas: &[f64]| Ok(adams_bashforth_sigma(sigmas, s, s1));
            step_forming_d(&mut hist, x, den, s, coeffs, false)
        })
    }

    /// iPNDM: x̃′ = x̃ + (σ̃′ − σ̃)·Σ_j w_j·d_j with `tweedie_core::multistep::ipndm_weights`
    /// (orders 1, 2, … while the history fills); the last step to σ̃ = 0 is D.
    pub(super) fn ipndm(&mut self, x: S, order: usize) -> Result<S> {
        let mut hist = History::new(order);
        self.steps(x, |_, _, s, s1, x, den| {
            let coeffs = |sigmas: &[f64]| {
                let w = ipndm_weights(sigmas.len())?;
                Ok(w.iter().map(|wj| (s1 - s) * wj).collect())
            };
            step_forming_d(&mut hist, x, den, s, coeffs, false)
        })
    }
}
