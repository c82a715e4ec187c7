//! The analytic Gaussian mixture as a sampler model: closed-form denoiser E[x₀ | x̃],
//! its Jacobian-vector product, exact marginals and the exact posterior for y = A·x₀ + n.
//!
//! Evaluation is batched in each component's eigenbasis Σ_k = U_k diag(λ_k) U_kᵀ, so a call
//! costs two [B, D]×[D, D] products per component, split across rayon threads by rows; core's
//! `GaussianMixture` (the reference, per-row Cholesky) converts with `TryFrom` and the two
//! agree to 1e-10 (tests/core_agreement.rs).

use ndarray::{s, Array1, Array2, Axis};
use rand::Rng;
use rand_distr::Distribution;
use rayon::prelude::*;
use tweedie_core::Invalid;

use crate::error::{Result, SamplerError};
use crate::linalg;
use crate::model::{
    Capabilities, ClassCapabilities, ClassModel, ExactMarginal, ExactPosterior, Model, Vjp,
};
use crate::ops::ForwardModel;
use crate::state::State;
use tweedie_core::rng::{stream_rng, streams};

/// Rows per rayon task.
const CHUNK: usize = 128;

/// A Gaussian mixture p(x₀) = Σ_k w_k N(μ_k, Σ_k) in D dimensions.
#[derive(Debug, Clone)]
pub struct MixtureModel {
    log_w: Vec<f64>,
    means: Array2<f64>,
    covs: Vec<Array2<f64>>,
    lam: Vec<Array1<f64>>,
    u: Vec<Array2<f64>>,
}

/// Per-row evaluation at one σ̃: log responsibilities and per-component posterior means.
struct Eval {
    log_r: Array2<f64>,
    m: Vec<Array2<f64>>,
}

