//! The analytic Gaussian mixture (core's [`GaussianMixture`]) as a sampler model: closed-form
//! denoiser E[x₀ | x̃], its vector–Jacobian product, exact marginal draws and the exact
//! posterior for y = A·x₀ + n. The formulas live in `tweedie_core::mixture`; this module only
//! states the capabilities.

use ndarray::Array1;
use tweedie_core::mixture::GaussianMixture;

use crate::error::{Result, SamplerError};
use crate::model::{
    Capabilities, ClassCapabilities, ClassModel, ExactMarginal, ExactPosterior, Model, Vjp,
};
use crate::ops::ForwardModel;
use crate::state::State;

impl<S: State> Model<S> for GaussianMixture {
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

impl<S: State> Vjp<S> for GaussianMixture {
    fn vjp(&self, x: &S, sigma: f64, v: &S) -> Result<(S, S)> {
        let (d, jv) = self.denoise_vjp_rows(&x.to_rows(), sigma, &v.to_rows());
        Ok((x.with_rows(&d)?, x.with_rows(&jv)?))
    }
}

impl<S: State> ExactPosterior<S> for GaussianMixture {
    fn posterior(&self, op: &dyn ForwardModel, y: &Array1<f64>) -> Result<Box<dyn Model<S>>> {
        let a = op.matrix()?;
        Ok(Box::new(GaussianMixture::posterior(
            self,
            &a,
            y,
            op.noise_std(),
        )?))
    }
}

impl<S: State> ExactMarginal<S> for GaussianMixture {
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

impl<S: State> ClassModel<S> for GaussianMixture {
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
