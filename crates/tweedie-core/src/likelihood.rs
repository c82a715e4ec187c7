//! Likelihood by the probability-flow ODE (Song et al. 2021, "Score-based generative modeling
//! through SDEs", App. D.2; Chen et al. 2018 for the instantaneous change of variables).
//!
//! In EDM coordinates the probability-flow ODE is dx̃/dσ̃ = (x̃ − D(x̃; σ̃))/σ̃ (Karras et al.
//! 2022, eq. 4 with s = 1); in u = ln σ̃ it is dx̃/du = x̃ − D, and the log-density along a
//! solution changes as d log p/du = −div(x̃ − D) = −(n − tr ∂D/∂x̃). Integrating from u_min to
//! u_max gives log p_{σ̃_min}(x̃) = log p_{σ̃_max}(x̃(u_max)) + ∫ (n − tr J) du. The formulas
//! here are the pieces every backend shares; the solver is `tweedie_samplers::likelihood`.

use crate::error::{CoreError, Invalid, Result};

/// The divergence of the ODE's velocity in u = ln σ̃: div(x̃ − D) = n − tr(∂D/∂x̃).
pub fn velocity_divergence(dim: usize, trace_jacobian: f64) -> f64 {
    dim as f64 - trace_jacobian
}

/// log N(x; 0, σ²I) = −‖x‖²/(2σ²) − (n/2)·ln(2πσ²): the prior at σ̃_max, where p_{σ̃_max} ≈
/// N(0, σ̃_max²I) up to O(E‖x₀‖²/σ̃_max²).
pub fn gaussian_log_density(sq_norm: f64, dim: usize, sigma: f64) -> f64 {
    -0.5 * sq_norm / (sigma * sigma)
        - 0.5 * dim as f64 * (std::f64::consts::TAU * sigma * sigma).ln()
}

/// Uniform dequantisation of L-level data (Theis et al. 2016; Ho et al. 2020 §3.3 use the same
/// scaling): level x ∈ {0, …, L − 1} plus u ∈ [0, 1) maps to y = (x + u − ½)/c − 1, c = (L − 1)/2,
/// so the centre of each bin is the model's data value x/c − 1 (8-bit images: x/127.5 − 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dequantizer {
    levels: u32,
}

impl Dequantizer {
    /// L ≥ 2 levels (256 for 8-bit data, 17 for the digits' 0–16).
    pub fn new(levels: u32) -> Result<Self> {
        if levels < 2 {
            return Err(CoreError::invalid(
                "levels",
                levels,
                "dequantisation needs at least 2 levels",
            ));
        }
        Ok(Dequantizer { levels })
    }

    /// c = (L − 1)/2, the model-space width of one level's bin is 1/c.
    fn scale(&self) -> f64 {
        (self.levels as f64 - 1.0) / 2.0
    }

    /// Checks that `x` is one of the levels 0, …, L − 1 (a named error otherwise).
    pub fn check_level(&self, x: f64) -> Result<()> {
        if x.fract() == 0.0 && x >= 0.0 && x < self.levels as f64 {
            Ok(())
        } else {
            Err(CoreError::invalid(
                "data",
                x,
                format!(
                    "dequantised data must be integer levels 0 … {}",
                    self.levels - 1
                ),
            ))
        }
    }

    /// The ODE's default σ̃_min for these levels: a quarter of a bin, 1/(4c) = 1/(2(L − 1)).
    /// For 8-bit data that is 0.00196, EDM's σ̃_min = 0.002; coarser data keep the same fraction
    /// of a bin (the digits' 17 levels: 1/32). Far below a bin, a model that has learned the
    /// levels puts its density near the bin centres, and the uniform-dequantisation bound
    /// −log p(x + u) ≥ −log P(x) loosens by that concentration, not by the model's error
    /// (docs/results.md, digits bits/dim against σ̃_min).
    pub fn ode_sigma_min(&self) -> f64 {
        0.25 / self.scale()
    }

    /// y = (x + u − ½)/c − 1 for level x and uniform u ∈ [0, 1).
    pub fn dequantize(&self, x: f64, u: f64) -> f64 {
        (x + u - 0.5) / self.scale() - 1.0
    }

