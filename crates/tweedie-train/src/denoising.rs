//! Denoising error of a trained model on held-out data, at fixed noise levels σ̃, next to a
//! reference denoiser: the exact Bayes denoiser where the data has one (the mixture's
//! posterior mean, the fields' Wiener filter), else the Bayes denoiser of a Gaussian with the
//! training data's mean and covariance (the best linear denoiser, which a network should beat).
//!
//! Memory and time stay bounded for image-sized data: the Gaussian fit is kept in the
//! eigenbasis of its sample covariance (rank ≤ N − 1, [`EmpiricalGaussian`]), never as a D×D
//! matrix, and it uses at most [`FIT_ELEMENTS`] training values (every k-th sample when the
//! training set is larger); held-out rows go through the network and the reference in batches.
//!
//! This is the curve of EDM's loss-per-σ figure, on data the model never saw; a σ̃ where the
//! model is far above its reference shows where training failed (a bad noise-level density,
//! weight or preconditioning shows up here before it shows up in samples).

use std::fmt::Write as _;
use std::path::Path;

use ndarray::{Array2, ArrayView2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;
use serde_json::{json, Value};
use tweedie_core::mixture::GaussianMixture;
use tweedie_core::rng::stream_rng;
use tweedie_core::{EmpiricalGaussian, ProcessKind};
use tweedie_samplers::Model;

use crate::data::{Data, FieldSpec, GroundTruth};
use crate::error::{Result, TrainError};
use crate::plot::write_denoising_plot;
use crate::sample::NetModel;

/// RNG stream seed of the evaluation noise (fixed, so runs are compared on the same x̃).
const NOISE_SEED: u64 = 0xE7A1;
/// Jitter added to the empirical covariance so that pixels that never vary (digits' corners)
/// keep it positive definite.
const COV_JITTER: f64 = 1e-6;

/// Most training values (samples × dimension) the Gaussian fit reads: 2²⁴ f64 = 128 MiB per
/// copy, so a fit of 3×128×128 images uses 341 of them and stays well under 1 GiB.
pub const FIT_ELEMENTS: usize = 1 << 24;
/// Most training samples the Gaussian fit reads (its eigenproblem is at most this size).
pub const FIT_MAX_ROWS: usize = 2048;

/// How many of `n` training samples of dimension `d` the Gaussian fit uses: all of them when
/// n ≤ min(2048, 2²⁴/d), else that many (never fewer than 64, or n when n < 64).
pub fn fit_rows(n: usize, d: usize) -> usize {
    n.min(FIT_MAX_ROWS.min(FIT_ELEMENTS / d.max(1)).max(64))
}

/// A reference denoiser for held-out data.
pub enum Reference<'a> {
    /// The data's exact Bayes denoiser, a mixture's posterior mean.
    Mixture(&'a GaussianMixture),
    /// The fields' Wiener filter (exact Bayes denoiser of a Gaussian field).
    Wiener(&'a FieldSpec),
    /// Bayes denoiser of the Gaussian fitted to the training data.
    GaussianFit(Box<Fit>),
}

/// The Gaussian fitted to (every k-th sample of) the training set.
pub struct Fit {
    pub gaussian: EmpiricalGaussian,
    /// Training samples the fit used, of `total`.
    pub used: usize,
    pub total: usize,
}

impl<'a> Reference<'a> {
    /// The exact reference where `data` has ground truth, else the Gaussian fit to its training set.
    pub fn for_data(data: &'a Data) -> Result<Self> {
        Ok(match &data.truth {
            GroundTruth::Mixture(gm) => Reference::Mixture(gm),
            GroundTruth::Fields(spec) => Reference::Wiener(spec),
            GroundTruth::None => {
                let x = data.train.x.view();
                let used = fit_rows(x.nrows(), x.ncols());
                Reference::GaussianFit(Box::new(Fit {
                    gaussian: gaussian_fit(x, used)?,
                    used,
                    total: x.nrows(),
                }))
            }
        })
    }

    /// Column title in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Reference::Mixture(_) => "exact posterior mean",
            Reference::Wiener(_) => "Wiener filter (exact)",
            Reference::GaussianFit(_) => "Gaussian-fit denoiser",
        }
    }

    /// The name with what the fit used, for the report's text.
    pub fn description(&self) -> String {
        match self {
            Reference::GaussianFit(f) if f.used < f.total => format!(
                "{} (Gaussian with the mean and covariance of {} of the {} training samples, every \
                 {}th or so, in its rank-{} eigenbasis)",
                self.name(),
                f.used,
                f.total,
                f.total / f.used,
                f.gaussian.rank()
            ),
            Reference::GaussianFit(f) => format!(
                "{} (Gaussian with the mean and covariance of the {} training samples, in its \
                 rank-{} eigenbasis)",
                self.name(),
                f.total,
                f.gaussian.rank()
            ),
            _ => self.name().to_string(),
        }
    }

    /// Whether the reference is the data's exact Bayes denoiser (the model cannot beat it,
    /// beyond the sampling error of the held-out set).
    pub fn is_exact(&self) -> bool {
        !matches!(self, Reference::GaussianFit(_))
    }

    fn denoise(&self, x_tilde: ArrayView2<f64>, sigma: f64) -> Result<Array2<f64>> {
        let edm = || ProcessKind::edm().build();
        match self {
            // Under the EDM process (α = 1, σ = t), time t is the noise level σ̃.
            Reference::Mixture(gm) => Ok(gm.denoiser(x_tilde, edm().as_ref(), sigma)?),
            Reference::GaussianFit(fit) => Ok(fit.gaussian.denoiser(x_tilde, sigma)?),
            Reference::Wiener(spec) => spec.wiener(x_tilde, &vec![sigma; x_tilde.nrows()]),
        }
    }
}

