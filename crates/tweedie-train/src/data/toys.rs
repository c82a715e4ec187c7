//! 2-D toy distributions: checkerboard, two moons, swiss roll (and the analytic mixture in
//! `mod.rs`). Each is drawn from a seeded generator, so a data set depends on its seed only.

use ndarray::Array2;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Checkerboard on [−2, 2]²: uniform on the 8 unit squares whose ⌊x⌋ + ⌊y⌋ is even.
///
/// Exact moments: mean 0, per-coordinate variance 4/3 (uniform on [−2, 2]).
pub fn checkerboard(n: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::<f32>::zeros((n, 2));
    for i in 0..n {
        // Pick a cell uniformly among the 8 kept ones, then a uniform point inside it: no
        // rejection, so the count of draws per sample is fixed.
        let cell = rng.gen_range(0..8usize);
        let row = cell / 2; // 0..4, the y cell index
        let col = 2 * (cell % 2) + (row % 2); // x cell index with (col + row) even
        let u: f64 = rng.gen();
        let v: f64 = rng.gen();
        x[[i, 0]] = (col as f64 - 2.0 + u) as f32;
        x[[i, 1]] = (row as f64 - 2.0 + v) as f32;
    }
    x
}

/// Two interleaved half circles (as scikit-learn's `make_moons`), centred at the origin,
/// with isotropic Gaussian noise of std `noise`; label 0 = upper moon, 1 = lower moon.
pub fn moons(n: usize, noise: f64, seed: u64) -> (Array2<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::<f32>::zeros((n, 2));
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as i64;
        let theta = std::f64::consts::PI * rng.gen::<f64>();
        let (a, b) = if label == 0 {
            (theta.cos(), theta.sin())
        } else {
            (1.0 - theta.cos(), 0.5 - theta.sin())
        };
        let e0: f64 = rng.sample(StandardNormal);
        let e1: f64 = rng.sample(StandardNormal);
        // Shift by the mean of the noiseless moons, (0.5, 0.25), so the data are centred.
        x[[i, 0]] = (a - 0.5 + noise * e0) as f32;
        x[[i, 1]] = (b - 0.25 + noise * e1) as f32;
        labels.push(label);
    }
    (x, labels)
}

/// 2-D swiss roll: t = 1.5π(1 + 2u), x = (t cos t, t sin t)/5 + noise·ε, u ~ U(0, 1).
pub fn swiss_roll(n: usize, noise: f64, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::<f32>::zeros((n, 2));
    for i in 0..n {
        let t = 1.5 * std::f64::consts::PI * (1.0 + 2.0 * rng.gen::<f64>());
        let e0: f64 = rng.sample(StandardNormal);
        let e1: f64 = rng.sample(StandardNormal);
        x[[i, 0]] = (t * t.cos() / 5.0 + noise * e0) as f32;
        x[[i, 1]] = (t * t.sin() / 5.0 + noise * e1) as f32;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkerboard_is_on_the_even_squares_with_exact_moments() {
        let x = checkerboard(20_000, 1);
        for r in x.rows() {
            assert!(r[0] >= -2.0 && r[0] <= 2.0 && r[1] >= -2.0 && r[1] <= 2.0);
            let s = r[0].floor() as i64 + r[1].floor() as i64;
            assert_eq!(s.rem_euclid(2), 0, "point {r} is on an odd square");
        }
        // Mean 0 and variance 4/3 per coordinate; 5 standard errors of the sample mean/var.
        let n = x.nrows() as f64;
        for c in 0..2 {
            let col = x.column(c).mapv(f64::from);
            let m = col.mean().unwrap_or(f64::NAN);
            let v = col.mapv(|a| a * a).mean().unwrap_or(f64::NAN) - m * m;
            assert!(m.abs() < 5.0 * (4.0 / 3.0 / n).sqrt(), "mean {m}");
            // Var of x² for U(−2,2): E x⁴ − (E x²)² = 16/5 − 16/9.
            assert!(
                (v - 4.0 / 3.0).abs() < 5.0 * ((16.0 / 5.0 - 16.0 / 9.0) / n).sqrt(),
                "var {v}"
            );
        }
        // All 8 cells are used.
        let mut cells = std::collections::HashSet::new();
        for r in x.rows() {
            cells.insert((r[0].floor() as i64, r[1].floor() as i64));
        }
        assert_eq!(cells.len(), 8);
    }

    #[test]
    fn moons_are_centred_with_balanced_labels() {
        let (x, y) = moons(10_000, 0.0, 3);
        assert_eq!(x.dim(), (10_000, 2));
        assert_eq!(y.iter().filter(|&&l| l == 1).count(), 5_000);
        // Without noise, upper moon points lie on the unit circle around (−0.5, −0.25).
        for (r, &l) in x.rows().into_iter().zip(&y) {
            let (cx, cy) = if l == 0 { (-0.5, -0.25) } else { (0.5, 0.25) };
            let rad = ((r[0] as f64 - cx).powi(2) + (r[1] as f64 - cy).powi(2)).sqrt();
            assert!((rad - 1.0).abs() < 1e-5, "radius {rad}");
        }
        let mx = x.column(0).mapv(f64::from).mean().unwrap_or(f64::NAN);
        assert!(mx.abs() < 0.02, "mean x {mx}");
    }

    #[test]
    fn swiss_roll_radius_matches_its_angle() {
        let x = swiss_roll(1000, 0.0, 5);
        for r in x.rows() {
            let rad = 5.0 * ((r[0] as f64).powi(2) + (r[1] as f64).powi(2)).sqrt();
            // t ∈ [1.5π, 4.5π] and radius = t/5 · 5 = t.
            assert!(
                (1.5 * std::f64::consts::PI - 1e-4..=4.5 * std::f64::consts::PI + 1e-4)
                    .contains(&rad)
            );
            let ang = (r[1] as f64).atan2(r[0] as f64);
            // Distance between the angle t and atan2 modulo 2π.
            let d = (rad - ang).rem_euclid(2.0 * std::f64::consts::PI);
            let d = d.min(2.0 * std::f64::consts::PI - d);
            assert!(d < 1e-3, "angle mismatch {d}");
        }
    }

    #[test]
    fn same_seed_same_data() {
        assert_eq!(checkerboard(50, 9), checkerboard(50, 9));
        assert_ne!(checkerboard(50, 9), checkerboard(50, 10));
    }
}
