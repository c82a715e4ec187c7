//! Sampling a trained denoiser with tweedie-samplers: an adapter from `PrecondDenoiser`
//! (tch) to the samplers' `Model` over ndarray, and chunked generation where sample i
//! depends on (seed, i) only.

use std::sync::Mutex;

use ndarray::{Array2, ArrayD, IxDyn};
use tch::{Device, Kind, Tensor};
use tweedie_core::{Process, Timer, TimerKind};
use tweedie_nets::PrecondDenoiser;
use tweedie_samplers::{Denoiser, Init, Model, SamplerError, SamplerSpec};

use crate::error::{Result, TrainError};

/// A tch denoiser as a sampler model: f64 ndarray states in, the network runs in f32 on its
/// device without gradients, f64 out. Optional class labels (one per batch row) condition it.
#[derive(Debug)]
pub struct NetModel {
    inner: Mutex<PrecondDenoiser>,
    labels: Mutex<Option<Tensor>>,
    device: Device,
    label_dim: usize,
}

impl NetModel {
    /// Wraps a denoiser living on `device`; `label_dim` > 0 for class-conditional networks.
    pub fn new(den: PrecondDenoiser, device: Device, label_dim: usize) -> Self {
        NetModel {
            inner: Mutex::new(den),
            labels: Mutex::new(None),
            device,
            label_dim,
        }
    }

    /// Sets the classes of the next batch's rows (`None`: unconditional).
    pub fn set_labels(&self, labels: Option<&[i64]>) -> Result<()> {
        let t = match labels {
            Some(l) if self.label_dim > 0 => Some(one_hot(l, self.label_dim, self.device)?),
            _ => None,
        };
        *self
            .labels
            .lock()
            .map_err(|_| TrainError::Other("sampler model lock poisoned".into()))? = t;
        Ok(())
    }

    /// D(x̃; σ̃) on a tensor batch, no gradients (for evaluation).
    pub fn denoise_tensor(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let den = self
            .inner
            .lock()
            .map_err(|_| TrainError::Other("sampler model lock poisoned".into()))?;
        let labels = self
            .labels
            .lock()
            .map_err(|_| TrainError::Other("sampler model lock poisoned".into()))?;
        den.denoise(x, sigma, labels.as_ref())
            .map_err(|e| TrainError::Other(e.to_string()))
    }
}

/// One-hot float labels [B, C]; a label outside 0..C is an error.
pub fn one_hot(labels: &[i64], classes: usize, device: Device) -> Result<Tensor> {
    if let Some(l) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
        return Err(TrainError::Data(format!(
            "label {l} is outside 0..{classes}"
        )));
    }
    let idx = Tensor::from_slice(labels).to_device(device);
    Ok(idx.one_hot(classes as i64).to_kind(Kind::Float))
}

impl Model<ArrayD<f64>> for NetModel {
    fn denoise(&self, x: &ArrayD<f64>, sigma: f64) -> tweedie_samplers::Result<ArrayD<f64>> {
        let shape: Vec<i64> = x.shape().iter().map(|&s| s as i64).collect();
        let flat: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let xt = Tensor::from_slice(&flat)
            .view(shape.as_slice())
            .to_device(self.device);
        let b = shape.first().copied().unwrap_or(0);
        let sig = Tensor::full([b], sigma, (Kind::Double, Device::Cpu));
        let d = self
            .denoise_tensor(&xt, &sig)
            .map_err(|e| SamplerError::Shape(e.to_string()))?;
        let v: Vec<f64> = Vec::<f64>::try_from(
            d.to_kind(Kind::Double)
                .to_device(Device::Cpu)
                .flatten(0, -1),
        )
        .map_err(|e| SamplerError::Shape(e.to_string()))?;
        ArrayD::from_shape_vec(IxDyn(x.shape()), v).map_err(|e| SamplerError::Shape(e.to_string()))
    }
}

