//! Linear multistep integrators in σ̃: ρAB-DEIS (Zhang & Chen 2023, §4).

use crate::error::Result;
use crate::integrators::weights::poly_lagrange_weights;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    pub(super) fn deis3(&mut self, mut x: S) -> Result<S> {
        // ρAB-DEIS: the ODE dx̃/dσ̃ = ε(x̃; σ̃), ε = (x̃ − D)/σ̃, is integrated exactly for the
        // polynomial through the last three ε_j in σ̃ itself. Extrapolating in σ̃ rather than in
        // λ = −log σ̃ keeps the steps near σ̃_min tiny in absolute terms, so a ρ = 7 grid of 18
        // steps is stable without lowering the order on the last steps.
        let mut hist: Vec<(f64, S)> = Vec::new();
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let xn = if s1 == 0.0 {
                den.clone()
            } else {
                hist.push((s, x.lincomb(1.0 / s, &den, -1.0 / s)));
                if hist.len() > 3 {
                    hist.remove(0);
                }
                let nodes: Vec<f64> = hist.iter().map(|(sj, _)| sj - s1).collect();
                let w = poly_lagrange_weights(&nodes, s - s1);
                let mut xn = x;
                for ((_, ej), wj) in hist.iter().zip(w) {
                    xn.lincomb_assign(1.0, ej, -wj);
                }
                xn
            };
            x = self.end_step(i, xn, &den)?;
        }
        Ok(x)
    }
}
