//! The mixture in EDM form x̃ = x₀ + σ̃·ε, batched for samplers: the denoiser E[x₀ | x̃], its
//! vector–Jacobian product and the posterior covariance, evaluated in each component's
//! eigenbasis Σ_k = U_k·diag(λ_k)·U_kᵀ. Σ_k + σ̃²I shares U_k, so no σ̃ needs a factorisation
//! of its own: a call costs two [B, D]×[D, D] products per component, split across rayon
//! threads by rows. [`GaussianMixture::denoiser`] (per-σ̃ Cholesky conditioning) is the
//! reference these agree with (tests below).

use super::GaussianMixture;
use crate::error::Result;
use crate::linalg::sym_eigen;
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;
use std::f64::consts::PI;

/// Rows per rayon task.
const CHUNK: usize = 128;

/// One component's covariance in its eigenbasis, Σ = U·diag(λ)·Uᵀ.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Eigenbasis {
    /// Eigenvalues, raised to `floor`·max (and 1e-300) so that singular covariances stay usable.
    pub(super) lam: Array1<f64>,
    /// Orthonormal eigenvectors as columns.
    pub(super) u: Array2<f64>,
}

impl Eigenbasis {
    /// Eigendecomposition of a symmetric covariance; eigenvalues below `floor`·λ_max are raised
    /// to it (posteriors of noiseless measurements are singular).
    pub(super) fn of(cov: ArrayView2<f64>, name: &str, floor: f64) -> Result<Self> {
        let (lam, u) = sym_eigen(cov, name)?;
        let top = lam.iter().fold(0.0f64, |m, x| m.max(*x));
        Ok(Eigenbasis {
            lam: lam.mapv(|x| x.max(floor * top).max(1e-300)),
            u,
        })
    }

    /// U·diag(λ)·Uᵀ with the floored eigenvalues, symmetrised.
    pub(super) fn floored_cov(&self) -> Array2<f64> {
        let c = (&self.u * &self.lam.view().insert_axis(Axis(0))).dot(&self.u.t());
        crate::linalg::symmetrize(&c)
    }
}

/// Per-row evaluation at one σ̃: log responsibilities [B, K] and per-component posterior means.
struct Eval {
    log_r: Array2<f64>,
    m: Vec<Array2<f64>>,
}

impl GaussianMixture {
    fn eval_chunk(&self, x: &Array2<f64>, sigma: f64) -> Eval {
        let (b, d) = (x.nrows(), x.ncols());
        let s2 = sigma * sigma;
        let kk = self.n_components();
        let mut log_r = Array2::<f64>::zeros((b, kk));
        let mut m = Vec::with_capacity(kk);
        let ln2pi = (2.0 * PI).ln();
        for (k, e) in self.eigen.iter().enumerate() {
            let z = (x - &self.means.row(k)).dot(&e.u);
            let var = e.lam.mapv(|l| l + s2);
            let logdet: f64 = var.iter().map(|v| v.ln()).sum();
            let shrink = &e.lam / &var;
            let log_w = self.weights[k].ln();
            for i in 0..b {
                let q: f64 = z
                    .row(i)
                    .iter()
                    .zip(var.iter())
                    .map(|(z, v)| z * z / v)
                    .sum();
                log_r[[i, k]] = log_w - 0.5 * (q + logdet + d as f64 * ln2pi);
            }
            m.push((z * &shrink).dot(&e.u.t()) + self.means.row(k));
        }
        for mut row in log_r.outer_iter_mut() {
            let mx = row.iter().fold(f64::NEG_INFINITY, |a, v| a.max(*v));
            let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            row.mapv_inplace(|v| v - lse);
        }
        Eval { log_r, m }
    }

    /// Applies `f(chunk, first_row)` to chunks of rows in parallel and stacks the results.
    fn par_rows<F>(&self, x: &Array2<f64>, out_cols: usize, f: F) -> Array2<f64>
    where
        F: Fn(&Array2<f64>, usize) -> Array2<f64> + Sync,
    {
        let starts: Vec<usize> = (0..x.nrows()).step_by(CHUNK).collect();
        let parts: Vec<Array2<f64>> = starts
            .par_iter()
            .map(|&s0| {
                let e = (s0 + CHUNK).min(x.nrows());
                f(&x.slice(s![s0..e, ..]).to_owned(), s0)
            })
            .collect();
        let mut out = Array2::<f64>::zeros((x.nrows(), out_cols));
        for (s0, p) in starts.iter().zip(parts) {
            out.slice_mut(s![*s0..*s0 + p.nrows(), ..]).assign(&p);
        }
        out
    }

