//! libtorch networks of tweedie: the DDPM++/NCSN++ U-Net (SongUNet, Song et al. 2021 as
//! configured by Karras et al. 2022) and ADM (DhariwalUNet, Dhariwal & Nichol 2021) with the
//! reference's variable names, a safe importer of NVlabs/edm pickles, an MLP for
//! low-dimensional data, preconditioned denoisers D(x̃; σ̃), EMA, checkpoints and devices.
//!
//! A network becomes a denoiser through its wrapper (EDM preconditioning here, Karras et al.
//! 2022): D(x̃; σ̃) = c_skip·x̃ + c_out·F(c_in·x̃; c_noise). A fresh network's output layers
//! start near zero, so D is then the skip path alone, c_skip = σ_d²/(σ̃² + σ_d²):
//!
//! ```
//! use tweedie_core::Precond;
//! use tweedie_nets::tch::{nn, Device, Kind, Tensor};
//! use tweedie_nets::{NetConfig, PrecondDenoiser, Wrapper};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let cfg = NetConfig::preset("mlp-small")?; // 2-D inputs
//! let d = PrecondDenoiser::new(&vs.root(), &cfg, Wrapper::Precond(Precond::edm()))?;
//! let x = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
//! let y = d.denoise_at(&x, 0.5, None)?; // σ̃ = 0.5 = σ_d: c_skip = 1/2
//! assert_eq!(y.size(), vec![4, 2]);
//! let gap = f64::try_from((&y - &x * 0.5).abs().max())?;
//! assert!(gap < 1e-2, "D − c_skip·x̃ = {gap}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`NetModel`] (feature `samplers`, on by default) makes a denoiser a tweedie-samplers model;
//! [`save_checkpoint`] and [`load_checkpoint`] keep it with its config.

// `a = a + b` on tensors stays out of place on purpose: `+=` is an in-place libtorch op that
// would corrupt autograd graphs and could write into a caller's tensor.
#![allow(clippy::assign_op_pattern)]

pub mod budget;
pub mod builder;
pub mod checkpoint;
pub mod classifier;
pub mod conditioning;
pub mod config;
pub mod device;
pub mod dhariwal;
pub mod ema;
pub mod error;
pub mod import;
mod layers;
pub mod mlp;
pub mod network;
pub mod precond;
#[cfg(feature = "samplers")]
pub mod sampler_model;
mod torch_rng;
pub mod unet;

pub use builder::{build_network, count_params, params_report};
pub use checkpoint::{
    load_checkpoint, load_reference_state_dict, read_config, save_checkpoint, save_ema_checkpoint,
    trained_label_dropout, LoadedModel, ModelConfig, META_LABEL_DROPOUT,
};
#[cfg(feature = "samplers")]
pub use classifier::NetClassifier;
pub use classifier::{
    load_classifier, save_classifier, ClassifierConfig, LoadedClassifier, NoisyClassifier,
    META_CLASSIFIER,
};
pub use conditioning::{Conditioning, ConditioningKind};
pub use config::{
    DecoderType, DhariwalConfig, Embedding, EncoderType, MlpConfig, NetConfig, UnetConfig, PRESETS,
};
pub use device::{cuda_available, inference, set_threads, DeviceSpec};
pub use dhariwal::DhariwalUnet;
pub use ema::{copy_buffers, Ema, EmaSchedule};
pub use error::{NetsError, Result};
pub use mlp::Mlp;
pub use network::{Network, ParamCount};
pub use precond::{variance_fraction, CoeffTensors, ParamAdapter, PrecondDenoiser, Wrapper};
#[cfg(feature = "samplers")]
pub use sampler_model::{one_hot, ConditionSlot, NetModel};
pub use tch;
pub use torch_rng::with_torch_rng;
pub use unet::SongUnet;
