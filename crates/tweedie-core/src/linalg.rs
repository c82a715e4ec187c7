//! Dense linear algebra for the mixture (Cholesky, triangular solves, log-determinants):
//! the one home for linear algebra in tweedie. The factorisation and solves are `faer`'s
//! (blocked, SIMD, pure Rust); this module adds input checks with errors that name the
//! matrix and converts from and to `ndarray`.

use crate::error::Invalid;
use crate::error::{CoreError, Result};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Mat, MatRef, Par, Side};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

/// Copies an ndarray matrix into a faer one.
fn to_faer(a: ArrayView2<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

/// Copies a faer matrix into an ndarray one.
fn from_faer(m: MatRef<f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

/// The checks every symmetric factorisation makes first: square, finite, symmetric to 1e-9 of
/// the largest entry. Returns the order n.
fn check_symmetric(a: ArrayView2<f64>, name: &str) -> Result<usize> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err(CoreError::Shape(format!(
            "`{name}` must be square, got {:?}",
            a.shape()
        )));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(CoreError::invalid(
            name,
            "non-finite entry",
            "matrix entries must be finite",
        ));
    }
    let scale = a.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
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
    Ok(n)
}

/// Lower Cholesky factor L with A = L·Lᵀ; `name` labels the matrix in errors.
/// Rejects non-square, non-finite, asymmetric (beyond 1e-9 relative) or non-positive-definite A.
pub fn cholesky(a: ArrayView2<f64>, name: &str) -> Result<Array2<f64>> {
    check_symmetric(a, name)?;
    let llt = to_faer(a)
        .llt(Side::Lower)
        .map_err(|_| CoreError::NotPositiveDefinite(name.to_string()))?;
    let l = from_faer(llt.L());
    // faer stops at a non-positive pivot; a pivot that is positive but not finite cannot
    // happen for finite input, but a zero one would make every solve divide by zero.
    if l.diag().iter().any(|&d| !(d > 0.0 && d.is_finite())) {
        return Err(CoreError::NotPositiveDefinite(name.to_string()));
    }
    Ok(l)
}

/// log det A = 2·Σ log L_ii from the Cholesky factor.
pub fn log_det_chol(l: ArrayView2<f64>) -> f64 {
    2.0 * l.diag().iter().map(|v| v.ln()).sum::<f64>()
}

/// Solves L·X = B in place for lower-triangular L and B of shape [D, N] (one solve per column).
pub fn solve_lower_mat(l: ArrayView2<f64>, b: &mut Array2<f64>) {
    let lf = to_faer(l);
    let mut x = to_faer(b.view());
    solve_lower_triangular_in_place(lf.as_ref(), x.as_mut(), Par::Seq);
    b.assign(&from_faer(x.as_ref()));
}

/// Solves Lᵀ·X = B in place for lower-triangular L and B of shape [D, N].
pub fn solve_upper_t_mat(l: ArrayView2<f64>, b: &mut Array2<f64>) {
    let lf = to_faer(l);
    let mut x = to_faer(b.view());
    solve_upper_triangular_in_place(lf.as_ref().transpose(), x.as_mut(), Par::Seq);
    b.assign(&from_faer(x.as_ref()));
}

/// X = A⁻¹·B for A = L·Lᵀ and B of shape [D, N].
pub fn cho_solve_mat(l: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
    let lf = to_faer(l);
    let mut x = to_faer(b);
    solve_lower_triangular_in_place(lf.as_ref(), x.as_mut(), Par::Seq);
    solve_upper_triangular_in_place(lf.as_ref().transpose(), x.as_mut(), Par::Seq);
    from_faer(x.as_ref())
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

/// A faer view of an ndarray matrix without copying when it is row- or column-major (the
/// transpose of a standard array, `a.t()`, is the common second case).
fn faer_view<'a>(a: &ArrayView2<'a, f64>) -> Option<MatRef<'a, f64>> {
    let (m, n) = a.dim();
    if let Some(s) = (*a).to_slice() {
        return Some(MatRef::from_row_major_slice(s, m, n));
    }
    let t = (*a).reversed_axes();
    t.to_slice()
        .map(|s| MatRef::from_row_major_slice(s, n, m).transpose())
}

