//! The raw network trait F(x; c_noise, labels) every concrete network implements, and the
//! counts of a network's variables. Building one from a config is [`crate::builder`].

use tch::Tensor;

/// A raw network F(x; c_noise, class labels, augment labels) before preconditioning
/// (Karras et al. 2022, eq. 7: D = c_skip·x + c_out·F(c_in·x; c_noise)).
pub trait Network: Send + std::fmt::Debug {
    /// Evaluates F; `x` is [B, …], `c_noise` is [B]; `train` enables dropout and label dropout.
    fn forward(
        &self,
        x: &Tensor,
        c_noise: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Tensor;
}

/// Counts of a network's variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// Scalars in trainable tensors (what the reference prints as "Parameters").
    pub parameters: usize,
    /// Number of trainable tensors (416 for DDPM++ CIFAR-10).
    pub parameter_tensors: usize,
    /// Number of fixed buffers (resample filters, Fourier frequencies).
    pub buffers: usize,
}
