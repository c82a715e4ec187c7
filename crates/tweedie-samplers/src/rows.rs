//! Batches of rows [B, n] where a state lives: host f64 arrays for ndarray states, f64 tensors
//! on the state's device for tensor states. Operators map them between signal and measurement
//! space ([`Rows::apply`], [`Rows::adjoint`]), so guidance on a GPU state never copies the
//! batch to the host per step; per-row scalars (CG's inner products) are the only reads back.

use std::sync::Mutex;

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
    /// Row idx[i] of self as row i (resampling, spreading one row per group over its members).
    fn select_rows(&self, idx: &[usize]) -> Result<Self>;
    /// The matrix product self·other ([B, n]·[n, m] = [B, m]).
    fn matmul(&self, other: &Self) -> Result<Self>;
    /// selfᵀ·other ([B, n]ᵀ·[B, m] = [n, m]).
    fn t_matmul(&self, other: &Self) -> Result<Self>;
    /// Every row minus the mean row.
    fn centered(&self) -> Self;
}

/// `row` (one host row [1, m]) repeated `b` times where `like` lives: a measurement y next
/// to a batch (copied to the device once, not per step).
pub fn repeat_row<R: Rows>(like: &R, row: &Array2<f64>, b: usize) -> Result<R> {
    let rep = row.broadcast((b, row.ncols())).ok_or_else(|| {
        SamplerError::Shape(format!("a row of shape {:?} repeated {b} times", row.dim()))
    })?;
    like.host_like(&rep.to_owned())
}

/// `row` repeated over a batch's rows where they live, made once per batch size and kept
/// (the measurement y of guided denoisers, which see one batch after another).
pub struct RepeatedRow<R> {
    row: Array2<f64>,
    cached: Mutex<Option<R>>,
}

impl<R: Rows> RepeatedRow<R> {
    /// Repeats `row` ([1, m]).
    pub fn new(row: Array2<f64>) -> Self {
        RepeatedRow {
            row,
            cached: Mutex::new(None),
        }
    }
    /// The row repeated over `like`'s rows, where `like` lives.
    pub fn like(&self, like: &R) -> Result<R> {
        let mut slot = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(y) = slot.as_ref() {
            if y.nrows() == like.nrows() {
                return Ok(y.clone());
            }
        }
        let y = repeat_row(like, &self.row, like.nrows())?;
        *slot = Some(y.clone());
        Ok(y)
    }
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
    fn select_rows(&self, idx: &[usize]) -> Result<Self> {
        if let Some(i) = idx.iter().find(|&&i| i >= Array2::nrows(self)) {
            return Err(SamplerError::Shape(format!(
                "row {i} of {} rows",
                Array2::nrows(self)
            )));
        }
        Ok(self.select(Axis(0), idx))
    }
    fn matmul(&self, other: &Self) -> Result<Self> {
        if Array2::ncols(self) != Array2::nrows(other) {
            return Err(SamplerError::Shape(format!(
                "matrix product of {:?} and {:?}",
                self.dim(),
                other.dim()
            )));
        }
        Ok(self.dot(other))
    }
    fn t_matmul(&self, other: &Self) -> Result<Self> {
        if Array2::nrows(self) != Array2::nrows(other) {
            return Err(SamplerError::Shape(format!(
                "transposed product of {:?} and {:?}",
                self.dim(),
                other.dim()
            )));
        }
        Ok(self.t().dot(other))
    }
    fn centered(&self) -> Self {
        match self.mean_axis(Axis(0)) {
            Some(m) => self - &m,
            None => self.clone(),
        }
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
