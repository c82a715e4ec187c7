//! The samplers' model traits for a [`PrecondDenoiser`], so a trained network or a loaded
//! checkpoint samples with every tweedie-samplers integrator and guidance method, on tensor
//! states (the CLI) or f64 ndarray states (training evaluation).

use std::sync::{Arc, Mutex, MutexGuard};
use tweedie_core::Invalid;

use ndarray::{Array2, ArrayD, ArrayViewD, IxDyn};
use tch::{Device, Kind, Tensor};
use tweedie_core::space::TchTensor;
use tweedie_samplers::{
    Capabilities, ClassCapabilities, ClassLearnedVariance, ClassModel, LearnedVariance, Model,
    ModelError, Result, SamplerError, SigmaRounding, Vjp,
};

use crate::error::{NetsError, Result as NetsResult};
use crate::precond::{variance_fraction, PrecondDenoiser};

/// A [`PrecondDenoiser`] as a sampler model: D(x̃; σ̃) in eval mode under no-grad, Jᵀv through
/// autograd, one-hot class labels for [`ClassModel`] (all-zero = unconditional, the label
/// that label dropout trains for classifier-free guidance, Ho & Salimans 2022), and per-row
/// labels for a batch ([`NetModel::set_labels`]). A learned-variance network (2C output
/// channels, iDDPM) also supplies v = (raw + 1)/2 to the DDPM ancestral sampler.
///
/// Capabilities on every state type: σ̃ rounding (iDDPM's u-grid, as the preconditioning
/// evaluates it; EDM's stochastic sampler rounds σ̂ through it, as NVlabs/edm does); on tensor
/// and `ArrayD` states the learned variance; on tensor states the VJP.
///
/// libtorch tensors are `Send` but not `Sync`; the mutexes make the model shareable by the
/// samplers' threads at the cost of one uncontended lock per network evaluation.
#[derive(Debug)]
pub struct NetModel {
    inner: Mutex<PrecondDenoiser>,
    label_dim: usize,
    class: Option<usize>,
    /// One-hot labels of the next batch's rows; they override `class` while set.
    row_labels: Mutex<Option<Tensor>>,
    /// Low-resolution fields of the next batch's rows [B, C, H/f, W/f], for a conditioned
    /// network ([`NetModel::set_condition`]); shared with its [`ConditionSlot`]s.
    condition: Arc<Mutex<Option<Tensor>>>,
    /// Where ndarray states are evaluated (tensor states stay on their own device).
    device: Device,
}

/// Sets the per-batch conditions of the [`NetModel`] it came from
/// ([`NetModel::condition_slot`]), moved to that model's device.
#[derive(Debug, Clone)]
pub struct ConditionSlot {
    slot: Arc<Mutex<Option<Tensor>>>,
    device: Device,
}

impl ConditionSlot {
    /// Low-resolution fields [B, C, H/f, W/f] of the next batch's rows; `None` clears them.
    pub fn set(&self, condition: Option<Tensor>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) =
            condition.map(|c| c.to_device(self.device));
    }
}

/// One-hot float labels [B, C] on `device`; a label outside 0..C is an error.
pub fn one_hot(labels: &[i64], classes: usize, device: Device) -> NetsResult<Tensor> {
    if let Some(l) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
        return Err(NetsError::invalid(
            "label",
            l,
            format!("must lie in 0..{classes}"),
        ));
    }
    let idx = Tensor::from_slice(labels).to_device(device);
    Ok(idx.one_hot(classes as i64).to_kind(Kind::Float))
}

/// A network error as a sampler error: the shared kinds (shape, invalid value, math core) map
/// to the same kinds, anything else (libtorch, checkpoints, devices) travels whole as a
/// [`ModelError`] that keeps its message and downcasts back to the [`NetsError`].
impl From<NetsError> for SamplerError {
    fn from(e: NetsError) -> Self {
        match e {
            NetsError::Shape(s) => SamplerError::Shape(s),
            NetsError::InvalidValue(v) => SamplerError::InvalidValue(v),
            NetsError::Core(c) => SamplerError::Core(c),
            other => SamplerError::Model(ModelError::new(other)),
        }
    }
}

fn to_sampler(e: NetsError) -> SamplerError {
    e.into()
}

impl NetModel {
    /// Wraps `denoiser`; `label_dim` is its number of classes (0 = unconditional).
    pub fn new(denoiser: PrecondDenoiser, label_dim: usize) -> Self {
        NetModel {
            inner: Mutex::new(denoiser),
            label_dim,
            class: None,
            row_labels: Mutex::new(None),
            condition: Arc::new(Mutex::new(None)),
            device: Device::Cpu,
        }
    }

