//! libtorch networks of tweedie: the DDPM++/NCSN++ U-Net (SongUNet, Song et al. 2021 as
//! configured by Karras et al. 2022) with the reference's variable names, an MLP for
//! low-dimensional data, preconditioned denoisers D(x̃; σ̃), EMA, checkpoints and devices.

// `a = a + b` on tensors stays out of place on purpose: `+=` is an in-place libtorch op that
// would corrupt autograd graphs and could write into a caller's tensor.
#![allow(clippy::assign_op_pattern)]

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod ema;
pub mod error;
mod layers;
pub mod mlp;
pub mod network;
pub mod precond;
#[cfg(feature = "samplers")]
pub mod sampler_model;
mod torch_rng;
pub mod unet;

pub use checkpoint::{
    load_checkpoint, load_reference_state_dict, read_config, save_checkpoint, save_ema_checkpoint,
    LoadedModel, ModelConfig,
};
pub use config::{DecoderType, Embedding, EncoderType, MlpConfig, NetConfig, UnetConfig, PRESETS};
pub use device::{cuda_available, inference, set_threads, DeviceSpec};
pub use ema::{copy_buffers, Ema, EmaSchedule};
pub use error::{NetsError, Result};
pub use mlp::Mlp;
pub use network::{build_network, count_params, params_report, Network, ParamCount};
pub use precond::{variance_fraction, CoeffTensors, ParamAdapter, PrecondDenoiser, Wrapper};
#[cfg(feature = "samplers")]
pub use sampler_model::{one_hot, NetModel};
pub use tch;
pub use torch_rng::with_torch_rng;
pub use unet::SongUnet;
