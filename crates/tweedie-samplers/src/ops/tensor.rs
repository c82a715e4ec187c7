//! The operators of [`crate::ops`] as tensor ops on the rows' device ([`TensorOp`]): a
//! gather/scatter for masks, average pooling and its block repeat for downsampling, a grouped
//! convolution and its transpose for blurs (circular padding for periodic ones), a matrix
//! product for matrices. Constants (indices, kernels, matrices) are copied to a device once and
//! kept. Each equals its host form to f64 rounding (tested in `tests/tch_agreement.rs`).

use tch::{Kind, Tensor};

use super::{Blur, Boundary, Downsample, Mask, MatrixOp, TensorOp};
use crate::error::{tch_err, Result, SamplerError};

/// Checks a row tensor's width.
fn check_width(t: &Tensor, n: usize, what: &str) -> Result<i64> {
    match t.size().as_slice() {
        [b, w] if *w == n as i64 => Ok(*b),
        other => Err(SamplerError::Shape(format!(
            "{what}: rows of shape {other:?}, the operator expects [B, {n}]"
        ))),
    }
}

fn cpu_f64(v: &[f64], shape: &[i64]) -> Result<Tensor> {
    Tensor::f_from_slice(v)
        .and_then(|t| t.f_reshape(shape))
        .map_err(tch_err)
}

impl TensorOp for MatrixOp {
    fn apply_tensor(&self, x: &Tensor) -> Result<Tensor> {
        check_width(x, self.a.ncols(), "MatrixOp::apply")?;
        let a = self.device_a(x)?;
        x.f_matmul(&a.tr()).map_err(tch_err)
    }
    fn adjoint_tensor(&self, y: &Tensor) -> Result<Tensor> {
        check_width(y, self.a.nrows(), "MatrixOp::adjoint")?;
        let a = self.device_a(y)?;
        y.f_matmul(&a).map_err(tch_err)
    }
}

impl MatrixOp {
    fn device_a(&self, like: &Tensor) -> Result<Tensor> {
        self.on_device.get(like.device(), like.kind(), || {
            let a = self.a.as_standard_layout();
            cpu_f64(
                a.as_slice().unwrap_or(&[]),
                &[self.a.nrows() as i64, self.a.ncols() as i64],
            )
        })
    }
}

impl Mask {
    fn device_idx(&self, like: &Tensor) -> Result<Tensor> {
        self.on_device.get(like.device(), Kind::Int64, || {
            let v: Vec<i64> = self.observed().iter().map(|&i| i as i64).collect();
            Ok(Tensor::from_slice(&v))
        })
    }
}

impl TensorOp for Mask {
    fn apply_tensor(&self, x: &Tensor) -> Result<Tensor> {
        check_width(x, self.n, "Mask::apply")?;
        x.f_index_select(1, &self.device_idx(x)?).map_err(tch_err)
    }
    fn adjoint_tensor(&self, y: &Tensor) -> Result<Tensor> {
        let b = check_width(y, self.observed().len(), "Mask::adjoint")?;
        Tensor::zeros([b, self.n as i64], (y.kind(), y.device()))
            .f_index_copy(1, &self.device_idx(y)?, y)
            .map_err(tch_err)
    }
}

impl TensorOp for Downsample {
    fn apply_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let b = check_width(x, self.c * self.h * self.w, "Downsample::apply")?;
        let f = self.f as i64;
        x.f_reshape([b, self.c as i64, self.h as i64, self.w as i64])
            .and_then(|t| t.f_avg_pool2d([f, f], [f, f], [0, 0], false, true, None))
            .and_then(|t| t.f_reshape([b, -1]))
            .map_err(tch_err)
    }
    fn adjoint_tensor(&self, y: &Tensor) -> Result<Tensor> {
        let (ho, wo) = ((self.h / self.f) as i64, (self.w / self.f) as i64);
        let b = check_width(
            y,
            self.c * (self.h / self.f) * (self.w / self.f),
            "Downsample::adjoint",
        )?;
        let (c, f) = (self.c as i64, self.f as i64);
        // Each block average spread as y/f² over its f×f block.
        y.f_reshape([b, c, ho, 1, wo, 1])
            .and_then(|t| t.f_expand([b, c, ho, f, wo, f], false))
            .and_then(|t| t.f_reshape([b, -1]))
            .map(|t| t / (f * f) as f64)
            .map_err(tch_err)
    }
}

impl Blur {
    /// The kernel as conv2d weights [C, 1, k, k] (one group per channel).
    fn device_kernel(&self, like: &Tensor) -> Result<Tensor> {
        self.on_device.get(like.device(), like.kind(), || {
            let k = self.k.as_standard_layout();
            let n = self.k.nrows() as i64;
            cpu_f64(k.as_slice().unwrap_or(&[]), &[1, 1, n, n])?
                .f_repeat([self.c as i64, 1, 1, 1])
                .map_err(tch_err)
        })
    }

    /// Whether the tensor form exists: circular padding needs r ≤ H and r ≤ W.
    pub(crate) fn has_tensor_form(&self) -> bool {
        self.boundary == Boundary::Zero || (self.r <= self.h && self.r <= self.w)
    }

    /// Correlation of [B, C·H·W] rows with `weight`, zero or circular padding r.
    fn correlate(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let b = check_width(x, self.c * self.h * self.w, "Blur")?;
        let (c, r) = (self.c as i64, self.r as i64);
        let x4 = x
            .f_reshape([b, c, self.h as i64, self.w as i64])
            .map_err(tch_err)?;
        let out = match self.boundary {
            Boundary::Zero => x4.f_conv2d(weight, None::<Tensor>, [1, 1], [r, r], [1, 1], c),
            Boundary::Periodic => x4
                .f_pad([r, r, r, r], "circular", None)
                .and_then(|p| p.f_conv2d(weight, None::<Tensor>, [1, 1], [0, 0], [1, 1], c)),
        };
        out.and_then(|t| t.f_reshape([b, -1])).map_err(tch_err)
    }
}

impl TensorOp for Blur {
    fn apply_tensor(&self, x: &Tensor) -> Result<Tensor> {
        self.correlate(x, &self.device_kernel(x)?)
    }
    fn adjoint_tensor(&self, y: &Tensor) -> Result<Tensor> {
        let w = self.device_kernel(y)?;
        match self.boundary {
            // The adjoint of a zero-padded correlation is the transposed convolution.
            Boundary::Zero => {
                let b = check_width(y, self.c * self.h * self.w, "Blur::adjoint")?;
                let (c, r) = (self.c as i64, self.r as i64);
                y.f_reshape([b, c, self.h as i64, self.w as i64])
                    .and_then(|t| {
                        t.f_conv_transpose2d(&w, None::<Tensor>, [1, 1], [r, r], [0, 0], c, [1, 1])
                    })
                    .and_then(|t| t.f_reshape([b, -1]))
                    .map_err(tch_err)
            }
            // A circular correlation's adjoint correlates with the flipped kernel.
            Boundary::Periodic => self.correlate(y, &w.f_flip([2, 3]).map_err(tch_err)?),
        }
    }
}
