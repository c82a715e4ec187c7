//! The exact posterior of a power-law Gaussian random field given a linear measurement
//! y = A·x + n, n ~ N(0, s²I), for any [`ForwardModel`] A (Gaussian conditioning).
//!
//! With the prior x ~ N(0, C), C = F⁻¹ diag(S) F ([`FieldSpec`]) and M = A C Aᵀ + s²I:
//! mean μ = C Aᵀ M⁻¹ y, covariance P = C − C Aᵀ M⁻¹ A C, and a draw by Matheron's rule
//! x = x_p + C Aᵀ M⁻¹ (y − A x_p − s w), x_p ~ N(0, C), w ~ N(0, I) (Wilson et al. 2020).
//! A circulant A (periodic blur, transfer function H) is diagonal in Fourier space, so
//! μ̂_k = S_k H_k* ŷ_k / (|H_k|² S_k + s²) and the posterior variance of mode k is
//! S_k s² / (|H_k|² S_k + s²); any other A (mask, downsample, matrix, zero-padded blur) solves
//! M u = r by conjugate gradients with C applied by FFT. Nothing of size D×D is formed.
//!
//! The field's mean mode has variance 0 (S_0 = 0), so without noise M is singular when Aᵀ maps
//! some v to a constant field (block averages: v = 1): C Aᵀ v = 0. The gain C Aᵀ M⁺ ignores
//! that direction, but CG cannot reduce a residual's component along it (an f32 field's block
//! averages have one, and every product M·u adds rounding there) and its steps along it divide
//! by a curvature of rounding size, so the solve projects it out first: the s → 0 limit of the
//! posterior, in which y's component along v (the field mean, known to be 0) carries no
//! information.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use tweedie_samplers::{cg_rows, ForwardModel};

use super::FieldSpec;
use crate::error::{Result, TrainError};
use crate::fft::{Fft2, C64};

/// CG stops at this relative residual (the solve is then exact to f64 rounding for the
/// table's purposes); at most 2m + 20 iterations for m measurements.
const CG_TOL: f64 = 1e-12;

/// Stream of the keyed normals of exact posterior draws (prior part; the noise part is +1),
/// past core's conventional streams (`tweedie_core::rng::streams`, up to 5 << 32).
const STREAM: u64 = 6 << 32;

/// An operator's error (shape, CG breakdown) as a data error naming it.
fn op_err(e: tweedie_samplers::SamplerError) -> TrainError {
    TrainError::Data(format!("field posterior: {e}"))
}

/// The exact posterior p(x | y) of the field `spec` under the operator `op` (its noise std s).
pub struct FieldPosterior<'a> {
    spec: &'a FieldSpec,
    op: &'a dyn ForwardModel,
    /// H per mode when `op` is circulant.
    transfer: Option<Vec<C64>>,
    /// The unit vector v of M's null space when s = 0 and Aᵀv is a constant field.
    null: Option<Array1<f64>>,
}

impl std::fmt::Debug for FieldPosterior<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FieldPosterior({}×{}, {:?}, {})",
            self.spec.height,
            self.spec.width,
            self.op,
            if self.transfer.is_some() {
                "Fourier"
            } else {
                "CG"
            }
        )
    }
}

impl<'a> FieldPosterior<'a> {
    /// The posterior of `spec` under `op`: the operator's input must be one field (h·w values).
    pub fn new(spec: &'a FieldSpec, op: &'a dyn ForwardModel) -> Result<Self> {
        if op.in_dim() != spec.dim() {
            return Err(TrainError::Data(format!(
                "operator takes {} values, the {}×{} field has {}",
                op.in_dim(),
                spec.height,
                spec.width,
                spec.dim()
            )));
        }
        let transfer = op.circulant().map(|c| {
            c.transfer()
                .into_iter()
                .map(|(re, im)| C64::new(re, im))
                .collect()
        });
        let null = match transfer {
            None if op.noise_std() == 0.0 && spec.spectrum().first() == Some(&0.0) => {
                constant_preimage(op)?
            }
            _ => None,
        };
        Ok(FieldPosterior {
            spec,
            op,
            transfer,
            null,
        })
    }

