//! The Gaussian fitted to a data set, N(μ, Σ + εI) with μ and Σ the sample mean and covariance,
//! kept in the eigenbasis of Σ: Σ = Uᵀ·diag(λ)·U with r ≤ min(N − 1, D) orthonormal rows in U.
//!
//! Why not a dense D×D matrix: for images D is large (12,288 at 3×64×64) and N is small, and a
//! dense Σ costs D² memory and a D³ factorisation per noise level, while Σ has rank at most
//! N − 1. When D > N the basis comes from the N×N Gram matrix XcXcᵀ (the classical snapshot
//! method: its eigenvectors v give Σ's as Xcᵀv/‖Xcᵀv‖), so a fit costs O(N²D) and each
//! denoised row O(rD); the result is the exact empirical Gaussian, not an approximation.

use crate::error::{CoreError, Invalid, Result};
use crate::linalg::{matmul, sym_eigen};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

/// N(μ, Uᵀ·diag(λ)·U + εI): the empirical Gaussian of a sample set in a rank-r eigenbasis.
#[derive(Debug, Clone)]
pub struct EmpiricalGaussian {
    mean: Array1<f64>,
    /// [r, D], orthonormal rows: the eigenvectors of the sample covariance.
    basis: Array2<f64>,
    /// [r], the sample covariance's eigenvalues (≥ 0).
    eig: Array1<f64>,
    /// ε, added to every eigenvalue (including the D − r zero ones).
    jitter: f64,
}

