//! Shared test statistics and helpers; the test mixtures themselves are the library's
//! `tweedie_samplers::problems` (also the priors of the cond_bias example).
#![allow(dead_code, unused_imports, clippy::needless_range_loop)]

pub mod gaussian_flow;

use ndarray::{Array1, Array2};
use tweedie_core::process::Edm;
use tweedie_core::{TimeGrid, Timer, TimerKind};
pub use tweedie_samplers::problems::{mixture_2d, mixture_64d, random_spd};
use tweedie_samplers::GaussianMixture;

/// EDM ρ = 7 grid of `steps` steps from σ̃_max to σ̃_min, without the final jump to 0, so that
/// convergence is measured against the ODE solution at σ̃_min.
pub fn edm_grid_without_zero(p: &Edm, steps: usize, sigma_min: f64, sigma_max: f64) -> TimeGrid {
    let g = TimerKind::Edm {
        sigma_min,
        sigma_max,
        rho: 7.0,
    }
    .grid(p, steps + 1)
    .expect("EDM grid");
    TimeGrid {
        t: g.t[..=steps].to_vec(),
        sigma_tilde: g.sigma_tilde[..=steps].to_vec(),
    }
}

/// Allowances for discretisation bias, added to the 5-standard-error bounds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bias {
    pub weight: f64,
    pub mean: f64,
    pub cov: f64,
}

/// The largest deviations found, in standard errors (z) and absolute terms.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub max_z_weight: f64,
    pub max_z_mean: f64,
    pub max_z_cov: f64,
    pub max_abs_weight: f64,
    pub max_abs_mean: f64,
    pub max_abs_cov: f64,
    pub failures: Vec<String>,
}

/// Per-component weights, means and covariances of `x` [n, D] against `mix`, each sample assigned
/// to its most likely component. Bound: 5 standard errors + bias allowance, with standard errors
/// √(w(1−w)/n) (weights), √(Σ_jj/n_k) (means), √((Σ_iiΣ_jj + Σ_ij²)/n_k) (covariances).
pub fn check(x: &Array2<f64>, mix: &GaussianMixture, bias: Bias) -> Report {
    let n = x.nrows() as f64;
    let d = mix.dim();
    let cls = mix.component_of(x.view()).unwrap();
    let w = mix.weights();
    let mut rep = Report::default();
    for k in 0..mix.n_components() {
        let rows: Vec<usize> = (0..x.nrows()).filter(|i| cls[*i] == k).collect();
        let nk = rows.len() as f64;
        let wk = nk / n;
        let se = (w[k] * (1.0 - w[k]) / n).sqrt();
        let dev = (wk - w[k]).abs();
        rep.max_z_weight = rep.max_z_weight.max(dev / se);
        rep.max_abs_weight = rep.max_abs_weight.max(dev);
        if dev > 5.0 * se + bias.weight {
            rep.failures.push(format!(
                "weight[{k}] = {wk:.4}, expected {:.4} (se {se:.4})",
                w[k]
            ));
        }
        if rows.len() < 10 {
            // Components too rare to estimate moments are checked through their weight only.
            if w[k] * n >= 20.0 {
                rep.failures
                    .push(format!("component {k} has only {} samples", rows.len()));
            }
            continue;
        }
        let xs = x.select(ndarray::Axis(0), &rows);
        let mean = xs.mean_axis(ndarray::Axis(0)).unwrap();
        let c = mix.cov(k);
        for j in 0..d {
            let se = (c[[j, j]] / nk).sqrt();
            let dev = (mean[j] - mix.means()[[k, j]]).abs();
            rep.max_z_mean = rep.max_z_mean.max(dev / se);
            rep.max_abs_mean = rep.max_abs_mean.max(dev);
            if dev > 5.0 * se + bias.mean {
                rep.failures.push(format!(
                    "mean[{k}][{j}] = {:.4}, expected {:.4} (se {se:.4})",
                    mean[j],
                    mix.means()[[k, j]]
                ));
            }
        }
        let centred = &xs - &mean;
        let cov = centred.t().dot(&centred) / (nk - 1.0);
        for i in 0..d {
            for j in i..d {
                let se = ((c[[i, i]] * c[[j, j]] + c[[i, j]] * c[[i, j]]) / nk).sqrt();
                let dev = (cov[[i, j]] - c[[i, j]]).abs();
                rep.max_z_cov = rep.max_z_cov.max(dev / se);
                rep.max_abs_cov = rep.max_abs_cov.max(dev);
                if dev > 5.0 * se + bias.cov {
                    rep.failures.push(format!(
                        "cov[{k}][{i},{j}] = {:.4}, expected {:.4} (se {se:.4})",
                        cov[[i, j]],
                        c[[i, j]]
                    ));
                }
            }
        }
    }
    rep
}

/// Panics with the failures (first 10) when any bound is exceeded.
pub fn assert_ok(what: &str, rep: &Report) {
    eprintln!(
        "{what}: max z (weight, mean, cov) = ({:.2}, {:.2}, {:.2}); max abs = ({:.4}, {:.4}, {:.4})",
        rep.max_z_weight, rep.max_z_mean, rep.max_z_cov, rep.max_abs_weight, rep.max_abs_mean, rep.max_abs_cov
    );
    assert!(
        rep.failures.is_empty(),
        "{what}: {} failures, e.g. {:?}",
        rep.failures.len(),
        &rep.failures[..rep.failures.len().min(10)]
    );
}

/// One Gaussian N(μ, Σ) in D dimensions as a one-component mixture (TMP and ΠGDM are exact for it).
pub fn gaussian(mean: Array1<f64>, cov: Array2<f64>) -> GaussianMixture {
    let d = mean.len();
    GaussianMixture::new(
        Array1::ones(1),
        mean.into_shape_with_order((1, d)).unwrap(),
        cov.into_shape_with_order((1, d, d)).unwrap(),
    )
    .unwrap()
}
