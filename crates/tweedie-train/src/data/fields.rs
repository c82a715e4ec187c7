//! Periodic Gaussian random fields with a power-law spectrum, and their exact Bayes
//! denoiser (the Wiener filter).
//!
//! With the unitary 2-D DFT F on an n×n periodic grid, a field is x = F⁻¹[√S ⊙ F w] with
//! w white N(0, I) noise, so Cov(x) = F⁻¹ diag(S) F is circulant and E|(Fx)_k|² = S(k).
//! S(k) = c·|k|^(−β) for k ≠ 0 and S(0) = 0 (zero-mean fields), with c chosen so that the
//! pixel variance mean_k S(k) equals `std²`. For x̃ = x + σ̃ε the posterior mean is the
//! Wiener filter E[x | x̃] = F⁻¹[S/(S+σ̃²) ⊙ F x̃], with per-pixel error mean_k S σ̃²/(S+σ̃²).

use ndarray::{Array2, ArrayView2};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tweedie_core::Invalid;

use crate::error::{Result, TrainError};
use crate::fft::{fft2, freq, C64};

/// A power-law Gaussian random field on a periodic `size`×`size` grid.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    /// Grid side n (a power of two).
    pub size: usize,
    /// Spectral exponent β in S(k) ∝ |k|^(−β).
    pub exponent: f64,
    /// Pixel standard deviation (√ of mean_k S(k)).
    pub std: f64,
    spectrum: Vec<f64>,
}

impl FieldSpec {
    /// Validates the parameters and tabulates S(k) on the grid.
    pub fn new(size: usize, exponent: f64, std: f64) -> Result<Self> {
        if size < 4 || !size.is_power_of_two() {
            return Err(TrainError::invalid(
                "data.size",
                size,
                "must be a power of two ≥ 4",
            ));
        }
        if !(exponent.is_finite() && exponent >= 0.0) {
            return Err(TrainError::invalid(
                "data.exponent",
                exponent,
                "must be finite and ≥ 0",
            ));
        }
        if !(std.is_finite() && std > 0.0) {
            return Err(TrainError::invalid(
                "data.std",
                std,
                "must be finite and > 0",
            ));
        }
        let n = size;
        let mut s = vec![0.0; n * n];
        for r in 0..n {
            for c in 0..n {
                let k2 = (freq(r, n).pow(2) + freq(c, n).pow(2)) as f64;
                if k2 > 0.0 {
                    s[r * n + c] = k2.powf(-exponent / 2.0);
                }
            }
        }
        let mean: f64 = s.iter().sum::<f64>() / (n * n) as f64;
        let scale = std * std / mean;
        s.iter_mut().for_each(|v| *v *= scale);
        Ok(FieldSpec {
            size,
            exponent,
            std,
            spectrum: s,
        })
    }

    /// Number of pixels n².
    pub fn dim(&self) -> usize {
        self.size * self.size
    }

    /// S(k) for every grid mode, row-major in (k_y, k_x) DFT order.
    pub fn spectrum(&self) -> &[f64] {
        &self.spectrum
    }

