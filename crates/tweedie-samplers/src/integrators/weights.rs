//! Quadrature weights of the polynomial (multistep and exponential) integrators: ∫ w(v)·ℓ_j(v) dv
//! for the Lagrange basis ℓ_j on the step's nodes.

/// c_j = ∫_{−h}^{0} e^{v} ℓ_j(v) dv for the Lagrange basis ℓ_j on `nodes` (v = λ − λ′):
/// the weights of an exponential integrator with polynomial data prediction. h = ∞ is
/// allowed (the integral over v ≤ 0 converges).
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

/// The weights DPM-Solver's reference multistep third-order update leaves out, to add to the
/// exact ones (`exp_lagrange_weights` on the nodes 0, −h₀, −h₀ − h₁ relative to the step's
/// start, shifted by −h): the exact quadratic integral carries −2φ₃·D₂, the reference code
/// (and diffusers, k-diffusion) −φ₃·D₂, with D₂ = h²·D[λ₀, λ₁, λ₂] and
/// φ₃ = −(1/2h²)∫_{−h}^{0} e^{v}(v + h)² dv. Returns the coefficients of D₀, D₁, D₂ in +φ₃·D₂;
/// h₀ = λ₀ − λ₁ and h₁ = λ₁ − λ₂ are the two previous steps.
pub fn dpm_solver_damping(h: f64, h0: f64, h1: f64) -> [f64; 3] {
    // ∫_{−h}^0 e^v (v + h)² dv = I₂ + 2h·I₁ + h²·I₀.
    let j2 = exp_moment(2, h) + 2.0 * h * exp_moment(1, h) + h * h * exp_moment(0, h);
    // φ₃·h²·f[λ₀, λ₁, λ₂] = −(j2/2)·((D₀ − D₁)/h₀ − (D₁ − D₂)/h₁)/(h₀ + h₁).
    let k = -0.5 * j2 / (h0 + h1);
    [k / h0, -k * (1.0 / h0 + 1.0 / h1), k / h1]
}

/// I_n(h) = ∫_{−h}^{0} e^{v} vⁿ dv (series for small h, integration by parts otherwise;
/// h = ∞ gives (−1)ⁿ·n!).
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
            // e^{−h}·hᵏ → 0 as h → ∞ (and 0·∞ would be NaN).
            let boundary = if e == 0.0 {
                0.0
            } else {
                -e * (-h).powi(k as i32)
            };
            i = boundary - k as f64 * i;
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

    /// h = ∞: I_n = (−1)ⁿ·n!, and the weights still integrate quadratics exactly.
    #[test]
    fn infinite_h_gives_the_limit() {
        for (n, want) in [(0, 1.0), (1, -1.0), (2, 2.0), (3, -6.0)] {
            assert_eq!(exp_moment(n, f64::INFINITY), want);
        }
        let nodes = [-0.0, -0.4, -0.9];
        let c = exp_lagrange_weights(&nodes, f64::INFINITY);
        let p = |v: f64| 0.3 - 1.1 * v + 0.7 * v * v;
        let lhs: f64 = c.iter().zip(nodes).map(|(c, v)| c * p(v)).sum();
        assert!((lhs - (0.3 + 1.1 + 1.4)).abs() < 1e-12, "{lhs}");
    }

    /// The damping removes half of the quadratic term: on D(v) = a·v² + …, the exact weights
    /// plus the damping exceed ∫ e^v D by exactly φ₃·h²·a, with φ₃ = (e^{−h} − 1 + h)/h² − ½
    /// (the reference code's φ₃ in closed form).
    #[test]
    fn damping_is_minus_phi3_times_d2() {
        for &(h, h0, h1) in &[(0.3, 0.5, 0.7), (1.2, 0.9, 2.0), (0.01, 0.02, 0.015)] {
            let nodes = [-h, -h - h0, -h - h0 - h1];
            let c = exp_lagrange_weights(&nodes, h);
            let k = dpm_solver_damping(h, h0, h1);
            let a = 0.8;
            let q = |v: f64| a * v * v - 0.4 * v + 1.3;
            let damped: f64 = (0..3).map(|j| (c[j] + k[j]) * q(nodes[j])).sum();
            let exact = a * exp_moment(2, h) - 0.4 * exp_moment(1, h) + 1.3 * exp_moment(0, h);
            let phi3 = ((-h).exp_m1() + h) / (h * h) - 0.5;
            let want = phi3 * h * h * a;
            assert!(
                (damped - exact - want).abs() < 1e-12 * (1.0 + want.abs()).max(h.powi(3)),
                "h={h}: {} vs {want}",
                damped - exact
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
