//! Periodic Gaussian random fields with a power-law spectrum, and their exact Bayes
//! denoiser (the Wiener filter).
//!
//! With the unitary 2-D DFT F on an h×w periodic grid, a field is x = F⁻¹[√S ⊙ F w] with
//! w white N(0, I) noise, so Cov(x) = F⁻¹ diag(S) F is circulant and E|(Fx)_k|² = S(k).
//! S(k) = c·|κ|^(−β) for k ≠ 0 and S(0) = 0 (zero-mean fields), with c chosen so that the
//! pixel variance mean_k S(k) equals `std²`. The wavenumber κ = L·(k_y/h, k_x/w) with
//! L = max(h, w) is isotropic in pixel units (square pixels), and is the integer mode
//! (k_y, k_x) itself on a square grid; any h, w work (the FFT is `rustfft`'s). For x̃ = x + σ̃ε the posterior mean is the
//! Wiener filter E[x | x̃] = F⁻¹[S/(S+σ̃²) ⊙ F x̃], with per-pixel error mean_k S σ̃²/(S+σ̃²).

use ndarray::{Array2, ArrayView2};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tweedie_core::Invalid;

use crate::error::{Result, TrainError};
use crate::fft::{freq, Fft2, C64};

/// A power-law Gaussian random field on a periodic `height`×`width` grid.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    /// Grid height h (rows).
    pub height: usize,
    /// Grid width w (columns).
    pub width: usize,
    /// Spectral exponent β in S(k) ∝ |k|^(−β).
    pub exponent: f64,
    /// Pixel standard deviation (√ of mean_k S(k)).
    pub std: f64,
    spectrum: Vec<f64>,
    fft: Fft2,
}

impl PartialEq for FieldSpec {
    fn eq(&self, o: &Self) -> bool {
        (self.height, self.width, self.exponent, self.std) == (o.height, o.width, o.exponent, o.std)
    }
}

