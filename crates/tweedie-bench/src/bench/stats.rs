//! Error measures of sampler endpoints against exact answers.

use ndarray::{Array1, Array2, Axis};
use tweedie_core::mixture::GaussianMixture;

/// RMS over samples of the Euclidean distance ‖x_i − y_i‖ (endpoint vs reference solve).
pub fn rms_distance(x: &Array2<f64>, y: &Array2<f64>) -> f64 {
    let n = x.nrows().max(1) as f64;
    let s: f64 = x.iter().zip(y.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
    (s / n).sqrt()
}

/// Median over samples of ‖x_i − y_i‖: the bulk of the error, insensitive to the few samples
/// near a separatrix that a coarse solver sends to another mode.
pub fn median_distance(x: &Array2<f64>, y: &Array2<f64>) -> f64 {
    let mut d: Vec<f64> = x
        .outer_iter()
        .zip(y.outer_iter())
        .map(|(a, b)| {
            a.iter()
                .zip(b.iter())
                .map(|(u, v)| (u - v) * (u - v))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_by(f64::total_cmp);
    let m = d.len() / 2;
    if d.len() % 2 == 1 {
        d[m]
    } else {
        0.5 * (d[m - 1] + d[m])
    }
}

/// Fraction of positions where the two labelings differ.
pub fn switched(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / n as f64
}

/// max_ij |x_ij − y_ij|.
pub fn max_abs_diff(x: &Array2<f64>, y: &Array2<f64>) -> f64 {
    x.iter()
        .zip(y.iter())
        .fold(0.0, |m, (a, b)| m.max((a - b).abs()))
}

/// Per-component moment errors of a sample set, each the maximum over components:
/// |ŵ_k − w_k|, ‖μ̂_k − μ_k‖₂ / √tr Σ_k, ‖Σ̂_k − Σ_k‖_F / ‖Σ_k‖_F.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ComponentErrors {
    pub weight: f64,
    pub mean: f64,
    pub cov: f64,
}

/// Moment errors of `x` (rows are samples) whose rows were assigned to components `labels`
/// (most likely component under the exact mixture) against the exact weights, means and
/// covariances. Means are scaled by the component's RMS spread so 2-D and 64-D read alike.
pub fn component_errors(
    x: &Array2<f64>,
    labels: &[usize],
    mixture: &GaussianMixture,
) -> ComponentErrors {
    let (n, d) = x.dim();
    let (weights, means) = (mixture.weights(), mixture.means());
    let k = weights.len();
    let mut out = ComponentErrors::default();
    for c in 0..k {
        let rows: Vec<usize> = (0..n).filter(|&i| labels.get(i) == Some(&c)).collect();
        let m = rows.len();
        out.weight = out
            .weight
            .max((m as f64 / n.max(1) as f64 - weights[c]).abs());
        let cov_c = mixture.cov(c);
        let tr: f64 = cov_c.diag().sum();
        let cov_norm = cov_c.iter().map(|v| v * v).sum::<f64>().sqrt();
        if m < 2 {
            // An empty component is a total miss: its mean and covariance are unknown.
            out.mean = f64::INFINITY;
            out.cov = f64::INFINITY;
            continue;
        }
        let sel = x.select(Axis(0), &rows);
        let mu: Array1<f64> = sel.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
        let dm = &mu - &means.row(c);
        out.mean = out.mean.max(dm.dot(&dm).sqrt() / tr.sqrt());
        let centered = &sel - &mu;
        let cov = centered.t().dot(&centered) / (m as f64 - 1.0);
        let dc = &cov - &cov_c;
        out.cov = out
            .cov
            .max(dc.iter().map(|v| v * v).sum::<f64>().sqrt() / cov_norm);
    }
    out
}

/// Least-squares slope of log(err) against log(nfe): the empirical convergence order is its
/// negative. `None` with fewer than two usable (positive, finite) points.
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    Some(sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn slope_of_power_laws() {
        let pts: Vec<(f64, f64)> = [5.0, 10.0, 20.0, 50.0]
            .iter()
            .map(|&n: &f64| (n, 3.0 * n.powf(-2.0)))
            .collect();
        assert!((loglog_slope(&pts).unwrap() + 2.0).abs() < 1e-12);
        assert_eq!(loglog_slope(&pts[..1]), None);
        assert_eq!(loglog_slope(&[(1.0, 0.0), (2.0, -1.0)]), None);
    }

    #[test]
    fn median_and_switch_fraction() {
        let x = array![[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]];
        let y = Array2::<f64>::zeros((3, 2));
        // distances 0, 5, 1 → median 1
        assert_eq!(median_distance(&x, &y), 1.0);
        assert_eq!(
            median_distance(
                &x.slice(ndarray::s![..2, ..]).to_owned(),
                &y.slice(ndarray::s![..2, ..]).to_owned()
            ),
            2.5
        );
        assert_eq!(switched(&[0, 1, 2, 3], &[0, 1, 1, 0]), 0.5);
        assert_eq!(max_abs_diff(&x, &y), 4.0);
    }

    #[test]
    fn rms_distance_is_root_mean_squared_norm() {
        let x = array![[0.0, 0.0], [3.0, 4.0]];
        let y = array![[0.0, 0.0], [0.0, 0.0]];
        // distances 0 and 5 → sqrt((0 + 25) / 2)
        assert!((rms_distance(&x, &y) - 12.5f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn component_errors_are_exact_on_a_hand_made_set() {
        // Component 0: points (±1, 0), (0, ±1) → mean 0, covariance diag(2/3, 2/3).
        // Component 1: the two points (10, 10) and (12, 10) → mean (11, 10), cov [[2,0],[0,0]].
        let x = array![
            [1.0, 0.0],
            [-1.0, 0.0],
            [0.0, 1.0],
            [0.0, -1.0],
            [10.0, 10.0],
            [12.0, 10.0]
        ];
        let labels = [0, 0, 0, 0, 1, 1];
        let mix = GaussianMixture::new(
            array![0.5, 0.5],
            array![[0.0, 0.0], [10.0, 10.0]],
            array![[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]],
        )
        .unwrap();
        let e = component_errors(&x, &labels, &mix);
        assert!((e.weight - (4.0 / 6.0 - 0.5)).abs() < 1e-15);
        // mean error of component 1: ‖(1, 0)‖ / √2
        assert!((e.mean - 1.0 / 2f64.sqrt()).abs() < 1e-15);
        // cov error of component 1: ‖[[1,0],[0,−1]]‖_F / √2 = 1; component 0: √2·(1/3)/√2 = 1/3
        assert!((e.cov - 1.0).abs() < 1e-15);
        // A component with no samples is a total miss.
        let e = component_errors(&x, &[0; 6], &mix);
        assert!(e.mean.is_infinite() && e.cov.is_infinite());
    }
}
