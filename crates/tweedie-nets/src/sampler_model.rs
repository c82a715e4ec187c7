//! The samplers' model traits for a [`PrecondDenoiser`], so a trained network or a loaded
//! checkpoint samples with every tweedie-samplers integrator and guidance method.

use std::sync::{Mutex, MutexGuard};

use tch::{Kind, Tensor};
use tweedie_core::space::TchTensor;
use tweedie_samplers::{ClassModel, Model, Result, SamplerError};

use crate::error::NetsError;
use crate::precond::PrecondDenoiser;

/// A [`PrecondDenoiser`] as a sampler model: D(x̃; σ̃) in eval mode under no-grad, Jᵀv through
/// autograd, one-hot class labels for [`ClassModel`] (all-zero = unconditional, the label
/// that label dropout trains for classifier-free guidance, Ho & Salimans 2022).
///
/// libtorch tensors are `Send` but not `Sync`; the mutex makes the model shareable by the
/// samplers' threads at the cost of one uncontended lock per network evaluation.
#[derive(Debug)]
pub struct NetModel {
    inner: Mutex<PrecondDenoiser>,
    label_dim: usize,
    class: Option<usize>,
}

fn to_sampler(e: NetsError) -> SamplerError {
    match e {
        NetsError::Shape(s) => SamplerError::Shape(s),
        NetsError::InvalidConfig { key, value, reason } => {
            SamplerError::InvalidValue { key, value, reason }
        }
        NetsError::Core(c) => SamplerError::Core(c),
        other => SamplerError::Numerical(other.to_string()),
    }
}

impl NetModel {
    /// Wraps `denoiser`; `label_dim` is its number of classes (0 = unconditional).
    pub fn new(denoiser: PrecondDenoiser, label_dim: usize) -> Self {
        NetModel {
            inner: Mutex::new(denoiser),
            label_dim,
            class: None,
        }
    }

    /// The same model conditioned on `class` for plain [`Model`] calls.
    pub fn with_class(mut self, class: Option<usize>) -> Self {
        self.class = class;
        self
    }

    /// Gives the denoiser back.
    pub fn into_inner(self) -> PrecondDenoiser {
        self.inner.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, PrecondDenoiser> {
        // A panic inside libtorch while locked leaves the denoiser itself intact.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn labels(&self, x: &Tensor, class: Option<usize>) -> Result<Option<Tensor>> {
        if self.label_dim == 0 {
            return match class {
                None => Ok(None),
                Some(c) => Err(SamplerError::invalid(
                    "class",
                    c,
                    "the network is unconditional",
                )),
            };
        }
        let b = x.size().first().copied().unwrap_or(1);
        let y = Tensor::zeros([b, self.label_dim as i64], (Kind::Float, x.device()));
        if let Some(c) = class {
            if c >= self.label_dim {
                return Err(SamplerError::invalid(
                    "class",
                    c,
                    &format!("must be < label_dim = {}", self.label_dim),
                ));
            }
            let _ = y.narrow(1, c as i64, 1).fill_(1.0);
        }
        Ok(Some(y))
    }
}

impl Model<TchTensor> for NetModel {
    fn denoise(&self, x: &TchTensor, sigma: f64) -> Result<TchTensor> {
        self.denoise_class(x, sigma, self.class)
    }

    fn denoise_vjp(
        &self,
        x: &TchTensor,
        sigma: f64,
        v: &TchTensor,
    ) -> Result<(TchTensor, TchTensor)> {
        let y = self.labels(x, self.class)?;
        let (d, g) = self
            .lock()
            .vjp(x, &Tensor::from(sigma), y.as_ref(), v)
            .map_err(to_sampler)?;
        Ok((TchTensor(d), TchTensor(g)))
    }

    fn has_vjp(&self) -> bool {
        true
    }
}

impl ClassModel<TchTensor> for NetModel {
    fn denoise_class(&self, x: &TchTensor, sigma: f64, class: Option<usize>) -> Result<TchTensor> {
        let y = self.labels(x, class)?;
        let d = self
            .lock()
            .denoise_at(x, sigma, y.as_ref())
            .map_err(to_sampler)?;
        Ok(TchTensor(d))
    }
}
