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
    }
}
