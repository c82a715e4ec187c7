//! libtorch networks of tweedie: the DDPM++/NCSN++ U-Net (SongUNet, Song et al. 2021 as
//! configured by Karras et al. 2022) with the reference's variable names, an MLP for
//! low-dimensional data, preconditioned denoisers D(x̃; σ̃), EMA, checkpoints and devices.

pub mod config;
pub mod error;
mod layers;
pub mod mlp;
pub mod network;
pub mod unet;

pub use config::{DecoderType, Embedding, EncoderType, MlpConfig, NetConfig, UnetConfig, PRESETS};
pub use error::{NetsError, Result};
pub use mlp::Mlp;
pub use network::{build_network, count_params, params_report, Network, ParamCount};
pub use tch;
pub use unet::SongUnet;
