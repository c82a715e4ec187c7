//! Empirical convergence order of the deterministic samplers against a tightly controlled
//! reference solve of the same probability-flow ODE (same start, same end σ̃_min > 0).

mod common;

use common::{edm_grid_without_zero, mixture_2d};
use ndarray::Array2;
use tweedie_core::process::Edm;
use tweedie_samplers::{GaussianMixture, Init, Sampler, SamplerKind};

const SIGMA_MIN: f64 = 0.01;
const SIGMA_MAX: f64 = 80.0;

fn solve(kind: SamplerKind, steps: usize, mix: &GaussianMixture, x_t: &Array2<f64>) -> Array2<f64> {
    let p = Edm {
        sigma_min: SIGMA_MIN,
        sigma_max: SIGMA_MAX,
    };
    let d = Sampler::new(
        &p,
        edm_grid_without_zero(&p, steps, SIGMA_MIN, SIGMA_MAX),
        kind,
        mix,
    )
    .unwrap();
    d.run(Init::Latents(x_t.clone()), None).unwrap().samples
}

fn rms(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    ((a - b).mapv(|v| v * v).sum() / a.nrows() as f64).sqrt()
}

/// Local orders log2(e_N / e_2N) for doubling step counts, and the errors.
fn orders(
    kind: SamplerKind,
    steps: &[usize],
    mix: &GaussianMixture,
    x_t: &Array2<f64>,
    reference: &Array2<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let errs: Vec<f64> = steps
        .iter()
        .map(|&n| rms(&solve(kind.clone(), n, mix, x_t), reference))
        .collect();
    (
        errs.windows(2).map(|w| (w[0] / w[1]).log2()).collect(),
        errs,
    )
}

#[test]
fn deterministic_samplers_converge_at_their_order() {
    let mix = mixture_2d();
    let n = 64;
    let x_t = mix.sample_rows(n, SIGMA_MAX, 11, 0);
    let reference = solve(
        SamplerKind::Adaptive {
            rtol: 1e-12,
            atol: 1e-12,
        },
        1,
        &mix,
        &x_t,
    );
    // The reference is itself converged: a second, tighter-than-needed solve agrees to 1e-7.
    let ref2 = solve(SamplerKind::Deis3, 4096, &mix, &x_t);
    assert!(
        rms(&ref2, &reference) < 1e-7,
        "reference disagreement {}",
        rms(&ref2, &reference)
    );
    let steps = [32, 64, 128, 256, 512];
    let cases = [
        (SamplerKind::Euler, 0.9, 1.1),
        (SamplerKind::Ddim { eta: 0.0 }, 0.9, 1.1),
        (SamplerKind::Heun, 1.9, 2.1),
        (SamplerKind::DpmSolverPp2s, 1.85, 2.1),
        (SamplerKind::DpmSolverPp2m, 1.9, 2.1),
        (SamplerKind::DpmSolverPp2mSde { eta: 0.0 }, 1.9, 2.1),
        (SamplerKind::Deis3, 2.8, 3.4),
    ];
    let mut failures = Vec::new();
    for (kind, lo, hi) in cases {
        let (ords, errs) = orders(kind.clone(), &steps, &mix, &x_t, &reference);
        eprintln!(
            "{:>14}: local orders {:?}; errors {:?}",
            kind.name(),
            ords.iter().map(|o| format!("{o:.3}")).collect::<Vec<_>>(),
            errs.iter().map(|e| format!("{e:.3e}")).collect::<Vec<_>>()
        );
        // The asymptotic regime: the order between the two finest step counts.
        let p = ords[ords.len() - 1];
        if !(p >= lo && p <= hi) {
            failures.push(format!("{}: order {p:.3} not in [{lo}, {hi}]", kind.name()));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