    /// E[x₀ | x̃] = Σ_k r_k(x̃)·(μ_k + Σ_k(Σ_k + σ̃²I)⁻¹(x̃ − μ_k)) for rows x̃ [B, D].
    pub fn denoise_rows(&self, x: &Array2<f64>, sigma: f64) -> Array2<f64> {
        self.par_rows(x, self.dim(), |c, _| {
            let e = self.eval_chunk(c, sigma);
            let mut d = Array2::<f64>::zeros(c.raw_dim());
            for (k, mk) in e.m.iter().enumerate() {
                d += &(mk * &e.log_r.column(k).mapv(f64::exp).insert_axis(Axis(1)));
            }
            d
        })
    }

    /// (E[x₀|x̃], Jᵀv) with J = ∂E[x₀|x̃]/∂x̃ = Cov[x₀|x̃]/σ̃², rows [B, D]; rows of v pair with rows of x.
    ///
    /// Cov[x₀|x̃] = Σ_k r_k (C_k + (m_k − D)(m_k − D)ᵀ), C_k = Σ_k(Σ_k + σ̃²I)⁻¹σ̃², so
    /// Cov·v/σ̃² = Σ_k r_k (U_k diag(λ/(λ+σ̃²)) U_kᵀ v + (m_k − D)((m_k − D)·v)/σ̃²).
    pub fn denoise_vjp_rows(
        &self,
        x: &Array2<f64>,
        sigma: f64,
        v: &Array2<f64>,
    ) -> (Array2<f64>, Array2<f64>) {
        let d = self.dim();
        let both = self.par_rows(x, 2 * d, |c, s0| {
            let vc = v.slice(s![s0..s0 + c.nrows(), ..]).to_owned();
            let e = self.eval_chunk(c, sigma);
            let r = e.log_r.mapv(f64::exp);
            let mut den = Array2::<f64>::zeros(c.raw_dim());
            for (k, mk) in e.m.iter().enumerate() {
                den += &(mk * &r.column(k).insert_axis(Axis(1)));
            }
            let mut jv = Array2::<f64>::zeros(c.raw_dim());
            if sigma == 0.0 {
                jv.assign(&vc);
            } else {
                let s2 = sigma * sigma;
                for (k, eb) in self.eigen.iter().enumerate() {
                    let shrink = eb.lam.mapv(|l| l / (l + s2));
                    let within = (vc.dot(&eb.u) * &shrink).dot(&eb.u.t());
                    let dm = &e.m[k] - &den;
                    let proj = (&dm * &vc).sum_axis(Axis(1)) / s2;
                    let between = &dm * &proj.insert_axis(Axis(1));
                    jv += &((within + between) * r.column(k).insert_axis(Axis(1)));
                }
            }
            ndarray::concatenate![Axis(1), den, jv]
        });
        (
            both.slice(s![.., ..d]).to_owned(),
            both.slice(s![.., d..]).to_owned(),
        )
    }

    /// Posterior covariance Cov[x₀ | x̃] of one row (D×D) as σ̃²·J, for tests and diagnostics.
    pub fn posterior_cov_row(&self, x: &Array1<f64>, sigma: f64) -> Array2<f64> {
        let d = self.dim();
        let eye = Array2::<f64>::eye(d);
        let xs = Array2::from_shape_fn((d, d), |(_, j)| x[j]);
        let (_, jv) = self.denoise_vjp_rows(&xs, sigma, &eye);
        jv * sigma * sigma
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::max_abs_diff;
    use crate::mixture::preset;
    use crate::process::{Process, VpLinear};
    use crate::rng::normal_rows;
    use ndarray::{arr1, arr2, arr3};

    fn mix() -> GaussianMixture {
        GaussianMixture::new(
            arr1(&[0.3, 0.7]),
            arr2(&[[-1.0, 0.5], [2.0, -1.0]]),
            arr3(&[[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.05], [-0.05, 0.4]]]),
        )
        .unwrap()
    }

