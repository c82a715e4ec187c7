//! Coefficients of multistep integrators of the probability-flow ODE in EDM form,
//! dx̃/dσ̃ = (x̃ − D)/σ̃, or dx̃/dλ = D − x̃ in λ = −ln σ̃. Samplers only form linear
//! combinations with these scalars; the formulas live here once, in f64.

// Negated float comparisons (`!(x > 0.0)`) are deliberate: they also reject NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use crate::error::{CoreError, Invalid, Result};

/// The weights of one step x̃′ = a·x̃ + Σ_j w_j·D_j (D_0 at the current point, then older ones)
/// + w_new·D(x̃′_pred) for a corrector.
#[derive(Debug, Clone, PartialEq)]
pub struct StepWeights {
    /// a, the weight of the current state.
    pub x: f64,
    /// w_j of D_0 (current), D_1 (previous), …
    pub d: Vec<f64>,
    /// w_new of the denoiser at the predicted point (correctors only, else 0).
    pub new: f64,
}

/// UniPC's B(h) (Zhao et al. 2023, §3.3): B₁(h) = h or B₂(h) = e^h − 1 (both with h → −h for
/// data prediction, as the paper's Alg. 2 and its reference code use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniPcVariant {
    /// B(h) = h.
    Bh1,
    /// B(h) = e^h − 1 (the variant recommended for guided/few-step sampling).
    Bh2,
}

/// UniPC with data prediction (Zhao et al. 2023, Alg. 2 "UniP-p", Alg. 3 "UniC-p"):
/// x̃′ = (σ̃′/σ̃)x̃ − (e^{−h} − 1)·D_0 − B(−h)·Σ_k ρ_k·(D_k − D_0)/r_k with h = ln(σ̃/σ̃′),
/// r_k = (λ_k − λ_0)/h for the earlier points (r = 1 for the corrector's new point, whose term
/// is ρ_p·(D_new − D_0)), and ρ solving Σ_k ρ_k r_k^{i−1} = i!·φ_{i+1}(−h)·(−h)/B(−h)-type
/// moments b_i, i = 1 … m (the predictor with p = 2 uses ρ = ½, the paper's choice).
///
/// `sigmas` = [σ̃_0 (current), σ̃_1 (previous), …]: the predictor of order p uses p of them,
/// the corrector of order p uses p of them plus the new point σ̃′ (and is of order p + 1).
pub fn unipc_weights(
    sigmas: &[f64],
    sigma_next: f64,
    variant: UniPcVariant,
    corrector: bool,
) -> Result<StepWeights> {
    let p = sigmas.len();
    if p == 0
        || !(sigma_next > 0.0)
        || !(sigmas[0] > sigma_next)
        || sigmas
            .windows(2)
            .any(|w| !(w[1] > w[0]) || !w[1].is_finite())
    {
        return Err(CoreError::invalid(
            "sigmas",
            format!("{sigmas:?} → {sigma_next}"),
            "UniPC needs strictly increasing, finite σ̃ history above a positive σ̃′",
        ));
    }
    let s0 = sigmas[0];
    let h = (s0 / sigma_next).ln();
    let hh = -h;
    let phi1 = hh.exp_m1();
    let b_h = match variant {
        UniPcVariant::Bh1 => hh,
        UniPcVariant::Bh2 => phi1,
    };
    // r_k for the earlier points (negative: they lie at smaller λ), then 1 for the new point.
    let mut r: Vec<f64> = sigmas[1..].iter().map(|sk| (s0 / sk).ln() / h).collect();
    if corrector {
        r.push(1.0);
    }
    let m = r.len();
    // b_i = i!·g_i/B with g_1 = φ₁/hh − 1, g_{i+1} = g_i/hh − 1/(i+1)!.
    let mut b = Vec::with_capacity(m);
    let (mut g, mut fact) = (phi1 / hh - 1.0, 1.0);
    for i in 1..=m {
        b.push(g * fact / b_h);
        fact *= (i + 1) as f64;
        g = g / hh - 1.0 / fact;
    }
    let rho = match (corrector, m) {
        (_, 0) => Vec::new(),
        (false, 1) | (true, 1) => vec![0.5],
        _ => {
            let a: Vec<Vec<f64>> = (0..m)
                .map(|i| r.iter().map(|rk| rk.powi(i as i32)).collect())
                .collect();
            solve(a, b)?
        }
    };
    let mut d = vec![0.0; p];
    d[0] = -phi1;
    let mut new = 0.0;
    for (k, (rho_k, r_k)) in rho.iter().zip(&r).enumerate() {
        // −B·ρ_k·(D_k − D_0)/r_k, with D_new's r = 1.
        let c = -b_h * rho_k / r_k;
        if corrector && k == m - 1 {
            new += c;
        } else {
            d[k + 1] += c;
        }
        d[0] -= c;
    }
    Ok(StepWeights {
        x: sigma_next / s0,
        d,
        new,
    })
}

