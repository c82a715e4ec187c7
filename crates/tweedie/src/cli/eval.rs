//! `tweedie eval RUN_DIR`: sample a trained run's EMA model and measure it against ground
//! truth (mixture components, field spectra and Wiener filter, digits classifier features);
//! writes eval.json, samples.npy and report.md in the run directory.

use std::path::PathBuf;

use tweedie_train::eval::{evaluate_run_with, EvalOptions};

/// Options of `tweedie eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run directory written by `tweedie train`.
    pub run_dir: PathBuf,
    /// Number of samples to generate (default: the run's eval.n_samples).
    #[arg(long)]
    pub n: Option<usize>,
    /// Device: auto, cpu, cuda or cuda:N (default: the run's training.device).
    #[arg(long)]
    pub device: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    tweedie_nets::set_threads(None);
    let opts = EvalOptions {
        n_samples: args.n,
        device: args.device.clone(),
    };
    let report = evaluate_run_with(&args.run_dir, None, None, &opts)?;
    println!("{}", report.summary());
    Ok(())
}
