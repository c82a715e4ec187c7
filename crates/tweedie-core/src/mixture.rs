//! Analytic Gaussian mixture: the ground truth of every test.
//!
//! p(x₀) = Σ_k w_k·N(x₀; μ_k, Σ_k). Under x_t = α·x₀ + σ·ε the marginal is again a mixture,
//! p_t = Σ_k w_k·N(αμ_k, α²Σ_k + σ²I), and so is the posterior of x₀ given any linear-Gaussian
//! observation y = A·x₀ + n, n ~ N(0, Σ_n) (Bishop 2006, §2.3.3; the denoiser is the case
//! A = αI, Σ_n = σ²I, y = x_t). [`spectral`](self) adds the batched EDM-form evaluation that
//! samplers use (denoiser, vector–Jacobian product) and exact keyed draws of x̃ = x₀ + σ̃·ε.

use crate::error::Invalid;
use crate::error::{CoreError, Result};
use crate::linalg::{
    cho_solve_mat, cholesky, log_det_chol, solve_lower_mat, sym_eigen, symmetrize,
};
use crate::process::Process;
use crate::rng::{stream_rng, streams};
use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use spectral::Eigenbasis;
use std::f64::consts::PI;

mod spectral;

/// Relative eigenvalue floor of posterior covariances: a noiseless measurement makes them
/// singular, and the batched evaluation divides by λ + σ̃².
const POSTERIOR_FLOOR: f64 = 1e-12;

/// Names accepted by [`preset`].
pub const PRESETS: [&str; 2] = ["gmm2d", "gmm64d"];

/// A Gaussian mixture in D dimensions with full covariances.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMixture {
    weights: Array1<f64>,
    means: Array2<f64>,
    covs: Array3<f64>,
    chols: Vec<Array2<f64>>,
    eigen: Vec<Eigenbasis>,
}

/// TOML/serde form of a mixture: `weights = [...]`, `means = [[...], ...]`,
/// `covs = [[[...], ...], ...]` (K weights, K×D means, K×D×D covariances).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSpec {
    /// Mixture weights w_k (≥ 0, summing to 1).
    pub weights: Vec<f64>,
    /// Means μ_k, one row of length D per component.
    pub means: Vec<Vec<f64>>,
    /// Covariances Σ_k, one symmetric positive-definite D×D matrix per component.
    pub covs: Vec<Vec<Vec<f64>>>,
}

/// Component-wise Gaussian conditioning of x₀ on y = A·x₀ + n: gain G_k, posterior mean offset
/// and covariance, and the Cholesky factor of the evidence covariance S_k = AΣ_kAᵀ + Σ_n.
struct Conditioned {
    gain: Array2<f64>,
    post_cov: Array2<f64>,
    s_chol: Array2<f64>,
    a_mu: Array1<f64>,
}

/// log N(y_i; m, S) for every row y_i of `y` (shape [N, M]), S = L·Lᵀ.
fn log_normal_rows(y: ArrayView2<f64>, m: ArrayView1<f64>, l: ArrayView2<f64>) -> Array1<f64> {
    let d = m.len() as f64;
    let mut z = (&y - &m.insert_axis(Axis(0))).reversed_axes().to_owned();
    solve_lower_mat(l, &mut z);
    let c = -0.5 * (d * (2.0 * PI).ln() + log_det_chol(l));
    z.map_axis(Axis(0), |col| c - 0.5 * col.dot(&col))
}

/// Row-wise softmax of log-weights [N, K] in place; returns log Σ exp per row.
fn softmax_rows(logw: &mut Array2<f64>) -> Array1<f64> {
    let mut lse = Array1::zeros(logw.nrows());
    for (mut row, out) in logw.rows_mut().into_iter().zip(lse.iter_mut()) {
        let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
        *out = m + s.ln();
    }
    lse
}

