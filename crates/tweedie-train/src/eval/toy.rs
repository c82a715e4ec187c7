//! 2-D toys without a closed-form density: sliced Wasserstein-1 distance to held-out data next
//! to the floor set by the sample sizes.

use std::fmt::Write as _;

use ndarray::Array2;
use rand::Rng;
use rand_distr::StandardNormal;
use serde_json::{json, Value};
use tweedie_core::rng::stream_rng;

use crate::config::TrainConfig;
use crate::data::{Data, DataConfig};
use crate::error::Result;

/// Sliced Wasserstein-1 distance between two sample sets (first min(n₁, n₂) rows of each), over
/// 128 fixed random directions.
pub fn sliced_w1(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let m = a.nrows().min(b.nrows());
    let d = a.ncols();
    let mut total = 0.0;
    let dirs = 128;
    for k in 0..dirs {
        let mut rng = stream_rng(0x51CE, k, 0);
        let mut th: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        let norm = th.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        th.iter_mut().for_each(|v| *v /= norm);
        let proj = |x: &Array2<f64>| -> Vec<f64> {
            let mut p: Vec<f64> = x
                .rows()
                .into_iter()
                .take(m)
                .map(|r| r.iter().zip(&th).map(|(a, b)| a * b).sum())
                .collect();
            p.sort_by(f64::total_cmp);
            p
        };
        let (pa, pb) = (proj(a), proj(b));
        total += pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f64>() / m.max(1) as f64;
    }
    total / dirs as f64
}
pub(super) fn eval_toy(
    cfg: &TrainConfig,
    x: &Array2<f32>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let g = x.mapv(f64::from);
    let h = data.held_out.x.mapv(f64::from);
    let t = data.train.x.mapv(f64::from);
    let sw = sliced_w1(&g, &h);
    let floor = sliced_w1(&t, &h);
    let _ = writeln!(
        md,
        "### {}: sliced Wasserstein-1 distance to held-out data\n",
        data.name
    );
    let _ = writeln!(md, "| | value |\n|---|---|");
    let _ = writeln!(md, "| generated vs held-out | **{sw:.4}** |");
    let _ = writeln!(md, "| training data vs held-out (floor) | {floor:.4} |");
    let mut out = json!({"sliced_w1": sw, "sliced_w1_floor": floor});
    if matches!(cfg.data, DataConfig::Checkerboard { .. }) {
        let on = g
            .rows()
            .into_iter()
            .filter(|r| {
                r[0].abs() <= 2.0
                    && r[1].abs() <= 2.0
                    && (r[0].floor() as i64 + r[1].floor() as i64).rem_euclid(2) == 0
            })
            .count() as f64
            / g.nrows().max(1) as f64;
        let _ = writeln!(
            md,
            "| fraction of samples on the board's even squares (ideal 1) | {on:.3} |"
        );
        out["on_board_fraction"] = json!(on);
        head.push(format!(
            "checkerboard: {:.1} % of samples on the right squares",
            100.0 * on
        ));
    }
    let _ = writeln!(md);
    head.push(format!(
        "{}: sliced W1 {sw:.4} (data floor {floor:.4})",
        data.name
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliced_w1_is_zero_for_equal_sets_and_the_shift_for_shifted_ones() {
        let a = Array2::from_shape_fn((500, 2), |(i, j)| ((i * 7 + j * 3) % 50) as f64 / 10.0);
        assert!(sliced_w1(&a, &a).abs() < 1e-12);
        // A shift by c along x moves each projection by c·θ_x: the mean |θ_x| over directions.
        let b = &a + &ndarray::arr1(&[1.0, 0.0]);
        let s = sliced_w1(&a, &b);
        // E|θ_x| for θ uniform on the circle is 2/π; 128 directions give it within a few %.
        assert!((s - 2.0 / std::f64::consts::PI).abs() < 0.06, "{s}");
    }
}