/// How samples are drawn: process, ρ-grid and sampler.
#[derive(Debug)]
pub struct SamplePlan<'a> {
    pub process: &'a dyn Process,
    pub timer: TimerKind,
    pub spec: SamplerSpec,
    /// Shape of one sample.
    pub shape: Vec<usize>,
    /// Samples per sampler call.
    pub batch: usize,
    pub seed: u64,
}

/// Draws samples `first..first+n` as rows [n, D] (f32); sample i's class is `labels[i - first]`
/// when given. Returns the rows and the NFE per batch.
pub fn generate(
    model: &NetModel,
    plan: &SamplePlan,
    first: u64,
    n: usize,
    labels: Option<&[i64]>,
) -> Result<(Array2<f32>, usize)> {
    let d: usize = plan.shape.iter().product();
    let grid = plan.timer.grid(plan.process, plan.spec.steps)?;
    let mut out = Array2::<f32>::zeros((n, d));
    let mut nfe = 0;
    let batch = plan.batch.max(1);
    let mut start = 0usize;
    while start < n {
        let b = batch.min(n - start);
        model.set_labels(labels.map(|l| &l[start..start + b]))?;
        let mut shape = vec![b];
        shape.extend_from_slice(&plan.shape);
        let template = ArrayD::<f64>::zeros(IxDyn(&shape));
        let den = Denoiser::new(plan.process, grid.clone(), plan.spec.kind.clone(), model)
            .map_err(|e| TrainError::Other(format!("sampler: {e}")))?
            .seed(plan.seed)
            .first_index(first + start as u64);
        let res = den
            .run(Init::Noise(template), None)
            .map_err(|e| TrainError::Other(format!("sampler: {e}")))?;
        nfe = res.nfe;
        for (i, v) in res.samples.iter().enumerate() {
            out[[start + i / d, i % d]] = *v as f32;
        }
        start += b;
    }
    model.set_labels(None)?;
    Ok((out, nfe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Zero;
    impl tweedie_nets::Network for Zero {
        fn forward(
            &self,
            x: &Tensor,
            _: &Tensor,
            _: Option<&Tensor>,
            _: Option<&Tensor>,
            _: bool,
        ) -> Tensor {
            x.zeros_like()
        }
    }

    /// With F = 0 and EDM preconditioning, D = c_skip·x̃ = σ_d²/(σ̃²+σ_d²)·x̃: the exact denoiser
    /// of N(0, σ_d²I). The probability-flow ODE then maps N(0, (σ_d²+σ̃_max²)I) to N(0, σ_d²I),
    /// so samples have variance σ_d² (within sampling error and the tiny σ̃_min bias).
    #[test]
    fn sampling_the_exact_gaussian_denoiser_gives_the_data_variance() -> Result<()> {
        let wrapper =
            tweedie_nets::Wrapper::Precond(tweedie_core::Precond::Edm { sigma_data: 0.5 });
        let den = PrecondDenoiser::from_network(Box::new(Zero), wrapper, 0)
            .map_err(|e| TrainError::Other(e.to_string()))?;
        let model = NetModel::new(den, Device::Cpu, 0);
        let process = tweedie_core::ProcessKind::edm().build();
        let plan = SamplePlan {
            process: process.as_ref(),
            timer: TimerKind::Edm {
                sigma_min: 0.002,
                sigma_max: 80.0,
                rho: 7.0,
            },
            spec: SamplerSpec {
                kind: tweedie_samplers::SamplerKind::Heun,
                steps: 32,
            },
            shape: vec![1, 2, 2],
            batch: 300,
            seed: 3,
        };
        let (x, nfe) = generate(&model, &plan, 0, 1000, None)?;
        assert_eq!(nfe, 63);
        let var = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        // 4000 values of variance 0.25: standard error of the variance ≈ 0.25·√(2/4000).
        assert!(
            (var - 0.25).abs() < 5.0 * 0.25 * (2.0f64 / 4000.0).sqrt(),
            "variance {var}"
        );
        // Chunking does not change samples: sample 500 drawn alone equals its row above.
        let (one, _) = generate(&model, &plan, 500, 1, None)?;
        assert_eq!(one.row(0), x.row(500));
        Ok(())
    }
}
