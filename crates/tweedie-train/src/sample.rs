//! Sampling a trained denoiser with tweedie-samplers through `tweedie_nets::NetModel` (f64
//! ndarray states, the network on its device), with chunked generation where sample i depends
//! on (seed, i) only.

use ndarray::{Array2, ArrayD, IxDyn};
use tweedie_core::{Process, Timer, TimerKind};
use tweedie_samplers::{Init, Sampler, SamplerSpec};

pub use tweedie_nets::{one_hot, NetModel};

use crate::error::{Result, TrainError};

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
/// and its condition (the low-resolution field a conditioned network needs) row i − first of
/// `conditions` [n, C, H/f, W/f], when given. Returns the rows and the NFE per batch.
pub fn generate(
    model: &NetModel,
    plan: &SamplePlan,
    first: u64,
    n: usize,
    labels: Option<&[i64]>,
    conditions: Option<&tch::Tensor>,
) -> Result<(Array2<f32>, usize)> {
    if let Some(c) = conditions {
        if c.size().first().copied() != Some(n as i64) {
            return Err(TrainError::Other(format!(
                "{:?} conditions for {n} samples",
                c.size()
            )));
        }
    }
    let d: usize = plan.shape.iter().product();
    let grid = plan.timer.grid(plan.process, plan.spec.steps)?;
    let mut out = Array2::<f32>::zeros((n, d));
    let mut nfe = 0;
    let batch = plan.batch.max(1);
    let mut start = 0usize;
    while start < n {
        // Ctrl-C stops between batches (the caller decides what that means).
        crate::interrupt::check_stop()?;
        let b = batch.min(n - start);
        model.set_labels(labels.map(|l| &l[start..start + b]))?;
        model.set_condition(conditions.map(|c| c.narrow(0, start as i64, b as i64)));
        let mut shape = vec![b];
        shape.extend_from_slice(&plan.shape);
        let template = ArrayD::<f64>::zeros(IxDyn(&shape));
        let sampler = Sampler::new(plan.process, grid.clone(), plan.spec.kind.clone(), model)
            .map_err(|e| TrainError::Other(format!("sampler: {e}")))?
            .seed(plan.seed)
            .first_index(first + start as u64);
        let res = sampler
            .run(Init::Noise(template), None)
            .map_err(|e| TrainError::Other(format!("sampler: {e}")))?;
        nfe = res.nfe;
        for (i, v) in res.samples.iter().enumerate() {
            out[[start + i / d, i % d]] = *v as f32;
        }
        start += b;
    }
    model.set_labels(None)?;
    model.set_condition(None);
    Ok((out, nfe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Tensor};
    use tweedie_nets::PrecondDenoiser;

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
        let model = NetModel::new(den, 0).on_device(Device::Cpu);
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
        let (x, nfe) = generate(&model, &plan, 0, 1000, None, None)?;
        assert_eq!(nfe, 63);
        let var = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        // 4000 values of variance 0.25: standard error of the variance ≈ 0.25·√(2/4000).
        assert!(
            (var - 0.25).abs() < 5.0 * 0.25 * (2.0f64 / 4000.0).sqrt(),
            "variance {var}"
        );
        // Chunking does not change samples: sample 500 drawn alone equals its row above.
        let (one, _) = generate(&model, &plan, 500, 1, None, None)?;
        assert_eq!(one.row(0), x.row(500));
        Ok(())
    }
}
