//! DPM-Solver++(3M) and its SDE form (Lu et al. 2022b; the SDE variant as k-diffusion's
//! `dpmpp_3m_sde`): third-order multistep exponential integrators in λ = −ln σ̃.

use std::iter::once;

use crate::error::Result;
use crate::integrators::weights::{dpm_solver_damping, exp_lagrange_weights};
use crate::integrators::Run;
use crate::state::State;
use crate::step::stream;

impl<S: State> Run<'_, '_, S> {
    /// x̃′ = e^{−(1+η)h}·x̃ + Σ_j c_j·D_j + σ̃′√(1 − e^{−2ηh})·ε, h = ln(σ̃/σ̃′), with
    /// c_j = ∫_{−(1+η)h}^0 e^w ℓ_j(w) dw, ℓ_j the Lagrange basis on the nodes (1+η)(λ_j − λ′) of
    /// the last three points: the quadratic through D_i, D_{i−1}, D_{i−2} in λ integrated exactly
    /// (η = 0: the ODE solver; orders 1, 2 on the first steps). The last step to σ̃ = 0 is D.
    /// `damped` (η = 0 only) adds `dpm_solver_damping` on three-point steps: the update of
    /// DPM-Solver's reference code, second order (`SamplerKind::DpmSolverPp3mDamped`).
    pub(super) fn dpmpp_3m(&mut self, x: S, eta: f64, damped: bool) -> Result<S> {
        // D_i and the two previous D (the model's outputs themselves, kept: no copies).
        self.steps_keeping_denoised(x, 2, |run, i, s, s1, x, den, older| {
            let h = (s / s1).ln();
            let k = 1.0 + eta;
            let hist = || once((s, den)).chain(older.iter().map(|(sj, dj)| (*sj, dj)));
            let nodes: Vec<f64> = hist().map(|(sj, _)| k * (s1 / sj).ln()).collect();
            let mut c = exp_lagrange_weights(&nodes, k * h);
            if let (true, Some((s_1, _)), Some((s_2, _))) = (damped, older.get(0), older.get(1)) {
                let h0 = (s_1 / s).ln();
                let h1 = (s_2 / s_1).ln();
                for (cj, dj) in c.iter_mut().zip(dpm_solver_damping(h, h0, h1)) {
                    *cj += dj;
                }
            }
            // x̃ scaled by e^{−(1+η)h} and the terms added in one pass, in place (with the noise).
            let terms: Vec<(f64, &S)> = hist().zip(c).map(|((_, dj), cj)| (cj, dj)).collect();
            let mut xn = x;
            let finite = if eta > 0.0 {
                xn.combine_add_randn(
                    (
                        (-k * h).exp(),
                        &terms,
                        s1 * (-(-2.0 * eta * h).exp_m1()).sqrt(),
                    ),
                    run.seed,
                    run.first_index,
                    stream(i, 0),
                )?
            } else {
                xn.combine_assign((-k * h).exp(), &terms)
            };
            Ok((xn, finite))
        })
    }
}
