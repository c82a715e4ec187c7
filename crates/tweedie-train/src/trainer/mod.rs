//! The training loop: Adam with warm-up and clipping, EMA, checkpoints every N steps and on
//! Ctrl-C, exact resume, progress bar, metrics.jsonl, loss plot, sample grids, report.
//!
//! Every random draw of step k is keyed by (seed, k) or (seed, sample index): batches come
//! from per-epoch permutations keyed by (seed, epoch), noise levels and noise by (seed,
//! sample index), dropout by a torch seed set from (seed, k). Nothing depends on the total
//! step count, so N steps in one go and N/2 + resume + N/2 give bit-identical weights on CPU.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Instant;
use tweedie_core::Invalid;

use rand::Rng;
use tch::{nn::VarStore, Device, Kind, Tensor};
use tweedie_core::rng::stream_rng;
use tweedie_core::TimerKind;
use tweedie_nets::{Ema, ModelConfig, NetConfig, PrecondDenoiser};

use crate::checkpoint::{read_state, restore, save_state, STATE_FILE};
use crate::config::TrainConfig;
use crate::data::{Data, Dataset};
use crate::error::{Result, TrainError};
use crate::loss::{Loss, STREAM_NOISE};
use crate::optim::{Adam, AdamConfig};
use crate::parallel::{code_version, dist_err, shard_rows, DataParallel, Sync};
use crate::resume::{data_fingerprint, AllowChanges};
use crate::rundir::RunLock;
use crate::sample::{generate, one_hot, NetModel, SamplePlan};

/// RNG stream of the per-epoch permutations.
pub const STREAM_PERM: u64 = STREAM_NOISE + 1;
/// RNG stream of augmentation draws.
pub const STREAM_AUG: u64 = STREAM_NOISE + 2;

/// File names inside a run directory.
pub mod files {
    pub const CONFIG: &str = "config.toml";
    pub const MODEL: &str = "model.safetensors";
    pub const METRICS: &str = "metrics.jsonl";
    pub const LOSS_PLOT: &str = "loss.png";
    pub const SAMPLES: &str = "samples.png";
    pub const SAMPLES_DIR: &str = "samples";
    /// Samples in physical units, for NetCDF data.
    pub const SAMPLES_NC: &str = "samples.nc";
    pub const REPORT: &str = "report.md";
    pub const EVAL: &str = "eval.json";
    pub const DENOISING_PLOT: &str = "denoising.png";
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Runs `f` holding the process-wide lock on libtorch's global generator (re-entrant): weight
/// initialisation and dropout draw from it, so two runs in one process (parallel tests, a
/// classifier trained beside a model) would otherwise interleave their draws and lose
/// reproducibility.
pub use tweedie_nets::with_torch_rng;

static HANDLER: Once = Once::new();

/// Installs the Ctrl-C handler once per process: the first Ctrl-C asks the loop to save and
/// stop; a second one exits at once.
pub fn install_ctrlc_handler() {
    HANDLER.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: saving a checkpoint and stopping (press again to quit at once)");
        });
    });
}

/// Whether Ctrl-C came since the last call (and clears it): the CLI asks before evaluating.
pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// How a run is driven (beyond its config).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// The run directory (created when new).
    pub run_dir: PathBuf,
    /// Continue the run in `run_dir` from its training state.
    pub resume: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Behave as if Ctrl-C came after this many steps of the whole run (tests).
    pub interrupt_at: Option<u64>,
    /// A fresh run whose `run_dir` is taken uses `run_dir-2`, `-3`, … instead of refusing
    /// (default names, which two runs launched in the same second share).
    pub unique_dir: bool,
    /// The differences from the run's config and data that a resume accepts.
    pub allow: AllowChanges,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run directory (with a suffix when `unique_dir` found the name taken).
    pub run_dir: PathBuf,
    /// The run directory's lock (the writing rank's): held while any clone of this outcome
    /// lives, since evaluation after training writes into the directory too.
    pub lock: Option<std::sync::Arc<RunLock>>,
    /// Steps done in total.
    pub steps: u64,
    /// Mean loss over the last logging interval.
    pub last_loss: f64,
    /// Seconds spent in this invocation's training steps.
    pub train_seconds: f64,
    /// Steps per second in this invocation.
    pub steps_per_second: f64,
}

