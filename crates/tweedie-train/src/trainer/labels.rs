//! Class labels of a training batch, with label dropout for classifier-free guidance: each
//! sample's label is replaced by the null label (the all-zero one-hot, the input that
//! `NetModel` and `samplers::Cfg` evaluate as "unconditional") with probability
//! `training.label_dropout`. The draw of global sample g is keyed by (seed, g) alone, like the
//! noise, so it does not depend on the batch split, the rank count or a resume.

use rand::Rng;
use tch::{Device, Tensor};
use tweedie_core::rng::stream_rng;

use crate::error::Result;
use crate::loss::STREAM_NOISE;
use crate::sample::one_hot;

/// RNG stream of the label-dropout draws.
pub const STREAM_LABEL_DROP: u64 = STREAM_NOISE + 3;

/// Whether the labels of global samples first..first+n are dropped at `rate`: sample g is
/// dropped when its uniform u ∈ [0, 1) from (seed, g) is below `rate`.
pub fn dropped_labels(seed: u64, first: u64, n: usize, rate: f64) -> Vec<bool> {
    (first..first + n as u64)
        .map(|g| stream_rng(seed, g, STREAM_LABEL_DROP).gen::<f64>() < rate)
        .collect()
}

/// One-hot labels [n, classes] of a batch whose first row is global sample `first`, the
/// dropped rows set to the null label. At rate 0 nothing is drawn and the tensor is the plain
/// one-hot, so such a run is bit for bit a run from before label dropout existed.
pub fn batch_labels(
    labels: &[i64],
    classes: usize,
    seed: u64,
    first: u64,
    rate: f64,
    device: Device,
) -> Result<Tensor> {
    let y = one_hot(labels, classes, device)?;
    if rate == 0.0 {
        return Ok(y);
    }
    let keep: Vec<f32> = dropped_labels(seed, first, labels.len(), rate)
        .into_iter()
        .map(|d| if d { 0.0 } else { 1.0 })
        .collect();
    let keep = Tensor::from_slice(&keep)
        .to_device(device)
        .view([labels.len() as i64, 1]);
    Ok(y * keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// 100 000 draws at the default rate: the count on seed 0 is pinned (a changed stream or
    /// key shows up here), and it lies within 3 binomial standard errors √(N·p·(1−p)) = 94.9
    /// of N·p = 10 000, as a fair coin of bias p must.
    #[test]
    fn the_dropped_fraction_is_the_rate_and_the_draw_is_pinned() {
        let (n, p) = (100_000usize, 0.1);
        let count = dropped_labels(0, 0, n, p).iter().filter(|&&d| d).count();
        let se = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((count as f64 - n as f64 * p).abs() <= 3.0 * se, "{count}");
        assert_eq!(count, PINNED_COUNT);
        // Rate 0 drops nothing.
        assert!(!dropped_labels(0, 0, 1000, 0.0).contains(&true));
    }

    /// Seed 0, samples 0..100 000, rate 0.1: 16 above N·p, a sixth of one standard error.
    const PINNED_COUNT: usize = 10_016;

    /// Sample g's draw depends on (seed, g) only: one batch of 64 equals four shards of 16
    /// (four ranks) and two steps of 32 (a resume between them), and another seed differs.
    #[test]
    fn the_draw_does_not_depend_on_the_batch_split() {
        let whole = dropped_labels(7, 128, 64, 0.3);
        let shards: Vec<bool> = (0..4)
            .flat_map(|r| dropped_labels(7, 128 + 16 * r, 16, 0.3))
            .collect();
        assert_eq!(shards, whole);
        let steps: Vec<bool> = [128, 160]
            .into_iter()
            .flat_map(|f| dropped_labels(7, f, 32, 0.3))
            .collect();
        assert_eq!(steps, whole);
        assert_ne!(dropped_labels(8, 128, 64, 0.3), whole);
    }

    /// Dropped rows are exactly the all-zero null label, kept rows exactly their one-hot, and
    /// rate 0 is the plain one-hot.
    #[test]
    fn dropped_rows_are_the_null_label() -> Result<()> {
        let labels: Vec<i64> = (0..40).map(|i| i % 3).collect();
        let plain = one_hot(&labels, 3, Device::Cpu)?;
        assert!(batch_labels(&labels, 3, 5, 10, 0.0, Device::Cpu)?.equal(&plain));
        let y = batch_labels(&labels, 3, 5, 10, 0.5, Device::Cpu)?;
        let dropped = dropped_labels(5, 10, 40, 0.5);
        assert!(dropped.contains(&true) && dropped.contains(&false));
        for (i, &d) in dropped.iter().enumerate() {
            let row = y.get(i as i64);
            let want = if d {
                Tensor::zeros([3], (Kind::Float, Device::Cpu))
            } else {
                plain.get(i as i64)
            };
            assert!(row.equal(&want), "row {i}");
        }
        Ok(())
    }
}
