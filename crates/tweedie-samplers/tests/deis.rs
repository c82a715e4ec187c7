//! DEIS-3's convergence order against the closed-form probability-flow ODE of one Gaussian.
//!
//! For x₀ ~ N(μ, diag(s²)) the ODE dx̃/dσ̃ = (x̃ − D)/σ̃ is solved, per coordinate, by
//! x̃(σ̃) = μ + √((s² + σ̃²)/(s² + σ̃_T²))·(x̃_T − μ): the error of a solve is known exactly,
//! with no reference solve whose own error could blur the order.

mod common;

use common::{edm_grid_without_zero, gaussian};
use ndarray::{Array1, Array2, Axis};
use tweedie_core::process::Edm;
use tweedie_core::rng::normal_rows;
use tweedie_samplers::{Init, Sampler, SamplerKind};

const SIGMA_MAX: f64 = 80.0;
const SIGMA_MIN: f64 = 0.002;
const DIM: usize = 6;
const BATCH: usize = 32;

/// s² spread over [0.01, 4], so the coordinates cross σ̃ = s at different times of the solve.
fn variances() -> Array1<f64> {
    Array1::from_shape_fn(DIM, |i| 0.01 * 400f64.powf(i as f64 / (DIM - 1) as f64))
}

fn mean() -> Array1<f64> {
    Array1::from_shape_fn(DIM, |i| 0.5 - 0.2 * i as f64)
}

/// x̃(σ̃_MIN) from the rows x̃_T at σ̃_MAX.
fn exact(x_t: &Array2<f64>) -> Array2<f64> {
    let scale =
        variances().mapv(|s2| ((s2 + SIGMA_MIN * SIGMA_MIN) / (s2 + SIGMA_MAX * SIGMA_MAX)).sqrt());
    (x_t - &mean()) * &scale.insert_axis(Axis(0)) + &mean()
}

/// RMS error per element of DEIS-3 with `steps` steps (= NFE) at σ̃_MIN.
fn deis3_error(steps: usize, x_t: &Array2<f64>) -> f64 {
    let p = Edm {
        sigma_min: SIGMA_MIN,
        sigma_max: SIGMA_MAX,
    };
    let mix = gaussian(mean(), Array2::from_diag(&variances()));
    let d = Sampler::new(
        &p,
        edm_grid_without_zero(&p, steps, SIGMA_MIN, SIGMA_MAX),
        SamplerKind::Deis3,
        &mix,
    )
    .unwrap();
    let out = d.run(Init::Latents(x_t.clone()), None).unwrap();
    assert_eq!(out.nfe, steps);
    let e = out.samples - exact(x_t);
    (e.mapv(|v| v * v).sum() / e.len() as f64).sqrt()
}

/// The local orders log₂(e_N/e_2N) rise towards 3 with a deficit 3 − p that halves with each
/// doubling (e = C·h³·(1 + O(h)), the O(h) term from the ρ = 7 grid's large early steps), so
/// extrapolating the deficit gives 3. A first-order start whose O(h²) error mattered would
/// make the deficit grow instead (the order would fall towards 2).
#[test]
fn deis3_is_third_order_on_a_gaussian() {
    let x_t = normal_rows(5, 0, BATCH, 0, DIM) * SIGMA_MAX + &mean();
    let nfes = [10, 20, 40, 80, 160, 320];
    let errs: Vec<f64> = nfes.iter().map(|&n| deis3_error(n, &x_t)).collect();
    let orders: Vec<f64> = errs.windows(2).map(|w| (w[0] / w[1]).log2()).collect();
    eprintln!(
        "NFE {nfes:?}: errors {:?}, local orders {:?}",
        errs.iter().map(|e| format!("{e:.3e}")).collect::<Vec<_>>(),
        orders.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>()
    );
    for w in orders.windows(2) {
        let shrink = (3.0 - w[0]) / (3.0 - w[1]);
        assert!(
            (1.7..=2.3).contains(&shrink),
            "order deficit shrank by {shrink:.2} (orders {orders:?})"
        );
    }
    let last = orders[orders.len() - 1];
    let limit = last + (last - orders[orders.len() - 2]);
    assert!(
        (2.97..=3.03).contains(&limit),
        "extrapolated order {limit:.3} (orders {orders:?})"
    );
}