impl MixtureModel {
    /// A mixture from weights (normalised here), means [K, D] and SPD covariances [K][D, D].
    pub fn new(weights: &[f64], means: Array2<f64>, covs: Vec<Array2<f64>>) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.nrows() != k || covs.len() != k {
            return Err(SamplerError::Shape(format!(
                "{} weights, {} means, {} covariances",
                k,
                means.nrows(),
                covs.len()
            )));
        }
        let d = means.ncols();
        let total: f64 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            if !(*w > 0.0 && w.is_finite()) {
                return Err(SamplerError::invalid(
                    &format!("weights[{i}]"),
                    w,
                    "must be positive and finite",
                ));
            }
        }
        for (i, c) in covs.iter().enumerate() {
            if c.shape() != [d, d] {
                return Err(SamplerError::Shape(format!(
                    "covs[{i}] is {:?}, expected [{d}, {d}]",
                    c.shape()
                )));
            }
            let asym = (c - &c.t()).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if asym > 1e-10 * (1.0 + c.iter().fold(0.0f64, |m, v| m.max(v.abs())))
                || linalg::cholesky(c).is_none()
            {
                return Err(SamplerError::invalid(
                    &format!("covs[{i}]"),
                    "matrix",
                    "not symmetric positive definite",
                ));
            }
        }
        let log_w = weights.iter().map(|w| (w / total).ln()).collect();
        Ok(Self::from_parts(log_w, means, covs, 0.0))
    }

    /// Build without validation; eigenvalues below `floor`·max are raised to it (for
    /// posteriors of noiseless measurements, which are degenerate).
    fn from_parts(log_w: Vec<f64>, means: Array2<f64>, covs: Vec<Array2<f64>>, floor: f64) -> Self {
        let mut lam = Vec::new();
        let mut u = Vec::new();
        for c in &covs {
            let (l, v) = linalg::sym_eigen(c);
            let top = l.iter().fold(0.0f64, |m, x| m.max(*x));
            lam.push(l.mapv(|x| x.max(floor * top).max(1e-300)));
            u.push(v);
        }
        MixtureModel {
            log_w,
            means,
            covs,
            lam,
            u,
        }
    }

    /// Dimension D.
    pub fn dim(&self) -> usize {
        self.means.ncols()
    }
    /// Number of components K.
    pub fn n_components(&self) -> usize {
        self.log_w.len()
    }
    /// Normalised weights w_k.
    pub fn weights(&self) -> Vec<f64> {
        self.log_w.iter().map(|l| l.exp()).collect()
    }
    /// Means [K, D].
    pub fn means(&self) -> &Array2<f64> {
        &self.means
    }
    /// Covariances Σ_k.
    pub fn covs(&self) -> &[Array2<f64>] {
        &self.covs
    }
    /// Component k alone: p(x₀ | c = k).
    pub fn component(&self, k: usize) -> Result<MixtureModel> {
        if k >= self.n_components() {
            return Err(SamplerError::invalid(
                "class",
                k,
                "no such mixture component",
            ));
        }
        Ok(MixtureModel {
            log_w: vec![0.0],
            means: self.means.slice(s![k..k + 1, ..]).to_owned(),
            covs: vec![self.covs[k].clone()],
            lam: vec![self.lam[k].clone()],
            u: vec![self.u[k].clone()],
        })
    }

    fn eval_chunk(&self, x: &Array2<f64>, sigma: f64) -> Eval {
        let (b, d) = (x.nrows(), x.ncols());
        let s2 = sigma * sigma;
        let kk = self.n_components();
        let mut log_r = Array2::<f64>::zeros((b, kk));
        let mut m = Vec::with_capacity(kk);
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        for k in 0..kk {
            let z = (x - &self.means.row(k)).dot(&self.u[k]);
            let var = self.lam[k].mapv(|l| l + s2);
            let logdet: f64 = var.iter().map(|v| v.ln()).sum();
            let shrink = &self.lam[k] / &var;
            for i in 0..b {
                let q: f64 = z
                    .row(i)
                    .iter()
                    .zip(var.iter())
                    .map(|(z, v)| z * z / v)
                    .sum();
                log_r[[i, k]] = self.log_w[k] - 0.5 * (q + logdet + d as f64 * ln2pi);
            }
            m.push((z * &shrink).dot(&self.u[k].t()) + self.means.row(k));
        }
        for mut row in log_r.outer_iter_mut() {
            let mx = row.iter().fold(f64::NEG_INFINITY, |a, v| a.max(*v));
            let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            row.mapv_inplace(|v| v - lse);
        }
        Eval { log_r, m }
    }

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

    /// Posterior responsibilities p(c = k | x̃) at noise level σ̃, rows [B, K].
    pub fn responsibilities(&self, x: &Array2<f64>, sigma: f64) -> Array2<f64> {
        self.par_rows(x, self.n_components(), |c, _| {
            self.eval_chunk(c, sigma).log_r.mapv(f64::exp)
        })
    }

    /// The most likely component of each clean sample (σ̃ = 0).
    pub fn classify(&self, x: &Array2<f64>) -> Vec<usize> {
        let r = self.responsibilities(x, 0.0);
        r.outer_iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |a, (k, v)| if *v > a.1 { (k, *v) } else { a },
                    )
                    .0
            })
            .collect()
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
                for k in 0..self.n_components() {
                    let shrink = self.lam[k].mapv(|l| l / (l + s2));
                    let within = (vc.dot(&self.u[k]) * &shrink).dot(&self.u[k].t());
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

    /// Posterior covariance Cov[x₀ | x̃] of one row (D×D), for tests and diagnostics.
    pub fn posterior_cov_row(&self, x: &Array1<f64>, sigma: f64) -> Array2<f64> {
        let d = self.dim();
        let eye = Array2::<f64>::eye(d);
        let xs = Array2::from_shape_fn((d, d), |(_, j)| x[j]);
        let (_, jv) = self.denoise_vjp_rows(&xs, sigma, &eye);
        jv * sigma * sigma
    }

    /// Exact draws of x₀ (σ̃ = 0) or x̃ = x₀ + σ̃ε: row i keyed by (seed, first_index + i).
    pub fn sample_rows(&self, n: usize, sigma: f64, seed: u64, first_index: u64) -> Array2<f64> {
        let d = self.dim();
        let w = self.weights();
        let rows: Vec<Vec<f64>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut rng = stream_rng(seed, first_index + i as u64, streams::MIXTURE);
                let u: f64 = rng.gen();
                let mut acc = 0.0;
                let mut k = w.len() - 1;
                for (j, wj) in w.iter().enumerate() {
                    acc += wj;
                    if u < acc {
                        k = j;
                        break;
                    }
                }
                let z: Vec<f64> = (0..d)
                    .map(|_| rand_distr::StandardNormal.sample(&mut rng))
                    .collect();
                let e: Vec<f64> = (0..d)
                    .map(|_| rand_distr::StandardNormal.sample(&mut rng))
                    .collect();
                let mut x = self.means.row(k).to_owned();
                for (j, zj) in z.iter().enumerate() {
                    x.scaled_add(self.lam[k][j].sqrt() * zj, &self.u[k].column(j));
                }
                x.iter().zip(e).map(|(x, e)| x + sigma * e).collect()
            })
            .collect();
        Array2::from_shape_fn((n, d), |(i, j)| rows[i][j])
    }

    /// The exact posterior mixture p(x₀ | y) for y = A·x₀ + n, n ~ N(0, s²I): components
    /// N(μ_k + K_k(y − Aμ_k), Σ_k − K_k A Σ_k), K_k = Σ_k Aᵀ S_k⁻¹, S_k = AΣ_kAᵀ + s²I,
    /// weights ∝ w_k N(y; Aμ_k, S_k) (Bishop 2006 §2.3.3).
    pub fn posterior(
        &self,
        a: &Array2<f64>,
        y: &Array1<f64>,
        noise_std: f64,
    ) -> Result<MixtureModel> {
        let d = self.dim();
        let m = a.nrows();
        if a.ncols() != d || y.len() != m {
            return Err(SamplerError::Shape(format!(
                "A is {:?}, y has {} entries, dimension {d}",
                a.shape(),
                y.len()
            )));
        }
        let mut log_w = Vec::new();
        let mut means = Array2::<f64>::zeros((self.n_components(), d));
        let mut covs = Vec::new();
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        for k in 0..self.n_components() {
            let asig = a.dot(&self.covs[k]);
            let sk = asig.dot(&a.t()) + Array2::<f64>::eye(m) * noise_std * noise_std;
            let l = linalg::cholesky(&sk).ok_or_else(|| {
                SamplerError::Numerical(format!("A Σ_{k} Aᵀ + s²I is not positive definite"))
            })?;
            let resid = y - &a.dot(&self.means.row(k));
            let sol = linalg::chol_solve(&l, &resid);
            let gain_t = linalg::chol_solve_mat(&l, &asig);
            let mean = &self.means.row(k) + &gain_t.t().dot(&resid);
            let mut cov = &self.covs[k] - &asig.t().dot(&gain_t);
            cov = (&cov + &cov.t()) * 0.5;
            log_w.push(
                self.log_w[k]
                    - 0.5 * (resid.dot(&sol) + linalg::chol_logdet(&l) + m as f64 * ln2pi),
            );
            means.row_mut(k).assign(&mean);
            covs.push(cov);
        }
        let mx = log_w.iter().fold(f64::NEG_INFINITY, |a, v| a.max(*v));
        let lse = mx + log_w.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        let log_w = log_w.iter().map(|v| v - lse).collect();
        Ok(Self::from_parts(log_w, means, covs, 1e-12))
    }
}

