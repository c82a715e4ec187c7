//! A c10d process group and its collectives on tch tensors.

use crate::ffi;
use crate::{DistEnv, DistError, Result};
use std::ffi::CString;
use std::os::raw::c_void;
use std::time::Duration;
use tch::{Device, Tensor};

/// The c10d backend: Gloo for CPU tensors, NCCL for CUDA tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `c10d::ProcessGroupGloo` (TCP; CPU tensors).
    Gloo,
    /// `c10d::ProcessGroupNCCL` (CUDA tensors).
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`.
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        }
    }

    /// Whether the shim was compiled with this backend.
    pub fn available(self) -> bool {
        // SAFETY: no arguments, no state.
        let bits = unsafe { ffi::tw_backends() };
        match self {
            Backend::Gloo => bits & 1 != 0,
            Backend::Nccl => bits & 2 != 0,
        }
    }

    /// Lower-case name as c10d spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// One rank's membership of a c10d process group (TCPStore rendezvous + Gloo or NCCL).
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world: usize,
    backend: Backend,
    timeout: Duration,
    /// Where this group's tensors live: the CPU for Gloo, GPU `LOCAL_RANK` for NCCL.
    device: Device,
}

// SAFETY: the c10d objects behind `raw` are thread-safe for use from one thread at a time,
// and `&mut self` / `&self` methods never run concurrently on one value without `Sync`.
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from tw_pg_new and is freed once.
        unsafe { ffi::tw_pg_free(self.raw) }
    }
}

impl ProcessGroup {
    /// Rendezvous at `env.master_addr:master_port` and create the `backend` group. Blocks
    /// until every rank has joined, or fails after `env.timeout`.
    pub fn new(env: &DistEnv, backend: Backend) -> Result<Self> {
        let err = |message: String| DistError::C10d {
            rank: env.rank,
            world: env.world_size,
            op: format!(
                "rendezvous at {}:{} ({})",
                env.master_addr,
                env.master_port,
                backend.name()
            ),
            message,
        };
        let host = CString::new(env.master_addr.as_str())
            .map_err(|_| err("MASTER_ADDR contains a NUL byte".into()))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C string, out-pointer to a local.
        let ret = unsafe {
            ffi::tw_pg_new(
                host.as_ptr(),
                i32::from(env.master_port),
                to_c(env.rank),
                to_c(env.world_size),
                i32::from(env.serve_store),
                match backend {
                    Backend::Gloo => 0,
                    Backend::Nccl => 1,
                },
                i64::try_from(env.timeout.as_millis()).unwrap_or(i64::MAX),
                &mut raw,
            )
        };
        ffi::check(ret).map_err(err)?;
        Ok(Self {
            raw,
            rank: env.rank,
            world: env.world_size,
            backend,
            timeout: env.timeout,
            device: match backend {
                Backend::Gloo => Device::Cpu,
                Backend::Nccl => Device::Cuda(env.local_rank),
            },
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Timeout of every collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The device of the tensors this group takes (CPU for Gloo, GPU `LOCAL_RANK` for NCCL):
    /// small control values (flags, hashes, losses) must be put there before a collective.
    pub fn device(&self) -> Device {
        self.device
    }

    pub(crate) fn raw(&self) -> *mut c_void {
        self.raw
    }

    pub(crate) fn c10d_err(&self, op: &str, message: String) -> DistError {
        DistError::C10d {
            rank: self.rank,
            world: self.world,
            op: op.to_string(),
            message: format!(
                "{message} (a peer rank died, hung past the {:.0} s timeout, or took another path)",
                self.timeout.as_secs_f64()
            ),
        }
    }

    fn check_tensor(&self, op: &str, t: &Tensor) -> Result<()> {
        let bad = |reason: String| DistError::BadTensor {
            rank: self.rank,
            world: self.world,
            op: op.to_string(),
            reason,
        };
        match (self.backend, t.device()) {
            (Backend::Gloo, Device::Cpu) | (Backend::Nccl, Device::Cuda(_)) => {}
            (b, d) => {
                return Err(bad(format!(
                    "a {d:?} tensor cannot go through {}",
                    b.name()
                )))
            }
        }
        if !t.is_contiguous() {
            return Err(bad("tensor is not contiguous".into()));
        }
        Ok(())
    }

    /// Element-wise sum over ranks, in place (`c10d allreduce`, ReduceOp::SUM).
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        self.all_reduce(t, 0, "allreduce(sum)")
    }

    /// Element-wise maximum over ranks, in place.
    pub fn all_reduce_max(&self, t: &mut Tensor) -> Result<()> {
        self.all_reduce(t, 1, "allreduce(max)")
    }

    /// Element-wise mean over ranks, in place: sum, then divide by the world size (Gloo has
    /// no AVG).
    pub fn all_reduce_mean(&self, t: &mut Tensor) -> Result<()> {
        self.all_reduce(t, 0, "allreduce(mean)")?;
        let _ = t
            .f_div_scalar_(self.world as f64)
            .map_err(|e| DistError::BadTensor {
                rank: self.rank,
                world: self.world,
                op: "allreduce(mean)".into(),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    fn all_reduce(&self, t: &mut Tensor, op: i32, name: &str) -> Result<()> {
        self.check_tensor(name, t)?;
        // SAFETY: live tensor, live group.
        let ret = unsafe { ffi::tw_allreduce(self.raw, t.as_mut_ptr(), op) };
        ffi::check(ret).map_err(|m| self.c10d_err(name, m))
    }

    /// Overwrite `t` on every rank with root's `t` (`c10d broadcast`). Shapes must match on
    /// all ranks: c10d does not check, so [`broadcast_tensors`](Self::broadcast_tensors)
    /// verifies them first.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        self.check_tensor("broadcast", t)?;
        // SAFETY: live tensor, live group.
        let ret = unsafe { ffi::tw_broadcast(self.raw, t.as_mut_ptr(), to_c(root)) };
        ffi::check(ret).map_err(|m| self.c10d_err("broadcast", m))
    }

    /// Wait until every rank reaches this point (`c10d barrier`).
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: live group.
        let ret = unsafe { ffi::tw_barrier(self.raw) };
        ffi::check(ret).map_err(|m| self.c10d_err("barrier", m))
    }

    /// Every rank's `t`, stacked along a new first axis in rank order (`c10d allgather`).
    /// `t` must have the same shape and kind on every rank.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        self.check_tensor("allgather", t)?;
        let mut input = t.shallow_clone();
        let mut out_shape = vec![self.world as i64];
        out_shape.extend(t.size());
        let out = Tensor::zeros(out_shape, (t.kind(), t.device()));
        let mut parts: Vec<Tensor> = (0..self.world as i64).map(|i| out.get(i)).collect();
        let ptrs: Vec<*mut torch_sys::C_tensor> =
            parts.iter_mut().map(|p| p.as_mut_ptr()).collect();
        // SAFETY: `parts` and `input` outlive the call; `ptrs` holds `world` live tensors.
        let ret = unsafe {
            ffi::tw_allgather(
                self.raw,
                ptrs.as_ptr(),
                to_c(self.world),
                input.as_mut_ptr(),
            )
        };
        ffi::check(ret).map_err(|m| self.c10d_err("allgather", m))?;
        Ok(out)
    }

    /// Fail unless every rank passes the same `value` for `what` (e.g. a hash of the config
    /// and code version); the error lists each rank's value.
    pub fn check_same(&self, what: &str, value: u64) -> Result<()> {
        let t = Tensor::from_slice(&[value as i64]).to_device(self.device);
        let all = self.all_gather(&t)?.to_device(Device::Cpu);
        let values: Vec<i64> =
            Vec::<i64>::try_from(all.reshape([-1])).map_err(|e| DistError::BadTensor {
                rank: self.rank,
                world: self.world,
                op: format!("check_same({what})"),
                reason: e.to_string(),
            })?;
        if values.iter().all(|v| *v == values[0]) {
            return Ok(());
        }
        let detail = values
            .iter()
            .enumerate()
            .map(|(r, v)| format!("rank {r}: {:016x}", *v as u64))
            .collect::<Vec<_>>()
            .join(", ");
        Err(DistError::Mismatch {
            rank: self.rank,
            world: self.world,
            what: what.to_string(),
            detail,
        })
    }

    /// Copy root's values of `tensors` into every rank's, through one flat buffer (Gloo
    /// would otherwise sum a multi-tensor call into one). Checks shapes and kinds first.
    pub fn broadcast_tensors(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        self.check_same("tensor shapes for broadcast", shapes_hash(tensors))?;
        let mut flat = self.flatten(tensors, "broadcast")?;
        self.broadcast(&mut flat, root)?;
        self.unflatten(&flat, tensors, "broadcast")
    }

    /// Mean over ranks of each tensor, in place, through one flat buffer: the plain
    /// "one all-reduce after backward" alternative to the [`Reducer`](crate::Reducer).
    pub fn all_reduce_mean_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        let mut flat = self.flatten(tensors, "allreduce(mean)")?;
        self.all_reduce_mean(&mut flat)?;
        self.unflatten(&flat, tensors, "allreduce(mean)")
    }

    fn flatten(&self, tensors: &[Tensor], op: &str) -> Result<Tensor> {
        let kind = tensors[0].kind();
        let views: Vec<Tensor> = tensors
            .iter()
            .map(|t| {
                if t.kind() != kind {
                    return Err(DistError::BadTensor {
                        rank: self.rank,
                        world: self.world,
                        op: op.to_string(),
                        reason: format!("mixed kinds {kind:?} and {:?}", t.kind()),
                    });
                }
                Ok(t.detach().reshape([-1]))
            })
            .collect::<Result<_>>()?;
        Tensor::f_cat(&views, 0).map_err(|e| DistError::BadTensor {
            rank: self.rank,
            world: self.world,
            op: op.to_string(),
            reason: e.to_string(),
        })
    }

    fn unflatten(&self, flat: &Tensor, tensors: &[Tensor], op: &str) -> Result<()> {
        let mut offset = 0i64;
        for t in tensors {
            let n = t.numel() as i64;
            let src = flat.narrow(0, offset, n).reshape(t.size());
            tch::no_grad(|| t.detach().f_copy_(&src)).map_err(|e| DistError::BadTensor {
                rank: self.rank,
                world: self.world,
                op: op.to_string(),
                reason: e.to_string(),
            })?;
            offset += n;
        }
        Ok(())
    }
}

/// A hash of the shapes and kinds of `tensors`, in order.
fn shapes_hash(tensors: &[Tensor]) -> u64 {
    let text: String = tensors
        .iter()
        .map(|t| format!("{:?}{:?};", t.size(), t.kind()))
        .collect();
    fnv1a64(text.as_bytes())
}

/// FNV-1a, 64 bits: a stable hash (the same in every process and build) of config text
/// and code versions that ranks compare at start.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn to_c(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
