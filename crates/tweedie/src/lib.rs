//! tweedie: diffusion and flow generative models in Rust.
//!
//! This umbrella crate re-exports the workspace crates under short names:
//! [`core`] (math, no libtorch), [`samplers`], [`nets`] (libtorch networks) and
//! [`train`]. The `tweedie` binary in this crate is the command-line tool.

pub use tweedie_core as core;
pub use tweedie_nets as nets;
pub use tweedie_samplers as samplers;
pub use tweedie_train as train;

/// libtorch as linked by this build (re-exported so users need not pin tch themselves).
pub use tch;

/// The libtorch version this binary was built against, read from the installation by
/// build.rs (`version.py` or `build-version`); `None` if it could not be determined.
pub const LIBTORCH_VERSION: Option<&str> = option_env!("TWEEDIE_LIBTORCH_VERSION");

/// The libtorch library folder this binary was linked against (also its rpath).
pub const LIBTORCH_LIB: Option<&str> = option_env!("TWEEDIE_LIBTORCH_LIB");

/// Whether the linked libtorch is a CUDA build (libtorch_cuda linked): `Some("1")` or `Some("0")`.
pub const LIBTORCH_CUDA: Option<&str> = option_env!("TWEEDIE_LIBTORCH_CUDA");