    /// log p(x + u) = log p(y) − n·ln c: the density of the continuous x + u from that of y;
    /// its negative is a variational upper bound on −log P(x) (Theis et al. 2016).
    pub fn log_density_of_levels(&self, log_p_y: f64, dim: usize) -> f64 {
        log_p_y - dim as f64 * self.scale().ln()
    }
}

/// Bits per dimension −log p/(n·ln 2) of a log-density in nats over n dimensions.
pub fn bits_per_dim(log_p_nats: f64, dim: usize) -> f64 {
    -log_p_nats / (dim as f64 * std::f64::consts::LN_2)
}

impl Dequantizer {
    /// The level x of a bin centre y = x/c − 1 (the model-space value of integer data), or an
    /// error naming y when it is no centre.
    pub fn level_of_centre(&self, y: f64) -> Result<u32> {
        let x = (y + 1.0) * self.scale();
        let level = x.round();
        // Centres are computed as x/c − 1 in f64: allow that rounding, nothing more.
        if (x - level).abs() <= 1e-9 * self.scale() && level >= 0.0 && level < self.levels as f64 {
            Ok(level as u32)
        } else {
            Err(CoreError::invalid(
                "data",
                y,
                format!(
                    "is not a level centre x/{} − 1 of {} levels",
                    self.scale(),
                    self.levels
                ),
            ))
        }
    }

    /// The model-space bin [y − 1/(2c), y + 1/(2c)] of level x, y = x/c − 1, with the outer
    /// edges open (−∞ below level 0, +∞ above level L − 1): the discretised decoder's bins
    /// (Ho et al. 2020, eq. 13).
    pub fn bin(&self, level: u32) -> (f64, f64) {
        let (y, h) = (self.dequantize(level as f64, 0.5), 0.5 / self.scale());
        let lo = if level == 0 { f64::NEG_INFINITY } else { y - h };
        let hi = if level + 1 >= self.levels {
            f64::INFINITY
        } else {
            y + h
        };
        (lo, hi)
    }
}

/// KL(N(μ₁, e^{l₁}) ‖ N(μ₂, e^{l₂})) in nats, one element: ½(l₂ − l₁ − 1 + e^{l₁ − l₂} +
/// (μ₁ − μ₂)²·e^{−l₂}). (tweedie-train's `loss::gaussian_kl` is the same formula on tensors.)
pub fn gaussian_kl(mean1: f64, log_var1: f64, mean2: f64, log_var2: f64) -> f64 {
    0.5 * (log_var2 - log_var1 - 1.0
        + (log_var1 - log_var2).exp()
        + (mean1 - mean2).powi(2) * (-log_var2).exp())
}

/// −log N(x; μ, e^{l}) in nats, one element: ½(ln 2π + l + (x − μ)²·e^{−l}).
pub fn gaussian_nll(x: f64, mean: f64, log_var: f64) -> f64 {
    0.5 * (std::f64::consts::TAU.ln() + log_var + (x - mean).powi(2) * (-log_var).exp())
}

/// −log P(lo < X < hi) for X ~ N(μ, e^{l}): the discretised Gaussian decoder of one element
/// (Ho et al. 2020, eq. 13), with `lo`/`hi` from [`Dequantizer::bin`].
pub fn discretized_gaussian_nll(lo: f64, hi: f64, mean: f64, log_var: f64) -> f64 {
    let s = (0.5 * log_var).exp();
    -log_normal_interval((lo - mean) / s, (hi - mean) / s)
}

/// ln(Φ(b) − Φ(a)) for a < b (either may be infinite), accurate in both tails: the difference
/// is taken between upper-tail probabilities Q = 1 − Φ on the side where both are small.
pub fn log_normal_interval(a: f64, b: f64) -> f64 {
    let upper_tails = |a: f64, b: f64| {
        let (la, lb) = (log_normal_tail(a), log_normal_tail(b));
        la + ln_one_minus_exp(lb - la)
    };
    if a >= 0.0 {
        upper_tails(a, b)
    } else if b <= 0.0 {
        upper_tails(-b, -a)
    } else {
        // Both tails at most ½: 1 − Q(−a) − Q(b) has no cancellation.
        (-(log_normal_tail(-a).exp() + log_normal_tail(b).exp())).ln_1p()
    }
}

