//! Tweedie conversions between parametrizations of a model's output.
//!
//! Every parametrization is affine in (x_t, x₀): pred = c_x·x_t + c_0·x₀ with
//! x_t = α·x₀ + σ·ε (Tweedie's formula: ∇log p_t(x_t) = (α·E[x₀|x_t] − x_t)/σ²).
//! Converting P → Q eliminates x₀: x₀ = (pred_P − c_x^P·x_t)/c_0^P.

use crate::process::Process;
use crate::space::LinearSpace;

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// Score ∇log p_t(x_t) = −ε/σ.
    Score,
    /// Noise ε.
    Eps,
    /// Clean data x₀ (a denoiser).
    X0,
    /// Flow velocity dx_t/dt = α′·x₀ + σ′·ε.
    Velocity,
    /// v-prediction v = α·ε − σ·x₀ (Salimans & Ho 2022).
    V,
}

/// An affine map target = a·x_t + b·pred, with f64 coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Coefficient of x_t.
    pub a: f64,
    /// Coefficient of the source prediction.
    pub b: f64,
}

impl Param {
    /// Every parametrization.
    pub const ALL: [Param; 5] = [
        Param::Score,
        Param::Eps,
        Param::X0,
        Param::Velocity,
        Param::V,
    ];

    /// (c_x, c_0) with pred = c_x·x_t + c_0·x₀ at time t:
    /// X0 (0, 1); Eps (1/σ, −α/σ); Score (−1/σ², α/σ²); Velocity (σ′/σ, α′ − σ′α/σ);
    /// V (α/σ, −(α²+σ²)/σ).
    pub fn coeffs(self, p: &dyn Process, t: f64) -> (f64, f64) {
        let (a, s) = (p.alpha(t), p.sigma(t));
        match self {
            Param::X0 => (0.0, 1.0),
            Param::Eps => (1.0 / s, -a / s),
            Param::Score => (-1.0 / (s * s), a / (s * s)),
            Param::Velocity => {
                let (da, ds) = (p.alpha_dot(t), p.sigma_dot(t));
                (ds / s, da - ds * a / s)
            }
            Param::V => (a / s, -(a * a + s * s) / s),
        }
    }
}

/// Affine map turning a `from` prediction into a `to` prediction at time t:
/// to = (c_x^Q − c_0^Q·c_x^P/c_0^P)·x_t + (c_0^Q/c_0^P)·pred_P.
pub fn convert_coeffs(from: Param, to: Param, p: &dyn Process, t: f64) -> Affine {
    if from == to {
        return Affine { a: 0.0, b: 1.0 };
    }
    let (cxp, c0p) = from.coeffs(p, t);
    let (cxq, c0q) = to.coeffs(p, t);
    let b = c0q / c0p;
    Affine {
        a: cxq - b * cxp,
        b,
    }
}

/// Converts a prediction `pred` of kind `from` at (x_t, t) into kind `to`.
pub fn convert<S: LinearSpace>(
    from: Param,
    to: Param,
    p: &dyn Process,
    t: f64,
    x_t: &S,
    pred: &S,
) -> S {
    let c = convert_coeffs(from, to, p, t);
    x_t.lincomb(c.a, pred, c.b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn every_pair_round_trips() {
        for k in crate::process::all_defaults() {
            let p = k.build();
            let (lo, hi) = p.t_range();
            for frac in [0.13, 0.5, 0.87] {
                let t = lo + frac * (hi.min(0.99) - lo);
                let (x0, eps) = (0.7_f64, -1.3_f64);
                let xt = p.alpha(t) * x0 + p.sigma(t) * eps;
                for from in Param::ALL {
                    for to in Param::ALL {
                        let pred = from.coeffs(p.as_ref(), t);
                        let pred = pred.0 * xt + pred.1 * x0;
                        let there = convert(from, to, p.as_ref(), t, &xt, &pred);
                        let back = convert(to, from, p.as_ref(), t, &xt, &there);
                        assert!(
                            (back - pred).abs() <= 1e-12 * (1.0 + pred.abs()),
                            "{k:?} {from:?}->{to:?} t={t}: {back} vs {pred}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn conversions_hit_the_true_targets() {
        // Starting from the exact x₀, every target must equal its definition in (x₀, ε).
        for k in crate::process::all_defaults() {
            let p = k.build();
            let t = 0.5 * (p.t_range().0 + p.t_range().1.min(0.99));
            let (a, s, da, ds) = (p.alpha(t), p.sigma(t), p.alpha_dot(t), p.sigma_dot(t));
            let (x0, eps) = (0.4_f64, 0.9_f64);
            let xt = a * x0 + s * eps;
            let want = [
                (Param::Score, -eps / s),
                (Param::Eps, eps),
                (Param::X0, x0),
                (Param::Velocity, da * x0 + ds * eps),
                (Param::V, a * eps - s * x0),
            ];
            for (q, w) in want {
                assert_relative_eq!(
                    convert(Param::X0, q, p.as_ref(), t, &xt, &x0),
                    w,
                    max_relative = 1e-10,
                    epsilon = 1e-12
                );
            }
        }
    }
}
