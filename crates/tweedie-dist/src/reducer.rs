//! DDP's gradient reduction through `c10d::Reducer`.

use crate::ffi;
use crate::{DistError, ProcessGroup, Result};
use std::os::raw::c_void;
use tch::Tensor;

/// DDP's default bucket cap (25 MiB).
pub const DEFAULT_BUCKET_BYTES: i64 = 25 * 1024 * 1024;
/// DDP's default cap of the first bucket (1 MiB): small, so the first all-reduce starts early.
pub const DEFAULT_FIRST_BUCKET_BYTES: i64 = 1024 * 1024;

/// `c10d::Reducer` over a model's trainable parameters: during `backward`, autograd hooks
/// average each gradient bucket over ranks as soon as it is complete, so communication
/// overlaps the rest of the backward pass (Li et al. 2020, "PyTorch Distributed").
///
/// Per step: [`prepare_forward`](Self::prepare_forward) before the forward pass,
/// [`prepare_backward`](Self::prepare_backward) after it, then `f_backward()`; when that
/// returns, every parameter's `.grad` holds the mean over ranks. Use `f_backward` (not
/// `backward`, which panics): a failed bucket all-reduce surfaces there.
pub struct Reducer {
    raw: *mut c_void,
    rank: usize,
    world: usize,
}

// SAFETY: the reducer is only used from the thread that runs the training step.
unsafe impl Send for Reducer {}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: `raw` came from tw_reducer_new and is freed once.
        unsafe { ffi::tw_reducer_free(self.raw) }
    }
}

impl Reducer {
    /// Build the reducer as DDP does: verify parameter shapes across ranks, broadcast rank
    /// 0's values, bucket the parameters (reverse order, first bucket
    /// `first_bucket_bytes`, then `bucket_bytes`). `params` must be in the same order on every
    /// rank (e.g. `VarStore::trainable_variables()`, which keeps creation order).
    pub fn new(
        pg: &ProcessGroup,
        params: &[Tensor],
        bucket_bytes: i64,
        first_bucket_bytes: i64,
    ) -> Result<Self> {
        pg.broadcast_tensors(params, 0)?;
        let mut ps: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
        let ptrs: Vec<*mut torch_sys::C_tensor> = ps.iter_mut().map(|p| p.as_mut_ptr()).collect();
        let mut raw = std::ptr::null_mut();
        // SAFETY: `ps` outlives the call (the reducer keeps its own references).
        let ret = unsafe {
            ffi::tw_reducer_new(
                pg.raw(),
                ptrs.as_ptr(),
                i32::try_from(ptrs.len()).unwrap_or(i32::MAX),
                bucket_bytes,
                first_bucket_bytes,
                &mut raw,
            )
        };
        ffi::check(ret).map_err(|m| pg.c10d_err("DDP reducer set-up", m))?;
        Ok(Self {
            raw,
            rank: pg.rank(),
            world: pg.world_size(),
        })
    }

    fn err(&self, op: &str, message: String) -> DistError {
        DistError::C10d {
            rank: self.rank,
            world: self.world,
            op: op.to_string(),
            message,
        }
    }

    /// Call before each forward pass (rebuilds buckets in gradient-ready order after the
    /// first step).
    pub fn prepare_forward(&mut self) -> Result<()> {
        // SAFETY: live reducer.
        let ret = unsafe { ffi::tw_reducer_prepare_forward(self.raw) };
        ffi::check(ret).map_err(|m| self.err("DDP prepare_for_forward", m))
    }

    /// Call after the forward pass, before `f_backward()`.
    pub fn prepare_backward(&mut self) -> Result<()> {
        // SAFETY: live reducer.
        let ret = unsafe { ffi::tw_reducer_prepare_backward(self.raw) };
        ffi::check(ret).map_err(|m| self.err("DDP prepare_for_backward", m))
    }
}
