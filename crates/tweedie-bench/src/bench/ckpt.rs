//! `bench-samplers --model CKPT`: a trained denoiser as a sampler model over flat f64 rows.
//!
//! There is no exact answer for a trained network; its own reference solve (RK4 with many
//! steps) plays that part, so the numbers measure the samplers' discretisation error on the
//! vector field the network actually learned.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Device;
use tweedie_nets::{load_checkpoint, NetModel};

/// A checkpoint's denoiser on the CPU (tweedie-nets' `NetModel`: rows `[B, C·H·W]` in f64,
/// the network in f32 with the skip path in f64), and the number of values of one sample.
pub fn load(path: &Path) -> Result<(NetModel, usize)> {
    let loaded = load_checkpoint(path, Device::Cpu)
        .with_context(|| format!("loading model {}", path.display()))?;
    let label_dim = loaded.config.net.label_dim();
    if label_dim > 0 {
        bail!(
            "{}: class-conditional checkpoints are not benchmarked (no class to condition on)",
            path.display()
        );
    }
    let numel = loaded
        .config
        .net
        .sample_shape()
        .iter()
        .product::<i64>()
        .max(0) as usize;
    Ok((NetModel::new(loaded.denoiser, label_dim), numel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use std::collections::BTreeMap;
    use tch::{Kind, Tensor};
    use tweedie_core::Precond;
    use tweedie_nets::{save_checkpoint, ModelConfig, NetConfig, Wrapper};
    use tweedie_samplers::Model;

    #[test]
    fn checkpoint_round_trip_gives_the_same_denoiser() {
        let dir = std::env::temp_dir().join(format!("tweedie-ckpt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let cfg = ModelConfig {
            net: NetConfig::preset("mlp-2d").unwrap(),
            wrapper: Wrapper::Precond(Precond::edm()),
            conditioning: None,
        };
        tch::manual_seed(1);
        let (vs, den) = cfg.build(Device::Cpu).unwrap();
        save_checkpoint(&path, &vs, &cfg, &BTreeMap::new()).unwrap();
        let (m, numel) = load(&path).unwrap();
        assert_eq!(numel, 2);
        let x = Array2::from_shape_fn((5, 2), |(i, j)| (i as f64 - 2.0) * 0.7 + j as f64);
        for sigma in [1e-4, 0.5, 20.0] {
            let got = Model::<Array2<f64>>::denoise(&m, &x, sigma).unwrap();
            let t = Tensor::from_slice(x.as_slice().unwrap()).reshape([5, 2]);
            let want = den
                .denoise_at(&t, sigma, None)
                .unwrap()
                .to_kind(Kind::Double)
                .reshape([-1]);
            let want = Vec::<f64>::try_from(&want).unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .fold(0.0f64, |a, (g, w)| a.max((g - w).abs()));
            assert!(diff < 1e-12, "σ = {sigma}: loaded model differs by {diff}");
            if sigma < 1e-3 {
                // EDM preconditioning: c_skip → 1, c_out → 0 as σ → 0, so D(x; σ) → x.
                let off = got
                    .iter()
                    .zip(x.iter())
                    .fold(0.0f64, |a, (g, v)| a.max((g - v).abs()));
                assert!(off < 1e-3, "D(x; 1e-4) is {off} away from x");
            }
        }
        assert!(Model::<Array2<f64>>::denoise(&m, &Array2::zeros((2, 3)), 1.0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
