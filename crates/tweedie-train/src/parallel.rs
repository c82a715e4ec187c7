//! Data-parallel training over a tweedie-dist process group (c10d: Gloo on CPU, NCCL on CUDA).
//!
//! Rank r of N computes rows [r·B/N, (r+1)·B/N) of step k's global batch of B. Every random
//! draw of a row is keyed by (seed, global sample index), so the N shards together are
//! exactly the single-process batch; gradients averaged over ranks (DDP's reducer, or one
//! flat all-reduce) then equal the single-process gradient up to float rounding. Parameters,
//! Adam and EMA states stay identical on every rank, so the state saved by rank 0 does not
//! depend on the world size.

use std::ops::Range;

use tch::Tensor;
use tweedie_dist::{ProcessGroup, Reducer, DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES};

use crate::error::{Result, TrainError};
use tweedie_core::Invalid;

/// How gradients are averaged over ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradSync {
    /// `c10d::Reducer`: buckets all-reduced from autograd hooks, overlapping backward (DDP).
    #[default]
    Reducer,
    /// One all-reduce of all gradients (one flat buffer) after backward.
    Flat,
}

/// A training run's membership of a data-parallel job.
pub struct DataParallel {
    /// The process group (one per process).
    pub pg: ProcessGroup,
    /// Rank on this node: the CUDA device a CUDA run uses.
    pub local_rank: usize,
    /// Gradient averaging.
    pub sync: GradSync,
    /// Reducer bucket cap in bytes (DDP's default 25 MiB).
    pub bucket_bytes: i64,
}

impl DataParallel {
    /// A job member with DDP's defaults.
    pub fn new(pg: ProcessGroup, local_rank: usize) -> Self {
        Self {
            pg,
            local_rank,
            sync: GradSync::Reducer,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
        }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.pg.rank()
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.pg.world_size()
    }

    /// Fail on every rank if any rank failed (`local` is this rank's outcome): ranks must
    /// leave a phase together, or the others would wait in the next collective until the
    /// timeout.
    pub fn agree<T>(&self, phase: &str, local: Result<T>) -> Result<T> {
        let mut flag = Tensor::from_slice(&[i64::from(local.is_err())]).to_device(self.pg.device());
        self.pg.all_reduce_max(&mut flag).map_err(dist_err)?;
        match local {
            Err(e) => Err(e),
            Ok(_) if flag.int64_value(&[0]) != 0 => Err(TrainError::Other(format!(
                "rank {} of {}: another rank failed during {phase} (its message says why)",
                self.rank(),
                self.world()
            ))),
            Ok(v) => Ok(v),
        }
    }
}

/// Turn a c10d failure into the trainer's error.
pub fn dist_err(e: tweedie_dist::DistError) -> TrainError {
    TrainError::Other(e.to_string())
}

/// The rows of a global batch of `b` that `rank` of `world` computes.
pub fn shard_rows(b: usize, rank: usize, world: usize) -> Result<Range<usize>> {
    if world == 0 || !b.is_multiple_of(world) {
        return Err(TrainError::invalid(
            "training.batch_size",
            b,
            format!("must be a multiple of the number of ranks ({world}) so that every rank computes B/N samples"),
        ));
    }
    let n = b / world;
    Ok(rank * n..(rank + 1) * n)
}