    /// Whether the posterior is computed in Fourier space (circulant operator) rather than by CG.
    pub fn is_fourier(&self) -> bool {
        self.transfer.is_some()
    }

    /// The measurement, checked: its length is the operator's output and it is finite.
    fn check_y(&self, y: &Array1<f64>) -> Result<()> {
        if y.len() != self.op.out_dim() {
            return Err(TrainError::Data(format!(
                "measurement y has {} entries, the operator measures {}",
                y.len(),
                self.op.out_dim()
            )));
        }
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::Data(format!(
                "measurement y[{i}] = {} is not finite",
                y[i]
            )));
        }
        Ok(())
    }

    /// M⁻¹ r for every row r (m values), M = A C Aᵀ + s²I, by conjugate gradients (M⁺ r when
    /// M is singular: r's component along the null vector is dropped, and so is the rounding
    /// that each product M·u adds along it).
    fn solve(&self, r: &Array2<f64>) -> Result<Array2<f64>> {
        let (op, spec) = (self.op, self.spec);
        let project = |a: Array2<f64>| match &self.null {
            Some(v) => {
                let along = a.dot(v).insert_axis(Axis(1));
                a - along * v.view().insert_axis(Axis(0))
            }
            None => a,
        };
        let s2 = op.noise_std().powi(2);
        let matvec = |u: &Array2<f64>| -> tweedie_samplers::Result<Array2<f64>> {
            let cu = spec
                .apply_covariance(op.adjoint(u)?.view())
                .map_err(|e| tweedie_samplers::SamplerError::Numerical(e.to_string()))?;
            Ok(project(op.apply(&cu)? + u * s2))
        };
        cg_rows(matvec, &project(r.clone()), 2 * op.out_dim() + 20, CG_TOL).map_err(op_err)
    }

    /// C Aᵀ M⁻¹ r for every row r (the gain applied to residuals).
    fn gain(&self, r: &Array2<f64>) -> Result<Array2<f64>> {
        let u = self.solve(r)?;
        self.spec
            .apply_covariance(self.op.adjoint(&u).map_err(op_err)?.view())
    }

    /// The per-mode Fourier factors (mean gain S H*/(|H|²S + s²), variance S s²/(|H|²S + s²))
    /// of a circulant operator; a mode with |H|²S + s² = 0 is unmeasured (gain 0, variance S).
    fn fourier_factors(&self, k: usize, s: f64) -> (C64, f64) {
        let h = self.transfer.as_ref().map_or(C64::new(0.0, 0.0), |t| t[k]);
        let s2 = self.op.noise_std().powi(2);
        let den = h.norm_sqr() * s + s2;
        if den > 0.0 {
            (h.conj() * (s / den), s * s2 / den)
        } else {
            (C64::new(0.0, 0.0), s)
        }
    }

    /// Posterior means μ = C Aᵀ M⁻¹ y, one row per row of `y` ([N, m]).
    fn means(&self, y: ArrayView2<f64>) -> Result<Array2<f64>> {
        if self.transfer.is_some() {
            // A circulant A maps the field to a field: ŷ is the DFT of y itself.
            return self
                .spec
                .fourier_multiply(y, |_, k, s| self.fourier_factors(k, s).0);
        }
        self.gain(&y.to_owned())
    }

    /// The posterior mean E[x | y].
    pub fn mean(&self, y: &Array1<f64>) -> Result<Array1<f64>> {
        self.check_y(y)?;
        Ok(self.means(y.view().insert_axis(Axis(0)))?.row(0).to_owned())
    }

    /// `n` exact posterior draws (Matheron's rule, keyed normals: draw i depends on (seed, i)).
    pub fn sample(&self, y: &Array1<f64>, n: usize, seed: u64) -> Result<Array2<f64>> {
        self.check_y(y)?;
        let xp = self.spec.draw_f64(0, n, seed, STREAM)?;
        let w = tweedie_core::rng::normal_rows(seed, 0, n, STREAM + 1, self.op.out_dim());
        // r = y − A x_p − s w; x = x_p + C Aᵀ M⁻¹ r (the gain is linear, so the circulant
        // path applies it in Fourier space too).
        let r = -(self.op.apply(&xp).map_err(op_err)? + w * self.op.noise_std())
            + y.view().insert_axis(Axis(0));
        Ok(xp + self.means(r.view())?)
    }

    /// The posterior covariance P = C − C Aᵀ M⁻¹ A C applied to every row of `v`.
    pub fn apply_covariance(&self, v: &Array2<f64>) -> Result<Array2<f64>> {
        if self.transfer.is_some() {
            return self.spec.fourier_multiply(v.view(), |_, k, s| {
                C64::new(self.fourier_factors(k, s).1, 0.0)
            });
        }
        let cv = self.spec.apply_covariance(v.view())?;
        let av = self.op.apply(&cv).map_err(op_err)?;
        Ok(cv - self.gain(&av)?)
    }

    /// The posterior variance of each Fourier mode, E|(F(x − μ))_k|² (unitary DFT, row-major
    /// (k_y, k_x) order): S s²/(|H|²S + s²) for a circulant A; otherwise f_k P f_kᴴ =
    /// Re f_k·P·Re f_k + Im f_k·P·Im f_k (P is real symmetric) from 2·h·w CG solves.
    pub fn mode_variance(&self) -> Result<Vec<f64>> {
        let spec = self.spec;
        if self.transfer.is_some() {
            return Ok(spec
                .spectrum()
                .iter()
                .enumerate()
                .map(|(k, &s)| self.fourier_factors(k, s).1)
                .collect());
        }
        let (h, w, d) = (spec.height, spec.width, spec.dim());
        let tau = 2.0 * std::f64::consts::PI;
        let norm = 1.0 / (d as f64).sqrt();
        // Rows 2k and 2k+1: the real and imaginary parts of f_k, (f_k)_p = e^{−2πi κ·p}/√D.
        let basis = Array2::from_shape_fn((2 * d, d), |(row, p)| {
            let k = row / 2;
            let ph = tau
                * (((k / w) * (p / w)) as f64 / h as f64 + ((k % w) * (p % w)) as f64 / w as f64);
            if row % 2 == 0 {
                ph.cos() * norm
            } else {
                -ph.sin() * norm
            }
        });
        let pb = self.apply_covariance(&basis)?;
        let quad = (&basis * &pb).sum_axis(Axis(1));
        Ok((0..d).map(|k| quad[2 * k] + quad[2 * k + 1]).collect())
    }
}

