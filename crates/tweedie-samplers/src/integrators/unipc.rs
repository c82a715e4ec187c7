//! UniPC (Zhao et al. 2023): the unified predictor UniP-p and corrector UniC-p with data
//! prediction, weights from `tweedie_core::multistep::unipc_weights`.

use std::iter::once;

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
        // The previous D (newest first): the model's outputs themselves, kept (no copies).
        let mut older = History::new(order);
        // x̃ before the last predictor step and the order it used; `spare` is the buffer the
        // corrector frees, which takes the next prediction.
        let mut prev: Option<(S, usize)> = None;
        let mut spare: Option<S> = None;
        for i in 0..n {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            // On the last step (to σ̃ = 0, whose result is D_i) a corrected x̃_i would not be used.
            if let Some((mut xc, p)) = prev.take().filter(|_| s1 > 0.0) {
                let sig: Vec<f64> = older.iter().take(p).map(|(sj, _)| *sj).collect();
                let w = unipc_weights(&sig, s, variant, true)?;
                let mut terms = vec![(w.new, &den)];
                terms.extend(older.iter().zip(&w.d).map(|((_, dj), wj)| (*wj, dj)));
                xc.combine_assign(w.x, &terms);
                spare = Some(std::mem::replace(&mut x, xc));
            }
            if s1 == 0.0 {
                x = self.end_with_denoised(i, den)?;
                continue;
            }
            let (xn, finite) = {
                // D_i, then the previous D.
                let hist = || once((s, &den)).chain(older.iter().map(|(sj, dj)| (*sj, dj)));
                let mut p = order.min(i + 1).min(1 + older.len());
                if n < 15 {
                    p = p.min(n - i);
                }
                let sig: Vec<f64> = hist().take(p).map(|(sj, _)| sj).collect();
                let w = unipc_weights(&sig, s1, variant, false)?;
                let terms: Vec<(f64, &S)> =
                    hist().zip(&w.d).map(|((_, dj), wj)| (*wj, dj)).collect();
                if corrector {
                    // x̃_i stays for the corrector: the prediction goes into the spare buffer
                    // (the values of the in-place update, without a copy of x̃_i).
                    let mut xn = spare.take().unwrap_or_else(|| x.zeros_like());
                    let mut all = vec![(w.x, &x)];
                    all.extend(terms);
                    let finite = xn.assign_combination(&all);
                    prev = Some((x, p));
                    (xn, finite)
                } else {
                    let mut xn = x;
                    let finite = xn.combine_assign(w.x, &terms);
                    (xn, finite)
                }
            };
            x = self.end_step(i, xn, finite, &den)?;
            older.push(s, den);
        }
        Ok(x)
    }
}
