//! Tweedie conversions between parametrizations of a model's output.
//!
//! Every parametrization is affine in (x_t, x₀): pred = c_x·x_t + c_0·x₀ with
//! x_t = α·x₀ + σ·ε (Tweedie's formula: ∇log p_t(x_t) = (α·E[x₀|x_t] − x_t)/σ²).

use crate::process::Process;

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

// TODO(core helper):
// impl Param { pub fn coeffs(self, p: &dyn Process, t: f64) -> (f64, f64) /* (c_x, c_0) */ }
// pub fn convert_coeffs(from: Param, to: Param, p: &dyn Process, t: f64) -> Affine
// pub fn convert<S: LinearSpace>(from: Param, to: Param, p: &dyn Process, t: f64, x_t: &S, pred: &S) -> S
#[allow(unused)]
fn _contract(_: &dyn Process) {}
