//! `tch::Tensor` states through core's [`TchTensor`] wrapper: the sampler arithmetic runs in
//! tensor ops on the tensor's device and kind; noise is drawn per sample in f64 on the CPU by
//! `tweedie_core::rng` and then converted, so a tch run matches an ndarray run draw for draw.

use ndarray::Array2;
use tch::{Device, Kind, Tensor};
use tweedie_core::space::TchTensor;

use crate::error::{tch_err, Result, SamplerError};
use crate::ops::ForwardModel;
use crate::rows::Rows;
use crate::state::State;

impl State for TchTensor {
    type Rows = TchTensor;
    fn device_rows(&self) -> TchTensor {
        let b = self.batch() as i64;
        TchTensor(self.reshape([b, -1]).to_kind(Kind::Double))
    }
    fn with_device_rows(&self, rows: &TchTensor) -> Result<Self> {
        if rows.size() != [self.batch() as i64, self.sample_len() as i64] {
            return Err(SamplerError::Shape(format!(
                "rows {:?} for a tensor of shape {:?}",
                rows.size(),
                self.size()
            )));
        }
        rows.f_reshape(self.size())
            .and_then(|t| t.f_to_kind(self.kind()))
            .and_then(|t| t.f_to_device(self.device()))
            .map(TchTensor)
            .map_err(tch_err)
    }
    fn batch(&self) -> usize {
        self.size().first().copied().unwrap_or(1) as usize
    }
    fn sample_len(&self) -> usize {
        self.numel().checked_div(self.batch()).unwrap_or(0)
    }
    fn to_rows(&self) -> Array2<f64> {
        let (b, n) = (self.batch(), self.sample_len());
        let flat = self
            .to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .contiguous()
            .reshape([-1]);
        let v = Vec::<f64>::try_from(&flat).unwrap_or_else(|_| vec![f64::NAN; b * n]);
        Array2::from_shape_vec((b, n), v).unwrap_or_else(|_| Array2::from_elem((b, n), f64::NAN))
    }
    fn with_rows(&self, rows: &Array2<f64>) -> Result<Self> {
        if rows.nrows() != self.batch() || rows.ncols() != self.sample_len() {
            return Err(SamplerError::Shape(format!(
                "rows {:?} for a tensor of shape {:?}",
                rows.shape(),
                self.size()
            )));
        }
        let v: Vec<f64> = rows.iter().copied().collect();
        let t = Tensor::f_from_slice(&v)
            .and_then(|t| t.f_reshape(self.size()))
            .and_then(|t| t.f_to_kind(self.kind()))
            .map_err(tch_err)?;
        Ok(TchTensor(t.to_device(self.device())))
    }
    fn all_finite(&self) -> bool {
        self.isfinite().all().int64_value(&[]) != 0
    }
    fn mul_exp(&self, v: &Self, b: f64) -> Result<Self> {
        if v.size() != self.size() {
            return Err(SamplerError::Shape(format!(
                "mul_exp: {:?} and {:?}",
                self.size(),
                v.size()
            )));
        }
        let f = (v.to_kind(self.kind()).to_device(self.device()) * b).exp();
        Ok(TchTensor(&**self * f))
    }
}