    /// The device ndarray states are moved to for the network (default CPU): where the
    /// denoiser's weights live.
    pub fn on_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Sets the classes of the next batch's rows (`None`: back to the model's class); ignored
    /// by unconditional networks.
    pub fn set_labels(&self, labels: Option<&[i64]>) -> NetsResult<()> {
        let t = match labels {
            Some(l) if self.label_dim > 0 => Some(one_hot(l, self.label_dim, self.device)?),
            _ => None,
        };
        *self.row_labels.lock().unwrap_or_else(|p| p.into_inner()) = t;
        Ok(())
    }

    /// Sets the conditions of the next batch's rows: low-resolution fields [B, C, H/f, W/f]
    /// (checked by the denoiser against its conditioning at each call); `None` clears them.
    pub fn set_condition(&self, condition: Option<Tensor>) {
        self.condition_slot().set(condition);
    }

    /// A handle that sets this model's conditions ([`NetModel::set_condition`]) after the
    /// model itself has been moved into a wrapper (CFG, classifier guidance, a boxed model).
    pub fn condition_slot(&self) -> ConditionSlot {
        ConditionSlot {
            slot: Arc::clone(&self.condition),
            device: self.device,
        }
    }

    /// What the network is conditioned on, if anything.
    pub fn conditioning(&self) -> Option<crate::Conditioning> {
        self.lock().conditioning().cloned()
    }

    /// The current condition (a shallow copy), on `x`'s device.
    fn current_condition(&self, x: &Tensor) -> Option<Tensor> {
        self.condition
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.to_device(x.device()))
    }

    /// D(x̃; σ̃) on a tensor batch (σ̃ [B] or scalar) with the current labels, no gradients.
    pub fn denoise_tensor(&self, x: &Tensor, sigma: &Tensor) -> NetsResult<Tensor> {
        Ok(self.denoise_tensor_with_variance(x, sigma)?.0)
    }

    /// As [`NetModel::denoise_tensor`], plus v = (raw + 1)/2 of a learned-variance network.
    pub fn denoise_tensor_with_variance(
        &self,
        x: &Tensor,
        sigma: &Tensor,
    ) -> NetsResult<(Tensor, Option<Tensor>)> {
        let y = self.current_labels(x, self.class)?;
        let cond = self.current_condition(x);
        let (d, raw) = tch::no_grad(|| {
            self.lock()
                .forward_conditioned(x, sigma, y.as_ref(), None, cond.as_ref(), false)
        })?;
        Ok((d, raw.map(|r| variance_fraction(&r))))
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

    /// The row labels when set (checked against the batch), else the one-hot `class`.
    fn current_labels(&self, x: &Tensor, class: Option<usize>) -> NetsResult<Option<Tensor>> {
        let b = x.size().first().copied().unwrap_or(1);
        if let Some(y) = self
            .row_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if y.size()[0] != b {
                return Err(NetsError::Shape(format!(
                    "{} row labels set for a batch of {b}",
                    y.size()[0]
                )));
            }
            return Ok(Some(y.to_device(x.device())));
        }
        self.labels(x, class)
    }

    fn labels(&self, x: &Tensor, class: Option<usize>) -> NetsResult<Option<Tensor>> {
        if self.label_dim == 0 {
            return match class {
                None => Ok(None),
                Some(c) => Err(NetsError::invalid(
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
                return Err(NetsError::invalid(
                    "class",
                    c,
                    format!("must be < label_dim = {}", self.label_dim),
                ));
            }
            let _ = y.narrow(1, c as i64, 1).fill_(1.0);
        }
        Ok(Some(y))
    }

    /// The state as an f64 tensor on the model's device: the network itself runs in f32, but
    /// the skip path c_skip·x̃ then stays in f64, so ODE solves are not floored by f32 rounding.
    fn tensor_of(&self, x: &ArrayViewD<f64>) -> Tensor {
        let shape: Vec<i64> = x.shape().iter().map(|&s| s as i64).collect();
        let flat: Vec<f64> = x.iter().copied().collect();
        Tensor::from_slice(&flat)
            .view(shape.as_slice())
            .to_device(self.device)
    }
}

/// A tensor back as an f64 ndarray of `shape`.
fn array_of(t: &Tensor, shape: &[usize]) -> Result<ArrayD<f64>> {
    let v = Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .flatten(0, -1),
    )
    .map_err(|e| to_sampler(NetsError::Torch(e)))?;
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| SamplerError::Shape(e.to_string()))
}

impl Model<TchTensor> for NetModel {
    fn denoise(&self, x: &TchTensor, sigma: f64) -> Result<TchTensor> {
        // Through the same path as every other state, so row labels apply here too.
        self.denoise_tensor(x, &Tensor::from(sigma))
            .map(TchTensor)
            .map_err(to_sampler)
    }

    fn capabilities(&self) -> Capabilities<'_, TchTensor> {
        Capabilities {
            vjp: Some(self),
            learned_variance: Some(self),
            sigma_rounding: Some(self),
            ..Capabilities::none()
        }
    }
}

impl LearnedVariance<TchTensor> for NetModel {
    fn denoise_variance(
        &self,
        x: &TchTensor,
        sigma: f64,
    ) -> Result<(TchTensor, Option<TchTensor>)> {
        let (d, v) = self
            .denoise_tensor_with_variance(x, &Tensor::from(sigma))
            .map_err(to_sampler)?;
        Ok((TchTensor(d), v.map(TchTensor)))
    }
}

