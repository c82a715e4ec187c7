//! `tweedie train-classifier`: train the noise-conditional classifier p(c | x̃, σ̃) that
//! `tweedie sample --classifier` guides with (classifier guidance, Dhariwal & Nichol 2021).

use std::path::PathBuf;

use anyhow::Context;
use tweedie_train::guidance_classifier::{
    files, train_classifier, ClassifierOptions, ClassifierTrainConfig,
};
use tweedie_train::trainer::{default_run_dir, install_ctrlc_handler};

/// Options of `tweedie train-classifier`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    tweedie train-classifier --config configs/digits-classifier.toml --out runs/digits-clf\n  \
    tweedie sample --model runs/digits/model.safetensors \\\n      \
    --classifier runs/digits-clf/classifier.safetensors --class 3 --classifier-scale 2 --n 64 --out x.png")]
pub struct Args {
    /// Config file (TOML: [diffusion] for the σ̃ density, [data], [network] with a U-Net
    /// preset whose encoder the classifier is, [training], [eval]). With --resume it is
    /// compared with the run's config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. `--set training.steps=500` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default: runs/<config name>-<UTC time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint (raise `training.steps` with --set).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out"])]
    pub resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The config of `tweedie train-classifier` when none is given.
pub const DEFAULT_CONFIG: &str = "configs/digits-classifier.toml";

pub fn run(args: Args) -> anyhow::Result<()> {
    let (cfg, run_dir, resume) = match &args.resume {
        Some(dir) => {
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| dir.join(files::CONFIG));
            let cfg = ClassifierTrainConfig::from_file(&path, &args.set)
                .with_context(|| format!("cannot resume {}", dir.display()))?;
            (cfg, dir.clone(), true)
        }
        None => {
            let config = args
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            let cfg = ClassifierTrainConfig::from_file(&config, &args.set)?;
            let stem = config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "classifier".into());
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
        "tweedie train-classifier: σ̃ ~ {} training density on {} ({} steps, batch {}, {threads} \
         threads) → {}",
        cfg.diffusion.kind().name(),
        cfg.data.name(),
        cfg.training.steps,
        cfg.training.batch_size,
        run_dir.display()
    );
    let opts = ClassifierOptions {
        run_dir: run_dir.clone(),
        resume,
        quiet: args.quiet,
        interrupt_at: None,
        unique_dir: !resume && args.out.is_none(),
    };
    let out = train_classifier(&cfg, &opts)?;
    eprintln!(
        "trained {} steps in {:.1} s, last loss {:.4}",
        out.steps, out.train_seconds, out.last_loss
    );
    let acc: Vec<String> = out
        .held_out_accuracy
        .iter()
        .map(|(s, a)| format!("σ̃ {s}: {:.1} %", 100.0 * a))
        .collect();
    println!("held-out accuracy: {}", acc.join(", "));
    println!(
        "classifier: {}",
        out.run_dir.join(files::CLASSIFIER).display()
    );
    Ok(())
}