/// Rows [B, n] as f64 tensors on their device; operators with a tensor form
/// ([`ForwardModel::tensor_op`]) run there, others through the host.
impl Rows for TchTensor {
    fn nrows(&self) -> usize {
        self.size().first().copied().unwrap_or(0) as usize
    }
    fn ncols(&self) -> usize {
        self.size().get(1).copied().unwrap_or(0) as usize
    }
    fn row_dots(&self, other: &Self) -> Result<Vec<f64>> {
        if self.size() != other.size() {
            return Err(SamplerError::Shape(format!(
                "row dots of {:?} and {:?}",
                self.size(),
                other.size()
            )));
        }
        let d = (&**self * &**other)
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            .and_then(|t| t.f_to_device(Device::Cpu))
            .map_err(tch_err)?;
        Vec::<f64>::try_from(&d).map_err(tch_err)
    }
    fn scale_rows(&self, c: &[f64]) -> Result<Self> {
        if c.len() != Rows::nrows(self) {
            return Err(SamplerError::Shape(format!(
                "{} row scales for {} rows",
                c.len(),
                Rows::nrows(self)
            )));
        }
        let s = Tensor::f_from_slice(c)
            .and_then(|t| t.f_to_kind(self.kind()))
            .and_then(|t| t.f_to_device(self.device()))
            .and_then(|t| t.f_unsqueeze(1))
            .map_err(tch_err)?;
        Ok(TchTensor(&**self * s))
    }
    fn host_like(&self, rows: &Array2<f64>) -> Result<Self> {
        let v: Vec<f64> = rows.iter().copied().collect();
        Tensor::f_from_slice(&v)
            .and_then(|t| t.f_reshape([rows.nrows() as i64, rows.ncols() as i64]))
            .and_then(|t| t.f_to_kind(self.kind()))
            .and_then(|t| t.f_to_device(self.device()))
            .map(TchTensor)
            .map_err(tch_err)
    }
    fn to_host(&self) -> Array2<f64> {
        let (b, n) = (Rows::nrows(self), Rows::ncols(self));
        let v = Vec::<f64>::try_from(
            &self
                .to_device(Device::Cpu)
                .to_kind(Kind::Double)
                .contiguous()
                .reshape([-1]),
        )
        .unwrap_or_else(|_| vec![f64::NAN; b * n]);
        Array2::from_shape_vec((b, n), v).unwrap_or_else(|_| Array2::from_elem((b, n), f64::NAN))
    }
    fn apply(&self, op: &dyn ForwardModel) -> Result<Self> {
        match op.tensor_op() {
            Some(t) => t.apply_tensor(self).map(TchTensor),
            None => self.host_like(&op.apply(&self.to_host())?),
        }
    }
    fn adjoint(&self, op: &dyn ForwardModel) -> Result<Self> {
        match op.tensor_op() {
            Some(t) => t.adjoint_tensor(self).map(TchTensor),
            None => self.host_like(&op.adjoint(&self.to_host())?),
        }
    }
    fn select_rows(&self, idx: &[usize]) -> Result<Self> {
        let b = Rows::nrows(self);
        if let Some(i) = idx.iter().find(|&&i| i >= b) {
            return Err(SamplerError::Shape(format!("row {i} of {b} rows")));
        }
        let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        Tensor::f_from_slice(&v)
            .and_then(|t| t.f_to_device(self.device()))
            .and_then(|t| self.f_index_select(0, &t))
            .map(TchTensor)
            .map_err(tch_err)
    }
    fn matmul(&self, other: &Self) -> Result<Self> {
        if Rows::ncols(self) != Rows::nrows(other) {
            return Err(SamplerError::Shape(format!(
                "matrix product of {:?} and {:?}",
                self.size(),
                other.size()
            )));
        }
        self.f_matmul(other).map(TchTensor).map_err(tch_err)
    }
    fn t_matmul(&self, other: &Self) -> Result<Self> {
        if Rows::nrows(self) != Rows::nrows(other) {
            return Err(SamplerError::Shape(format!(
                "transposed product of {:?} and {:?}",
                self.size(),
                other.size()
            )));
        }
        self.tr().f_matmul(other).map(TchTensor).map_err(tch_err)
    }
    fn centered(&self) -> Self {
        TchTensor(&**self - self.mean_dim([0i64].as_slice(), true, self.kind()))
    }
}

/// A tch denoiser D(x̃; σ̃) given as a function of tensors, with the VJP Jᵀv = ∇_x̃⟨D(x̃; σ̃), v⟩
/// through autograd (for DPS, ΠGDM, TMP). Plain evaluations run under `no_grad`.
pub struct TchFnModel<F> {
    /// x̃ [B, …], σ̃ ↦ D(x̃; σ̃).
    pub f: F,
}

