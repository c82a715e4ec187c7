//! `tweedie train`: train a model from a TOML config (default `configs/default.toml`), then
//! sample, evaluate and write `report.md` in the run directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tweedie_train::trainer::{default_run_dir, files, install_ctrlc_handler, take_interrupt};
use tweedie_train::{AllowChanges, DataParallel, GradSync, TrainConfig, TrainOptions};

/// Options of `tweedie train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (TOML: [diffusion], [sampling], [data], [network], [training], [eval]);
    /// default `configs/default.toml`. With --resume it is compared with the run's config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. `--set training.steps=500 --set data.type=moons` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default: runs/<config name>-<UTC time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint (raise `training.steps` with --set to train longer).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out"])]
    pub resume: Option<PathBuf>,
    /// With --resume: accept a difference in this config key or section (e.g. `training.lr`,
    /// `eval`, `data.fingerprint` for changed data) from the run's (repeatable).
    #[arg(long, value_name = "KEY", requires = "resume")]
    pub allow_change: Vec<String>,
    /// With --resume: accept every difference from the run's config and data.
    #[arg(long, requires = "resume")]
    pub allow_any_change: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Under torchrun / `tweedie launch`: how gradients are averaged over ranks: `reducer`
    /// (DDP's buckets, all-reduced during backward) or `flat` (one all-reduce after backward).
    #[arg(long, value_enum, default_value = "reducer")]
    pub grad_sync: GradSyncArg,
    /// Under torchrun / `tweedie launch`: reducer bucket size in MiB (DDP's default 25).
    #[arg(long, default_value_t = 25.0)]
    pub bucket_mb: f64,
}

/// `--grad-sync` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GradSyncArg {
    Reducer,
    Flat,
}

/// This process's data-parallel membership when launched as one rank of several
/// (torchrun's variables), after the rendezvous.
fn join(args: &Args, cfg: &TrainConfig) -> anyhow::Result<Option<DataParallel>> {
    let Some(env) = tweedie_dist::DistEnv::from_env()? else {
        return Ok(None);
    };
    if args.out.is_none() && args.resume.is_none() {
        anyhow::bail!(
            "rank {} of {}: pass --out (or --resume) so that every rank names the same run directory",
            env.rank,
            env.world_size
        );
    }
    if !(args.bucket_mb.is_finite() && args.bucket_mb > 0.0) {
        anyhow::bail!("--bucket-mb {}: need a positive size", args.bucket_mb);
    }
    let backend = if cfg.training.device.trim().starts_with("cuda") {
        tweedie_dist::Backend::Nccl
    } else {
        tweedie_dist::Backend::Gloo
    };
    let pg = tweedie_dist::ProcessGroup::new(&env, backend)?;
    let mut dp = DataParallel::new(pg, env.local_rank);
    dp.sync = match args.grad_sync {
        GradSyncArg::Reducer => GradSync::Reducer,
        GradSyncArg::Flat => GradSync::Flat,
    };
    dp.bucket_bytes = (args.bucket_mb * 1024.0 * 1024.0) as i64;
    Ok(Some(dp))
}

/// The config, run directory and resume flag of a training command (`train`,
/// `train-classifier`). With `--resume RUN`: RUN and its saved config, read by
/// `read(RUN/config.toml, true)`, or `read(--config, false)`, which the trainer compares with
/// the run's. Else `read(--config or default_config, false)` and `--out` or
/// runs/<config name>-<UTC time> (`unnamed` for a config path without a file name).
pub(super) fn run_setup<C>(
    config: &Option<PathBuf>,
    out: &Option<PathBuf>,
    resume: &Option<PathBuf>,
    (default_config, unnamed): (&str, &str),
    read: impl Fn(&Path, bool) -> tweedie_train::Result<C>,
) -> anyhow::Result<(C, PathBuf, bool)> {
    if let Some(dir) = resume {
        let cfg = match config {
            Some(path) => read(path, false),
            None => read(&dir.join(files::CONFIG), true),
        }
        .with_context(|| format!("cannot resume {}", dir.display()))?;
        return Ok((cfg, dir.clone(), true));
    }
    let config = config
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_config));
    let cfg = read(&config, false)?;
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| unnamed.into());
    let run_dir = out.clone().unwrap_or_else(|| default_run_dir(&stem));
    Ok((cfg, run_dir, false))
}

/// The config of `tweedie train` when none is given.
pub const DEFAULT_CONFIG: &str = "configs/default.toml";

pub fn run(args: Args) -> anyhow::Result<()> {
    let (cfg, run_dir, resume) = run_setup(
        &args.config,
        &args.out,
        &args.resume,
        (DEFAULT_CONFIG, "run"),
        |path, saved| {
            if saved {
                // A run's own config reads as the run trained, keys it predates included.
                TrainConfig::from_run_file(path, &args.set)
            } else {
                TrainConfig::from_file(path, &args.set)
            }
        },
    )?;
    // OMP_NUM_THREADS when set (torchrun and `tweedie launch` set 1 per rank), else every core.
    let threads = tweedie_nets::set_threads(None);
    install_ctrlc_handler();
    let dp = join(&args, &cfg)?;
    let rank = dp.as_ref().map_or(0, DataParallel::rank);
    let ranks = match &dp {
        Some(d) => format!(
            ", {} ranks × batch {} ({:?})",
            d.world(),
            cfg.training.batch_size / d.world().max(1),
            d.sync
        ),
        None => String::new(),
    };
    if rank == 0 {
        eprintln!(
            "tweedie train: {} on {} ({} steps, batch {}, {threads} threads) → {}",
            cfg.diffusion.kind().name(),
            cfg.data.name(),
            cfg.training.steps,
            cfg.training.batch_size,
            run_dir.display()
        );
        if !ranks.is_empty() {
            eprintln!("data-parallel{ranks}");
        }
    }
    let opts = TrainOptions {
        run_dir: run_dir.clone(),
        resume,
        quiet: args.quiet || rank != 0,
        interrupt_at: None,
        // Default names have one-second resolution: a taken one gets a suffix. An --out the
        // user chose is refused when used.
        unique_dir: !resume && args.out.is_none(),
        allow: AllowChanges {
            keys: args.allow_change.clone(),
            any: args.allow_any_change,
        },
    };
    let out = tweedie_train::train_parallel(&cfg, &opts, dp.as_ref())?;
    if rank != 0 {
        // Rank 0 writes the model, evaluates and reports.
        return Ok(());
    }
    let run_dir = out.run_dir.clone();
    match out.last_loss {
        Some(loss) => eprintln!(
            "trained {} steps in {:.1} s ({:.2} steps/s), last loss {loss:.4}",
            out.steps, out.train_seconds, out.steps_per_second
        ),
        None => eprintln!(
            "nothing to train: the run has its {} steps already (raise training.steps to go on)",
            out.steps
        ),
    }
    // Ctrl-C while the final model and samples were written: stop before the evaluation.
    if take_interrupt() {
        return Err(tweedie_train::TrainError::Interrupted {
            step: out.steps,
            run_dir,
        }
        .into());
    }
    if !cfg.eval.skip {
        let report = tweedie_train::eval::evaluate_run(&run_dir, Some(&cfg), Some(&out))?;
        println!("{}", report.summary());
    }
    println!("run directory: {}", run_dir.display());
    Ok(())
}
