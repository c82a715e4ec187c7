//! `bench-samplers --model CKPT`: a trained denoiser as a sampler model over flat f64 rows.
//!
//! There is no exact answer for a trained network; its own reference solve (RK4 with many
//! steps) plays that part, so the numbers measure the samplers' discretisation error on the
//! vector field the network actually learned.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Result};
use ndarray::Array2;
use tch::{Device, Kind, Tensor};
use tweedie::nets::PrecondDenoiser;
use tweedie::samplers::{Model, SamplerError};

/// A checkpoint's denoiser D(x̃; σ̃) evaluated in f32 on the CPU, rows `[B, C·H·W]` in f64.
pub struct NetModel {
    // libtorch modules are Send but not Sync; samplers call the model from one thread at a time.
    den: Mutex<PrecondDenoiser>,
    shape: Vec<i64>,
}

impl NetModel {
    /// Loads `path` (a tweedie checkpoint with its config in the metadata).
    pub fn load(path: &Path) -> Result<Self> {
        let loaded = crate::cli::model::load(path, Device::Cpu)?;
        if loaded.config.net.label_dim() > 0 {
            bail!(
                "{}: class-conditional checkpoints are not benchmarked (no class to condition on)",
                path.display()
            );
        }
        let shape = loaded.config.net.sample_shape();
        Ok(NetModel {
            den: Mutex::new(loaded.denoiser),
            shape,
        })
    }

    /// Elements of one sample (C·H·W, or d for an MLP).
    pub fn numel(&self) -> usize {
        self.shape.iter().product::<i64>().max(0) as usize
    }
}

fn torch(e: impl std::fmt::Display) -> SamplerError {
    SamplerError::Numerical(format!("libtorch: {e}"))
}

impl Model<Array2<f64>> for NetModel {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie::samplers::Result<Array2<f64>> {
        let (b, n) = x.dim();
        if n != self.numel() {
            return Err(SamplerError::Shape(format!(
                "rows of {n} values for samples of shape {:?}",
                self.shape
            )));
        }
        let mut shape = vec![b as i64];
        shape.extend(&self.shape);
        let v: Vec<f64> = x.iter().copied().collect();
        let t = Tensor::f_from_slice(&v)
            .and_then(|t| t.f_reshape(shape.as_slice()))
            .map_err(torch)?;
        let den = self
            .den
            .lock()
            .map_err(|_| SamplerError::Numerical("model lock poisoned".into()))?;
        // f64 in: the skip path c_skip·x̃ stays in f64; the network itself runs in f32.
        let out = den.denoise_at(&t, sigma, None).map_err(torch)?;
        let flat = out.to_kind(Kind::Double).reshape([-1]);
        let v = Vec::<f64>::try_from(&flat).map_err(torch)?;
        Array2::from_shape_vec((b, n), v).map_err(|e| SamplerError::Shape(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tweedie::core::Precond;
    use tweedie::nets::{save_checkpoint, ModelConfig, NetConfig, Wrapper};

    #[test]
    fn checkpoint_round_trip_gives_the_same_denoiser() {
        let dir = std::env::temp_dir().join(format!("tweedie-ckpt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let cfg = ModelConfig {
            net: NetConfig::preset("mlp-2d").unwrap(),
            wrapper: Wrapper::Precond(Precond::edm()),
        };
        tch::manual_seed(1);
        let (vs, den) = cfg.build(Device::Cpu).unwrap();
        save_checkpoint(&path, &vs, &cfg, &BTreeMap::new()).unwrap();
        let m = NetModel::load(&path).unwrap();
        assert_eq!(m.numel(), 2);
        let x = Array2::from_shape_fn((5, 2), |(i, j)| (i as f64 - 2.0) * 0.7 + j as f64);
        for sigma in [1e-4, 0.5, 20.0] {
            let got = m.denoise(&x, sigma).unwrap();
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
        assert!(m.denoise(&Array2::zeros((2, 3)), 1.0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
