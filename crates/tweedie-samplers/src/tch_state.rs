//! `tch::Tensor` states through core's [`TchTensor`] wrapper: the sampler arithmetic runs in
//! tensor ops on the tensor's device and kind; noise is drawn per sample in f64 on the CPU by
//! `tweedie_core::rng` and then converted, so a tch run matches an ndarray run draw for draw.

use ndarray::Array2;
use tch::{Device, Kind, Tensor};
use tweedie_core::space::TchTensor;

use crate::error::{Result, SamplerError};
use crate::state::State;

fn tch_err(e: tch::TchError) -> SamplerError {
    SamplerError::Numerical(format!("libtorch: {e}"))
}

impl State for TchTensor {
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
