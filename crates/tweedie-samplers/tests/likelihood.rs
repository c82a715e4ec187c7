//! Probability-flow likelihood against the exact log-density of Gaussian mixtures.
//!
//! The ODE from σ̃_min to σ̃_max maps x₀ to x̃_T; with the exact prior log p_{σ̃_max} the
//! result must equal the exact log p_{σ̃_min}(x₀) up to RK4's error, which falls as h⁴.

use ndarray::Array2;
use tweedie_core::likelihood::gaussian_log_density;
use tweedie_core::mixture::{preset, GaussianMixture};
use tweedie_core::process::Edm;
use tweedie_samplers::likelihood::{Divergence, Likelihood, Probe};
use tweedie_samplers::Result;

const SIGMA_MIN: f64 = 0.002;
const SIGMA_MAX: f64 = 80.0;

fn edm() -> Edm {
    Edm {
        sigma_min: SIGMA_MIN,
        sigma_max: SIGMA_MAX,
    }
}

/// Exact log p_σ̃ (EDM: α = 1, σ = t = σ̃).
fn exact(g: &GaussianMixture, x: &Array2<f64>, sigma: f64) -> Vec<f64> {
    g.log_prob_t(x.view(), &edm(), sigma).unwrap().to_vec()
}

fn spec(steps: usize, divergence: Divergence) -> Likelihood {
    Likelihood {
        sigma_min: SIGMA_MIN,
        sigma_max: SIGMA_MAX,
        steps,
        divergence,
        seed: 3,
        first_index: 0,
    }
}

/// Max |log p − exact| over the points with the exact prior.
fn max_err(g: &GaussianMixture, x0: &Array2<f64>, steps: usize) -> f64 {
    let m = g.clone();
    let prior = |z: &Array2<f64>| -> Result<Vec<f64>> { Ok(exact(g, z, SIGMA_MAX)) };
    let out = spec(steps, Divergence::Exact)
        .run(&m, x0, Some(&prior))
        .unwrap();
    assert_eq!(out.nfe, 4 * steps * g.dim());
    let want = exact(g, x0, SIGMA_MIN);
    out.log_p
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Exact divergence: error ∝ h⁴ (observed order within 3.5 … 4.5 between 64 and 128 steps;
/// 16 → 32 is still pre-asymptotic) and below 2e-5 nats (2-D) and 3e-4 nats (64-D) at 128 steps.
#[test]
fn exact_divergence_converges_at_fourth_order() {
    for (name, n, tol) in [("gmm2d", 40, 2e-5), ("gmm64d", 3, 3e-4)] {
        let g = preset(name).unwrap();
        let x0 = g.sample(n, 11);
        let e: Vec<f64> = [32, 64, 128].iter().map(|&s| max_err(&g, &x0, s)).collect();
        let order = (e[1] / e[2]).log2();
        println!("{name}: errors {e:?}, order {order:.2}");
        assert!((3.5..=4.5).contains(&order), "{name}: order {order}, {e:?}");
        assert!(e[2] < tol, "{name}: {e:?}");
    }
}

/// With the default prior N(0, σ̃_max²I) the result differs from the exact one by the prior's
/// error only, O(E‖x₀‖²/σ̃_max²) = O(1e-3) nats here.
#[test]
fn gaussian_prior_is_close_at_sigma_max_80() {
    let g = preset("gmm2d").unwrap();
    let x0 = g.sample(20, 5);
    let m = g.clone();
    let out = spec(128, Divergence::Exact).run(&m, &x0, None).unwrap();
    let want = exact(&g, &x0, SIGMA_MIN);
    for (i, (a, b)) in out.log_p.iter().zip(&want).enumerate() {
        // The prior's own error at this latent, plus the solver's.
        let z = out.latents.row(i);
        let prior_err = (gaussian_log_density(z.dot(&z), 2, SIGMA_MAX)
            - exact(&g, &out.latents, SIGMA_MAX)[i])
            .abs();
        assert!(prior_err < 1e-2, "{prior_err}");
        assert!((a - b).abs() < prior_err + 2e-5, "{i}: {a} vs {b}");
    }
}

/// Hutchinson's estimate is unbiased: every point's mean over 32 probes is within 5 reported
/// standard errors of the exact value, for both probe kinds; in 2-D and 64-D. Rademacher probes
/// have the smaller variance (their variance drops the diagonal of J).
#[test]
fn hutchinson_is_unbiased_with_reported_error() {
    for (name, n) in [("gmm2d", 20), ("gmm64d", 4)] {
        let g = preset(name).unwrap();
        let x0 = g.sample(n, 7);
        let m = g.clone();
        let prior = |z: &Array2<f64>| -> Result<Vec<f64>> { Ok(exact(&g, z, SIGMA_MAX)) };
        let want = exact(&g, &x0, SIGMA_MIN);
        let mut mean_se = Vec::new();
        for probe in [Probe::Rademacher, Probe::Gaussian] {
            let out = spec(32, Divergence::Hutchinson { probe, probes: 32 })
                .run(&m, &x0, Some(&prior))
                .unwrap();
            let se = out.std_err.unwrap();
            for i in 0..n {
                let z = (out.log_p[i] - want[i]) / se[i];
                assert!(
                    z.abs() < 5.0,
                    "{name} {probe:?} {i}: z = {z}, se = {}",
                    se[i]
                );
            }
            mean_se.push(se.iter().sum::<f64>() / n as f64);
        }
        println!("{name}: mean standard error (Rademacher, Gaussian) = {mean_se:?}");
        assert!(mean_se[0] < mean_se[1], "{name}: {mean_se:?}");
    }
}

#[test]
fn bad_settings_are_named() {
    let g = preset("gmm2d").unwrap();
    let m = g.clone();
    let x0 = g.sample(2, 1);
    let mut s = spec(0, Divergence::Exact);
    assert!(format!("{}", s.run(&m, &x0, None).unwrap_err()).contains("steps"));
    s.steps = 4;
    s.sigma_min = 0.0;
    assert!(format!("{}", s.run(&m, &x0, None).unwrap_err()).contains("sigma"));
    let s = spec(
        4,
        Divergence::Hutchinson {
            probe: Probe::Gaussian,
            probes: 0,
        },
    );
    assert!(format!("{}", s.run(&m, &x0, None).unwrap_err()).contains("probes"));
}

/// The progress hook sees every RK4 step once, in order, and leaves the result bit for bit.
#[test]
fn progress_hook_counts_steps_without_changing_the_result() {
    let g = preset("gmm2d").unwrap();
    let x0 = g.sample(5, 9);
    let s = spec(6, Divergence::Exact);
    let plain = s.run(&g, &x0, None).unwrap();
    let mut seen = Vec::new();
    let hooked = s
        .run_with_progress(&g, &x0, None, &mut |done| seen.push(done))
        .unwrap();
    assert_eq!(seen, (1..=6).collect::<Vec<_>>());
    assert_eq!(plain.log_p, hooked.log_p);
}
