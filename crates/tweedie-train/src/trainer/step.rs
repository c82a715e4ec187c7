//! One training step: loss of the batch, backward, gradient sync, Adam and EMA updates.

use rand::Rng;
use tch::{nn::VarStore, Device, Kind, Tensor};
use tweedie_core::rng::stream_rng;
use tweedie_nets::{Ema, PrecondDenoiser};

use super::batches::BatchSampler;
use super::labels::batch_labels;
use super::with_torch_rng;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::loss::{Loss, STREAM_NOISE};
use crate::optim::Adam;
use crate::parallel::Sync;

/// RNG stream of augmentation draws.
pub const STREAM_AUG: u64 = STREAM_NOISE + 2;
/// RNG stream of the dequantisation offsets (`training.dequantize`).
pub const STREAM_DEQUANTIZE: u64 = STREAM_NOISE + 4;

/// Moves each value of rows `first..first + n` uniformly within its level's bin:
/// x + (u − ½)/c, c = (levels − 1)/2, u keyed by (seed, sample, element) only, so a sample's
/// offsets depend neither on the batch split, the rank count nor a resume.
pub(crate) fn dequantize(x0: &Tensor, levels: u32, seed: u64, first: u64) -> Tensor {
    let (n, dim) = (x0.size()[0], x0.numel() as i64 / x0.size()[0].max(1));
    let c = f64::from(levels - 1) / 2.0;
    let mut offsets = vec![0.0f64; dim as usize];
    let mut all: Vec<f32> = Vec::with_capacity((n * dim) as usize);
    for i in 0..n as u64 {
        tweedie_core::rng::fill_uniforms(seed, first + i, STREAM_DEQUANTIZE, &mut offsets);
        all.extend(offsets.iter().map(|u| ((u - 0.5) / c) as f32));
    }
    let off = Tensor::from_slice(&all)
        .view(x0.size().as_slice())
        .to_device(x0.device());
    x0 + off
}

/// The model and everything trained with it.
pub(super) struct Live {
    /// Trainable parameters in creation order (the same on every rank).
    pub(super) params: Vec<Tensor>,
    pub(super) vs: VarStore,
    pub(super) den: PrecondDenoiser,
    pub(super) ema: Ema,
    pub(super) adam: Adam,
}

/// Step seed of torch's generator (dropout) so step k is reproducible alone.
pub(crate) fn torch_step_seed(seed: u64, k: u64) -> i64 {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.wrapping_mul(0xBF58_476D_1CE4_E5B9)) as i64
        & i64::MAX
}

