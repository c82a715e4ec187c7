//! Small dense linear algebra (Cholesky, solves, log-determinants) for the mixture.
//!
//! The mixture works in modest dimensions (≤ a few hundred), so a plain O(D³) Cholesky
//! keeps the core free of LAPACK.

use crate::error::Invalid;
use crate::error::{CoreError, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

/// Lower Cholesky factor L with A = L·Lᵀ; `name` labels the matrix in errors.
/// Rejects non-square, non-finite, asymmetric (beyond 1e-9 relative) or non-positive-definite A.
pub fn cholesky(a: ArrayView2<f64>, name: &str) -> Result<Array2<f64>> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err(CoreError::Shape(format!(
            "`{name}` must be square, got {:?}",
            a.shape()
        )));
    }
    let scale = a.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    if !scale.is_finite() || a.iter().any(|v| !v.is_finite()) {
        return Err(CoreError::invalid(
            name,
            "non-finite entry",
            "matrix entries must be finite",
        ));
    }
    for i in 0..n {
        for j in 0..i {
            if (a[[i, j]] - a[[j, i]]).abs() > 1e-9 * scale.max(1e-300) {
                return Err(CoreError::invalid(
                    name,
                    format!("[{i}][{j}] = {} vs [{j}][{i}] = {}", a[[i, j]], a[[j, i]]),
                    "matrix must be symmetric",
                ));
            }
        }
    }
    let mut l = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= l[[j, k]] * l[[j, k]];
        }
        if d.is_nan() || d <= 0.0 || !d.is_finite() {
            return Err(CoreError::NotPositiveDefinite(name.to_string()));
        }
        let djj = d.sqrt();
        l[[j, j]] = djj;
        for i in j + 1..n {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            l[[i, j]] = s / djj;
        }
    }
    Ok(l)
}

/// log det A = 2·Σ log L_ii from the Cholesky factor.
pub fn log_det_chol(l: ArrayView2<f64>) -> f64 {
    2.0 * l.diag().iter().map(|v| v.ln()).sum::<f64>()
}

/// Solves L·X = B in place for lower-triangular L and B of shape [D, N] (one solve per column).
pub fn solve_lower_mat(l: ArrayView2<f64>, b: &mut Array2<f64>) {
    let n = l.nrows();
    for i in 0..n {
        for k in 0..i {
            let lik = l[[i, k]];
            if lik != 0.0 {
                let (head, mut tail) = b.view_mut().split_at(ndarray::Axis(0), i);
                tail.row_mut(0).scaled_add(-lik, &head.row(k));
            }
        }
        let lii = l[[i, i]];
        b.row_mut(i).mapv_inplace(|v| v / lii);
    }
}

/// Solves Lᵀ·X = B in place for lower-triangular L and B of shape [D, N].
pub fn solve_upper_t_mat(l: ArrayView2<f64>, b: &mut Array2<f64>) {
    let n = l.nrows();
    for i in (0..n).rev() {
        for k in i + 1..n {
            let lki = l[[k, i]];
            if lki != 0.0 {
                let (mut head, tail) = b.view_mut().split_at(ndarray::Axis(0), k);
                head.row_mut(i).scaled_add(-lki, &tail.row(0));
            }
        }
        let lii = l[[i, i]];
        b.row_mut(i).mapv_inplace(|v| v / lii);
    }
}

/// X = A⁻¹·B for A = L·Lᵀ and B of shape [D, N].
pub fn cho_solve_mat(l: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
    let mut x = b.to_owned();
    solve_lower_mat(l, &mut x);
    solve_upper_t_mat(l, &mut x);
    x
}

/// x = A⁻¹·b for A = L·Lᵀ.
pub fn cho_solve(l: ArrayView2<f64>, b: ArrayView1<f64>) -> Array1<f64> {
    let col = b.to_owned().insert_axis(ndarray::Axis(1));
    cho_solve_mat(l, col.view()).column(0).to_owned()
}

/// A⁻¹ from A = L·Lᵀ.
pub fn cho_inverse(l: ArrayView2<f64>) -> Array2<f64> {
    cho_solve_mat(l, Array2::eye(l.nrows()).view())
}

/// max |a − b| over all entries (∞ on shape mismatch); used by tests across the crate.
pub fn max_abs_diff<D: ndarray::Dimension>(
    a: &ndarray::Array<f64, D>,
    b: &ndarray::Array<f64, D>,
) -> f64 {
    if a.shape() != b.shape() {
        return f64::INFINITY;
    }
    ndarray::Zip::from(a)
        .and(b)
        .fold(0.0_f64, |m, x, y| m.max((x - y).abs()))
}

/// (A + Aᵀ)/2: removes round-off asymmetry before a matrix is checked again.
pub fn symmetrize(a: &Array2<f64>) -> Array2<f64> {
    (a + &a.t()) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::arr2;

    #[test]
    fn cholesky_solves_and_logdet() {
        let a = arr2(&[[4.0, 2.0, 0.4], [2.0, 3.0, 0.5], [0.4, 0.5, 1.5]]);
        let l = cholesky(a.view(), "a").unwrap();
        assert!(max_abs_diff(&l.dot(&l.t()), &a) < 1e-12);
        let inv = cho_inverse(l.view());
        assert!(max_abs_diff(&inv.dot(&a), &Array2::eye(3)) < 1e-12);
        // det by cofactor expansion.
        let det = 4.0 * (3.0 * 1.5 - 0.25) - 2.0 * (2.0 * 1.5 - 0.2) + 0.4 * (2.0 * 0.5 - 1.2);
        assert_abs_diff_eq!(log_det_chol(l.view()), f64::ln(det), epsilon = 1e-12);
        let b = ndarray::arr1(&[1.0, -2.0, 0.5]);
        assert!(max_abs_diff(&a.dot(&cho_solve(l.view(), b.view())), &b) < 1e-12);
    }

    #[test]
    fn rejects_bad_matrices() {
        assert_eq!(
            cholesky(arr2(&[[1.0, 2.0], [2.0, 1.0]]).view(), "c").unwrap_err(),
            CoreError::NotPositiveDefinite("c".into())
        );
        let e = cholesky(arr2(&[[1.0, 0.5], [0.1, 1.0]]).view(), "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("symmetric") && e.contains("c"), "{e}");
        assert!(matches!(
            cholesky(arr2(&[[1.0, 0.0, 0.0]]).view(), "c"),
            Err(CoreError::Shape(_))
        ));
    }
}
