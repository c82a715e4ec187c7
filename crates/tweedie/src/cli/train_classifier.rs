//! `tweedie train-classifier`: train the noise-conditional classifier p(c | x̃, σ̃) that
//! `tweedie sample --classifier` guides with (classifier guidance, Dhariwal & Nichol 2021).

use std::path::PathBuf;

use tweedie_train::guidance_classifier::{
    files, train_classifier, ClassifierOptions, ClassifierTrainConfig,
};
use tweedie_train::trainer::install_ctrlc_handler;

use super::train::run_setup;

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
    let (cfg, run_dir, resume) = run_setup(
        &args.config,
        &args.out,
        &args.resume,
        (DEFAULT_CONFIG, "classifier"),
        |path, _| ClassifierTrainConfig::from_file(path, &args.set),
    )?;
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
