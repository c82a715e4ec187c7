//! Batches of rows [B, n] where a state lives: host f64 arrays for ndarray states, f64 tensors
//! on the state's device for tensor states. Operators map them between signal and measurement
//! space ([`Rows::apply`], [`Rows::adjoint`]), so guidance on a GPU state never copies the
//! batch to the host per step; per-row scalars (CG's inner products) are the only reads back.

use ndarray::{Array1, Array2, Axis, Zip};
use tweedie_core::LinearSpace;

use crate::error::{Result, SamplerError};
use crate::ops::ForwardModel;

/// A batch of B rows of n values (f64), on the host or a device.
pub trait Rows: LinearSpace + Clone + Send + std::fmt::Debug {
    /// B.
    fn nrows(&self) -> usize;
    /// n.
    fn ncols(&self) -> usize;
    /// ⟨self_i, other_i⟩ for every row i (read back to the host: B numbers).
    fn row_dots(&self, other: &Self) -> Result<Vec<f64>>;
    /// Row i times c[i].
    fn scale_rows(&self, c: &[f64]) -> Result<Self>;
    /// `rows` (host values) where `self` lives.
    fn host_like(&self, rows: &Array2<f64>) -> Result<Self>;
    /// The values on the host.
    fn to_host(&self) -> Array2<f64>;
    /// A·x for every row x (the operator's device form where it has one).
    fn apply(&self, op: &dyn ForwardModel) -> Result<Self>;
    /// Aᵀ·y for every row y.
    fn adjoint(&self, op: &dyn ForwardModel) -> Result<Self>;
}

impl Rows for Array2<f64> {
    fn nrows(&self) -> usize {
        Array2::nrows(self)
    }
    fn ncols(&self) -> usize {
        Array2::ncols(self)
    }
    fn row_dots(&self, other: &Self) -> Result<Vec<f64>> {
        if self.dim() != other.dim() {
            return Err(SamplerError::Shape(format!(
                "row dots of {:?} and {:?}",
                self.dim(),
                other.dim()
            )));
        }
        Ok((self * other).sum_axis(Axis(1)).to_vec())
    }
    fn scale_rows(&self, c: &[f64]) -> Result<Self> {
        if c.len() != Array2::nrows(self) {
            return Err(SamplerError::Shape(format!(
                "{} row scales for {} rows",
                c.len(),
                Array2::nrows(self)
            )));
        }
        Ok(self * &Array1::from(c.to_vec()).insert_axis(Axis(1)))
    }
    fn host_like(&self, rows: &Array2<f64>) -> Result<Self> {
        Ok(rows.clone())
    }
    fn to_host(&self) -> Array2<f64> {
        self.clone()
    }
    fn apply(&self, op: &dyn ForwardModel) -> Result<Self> {
        op.apply(self)
    }
    fn adjoint(&self, op: &dyn ForwardModel) -> Result<Self> {
        op.adjoint(self)
    }
}

/// Batched conjugate gradients for SPD systems M_i u_i = b_i, one per row (each row its own
/// matrix, given by `matvec`), from u = 0, until every row's residual is below `tol` relative
/// to its right-hand side or after `iters` iterations.
pub fn cg<R, F>(matvec: F, b: &R, iters: usize, tol: f64) -> Result<R>
where
    R: Rows,
    F: Fn(&R) -> Result<R>,
{
    let mut u = b.zeros_like();
    let mut r = b.clone();
    let mut p = r.clone();
    let rr0 = r.row_dots(&r)?;
    let mut rr = rr0.clone();
    for _ in 0..iters {
        if rr
            .iter()
            .zip(&rr0)
            .all(|(a, b)| *a <= tol * tol * b.max(1e-300))
        {
            break;
        }
        let mp = matvec(&p)?;
        let pmp = p.row_dots(&mp)?;
        if pmp.iter().any(|v| !v.is_finite()) {
            return Err(SamplerError::Numerical("CG: non-finite curvature".into()));
        }
        let alpha: Vec<f64> = Zip::from(&Array1::from(rr.clone()))
            .and(&Array1::from(pmp))
            .map_collect(|a, b| if *b > 0.0 && *a > 0.0 { a / b } else { 0.0 })
            .to_vec();
        u = u.lincomb(1.0, &p.scale_rows(&alpha)?, 1.0);
        r = r.lincomb(1.0, &mp.scale_rows(&alpha)?, -1.0);
        let rr_new = r.row_dots(&r)?;
        let beta: Vec<f64> = rr_new
            .iter()
            .zip(&rr)
            .map(|(a, b)| if *b > 0.0 { a / b } else { 0.0 })
            .collect();
        p = r.lincomb(1.0, &p.scale_rows(&beta)?, 1.0);
        rr = rr_new;
    }
    Ok(u)
}
