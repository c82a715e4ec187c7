//! Linear multistep integrators in σ̃: ρAB-DEIS (Zhang & Chen 2023, §4), and the Adams–Bashforth
//! step in σ̃ that it shares with k-diffusion's LMS (lms.rs).

use crate::error::Result;
use crate::integrators::history::History;
use crate::integrators::weights::poly_lagrange_weights;
use crate::integrators::Run;
use crate::state::State;

/// x̃′ = x̃ + Σ_j w_j·d_j over the history (σ̃_j, d_j), d = dx̃/dσ̃, w_j = ∫_{σ̃}^{σ̃′} ℓ_j(ρ) dρ
/// with ℓ_j the Lagrange basis on the σ̃_j: the polynomial through the d_j integrated exactly.
/// One pass over x̃, in place; with what that pass found about finiteness (`end_step`).
pub(super) fn adams_bashforth_sigma<'h, S: State + 'h>(
    x: S,
    hist: impl Iterator<Item = &'h (f64, S)> + Clone,
    s: f64,
    s1: f64,
) -> (S, Option<bool>) {
    let nodes: Vec<f64> = hist.clone().map(|(sj, _)| sj - s1).collect();
    let w = poly_lagrange_weights(&nodes, s - s1);
    let terms: Vec<(f64, &S)> = hist.zip(w).map(|((_, dj), wj)| (-wj, dj)).collect();
    let mut xn = x;
    let finite = xn.combine_assign(1.0, &terms);
    (xn, finite)
}

impl<S: State> Run<'_, '_, S> {
    pub(super) fn deis3(&mut self, x: S) -> Result<S> {
        // ρAB-DEIS: the ODE dx̃/dσ̃ = ε(x̃; σ̃), ε = (x̃ − D)/σ̃, is integrated exactly for the
        // polynomial through the last three ε_j in σ̃ itself. Extrapolating in σ̃ rather than in
        // λ = −log σ̃ keeps the steps near σ̃_min tiny in absolute terms, so a ρ = 7 grid of 18
        // steps is stable without lowering the order on the last steps.
        let mut hist = History::new(3);
        self.steps(x, |_, _, s, s1, x, den| {
            hist.push(s, &[(1.0 / s, &x), (-1.0 / s, den)]);
            // Oldest first, as the weights were always formed.
            Ok(adams_bashforth_sigma(x, hist.iter().rev(), s, s1))
        })
    }
}