impl EmpiricalGaussian {
    /// Fits N(x̄, S + εI) with S = Σᵢ(xᵢ − x̄)(xᵢ − x̄)ᵀ/(N − 1) to the rows of `x` ([N, D]):
    /// through S itself when D ≤ N, else through the N×N Gram matrix (snapshot method, Sirovich 1987).
    pub fn fit(x: ArrayView2<f64>, jitter: f64) -> Result<Self> {
        let (n, d) = x.dim();
        if n < 2 {
            return Err(CoreError::invalid(
                "samples",
                n,
                "a Gaussian fit needs at least 2 samples",
            ));
        }
        if d == 0 {
            return Err(CoreError::Shape("samples have dimension 0".into()));
        }
        if !(jitter.is_finite() && jitter >= 0.0) {
            return Err(CoreError::invalid(
                "jitter",
                jitter,
                "must be finite and ≥ 0",
            ));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::invalid(
                "samples",
                format!("row {}, column {}", i / d, i % d),
                "entries must be finite",
            ));
        }
        let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
        let xc = &x - &mean.view().insert_axis(Axis(0));
        let scale = 1.0 / (n as f64 - 1.0);
        let shape_err = || CoreError::Shape("sample matrix product".into());
        let (basis, eig) = if d <= n {
            let s = matmul(xc.t(), xc.view()).ok_or_else(shape_err)? * scale;
            let (vals, vecs) = sym_eigen(symmetrize(s).view(), "sample covariance")?;
            (vecs.reversed_axes(), vals.mapv(|v| v.max(0.0)))
        } else {
            let g = matmul(xc.view(), xc.t()).ok_or_else(shape_err)? * scale;
            let (vals, vecs) = sym_eigen(symmetrize(g).view(), "sample Gram matrix")?;
            // Centring makes one eigenvalue zero; others at rounding level carry no direction
            // that can be normalised, and their share of Σ is below what f64 resolves.
            let top = vals.iter().fold(0.0_f64, |m, v| m.max(*v));
            let tol = top * n as f64 * 64.0 * f64::EPSILON;
            let keep: Vec<usize> = (0..n).filter(|&k| vals[k] > tol && vals[k] > 0.0).collect();
            let mut v = Array2::<f64>::zeros((n, keep.len()));
            for (c, &k) in keep.iter().enumerate() {
                // u = Xcᵀv/√((N−1)λ) has unit norm because ‖Xcᵀv‖² = vᵀ(XcXcᵀ)v = (N−1)λ.
                let f = 1.0 / ((n as f64 - 1.0) * vals[k]).sqrt();
                v.column_mut(c).assign(&(&vecs.column(k) * f));
            }
            let basis = matmul(v.t(), xc.view()).ok_or_else(shape_err)?;
            let eig = Array1::from_iter(keep.iter().map(|&k| vals[k]));
            (basis, eig)
        };
        Ok(EmpiricalGaussian {
            mean,
            basis,
            eig,
            jitter,
        })
    }

    /// Dimension D.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Number r of stored eigenpairs: D when D ≤ N, else the Gram matrix's nonzero ones (≤ N − 1).
    pub fn rank(&self) -> usize {
        self.eig.len()
    }

    /// The sample mean x̄.
    pub fn mean(&self) -> ArrayView1<'_, f64> {
        self.mean.view()
    }

    /// The sample covariance's eigenvalues λ (without ε), in the order of [`Self::basis`].
    pub fn eigenvalues(&self) -> ArrayView1<'_, f64> {
        self.eig.view()
    }

    /// The orthonormal eigenvectors of the sample covariance, as the rows of an [r, D] matrix.
    pub fn basis(&self) -> ArrayView2<'_, f64> {
        self.basis.view()
    }

    /// The dense covariance Uᵀ·diag(λ)·U + εI ([D, D]; for tests and small D only).
    pub fn covariance(&self) -> Array2<f64> {
        let scaled = &self.basis * &self.eig.view().insert_axis(Axis(1));
        let mut c = self.basis.t().dot(&scaled);
        c.diag_mut().mapv_inplace(|v| v + self.jitter);
        c
    }

    /// Bayes denoiser of the Gaussian under x̃ = x + σ̃ε (EDM coordinates; Tweedie's formula for
    /// a Gaussian prior, i.e. the Wiener filter): D(x̃; σ̃) = μ + C(C + σ̃²I)⁻¹(x̃ − μ) with
    /// C = Uᵀ·diag(λ)·U + εI, evaluated as μ + g₀·r + Uᵀ·diag(gₖ − g₀)·U·r, r = x̃ − μ,
    /// gₖ = (λₖ + ε)/(λₖ + ε + σ̃²), g₀ = ε/(ε + σ̃²). Rows of `x_tilde` are samples.
    pub fn denoiser(&self, x_tilde: ArrayView2<f64>, sigma: f64) -> Result<Array2<f64>> {
        if x_tilde.ncols() != self.dim() {
            return Err(CoreError::Shape(format!(
                "x̃ has {} columns, the Gaussian has dimension {}",
                x_tilde.ncols(),
                self.dim()
            )));
        }
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(CoreError::invalid("sigma", sigma, "must be finite and ≥ 0"));
        }
        let s2 = sigma * sigma;
        let eps = self.jitter;
        // σ̃ = 0 and ε = 0: the denoiser is the identity on every direction (0/0 → 1).
        let gain = |v: f64| if v + s2 > 0.0 { v / (v + s2) } else { 1.0 };
        let g0 = gain(eps);
        let r = &x_tilde - &self.mean.view().insert_axis(Axis(0));
        let shape_err = || CoreError::Shape("denoiser matrix product".into());
        let mut coef = matmul(r.view(), self.basis.t()).ok_or_else(shape_err)?;
        let dg = self.eig.mapv(|l| gain(l + eps) - g0);
        coef *= &dg.view().insert_axis(Axis(0));
        let mut out = matmul(coef.view(), self.basis.view()).ok_or_else(shape_err)?;
        out.scaled_add(g0, &r);
        out += &self.mean.view().insert_axis(Axis(0));
        Ok(out)
    }
}