/// The gradient averaging set up for one run.
pub(crate) enum Sync<'a> {
    /// One process: nothing to do.
    None,
    /// DDP's reducer (hooks fire during backward).
    Reducer(&'a DataParallel, Reducer),
    /// One flat all-reduce after backward.
    Flat(&'a DataParallel),
}

impl<'a> Sync<'a> {
    /// Set up gradient averaging over `params` (creation order, the same on every rank);
    /// broadcasts rank 0's parameters first.
    pub(crate) fn new(dp: Option<&'a DataParallel>, params: &[Tensor]) -> Result<Self> {
        let Some(dp) = dp else {
            return Ok(Sync::None);
        };
        Ok(match dp.sync {
            GradSync::Reducer => {
                let r = Reducer::new(
                    &dp.pg,
                    params,
                    dp.bucket_bytes,
                    DEFAULT_FIRST_BUCKET_BYTES.min(dp.bucket_bytes),
                )
                .map_err(dist_err)?;
                Sync::Reducer(dp, r)
            }
            GradSync::Flat => {
                dp.pg.broadcast_tensors(params, 0).map_err(dist_err)?;
                Sync::Flat(dp)
            }
        })
    }

    pub(crate) fn dp(&self) -> Option<&'a DataParallel> {
        match self {
            Sync::None => None,
            Sync::Reducer(dp, _) | Sync::Flat(dp) => Some(dp),
        }
    }

    pub(crate) fn before_forward(&mut self) -> Result<()> {
        match self {
            Sync::Reducer(_, r) => r.prepare_forward().map_err(dist_err),
            _ => Ok(()),
        }
    }

    pub(crate) fn before_backward(&mut self) -> Result<()> {
        match self {
            Sync::Reducer(_, r) => r.prepare_backward().map_err(dist_err),
            _ => Ok(()),
        }
    }

    /// After backward: average the gradients (flat mode; the reducer already did).
    pub(crate) fn after_backward(&mut self, params: &[Tensor]) -> Result<()> {
        if let Sync::Flat(dp) = self {
            let grads: Vec<Tensor> = params
                .iter()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .collect();
            dp.pg.all_reduce_mean_tensors(&grads).map_err(dist_err)?;
        }
        Ok(())
    }

    /// Mean of `loss` over ranks and whether any rank asked to stop (one all-reduce).
    pub(crate) fn loss_and_stop(&self, loss: f64, stop: bool) -> Result<(f64, bool)> {
        let Some(dp) = self.dp() else {
            return Ok((loss, stop));
        };
        let mut t =
            Tensor::from_slice(&[loss, f64::from(u8::from(stop))]).to_device(dp.pg.device());
        dp.pg.all_reduce_sum(&mut t).map_err(dist_err)?;
        let v = Vec::<f64>::try_from(&t.to_device(tch::Device::Cpu))
            .map_err(|e| TrainError::Other(e.to_string()))?;
        Ok((v[0] / dp.world() as f64, v[1] > 0.0))
    }
}

/// `TWEEDIE_FAULT_EXIT_AT=RANK:STEP`: the step at which this rank exits abruptly (fault
/// tests only; ignored in a single process).
pub(crate) fn fault_injection(dp: Option<&DataParallel>) -> Option<u64> {
    let dp = dp?;
    let v = std::env::var("TWEEDIE_FAULT_EXIT_AT").ok()?;
    let (r, k) = v.split_once(':')?;
    (r.trim().parse::<usize>().ok()? == dp.rank()).then_some(())?;
    k.trim().parse().ok()
}

/// A hash of the bytes of every variable and of the EMA weights, in a fixed order.
pub(crate) fn weights_hash(vs: &tch::nn::VarStore, ema: &tweedie_nets::Ema) -> u64 {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut bytes: Vec<u8> = Vec::new();
    let mut push = |t: &Tensor| {
        let t = t
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(tch::Kind::Double)
            .reshape([-1]);
        if let Ok(v) = Vec::<f64>::try_from(&t) {
            for x in v {
                bytes.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
    };
    for (_, t) in &named {
        push(t);
    }
    for (_, t) in ema.tensors() {
        push(t);
    }
    tweedie_dist::fnv1a64(&bytes)
}

/// The code version ranks compare at start: the package version and a hash of the running
/// executable (same build on every rank).
pub fn code_version() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| format!("{:016x}", tweedie_dist::fnv1a64(&b)))
        .unwrap_or_else(|| "unknown-executable".into());
    format!("{} {exe}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_batch() {
        assert_eq!(shard_rows(8, 0, 2).unwrap(), 0..4);
        assert_eq!(shard_rows(8, 1, 2).unwrap(), 4..8);
        assert_eq!(shard_rows(8, 0, 1).unwrap(), 0..8);
        let err = shard_rows(6, 0, 4).unwrap_err().to_string();
        assert!(err.contains("training.batch_size"), "{err}");
    }
}
