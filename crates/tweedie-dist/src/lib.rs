//! Data-parallel tweedie on PyTorch's own distributed engine, c10d.
//!
//! A small C++ shim (src/shim.cpp) over the libtorch that tch links gives Rust:
//!
//! - a [`ProcessGroup`] from torchrun's environment ([`DistEnv::from_env`]) or explicit
//!   arguments, over a `TCPStore` rendezvous, with Gloo on CPU and NCCL on CUDA;
//! - all-reduce, broadcast, barrier and all-gather on tch tensors, each with a timeout, each
//!   returning a [`DistError`] that carries c10d's message, this rank and the collective;
//! - DDP's gradient reduction, [`Reducer`]: `c10d::Reducer`'s buckets are all-reduced from
//!   autograd hooks while backward still runs (Li et al. 2020, "PyTorch Distributed").
//!
//! The math crates stay free of it; `tweedie-train` and the CLI use it.
//!
//! A job of one rank (rank 0 serves the rendezvous store itself); under torchrun,
//! `DistEnv::from_env()` reads the same values from `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, …:
//!
//! ```
//! use std::time::Duration;
//! use tch::Tensor;
//! use tweedie_dist::{Backend, DistEnv, ProcessGroup};
//!
//! let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
//! let env = DistEnv::new(0, 1, "127.0.0.1", port, Duration::from_secs(60))?;
//! if Backend::Gloo.available() {
//!     let pg = ProcessGroup::new(&env, Backend::Gloo)?;
//!     let mut t = Tensor::from_slice(&[1.0f32, 2.0]);
//!     pg.all_reduce_sum(&mut t)?; // the sum over one rank is the tensor itself
//!     assert_eq!(Vec::<f32>::try_from(&t)?, [1.0, 2.0]);
//!     assert_eq!((pg.rank(), pg.world_size()), (0, 1));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod env;
mod ffi;
mod group;
mod reducer;

pub use env::{DistEnv, DEFAULT_TIMEOUT};
pub use group::{fnv1a64, Backend, ProcessGroup};
pub use reducer::{Reducer, DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES};

/// Errors of the distributed layer: bad environment, or a collective c10d reported failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A torchrun variable (or explicit argument) is missing or malformed.
    #[error("distributed environment: {var}={value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    /// c10d threw (or timed out) during `op` on this rank.
    #[error("rank {rank} of {world}: {op} failed: {message}")]
    C10d {
        rank: usize,
        world: usize,
        op: String,
        message: String,
    },
    /// Ranks disagree on something they must share (config, code version, shapes).
    #[error("rank {rank} of {world}: {what} differs across ranks: {detail}")]
    Mismatch {
        rank: usize,
        world: usize,
        what: String,
        detail: String,
    },
    /// A tensor that a collective cannot take (device, dtype, layout).
    #[error("rank {rank} of {world}: {op}: {reason}")]
    BadTensor {
        rank: usize,
        world: usize,
        op: String,
        reason: String,
    },
}

/// Result of the distributed layer.
pub type Result<T> = std::result::Result<T, DistError>;