    #[test]
    fn vjp_matches_finite_differences_and_tweedie_covariance() {
        let m = mix();
        let x = arr2(&[[0.3, -0.2], [1.5, 0.4]]);
        for &sigma in &[0.05, 0.7, 3.0] {
            let v = arr2(&[[0.7, -0.3], [-0.2, 1.1]]);
            let (_, jv) = m.denoise_vjp_rows(&x, sigma, &v);
            let h = 1e-6;
            for i in 0..2 {
                for j in 0..2 {
                    let mut xp = x.clone();
                    xp[[i, j]] += h;
                    let mut xm = x.clone();
                    xm[[i, j]] -= h;
                    let dd = (m.denoise_rows(&xp, sigma) - m.denoise_rows(&xm, sigma)) / (2.0 * h);
                    // (Jᵀ v)_j = Σ_l ∂D_l/∂x_j v_l
                    let fd: f64 = (0..2).map(|l| dd[[i, l]] * v[[i, l]]).sum();
                    assert!(
                        (fd - jv[[i, j]]).abs() < 1e-6,
                        "σ={sigma} row {i} coord {j}: {fd} vs {}",
                        jv[[i, j]]
                    );
                }
            }
        }
        // Tweedie: the score of p(x̃) is (D − x̃)/σ̃²; check against a finite-difference log-density.
        let sigma = 0.8;
        let logp = |x: &Array2<f64>| -> f64 {
            let (a, b) = (x[[0, 0]], x[[0, 1]]);
            let mut p = 0.0;
            for k in 0..2 {
                let c = &m.cov(k) + &(Array2::<f64>::eye(2) * sigma * sigma);
                let det = c[[0, 0]] * c[[1, 1]] - c[[0, 1]] * c[[1, 0]];
                let (da, db) = (a - m.means()[[k, 0]], b - m.means()[[k, 1]]);
                let q =
                    (c[[1, 1]] * da * da - 2.0 * c[[0, 1]] * da * db + c[[0, 0]] * db * db) / det;
                p += m.weights()[k] * (-0.5 * q).exp() / (2.0 * PI * det.sqrt());
            }
            p.ln()
        };
        let x0 = arr2(&[[0.4, 0.1]]);
        let d = m.denoise_rows(&x0, sigma);
        for j in 0..2 {
            let mut xp = x0.clone();
            xp[[0, j]] += 1e-6;
            let mut xm = x0.clone();
            xm[[0, j]] -= 1e-6;
            let fd = (logp(&xp) - logp(&xm)) / 2e-6;
            let score = (d[[0, j]] - x0[[0, j]]) / (sigma * sigma);
            assert!((fd - score).abs() < 1e-6, "{fd} vs {score}");
        }
    }

    #[test]
    fn posterior_of_identity_measurement_is_bayes_rule() {
        // With A = I and noise s, the posterior mean is the denoiser at σ̃ = s (Tweedie).
        let m = mix();
        let y = arr1(&[0.4, 0.1]);
        let s = 0.6;
        let post = m.posterior(&Array2::eye(2), &y, s).unwrap();
        let mean = post.mean();
        let d = m.denoise_rows(&y.clone().insert_axis(Axis(0)), s);
        assert!((mean - d.row(0)).iter().all(|e| e.abs() < 1e-12));
    }

    #[test]
    fn keyed_draws_and_noiseless_posterior() {
        let m = mix();
        // One sampler: keyed rows, σ̃ = 0 is `sample`, rows do not depend on n or the offset.
        assert_eq!(m.sample_rows(7, 0.0, 4, 0), m.sample(7, 4));
        assert_eq!(
            m.sample_rows(3, 0.5, 4, 2).row(0),
            m.sample_rows(5, 0.5, 4, 0).row(2)
        );
        // Observing x₁ without noise: every component's posterior pins x₁ = y, covariance singular.
        let post = m
            .posterior(&arr2(&[[1.0, 0.0]]), &arr1(&[0.4]), 0.0)
            .unwrap();
        for k in 0..2 {
            assert!((post.means()[[k, 0]] - 0.4).abs() < 1e-12);
            assert!(post.cov(k)[[0, 0]].abs() < 1e-12);
        }
        let x = post.sample_rows(50, 0.0, 1, 0);
        assert!(x.column(0).iter().all(|v| (v - 0.4).abs() < 1e-5));
        assert!(post.denoise_rows(&x, 0.01).iter().all(|v| v.is_finite()));
        assert!(m.component(2).unwrap_err().to_string().contains("class"));
        let e = m.posterior(&Array2::eye(2), &arr1(&[0.0, 0.0]), -1.0);
        assert!(e.unwrap_err().to_string().contains("noise_std"));
    }

    /// The eigenbasis path agrees with the per-σ̃ Cholesky conditioning in process coordinates:
    /// x̃ = x_t/α, σ̃ = σ/α.
    #[test]
    fn batched_eigenbasis_matches_cholesky_conditioning() {
        let vp = VpLinear {
            beta_min: 0.1,
            beta_d: 19.9,
            eps_t: 1e-3,
        };
        for name in ["gmm2d", "gmm64d"] {
            let g = preset(name).unwrap();
            let d = g.dim();
            for t in [0.05, 0.3, 0.8] {
                let (a, s) = (vp.alpha(t), vp.sigma(t));
                let x_t = g.sample(40, 3) * a + normal_rows(4, 0, 40, 0, d) * s;
                let reference = g.denoiser(x_t.view(), &vp, t).unwrap();
                let batched = g.denoise_rows(&(&x_t / a), s / a);
                let diff = max_abs_diff(&reference, &batched);
                assert!(diff < 1e-10, "{name} t={t}: {diff}");
                let cov = g.posterior_cov(x_t.view(), &vp, t).unwrap();
                let row = (&x_t.row(0) / a).to_owned();
                let c = g.posterior_cov_row(&row, s / a);
                let diff = max_abs_diff(&cov.index_axis(Axis(0), 0).to_owned(), &c);
                assert!(diff < 1e-10, "{name} t={t} cov: {diff}");
            }
        }
    }
}