impl TryFrom<&tweedie_core::mixture::GaussianMixture> for MixtureModel {
    type Error = SamplerError;
    /// The same mixture (weights, means, covariances) in the batched eigenbasis form.
    fn try_from(g: &tweedie_core::mixture::GaussianMixture) -> Result<Self> {
        let covs = g.covs().outer_iter().map(|c| c.to_owned()).collect();
        MixtureModel::new(
            g.weights().as_slice().unwrap_or(&g.weights().to_vec()),
            g.means().clone(),
            covs,
        )
    }
}

impl<S: State> Model<S> for MixtureModel {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        x.with_rows(&self.denoise_rows(&x.to_rows(), sigma))
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        Capabilities {
            vjp: Some(self),
            learned_variance: None,
            exact_posterior: Some(self),
            exact_marginal: Some(self),
            sigma_rounding: None,
        }
    }
}

impl<S: State> Vjp<S> for MixtureModel {
    fn vjp(&self, x: &S, sigma: f64, v: &S) -> Result<(S, S)> {
        let (d, jv) = self.denoise_vjp_rows(&x.to_rows(), sigma, &v.to_rows());
        Ok((x.with_rows(&d)?, x.with_rows(&jv)?))
    }
}

impl<S: State> ExactPosterior<S> for MixtureModel {
    fn posterior(&self, op: &dyn ForwardModel, y: &Array1<f64>) -> Result<Box<dyn Model<S>>> {
        let m = op
            .matrix()
            .and_then(|a| self.posterior(&a, y, op.noise_std()))?;
        Ok(Box::new(m))
    }
}

