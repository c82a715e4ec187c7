//! UniPC (Zhao et al. 2023): the unified predictor UniP-p and corrector UniC-p with data
//! prediction, weights from `tweedie_core::multistep::unipc_weights`.

use tweedie_core::multistep::{unipc_weights, UniPcVariant};
use tweedie_core::Invalid;

use crate::error::Result;
use crate::integrators::history::History;
use crate::integrators::Run;
use crate::state::State;

impl<S: State> Run<'_, '_, S> {
    /// Step i: D_i = D(x̃_i); with `corrector`, x̃_i ← UniC from x̃_{i−1} and D_{i−1}, …, D_i
    /// (no extra evaluation: D_i at the predicted x̃_i is reused, as in the paper); then
    /// x̃_{i+1} = UniP from x̃_i and the last p values of D. The predictor's order is
    /// min(order, i + 1), and on grids of fewer than 15 steps also ≤ the steps left (diffusers'
    /// `lower_order_final`). The last step to σ̃ = 0 is D.
    pub(super) fn unipc(
        &mut self,
        mut x: S,
        order: usize,
        variant: UniPcVariant,
        corrector: bool,
    ) -> Result<S> {
        let n = self.n();
        if corrector && self.hook.is_some() {
            // The corrector rewrites x̃_i after the hook has corrected it.
            return Err(crate::error::SamplerError::invalid(
                "sampler",
                "unipc",
                "UniPC's corrector does not combine with step hooks; set corrector = false",
            ));
        }
        // Copies of the last D (newest first), in buffers reused across steps.
        let mut hist = History::new(order);
        // x̃ before the last predictor step and the order it used; `spare` is the buffer the
        // corrector frees, reused for the next copy.
        let mut prev: Option<(S, usize)> = None;
        let mut spare: Option<S> = None;
        for i in 0..n {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            // On the last step (to σ̃ = 0, whose result is D_i) a corrected x̃_i would not be used.
            if let Some((mut xc, p)) = prev.take().filter(|_| s1 > 0.0) {
                let sig: Vec<f64> = hist.iter().take(p).map(|(sj, _)| *sj).collect();
                let w = unipc_weights(&sig, s, variant, true)?;
                let mut terms = vec![(w.new, &den)];
                terms.extend(hist.iter().zip(&w.d).map(|((_, dj), wj)| (*wj, dj)));
                xc.combine_assign(w.x, &terms);
                spare = Some(std::mem::replace(&mut x, xc));
            }
            let (xn, finite) = if s1 == 0.0 {
                (den.clone(), None)
            } else {
                hist.push(s, &[(1.0, &den)]);
                let mut p = order.min(i + 1).min(hist.len());
                if n < 15 {
                    p = p.min(n - i);
                }
                let sig: Vec<f64> = hist.iter().take(p).map(|(sj, _)| *sj).collect();
                let w = unipc_weights(&sig, s1, variant, false)?;
                if corrector {
                    let mut copy = spare.take().unwrap_or_else(|| x.zeros_like());
                    copy.assign_combination(&[(1.0, &x)]);
                    prev = Some((copy, p));
                }
                let terms: Vec<(f64, &S)> = hist
                    .iter()
                    .zip(&w.d)
                    .map(|((_, dj), wj)| (*wj, dj))
                    .collect();
                let mut xn = x;
                let finite = if terms.is_empty() {
                    None
                } else {
                    xn.combine_assign(w.x, &terms)
                };
                (xn, finite)
            };
            x = self.end_step(i, xn, finite, &den)?;
        }
        Ok(x)
    }
}
