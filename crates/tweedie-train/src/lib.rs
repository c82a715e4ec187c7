//! Training for tweedie: data sets, per-formulation losses, the training loop and evaluation.
//!
//! A run is a [`TrainConfig`] (the TOML of `tweedie train`, see docs/training.md) handed to
//! [`train`]. The `[diffusion]` section resolves to a [`Formulation`]: the process, the
//! network wrapper, the noise-level density and the loss weight, all from tweedie-core.
//!
//! ```
//! use tweedie_core::ProcessKind;
//! use tweedie_train::TrainConfig;
//!
//! let cfg = TrainConfig::from_toml_str(
//!     "[diffusion]\ntype = \"VP\"\n[data]\ntype = \"moons\"\n",
//!     &["training.steps=10".to_string()],
//! )?;
//! // VP as in Karras et al. 2022: β_min = 0.1, β_d = 19.9, ε_t = 1e-5.
//! let f = cfg.formulation()?;
//! assert_eq!(f.process, ProcessKind::Vp { beta_min: 0.1, beta_d: 19.9, eps_t: 1e-5 });
//! assert_eq!((cfg.training.steps, cfg.training.batch_size), (10, 128));
//! # Ok::<(), tweedie_train::TrainError>(())
//! ```
//!
//! `crates/tweedie/examples/train_from_code.rs` trains such a config for a few steps and
//! `sample_checkpoint.rs` samples the checkpoint it writes.

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod denoising;
pub mod error;
pub mod eval;
pub mod fft;
pub mod formulation;
pub mod guidance_classifier;
mod interrupt;
pub mod loss;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod resume;
pub mod rundir;
pub mod sample;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use formulation::{DiffusionConfig, Formulation, FormulationKind};
pub use loss::Loss;
pub use parallel::{DataParallel, GradSync};
pub use resume::AllowChanges;
pub use trainer::{train, train_parallel, TrainOptions, TrainOutcome};