impl<S: State> ExactMarginal<S> for MixtureModel {
    fn draw(&self, template: &S, sigma: f64, seed: u64, first: u64) -> Result<S> {
        if template.sample_len() != self.dim() {
            return Err(SamplerError::Shape(format!(
                "state has {} elements per sample, mixture dimension {}",
                template.sample_len(),
                self.dim()
            )));
        }
        template.with_rows(&self.sample_rows(template.batch(), sigma, seed, first))
    }
}

impl<S: State> ClassModel<S> for MixtureModel {
    /// Class k is component k: D(x̃; σ̃, k) is the denoiser of N(μ_k, Σ_k).
    fn denoise_class(&self, x: &S, sigma: f64, class: Option<usize>) -> Result<S> {
        match class {
            None => self.denoise(x, sigma),
            Some(k) => self.component(k)?.denoise(x, sigma),
        }
    }
    fn class_capabilities(&self) -> ClassCapabilities<'_, S> {
        ClassCapabilities::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn mix() -> MixtureModel {
        MixtureModel::new(
            &[0.3, 0.7],
            array![[-1.0, 0.5], [2.0, -1.0]],
            vec![
                array![[0.5, 0.2], [0.2, 0.3]],
                array![[0.2, -0.05], [-0.05, 0.4]],
            ],
        )
        .unwrap()
    }

    #[test]
    fn vjp_matches_finite_differences_and_tweedie_covariance() {
        let m = mix();
        let x = array![[0.3, -0.2], [1.5, 0.4]];
        for &sigma in &[0.05, 0.7, 3.0] {
            let v = array![[0.7, -0.3], [-0.2, 1.1]];
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
                let c = &m.covs()[k] + &(Array2::<f64>::eye(2) * sigma * sigma);
                let det = c[[0, 0]] * c[[1, 1]] - c[[0, 1]] * c[[1, 0]];
                let (da, db) = (a - m.means()[[k, 0]], b - m.means()[[k, 1]]);
                let q =
                    (c[[1, 1]] * da * da - 2.0 * c[[0, 1]] * da * db + c[[0, 0]] * db * db) / det;
                p += m.weights()[k] * (-0.5 * q).exp() / (2.0 * std::f64::consts::PI * det.sqrt());
            }
            p.ln()
        };
        let x0 = array![[0.4, 0.1]];
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
        let y = array![0.4, 0.1];
        let s = 0.6;
        let post = m.posterior(&Array2::eye(2), &y, s).unwrap();
        let mean: Array1<f64> = post
            .weights()
            .iter()
            .enumerate()
            .map(|(k, w)| &post.means().row(k) * *w)
            .fold(Array1::zeros(2), |a, b| a + b);
        let d = m.denoise_rows(&y.clone().insert_axis(Axis(0)), s);
        assert!((mean - d.row(0)).iter().all(|e| e.abs() < 1e-12));
        assert!(MixtureModel::new(
            &[1.0],
            array![[0.0, 0.0]],
            vec![array![[1.0, 2.0], [2.0, 1.0]]]
        )
        .is_err());
    }
}