/// One training step k: loss of the batch, backward, Adam update, EMA update; returns the
/// mean loss and the gradient norm. A non-finite loss returns before touching the weights.
/// Under data parallelism (`sync`) this rank computes its shard `rows` of the global batch and
/// the gradients are averaged over ranks; returns `None` when some rank asked to stop (`stop`).
#[allow(clippy::too_many_arguments)]
pub(super) fn train_step(
    live: &mut Live,
    loss: &Loss,
    data: &Dataset,
    sampler: &mut BatchSampler,
    cfg: &TrainConfig,
    k: u64,
    device: Device,
    last_good: u64,
    sync: &mut Sync<'_>,
    rows: std::ops::Range<usize>,
    stop: bool,
    dequantize_levels: Option<u32>,
) -> Result<Option<(f64, f64)>> {
    let t = &cfg.training;
    let b = t.batch_size;
    let idx = sampler.indices(k, b)[rows.clone()].to_vec();
    let n = idx.len();
    let mut x0 = data.batch_tensor(&idx, device);
    if t.hflip && data.is_image() {
        let flips: Vec<f32> = (rows.start as u64..rows.end as u64)
            .map(|i| {
                if stream_rng(t.seed, k * b as u64 + i, STREAM_AUG).gen::<bool>() {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let m = Tensor::from_slice(&flips)
            .to_device(device)
            .view([n as i64, 1, 1, 1]);
        x0 = &x0 * (1.0 - &m) + x0.flip([-1]) * &m;
    }
    let first = k * b as u64 + rows.start as u64;
    if let Some(levels) = dequantize_levels {
        x0 = dequantize(&x0, levels, t.seed, first);
    }
    let labels = match (t.conditional, data.labels.as_ref(), data.num_classes) {
        (true, Some(l), Some(c)) => {
            let v: Vec<i64> = idx.iter().map(|&i| l[i]).collect();
            Some(batch_labels(&v, c, t.seed, first, t.label_dropout, device)?)
        }
        _ => None,
    };
    // The condition of each sample is its own low-resolution version (after augmentation),
    // so it needs no draw and keeps the step keyed per sample.
    let condition = cfg
        .conditioning
        .as_ref()
        .map(|c| c.low_res(&x0))
        .transpose()?;
    let levels = loss.draw_levels(t.seed, first, n);
    let eps = Loss::draw_noise(t.seed, first, n, data.dim()).to_device(device);
    live.adam.zero_grad();
    sync.before_forward()?;
    let den = &live.den;
    let per = with_torch_rng(|| {
        tch::manual_seed(torch_step_seed(t.seed, k));
        loss.per_sample_with_variance(
            |x, s| {
                den.forward_conditioned(x, s, labels.as_ref(), None, condition.as_ref(), true)
                    .map_err(|e| TrainError::Other(e.to_string()))
            },
            &x0,
            &eps,
            &levels,
        )
    })?;
    let l = per.mean(Kind::Float);
    // Equal shards: the mean over ranks of the shard means is the global batch mean.
    let (lv, stop) = sync.loss_and_stop(l.double_value(&[]), stop)?;
    if stop {
        return Ok(None);
    }
    if !lv.is_finite() {
        return Err(TrainError::NonFinite {
            step: k + 1,
            value: lv,
            last_good,
        });
    }
    sync.before_backward()?;
    // f_backward, not backward: a failed gradient all-reduce (a peer died) surfaces here.
    l.f_backward().map_err(|e| match sync.dp() {
        Some(dp) => TrainError::Other(format!(
            "rank {} of {}: DDP gradient all-reduce during backward failed: {e}",
            dp.rank(),
            dp.world()
        )),
        None => TrainError::Other(format!("backward: {e}")),
    })?;
    sync.after_backward(&live.params)?;
    // Adam checks the gradient norm before it updates anything (see Adam::step).
    let info = live.adam.step(k);
    if !info.grad_norm.is_finite() {
        return Err(TrainError::NonFinite {
            step: k + 1,
            value: info.grad_norm,
            last_good,
        });
    }
    live.ema
        .update(&live.vs, k * b as u64, b)
        .map_err(|e| TrainError::Other(format!("EMA: {e}")))?;
    Ok(Some((lv, info.grad_norm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value stays in its level's bin, the offsets are not all zero, and rows depend on
    /// (seed, sample) only: two half batches give the whole batch's values bit for bit.
    #[test]
    fn dequantize_stays_in_the_bin_and_is_keyed_per_sample() {
        let levels = 17;
        let half_bin = 0.5 / 8.0;
        let x =
            Tensor::from_slice(&[-1.0f32, 0.0, 0.5, 1.0, -0.25, 0.125, 0.75, -0.875]).view([4, 2]);
        let whole = dequantize(&x, levels, 3, 10);
        let d: Vec<f32> = Vec::try_from((&whole - &x).flatten(0, -1)).unwrap();
        assert!(d.iter().all(|v| v.abs() <= half_bin + 1e-7), "{d:?}");
        assert!(d.iter().all(|v| *v != 0.0), "{d:?}");
        let top = dequantize(&x.narrow(0, 0, 2), levels, 3, 10);
        let bottom = dequantize(&x.narrow(0, 2, 2), levels, 3, 12);
        assert!(whole.equal(&Tensor::cat(&[top, bottom], 0)));
        assert!(!whole.equal(&dequantize(&x, levels, 4, 10)));
    }
}