/// The empirical Gaussian (mean, covariance + 10⁻⁶I) of `used` rows of `x` spread evenly over
/// it (rows ⌊i·N/used⌋), so that a large training set costs what `used` rows cost.
pub fn gaussian_fit(x: ArrayView2<f32>, used: usize) -> Result<EmpiricalGaussian> {
    let n = x.nrows();
    if n < 2 || used < 2 {
        return Err(TrainError::Data(format!(
            "a Gaussian fit needs at least 2 samples, got {}",
            n.min(used)
        )));
    }
    let used = used.min(n);
    let rows: Vec<usize> = (0..used).map(|i| i * n / used).collect();
    let sub = x.select(Axis(0), &rows).mapv(f64::from);
    Ok(EmpiricalGaussian::fit(sub.view(), COV_JITTER)?)
}

/// Per-element MSE of the model and the reference on held-out x̃ = x + σ̃ε at each σ̃; appends a
/// markdown table to `md` and a headline to `head`, and draws the curves into `plot` when given.
/// Held-out rows go through the network and the reference `batch` at a time; the noise of row i
/// depends on (i, σ̃) only, so the figures do not depend on `batch`.
#[allow(clippy::too_many_arguments)]
pub fn denoising_error(
    model: &NetModel,
    data: &Data,
    reference: &Reference,
    sigmas: &[f64],
    batch: usize,
    plot: Option<&Path>,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let (n, dim) = data.held_out.x.dim();
    let batch = batch.max(1);
    let _ = writeln!(md, "### Denoising error on held-out data\n");
    let _ = writeln!(
        md,
        "x̃ = x + σ̃ε for the {n} held-out samples; mean squared error per element. \
         The reference is the {}{}.\n",
        reference.description(),
        if reference.is_exact() {
            ", the data's exact Bayes denoiser: a ratio near 1 is the best possible"
        } else {
            " (best linear denoiser); a ratio below 1 is what the network learned beyond it"
        }
    );
    let _ = writeln!(
        md,
        "| σ̃ | model MSE | {} MSE | model / reference | identity MSE (σ̃²) |",
        reference.name()
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut rows = Vec::new();
    let mut worst = 0.0f64;
    for (si, &s) in sigmas.iter().enumerate() {
        let (mut se_ref, mut se_model) = (0.0f64, 0.0f64);
        for start in (0..n).step_by(batch) {
            crate::trainer::check_stop()?;
            let b = batch.min(n - start);
            let xh = data
                .held_out
                .x
                .slice(ndarray::s![start..start + b, ..])
                .mapv(f64::from);
            let mut xt = Array2::<f64>::zeros((b, dim));
            for (i, mut r) in xt.rows_mut().into_iter().enumerate() {
                let mut rng = stream_rng(NOISE_SEED, (start + i) as u64, si as u64);
                r.iter_mut()
                    .for_each(|v| *v = rng.sample::<f64, _>(StandardNormal) * s);
            }
            xt += &xh;
            se_ref += sq_err(&reference.denoise(xt.view(), s)?, &xh);
            // Rows through the sampler model: the same evaluation path as sampling.
            let dm = Model::<Array2<f64>>::denoise(model, &xt, s)
                .map_err(|e| TrainError::Other(format!("denoiser at σ̃ = {s}: {e}")))?;
            se_model += sq_err(&dm, &xh);
        }
        let count = (n * dim).max(1) as f64;
        let (mse_ref, mse_model) = (se_ref / count, se_model / count);
        let ratio = mse_model / mse_ref;
        worst = worst.max(ratio);
        let _ = writeln!(
            md,
            "| {s} | {mse_model:.4e} | {mse_ref:.4e} | {ratio:.3} | {:.4e} |",
            s * s
        );
        rows.push(
            json!({"sigma": s, "mse_model": mse_model, "mse_reference": mse_ref, "ratio": ratio}),
        );
    }
    let _ = writeln!(md);
    if let Some(p) = plot {
        let col = |k: &str| -> Vec<f64> { rows.iter().filter_map(|r| r[k].as_f64()).collect() };
        write_denoising_plot(
            p,
            sigmas,
            &col("mse_model"),
            &col("mse_reference"),
            reference.name(),
        )?;
        let name = p
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        let _ = writeln!(md, "![held-out denoising error]({name})\n");
    }
    head.push(format!(
        "denoising: worst model / {} MSE over σ̃ ∈ {sigmas:?}: {worst:.3}",
        reference.name()
    ));
    Ok(
        json!({"reference": reference.name(), "reference_description": reference.description(),
        "exact": reference.is_exact(), "rows": rows, "worst_ratio": worst}),
    )
}

/// Σ (a − b)² over all entries.
fn sq_err(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    ndarray::Zip::from(a)
        .and(b)
        .fold(0.0, |acc, x, y| acc + (x - y) * (x - y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The fit recovers a known Gaussian, and its denoiser is the linear shrinkage
    /// μ + Σ(Σ + σ̃²I)⁻¹(x̃ − μ).
    #[test]
    fn gaussian_fit_denoiser_is_the_linear_shrinkage() -> Result<()> {
        let gm = GaussianMixture::new(
            array![1.0],
            array![[1.0, -2.0]],
            array![[[4.0, 0.0], [0.0, 0.25]]],
        )?;
        let x = gm.sample(200_000, 7).mapv(|v| v as f32);
        let fit = Reference::GaussianFit(Box::new(Fit {
            gaussian: gaussian_fit(x.view(), x.nrows())?,
            used: x.nrows(),
            total: x.nrows(),
        }));
        let d = fit.denoise(array![[3.0, 0.0]].view(), 0.5)?;
        // Per axis: μ + v/(v + σ̃²)(x̃ − μ): 1 + 4/4.25·2 and −2 + 0.25/0.5·2.
        let want = [1.0 + 4.0 / 4.25 * 2.0, -2.0 + 0.5 * 2.0];
        for (g, w) in d.iter().zip(want) {
            // Sampling error of the fitted moments at n = 200k is ≈ 1e-2 relative.
            assert!((g - w).abs() < 2e-2, "{g} vs {w}");
        }
        Ok(())
    }

    /// A 3×64×64 training set of 48 images: mean image + c_i·u with c_i = ±1 alternating
    /// (sample variance exactly 48/47 along the unit image u, zero elsewhere). Before the
    /// low-rank fit this built a 12,288² covariance and factored it per σ̃ (minutes, 1.2 GB);
    /// now the fit and four σ̃ take well under a second, and the denoiser is the exact
    /// shrinkage μ + g(λ+ε)·⟨r,u⟩u + g(ε)·(r − ⟨r,u⟩u), g(v) = v/(v + σ̃²).
    #[test]
    fn image_sized_gaussian_fit_is_fast_and_exact() -> Result<()> {
        let (n, d) = (48, 3 * 64 * 64);
        let mu = ndarray::Array1::from_shape_fn(d, |j| ((j * 37) % 101) as f64 / 101.0 - 0.5);
        let u = ndarray::Array1::from_shape_fn(d, |j| if (j / 7) % 2 == 0 { 1.0 } else { -1.0 })
            / (d as f64).sqrt();
        // f32 data: the exact answer is computed from the same rounded values below.
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let c = if i % 2 == 0 { 1.0 } else { -1.0 };
            (mu[j] + c * u[j]) as f32
        });
        let t0 = std::time::Instant::now();
        let fit = gaussian_fit(x.view(), fit_rows(n, d))?;
        assert_eq!(fit_rows(n, d), n);
        let lam = n as f64 / (n as f64 - 1.0);
        assert!(
            fit.rank() >= 1
                && (fit.eigenvalues().iter().fold(0.0f64, |m, v| m.max(*v)) - lam).abs() < 1e-5
        );
        let probe = Array2::from_shape_fn((4, d), |(i, j)| {
            mu[j] + (i as f64 - 1.5) * u[j] + 0.01 * (((i + 3) * (j + 1)) % 13) as f64
        });
        for sigma in [0.01, 0.1, 1.0, 10.0] {
            let got = fit.denoiser(probe.view(), sigma)?;
            let g = |v: f64| v / (v + sigma * sigma);
            for (row, out) in probe.rows().into_iter().zip(got.rows()) {
                let r = &row - &fit.mean();
                let a = r.dot(&u);
                let want = &fit.mean()
                    + &(&u * (a * g(lam + COV_JITTER)))
                    + &((&r - &(&u * a)) * g(COV_JITTER));
                let err = (&out - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(err < 1e-5, "σ̃ = {sigma}: {err}");
            }
        }
        let took = t0.elapsed().as_secs_f64();
        assert!(took < 20.0, "fit and denoising took {took} s");
        Ok(())
    }

    /// Large training sets are subsampled evenly to bounded memory; small ones are used whole.
    #[test]
    fn fit_rows_bounds_the_values_read() {
        assert_eq!(fit_rows(1797, 64), 1797);
        assert_eq!(fit_rows(50_000, 64), FIT_MAX_ROWS);
        assert_eq!(fit_rows(50_000, 3 * 128 * 128), (1 << 24) / (3 * 128 * 128));
        assert_eq!(fit_rows(10, 1 << 30), 10);
        assert_eq!(fit_rows(5000, 1 << 30), 64);
        for (n, d) in [(100_000, 3072), (1000, 12_288), (300, 49_152)] {
            assert!(fit_rows(n, d) * d <= FIT_ELEMENTS);
        }
    }

    /// The held-out check in batches of 3 gives the figures of one batch of all 20 rows (the
    /// noise of a row is keyed by its index, so only the order of the sums differs).
    #[test]
    fn held_out_check_does_not_depend_on_the_batch() -> Result<()> {
        use crate::data::Dataset;
        use tweedie_nets::{ModelConfig, NetConfig, Wrapper};
        let mcfg = ModelConfig {
            net: NetConfig::preset("mlp-2d").map_err(|e| TrainError::Other(e.to_string()))?,
            wrapper: Wrapper::Precond(tweedie_core::Precond::edm()),
            conditioning: None,
        };
        let (_vs, den) = crate::trainer::with_torch_rng(|| mcfg.build(tch::Device::Cpu))
            .map_err(|e| TrainError::Other(e.to_string()))?;
        let model = NetModel::new(den, 0).on_device(tch::Device::Cpu);
        let x = |n: usize, k: usize| {
            Array2::from_shape_fn((n, 2), |(i, j)| (((i + k) * 7 + j * 3) % 11) as f32 / 11.0)
        };
        let data = Data {
            name: "t".into(),
            train: Dataset::new(x(30, 0), vec![2], None)?,
            held_out: Dataset::new(x(20, 5), vec![2], None)?,
            truth: GroundTruth::None,
            netcdf: None,
            levels: None,
        };
        let reference = Reference::for_data(&data)?;
        let run = |batch| {
            let (mut md, mut head) = (String::new(), Vec::new());
            denoising_error(
                &model,
                &data,
                &reference,
                &[0.1, 1.0],
                batch,
                None,
                &mut md,
                &mut head,
            )
        };
        let (a, b) = (run(3)?, run(1000)?);
        let rows = |v: &Value| v["rows"].as_array().cloned().unwrap_or_default();
        assert_eq!(rows(&a).len(), 2);
        // The same squared errors, summed in another order: equal to rounding.
        for (ra, rb) in rows(&a).iter().zip(&rows(&b)) {
            for key in ["mse_model", "mse_reference"] {
                let (x, y) = (
                    ra[key].as_f64().unwrap_or(f64::NAN),
                    rb[key].as_f64().unwrap_or(0.0),
                );
                assert!(x > 0.0 && (x - y).abs() <= 1e-12 * y, "{key}: {x} vs {y}");
            }
        }
        Ok(())
    }
}