impl GaussianMixture {
    /// Validates and builds: weights finite, ≥ 0, summing to 1 (±1e-6, then renormalised);
    /// means [K, D] finite; covariances [K, D, D] symmetric positive definite.
    pub fn new(weights: Array1<f64>, means: Array2<f64>, covs: Array3<f64>) -> Result<Self> {
        let k = weights.len();
        if k == 0 {
            return Err(CoreError::invalid(
                "weights",
                "[]",
                "need at least one component",
            ));
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(CoreError::invalid(
                &format!("weights[{i}]"),
                w,
                "must be finite and >= 0",
            ));
        }
        let total = weights.sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(CoreError::invalid(
                "weights",
                format!("{weights} (sum {total})"),
                "must sum to 1",
            ));
        }
        if means.nrows() != k || means.ncols() == 0 {
            return Err(CoreError::Shape(format!(
                "means must be [{k}, D>0] (one row per weight), got {:?}",
                means.shape()
            )));
        }
        let d = means.ncols();
        if let Some(((i, j), v)) = means.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(CoreError::invalid(
                &format!("means[{i}][{j}]"),
                v,
                "must be finite",
            ));
        }
        if covs.shape() != [k, d, d] {
            return Err(CoreError::Shape(format!(
                "covs must be [{k}, {d}, {d}], got {:?}",
                covs.shape()
            )));
        }
        Self::factored(&weights / total, means, covs, 0.0)
    }

    /// Builds from checked parts: Cholesky factors (draws, densities) and eigenbases (batched
    /// denoiser) of every covariance. With `floor` = 0 each covariance must be positive
    /// definite; with `floor` > 0 a singular one is factored with its eigenvalues raised to
    /// `floor`·λ_max.
    fn factored(
        weights: Array1<f64>,
        means: Array2<f64>,
        covs: Array3<f64>,
        floor: f64,
    ) -> Result<Self> {
        let mut chols = Vec::with_capacity(weights.len());
        let mut eigen = Vec::with_capacity(weights.len());
        for (i, cov) in covs.outer_iter().enumerate() {
            let name = format!("covs[{i}]");
            let chol = cholesky(cov, &name);
            let e = Eigenbasis::of(cov, &name, floor)?;
            chols.push(match chol {
                Ok(l) => l,
                Err(_) if floor > 0.0 => cholesky(e.floored_cov().view(), &name)?,
                Err(err) => return Err(err),
            });
            eigen.push(e);
        }
        Ok(GaussianMixture {
            weights,
            means,
            covs,
            chols,
            eigen,
        })
    }

    /// Builds from the serde form, with the same validation as [`GaussianMixture::new`].
    pub fn from_spec(spec: &MixtureSpec) -> Result<Self> {
        let k = spec.weights.len();
        if spec.means.len() != k {
            return Err(CoreError::invalid(
                "means",
                format!("{} rows", spec.means.len()),
                format!("need one per weight ({k})"),
            ));
        }
        if spec.covs.len() != k {
            return Err(CoreError::invalid(
                "covs",
                format!("{} matrices", spec.covs.len()),
                format!("need one per weight ({k})"),
            ));
        }
        let d = spec.means.first().map_or(0, |m| m.len());
        let mut means = Array2::zeros((k, d));
        let mut covs = Array3::zeros((k, d, d));
        for i in 0..k {
            if spec.means[i].len() != d {
                return Err(CoreError::invalid(
                    &format!("means[{i}]"),
                    format!("length {}", spec.means[i].len()),
                    format!("expected {d}"),
                ));
            }
            means
                .row_mut(i)
                .assign(&Array1::from(spec.means[i].clone()));
            if spec.covs[i].len() != d || spec.covs[i].iter().any(|r| r.len() != d) {
                return Err(CoreError::invalid(
                    &format!("covs[{i}]"),
                    "wrong shape",
                    format!("expected {d}×{d}"),
                ));
            }
            for (r, row) in spec.covs[i].iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    covs[[i, r, c]] = *v;
                }
            }
        }
        GaussianMixture::new(Array1::from(spec.weights.clone()), means, covs)
    }

    /// The serde form.
    pub fn to_spec(&self) -> MixtureSpec {
        MixtureSpec {
            weights: self.weights.to_vec(),
            means: self.means.rows().into_iter().map(|r| r.to_vec()).collect(),
            covs: self
                .covs
                .outer_iter()
                .map(|c| c.rows().into_iter().map(|r| r.to_vec()).collect())
                .collect(),
        }
    }

    /// Parses and validates a TOML mixture.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let spec: MixtureSpec = toml::from_str(s).map_err(|e| CoreError::Parse(e.to_string()))?;
        Self::from_spec(&spec)
    }

    /// Reads, parses and validates a TOML mixture file.
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let p = path.as_ref();
        let text = std::fs::read_to_string(p).map_err(|e| CoreError::Io {
            path: p.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            CoreError::Parse(m) => CoreError::Parse(format!("{}: {m}", p.display())),
            other => other,
        })
    }

    /// TOML text of this mixture.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(&self.to_spec()).map_err(|e| CoreError::Parse(e.to_string()))
    }

    /// Mixture weights w_k.
    pub fn weights(&self) -> &Array1<f64> {
        &self.weights
    }
    /// Means μ_k, [K, D].
    pub fn means(&self) -> &Array2<f64> {
        &self.means
    }
    /// Covariances Σ_k, [K, D, D].
    pub fn covs(&self) -> &Array3<f64> {
        &self.covs
    }
    /// Covariance Σ_k of component k (panics when k ≥ K, like indexing).
    pub fn cov(&self, k: usize) -> ArrayView2<'_, f64> {
        self.covs.index_axis(Axis(0), k)
    }
    /// Component k alone, p(x₀ | c = k), as a one-component mixture.
    pub fn component(&self, k: usize) -> Result<GaussianMixture> {
        if k >= self.n_components() {
            return Err(CoreError::invalid(
                "class",
                k,
                format!("no such mixture component (K = {})", self.n_components()),
            ));
        }
        Ok(GaussianMixture {
            weights: Array1::ones(1),
            means: self.means.slice(s![k..k + 1, ..]).to_owned(),
            covs: self.covs.slice(s![k..k + 1, .., ..]).to_owned(),
            chols: vec![self.chols[k].clone()],
            eigen: vec![self.eigen[k].clone()],
        })
    }
    /// Dimension D.
    pub fn dim(&self) -> usize {
        self.means.ncols()
    }
    /// Number of components K.
    pub fn n_components(&self) -> usize {
        self.weights.len()
    }
    /// Mean of the mixture Σ_k w_k μ_k.
    pub fn mean(&self) -> Array1<f64> {
        self.weights.dot(&self.means)
    }
    /// Covariance of the mixture Σ_k w_k (Σ_k + μ_kμ_kᵀ) − μμᵀ.
    pub fn covariance(&self) -> Array2<f64> {
        let m = self.mean();
        let d = self.dim();
        let mut c = Array2::zeros((d, d));
        for k in 0..self.n_components() {
            let mk = self.means.row(k);
            let outer = mk
                .to_owned()
                .insert_axis(Axis(1))
                .dot(&mk.insert_axis(Axis(0)));
            c = c + (&self.covs.slice(s![k, .., ..]) + &outer) * self.weights[k];
        }
        c - m.clone().insert_axis(Axis(1)).dot(&m.insert_axis(Axis(0)))
    }

    fn check_dim(&self, x: &ArrayView2<f64>, what: &str) -> Result<()> {
        if x.ncols() != self.dim() {
            return Err(CoreError::Shape(format!(
                "{what} must be [N, {}], got {:?}",
                self.dim(),
                x.shape()
            )));
        }
        Ok(())
    }

    /// Draw `index` of generator `seed` (stream MIXTURE): the component k, then
    /// x̃ = μ_k + L_k·z + σ̃·e with z, e ~ N(0, I) (e only drawn when σ̃ ≠ 0).
    fn draw(&self, seed: u64, index: u64, sigma: f64) -> (Array1<f64>, usize) {
        let d = self.dim();
        let mut rng = stream_rng(seed, index, streams::MIXTURE);
        let u: f64 = rng.gen();
        let mut acc = 0.0;
        let k = self
            .weights
            .iter()
            .position(|w| {
                acc += w;
                u < acc
            })
            .unwrap_or(self.n_components() - 1);
        let z = Array1::from_shape_fn(d, |_| rng.sample(StandardNormal));
        let mut x = &self.means.row(k) + &self.chols[k].dot(&z);
        if sigma != 0.0 {
            x.iter_mut()
                .for_each(|v| *v += sigma * rng.sample::<f64, _>(StandardNormal));
        }
        (x, k)
    }

    /// `n` samples with their component labels; sample i uses generator (seed, i, MIXTURE stream),
    /// so it does not depend on n.
    pub fn sample_with_labels(&self, n: usize, seed: u64) -> (Array2<f64>, Vec<usize>) {
        let mut out = Array2::zeros((n, self.dim()));
        let mut labels = Vec::with_capacity(n);
        for (i, mut row) in out.rows_mut().into_iter().enumerate() {
            let (x, k) = self.draw(seed, i as u64, 0.0);
            row.assign(&x);
            labels.push(k);
        }
        (out, labels)
    }

    /// `n` samples x₀ ~ p, [n, D].
    pub fn sample(&self, n: usize, seed: u64) -> Array2<f64> {
        self.sample_with_labels(n, seed).0
    }

    /// Exact draws of x₀ (σ̃ = 0) or x̃ = x₀ + σ̃·ε, [n, D]: row i is draw `first_index + i` of
    /// `seed`, so `sample_rows(n, 0.0, seed, 0)` equals `sample(n, seed)`. Rows in parallel.
    pub fn sample_rows(&self, n: usize, sigma: f64, seed: u64, first_index: u64) -> Array2<f64> {
        let rows: Vec<Array1<f64>> = (0..n)
            .into_par_iter()
            .map(|i| self.draw(seed, first_index + i as u64, sigma).0)
            .collect();
        let mut out = Array2::zeros((n, self.dim()));
        for (mut row, x) in out.rows_mut().into_iter().zip(rows) {
            row.assign(&x);
        }
        out
    }

    /// The law of x_t = α(t)·x₀ + σ(t)·ε: components N(αμ_k, α²Σ_k + σ²I).
    pub fn marginal(&self, process: &dyn Process, t: f64) -> Result<GaussianMixture> {
        let (a, s) = (process.alpha(t), process.sigma(t));
        let d = self.dim();
        let mut covs = &self.covs * (a * a);
        for k in 0..self.n_components() {
            for i in 0..d {
                covs[[k, i, i]] += s * s;
            }
        }
        GaussianMixture::new(self.weights.clone(), &self.means * a, covs)
    }

    /// log w_k + log N(x_i; μ_k, Σ_k), [N, K].
    fn joint_log(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut out = Array2::zeros((x.nrows(), self.n_components()));
        for k in 0..self.n_components() {
            let lw = self.weights[k].ln();
            out.column_mut(k)
                .assign(&(log_normal_rows(x, self.means.row(k), self.chols[k].view()) + lw));
        }
        out
    }

    /// log p(x_i) for every row of x [N, D].
    pub fn log_prob(&self, x: ArrayView2<f64>) -> Result<Array1<f64>> {
        self.check_dim(&x, "x")?;
        let mut lw = self.joint_log(x);
        Ok(softmax_rows(&mut lw))
    }

    /// Responsibilities r_ik = p(k | x_i), [N, K].
    pub fn responsibilities(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        self.check_dim(&x, "x")?;
        let mut lw = self.joint_log(x);
        softmax_rows(&mut lw);
        Ok(lw)
    }

    /// Most likely component argmax_k p(k | x_i) of every row.
    pub fn component_of(&self, x: ArrayView2<f64>) -> Result<Vec<usize>> {
        let lw = self.joint_log({
            self.check_dim(&x, "x")?;
            x
        });
        Ok(lw
            .rows()
            .into_iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |b, (k, &v)| if v > b.1 { (k, v) } else { b },
                    )
                    .0
            })
            .collect())
    }

    /// Score ∇log p(x_i) = −Σ_k r_ik·Σ_k⁻¹(x_i − μ_k), [N, D].
    pub fn score(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        let r = self.responsibilities(x)?;
        let mut out = Array2::zeros(x.raw_dim());
        for k in 0..self.n_components() {
            let diff = (&x - &self.means.row(k).insert_axis(Axis(0))).reversed_axes();
            let g = cho_solve_mat(self.chols[k].view(), diff.view()).reversed_axes();
            out = out - &g * &r.column(k).insert_axis(Axis(1));
        }
        Ok(out)
    }

    /// log p_t(x_t) for every row (the marginal at time t of `process`).
    pub fn log_prob_t(
        &self,
        x_t: ArrayView2<f64>,
        process: &dyn Process,
        t: f64,
    ) -> Result<Array1<f64>> {
        self.marginal(process, t)?.log_prob(x_t)
    }

    /// ∇log p_t(x_t) for every row.
    pub fn score_t(
        &self,
        x_t: ArrayView2<f64>,
        process: &dyn Process,
        t: f64,
    ) -> Result<Array2<f64>> {
        self.marginal(process, t)?.score(x_t)
    }

    /// Conditions each component on y = A·x₀ + n, n ~ N(0, Σ_n) (A: [M, D], Σ_n: [M, M]).
    /// Joseph form (I−GA)Σ(I−GA)ᵀ + GΣ_nGᵀ keeps the posterior covariance symmetric PSD.
    fn condition(
        &self,
        a: ArrayView2<f64>,
        noise_cov: ArrayView2<f64>,
        noise_name: &str,
    ) -> Result<Vec<Conditioned>> {
        let d = self.dim();
        if a.ncols() != d || noise_cov.shape() != [a.nrows(), a.nrows()] {
            return Err(CoreError::Shape(format!(
                "A must be [M, {d}] and the noise covariance [M, M], got {:?} and {:?}",
                a.shape(),
                noise_cov.shape()
            )));
        }
        let eye = Array2::<f64>::eye(d);
        (0..self.n_components())
            .map(|k| {
                let cov = self.covs.slice(s![k, .., ..]);
                let a_cov = a.dot(&cov); // [M, D]
                let s_mat = symmetrize(&(a_cov.dot(&a.t()) + noise_cov));
                let s_chol = cholesky(s_mat.view(), noise_name)?;
                let gain = cho_solve_mat(s_chol.view(), a_cov.view()).reversed_axes(); // Σ Aᵀ S⁻¹, [D, M]
                let i_ga = &eye - &gain.dot(&a);
                let post = i_ga.dot(&cov).dot(&i_ga.t()) + gain.dot(&noise_cov).dot(&gain.t());
                Ok(Conditioned {
                    gain,
                    post_cov: symmetrize(&post),
                    s_chol,
                    a_mu: a.dot(&self.means.row(k)),
                })
            })
            .collect()
    }

    /// For each row y_i: responsibilities [N, K] and per-component posterior means [K, N, D].
    fn posterior_parts(
        &self,
        y: ArrayView2<f64>,
        parts: &[Conditioned],
    ) -> (Array2<f64>, Array3<f64>) {
        let (n, d, kk) = (y.nrows(), self.dim(), self.n_components());
        let mut lw = Array2::zeros((n, kk));
        let mut means = Array3::zeros((kk, n, d));
        for (k, c) in parts.iter().enumerate() {
            lw.column_mut(k).assign(
                &(log_normal_rows(y, c.a_mu.view(), c.s_chol.view()) + self.weights[k].ln()),
            );
            let innov = &y - &c.a_mu.view().insert_axis(Axis(0));
            let m = innov.dot(&c.gain.t()) + self.means.row(k).insert_axis(Axis(0));
            means.slice_mut(s![k, .., ..]).assign(&m);
        }
        softmax_rows(&mut lw);
        (lw, means)
    }

    fn denoise_parts(
        &self,
        x_t: ArrayView2<f64>,
        process: &dyn Process,
        t: f64,
    ) -> Result<(Array2<f64>, Array3<f64>, Vec<Conditioned>)> {
        self.check_dim(&x_t, "x_t")?;
        let (a, s) = (process.alpha(t), process.sigma(t));
        let d = self.dim();
        let parts = self.condition(
            (Array2::<f64>::eye(d) * a).view(),
            (Array2::<f64>::eye(d) * (s * s)).view(),
            "α²Σ_k + σ²I",
        )?;
        let (r, m) = self.posterior_parts(x_t, &parts);
        Ok((r, m, parts))
    }

    /// Denoiser E[x₀ | x_t] = Σ_k r_k(x_t)·(μ_k + αΣ_k(α²Σ_k + σ²I)⁻¹(x_t − αμ_k)), [N, D].
    pub fn denoiser(
        &self,
        x_t: ArrayView2<f64>,
        process: &dyn Process,
        t: f64,
    ) -> Result<Array2<f64>> {
        let (r, m, _) = self.denoise_parts(x_t, process, t)?;
        let mut out = Array2::zeros(x_t.raw_dim());
        for k in 0..self.n_components() {
            out = out + &m.slice(s![k, .., ..]) * &r.column(k).insert_axis(Axis(1));
        }
        Ok(out)
    }

    /// Posterior covariance Cov[x₀ | x_t] = Σ_k r_k(C_k + m_k m_kᵀ) − m mᵀ, [N, D, D].
    pub fn posterior_cov(
        &self,
        x_t: ArrayView2<f64>,
        process: &dyn Process,
        t: f64,
    ) -> Result<Array3<f64>> {
        let (r, m, parts) = self.denoise_parts(x_t, process, t)?;
        let (n, d) = (x_t.nrows(), self.dim());
        let mut out = Array3::zeros((n, d, d));
        for i in 0..n {
            let mut mean = Array1::<f64>::zeros(d);
            let mut second = Array2::<f64>::zeros((d, d));
            for (k, c) in parts.iter().enumerate() {
                let mk = m.slice(s![k, i, ..]);
                let outer = mk
                    .to_owned()
                    .insert_axis(Axis(1))
                    .dot(&mk.insert_axis(Axis(0)));
                second = second + (&c.post_cov + &outer) * r[[i, k]];
                mean.scaled_add(r[[i, k]], &mk);
            }
            let mm = mean
                .clone()
                .insert_axis(Axis(1))
                .dot(&mean.insert_axis(Axis(0)));
            out.slice_mut(s![i, .., ..]).assign(&(second - mm));
        }
        Ok(out)
    }

    /// Exact posterior p(x₀ | y) for y = A·x₀ + n, n ~ N(0, Σ_n): a mixture with weights
    /// ∝ w_k·N(y; Aμ_k, AΣ_kAᵀ + Σ_n), means μ_k + G_k(y − Aμ_k), covariances (I − G_kA)Σ_k,
    /// G_k = Σ_kAᵀ(AΣ_kAᵀ + Σ_n)⁻¹ (Bishop 2006, eqs. 2.113–2.117).
    ///
    /// Σ_n may be singular (a noiseless measurement, Σ_n = 0) as long as AΣ_kAᵀ + Σ_n is
    /// positive definite; the posterior covariances are then singular, and their eigenvalues
    /// below 1e-12·λ_max are raised to that floor for evaluation and draws.
    pub fn posterior_given_measurement(
        &self,
        a: ArrayView2<f64>,
        y: ArrayView1<f64>,
        noise_cov: ArrayView2<f64>,
    ) -> Result<GaussianMixture> {
        if y.len() != a.nrows() {
            return Err(CoreError::Shape(format!(
                "y has length {} but A has {} rows",
                y.len(),
                a.nrows()
            )));
        }
        check_psd(noise_cov, "noise_cov")?;
        let parts = self.condition(a, noise_cov, "AΣ_kAᵀ + Σ_n")?;
        let (r, m) = self.posterior_parts(y.insert_axis(Axis(0)), &parts);
        let d = self.dim();
        let mut covs = Array3::zeros((self.n_components(), d, d));
        for (k, c) in parts.iter().enumerate() {
            covs.slice_mut(s![k, .., ..]).assign(&c.post_cov);
        }
        GaussianMixture::factored(
            r.row(0).to_owned(),
            m.index_axis(Axis(1), 0).to_owned(),
            covs,
            POSTERIOR_FLOOR,
        )
    }

    /// [`posterior_given_measurement`](Self::posterior_given_measurement) for white noise,
    /// Σ_n = s²I with s = `noise_std` ≥ 0.
    pub fn posterior(
        &self,
        a: &Array2<f64>,
        y: &Array1<f64>,
        noise_std: f64,
    ) -> Result<GaussianMixture> {
        if !(noise_std.is_finite() && noise_std >= 0.0) {
            return Err(CoreError::invalid(
                "noise_std",
                noise_std,
                "must be finite and >= 0",
            ));
        }
        let noise_cov = Array2::<f64>::eye(a.nrows()) * (noise_std * noise_std);
        self.posterior_given_measurement(a.view(), y.view(), noise_cov.view())
    }
}