impl<F> crate::model::Model<TchTensor> for TchFnModel<F>
where
    F: Fn(&Tensor, f64) -> Tensor + Send + Sync,
{
    fn denoise(&self, x: &TchTensor, sigma: f64) -> Result<TchTensor> {
        Ok(TchTensor(tch::no_grad(|| (self.f)(x, sigma))))
    }
    fn capabilities(&self) -> crate::model::Capabilities<'_, TchTensor> {
        crate::model::Capabilities {
            vjp: Some(self),
            ..crate::model::Capabilities::none()
        }
    }
}

impl<F> crate::model::Vjp<TchTensor> for TchFnModel<F>
where
    F: Fn(&Tensor, f64) -> Tensor + Send + Sync,
{
    fn vjp(&self, x: &TchTensor, sigma: f64, v: &TchTensor) -> Result<(TchTensor, TchTensor)> {
        let xg = x.detach().set_requires_grad(true);
        let d = (self.f)(&xg, sigma);
        let inner = (&d * v.detach()).sum(Kind::Double);
        let g = Tensor::f_run_backward(&[inner], &[&xg], false, false).map_err(tch_err)?;
        let jv = g
            .into_iter()
            .next()
            .ok_or_else(|| SamplerError::Numerical("autograd returned no gradient".into()))?;
        Ok((TchTensor(d.detach()), TchTensor(jv)))
    }
}

/// ∇_x̃ log softmax(logits(x̃))_c through autograd, whatever the caller's grad mode (samplers
/// run under `no_grad`): `logits` maps x̃ [B, …] to [B, C] with each row depending on its own
/// sample only, so the gradient of the batch sum is the per-sample gradient. The softmax runs
/// in f64; the gradient comes back in x̃'s kind and device.
pub fn grad_log_softmax<F>(x: &Tensor, class: usize, classes: usize, logits: F) -> Result<Tensor>
where
    F: FnOnce(&Tensor) -> Result<Tensor>,
{
    tch::with_grad(|| {
        let xg = x.detach().set_requires_grad(true);
        let l = logits(&xg)?;
        let b = x.size().first().copied().unwrap_or(1);
        if l.size() != [b, classes as i64] {
            return Err(SamplerError::Shape(format!(
                "classifier logits of shape {:?} for a batch of {b} and {classes} classes",
                l.size()
            )));
        }
        let lp = l
            .to_kind(Kind::Double)
            .log_softmax(1, Kind::Double)
            .select(1, class as i64)
            .sum(Kind::Double);
        let g = Tensor::f_run_backward(&[lp], &[&xg], false, false).map_err(tch_err)?;
        g.into_iter()
            .next()
            .map(|g| g.to_kind(x.kind()))
            .ok_or_else(|| SamplerError::Numerical("autograd returned no gradient".into()))
    })
}

/// A tch classifier given as its logits (x̃ [B, …], σ̃) ↦ [B, C], its log-probability
/// gradient through autograd ([`grad_log_softmax`]): classifier guidance with any
/// differentiable classifier, analytic or learned.
pub struct TchFnClassifier<F> {
    /// x̃, σ̃ ↦ logits [B, C].
    pub logits: F,
    /// Number of classes C.
    pub classes: usize,
}

impl<F> crate::cond::ClassifierGradient<TchTensor> for TchFnClassifier<F>
where
    F: Fn(&Tensor, f64) -> Tensor + Send + Sync,
{
    fn classes(&self) -> usize {
        self.classes
    }
    fn grad_log_prob(&self, x: &TchTensor, sigma: f64, class: usize) -> Result<TchTensor> {
        grad_log_softmax(x, class, self.classes, |xg| Ok((self.logits)(xg, sigma))).map(TchTensor)
    }
}
