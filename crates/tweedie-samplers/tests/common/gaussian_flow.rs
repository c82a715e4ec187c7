//! The exact answer of the order tests (tests/high_order.rs, tests/low_nfe.rs): for
//! x₀ ~ N(μ, diag(s²)) the probability-flow ODE dx̃/dσ̃ = (x̃ − D)/σ̃ is solved, per coordinate,
//! by x̃(σ̃) = μ + √((s² + σ̃²)/(s² + σ̃_T²))·(x̃_T − μ), so a solve's error is known exactly,
//! with no reference solve whose own error could blur the order.

use ndarray::{Array1, Array2, Axis};
use tweedie_core::process::Edm;
use tweedie_samplers::{Init, Sampler, SamplerKind};

use super::{edm_grid_without_zero, gaussian};

pub const SIGMA_MAX: f64 = 80.0;
pub const SIGMA_MIN: f64 = 0.002;
pub const DIM: usize = 6;

/// s² spread over [0.01, 4], so the coordinates cross σ̃ = s at different times of the solve.
pub fn variances() -> Array1<f64> {
    Array1::from_shape_fn(DIM, |i| 0.01 * 400f64.powf(i as f64 / (DIM - 1) as f64))
}

pub fn mean() -> Array1<f64> {
    Array1::from_shape_fn(DIM, |i| 0.5 - 0.2 * i as f64)
}

/// x̃(σ̃_MIN) from the rows x̃_T at σ̃_MAX.
pub fn exact(x_t: &Array2<f64>) -> Array2<f64> {
    let scale =
        variances().mapv(|s2| ((s2 + SIGMA_MIN * SIGMA_MIN) / (s2 + SIGMA_MAX * SIGMA_MAX)).sqrt());
    (x_t - &mean()) * &scale.insert_axis(Axis(0)) + &mean()
}

/// RMS error per element at σ̃_MIN of `kind` with `steps` steps on the ρ = 7 grid (no jump to
/// 0), and the number of denoiser evaluations it used.
pub fn solve_error(kind: &SamplerKind, steps: usize, x_t: &Array2<f64>) -> (f64, usize) {
    let p = Edm {
        sigma_min: SIGMA_MIN,
        sigma_max: SIGMA_MAX,
    };
    let mix = gaussian(mean(), Array2::from_diag(&variances()));
    let out = Sampler::new(
        &p,
        edm_grid_without_zero(&p, steps, SIGMA_MIN, SIGMA_MAX),
        kind.clone(),
        &mix,
    )
    .unwrap()
    .run(Init::Latents(x_t.clone()), None)
    .unwrap();
    let e = out.samples - exact(x_t);
    ((e.mapv(|v| v * v).sum() / e.len() as f64).sqrt(), out.nfe)
}

/// Every case's local orders log₂(e_N/e_2N) over `steps` (printed with the errors), and one
/// assertion listing the cases whose order at the finest pair is not within 0.25 of the expected
/// one (the ρ = 7 grid's large early steps make coarser pairs pre-asymptotic).
pub fn assert_final_orders(
    cases: &[(SamplerKind, f64)],
    steps: &[usize],
    x_t: &Array2<f64>,
    error: impl Fn(&SamplerKind, usize, &Array2<f64>) -> f64,
) {
    let mut failures = Vec::new();
    for (kind, p) in cases {
        let errs: Vec<f64> = steps.iter().map(|&n| error(kind, n, x_t)).collect();
        let orders: Vec<f64> = errs.windows(2).map(|w| (w[0] / w[1]).log2()).collect();
        eprintln!(
            "{kind:?}: errors {:?}, local orders {:?}",
            errs.iter().map(|e| format!("{e:.3e}")).collect::<Vec<_>>(),
            orders.iter().map(|o| format!("{o:.3}")).collect::<Vec<_>>()
        );
        let last = orders[orders.len() - 1];
        if (last - p).abs() > 0.25 {
            failures.push(format!("{kind:?}: order {last:.3}, expected {p}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
