//! Batches of rows [B, n] where a state lives: host f64 arrays for ndarray states, f64 tensors
//! on the state's device for tensor states. Operators map them between signal and measurement
//! space ([`Rows::apply`], [`Rows::adjoint`]), so guidance on a GPU state never copies the
//! batch to the host per step; per-row scalars (CG's inner products) are the only reads back.

use std::sync::Mutex;

use ndarray::{Array1, Array2, Axis};
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

/// What [`cg_solve`] reached: the solution and how far its worst row is from its tolerance.
#[derive(Debug, Clone)]
pub struct CgSolve<R> {
    /// The solution, one row per right-hand side.
    pub u: R,
    /// Whether every row's residual met the tolerance.
    pub converged: bool,
    /// Iterations run (the batch's; a row stops changing once it has converged).
    pub iterations: usize,
    /// The largest ‖r_i‖/‖b_i‖ over rows (recursive residual; 0 for a zero right-hand side).
    pub worst_residual: f64,
}

impl<R> CgSolve<R> {
    /// The solution if every row converged, else [`SamplerError::NotConverged`].
    pub fn converged_or_err(self, tol: f64) -> Result<R> {
        if self.converged {
            Ok(self.u)
        } else {
            Err(SamplerError::NotConverged {
                iterations: self.iterations,
                residual: self.worst_residual,
                tol,
            })
        }
    }
}

/// Batched conjugate gradients for SPD systems M_i u_i = b_i, one per row (each row its own
/// matrix, given by `matvec`), from u = 0. A row is frozen once its residual is below `tol`
/// relative to its right-hand side: iterating on a residual that is rounding noise divides
/// by a curvature that is rounding too, and the row's u drifts (by 1e16 along the null
/// direction of a singular M). Stops when every row has converged or after `iters`
/// iterations; [`CgSolve::converged`] says which.
pub fn cg_solve<R, F>(matvec: F, b: &R, iters: usize, tol: f64) -> Result<CgSolve<R>>
where
    R: Rows,
    F: Fn(&R) -> Result<R>,
{
    let mut u = b.zeros_like();
    let mut r = b.clone();
    let mut p = r.clone();
    let rr0 = r.row_dots(&r)?;
    let mut rr = rr0.clone();
    let met = |rr: &[f64]| -> Vec<bool> {
        rr.iter()
            .zip(&rr0)
            .map(|(a, b)| *a <= tol * tol * b.max(1e-300))
            .collect()
    };
    let mut done = met(&rr);
    let mut iterations = 0;
    while iterations < iters && done.iter().any(|d| !d) {
        iterations += 1;
        let mp = matvec(&p)?;
        let pmp = p.row_dots(&mp)?;
        if pmp.iter().any(|v| !v.is_finite()) {
            return Err(SamplerError::Numerical("CG: non-finite curvature".into()));
        }
        let alpha: Vec<f64> = (0..rr.len())
            .map(|i| {
                let (a, b) = (rr[i], pmp[i]);
                if !done[i] && b > 0.0 && a > 0.0 {
                    a / b
                } else {
                    0.0
                }
            })
            .collect();
        u = u.lincomb(1.0, &p.scale_rows(&alpha)?, 1.0);
        r = r.lincomb(1.0, &mp.scale_rows(&alpha)?, -1.0);
        let rr_new = r.row_dots(&r)?;
        let now = met(&rr_new);
        let beta: Vec<f64> = (0..rr.len())
            .map(|i| {
                if done[i] || now[i] || rr[i] <= 0.0 {
                    0.0
                } else {
                    rr_new[i] / rr[i]
                }
            })
            .collect();
        p = r.lincomb(1.0, &p.scale_rows(&beta)?, 1.0);
        for (d, n) in done.iter_mut().zip(now) {
            *d |= n;
        }
        rr = rr_new;
    }
    let worst_residual = rr
        .iter()
        .zip(&rr0)
        .map(|(a, b)| if *b > 0.0 { (a / b).sqrt() } else { 0.0 })
        .fold(0.0, f64::max);
    Ok(CgSolve {
        u,
        converged: done.iter().all(|d| *d),
        iterations,
        worst_residual,
    })
}

/// [`cg_solve`] that must converge: a row still above `tol` after `iters` iterations is
/// [`SamplerError::NotConverged`] (an exact solve that stopped early is a wrong answer).
pub fn cg<R, F>(matvec: F, b: &R, iters: usize, tol: f64) -> Result<R>
where
    R: Rows,
    F: Fn(&R) -> Result<R>,
{
    cg_solve(matvec, b, iters, tol)?.converged_or_err(tol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// u ↦ u·diag(d) for every row.
    fn diag(d: Array1<f64>) -> impl Fn(&Array2<f64>) -> Result<Array2<f64>> {
        move |u: &Array2<f64>| Ok(u * &d)
    }

    /// M = diag(1, 4, 16). Row 0, b = (1, 1, 0): one step gives u = (2/5)b, residual
    /// (0.6, −0.6, 0), 0.6 of ‖b‖, under the tolerance 0.7: frozen there, although row 1
    /// (b = (1, 1, 1), 0.93 of ‖b‖ after one step) needs more steps, which would take row 0 to
    /// its exact solution (1, 1/4, 0) on its second step.
    #[test]
    fn a_converged_row_stops_where_it_converged() -> Result<()> {
        let b = array![[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]];
        let s = cg_solve(diag(array![1.0, 4.0, 16.0]), &b, 10, 0.7)?;
        assert!(s.converged);
        assert!(s.iterations >= 2, "{} iterations", s.iterations);
        assert_eq!(s.u.row(0), array![0.4, 0.4, 0.0]);
        let alone = cg_solve(
            diag(array![1.0, 4.0, 16.0]),
            &b.slice(ndarray::s![1..2, ..]).to_owned(),
            10,
            0.7,
        )?;
        assert_eq!(s.u.row(1), alone.u.row(0));
        Ok(())
    }

    /// M = diag(1, …, 10), b = 1: CG needs 10 steps (10 distinct eigenvalues); at 3 it has not
    /// converged, which [`cg`] reports with the iterations and the residual, and [`cg_solve`]
    /// flags; a zero right-hand side has converged from the start.
    #[test]
    fn the_iteration_limit_is_reported() -> Result<()> {
        let d = Array1::from_iter((1..=10).map(f64::from));
        let b = Array2::<f64>::ones((1, 10));
        let s = cg_solve(diag(d.clone()), &b, 3, 1e-12)?;
        assert!(!s.converged);
        assert_eq!(s.iterations, 3);
        assert!(s.worst_residual > 1e-3, "residual {}", s.worst_residual);
        match cg(diag(d.clone()), &b, 3, 1e-12) {
            Err(SamplerError::NotConverged {
                iterations: 3,
                residual,
                tol,
            }) => {
                assert_eq!((residual, tol), (s.worst_residual, 1e-12));
            }
            other => panic!("{other:?}"),
        }
        let text = cg(diag(d.clone()), &b, 3, 1e-12).unwrap_err().to_string();
        assert!(
            text.contains("did not converge") && text.contains("after 3 iterations"),
            "{text}"
        );
        let u = cg(diag(d.clone()), &b, 12, 1e-12)?;
        let exact = d.mapv(|x| 1.0 / x);
        assert!((&u.row(0) - &exact).iter().all(|e| e.abs() < 1e-12), "{u}");
        let zero = cg_solve(diag(d), &Array2::zeros((1, 10)), 0, 1e-12)?;
        assert!(zero.converged && zero.iterations == 0);
        Ok(())
    }
}
