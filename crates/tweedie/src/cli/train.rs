//! `tweedie train`: train a model from a TOML config (default `configs/default.toml`), then
//! sample, evaluate and write `report.md` in the run directory.

use std::path::PathBuf;

use anyhow::Context;
use tweedie_train::trainer::{default_run_dir, files, install_ctrlc_handler};
use tweedie_train::{TrainConfig, TrainOptions};

/// Options of `tweedie train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (TOML: [diffusion], [sampling], [data], [network], [training], [eval]).
    #[arg(long, short, default_value = "configs/default.toml")]
    pub config: PathBuf,
    /// Override a config value, e.g. `--set training.steps=500 --set data.type=moons` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default: runs/<config name>-<UTC time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint (raise `training.steps` with --set to train longer).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out"])]
    pub resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (cfg, run_dir, resume) = match &args.resume {
        Some(dir) => {
            let path = dir.join(files::CONFIG);
            let cfg = TrainConfig::from_file(&path, &args.set)
                .with_context(|| format!("cannot resume {}", dir.display()))?;
            (cfg, dir.clone(), true)
        }
        None => {
            let cfg = TrainConfig::from_file(&args.config, &args.set)?;
            let stem = args
                .config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            (
                cfg,
                args.out.clone().unwrap_or_else(|| default_run_dir(&stem)),
                false,
            )
        }
    };
    let threads = tweedie_nets::set_threads(None);
    install_ctrlc_handler();
    eprintln!(
        "tweedie train: {} on {} ({} steps, batch {}, {threads} threads) → {}",
        cfg.diffusion.kind.name(),
        cfg.data.name(),
        cfg.training.steps,
        cfg.training.batch_size,
        run_dir.display()
    );
    let opts = TrainOptions {
        run_dir: run_dir.clone(),
        resume,
        quiet: args.quiet,
        interrupt_at: None,
    };
    let out = tweedie_train::train(&cfg, &opts)?;
    eprintln!(
        "trained {} steps in {:.1} s ({:.2} steps/s), last loss {:.4}",
        out.steps, out.train_seconds, out.steps_per_second, out.last_loss
    );
    if !cfg.eval.skip {
        let report = tweedie_train::eval::evaluate_run(&run_dir, Some(&cfg), Some(&out))?;
        println!("{}", report.summary());
    }
    println!("run directory: {}", run_dir.display());
    Ok(())
}
