//! Training for tweedie: data sets, per-formulation losses, the training loop and evaluation.

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod denoising;
pub mod error;
pub mod eval;
pub mod fft;
pub mod formulation;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod sample;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use formulation::{DiffusionConfig, Formulation, FormulationKind};
pub use loss::Loss;
pub use trainer::{train, TrainOptions, TrainOutcome};
