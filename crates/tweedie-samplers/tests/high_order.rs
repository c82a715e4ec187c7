//! Convergence orders of the higher-order solvers (DEIS-3, LMS, DPM-Solver++(3M), UniPC, iPNDM)
//! against the closed-form probability-flow ODE of one Gaussian.
//!
//! The exact answer is tests/common/gaussian_flow.rs.

mod common;

use common::gaussian_flow::{assert_final_orders, mean, solve_error, DIM, SIGMA_MAX};
use ndarray::Array2;
use tweedie_core::multistep::UniPcVariant;
use tweedie_core::rng::normal_rows;
use tweedie_samplers::SamplerKind;

const BATCH: usize = 16;
/// Rows of DEIS-3's test (the local orders in docs/benchmarks.md and history.md are for 32).
const DEIS_BATCH: usize = 32;

/// RMS error per element of `kind` with `steps` steps (= NFE) at σ̃_MIN.
fn error(kind: &SamplerKind, steps: usize, x_t: &Array2<f64>) -> f64 {
    let (e, nfe) = solve_error(kind, steps, x_t);
    assert_eq!(nfe, steps, "{}", kind.name());
    e
}

fn unipc(order: usize, variant: UniPcVariant, corrector: bool) -> SamplerKind {
    SamplerKind::UniPc {
        order,
        variant,
        corrector,
    }
}

/// The local orders log₂(e_N/e_2N) rise towards 3 with a deficit 3 − p that halves with each
/// doubling (e = C·h³·(1 + O(h)), the O(h) term from the ρ = 7 grid's large early steps), so
/// extrapolating the deficit gives 3. A first-order start whose O(h²) error mattered would
/// make the deficit grow instead (the order would fall towards 2).
#[test]
fn deis3_is_third_order_on_a_gaussian() {
    let x_t = normal_rows(5, 0, DEIS_BATCH, 0, DIM) * SIGMA_MAX + &mean();
    let nfes = [10, 20, 40, 80, 160, 320];
    let errs: Vec<f64> = nfes
        .iter()
        .map(|&n| error(&SamplerKind::Deis3, n, &x_t))
        .collect();
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

/// Local orders log₂(e_N/e_2N) at the finest pair of step counts lie within 0.25 of each
/// method's order (the ρ = 7 grid's large early steps make coarser pairs pre-asymptotic).
#[test]
fn multistep_solvers_reach_their_orders() {
    let x_t = normal_rows(5, 0, BATCH, 0, DIM) * SIGMA_MAX + &mean();
    let steps = [20, 40, 80, 160];
    let cases = [
        (SamplerKind::Lms { order: 2 }, 2.0),
        (SamplerKind::Lms { order: 3 }, 3.0),
        (SamplerKind::Lms { order: 4 }, 4.0),
        (SamplerKind::DpmSolverPp3m, 3.0),
        (unipc(2, UniPcVariant::Bh1, false), 2.0),
        (unipc(3, UniPcVariant::Bh1, false), 3.0),
        (unipc(2, UniPcVariant::Bh2, false), 2.0),
        (unipc(3, UniPcVariant::Bh2, false), 3.0),
        (unipc(1, UniPcVariant::Bh2, true), 2.0),
        (unipc(2, UniPcVariant::Bh1, true), 3.0),
        (unipc(2, UniPcVariant::Bh2, true), 3.0),
        (unipc(3, UniPcVariant::Bh2, true), 4.0),
    ];
    assert_final_orders(&cases, &steps, &x_t, error);
}

/// iPNDM's equal-step weights are not the variable-step Adams–Bashforth weights: on the ρ = 7
/// grid, whose step ratios drift by O(h), the fourth-order weights give a second-order method
/// (measured local orders 2.18, 2.08, 2.02).
#[test]
fn ipndm_converges() {
    let x_t = normal_rows(5, 0, BATCH, 0, DIM) * SIGMA_MAX + &mean();
    let steps = [20, 40, 80, 160];
    let errs: Vec<f64> = steps
        .iter()
        .map(|&n| error(&SamplerKind::Ipndm { order: 4 }, n, &x_t))
        .collect();
    let orders: Vec<f64> = errs.windows(2).map(|w| (w[0] / w[1]).log2()).collect();
    eprintln!("ipndm: errors {errs:?}, local orders {orders:?}");
    assert!((orders[orders.len() - 1] - 2.0).abs() < 0.25, "{orders:?}");
}