/// Checks that a covariance is symmetric positive semi-definite (eigenvalues ≥ −1e-12·max|λ|).
fn check_psd(c: ArrayView2<f64>, name: &str) -> Result<()> {
    let (lam, _) = sym_eigen(c, name)?;
    let scale = lam.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    match lam.iter().find(|&&v| v < -1e-12 * scale) {
        Some(v) => Err(CoreError::invalid(
            name,
            format!("eigenvalue {v}"),
            "must be positive semi-definite",
        )),
        None => Ok(()),
    }
}

/// A built-in mixture by name: `gmm2d` (4 components in 2-D, unequal weights and full
/// covariances) or `gmm64d` (5 components in 64-D with low-rank-plus-diagonal covariances,
/// generated from a fixed seed).
pub fn preset(name: &str) -> Result<GaussianMixture> {
    match name {
        "gmm2d" | "2d" => {
            let weights = Array1::from(vec![0.4, 0.3, 0.2, 0.1]);
            let means = ndarray::arr2(&[[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5], [2.5, -2.0]]);
            let covs = ndarray::arr3(&[
                [[0.30, 0.10], [0.10, 0.20]],
                [[0.20, -0.12], [-0.12, 0.40]],
                [[0.50, 0.00], [0.00, 0.05]],
                [[0.10, 0.05], [0.05, 0.10]],
            ]);
            GaussianMixture::new(weights, means, covs)
        }
        "gmm64d" | "64d" => {
            let (k, d, rank) = (5, 64, 4);
            let weights = Array1::from(vec![0.3, 0.25, 0.2, 0.15, 0.1]);
            let mut means = Array2::zeros((k, d));
            let mut covs = Array3::zeros((k, d, d));
            for c in 0..k {
                let mu = Array1::from(crate::rng::normal_vec(64, c as u64, 0, d));
                means.row_mut(c).assign(&(mu * 0.5));
                let b = Array2::from_shape_vec(
                    (d, rank),
                    crate::rng::normal_vec(64, c as u64, 1, d * rank),
                )
                .map_err(|e| CoreError::Shape(e.to_string()))?;
                let cov = b.dot(&b.t()) * (0.1 / rank as f64)
                    + Array2::<f64>::eye(d) * (0.02 + 0.01 * c as f64);
                covs.slice_mut(s![c, .., ..]).assign(&symmetrize(&cov));
            }
            GaussianMixture::new(weights, means, covs)
        }
        other => Err(CoreError::invalid(
            "mixture",
            other,
            format!("unknown preset; known: {}", PRESETS.join(", ")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::max_abs_diff;
    use crate::process::ProcessKind;
    use approx::assert_relative_eq;
    use ndarray::{arr1, arr2, arr3};

    fn points() -> Array2<f64> {
        arr2(&[
            [0.3, -0.2],
            [-1.5, 0.4],
            [2.2, 0.9],
            [0.1, -2.0],
            [3.0, -3.0],
        ])
    }

    /// Central-difference gradient of a scalar function of one row.
    fn fd_grad(f: impl Fn(ArrayView2<f64>) -> Array1<f64>, x: &Array2<f64>, h: f64) -> Array2<f64> {
        let mut g = Array2::zeros(x.raw_dim());
        for j in 0..x.ncols() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp.column_mut(j).mapv_inplace(|v| v + h);
            xm.column_mut(j).mapv_inplace(|v| v - h);
            g.column_mut(j)
                .assign(&((f(xp.view()) - f(xm.view())) / (2.0 * h)));
        }
        g
    }

    #[test]
    fn score_matches_finite_differences_of_log_density() {
        let gm = preset("gmm2d").unwrap();
        for (pk, t) in [
            (ProcessKind::vp(), 0.3),
            (ProcessKind::edm(), 0.5),
            (ProcessKind::flow(), 0.6),
            (ProcessKind::vp_cosine(), 0.05),
        ] {
            let p = pk.build();
            let x = points();
            let score = gm.score_t(x.view(), p.as_ref(), t).unwrap();
            let fd = fd_grad(|z| gm.log_prob_t(z, p.as_ref(), t).unwrap(), &x, 1e-5);
            assert!(
                max_abs_diff(&score, &fd)
                    < 1e-6 * (1.0 + fd.iter().fold(0.0_f64, |m, v| m.max(v.abs()))),
                "{pk:?}: {score} vs {fd}"
            );
        }
    }

    #[test]
    fn denoiser_satisfies_tweedie_and_posterior_cov_is_its_jacobian() {
        // Tweedie: ∇log p_t = (α·E[x₀|x_t] − x_t)/σ²; second order: ∂E[x₀|x_t]/∂x_t = (α/σ²)·Cov[x₀|x_t].
        let gm = preset("gmm2d").unwrap();
        for (pk, t) in [
            (ProcessKind::vp(), 0.2),
            (ProcessKind::ve(), 0.8),
            (ProcessKind::flow(), 0.4),
        ] {
            let p = pk.build();
            let (a, s) = (p.alpha(t), p.sigma(t));
            let x = points();
            let den = gm.denoiser(x.view(), p.as_ref(), t).unwrap();
            let score = gm.score_t(x.view(), p.as_ref(), t).unwrap();
            let tweedie = (&den * a - &x) / (s * s);
            assert!(
                max_abs_diff(&score, &tweedie)
                    < 1e-9 * (1.0 + score.iter().fold(0.0_f64, |m, v| m.max(v.abs()))),
                "{pk:?}"
            );
            let cov = gm.posterior_cov(x.view(), p.as_ref(), t).unwrap();
            for j in 0..2 {
                let jac_col = fd_grad(
                    |z| gm.denoiser(z, p.as_ref(), t).unwrap().column(j).to_owned(),
                    &x,
                    1e-6,
                );
                for i in 0..x.nrows() {
                    for l in 0..2 {
                        let want = a / (s * s) * cov[[i, j, l]];
                        assert!(
                            (jac_col[[i, l]] - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{pk:?} {i} {j} {l}: {} vs {want}",
                            jac_col[[i, l]]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn denoiser_matches_monte_carlo_posterior_mean() {
        // Self-normalised importance sampling with the prior as proposal; tolerance 5 standard
        // errors from the delta method.
        let gm = preset("gmm2d").unwrap();
        let p = ProcessKind::edm().build();
        let t = 1.0;
        let x_t = arr1(&[0.5, -0.8]);
        let n = 200_000;
        let x0 = gm.sample(n, 11);
        let lw = x0
            .rows()
            .into_iter()
            .map(|r| -0.5 * (&x_t - &r).mapv(|v| v * v).sum() / (t * t))
            .collect::<Vec<_>>();
        let m = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Array1<f64> = lw.iter().map(|v| (v - m).exp()).collect();
        let wsum = w.sum();
        let est = w.dot(&x0) / wsum;
        let den = gm
            .denoiser(x_t.view().insert_axis(Axis(0)), p.as_ref(), t)
            .unwrap();
        for j in 0..2 {
            let se = (w
                .iter()
                .zip(x0.column(j))
                .map(|(wi, xi)| wi * wi * (xi - est[j]).powi(2))
                .sum::<f64>())
            .sqrt()
                / wsum;
            assert!(se < 0.01, "MC too noisy: se {se}");
            assert!(
                (den[[0, j]] - est[j]).abs() < 5.0 * se,
                "coord {j}: {} vs MC {} ± {se}",
                den[[0, j]],
                est[j]
            );
        }
    }

    #[test]
    fn measurement_posterior_matches_bayes_rule_on_a_grid() {
        let gm = preset("gmm2d").unwrap();
        let cases = [
            (arr2(&[[1.0, 0.5]]), arr1(&[0.7]), arr2(&[[0.09]])),
            (
                arr2(&[[0.8, -0.3], [0.2, 1.1]]),
                arr1(&[-1.0, 0.4]),
                arr2(&[[0.25, 0.05], [0.05, 0.16]]),
            ),
        ];
        for (a, y, nc) in cases {
            let post = gm
                .posterior_given_measurement(a.view(), y.view(), nc.view())
                .unwrap();
            let lik = GaussianMixture::new(
                arr1(&[1.0]),
                y.clone().insert_axis(Axis(0)),
                nc.clone().insert_axis(Axis(0)),
            )
            .unwrap();
            // Grid over [−8, 8]², step 0.02: unnormalised Bayes p(x)·N(y; Ax, Σ_n), normalised by quadrature.
            let h = 0.02;
            let g: Vec<f64> = (0..=800).map(|i| -8.0 + h * i as f64).collect();
            let mut xs = Array2::zeros((g.len() * g.len(), 2));
            for (i, gx) in g.iter().enumerate() {
                for (j, gy) in g.iter().enumerate() {
                    xs[[i * g.len() + j, 0]] = *gx;
                    xs[[i * g.len() + j, 1]] = *gy;
                }
            }
            let ax = xs.dot(&a.t());
            let unnorm =
                (gm.log_prob(xs.view()).unwrap() + lik.log_prob(ax.view()).unwrap()).mapv(f64::exp);
            let z = unnorm.sum() * h * h;
            let bayes = unnorm / z;
            let exact = post.log_prob(xs.view()).unwrap().mapv(f64::exp);
            let peak = exact.iter().cloned().fold(0.0, f64::max);
            assert!(
                max_abs_diff(&bayes, &exact) < 1e-6 * peak,
                "max diff {}",
                max_abs_diff(&bayes, &exact)
            );
            let mean_grid = bayes.dot(&xs) * (h * h);
            assert!(max_abs_diff(&mean_grid, &post.mean()) < 1e-6);
        }
    }

    #[test]
    fn marginal_moments_and_identity_at_t0() {
        let gm = preset("gmm2d").unwrap();
        let p = ProcessKind::vp().build();
        let t = 0.5;
        let (a, s) = (p.alpha(t), p.sigma(t));
        let m = gm.marginal(p.as_ref(), t).unwrap();
        assert!(max_abs_diff(&m.mean(), &(gm.mean() * a)) < 1e-14);
        let want = gm.covariance() * (a * a) + Array2::<f64>::eye(2) * (s * s);
        assert!(max_abs_diff(&m.covariance(), &want) < 1e-12);
        let p0 = ProcessKind::edm().build();
        let x = points();
        let den = gm.denoiser(x.view(), p0.as_ref(), 0.0).unwrap();
        assert!(max_abs_diff(&den, &x) < 1e-12, "D(x; 0) must be x");
    }

    #[test]
    fn samples_have_the_right_weights_and_means() {
        let gm = preset("gmm2d").unwrap();
        let n = 40_000;
        let (x, labels) = gm.sample_with_labels(n, 5);
        for k in 0..4 {
            let idx: Vec<usize> = (0..n).filter(|i| labels[*i] == k).collect();
            let frac = idx.len() as f64 / n as f64;
            let w = gm.weights()[k];
            assert!(
                (frac - w).abs() < 5.0 * (w * (1.0 - w) / n as f64).sqrt(),
                "weight {k}: {frac} vs {w}"
            );
            let sel = x.select(Axis(0), &idx);
            let mean = sel.mean_axis(Axis(0)).unwrap();
            for j in 0..2 {
                let se = (gm.covs()[[k, j, j]] / idx.len() as f64).sqrt();
                assert!(
                    (mean[j] - gm.means()[[k, j]]).abs() < 5.0 * se,
                    "mean {k},{j}"
                );
            }
        }
        // Per-sample seeding: the first rows do not depend on n.
        assert_eq!(gm.sample(10, 5), x.slice(s![..10, ..]));
        // Well-separated components: classification mostly agrees with the labels.
        let comp = gm.component_of(x.view()).unwrap();
        let agree = comp.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / n as f64;
        assert!(agree > 0.95, "{agree}");
    }

    #[test]
    fn high_dimensional_preset_is_consistent() {
        let gm = preset("gmm64d").unwrap();
        assert_eq!((gm.dim(), gm.n_components()), (64, 5));
        let p = ProcessKind::vp().build();
        let t = 0.3;
        let x0 = gm.sample(8, 1);
        let eps = Array2::from_shape_vec((8, 64), crate::rng::normal_vec(1, 0, 9, 8 * 64)).unwrap();
        let x_t = &x0 * p.alpha(t) + &eps * p.sigma(t);
        let den = gm.denoiser(x_t.view(), p.as_ref(), t).unwrap();
        let score = gm.score_t(x_t.view(), p.as_ref(), t).unwrap();
        let tweedie = (&den * p.alpha(t) - &x_t) / p.sigma(t).powi(2);
        assert!(max_abs_diff(&score, &tweedie) < 1e-8);
        let cov = gm.posterior_cov(x_t.view(), p.as_ref(), t).unwrap();
        for i in 0..8 {
            let c = cov.slice(s![i, .., ..]).to_owned();
            assert!(cholesky(symmetrize(&c).view(), "cov").is_ok());
        }
    }

    #[test]
    fn validation_and_toml() {
        let good = "weights = [0.25, 0.75]\nmeans = [[0.0, 1.0], [2.0, 0.0]]\ncovs = [[[1.0, 0.2], [0.2, 1.0]], [[0.5, 0.0], [0.0, 0.5]]]\n";
        let gm = GaussianMixture::from_toml_str(good).unwrap();
        assert_eq!(gm.weights(), &arr1(&[0.25, 0.75]));
        let back = GaussianMixture::from_toml_str(&gm.to_toml_string().unwrap()).unwrap();
        assert_eq!(back, gm);
        let bad_sum = good.replace("0.75", "0.7");
        let e = GaussianMixture::from_toml_str(&bad_sum)
            .unwrap_err()
            .to_string();
        assert!(e.contains("weights") && e.contains("0.95"), "{e}");
        let neg = good.replace("0.25, 0.75", "-0.25, 1.25");
        assert!(GaussianMixture::from_toml_str(&neg)
            .unwrap_err()
            .to_string()
            .contains("weights[0]"));
        let not_spd = good.replace("[[0.5, 0.0], [0.0, 0.5]]", "[[0.5, 1.0], [1.0, 0.5]]");
        assert_eq!(
            GaussianMixture::from_toml_str(&not_spd).unwrap_err(),
            CoreError::NotPositiveDefinite("covs[1]".into())
        );
        let asym = good.replace("[[1.0, 0.2], [0.2, 1.0]]", "[[1.0, 0.2], [0.3, 1.0]]");
        assert!(GaussianMixture::from_toml_str(&asym)
            .unwrap_err()
            .to_string()
            .contains("covs[0]"));
        let short = good.replace("[2.0, 0.0]]", "[2.0]]");
        assert!(GaussianMixture::from_toml_str(&short)
            .unwrap_err()
            .to_string()
            .contains("means[1]"));
        assert!(matches!(
            GaussianMixture::from_toml_str(&format!("{good}extra = 1\n")),
            Err(CoreError::Parse(_))
        ));
        assert!(preset("nope").unwrap_err().to_string().contains("nope"));
        assert!(gm.log_prob(arr2(&[[1.0, 2.0, 3.0]]).view()).is_err());
        let w = arr1(&[1.0]);
        assert!(GaussianMixture::new(
            w,
            arr2(&[[0.0, 0.0]]),
            arr3(&[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
        )
        .is_err());
    }

    #[test]
    fn log_prob_of_single_gaussian_is_exact() {
        let gm = GaussianMixture::new(
            arr1(&[1.0]),
            arr2(&[[1.0, -1.0]]),
            arr3(&[[[2.0, 0.0], [0.0, 0.5]]]),
        )
        .unwrap();
        let lp = gm.log_prob(arr2(&[[2.0, 0.0]]).view()).unwrap()[0];
        let want = -(2.0 * PI).ln() - 0.5 * (1.0_f64).ln() - 0.5 * (1.0 / 2.0 + 1.0 / 0.5);
        assert_relative_eq!(lp, want, epsilon = 1e-14);
    }
}