impl Vjp<TchTensor> for NetModel {
    fn vjp(&self, x: &TchTensor, sigma: f64, v: &TchTensor) -> Result<(TchTensor, TchTensor)> {
        let y = self.current_labels(x, self.class).map_err(to_sampler)?;
        let cond = self.current_condition(x);
        let (d, g) = self
            .lock()
            .vjp_conditioned(x, &Tensor::from(sigma), y.as_ref(), cond.as_ref(), v)
            .map_err(to_sampler)?;
        Ok((TchTensor(d), TchTensor(g)))
    }
}

impl SigmaRounding for NetModel {
    fn rounded(&self, sigma: f64) -> f64 {
        self.lock().round_sigma(sigma)
    }
}

impl ClassModel<TchTensor> for NetModel {
    fn denoise_class(&self, x: &TchTensor, sigma: f64, class: Option<usize>) -> Result<TchTensor> {
        Ok(self.denoise_class_variance(x, sigma, class)?.0)
    }

    fn class_capabilities(&self) -> ClassCapabilities<'_, TchTensor> {
        ClassCapabilities {
            learned_variance: Some(self),
            sigma_rounding: Some(self),
        }
    }
}

impl ClassLearnedVariance<TchTensor> for NetModel {
    fn denoise_class_variance(
        &self,
        x: &TchTensor,
        sigma: f64,
        class: Option<usize>,
    ) -> Result<(TchTensor, Option<TchTensor>)> {
        let y = self.labels(x, class).map_err(to_sampler)?;
        let cond = self.current_condition(x);
        let (d, raw) = tch::no_grad(|| {
            self.lock().forward_conditioned(
                x,
                &Tensor::from(sigma),
                y.as_ref(),
                None,
                cond.as_ref(),
                false,
            )
        })
        .map_err(to_sampler)?;
        Ok((TchTensor(d), raw.map(|r| TchTensor(variance_fraction(&r)))))
    }
}

/// f64 ndarray states (training evaluation): the network runs in f32 on the model's device.
impl Model<ArrayD<f64>> for NetModel {
    fn denoise(&self, x: &ArrayD<f64>, sigma: f64) -> Result<ArrayD<f64>> {
        Ok(self.denoise_view(&x.view(), sigma)?.0)
    }

    fn capabilities(&self) -> Capabilities<'_, ArrayD<f64>> {
        Capabilities {
            learned_variance: Some(self),
            sigma_rounding: Some(self),
            ..Capabilities::none()
        }
    }
}

impl LearnedVariance<ArrayD<f64>> for NetModel {
    fn denoise_variance(
        &self,
        x: &ArrayD<f64>,
        sigma: f64,
    ) -> Result<(ArrayD<f64>, Option<ArrayD<f64>>)> {
        self.denoise_view(&x.view(), sigma)
    }
}

impl NetModel {
    /// D (and v of a learned-variance network) for an f64 batch view shaped [B, sample shape…].
    fn denoise_view(
        &self,
        x: &ArrayViewD<f64>,
        sigma: f64,
    ) -> Result<(ArrayD<f64>, Option<ArrayD<f64>>)> {
        let b = x.shape().first().copied().unwrap_or(0) as i64;
        let sig = Tensor::full([b], sigma, (Kind::Double, Device::Cpu));
        let (d, v) = self
            .denoise_tensor_with_variance(&self.tensor_of(x), &sig)
            .map_err(to_sampler)?;
        let shape = x.shape();
        Ok((
            array_of(&d, shape)?,
            v.map(|v| array_of(&v, shape)).transpose()?,
        ))
    }
}

/// Flat f64 rows [B, C·H·W] (benchmarks, mixtures-style tooling): each row is reshaped to the
/// network's sample shape and back.
impl Model<Array2<f64>> for NetModel {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> Result<Array2<f64>> {
        let (b, n) = x.dim();
        let shape = self.lock().sample_shape().map(<[i64]>::to_vec);
        let Some(shape) = shape else {
            return Err(SamplerError::Shape(
                "rows need a network built from a config (its sample shape is unknown)".into(),
            ));
        };
        let numel: i64 = shape.iter().product();
        if n as i64 != numel {
            return Err(SamplerError::Shape(format!(
                "rows of {n} values for samples of shape {shape:?}"
            )));
        }
        let dims: Vec<usize> = std::iter::once(b)
            .chain(shape.iter().map(|&d| d as usize))
            .collect();
        let xd = x
            .view()
            .into_shape_with_order(IxDyn(&dims))
            .map_err(|e| SamplerError::Shape(e.to_string()))?;
        let (d, _) = self.denoise_view(&xd, sigma)?;
        d.into_shape_with_order((b, n))
            .map_err(|e| SamplerError::Shape(e.to_string()))
    }

    fn capabilities(&self) -> Capabilities<'_, Array2<f64>> {
        Capabilities {
            sigma_rounding: Some(self),
            ..Capabilities::none()
        }
    }
}
