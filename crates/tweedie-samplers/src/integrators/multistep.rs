//! Linear multistep integrators in σ̃: ρAB-DEIS (Zhang & Chen 2023, §4), the Adams–Bashforth
//! step in σ̃ that it shares with k-diffusion's LMS (lms.rs), and the step of every method whose
//! history holds the derivative d = (x̃ − D)/σ̃ (LMS, iPNDM, DEIS in σ̃ and in log σ̃).

use std::iter::once;

use crate::error::Result;
use crate::integrators::history::History;
use crate::integrators::weights::poly_lagrange_weights;
use crate::integrators::Run;
use crate::state::State;

/// The coefficients of x̃′ = x̃ + Σ_j c_j·d_j over the entries (σ̃_j, d_j), d = dx̃/dσ̃, in the
/// order of `sigmas`: c_j = −w_j with w_j = ∫_{σ̃′}^{σ̃} ℓ_j(ρ) dρ, ℓ_j the Lagrange basis on the
/// σ̃_j: the polynomial through the d_j integrated exactly.
pub(super) fn adams_bashforth_sigma(sigmas: &[f64], s: f64, s1: f64) -> Vec<f64> {
    let nodes: Vec<f64> = sigmas.iter().map(|sj| sj - s1).collect();
    poly_lagrange_weights(&nodes, s - s1)
        .into_iter()
        .map(|w| -w)
        .collect()
}

/// One step x̃′ = x̃ + Σ_j c_j·d_j of a method whose history holds d = (x̃ − D)/σ̃: d_i is formed
/// by the update's own pass (`LinearSpace::combine_assign_forming`), in the buffer of the entry
/// it displaces, and becomes the newest entry (σ̃_i, d_i). `coeffs` gets the σ̃ of d_i and of
/// the older entries, newest first, and returns their c_j in that order; `oldest_first` adds the
/// terms from the oldest (the order, hence the rounding, the method has always used).
pub(super) fn step_forming_d<S: State>(
    hist: &mut History<S>,
    x: S,
    den: &S,
    s: f64,
    coeffs: impl FnOnce(&[f64]) -> Result<Vec<f64>>,
    oldest_first: bool,
) -> Result<(S, Option<bool>)> {
    let mut d = hist.make_room().unwrap_or_else(|| x.zeros_like());
    let sigmas: Vec<f64> = once(s).chain(hist.iter().map(|(sj, _)| *sj)).collect();
    let c = coeffs(&sigmas)?;
    let entries = once(None).chain(hist.iter().map(|(_, dj)| Some(dj)));
    let mut terms: Vec<(f64, Option<&S>)> = c.into_iter().zip(entries).collect();
    if oldest_first {
        terms.reverse();
    }
    let mut xn = x;
    let finite = xn.combine_assign_forming(&mut d, (1.0 / s, -1.0 / s, den), 1.0, &terms);
    hist.push(s, d);
    Ok((xn, finite))
}

impl<S: State> Run<'_, '_, S> {
    pub(super) fn deis3(&mut self, x: S) -> Result<S> {
        // ρAB-DEIS: the ODE dx̃/dσ̃ = ε(x̃; σ̃), ε = (x̃ − D)/σ̃, is integrated exactly for the
        // polynomial through the last three ε_j in σ̃ itself. Extrapolating in σ̃ rather than in
        // λ = −log σ̃ keeps the steps near σ̃_min tiny in absolute terms, so a ρ = 7 grid of 18
        // steps is stable without lowering the order on the last steps.
        let mut hist = History::new(3);
        self.steps(x, |_, _, s, s1, x, den| {
            // Oldest first, as the weights were always formed.
            let coeffs = |sigmas: &[f64]| {
                let oldest_first: Vec<f64> = sigmas.iter().rev().copied().collect();
                let mut c = adams_bashforth_sigma(&oldest_first, s, s1);
                c.reverse();
                Ok(c)
            };
            step_forming_d(&mut hist, x, den, s, coeffs, true)
        })
    }
}