/// (A + Aᵀ)/2 in place of A: the products above are symmetric only up to rounding.
fn symmetrize(a: Array2<f64>) -> Array2<f64> {
    crate::linalg::symmetrize(&a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::max_abs_diff;
    use crate::mixture::GaussianMixture;
    use crate::process::ProcessKind;
    use ndarray::{Array3, Axis};
    use rand::Rng;
    use rand_distr::StandardNormal;

    fn data(n: usize, d: usize, seed: u64) -> Array2<f64> {
        let mut rng = crate::rng::stream_rng(seed, 0, 0);
        // Anisotropic and correlated, with a non-zero mean.
        let z = Array2::from_shape_fn((n, d), |_| rng.sample::<f64, _>(StandardNormal));
        let mix = Array2::from_shape_fn((d, d), |(i, j)| {
            if i == j {
                1.0 + i as f64 * 0.3
            } else {
                ((i * 3 + j * 5) % 7) as f64 / 14.0
            }
        });
        z.dot(&mix) + 0.5
    }

    /// The dense reference: one-component mixture with the sample covariance + εI, denoised by
    /// the mixture's Cholesky-based posterior mean.
    fn dense(x: &Array2<f64>, eps: f64) -> GaussianMixture {
        let n = x.nrows() as f64;
        let mean = x.mean_axis(Axis(0)).unwrap();
        let c = x - &mean.view().insert_axis(Axis(0));
        let mut cov = c.t().dot(&c) / (n - 1.0);
        cov.diag_mut().mapv_inplace(|v| v + eps);
        let d = x.ncols();
        GaussianMixture::new(
            ndarray::arr1(&[1.0]),
            mean.insert_axis(Axis(0)),
            Array3::from(cov.into_shape_with_order((1, d, d)).unwrap()),
        )
        .unwrap()
    }

    /// Both routes (D ≤ N through S, D > N through the Gram matrix) give the dense empirical
    /// Gaussian's covariance and denoiser to rounding.
    #[test]
    fn equals_the_dense_empirical_gaussian_on_both_routes() {
        let edm = ProcessKind::edm().build();
        for (n, d) in [(40, 6), (7, 30), (30, 30), (2, 5)] {
            let x = data(n, d, 11 + n as u64);
            let eps = 1e-3;
            let g = EmpiricalGaussian::fit(x.view(), eps).unwrap();
            assert!(g.rank() <= d.min(n), "rank {} for n={n} d={d}", g.rank());
            let gm = dense(&x, eps);
            let cov_err = max_abs_diff(
                &g.covariance(),
                &gm.covs().index_axis(Axis(0), 0).to_owned(),
            );
            assert!(cov_err < 1e-10, "n={n} d={d}: covariance off by {cov_err}");
            let probe = data(5, d, 99);
            for sigma in [0.01, 0.3, 2.0, 50.0] {
                let want = gm.denoiser(probe.view(), edm.as_ref(), sigma).unwrap();
                let got = g.denoiser(probe.view(), sigma).unwrap();
                let err = max_abs_diff(&got, &want);
                assert!(err < 1e-8, "n={n} d={d} σ̃={sigma}: {err}");
            }
        }
    }

    /// D ≫ N: the fit keeps N − 1 directions, each orthonormal, and never forms a D×D matrix
    /// (20 samples of dimension 50,000 fit in about 8 MB).
    #[test]
    fn high_dimension_keeps_rank_n_minus_one() {
        let (n, d) = (20, 50_000);
        let mut rng = crate::rng::stream_rng(5, 0, 0);
        let x = Array2::from_shape_fn((n, d), |_| rng.sample::<f64, _>(StandardNormal));
        let g = EmpiricalGaussian::fit(x.view(), 1e-6).unwrap();
        assert_eq!(g.rank(), n - 1);
        let b = g.basis();
        let gram = b.dot(&b.t());
        assert!(max_abs_diff(&gram, &Array2::eye(n - 1)) < 1e-10);
        // A training sample is in the span: at tiny σ̃ it is returned (nearly) unchanged,
        // while an independent draw is shrunk toward the mean.
        let d0 = g.denoiser(x.slice(ndarray::s![0..1, ..]), 1e-4).unwrap();
        assert!(max_abs_diff(&d0, &x.slice(ndarray::s![0..1, ..]).to_owned()) < 1e-6);
    }

    #[test]
    fn bad_input_is_named() {
        let one = Array2::<f64>::zeros((1, 3));
        let e = EmpiricalGaussian::fit(one.view(), 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2"), "{e}");
        let mut x = Array2::<f64>::zeros((3, 2));
        x[[2, 1]] = f64::NAN;
        let e = EmpiricalGaussian::fit(x.view(), 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 2, column 1"), "{e}");
        let g = EmpiricalGaussian::fit(data(5, 3, 1).view(), 0.0).unwrap();
        assert!(g.denoiser(Array2::zeros((1, 4)).view(), 1.0).is_err());
        assert!(g.denoiser(Array2::zeros((1, 3)).view(), f64::NAN).is_err());
        // Zero noise and zero jitter: the identity, not 0/0.
        let p = data(2, 3, 7);
        assert!(max_abs_diff(&g.denoiser(p.view(), 0.0).unwrap(), &p) < 1e-12);
    }
}