/// ln Q(z), Q(z) = 1 − Φ(z) = ½·erfc(z/√2), for every z: erfc while it is a normal f64
/// (z/√2 < 26), else the asymptotic series Q(z) = φ(z)/z·(1 − z⁻² + 3z⁻⁴ − 15z⁻⁶ + 105z⁻⁸)
/// (Abramowitz & Stegun 26.2.12), whose next term is below 1e-12 relative there.
fn log_normal_tail(z: f64) -> f64 {
    if z == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    let x = z / std::f64::consts::SQRT_2;
    if x < 26.0 {
        return (0.5 * libm::erfc(x)).ln();
    }
    let r = 1.0 / (z * z);
    let series = 1.0 - r * (1.0 - r * (3.0 - r * (15.0 - 105.0 * r)));
    -0.5 * z * z - (z * (std::f64::consts::TAU).sqrt()).ln() + series.ln()
}

/// ln(1 − e^d) for d ≤ 0 (Mächler 2012: expm1 near 0, log1p further out).
fn ln_one_minus_exp(d: f64) -> f64 {
    if d > -std::f64::consts::LN_2 {
        (-d.exp_m1()).ln()
    } else {
        (-d.exp()).ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_density_and_bits() {
        // 1-D N(0, 1) at 0: −½ ln 2π.
        let v = gaussian_log_density(0.0, 1, 1.0);
        assert!((v + 0.5 * std::f64::consts::TAU.ln()).abs() < 1e-15);
        // n-D is the product of 1-D densities.
        let v3 = gaussian_log_density(1.0 + 4.0 + 0.25, 3, 2.0);
        let one = |x: f64| gaussian_log_density(x * x, 1, 2.0);
        assert!((v3 - (one(1.0) + one(2.0) + one(0.5))).abs() < 1e-12);
        assert!((bits_per_dim(-2.0 * 10.0 * std::f64::consts::LN_2, 10) - 2.0).abs() < 1e-15);
        assert_eq!(velocity_divergence(4, 1.5), 2.5);
    }

    /// Hand values: KL and NLL from their definitions; normal interval probabilities against
    /// published values of Φ (Abramowitz & Stegun Table 26.1; Q(10) and Q(40) from the series
    /// of 26.2.12 to 20 digits, cross-checked with mpmath).
    #[test]
    fn gaussian_kl_nll_and_intervals_match_known_values() {
        assert!(gaussian_kl(0.3, -1.2, 0.3, -1.2).abs() < 1e-15);
        // KL(N(1, 1) ‖ N(0, 4)) = ln 2 + (1 + 1)/8 − ½ = ln 2 − ¼.
        let kl = gaussian_kl(1.0, 0.0, 0.0, 4f64.ln());
        assert!((kl - (std::f64::consts::LN_2 - 0.25)).abs() < 1e-15, "{kl}");
        // −log N(2; 0, 4) = ½ ln(8π) + ½.
        let nll = gaussian_nll(2.0, 0.0, 4f64.ln());
        assert!((nll - (0.5 * (8.0 * std::f64::consts::PI).ln() + 0.5)).abs() < 1e-15);
        // Φ(1) − Φ(−1) = erf(1/√2) = 0.682689492137085897…
        let p = log_normal_interval(-1.0, 1.0).exp();
        assert!((p - 0.682_689_492_137_085_9).abs() < 1e-15, "{p}");
        // Φ(∞) − Φ(2) = Q(2) = 0.022750131948179207…; Φ(−2) − Φ(−∞) the same.
        for p in [
            log_normal_interval(2.0, f64::INFINITY),
            log_normal_interval(f64::NEG_INFINITY, -2.0),
        ] {
            assert!(
                (p.exp() / 0.022_750_131_948_179_21 - 1.0).abs() < 1e-14,
                "{p}"
            );
        }
        // Deep tails: ln Q(10) = ln 7.6198530241605260e-24, ln Q(40) = −804.6084420137538.
        let q10 = log_normal_interval(10.0, f64::INFINITY);
        assert!(
            (q10 - 7.619_853_024_160_525e-24f64.ln()).abs() < 1e-12,
            "{q10}"
        );
        let q40 = log_normal_interval(40.0, f64::INFINITY);
        assert!((q40 + 804.608_442_013_753_8).abs() < 1e-9, "{q40}");
        // A bin far in the tail: Q(40) − Q(41) = Q(40)·(1 − Q(41)/Q(40)).
        let bin = log_normal_interval(40.0, 41.0);
        let ratio = (log_normal_tail(41.0) - log_normal_tail(40.0)).exp();
        assert!((bin - (q40 + (-ratio).ln_1p())).abs() < 1e-9, "{bin}");
        assert_eq!(log_normal_interval(f64::NEG_INFINITY, f64::INFINITY), 0.0);
        // The decoder of one element: N(0, 1) on the bin [−1, 1].
        let d = discretized_gaussian_nll(-1.0, 1.0, 0.0, 0.0);
        assert!((d + 0.682_689_492_137_085_9f64.ln()).abs() < 1e-14, "{d}");
    }

    #[test]
    fn level_bins_cover_the_line() {
        let q = Dequantizer::new(17).unwrap();
        assert_eq!(q.level_of_centre(-1.0).unwrap(), 0);
        assert_eq!(q.level_of_centre(5.0 / 8.0 - 1.0).unwrap(), 5);
        assert_eq!(q.level_of_centre(1.0).unwrap(), 16);
        let e = q.level_of_centre(0.01).unwrap_err().to_string();
        assert!(e.contains("0.01") && e.contains("17 levels"), "{e}");
        assert!(q.level_of_centre(1.125).is_err());
        assert_eq!(q.bin(0), (f64::NEG_INFINITY, -1.0 + 1.0 / 16.0));
        assert_eq!(
            q.bin(5),
            (5.0 / 8.0 - 1.0 - 1.0 / 16.0, 5.0 / 8.0 - 1.0 + 1.0 / 16.0)
        );
        assert_eq!(q.bin(16), (1.0 - 1.0 / 16.0, f64::INFINITY));
        let q = Dequantizer::new(256).unwrap();
        assert_eq!(q.level_of_centre(200.0 / 127.5 - 1.0).unwrap(), 200);
    }

    #[test]
    fn dequantisation_matches_the_training_scale() {
        let q = Dequantizer::new(256).unwrap();
        // Bin centres are the training data values x/127.5 − 1.
        assert!((q.dequantize(0.0, 0.5) + 1.0).abs() < 1e-15);
        assert!((q.dequantize(255.0, 0.5) - 1.0).abs() < 1e-15);
        // A density uniform on [−1 − 1/255, 1 + 1/255]^n (log p_y = −n·ln(2 + 2/255)) has
        // levels equally likely: −log P = n·8 bits.
        let n = 3;
        let log_p_y = -(n as f64) * (2.0 + 2.0 / 255.0f64).ln();
        let bpd = bits_per_dim(q.log_density_of_levels(log_p_y, n), n);
        assert!((bpd - 8.0).abs() < 1e-12, "{bpd}");
        assert!(Dequantizer::new(1).is_err());
        assert!(q.check_level(255.0).is_ok());
        assert!(q.check_level(256.0).is_err());
        assert!(q.check_level(1.5).is_err());
        assert!(q.check_level(-1.0).is_err());
        // σ̃_min is a quarter of a bin: EDM's 0.002 for 8 bits (to 2 %), 1/32 for 17 levels.
        assert_eq!(q.ode_sigma_min(), 0.5 / 255.0);
        assert!((q.ode_sigma_min() / 0.002 - 1.0).abs() < 0.02);
        assert_eq!(Dequantizer::new(17).unwrap().ode_sigma_min(), 1.0 / 32.0);
    }
}
