//! Denoising error of a trained model on held-out data, at fixed noise levels σ̃, next to a
//! reference denoiser: the exact Bayes denoiser where the data has one (the mixture's
//! posterior mean, the fields' Wiener filter), else the Bayes denoiser of a Gaussian with the
//! training data's mean and covariance (the best linear denoiser, which a network should beat).
//!
//! This is the curve of EDM's loss-per-σ figure, on data the model never saw; a σ̃ where the
//! model is far above its reference shows where training failed (a bad noise-level density,
//! weight or preconditioning shows up here before it shows up in samples).

use std::fmt::Write as _;
use std::path::Path;

use ndarray::{Array1, Array2, Array3, ArrayView2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;
use serde_json::{json, Value};
use tweedie_core::mixture::GaussianMixture;
use tweedie_core::rng::stream_rng;
use tweedie_core::ProcessKind;
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

/// A reference denoiser for held-out data.
pub enum Reference<'a> {
    /// The data's exact Bayes denoiser, a mixture's posterior mean.
    Mixture(&'a GaussianMixture),
    /// The fields' Wiener filter (exact Bayes denoiser of a Gaussian field).
    Wiener(&'a FieldSpec),
    /// Bayes denoiser of the Gaussian fitted to the training data.
    GaussianFit(Box<GaussianMixture>),
}

impl<'a> Reference<'a> {
    /// The exact reference where `data` has ground truth, else the Gaussian fit to its training set.
    pub fn for_data(data: &'a Data) -> Result<Self> {
        Ok(match &data.truth {
            GroundTruth::Mixture(gm) => Reference::Mixture(gm),
            GroundTruth::Fields(spec) => Reference::Wiener(spec),
            GroundTruth::None => {
                Reference::GaussianFit(Box::new(gaussian_fit(data.train.x.view())?))
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
            Reference::GaussianFit(gm) => Ok(gm.denoiser(x_tilde, edm().as_ref(), sigma)?),
            Reference::Wiener(spec) => spec.wiener(x_tilde, &vec![sigma; x_tilde.nrows()]),
        }
    }
}

/// One Gaussian with the mean and (jittered) covariance of the rows of `x`.
pub fn gaussian_fit(x: ArrayView2<f32>) -> Result<GaussianMixture> {
    let x = x.mapv(f64::from);
    let n = x.nrows();
    if n < 2 {
        return Err(TrainError::Data(format!(
            "a Gaussian fit needs at least 2 samples, got {n}"
        )));
    }
    let mean = x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let c = &x - &mean.view().insert_axis(Axis(0));
    let mut cov = c.t().dot(&c) / (n as f64 - 1.0);
    cov.diag_mut().mapv_inplace(|v| v + COV_JITTER);
    let d = x.ncols();
    let covs = cov
        .into_shape_with_order((1, d, d))
        .map_err(|e| TrainError::Other(e.to_string()))?;
    Ok(GaussianMixture::new(
        Array1::ones(1),
        mean.insert_axis(Axis(0)),
        Array3::from(covs),
    )?)
}

/// Per-element MSE of the model and the reference on held-out x̃ = x + σ̃ε at each σ̃; appends a
/// markdown table to `md` and a headline to `head`, and draws the curves into `plot` when given.
#[allow(clippy::too_many_arguments)]
pub fn denoising_error(
    model: &NetModel,
    data: &Data,
    reference: &Reference,
    sigmas: &[f64],
    plot: Option<&Path>,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let xh = data.held_out.x.mapv(f64::from);
    let (n, dim) = xh.dim();
    let _ = writeln!(md, "### Denoising error on held-out data\n");
    let _ = writeln!(
        md,
        "x̃ = x + σ̃ε for the {n} held-out samples; mean squared error per element. \
         The reference is the {}{}.\n",
        reference.name(),
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
        let mut noise = Array2::<f64>::zeros((n, dim));
        for (i, mut r) in noise.rows_mut().into_iter().enumerate() {
            let mut rng = stream_rng(NOISE_SEED, i as u64, si as u64);
            r.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
        }
        let xt = &xh + &(noise * s);
        let mse_ref = mse(&reference.denoise(xt.view(), s)?, &xh);
        // Rows through the sampler model: the same evaluation path as sampling.
        let dm = Model::<Array2<f64>>::denoise(model, &xt, s)
            .map_err(|e| TrainError::Other(format!("denoiser at σ̃ = {s}: {e}")))?;
        let mse_model = mse(&dm, &xh);
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
        json!({"reference": reference.name(), "exact": reference.is_exact(), "rows": rows, "worst_ratio": worst}),
    )
}

fn mse(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).mapv(|v| v * v).mean().unwrap_or(f64::NAN)
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
        let fit = Reference::GaussianFit(Box::new(gaussian_fit(x.view())?));
        let d = fit.denoise(array![[3.0, 0.0]].view(), 0.5)?;
        // Per axis: μ + v/(v + σ̃²)(x̃ − μ): 1 + 4/4.25·2 and −2 + 0.25/0.5·2.
        let want = [1.0 + 4.0 / 4.25 * 2.0, -2.0 + 0.5 * 2.0];
        for (g, w) in d.iter().zip(want) {
            // Sampling error of the fitted moments at n = 200k is ≈ 1e-2 relative.
            assert!((g - w).abs() < 2e-2, "{g} vs {w}");
        }
        Ok(())
    }
}