impl FieldSpec {
    /// Validates the parameters and tabulates S(k) on the grid.
    pub fn new(height: usize, width: usize, exponent: f64, std: f64) -> Result<Self> {
        if height < 2 || width < 2 {
            return Err(TrainError::invalid(
                "data.size",
                format!("{height}×{width}"),
                "both sides must be ≥ 2",
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
        let (h, w) = (height, width);
        // The spectrum (f64) and the FFT's complex buffers (2 × f64 each) are h·w long.
        tweedie_core::budget::check_array("data.size", format!("{h}×{w}"), &[h, w, 5], 8)?;
        let mut s = vec![0.0; h * w];
        for r in 0..h {
            for c in 0..w {
                let k = wavenumber(r, c, h, w);
                if k > 0.0 {
                    s[r * w + c] = k.powf(-exponent);
                }
            }
        }
        let mean: f64 = s.iter().sum::<f64>() / (h * w) as f64;
        let scale = std * std / mean;
        s.iter_mut().for_each(|v| *v *= scale);
        Ok(FieldSpec {
            height,
            width,
            exponent,
            std,
            spectrum: s,
            fft: Fft2::new(h, w),
        })
    }

    /// Number of pixels h·w.
    pub fn dim(&self) -> usize {
        self.height * self.width
    }

    /// Unitary 2-D DFT of one field in place (forward or inverse).
    fn transform(&self, buf: &mut [C64], inverse: bool, scratch: &mut Vec<C64>) {
        self.fft.process(buf, inverse, scratch);
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
        let mut scratch = Vec::new();
        for (row, i) in (first..first + count as u64).enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i);
            for z in buf.iter_mut() {
                *z = C64::new(rng.sample(StandardNormal), 0.0);
            }
            self.transform(&mut buf, false, &mut scratch);
            for (z, s) in buf.iter_mut().zip(&self.spectrum) {
                *z *= s.sqrt();
            }
            self.transform(&mut buf, true, &mut scratch);
            // √S is even in k and w is real, so the imaginary part is rounding only.
            for (o, z) in out.row_mut(row).iter_mut().zip(&buf) {
                *o = z.re as f32;
            }
        }
        out
    }

    /// Wiener filter E[x | x̃] = F⁻¹[S/(S+σ̃²) ⊙ F x̃], row by row (σ̃ per row).
    pub fn wiener(&self, x_tilde: ArrayView2<f64>, sigma: &[f64]) -> Result<Array2<f64>> {
        if sigma.len() != x_tilde.nrows() {
            return Err(TrainError::Data(format!(
                "wiener: input is {:?} with {} noise levels, expected [N, {}] with N levels",
                x_tilde.dim(),
                sigma.len(),
                self.dim()
            )));
        }
        self.fourier_multiply(x_tilde, |row, _, s| {
            let s2 = sigma[row] * sigma[row];
            let g = if s + s2 > 0.0 { s / (s + s2) } else { 0.0 };
            C64::new(g, 0.0)
        })
    }

    /// Prior covariance times each row: C·x = F⁻¹[S ⊙ F x].
    pub fn apply_covariance(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        self.fourier_multiply(x, |_, _, s| C64::new(s, 0.0))
    }

    /// Fields `first..first+count` in f64 from keyed standard normals z
    /// (`tweedie_core::rng::normal_rows(seed, first, count, stream, h·w)`): x = F⁻¹[√S ⊙ F z].
    /// Not the training data's draws ([`sample_range`](Self::sample_range)); for exact
    /// posterior draws, where the prior draw must be f64.
    pub fn draw_f64(
        &self,
        first: u64,
        count: usize,
        seed: u64,
        stream: u64,
    ) -> Result<Array2<f64>> {
        let z = tweedie_core::rng::normal_rows(seed, first, count, stream, self.dim());
        self.fourier_multiply(z.view(), |_, _, s| C64::new(s.sqrt(), 0.0))
    }

    /// F⁻¹[g ⊙ F x] for each row x, with the gain g(row, mode, S(mode)) per DFT mode (row-major
    /// (k_y, k_x) order); g must be Hermitian (g(−k) = g(k)*) for the output to be real, and
    /// only its real part is kept.
    pub fn fourier_multiply(
        &self,
        x: ArrayView2<f64>,
        gain: impl Fn(usize, usize, f64) -> C64,
    ) -> Result<Array2<f64>> {
        let d = self.dim();
        if x.ncols() != d {
            return Err(TrainError::Data(format!(
                "field rows have {} values, the {}×{} grid has {d}",
                x.ncols(),
                self.height,
                self.width
            )));
        }
        let mut out = Array2::<f64>::zeros(x.dim());
        let mut buf = vec![C64::default(); d];
        let mut scratch = Vec::new();
        for (i, row) in x.rows().into_iter().enumerate() {
            for (z, &v) in buf.iter_mut().zip(row) {
                *z = C64::new(v, 0.0);
            }
            self.transform(&mut buf, false, &mut scratch);
            for (k, (z, &s)) in buf.iter_mut().zip(&self.spectrum).enumerate() {
                *z *= gain(i, k, s);
            }
            self.transform(&mut buf, true, &mut scratch);
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

    /// Number of radial bins: max(h, w)/2, the Nyquist wavenumber of both axes in κ units.
    pub fn radial_bins(&self) -> usize {
        self.height.max(self.width) / 2
    }

    /// Radial bin of each mode: round(|κ|), for 1 ≤ round(|κ|) ≤ max(h, w)/2 (corner modes
    /// beyond the Nyquist circle get `None`).
    fn radial_bin(&self, idx: usize) -> Option<usize> {
        let k = wavenumber(idx / self.width, idx % self.width, self.height, self.width);
        let b = k.round() as usize;
        (b >= 1 && b <= self.radial_bins()).then_some(b)
    }

    /// Exact radially averaged spectrum: the mean of S(k) over modes with round(|κ|) = b,
    /// for b = 1..=max(h, w)/2 (index b−1).
    pub fn exact_radial_spectrum(&self) -> Vec<f64> {
        self.radial_average(&self.spectrum)
    }

    /// The radial average of a per-mode quantity (DFT order): its mean over modes with
    /// round(|κ|) = b, for b = 1..=max(h, w)/2 (index b−1).
    pub fn radial_average(&self, per_mode: &[f64]) -> Vec<f64> {
        let nb = self.radial_bins();
        let mut sum = vec![0.0; nb];
        let mut cnt = vec![0usize; nb];
        for (i, &s) in per_mode.iter().enumerate() {
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

    /// Radially averaged power spectrum of samples (rows of h·w pixels): the mean of
    /// |(F x)_k|² over samples and over modes with round(|κ|) = b, b = 1..=max(h, w)/2. Its
    /// expectation is [`exact_radial_spectrum`](Self::exact_radial_spectrum).
    pub fn radial_spectrum(&self, x: ArrayView2<f32>) -> Result<Vec<f64>> {
        radial_spectrum(x, self.height, self.width)
    }
}

/// Two power-law fields on one grid, correlated mode by mode: x_a = F⁻¹[√S_a ⊙ F w_a],
/// x_b = F⁻¹[√S_b ⊙ F(ρ w_a + √(1−ρ²) w_b)], so the cross-spectrum is E[X_a X_b*] = ρ√(S_a S_b)
/// and the pixel correlation is ρ·mean_k √(S_a S_b)/(σ_a σ_b).
#[derive(Debug, Clone)]
pub struct FieldPair {
    /// First variable.
    pub a: FieldSpec,
    /// Second variable (same grid).
    pub b: FieldSpec,
    /// Correlation ρ of the two white noises, in [−1, 1].
    pub rho: f64,
}

impl FieldPair {
    /// Checks that the grids agree and ρ ∈ [−1, 1].
    pub fn new(a: FieldSpec, b: FieldSpec, rho: f64) -> Result<Self> {
        if (a.height, a.width) != (b.height, b.width) {
            return Err(TrainError::Data(format!(
                "field pair: grids {}×{} and {}×{} differ",
                a.height, a.width, b.height, b.width
            )));
        }
        if !(rho.is_finite() && rho.abs() <= 1.0) {
            return Err(TrainError::invalid("rho", rho, "must be in [−1, 1]"));
        }
        Ok(FieldPair { a, b, rho })
    }

    /// Exact pixel correlation ρ·mean_k √(S_a S_b)/(σ_a σ_b).
    pub fn exact_correlation(&self) -> f64 {
        let cross: f64 = self
            .a
            .spectrum
            .iter()
            .zip(&self.b.spectrum)
            .map(|(x, y)| (x * y).sqrt())
            .sum::<f64>()
            / self.a.dim() as f64;
        self.rho * cross / (self.a.std * self.b.std)
    }

    /// Pairs `first..first+count`: ([count, h·w], [count, h·w]); pair i depends on (seed, i) only.
    pub fn sample_range(&self, first: u64, count: usize, seed: u64) -> (Array2<f32>, Array2<f32>) {
        let d = self.a.dim();
        let mut xa = Array2::<f32>::zeros((count, d));
        let mut xb = Array2::<f32>::zeros((count, d));
        let (mut wa, mut wb) = (vec![C64::default(); d], vec![C64::default(); d]);
        let mut scratch = Vec::new();
        let c = (1.0 - self.rho * self.rho).max(0.0).sqrt();
        for (row, i) in (first..first + count as u64).enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i);
            for z in wa.iter_mut() {
                *z = C64::new(rng.sample(StandardNormal), 0.0);
            }
            for (z, a) in wb.iter_mut().zip(&wa) {
                let e: f64 = rng.sample(StandardNormal);
                *z = C64::new(self.rho * a.re + c * e, 0.0);
            }
            for (buf, spec, out) in [(&mut wa, &self.a, &mut xa), (&mut wb, &self.b, &mut xb)] {
                spec.transform(buf, false, &mut scratch);
                for (z, s) in buf.iter_mut().zip(&spec.spectrum) {
                    *z *= s.sqrt();
                }
                spec.transform(buf, true, &mut scratch);
                for (o, z) in out.row_mut(row).iter_mut().zip(buf.iter()) {
                    *o = z.re as f32;
                }
            }
        }
        (xa, xb)
    }
}

/// Radially averaged power spectrum of h×w fields (one per row): the mean of |(F x)_k|² (unitary
/// DFT) over rows and over modes with round(|κ|) = b, for b = 1..=max(h, w)/2 (index b−1).
pub fn radial_spectrum(x: ArrayView2<f32>, h: usize, w: usize) -> Result<Vec<f64>> {
    let d = h * w;
    if x.ncols() != d || h < 2 || w < 2 {
        return Err(TrainError::Data(format!(
            "radial spectrum: rows have {} values, expected a {h}×{w} grid",
            x.ncols()
        )));
    }
    let fft = Fft2::new(h, w);
    let nb = h.max(w) / 2;
    let mut sum = vec![0.0; nb];
    let mut cnt = vec![0usize; nb];
    let mut buf = vec![C64::default(); d];
    let mut scratch = Vec::new();
    let bins: Vec<Option<usize>> = (0..d)
        .map(|i| {
            let b = wavenumber(i / w, i % w, h, w).round() as usize;
            (b >= 1 && b <= nb).then_some(b)
        })
        .collect();
    for row in x.rows() {
        for (z, &v) in buf.iter_mut().zip(row) {
            *z = C64::new(f64::from(v), 0.0);
        }
        fft.process(&mut buf, false, &mut scratch);
        for (z, b) in buf.iter().zip(&bins) {
            if let Some(b) = b {
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

/// Pearson correlation of two equally shaped sets of values (all rows, all points).
pub fn correlation(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    let n = a.len().max(1) as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b.iter()) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt().max(1e-300)
}

/// |κ| of grid mode (r, c) on an h×w grid: L·√((k_y/h)² + (k_x/w)²), L = max(h, w).
fn wavenumber(r: usize, c: usize, h: usize, w: usize) -> f64 {
    let l = h.max(w) as f64;
    let ky = freq(r, h) as f64 * l / h as f64;
    let kx = freq(c, w) as f64 * l / w as f64;
    (ky * ky + kx * kx).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Axis;

    #[test]
    fn rejects_bad_parameters_naming_the_key() {
        let e = FieldSpec::new(1, 12, 2.0, 0.5).unwrap_err().to_string();
        assert!(e.contains("data.size") && e.contains("1×12"), "{e}");
        assert!(FieldSpec::new(16, 16, -1.0, 0.5)
            .unwrap_err()
            .to_string()
            .contains("data.exponent"));
        assert!(FieldSpec::new(16, 16, 2.0, 0.0)
            .unwrap_err()
            .to_string()
            .contains("data.std"));
    }

    #[test]
    fn samples_have_the_stated_pixel_variance_and_spectrum() -> Result<()> {
        // Square power of two, rectangular, and rectangular with odd non-power-of-two sides.
        for (h, w) in [(16, 16), (12, 20), (9, 15)] {
            stated_variance_and_spectrum(h, w)?;
        }
        Ok(())
    }

    fn stated_variance_and_spectrum(h: usize, w: usize) -> Result<()> {
        let f = FieldSpec::new(h, w, 3.0, 0.5)?;
        let n = 600;
        let x = f.sample_range(0, n, 7);
        assert_eq!(x.dim(), (n, h * w));
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
            assert!(
                (e / t - 1.0).abs() < 0.15,
                "{h}×{w} bin {}: {e} vs {t}",
                b + 1
            );
        }
        Ok(())
    }

    #[test]
    fn a_field_pair_has_its_spectra_and_exact_correlation() -> Result<()> {
        let (h, w) = (12, 24);
        let pair = FieldPair::new(
            FieldSpec::new(h, w, 3.0, 2.0)?,
            FieldSpec::new(h, w, 1.5, 0.5)?,
            0.7,
        )?;
        let rho = pair.exact_correlation();
        // Different spectra decorrelate the pixels: |ρ_pixel| < ρ (Cauchy–Schwarz).
        assert!(rho > 0.3 && rho < 0.7, "{rho}");
        let n = 800;
        let (a, b) = pair.sample_range(0, n, 3);
        let r = correlation(a.view(), b.view());
        // Standard error of a correlation ≈ (1 − ρ²)/√n_eff; the red spectra leave far fewer
        // independent values than pixels, so allow 0.05 (≈ 4 s.e. at n_eff ≈ n·10).
        assert!((r - rho).abs() < 0.05, "sample {r} vs exact {rho}");
        for (x, spec) in [(&a, &pair.a), (&b, &pair.b)] {
            let est = radial_spectrum(x.view(), h, w)?;
            for (k, (e, t)) in est.iter().zip(spec.exact_radial_spectrum()).enumerate() {
                assert!((e / t - 1.0).abs() < 0.15, "bin {}: {e} vs {t}", k + 1);
            }
        }
        assert!(FieldPair::new(
            FieldSpec::new(4, 4, 1.0, 1.0)?,
            FieldSpec::new(4, 6, 1.0, 1.0)?,
            0.1
        )
        .is_err());
        assert!(FieldPair::new(pair.a.clone(), pair.b.clone(), 1.5).is_err());
        Ok(())
    }

    #[test]
    fn sample_depends_on_seed_and_index_only() -> Result<()> {
        let f = FieldSpec::new(8, 6, 2.0, 1.0)?;
        let a = f.sample_range(0, 5, 3);
        let b = f.sample_range(3, 2, 3);
        assert_eq!(a.row(3), b.row(0));
        assert_eq!(a.row(4), b.row(1));
        assert_ne!(a.row(0), f.sample_range(0, 1, 4).row(0));
        Ok(())
    }

    #[test]
    fn wiener_filter_attains_its_exact_error_and_beats_other_gains() -> Result<()> {
        let f = FieldSpec::new(10, 24, 2.0, 0.5)?;
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