/// A default run directory: `runs/<name>-<UTC yyyymmdd-hhmmss>`.
pub fn default_run_dir(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    PathBuf::from("runs").join(format!(
        "{name}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    ))
}

/// (channels, height, width) of image data whose sides fit a U-Net with `channel_mult` levels.
fn image_shape(data: &Dataset, channel_mult: &[usize]) -> Result<(usize, usize, usize)> {
    let &[c, h, w] = data.shape.as_slice() else {
        return Err(TrainError::invalid(
            "network.type",
            "unet",
            format!(
                "the U-Net needs image data [C, H, W], the data are {:?}",
                data.shape
            ),
        ));
    };
    let levels = channel_mult.len().saturating_sub(1) as u32;
    let div = 1usize << levels;
    if h % div != 0 || w % div != 0 {
        return Err(TrainError::invalid(
            "network.channel_mult",
            format!("{channel_mult:?}"),
            format!(
                "the data grid {h}×{w} does not fit a U-Net of {} levels: both sides \
                 must be divisible by 2^(levels−1) = {div} (crop or pad the grid, or \
                 use fewer levels)",
                levels + 1,
            ),
        ));
    }
    Ok((c, h, w))
}

/// Sets the network's shape keys (resolution, channels, dim) and label_dim from the data.
pub fn fit_network_to_data(net: &mut NetConfig, data: &Dataset, conditional: bool) -> Result<()> {
    let label_dim = if conditional {
        data.num_classes.ok_or_else(|| {
            TrainError::invalid("training.conditional", true, "the data set has no labels")
        })?
    } else {
        0
    };
    match net {
        NetConfig::Unet(u) => {
            let (c, h, w) = image_shape(data, &u.channel_mult)?;
            u.resolution = h;
            u.width = (w != h).then_some(w);
            u.in_channels = c;
            u.out_channels = c;
            u.label_dim = label_dim;
        }
        NetConfig::Dhariwal(u) => {
            let (c, h, w) = image_shape(data, &u.channel_mult)?;
            if h != w {
                return Err(TrainError::Data(format!(
                    "the ADM U-Net needs square images, the data are {h}×{w}"
                )));
            }
            u.resolution = h;
            u.in_channels = c;
            u.out_channels = c;
            u.label_dim = label_dim;
        }
        NetConfig::Mlp(m) => {
            m.dim = data.dim();
            m.label_dim = label_dim;
        }
    }
    net.validate()
        .map_err(|e| TrainError::invalid("network", "(config)", e.to_string()))
}

/// Batch indices of step k: positions k·B … k·B+B−1 of the infinite sequence of per-epoch
/// permutations of 0..N, permutation e keyed by (seed, e).
#[derive(Debug)]
pub struct BatchSampler {
    n: usize,
    seed: u64,
    cache: Option<(u64, Vec<usize>)>,
}

impl BatchSampler {
    pub fn new(n: usize, seed: u64) -> Self {
        BatchSampler {
            n,
            seed,
            cache: None,
        }
    }

    fn perm(&mut self, epoch: u64) -> &[usize] {
        if self.cache.as_ref().map(|c| c.0) != Some(epoch) {
            let mut rng = stream_rng(self.seed, epoch, STREAM_PERM);
            let mut p: Vec<usize> = (0..self.n).collect();
            for i in (1..self.n).rev() {
                let j = rng.gen_range(0..=i);
                p.swap(i, j);
            }
            self.cache = Some((epoch, p));
        }
        self.cache.as_ref().map(|c| c.1.as_slice()).unwrap_or(&[])
    }

    /// Indices of step k for a batch of `b`.
    pub fn indices(&mut self, k: u64, b: usize) -> Vec<usize> {
        let n = self.n as u64;
        (0..b as u64)
            .map(|i| {
                let pos = k * b as u64 + i;
                self.perm(pos / n)[(pos % n) as usize]
            })
            .collect()
    }
}

/// The model and everything trained with it.
/// Sets the sampling copy to the EMA weights and the live model's fixed buffers.
fn sync_sampling_copy(live: &Live, sampling: &Sampling) -> Result<()> {
    tweedie_nets::copy_buffers(&live.vs, &sampling.ema_vs)
        .and_then(|()| live.ema.copy_to(&sampling.ema_vs))
        .map_err(|e| TrainError::Other(format!("EMA: {e}")))
}

struct Live {
    /// Trainable parameters in creation order (the same on every rank).
    params: Vec<Tensor>,
    vs: VarStore,
    den: PrecondDenoiser,
    ema: Ema,
    adam: Adam,
}

fn device_of(cfg: &TrainConfig) -> Result<Device> {
    let spec: tweedie_nets::DeviceSpec = cfg.training.device.parse().map_err(|e| {
        TrainError::invalid("training.device", &cfg.training.device, format!("{e}"))
    })?;
    spec.resolve()
        .map_err(|e| TrainError::invalid("training.device", &cfg.training.device, format!("{e}")))
}

/// The denoiser config (network + wrapper) of a training config fitted to its data.
pub fn model_config(cfg: &TrainConfig, data: &Data) -> Result<ModelConfig> {
    let mut net = cfg.network.clone();
    fit_network_to_data(&mut net, &data.train, cfg.training.conditional)?;
    let f = cfg.formulation()?;
    crate::formulation::widen_for_learned_variance(&f, &mut net);
    Ok(ModelConfig {
        net,
        wrapper: f.wrapper,
    })
}

/// Step seed of torch's generator (dropout, label dropout) so step k is reproducible alone.
fn torch_step_seed(seed: u64, k: u64) -> i64 {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.wrapping_mul(0xBF58_476D_1CE4_E5B9)) as i64
        & i64::MAX
}

/// One training step k: loss of the batch, backward, Adam update, EMA update; returns the
/// mean loss and the gradient norm. A non-finite loss returns before touching the weights.
/// Under data parallelism (`sync`) this rank computes its shard `rows` of the global batch and
/// the gradients are averaged over ranks; returns `None` when some rank asked to stop (`stop`).
#[allow(clippy::too_many_arguments)]
fn train_step(
    live: &mut Live,
    loss: &Loss,
    data: &Dataset,
    sampler: &mut BatchSampler,
    cfg: &TrainConfig,
    k: u64,
    device: Device,
    last_good: u64,
    sync: &mut Sync<'_>,
    rows: std::ops::Range<usize>,
    stop: bool,
) -> Result<Option<(f64, f64)>> {
    let t = &cfg.training;
    let b = t.batch_size;
    let idx = sampler.indices(k, b)[rows.clone()].to_vec();
    let n = idx.len();
    let mut x0 = data.batch_tensor(&idx, device);
    if t.hflip && data.is_image() {
        let flips: Vec<f32> = (rows.start as u64..rows.end as u64)
            .map(|i| {
                if stream_rng(t.seed, k * b as u64 + i, STREAM_AUG).gen::<bool>() {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let m = Tensor::from_slice(&flips)
            .to_device(device)
            .view([n as i64, 1, 1, 1]);
        x0 = &x0 * (1.0 - &m) + x0.flip([-1]) * &m;
    }
    let labels = match (t.conditional, data.labels.as_ref(), data.num_classes) {
        (true, Some(l), Some(c)) => {
            let v: Vec<i64> = idx.iter().map(|&i| l[i]).collect();
            Some(one_hot(&v, c, device)?)
        }
        _ => None,
    };
    let first = k * b as u64 + rows.start as u64;
    let levels = loss.draw_levels(t.seed, first, n);
    let eps = Loss::draw_noise(t.seed, first, n, data.dim()).to_device(device);
    live.adam.zero_grad();
    sync.before_forward()?;
    let den = &live.den;
    let per = with_torch_rng(|| {
        tch::manual_seed(torch_step_seed(t.seed, k));
        loss.per_sample_with_variance(
            |x, s| {
                den.forward_with_variance(x, s, labels.as_ref(), None, true)
                    .map_err(|e| TrainError::Other(e.to_string()))
            },
            &x0,
            &eps,
            &levels,
        )
    })?;
    let l = per.mean(Kind::Float);
    // Equal shards: the mean over ranks of the shard means is the global batch mean.
    let (lv, stop) = sync.loss_and_stop(l.double_value(&[]), stop)?;
    if stop {
        return Ok(None);
    }
    if !lv.is_finite() {
        return Err(TrainError::NonFinite {
            step: k + 1,
            value: lv,
            last_good,
        });
    }
    sync.before_backward()?;
    // f_backward, not backward: a failed gradient all-reduce (a peer died) surfaces here.
    l.f_backward().map_err(|e| match sync.dp() {
        Some(dp) => TrainError::Other(format!(
            "rank {} of {}: DDP gradient all-reduce during backward failed: {e}",
            dp.rank(),
            dp.world()
        )),
        None => TrainError::Other(format!("backward: {e}")),
    })?;
    sync.after_backward(&live.params)?;
    // Adam checks the gradient norm before it updates anything (see Adam::step).
    let info = live.adam.step(k);
    if !info.grad_norm.is_finite() {
        return Err(TrainError::NonFinite {
            step: k + 1,
            value: info.grad_norm,
            last_good,
        });
    }
    live.ema
        .update(&live.vs, k * b as u64, b)
        .map_err(|e| TrainError::Other(format!("EMA: {e}")))?;
    Ok(Some((lv, info.grad_norm)))
}

fn write_config(run_dir: &Path, cfg: &TrainConfig) -> Result<String> {
    let text = cfg.to_toml()?;
    crate::plot::atomic_write(&run_dir.join(files::CONFIG), text.as_bytes()).map_err(
        |e| match e {
            TrainError::Io { path, source } => TrainError::Other(format!(
                "run directory {} is not writable ({}: {source})",
                run_dir.display(),
                path.display()
            )),
            other => other,
        },
    )?;
    Ok(text)
}

/// Keeps the metrics lines of steps ≤ `step` (a resumed run rewrites what came after its
/// checkpoint).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::plot::atomic_write(path, kept.as_bytes())
}

/// (step, loss) pairs of a run's metrics.jsonl.
pub fn read_loss_history(run_dir: &Path) -> (Vec<u64>, Vec<f64>) {
    let text = std::fs::read_to_string(run_dir.join(files::METRICS)).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?)))
        .unzip()
}