/// The unit v with Aᵀv a constant field, if there is one: the least-squares solution of
/// Aᵀv = 1, (A Aᵀ)v = A·1 by CG, kept when Aᵀv is 1 to 1e-9 (a mask that leaves a pixel
/// out has none; block averages have v ∝ 1).
fn constant_preimage(op: &dyn ForwardModel) -> Result<Option<Array1<f64>>> {
    let ones = Array2::<f64>::ones((1, op.in_dim()));
    let a1 = op.apply(&ones).map_err(op_err)?;
    let normal = |u: &Array2<f64>| op.apply(&op.adjoint(u)?);
    // A rank-deficient A Aᵀ (a matrix operator) may stop CG: then no constant preimage is used.
    let Ok(v) = cg_rows(normal, &a1, 2 * op.out_dim() + 20, CG_TOL) else {
        return Ok(None);
    };
    let back = op.adjoint(&v).map_err(op_err)?;
    let off = back.iter().map(|b| (b - 1.0).abs()).fold(0.0, f64::max);
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    Ok((off < 1e-9 && norm > 0.0).then(|| v.row(0).mapv(|x| x / norm)))
}

/// The per-mode variance of samples (rows of h·w values) about their own mean,
/// (1/(N−1))·Σ_i |(F(x_i − x̄))_k|² (unitary DFT, DFT order): what
/// [`FieldPosterior::mode_variance`] is for a sampler's draws.
pub fn sample_mode_variance(x: ArrayView2<f64>, h: usize, w: usize) -> Result<Vec<f64>> {
    let d = h * w;
    if x.ncols() != d || x.nrows() < 2 {
        return Err(TrainError::Data(format!(
            "mode variance: need ≥ 2 rows of {d} values ({h}×{w}), got {:?}",
            x.dim()
        )));
    }
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
    let fft = Fft2::new(h, w);
    let mut acc = vec![0.0; d];
    let mut buf = vec![C64::default(); d];
    let mut scratch = Vec::new();
    for row in x.rows() {
        for ((z, &v), &m) in buf.iter_mut().zip(row).zip(&mean) {
            *z = C64::new(v - m, 0.0);
        }
        fft.process(&mut buf, false, &mut scratch);
        for (a, z) in acc.iter_mut().zip(&buf) {
            *a += z.norm_sqr();
        }
    }
    let n1 = (x.nrows() - 1) as f64;
    Ok(acc.into_iter().map(|a| a / n1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tweedie_core::linalg::{cho_solve_mat, cholesky, max_abs_diff};
    use tweedie_samplers::{Blur, Boundary, Downsample, Mask, MatrixOp};

    /// The dense answer: C as a matrix, M = A C Aᵀ + s²I by Cholesky, μ = C Aᵀ M⁻¹ y and
    /// P = C − C Aᵀ M⁻¹ A C, all by matrix products.
    fn dense(
        spec: &FieldSpec,
        op: &dyn ForwardModel,
        y: &Array1<f64>,
    ) -> (Array1<f64>, Array2<f64>) {
        let s2 = op.noise_std().powi(2);
        dense_plus(spec, op, y, Array2::<f64>::eye(op.out_dim()) * s2)
    }

    /// As [`dense`] with M = A C Aᵀ + `extra`.
    fn dense_plus(
        spec: &FieldSpec,
        op: &dyn ForwardModel,
        y: &Array1<f64>,
        extra: Array2<f64>,
    ) -> (Array1<f64>, Array2<f64>) {
        let d = spec.dim();
        let c = spec.apply_covariance(Array2::eye(d).view()).unwrap();
        let a = op.matrix().unwrap();
        let ca_t = c.dot(&a.t());
        let m = a.dot(&ca_t) + extra;
        let l = cholesky(m.view(), "M").unwrap();
        let my = cho_solve_mat(l.view(), y.view().insert_axis(Axis(1)));
        let mean = ca_t.dot(&my).column(0).to_owned();
        let mac = cho_solve_mat(l.view(), ca_t.t());
        (mean, &c - &ca_t.dot(&mac))
    }

    /// Dense F P Fᴴ's diagonal: P's columns and then rows through the FFT.
    fn dense_mode_variance(p: &Array2<f64>, h: usize, w: usize) -> Vec<f64> {
        let d = h * w;
        let fft = Fft2::new(h, w);
        let mut scratch = Vec::new();
        // G = F P (columns transformed), then diag(G Fᴴ)_k = Σ_p G[k, p]·conj(F[k, p]).
        let mut g = vec![vec![C64::default(); d]; d]; // g[p] = F·(column p of P)
        for (pcol, gp) in g.iter_mut().enumerate() {
            for (z, v) in gp.iter_mut().zip(p.column(pcol)) {
                *z = C64::new(*v, 0.0);
            }
            fft.process(gp, false, &mut scratch);
        }
        (0..d)
            .map(|k| {
                // diag_k = Σ_q G[k, q]·conj(F[k, q]) = conj((F·conj(G[k, ·]))_k).
                let mut row: Vec<C64> = (0..d).map(|pc| g[pc][k].conj()).collect();
                fft.process(&mut row, false, &mut scratch);
                row[k].conj().re
            })
            .collect()
    }

    #[test]
    fn matches_dense_gaussian_conditioning_for_every_operator() -> Result<()> {
        let (h, w) = (6, 8);
        let spec = FieldSpec::new(h, w, 2.0, 0.7)?;
        let d = h * w;
        let keep: Vec<bool> = (0..d).map(|i| (i * 7) % 5 < 2).collect();
        let a = tweedie_core::rng::normal_rows(4, 0, 10, 0, d) / (d as f64).sqrt();
        let ops: Vec<(&str, Box<dyn ForwardModel>)> = vec![
            ("mask", Box::new(Mask::new(&keep, 0.05).unwrap())),
            (
                "downsample",
                Box::new(Downsample::new(1, h, w, 2, 0.1).unwrap()),
            ),
            ("blur", Box::new(Blur::new(1, h, w, 0.8, 1, 0.2).unwrap())),
            (
                "periodic blur",
                Box::new(
                    Blur::new(1, h, w, 0.8, 2, 0.2)
                        .unwrap()
                        .with_boundary(Boundary::Periodic),
                ),
            ),
            ("matrix", Box::new(MatrixOp::new(a, 0.3).unwrap())),
        ];
        for (name, op) in &ops {
            let post = FieldPosterior::new(&spec, op.as_ref())?;
            assert_eq!(post.is_fourier(), *name == "periodic blur");
            let x = spec.draw_f64(0, 1, 9, 0)?;
            let noise = tweedie_core::rng::normal_rows(9, 0, 1, 1, op.out_dim());
            let y = (op.apply(&x).unwrap() + noise * op.noise_std())
                .row(0)
                .to_owned();
            let (mean, p) = dense(&spec, op.as_ref(), &y);
            let got = post.mean(&y)?;
            let err = max_abs_diff(&got, &mean);
            assert!(err < 1e-9, "{name}: mean off by {err}");
            let v = Array2::from_shape_fn((3, d), |(i, j)| ((i * d + j) as f64 * 0.37).sin());
            let pv = post.apply_covariance(&v)?;
            let err = max_abs_diff(&pv, &v.dot(&p));
            assert!(err < 1e-9, "{name}: P·v off by {err}");
            let mv = post.mode_variance()?;
            for (k, (a, b)) in mv.iter().zip(dense_mode_variance(&p, h, w)).enumerate() {
                assert!((a - b).abs() < 1e-9, "{name}: mode {k} variance {a} vs {b}");
            }
            // Draws are linear in (y, x_p, w): the draws for y minus those for 0 are μ(y).
            let d1 = post.sample(&y, 3, 5)?;
            let d0 = post.sample(&Array1::zeros(y.len()), 3, 5)?;
            for r in 0..3 {
                let diff = &d1.row(r) - &d0.row(r) - &mean;
                assert!(diff.iter().all(|e| e.abs() < 1e-9), "{name}: draw {r}");
            }
        }
        Ok(())
    }

    /// Noiseless block averages (the conditions of a downscaling model): M = A C Aᵀ is singular
    /// along the constant v (the mean mode has variance 0, C Aᵀ v = 0). Dense reference: M + v vᵀ
    /// is regular and its inverse is M⁺ + v vᵀ, whose gain C Aᵀ(M⁺ + v vᵀ) = C Aᵀ M⁺ is the
    /// s → 0 posterior's. The mean and every draw reproduce y even when y carries an
    /// inconsistent constant (the f32 rounding of a field's mean); the mean mode's posterior
    /// variance is 0.
    #[test]
    fn noiseless_block_averages_give_the_limit_posterior() -> Result<()> {
        let (h, w) = (8, 8);
        let spec = FieldSpec::new(h, w, 3.0, 0.5)?;
        let op = Downsample::new(1, h, w, 2, 0.0).unwrap();
        let post = FieldPosterior::new(&spec, &op)?;
        assert!(post.null.is_some());
        let x = spec.draw_f64(0, 1, 4, 0)?;
        let y = op.apply(&x).unwrap().row(0).to_owned();
        let m = op.out_dim();
        let vvt = Array2::from_elem((m, m), 1.0 / m as f64);
        let (mean, p) = dense_plus(&spec, &op, &y, vvt);
        let tilted = &y + 1e-7;
        let got = post.mean(&tilted)?;
        let err = max_abs_diff(&got, &mean);
        assert!(err < 1e-9, "mean off by {err}");
        let back = op.apply(&got.clone().insert_axis(Axis(0))).unwrap();
        let err = max_abs_diff(&back.row(0).to_owned(), &y);
        assert!(err < 1e-10, "A·μ off y by {err}");
        let draws = post.sample(&tilted, 4, 2)?;
        let reproduced = op.apply(&draws).unwrap();
        let err = max_abs_diff(
            &reproduced,
            &y.broadcast(reproduced.dim()).unwrap().to_owned(),
        );
        assert!(err < 1e-10, "a draw's block averages off y by {err}");
        let mv = post.mode_variance()?;
        assert!(mv[0].abs() < 1e-12, "mean mode variance {}", mv[0]);
        for (k, (a, b)) in mv.iter().zip(dense_mode_variance(&p, h, w)).enumerate() {
            assert!((a - b).abs() < 1e-9, "mode {k} variance {a} vs {b}");
        }
        // Noise or a mask that leaves pixels out: M is regular, nothing is projected.
        let noisy = Downsample::new(1, h, w, 2, 0.1).unwrap();
        assert!(FieldPosterior::new(&spec, &noisy)?.null.is_none());
        let keep: Vec<bool> = (0..h * w).map(|i| i % 3 > 0).collect();
        let mask = Mask::new(&keep, 0.0).unwrap();
        assert!(FieldPosterior::new(&spec, &mask)?.null.is_none());
        Ok(())
    }

    #[test]
    fn exact_draws_have_the_exact_mode_variance() -> Result<()> {
        // Matheron's rule draws N(μ, P) exactly: the sample per-mode variance of n draws,
        // averaged over a radial bin of c modes, is within a few standard errors
        // √(2/((n−1)·c))·(relative) of the exact one.
        let (h, w) = (8, 8);
        let spec = FieldSpec::new(h, w, 3.0, 0.5)?;
        let op = Downsample::new(1, h, w, 2, 0.05).unwrap();
        let post = FieldPosterior::new(&spec, &op)?;
        let y = Array1::from_shape_fn(op.out_dim(), |i| (i as f64 * 0.9).cos() * 0.3);
        let n = 4000;
        let x = post.sample(&y, n, 1)?;
        let got = spec.radial_average(&sample_mode_variance(x.view(), h, w)?);
        let want = spec.radial_average(&post.mode_variance()?);
        for (b, (g, t)) in got.iter().zip(&want).enumerate() {
            // A bin averages ≥ 4 modes' |X_k|² (relative s.e. ≤ 1/√n even if all were one
            // mode): allow 5/√n = 0.079.
            assert!(
                (g / t - 1.0).abs() < 5.0 / (n as f64).sqrt(),
                "bin {}: {g} vs {t}",
                b + 1
            );
        }
        Ok(())
    }

    #[test]
    fn refuses_a_mismatched_operator_and_a_bad_measurement() -> Result<()> {
        let spec = FieldSpec::new(4, 4, 2.0, 1.0)?;
        let op = Downsample::new(1, 4, 6, 2, 0.1).unwrap();
        let e = FieldPosterior::new(&spec, &op).unwrap_err().to_string();
        assert!(e.contains("24") && e.contains("4×4"), "{e}");
        let op = Mask::new(&[true; 16], 0.1).unwrap();
        let post = FieldPosterior::new(&spec, &op)?;
        let e = post.mean(&Array1::zeros(3)).unwrap_err().to_string();
        assert!(e.contains("3 entries") && e.contains("16"), "{e}");
        let mut y = Array1::zeros(16);
        y[2] = f64::NAN;
        let e = post.mean(&y).unwrap_err().to_string();
        assert!(e.contains("y[2]"), "{e}");
        Ok(())
    }
}