/// iPNDM's fixed Adams–Bashforth weights on the last `order` ≤ 4 derivatives d_j = (x̃_j − D_j)/σ̃_j
/// (Zhang & Chen 2023, DEIS App.; Liu et al. 2022 PNDM): x̃′ = x̃ + (σ̃′ − σ̃)·Σ_j w_j d_j with
/// w = [1], [3, −1]/2, [23, −16, 5]/12, [55, −59, 37, −9]/24 (equal-step coefficients, used on any grid).
pub fn ipndm_weights(order: usize) -> Result<&'static [f64]> {
    const W: [&[f64]; 4] = [
        &[1.0],
        &[1.5, -0.5],
        &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
        &[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
    ];
    order
        .checked_sub(1)
        .and_then(|i| W.get(i).copied())
        .ok_or_else(|| CoreError::invalid("order", order, "iPNDM orders are 1 … 4"))
}

/// Gaussian elimination with partial pivoting for the small (≤ 4×4) systems above.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        if !(a[piv][c].abs() > 1e-300) {
            return Err(CoreError::invalid(
                "sigmas",
                format!("{a:?}"),
                "singular multistep system (repeated noise levels?)",
            ));
        }
        a.swap(c, piv);
        b.swap(c, piv);
        let (top, rest) = a.split_at_mut(c + 1);
        let pivot_row = &top[c];
        for (i, row) in rest.iter_mut().enumerate() {
            let f = row[c] / pivot_row[c];
            row.iter_mut()
                .zip(pivot_row)
                .skip(c)
                .for_each(|(v, p)| *v -= f * p);
            b[c + 1 + i] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[i][k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The update is exact for D constant in λ (then x̃′ = e^{−h}x̃ + (1 − e^{−h})D): weights on
    /// D sum to 1 − σ̃′/σ̃ for every order, variant and corrector.
    #[test]
    fn unipc_weights_are_consistent() {
        let sig = [1.0, 1.6, 2.9, 4.0];
        for corrector in [false, true] {
            for v in [UniPcVariant::Bh1, UniPcVariant::Bh2] {
                for p in 1..=3 {
                    let w = unipc_weights(&sig[..p], 0.7, v, corrector).unwrap();
                    let sum: f64 = w.d.iter().sum::<f64>() + w.new;
                    assert!(
                        (sum - (1.0 - 0.7)).abs() < 1e-12,
                        "{p} {v:?} {corrector}: {w:?}"
                    );
                    assert_eq!(w.x, 0.7);
                }
            }
        }
        // Order 1 predictor is DDIM / DPM-Solver++(1): x̃′ = (σ̃′/σ̃)x̃ + (1 − σ̃′/σ̃)D.
        let w = unipc_weights(&[2.0], 1.0, UniPcVariant::Bh2, false).unwrap();
        assert_eq!(w.d, vec![0.5]);
        assert!(unipc_weights(&[1.0], 0.0, UniPcVariant::Bh1, false).is_err());
        assert!(unipc_weights(&[1.0, 1.0], 0.5, UniPcVariant::Bh1, true).is_err());
    }

    /// The exact step is x̃′ = e^{−h}x̃ + ∫ e^{λ−λ′}D dλ. Where ρ solves the moment system (the
    /// p = 3 predictor, the p = 2 corrector: two ratios each) UniPC integrates D quadratic in λ
    /// exactly; p = 2 predictor and p = 1 corrector use ρ = ½ and are exact for constants only.
    #[test]
    fn unipc_is_exact_on_polynomials_in_lambda() {
        let sig = [1.0, 1.5, 2.6];
        let s1 = 0.6;
        let lam = |s: f64| -s.ln();
        let (l0, l1) = (lam(sig[0]), lam(s1));
        {
            let f = |l: f64| 0.3 + 0.8 * l - 0.45 * l * l;
            // Exact: ∫_{l0}^{l1} e^{l − l1} f(l) dl by Simpson on 20 000 panels.
            let n = 20000;
            let dl = (l1 - l0) / n as f64;
            let g = |l: f64| (l - l1).exp() * f(l);
            let mut s = g(l0) + g(l1);
            for k in 1..n {
                s += if k % 2 == 1 { 4.0 } else { 2.0 } * g(l0 + k as f64 * dl);
            }
            let exact = s * dl / 3.0;
            for (p, corr) in [(3, false), (2, true)] {
                for v in [UniPcVariant::Bh1, UniPcVariant::Bh2] {
                    let w = unipc_weights(&sig[..p], s1, v, corr).unwrap();
                    let got: f64 =
                        w.d.iter()
                            .zip(&sig)
                            .map(|(w, s)| w * f(lam(*s)))
                            .sum::<f64>()
                            + w.new * f(l1);
                    assert!(
                        (got - exact).abs() < 1e-9,
                        "p {p} corr {corr} {v:?}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn ipndm_weights_sum_to_one() {
        for o in 1..=4 {
            let w = ipndm_weights(o).unwrap();
            assert_eq!(w.len(), o);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        }
        assert!(ipndm_weights(0).is_err());
        assert!(ipndm_weights(5).is_err());
    }
}
