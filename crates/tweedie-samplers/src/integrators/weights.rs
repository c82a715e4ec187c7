//! Quadrature weights of the polynomial (multistep and exponential) integrators: ∫ w(v)·ℓ_j(v) dv
//! for the Lagrange basis ℓ_j on the step's nodes.

/// c_j = ∫_{−h}^{0} e^{v} ℓ_j(v) dv for the Lagrange basis ℓ_j on `nodes` (v = λ − λ′):
/// the weights of an exponential integrator with polynomial data prediction.
pub fn exp_lagrange_weights(nodes: &[f64], h: f64) -> Vec<f64> {
    let ints: Vec<f64> = (0..nodes.len()).map(|n| exp_moment(n, h)).collect();
    lagrange_weights(nodes, &ints)
}

/// w_j = ∫_0^H ℓ_j(v) dv for the Lagrange basis ℓ_j on `nodes` (v = σ̃ − σ̃′, H = σ̃ − σ̃′):
/// the weights of ρAB-DEIS, Adams–Bashforth in σ̃ (Zhang & Chen 2023, §4).
pub fn poly_lagrange_weights(nodes: &[f64], big_h: f64) -> Vec<f64> {
    let ints: Vec<f64> = (0..nodes.len())
        .map(|n| big_h.powi(n as i32 + 1) / (n as f64 + 1.0))
        .collect();
    lagrange_weights(nodes, &ints)
}

/// Σ_n a_{j,n}·ints[n], with a_{j,n} the coefficients of the Lagrange basis polynomial ℓ_j on
/// `nodes` and ints[n] a moment ∫ w(v) vⁿ dv.
fn lagrange_weights(nodes: &[f64], ints: &[f64]) -> Vec<f64> {
    let m = nodes.len();
    (0..m)
        .map(|j| {
            // Coefficients (ascending powers of v) of Π_{k≠j} (v − v_k)/(v_j − v_k).
            let mut poly = vec![1.0];
            let mut denom = 1.0;
            for (k, vk) in nodes.iter().enumerate() {
                if k == j {
                    continue;
                }
                let mut next = vec![0.0; poly.len() + 1];
                for (p, c) in poly.iter().enumerate() {
                    next[p + 1] += c;
                    next[p] -= c * vk;
                }
                poly = next;
                denom *= nodes[j] - vk;
            }
            poly.iter().zip(ints).map(|(c, i)| c * i).sum::<f64>() / denom
        })
        .collect()
}

/// I_n(h) = ∫_{−h}^{0} e^{v} vⁿ dv (series for small h, integration by parts otherwise).
fn exp_moment(n: usize, h: f64) -> f64 {
    if h < 1.0 {
        // Σ_k −(−h)^{n+k+1} / ((n+k+1)·k!)
        let mut sum = 0.0;
        let mut fact = 1.0;
        for k in 0..40 {
            if k > 0 {
                fact *= k as f64;
            }
            let p = (n + k + 1) as i32;
            sum -= (-h).powi(p) / (p as f64 * fact);
        }
        sum
    } else {
        let e = (-h).exp();
        let mut i = 1.0 - e;
        for k in 1..=n {
            i = -e * (-h).powi(k as i32) - k as f64 * i;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_moments_and_weights() {
        for &h in &[0.01, 0.5, 0.99, 1.0, 2.5] {
            // Composite Simpson reference.
            for n in 0..3 {
                let m = 20000;
                let dv = h / m as f64;
                let f = |v: f64| v.exp() * v.powi(n as i32);
                let mut s = f(-h) + f(0.0);
                for k in 1..m {
                    let v = -h + k as f64 * dv;
                    s += if k % 2 == 1 { 4.0 } else { 2.0 } * f(v);
                }
                let r = s * dv / 3.0;
                assert!(
                    (exp_moment(n, h) - r).abs() < 1e-12,
                    "n={n} h={h}: {} vs {r}",
                    exp_moment(n, h)
                );
            }
            // Weights integrate polynomials of degree ≤ 2 exactly: Σ c_j p(v_j) = ∫ e^v p(v).
            let nodes = [-h, -1.7 * h, -2.2 * h];
            let c = exp_lagrange_weights(&nodes, h);
            let p = |v: f64| 0.3 - 1.1 * v + 0.7 * v * v;
            let lhs: f64 = c.iter().zip(nodes).map(|(c, v)| c * p(v)).sum();
            let rhs = 0.3 * exp_moment(0, h) - 1.1 * exp_moment(1, h) + 0.7 * exp_moment(2, h);
            assert!(
                (lhs - rhs).abs() < 1e-10 * (1.0 + rhs.abs()),
                "{lhs} vs {rhs}"
            );
        }
    }

    /// ρAB-DEIS weights integrate quadratics exactly: Σ w_j p(v_j) = ∫_0^H p(v) dv, and with one
    /// node the step is Euler (w = H); two nodes give the variable-step AB2 weights.
    #[test]
    fn poly_weights_integrate_quadratics_exactly() {
        for &big_h in &[1e-3, 0.4, 7.0, 55.0] {
            let nodes = [big_h, 1.6 * big_h, 2.9 * big_h];
            let w = poly_lagrange_weights(&nodes, big_h);
            let p = |v: f64| 0.3 - 1.1 * v + 0.7 * v * v;
            let lhs: f64 = w.iter().zip(nodes).map(|(w, v)| w * p(v)).sum();
            let hh = big_h;
            let rhs = 0.3 * hh - 1.1 * hh * hh / 2.0 + 0.7 * hh * hh * hh / 3.0;
            assert!(
                (lhs - rhs).abs() < 1e-10 * (1.0 + rhs.abs()),
                "H={big_h}: {lhs} vs {rhs}"
            );
            assert_eq!(poly_lagrange_weights(&[big_h], big_h), vec![big_h]);
            // AB2 with previous step r·H: w = H·(1 + 1/(2r)), −H/(2r); here r = 0.6.
            let w2 = poly_lagrange_weights(&[big_h, 1.6 * big_h], big_h);
            let r = 0.6;
            assert!((w2[0] - big_h * (1.0 + 0.5 / r)).abs() < 1e-12 * big_h.max(1.0));
            assert!((w2[1] + big_h * 0.5 / r).abs() < 1e-12 * big_h.max(1.0));
        }
    }
}
