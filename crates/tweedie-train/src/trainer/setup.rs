//! What every rank prepares before training: data, model config, loss, device, its rows of the
//! batch, and (on resume) the checked state; a fresh run claims its directory last.

use std::path::PathBuf;

use tch::Device;
use tweedie_core::Invalid;
use tweedie_nets::ModelConfig;

use super::model::{device_of, model_config};
use super::TrainOptions;
use crate::checkpoint::{read_state, STATE_FILE};
use crate::config::TrainConfig;
use crate::data::Data;
use crate::error::{Result, TrainError};
use crate::loss::Loss;
use crate::parallel::{shard_rows, DataParallel};
use crate::resume::data_fingerprint;
use crate::rundir::RunLock;

/// What every rank prepares before training.
pub(super) struct Loaded {
    pub(super) data: Data,
    pub(super) mcfg: ModelConfig,
    pub(super) loss: Loss,
    pub(super) device: Device,
    pub(super) resumed: Option<crate::checkpoint::LoadedState>,
    pub(super) rows: std::ops::Range<usize>,
    pub(super) state_path: PathBuf,
    pub(super) config_text: String,
    pub(super) fingerprint: String,
    pub(super) run_dir: PathBuf,
    pub(super) lock: Option<RunLock>,
}

pub(super) type Prepared = (
    Data,
    ModelConfig,
    Loss,
    Device,
    Option<crate::checkpoint::LoadedState>,
    std::ops::Range<usize>,
    // The writer's run directory and its lock.
    Option<(PathBuf, RunLock)>,
    // The data fingerprint.
    String,
);

pub(super) fn prepare(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    dp: Option<&DataParallel>,
    writer: bool,
) -> Result<Prepared> {
    let rows = match dp {
        Some(d) => shard_rows(cfg.training.batch_size, d.rank(), d.world())?,
        None => 0..cfg.training.batch_size,
    };
    let data = cfg.data.load()?;
    if cfg.training.dequantize && data.levels.is_none() {
        return Err(TrainError::invalid(
            "training.dequantize",
            true,
            format!(
                "data set {} has no integer levels to dequantise (digits, PNG, IDX and u8 .npy data have)",
                data.name
            ),
        ));
    }
    let mcfg = model_config(cfg, &data)?;
    let loss = Loss::new(cfg.formulation()?)?;
    let device = match (device_of(cfg)?, dp) {
        // One GPU per rank on each node.
        (Device::Cuda(_), Some(d)) => Device::Cuda(d.local_rank),
        (dev, _) => dev,
    };
    let fingerprint = data_fingerprint(&data.train);

    // Read and check the state to resume from before writing anything.
    let (resumed, claim) = if opts.resume {
        let dir = &opts.run_dir;
        if !dir.is_dir() {
            return Err(TrainError::Other(format!(
                "cannot resume: {} is not a run directory",
                dir.display()
            )));
        }
        // Locked first (by the writing rank): a second process must not extend the same state.
        let lock = if writer {
            Some(RunLock::acquire(dir)?)
        } else {
            None
        };
        let state_path = dir.join(STATE_FILE);
        if !state_path.exists() {
            return Err(TrainError::Other(format!(
                "cannot resume: {} has no {STATE_FILE} (not a run directory, or the run stopped \
                 before its first checkpoint: delete the folder and start afresh)",
                dir.display()
            )));
        }
        let st = read_state(&state_path)?;
        // Read as the run trained: a key it predates is what it did, not today's default.
        let old: TrainConfig =
            TrainConfig::from_run_toml_str(&st.config_toml, &[]).map_err(|e| {
                TrainError::Checkpoint {
                    path: state_path.clone(),
                    reason: format!("its config does not parse: {e}"),
                }
            })?;
        let diffs = crate::resume::differences(
            &old,
            cfg,
            st.data_fingerprint.as_deref(),
            &fingerprint,
            &opts.allow,
        )?;
        if !diffs.is_empty() {
            return Err(TrainError::ResumeMismatch {
                run_dir: dir.clone(),
                differences: diffs,
            });
        }
        if st.data_fingerprint.is_none() && writer {
            eprintln!(
                "warning: {} predates data fingerprints: the data cannot be compared with the run's",
                state_path.display()
            );
        }
        // Even an allowed change cannot load weights into another architecture.
        if model_config(&old, &data)? != mcfg {
            return Err(TrainError::Checkpoint {
                path: state_path.clone(),
                reason: "was trained with a different network than the config's; its weights \
                         cannot be loaded into this one"
                    .into(),
            });
        }
        if st.step > cfg.training.steps {
            return Err(TrainError::invalid(
                "training.steps",
                cfg.training.steps,
                format!(
                    "the run is already at step {}; raise training.steps to continue",
                    st.step
                ),
            ));
        }
        (Some(st), lock.map(|l| (dir.clone(), l)))
    } else if writer {
        // Everything is checked: only now does a fresh run claim its directory.
        (
            None,
            Some(crate::rundir::create_fresh(&opts.run_dir, opts.unique_dir)?),
        )
    } else {
        (None, None)
    };
    Ok((data, mcfg, loss, device, resumed, rows, claim, fingerprint))
}
