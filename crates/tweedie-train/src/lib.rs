//! Training for tweedie: data sets, per-formulation losses, the training loop and evaluation.

pub mod data;
pub mod error;
pub mod fft;

pub use error::{Result, TrainError};
