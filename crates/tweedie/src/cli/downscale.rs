//! `tweedie downscale RUN_DIR --rows 0,1 --out low.npy --truth truth.npy`: the low-resolution
//! version of held-out fields of a run's data (what a model trained with `[conditioning]` is
//! conditioned on), for `tweedie sample --condition low.npy`, and the fields themselves.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tweedie::nets::{Conditioning, ConditioningKind};
use tweedie::train::data::npy;
use tweedie::train::TrainConfig;

/// Options of `tweedie downscale`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    tweedie downscale runs/fields-downscale --rows 0,1,2,3 --out low.npy --truth truth.npy\n  \
    tweedie sample --model runs/fields-downscale/model.safetensors --condition low.npy --n 64 --out x.npy")]
pub struct Args {
    /// The run directory written by `tweedie train` (its config.toml names the data).
    pub run_dir: PathBuf,
    /// Held-out samples to downscale (indices into the run's held-out set), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub rows: Vec<usize>,
    /// Downscaling factor (default: the run's `[conditioning] factor`).
    #[arg(long)]
    pub factor: Option<usize>,
    /// Output .npy of the low-resolution fields, [M, C, H/f, W/f] (f64, data units).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the full-resolution held-out fields, [M, C, H, W] (f64).
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let cfg_path = args.run_dir.join(tweedie::train::trainer::files::CONFIG);
    let cfg = TrainConfig::from_file(&cfg_path, &[])
        .with_context(|| format!("reading the run's config {}", cfg_path.display()))?;
    let cond = match (args.factor, &cfg.conditioning) {
        (Some(factor), _) => Conditioning {
            kind: ConditioningKind::Downscale,
            factor,
        },
        (None, Some(c)) => c.clone(),
        (None, None) => bail!(
            "{}: the run has no [conditioning]; give the downscaling factor with --factor",
            args.run_dir.display()
        ),
    };
    if args.rows.is_empty() {
        bail!("--rows: give at least one held-out index");
    }
    let data = cfg.data.load()?;
    let held = &data.held_out;
    if let Some(r) = args.rows.iter().find(|&&r| r >= held.len()) {
        bail!(
            "--rows {r}: the held-out set of {} has {} samples (0..{})",
            data.name,
            held.len(),
            held.len()
        );
    }
    let sample: Vec<i64> = held.shape.iter().map(|&d| d as i64).collect();
    let low_shape = cond
        .low_shape(&sample)
        .with_context(|| format!("--factor {} on {}", cond.factor, data.name))?;
    let x = held.batch_tensor(&args.rows, tch::Device::Cpu);
    let low = cond.low_res(&x.to_kind(tch::Kind::Double))?;
    let m = args.rows.len();
    let values = Vec::<f64>::try_from(low.reshape([-1]))?;
    let mut dims = vec![m];
    dims.extend(low_shape.iter().map(|&d| d as usize));
    npy::write(&args.out, &dims, &values)?;
    let mut wrote = format!("{} {dims:?}", args.out.display());
    if let Some(t) = &args.truth {
        let v = Vec::<f64>::try_from(x.to_kind(tch::Kind::Double).reshape([-1]))?;
        let mut full = vec![m];
        full.extend(held.shape.iter().copied());
        npy::write(t, &full, &v)?;
        wrote = format!("{wrote}, {} {full:?}", t.display());
    }
    eprintln!(
        "{m} held-out samples of {} downscaled by {} → {wrote}",
        data.name, cond.factor
    );
    Ok(())
}
