//! The EMA sampling copy of the model and the sample grids written during and after training.

use std::path::Path;

use tch::{nn::VarStore, Device, Tensor};
use tweedie_core::TimerKind;
use tweedie_nets::ModelConfig;

use super::step::Live;
use super::with_torch_rng;
use crate::config::TrainConfig;
use crate::data::{Data, Dataset};
use crate::error::{Result, TrainError};
use crate::sample::{generate, NetModel, SamplePlan};

/// Sets the sampling copy to the EMA weights and the live model's fixed buffers.
pub(super) fn sync_sampling_copy(live: &Live, sampling: &Sampling) -> Result<()> {
    tweedie_nets::copy_buffers(&live.vs, &sampling.ema_vs)
        .and_then(|()| live.ema.copy_to(&sampling.ema_vs))
        .map_err(|e| TrainError::Other(format!("EMA: {e}")))
}

/// Everything needed to sample the EMA model.
pub struct Sampling {
    pub ema_vs: VarStore,
    pub model: NetModel,
    pub process: Box<dyn tweedie_core::Process>,
    pub timer: TimerKind,
    /// Most samples per network call: what the memory budget allows for this network
    /// ([`tweedie_nets::budget::sampling_batch`]); plans never exceed it.
    pub max_batch: usize,
}

impl Sampling {
    /// Builds the sampling copy of the model (its weights are set by [`Ema::copy_to`]).
    pub fn new(cfg: &TrainConfig, mcfg: &ModelConfig, device: Device) -> Result<Self> {
        let (ema_vs, den) = with_torch_rng(|| mcfg.build(device))
            .map_err(|e| TrainError::Other(format!("model: {e}")))?;
        let f = cfg.formulation()?;
        Ok(Sampling {
            ema_vs,
            model: NetModel::new(den, mcfg.net.label_dim()).on_device(device),
            process: f.process.try_build()?,
            timer: TimerKind::Edm {
                sigma_min: f.sigma_min,
                sigma_max: f.sigma_max,
                rho: f.rho,
            },
            max_batch: tweedie_nets::budget::sampling_batch(&mcfg.net, usize::MAX),
        })
    }

    /// `requested` samples per network call, capped by [`Self::max_batch`].
    pub fn batch(&self, requested: usize) -> usize {
        requested.min(self.max_batch).max(1)
    }

    /// The plan for `cfg.sampling`.
    pub fn plan(&self, cfg: &TrainConfig, shape: &[usize], batch: usize) -> Result<SamplePlan<'_>> {
        Ok(SamplePlan {
            process: self.process.as_ref(),
            timer: self.timer.clone(),
            spec: cfg.sampling.spec()?,
            shape: shape.to_vec(),
            batch: self.batch(batch),
            seed: cfg.sampling.seed,
        })
    }
}

/// Class labels of a sample grid: sample i of class i mod C (conditional models only).
pub fn grid_labels(cfg: &TrainConfig, data: &Dataset, n: usize) -> Option<Vec<i64>> {
    match (cfg.training.conditional, data.num_classes) {
        (true, Some(c)) if c > 0 => Some((0..n).map(|i| (i % c) as i64).collect()),
        _ => None,
    }
}

/// Conditions of `n` samples of a conditioned model (`[conditioning]`): sample i is
/// conditioned on the low-resolution version of held-out field i mod N, so that the samples
/// are, together, draws from the data distribution (each from p(x | y) with y that of a data
/// draw) and compare with it as an unconditioned model's would. `None` without conditioning.
pub fn held_out_conditions(cfg: &TrainConfig, data: &Data, n: usize) -> Result<Option<Tensor>> {
    let Some(c) = &cfg.conditioning else {
        return Ok(None);
    };
    let m = data.held_out.len();
    if m == 0 {
        return Err(TrainError::Data(
            "a conditioned model samples given held-out fields, and the held-out set is empty"
                .into(),
        ));
    }
    let idx: Vec<usize> = (0..n).map(|i| i % m).collect();
    Ok(Some(
        c.low_res(&data.held_out.batch_tensor(&idx, Device::Cpu))?,
    ))
}

/// Writes a sample grid (images) or scatter plot (vectors) of `cfg.sampling.grid` EMA samples.
pub fn write_samples(path: &Path, s: &Sampling, cfg: &TrainConfig, data: &Data) -> Result<()> {
    let n = cfg.sampling.grid;
    let labels = grid_labels(cfg, &data.train, n);
    let conditions = held_out_conditions(cfg, data, n)?;
    // In batches of eval.batch_size, capped by the memory budget: a large grid of large
    // images stays in bounded memory.
    let plan = s.plan(cfg, &data.train.shape, n.min(cfg.eval.batch_size))?;
    let (x, _) = generate(
        &s.model,
        &plan,
        0,
        n,
        labels.as_deref(),
        conditions.as_ref(),
    )?;
    let fields = matches!(data.truth, crate::data::GroundTruth::Fields(_)) || data.netcdf.is_some();
    if data.train.is_image() && (fields || !matches!(data.train.shape[0], 1 | 3)) {
        crate::plot::write_field_grid(path, x.view(), &data.train.shape)
    } else if data.train.is_image() {
        crate::plot::write_image_grid(path, x.view(), &data.train.shape)
    } else {
        crate::plot::write_scatter(path, x.view(), Some(data.held_out.x.view()))
    }
}
