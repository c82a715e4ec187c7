//! Small dense symmetric linear algebra for the analytic mixture model (f64).
// TODO(core): replace with tweedie_core::linalg once it exposes Cholesky / eigen.

use ndarray::{Array1, Array2};

/// Cholesky factor L (lower) of a symmetric positive-definite matrix, or None.
pub(crate) fn cholesky(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= l[[j, k]] * l[[j, k]];
        }
        if !(d > 0.0) || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[[j, j]] = d;
        for i in j + 1..n {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            l[[i, j]] = s / d;
        }
    }
    Some(l)
}

/// Solve L Lᵀ x = b given the Cholesky factor L.
pub(crate) fn chol_solve(l: &Array2<f64>, b: &Array1<f64>) -> Array1<f64> {
    let n = l.nrows();
    let mut y = b.clone();
    for i in 0..n {
        let mut s = y[i];
        for k in 0..i {
            s -= l[[i, k]] * y[k];
        }
        y[i] = s / l[[i, i]];
    }
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[[k, i]] * y[k];
        }
        y[i] = s / l[[i, i]];
    }
    y
}

/// Solve L Lᵀ X = B column by column.
pub(crate) fn chol_solve_mat(l: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    let mut x = Array2::<f64>::zeros(b.raw_dim());
    for (j, col) in b.columns().into_iter().enumerate() {
        x.column_mut(j).assign(&chol_solve(l, &col.to_owned()));
    }
    x
}

/// log det from a Cholesky factor: 2 Σ log L_ii.
pub(crate) fn chol_logdet(l: &Array2<f64>) -> f64 {
    2.0 * l.diag().iter().map(|d| d.ln()).sum::<f64>()
}

/// Symmetric eigen-decomposition A = U diag(λ) Uᵀ by cyclic Jacobi rotations.
pub(crate) fn sym_eigen(a: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut m = a.clone();
    let mut u = Array2::<f64>::eye(n);
    let scale: f64 = a
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += m[[p, q]] * m[[p, q]];
            }
        }
        if off.sqrt() <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[[p, q]];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (m[[q, q]] - m[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[[k, p]], m[[k, q]]);
                    m[[k, p]] = c * mkp - s * mkq;
                    m[[k, q]] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[[p, k]], m[[q, k]]);
                    m[[p, k]] = c * mpk - s * mqk;
                    m[[q, k]] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (ukp, ukq) = (u[[k, p]], u[[k, q]]);
                    u[[k, p]] = c * ukp - s * ukq;
                    u[[k, q]] = s * ukp + c * ukq;
                }
            }
        }
    }
    (m.diag().to_owned(), u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_and_cholesky_reconstruct() {
        let n = 7;
        let b = Array2::from_shape_fn((n, n), |(i, j)| {
            ((i * 3 + j * 5) % 7) as f64 - 3.0 + (i == j) as u8 as f64
        });
        let a = b.dot(&b.t()) + Array2::<f64>::eye(n);
        let (lam, u) = sym_eigen(&a);
        let rec = u.dot(&Array2::from_diag(&lam)).dot(&u.t());
        assert!((&rec - &a).iter().all(|d| d.abs() < 1e-10));
        let l = cholesky(&a).unwrap();
        assert!((l.dot(&l.t()) - &a).iter().all(|d| d.abs() < 1e-10));
        let x = chol_solve(&l, &Array1::ones(n));
        assert!((a.dot(&x) - Array1::<f64>::ones(n))
            .iter()
            .all(|d| d.abs() < 1e-10));
        let logdet: f64 = lam.iter().map(|v| v.ln()).sum();
        assert!((chol_logdet(&l) - logdet).abs() < 1e-10);
        assert!(cholesky(&(-a)).is_none());
    }
}
