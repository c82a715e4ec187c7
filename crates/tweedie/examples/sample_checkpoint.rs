//! Load a checkpoint and sample it with the front door of tweedie-samplers, the way
//! k-diffusion's `sample_heun(model, x, sigmas)` is called.
//!
//! ```sh
//! cargo run --profile dev -p tweedie --example sample_checkpoint -- runs/<run>/model.safetensors
//! cargo run --profile dev -p tweedie --example sample_checkpoint   # a fresh, untrained MLP
//! ```
//!
//! Without an argument the example saves an untrained `mlp-small` EDM denoiser to a temporary
//! checkpoint first, so it runs anywhere; its samples are then meaningless but finite.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::Array2;
use tweedie::core::Precond;
use tweedie::nets::{load_checkpoint, save_checkpoint, ModelConfig, NetConfig, NetModel, Wrapper};
use tweedie::samplers::{grids, sample, Init, SamplerKind};
use tweedie::tch::Device;

fn main() -> anyhow::Result<()> {
    let path = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => untrained_checkpoint()?,
    };
    let loaded = load_checkpoint(&path, Device::Cpu)?;
    let label_dim = loaded.config.net.label_dim();
    let dim: i64 = loaded.config.net.sample_shape().iter().product();
    // NetModel makes the network a sampler model: D(x̃; σ̃) under no-grad, f64 states.
    let model = NetModel::new(loaded.denoiser, label_dim);

    // EDM's 18-step ρ-grid (σ̃ 80 → 0.002, then 0) and Heun: 35 network evaluations.
    let sigmas = grids::karras(18, 0.002, 80.0, 7.0)?;
    let init = Init::Noise(Array2::<f64>::zeros((16, dim as usize)));
    let out = sample(&model, SamplerKind::Heun, &sigmas, init, 0)?;
    println!(
        "{} samples of {} values from {} with {} network evaluations",
        out.samples.nrows(),
        out.samples.ncols(),
        path.display(),
        out.nfe
    );
    if let Some(row) = out.samples.rows().into_iter().next() {
        println!("first sample: {row}");
    }
    Ok(())
}

/// A fresh `mlp-small` EDM denoiser saved to a temporary checkpoint.
fn untrained_checkpoint() -> anyhow::Result<PathBuf> {
    let config = ModelConfig {
        net: NetConfig::preset("mlp-small")?,
        wrapper: Wrapper::Precond(Precond::edm()),
        conditioning: None,
    };
    let (vs, _) = config.build(Device::Cpu)?;
    let path = std::env::temp_dir().join(format!(
        "tweedie-example-{}.safetensors",
        std::process::id()
    ));
    save_checkpoint(&path, &vs, &config, &BTreeMap::new())?;
    Ok(path)
}