    /// Fields `first..first+count`, one row each; field i depends on (seed, i) only.
    pub fn sample_range(&self, first: u64, count: usize, seed: u64) -> Array2<f32> {
        let d = self.dim();
        let mut out = Array2::<f32>::zeros((count, d));
        let mut buf = vec![C64::default(); d];
        for (row, i) in (first..first + count as u64).enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i);
            for z in buf.iter_mut() {
                *z = C64::new(rng.sample(StandardNormal), 0.0);
            }
            fft2(&mut buf, self.size, false);
            for (z, s) in buf.iter_mut().zip(&self.spectrum) {
                *z = z.scale(s.sqrt());
            }
            fft2(&mut buf, self.size, true);
            // √S is even in k and w is real, so the imaginary part is rounding only.
            for (o, z) in out.row_mut(row).iter_mut().zip(&buf) {
                *o = z.re as f32;
            }
        }
        out
    }

    /// Wiener filter E[x | x̃] = F⁻¹[S/(S+σ̃²) ⊙ F x̃], row by row (σ̃ per row).
    pub fn wiener(&self, x_tilde: ArrayView2<f64>, sigma: &[f64]) -> Result<Array2<f64>> {
        let d = self.dim();
        if x_tilde.ncols() != d || sigma.len() != x_tilde.nrows() {
            return Err(TrainError::Data(format!(
                "wiener: input is {:?} with {} noise levels, expected [N, {d}] with N levels",
                x_tilde.dim(),
                sigma.len()
            )));
        }
        let mut out = Array2::<f64>::zeros(x_tilde.dim());
        let mut buf = vec![C64::default(); d];
        for (i, row) in x_tilde.rows().into_iter().enumerate() {
            for (z, &v) in buf.iter_mut().zip(row) {
                *z = C64::new(v, 0.0);
            }
            fft2(&mut buf, self.size, false);
            let s2 = sigma[i] * sigma[i];
            for (z, &s) in buf.iter_mut().zip(&self.spectrum) {
                let g = if s + s2 > 0.0 { s / (s + s2) } else { 0.0 };
                *z = z.scale(g);
            }
            fft2(&mut buf, self.size, true);
            for (o, z) in out.row_mut(i).iter_mut().zip(&buf) {
                *o = z.re;
            }
        }
        Ok(out)
    }

    /// Per-pixel mean squared error of the Wiener filter: mean_k S(k)σ̃²/(S(k)+σ̃²).
    pub fn wiener_mse(&self, sigma: f64) -> f64 {
        let s2 = sigma * sigma;
        self.spectrum
            .iter()
            .map(|&s| if s + s2 > 0.0 { s * s2 / (s + s2) } else { 0.0 })
            .sum::<f64>()
            / self.dim() as f64
    }

    /// Radial bin of each mode: round(|k|), for |k| ≤ n/2 (corner modes get `None`).
    fn radial_bin(&self, idx: usize) -> Option<usize> {
        let n = self.size;
        let k = ((freq(idx / n, n).pow(2) + freq(idx % n, n).pow(2)) as f64).sqrt();
        let b = k.round() as usize;
        (b >= 1 && b <= n / 2).then_some(b)
    }

    /// Exact radially averaged spectrum: the mean of S(k) over modes with round(|k|) = b,
    /// for b = 1..=n/2 (index b−1).
    pub fn exact_radial_spectrum(&self) -> Vec<f64> {
        let nb = self.size / 2;
        let mut sum = vec![0.0; nb];
        let mut cnt = vec![0usize; nb];
        for (i, &s) in self.spectrum.iter().enumerate() {
            if let Some(b) = self.radial_bin(i) {
                sum[b - 1] += s;
                cnt[b - 1] += 1;
            }
        }
        sum.iter()
            .zip(&cnt)
            .map(|(s, &c)| s / c.max(1) as f64)
            .collect()
    }

    /// Radially averaged power spectrum of samples (rows of n² pixels): the mean of
    /// |(F x)_k|² over samples and over modes with round(|k|) = b, b = 1..=n/2. Its
    /// expectation is [`exact_radial_spectrum`](Self::exact_radial_spectrum).
    pub fn radial_spectrum(&self, x: ArrayView2<f32>) -> Result<Vec<f64>> {
        let d = self.dim();
        if x.ncols() != d {
            return Err(TrainError::Data(format!(
                "radial spectrum: rows have {} values, expected {d}",
                x.ncols()
            )));
        }
        let nb = self.size / 2;
        let mut sum = vec![0.0; nb];
        let mut cnt = vec![0usize; nb];
        let mut buf = vec![C64::default(); d];
        for row in x.rows() {
            for (z, &v) in buf.iter_mut().zip(row) {
                *z = C64::new(v as f64, 0.0);
            }
            fft2(&mut buf, self.size, false);
            for (i, z) in buf.iter().enumerate() {
                if let Some(b) = self.radial_bin(i) {
                    sum[b - 1] += z.norm_sqr();
                    cnt[b - 1] += 1;
                }
            }
        }
        Ok(sum
            .iter()
            .zip(&cnt)
            .map(|(s, &c)| s / c.max(1) as f64)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Axis;

    #[test]
    fn rejects_bad_parameters_naming_the_key() {
        let e = FieldSpec::new(12, 2.0, 0.5).unwrap_err().to_string();
        assert!(e.contains("data.size") && e.contains("12"), "{e}");
        assert!(FieldSpec::new(16, -1.0, 0.5)
            .unwrap_err()
            .to_string()
            .contains("data.exponent"));
        assert!(FieldSpec::new(16, 2.0, 0.0)
            .unwrap_err()
            .to_string()
            .contains("data.std"));
    }

    #[test]
    fn samples_have_the_stated_pixel_variance_and_spectrum() -> Result<()> {
        let f = FieldSpec::new(16, 3.0, 0.5)?;
        let x = f.sample_range(0, 400, 7);
        assert_eq!(x.dim(), (400, 256));
        // Mean-zero fields: each field's spatial mean is exactly 0 (S(0) = 0).
        for m in x.mean_axis(Axis(1)).into_iter().flatten() {
            assert!(m.abs() < 1e-5, "spatial mean {m}");
        }
        let var = x.mapv(|v| (v as f64).powi(2)).mean().unwrap_or(f64::NAN);
        // Pixel variance 0.25; this spectrum is red so pixels are strongly correlated: allow 10 %.
        assert!((var - 0.25).abs() < 0.025, "pixel variance {var}");
        // Each radial bin averages many |X_k|² ~ S·Exp(1)/χ² draws: relative error ≈ 1/√(count).
        let est = f.radial_spectrum(x.view())?;
        let exact = f.exact_radial_spectrum();
        for (b, (e, t)) in est.iter().zip(&exact).enumerate() {
            assert!((e / t - 1.0).abs() < 0.15, "bin {}: {e} vs {t}", b + 1);
        }
        Ok(())
    }

    #[test]
    fn sample_depends_on_seed_and_index_only() -> Result<()> {
        let f = FieldSpec::new(8, 2.0, 1.0)?;
        let a = f.sample_range(0, 5, 3);
        let b = f.sample_range(3, 2, 3);
        assert_eq!(a.row(3), b.row(0));
        assert_eq!(a.row(4), b.row(1));
        assert_ne!(a.row(0), f.sample_range(0, 1, 4).row(0));
        Ok(())
    }

    #[test]
    fn wiener_filter_attains_its_exact_error_and_beats_other_gains() -> Result<()> {
        let f = FieldSpec::new(16, 2.0, 0.5)?;
        let n = 600;
        let x = f.sample_range(0, n, 11).mapv(f64::from);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &sigma in &[0.05, 0.3, 2.0] {
            let noise =
                Array2::<f64>::from_shape_fn(x.dim(), |_| rng.sample::<f64, _>(StandardNormal));
            let xt = &x + &(noise * sigma);
            let sig = vec![sigma; n];
            let d = f.wiener(xt.view(), &sig)?;
            let mse = (&d - &x).mapv(|v| v * v).mean().unwrap_or(f64::NAN);
            let exact = f.wiener_mse(sigma);
            assert!(
                (mse / exact - 1.0).abs() < 0.05,
                "σ̃={sigma}: {mse} vs exact {exact}"
            );
            // Shrinking by a scalar instead is worse (the Wiener filter is the posterior mean).
            let shrink = 0.25 / (0.25 + sigma * sigma);
            let mse2 = (&xt * shrink - &x)
                .mapv(|v| v * v)
                .mean()
                .unwrap_or(f64::NAN);
            assert!(
                mse2 > mse,
                "σ̃={sigma}: scalar shrinkage {mse2} ≤ Wiener {mse}"
            );
        }
        // Limits: no noise → identity error 0; huge noise → error = pixel variance.
        assert!(f.wiener_mse(0.0).abs() < 1e-15);
        assert!((f.wiener_mse(1e6) - 0.25).abs() < 1e-6);
        Ok(())
    }
}