/// Everything needed to sample the EMA model.
pub struct Sampling {
    pub ema_vs: VarStore,
    pub model: NetModel,
    pub process: Box<dyn tweedie_core::Process>,
    pub timer: TimerKind,
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
        })
    }

    /// The plan for `cfg.sampling`.
    pub fn plan(&self, cfg: &TrainConfig, shape: &[usize], batch: usize) -> Result<SamplePlan<'_>> {
        Ok(SamplePlan {
            process: self.process.as_ref(),
            timer: self.timer.clone(),
            spec: cfg.sampling.spec()?,
            shape: shape.to_vec(),
            batch,
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

/// Writes a sample grid (images) or scatter plot (vectors) of `cfg.sampling.grid` EMA samples.
pub fn write_samples(path: &Path, s: &Sampling, cfg: &TrainConfig, data: &Data) -> Result<()> {
    let n = cfg.sampling.grid;
    let labels = grid_labels(cfg, &data.train, n);
    // In batches of eval.batch_size: a large grid of large images stays in bounded memory.
    let plan = s.plan(cfg, &data.train.shape, n.min(cfg.eval.batch_size))?;
    let (x, _) = generate(&s.model, &plan, 0, n, labels.as_deref())?;
    let fields = matches!(data.truth, crate::data::GroundTruth::Fields(_)) || data.netcdf.is_some();
    if data.train.is_image() && (fields || !matches!(data.train.shape[0], 1 | 3)) {
        crate::plot::write_field_grid(path, x.view(), &data.train.shape)
    } else if data.train.is_image() {
        crate::plot::write_image_grid(path, x.view(), &data.train.shape)
    } else {
        crate::plot::write_scatter(path, x.view(), Some(data.held_out.x.view()))
    }
}

/// Trains per `cfg` in `opts.run_dir`, then writes the EMA model, plots and (unless
/// `eval.skip`) the evaluation report. On resume `cfg` must equal the run's config and the data
/// the run's data (bar `training.steps` and what `opts.allow` accepts; see [`crate::resume`]).
/// Nothing in the run directory but its lock file is written before every check has passed;
/// the lock is held until the returned outcome (and every clone of it) is dropped.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    train_parallel(cfg, opts, None)
}

/// [`train`] as one rank of a data-parallel job (`dp`; `None`: a single process). Rank r
/// computes its B/N rows of each global batch; gradients are averaged over ranks; rank 0
/// alone writes. The ranks check first that they run the same config and code.
pub fn train_parallel(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    dp: Option<&DataParallel>,
) -> Result<TrainOutcome> {
    let writer = dp.is_none_or(|d| d.rank() == 0);
    if let Some(d) = dp {
        let text = format!("{}\n{}", cfg.to_toml()?, code_version());
        d.pg.check_same(
            "config and code version",
            tweedie_dist::fnv1a64(text.as_bytes()),
        )
        .map_err(dist_err)?;
    }
    let setup = prepare(cfg, opts, dp, writer);
    let (data, mcfg, loss, device, resumed, rows, claim, fingerprint) = match dp {
        Some(d) => d.agree("set-up", setup)?,
        None => setup?,
    };
    let (run_dir, lock) = match claim {
        Some((dir, lock)) => (dir, Some(lock)),
        None => (opts.run_dir.clone(), None),
    };
    if lock.is_some() {
        for p in crate::rundir::remove_stale_temp_files(&run_dir) {
            eprintln!("removed {}, left by a writer that was killed", p.display());
        }
    }
    let state_path = run_dir.join(STATE_FILE);
    let config_text = cfg.to_toml()?;
    train_loop(
        cfg,
        opts,
        dp,
        writer,
        Loaded {
            data,
            mcfg,
            loss,
            device,
            resumed,
            rows,
            state_path,
            config_text,
            fingerprint,
            run_dir,
            lock,
        },
    )
}

/// What every rank prepares before training.
struct Loaded {
    data: Data,
    mcfg: ModelConfig,
    loss: Loss,
    device: Device,
    resumed: Option<crate::checkpoint::LoadedState>,
    rows: std::ops::Range<usize>,
    state_path: PathBuf,
    config_text: String,
    fingerprint: String,
    run_dir: PathBuf,
    lock: Option<RunLock>,
}

type Prepared = (
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

fn prepare(
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
        let old: TrainConfig = TrainConfig::from_toml_str(&st.config_toml, &[]).map_err(|e| {
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

fn train_loop(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    dp: Option<&DataParallel>,
    writer: bool,
    loaded: Loaded,
) -> Result<TrainOutcome> {
    let Loaded {
        data,
        mcfg,
        loss,
        device,
        resumed,
        rows,
        state_path,
        config_text,
        fingerprint,
        run_dir,
        lock,
    } = loaded;
    let run_dir = &run_dir;
    let (vs, den) = with_torch_rng(|| {
        tch::manual_seed(torch_step_seed(cfg.training.seed, u64::MAX));
        mcfg.build(device)
    })
    .map_err(|e| TrainError::Other(format!("model: {e}")))?;
    let ema = Ema::new(&vs, cfg.training.ema.clone())
        .map_err(|e| TrainError::Other(format!("EMA: {e}")))?;
    let t = &cfg.training;
    let adam = Adam::new(
        &vs,
        AdamConfig {
            lr: t.lr,
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_eps,
            warmup_steps: t.warmup_steps,
            grad_clip: t.grad_clip,
        },
    );
    let params = vs.trainable_variables();
    let mut live = Live {
        params,
        vs,
        den,
        ema,
        adam,
    };
    if let Some(st) = &resumed {
        restore(&state_path, st, &live.vs, &mut live.ema, &mut live.adam)?;
    }
    // Every check has passed (the restore's too): the run directory may be written now.
    if writer {
        write_config(run_dir, cfg)?;
    }
    let start = match &resumed {
        Some(st) => {
            if writer {
                truncate_metrics(&run_dir.join(files::METRICS), st.step)?;
            }
            st.step
        }
        None => {
            // A fresh run starts a fresh metrics file.
            if writer {
                crate::plot::atomic_write(&run_dir.join(files::METRICS), b"")?;
            }
            0
        }
    };
    // After restoring: the reducer broadcasts rank 0's parameters to all ranks.
    let mut sync = Sync::new(dp, &live.params)?;
    let sampling = Sampling::new(cfg, &mcfg, device)?;
    let samples_dir = run_dir.join(files::SAMPLES_DIR);
    if t.sample_every > 0 && writer {
        std::fs::create_dir_all(&samples_dir).map_err(|e| TrainError::io(&samples_dir, e))?;
    }

    let mut sampler = BatchSampler::new(data.train.len(), t.seed);
    let pb = if opts.quiet || !writer {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(t.steps)
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(start);
    let mut metrics = if writer {
        Some(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(run_dir.join(files::METRICS))
                .map_err(|e| TrainError::io(run_dir.join(files::METRICS), e))?,
        )
    } else {
        None
    };
    let mut last_good = start;
    let save = |live: &Live, step: u64| -> Result<()> {
        if !writer {
            return Ok(());
        }
        save_state(
            &state_path,
            &live.vs,
            &live.ema,
            &live.adam,
            step,
            &config_text,
            &fingerprint,
        )
    };
    if resumed.is_none() {
        // A fresh run has a checkpoint from the start, so "the last good checkpoint" always exists.
        save(&live, 0)?;
    }
    let began = Instant::now();
    let (mut acc, mut acc_n, mut last_loss) = (0.0f64, 0u64, f64::NAN);
    let mut last_log = Instant::now();
    let die_at = crate::parallel::fault_injection(dp);
    for k in start..t.steps {
        if die_at == Some(k) {
            // Test hook (TWEEDIE_FAULT_EXIT_AT): this rank dies abruptly, as a killed one would.
            std::process::exit(86);
        }
        let stop = INTERRUPTED.load(Ordering::SeqCst) || opts.interrupt_at == Some(k);
        // Under data parallelism the ranks decide together (inside the step's loss
        // all-reduce) so that all stop at the same step.
        let step_result = if stop && dp.is_none() {
            Ok(None)
        } else {
            train_step(
                &mut live,
                &loss,
                &data.train,
                &mut sampler,
                cfg,
                k,
                device,
                last_good,
                &mut sync,
                rows.clone(),
                stop,
            )
        };
        let (lv, gn) = match step_result {
            Ok(Some(v)) => v,
            Ok(None) => {
                INTERRUPTED.store(false, Ordering::SeqCst);
                pb.abandon();
                save(&live, k)?;
                return Err(TrainError::Interrupted {
                    step: k,
                    run_dir: run_dir.clone(),
                });
            }
            Err(e) => {
                pb.abandon();
                return Err(e);
            }
        };
        acc += lv;
        acc_n += 1;
        let step = k + 1;
        if step % t.log_every == 0 || step == t.steps {
            last_loss = acc / acc_n as f64;
            let dt = last_log.elapsed().as_secs_f64();
            let line = serde_json::json!({
                "step": step,
                "loss": last_loss,
                "lr": AdamConfig { lr: t.lr, beta1: 0.0, beta2: 0.0, eps: 0.0, warmup_steps: t.warmup_steps, grad_clip: None }.lr_at(k),
                "grad_norm": gn,
                "steps_per_s": acc_n as f64 / dt.max(1e-9),
                "elapsed_s": began.elapsed().as_secs_f64(),
            });
            if let Some(m) = metrics.as_mut() {
                writeln!(m, "{line}")
                    .map_err(|e| TrainError::io(run_dir.join(files::METRICS), e))?;
            }
            pb.set_message(format!("loss {last_loss:.4}"));
            acc = 0.0;
            acc_n = 0;
            last_log = Instant::now();
        }
        if step % t.checkpoint_every == 0 || step == t.steps {
            save(&live, step)?;
            last_good = step;
        }
        if writer && t.sample_every > 0 && step % t.sample_every == 0 && step != t.steps {
            sync_sampling_copy(&live, &sampling)?;
            let p = samples_dir.join(format!("step-{step:07}.png"));
            if let Err(e) = write_samples(&p, &sampling, cfg, &data) {
                pb.println(format!("warning: sample grid at step {step}: {e}"));
            }
        }
        pb.inc(1);
    }
    // Ctrl-C during the last step (single process; ranks decide inside the loop): its
    // checkpoint is written; stop before the final outputs.
    if dp.is_none() && (INTERRUPTED.load(Ordering::SeqCst) || opts.interrupt_at == Some(t.steps)) {
        INTERRUPTED.store(false, Ordering::SeqCst);
        pb.abandon();
        save(&live, t.steps)?;
        return Err(TrainError::Interrupted {
            step: t.steps,
            run_dir: run_dir.clone(),
        });
    }
    pb.finish();
    let train_seconds = began.elapsed().as_secs_f64();
    let done = t.steps.saturating_sub(start);
    if let Some(d) = dp {
        // The invariant data parallelism rests on, checked: identical weights everywhere.
        d.pg.check_same(
            "parameters and EMA after training",
            crate::parallel::weights_hash(&live.vs, &live.ema),
        )
        .map_err(dist_err)?;
    }
    if !writer {
        // Rank 0 writes the model, plots and samples.
        return Ok(TrainOutcome {
            run_dir: run_dir.clone(),
            lock: None,
            steps: t.steps,
            last_loss,
            train_seconds,
            steps_per_second: done as f64 / train_seconds.max(1e-9),
        });
    }
    // Final outputs: the EMA model as a tweedie-nets checkpoint, plots, samples.
    sync_sampling_copy(&live, &sampling)?;
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("tweedie.train.step".to_string(), t.steps.to_string());
    extra.insert("tweedie.data".to_string(), data.name.clone());
    extra.insert(
        "tweedie.formulation".to_string(),
        cfg.diffusion.kind().name().to_string(),
    );
    if let Some(meta) = &data.netcdf {
        let json = serde_json::to_string(meta)
            .map_err(|e| TrainError::Other(format!("NetCDF metadata: {e}")))?;
        extra.insert(crate::data::netcdf::META_KEY.to_string(), json);
    }
    tweedie_nets::save_checkpoint(&run_dir.join(files::MODEL), &sampling.ema_vs, &mcfg, &extra)
        .map_err(|e| TrainError::Other(format!("writing the model: {e}")))?;
    let (steps, losses) = read_loss_history(run_dir);
    if let Err(e) = crate::plot::write_loss_plot(&run_dir.join(files::LOSS_PLOT), &steps, &losses) {
        eprintln!("warning: loss plot: {e}");
    }
    write_samples(&run_dir.join(files::SAMPLES), &sampling, cfg, &data)?;
    if let Some(meta) = &data.netcdf {
        // The grid's samples again (same seeds), in physical units with the data's names.
        let n = cfg.sampling.grid;
        let plan = sampling.plan(cfg, &data.train.shape, n.min(cfg.eval.batch_size))?;
        let (x, _) = generate(&sampling.model, &plan, 0, n, None)?;
        crate::data::netcdf::write_samples(&run_dir.join(files::SAMPLES_NC), x.view(), meta)?;
    }
    Ok(TrainOutcome {
        run_dir: run_dir.clone(),
        lock: lock.map(std::sync::Arc::new),
        steps: t.steps,
        last_loss,
        train_seconds,
        steps_per_second: done as f64 / train_seconds.max(1e-9),
    })
}