/// C = A·B with faer's blocked kernels (A [m, k], B [k, n]); `None` when the inner sizes differ.
/// Views of row- or column-major arrays are read in place, other layouts are copied once.
pub fn matmul(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Option<Array2<f64>> {
    if a.ncols() != b.nrows() {
        return None;
    }
    let (ac, bc);
    let fa = match faer_view(&a) {
        Some(v) => v,
        None => {
            ac = a.as_standard_layout().into_owned();
            MatRef::from_row_major_slice(ac.as_slice()?, ac.nrows(), ac.ncols())
        }
    };
    let fb = match faer_view(&b) {
        Some(v) => v,
        None => {
            bc = b.as_standard_layout().into_owned();
            MatRef::from_row_major_slice(bc.as_slice()?, bc.nrows(), bc.ncols())
        }
    };
    let mut out = Array2::<f64>::zeros((a.nrows(), b.ncols()));
    let (m, n) = out.dim();
    let dst = faer::MatMut::from_row_major_slice_mut(out.as_slice_mut()?, m, n);
    faer::linalg::matmul::matmul(dst, faer::Accum::Replace, fa, fb, 1.0, Par::Seq);
    Some(out)
}

/// Eigendecomposition A = V·diag(λ)·Vᵀ of a symmetric matrix (faer's self-adjoint solver):
/// eigenvalues in nondecreasing order and the orthonormal eigenvectors as the columns of V.
/// `name` labels the matrix in errors; rejects non-square, non-finite or asymmetric A.
pub fn sym_eigen(a: ArrayView2<f64>, name: &str) -> Result<(Array1<f64>, Array2<f64>)> {
    let n = check_symmetric(a, name)?;
    let evd = to_faer(a).self_adjoint_eigen(Side::Lower).map_err(|e| {
        CoreError::invalid(
            name,
            format!("{n}×{n} matrix"),
            format!("eigendecomposition did not converge ({e:?})"),
        )
    })?;
    let vals = Array1::from_iter((0..n).map(|i| evd.S()[i]));
    Ok((vals, from_faer(evd.U())))
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
    fn factors_a_large_matrix_to_rounding() {
        // A = M·Mᵀ + D·I with D = 200 exercises faer's blocked path (past its small kernels).
        let d = 200;
        let m = Array2::from_shape_fn((d, d), |(i, j)| ((i * 7 + j * 13) % 17) as f64 / 17.0 - 0.5);
        let a = m.dot(&m.t()) + Array2::<f64>::eye(d) * d as f64;
        let l = cholesky(a.view(), "a").unwrap();
        assert!(max_abs_diff(&l.dot(&l.t()), &a) < 1e-10);
        assert!(l.indexed_iter().all(|((i, j), &v)| j <= i || v == 0.0));
        let b = Array2::from_shape_fn((d, 3), |(i, j)| (i + j) as f64 / d as f64);
        assert!(max_abs_diff(&a.dot(&cho_solve_mat(l.view(), b.view())), &b) < 1e-10);
    }

    #[test]
    fn matmul_reads_transposed_views_and_eigen_reconstructs() {
        let a = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f64 - 5.0);
        let b = Array2::from_shape_fn((4, 2), |(i, j)| (i + 2 * j) as f64 * 0.5);
        // aᵀ·b with aᵀ a column-major view, and a strided view that must be copied.
        assert!(max_abs_diff(&matmul(a.t(), b.view()).unwrap(), &a.t().dot(&b)) < 1e-12);
        let s = a.slice(ndarray::s![..;2, ..]);
        assert!(max_abs_diff(&matmul(s, a.t()).unwrap(), &s.dot(&a.t())) < 1e-12);
        assert!(matmul(a.view(), a.view()).is_none());
        let c = a.t().dot(&a);
        let (vals, vecs) = sym_eigen(c.view(), "c").unwrap();
        assert!(vals.windows(2).into_iter().all(|w| w[0] <= w[1]));
        let back = vecs.dot(&Array2::from_diag(&vals)).dot(&vecs.t());
        assert!(max_abs_diff(&back, &c) < 1e-10);
        let e = sym_eigen(arr2(&[[1.0, 0.5], [0.1, 1.0]]).view(), "m").unwrap_err();
        assert!(e.to_string().contains("symmetric"), "{e}");
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
