//! Shared test problems and statistics: Gaussian mixtures with well-separated components
//! (misassignment probability < 1e-9), so per-component statistics of correctly distributed
//! samples have the textbook standard errors.
#![allow(dead_code, clippy::needless_range_loop)]

use ndarray::{array, Array1, Array2};
use tweedie_core::process::Edm;
use tweedie_core::rng::normal_rows;
use tweedie_core::{TimeGrid, Timer, TimerKind};
use tweedie_samplers::MixtureModel;

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

/// 2-D, three components, anisotropic covariances, weights 0.2 / 0.3 / 0.5; means ≥ 9 std apart.
pub fn mixture_2d() -> MixtureModel {
    MixtureModel::new(
        &[0.2, 0.3, 0.5],
        array![[-3.0, 0.0], [3.0, 1.5], [0.5, -3.5]],
        vec![
            array![[0.30, 0.10], [0.10, 0.15]],
            array![[0.10, -0.05], [-0.05, 0.25]],
            array![[0.20, 0.0], [0.0, 0.08]],
        ],
    )
    .unwrap()
}

/// 64-D, three components with random SPD covariances (eigenvalues in [0.05, 0.35]) and
/// means of norm ≈ 4 in random directions (pairwise separation ≫ 10 std).
pub fn mixture_64d() -> MixtureModel {
    let d = 64;
    let mut covs = Vec::new();
    for k in 0..3u64 {
        let g = normal_rows(100 + k, 0, d, 0, d);
        // Orthonormal basis by Gram–Schmidt of a Gaussian matrix.
        let mut q = Array2::<f64>::zeros((d, d));
        for j in 0..d {
            let mut v = g.column(j).to_owned();
            for i in 0..j {
                let p = v.dot(&q.column(i));
                v.scaled_add(-p, &q.column(i));
            }
            let nv = v.dot(&v).sqrt();
            q.column_mut(j).assign(&(v / nv));
        }
        let lam = Array1::from_shape_fn(d, |j| 0.05 + 0.3 * j as f64 / (d - 1) as f64);
        let c = q.dot(&Array2::from_diag(&lam)).dot(&q.t());
        covs.push((&c + &c.t()) * 0.5);
    }
    let means = normal_rows(200, 0, 3, 0, d) * 0.5;
    MixtureModel::new(&[0.25, 0.35, 0.4], means, covs).unwrap()
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
pub fn check(x: &Array2<f64>, mix: &MixtureModel, bias: Bias) -> Report {
    let n = x.nrows() as f64;
    let d = mix.dim();
    let cls = mix.classify(x);
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
        let c = &mix.covs()[k];
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
pub fn gaussian(mean: Array1<f64>, cov: Array2<f64>) -> MixtureModel {
    let d = mean.len();
    MixtureModel::new(
        &[1.0],
        mean.into_shape_with_order((1, d)).unwrap(),
        vec![cov],
    )
    .unwrap()
}

/// A random SPD matrix with eigenvalues spread over [lo, hi].
pub fn random_spd(d: usize, lo: f64, hi: f64, seed: u64) -> Array2<f64> {
    let g = normal_rows(seed, 0, d, 0, d);
    let mut q = Array2::<f64>::zeros((d, d));
    for j in 0..d {
        let mut v = g.column(j).to_owned();
        for i in 0..j {
            let p = v.dot(&q.column(i));
            v.scaled_add(-p, &q.column(i));
        }
        let nv = v.dot(&v).sqrt();
        q.column_mut(j).assign(&(v / nv));
    }
    let lam = Array1::from_shape_fn(d, |j| lo + (hi - lo) * j as f64 / (d.max(2) - 1) as f64);
    let c = q.dot(&Array2::from_diag(&lam)).dot(&q.t());
    (&c + &c.t()) * 0.5
}
