//! The raw network trait F(x; c_noise, labels) and its builder from a [`NetConfig`].

use tch::{nn, Device, Tensor};

use crate::config::NetConfig;
use crate::dhariwal::DhariwalUnet;
use crate::error::Result;
use crate::mlp::Mlp;
use crate::unet::SongUnet;

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

/// Builds the network described by `cfg` under the var-store path `p`.
pub fn build_network(p: &nn::Path, cfg: &NetConfig) -> Result<Box<dyn Network>> {
    // Initialisation draws from libtorch's global generator (see crate::torch_rng).
    crate::torch_rng::with_torch_rng(|| {
        Ok(match cfg {
            NetConfig::Unet(c) => Box::new(SongUnet::new(p, c)?) as Box<dyn Network>,
            NetConfig::Mlp(c) => Box::new(Mlp::new(p, c)?),
            NetConfig::Dhariwal(c) => Box::new(DhariwalUnet::new(p, c)?),
        })
    })
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

/// Counts parameters of `cfg` by building it on the CPU (no forward pass; ~0.5 s for 55 M).
pub fn count_params(cfg: &NetConfig) -> Result<ParamCount> {
    let vs = nn::VarStore::new(Device::Cpu);
    tch::no_grad(|| build_network(&(vs.root() / "model"), cfg))?;
    let trainable = vs.trainable_variables();
    let parameters = trainable.iter().map(|t| t.numel()).sum();
    Ok(ParamCount {
        parameters,
        parameter_tensors: trainable.len(),
        buffers: vs.len() - trainable.len(),
    })
}

/// The report `tweedie nets params --preset NAME` prints.
pub fn params_report(preset: &str) -> Result<String> {
    let cfg = NetConfig::preset(preset)?;
    // ADM at ImageNet size has 296 M parameters: count it from shapes instead of building it.
    let c = match &cfg {
        NetConfig::Dhariwal(d) => {
            d.validate()?;
            d.shape_count()
        }
        _ => count_params(&cfg)?,
    };
    Ok(format!(
        "{preset}: {} parameters in {} tensors (+{} buffers)",
        group_thousands(c.parameters),
        c.parameter_tensors,
        c.buffers
    ))
}

/// 55732739 → "55,732,739".
pub fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
