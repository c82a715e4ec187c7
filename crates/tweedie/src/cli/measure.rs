//! `tweedie measure`: a measurement y = A·x₀ + s·z of held-out sample x₀ of a training
//! config's data set, for `tweedie sample --operator … --y y.npy` (and `--truth x.npy`).
//! z is keyed standard normal noise: y depends on (seed, index) only.
//!
//! Several indices give one row per sample: with `--operator downsample --factor f
//! --noise-std 0` those rows are the low-resolution fields a model trained with
//! `[conditioning] kind = "downscale"` samples from (`tweedie sample --condition y.npy`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array1;
use tweedie::core::rng::normal_rows;
use tweedie::samplers::ops::measure;
use tweedie::train::data::npy;
use tweedie::train::data::Data;
use tweedie::train::trainer::files;
use tweedie::train::TrainConfig;

/// `tweedie measure --data configs/fields-edm.toml --index 3 --operator downsample --factor 4
/// --noise-std 0.05 --out y.npy --truth x.npy`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    tweedie measure --data configs/fields-edm.toml --index 0 --operator downsample --factor 4 \\\n      \
    --noise-std 0.05 --out y.npy --truth x.npy\n  \
    tweedie measure --data runs/digits/config.toml --index 7 --operator mask --mask m.npy \\\n      \
    --noise-std 0.05 --out y.npy --truth x.npy\n  \
    tweedie measure --data runs/fields-down --index 0,1,2,3 --operator downsample --factor 4 \\\n      \
    --out low.npy --truth truth.npy   # conditions for `tweedie sample --condition low.npy`")]
pub struct Args {
    /// The data set: a training config (TOML) or a run directory (its config.toml).
    #[arg(long)]
    pub data: PathBuf,
    /// Which held-out samples x₀ to measure (0-based, comma-separated): one gives y as one
    /// row [m], M give [M, m] (and the truth [M, …]).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub index: Vec<usize>,
    /// The measurement operator.
    #[command(flatten)]
    pub op: super::operator::OperatorArgs,
    /// Seed of the measurement noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where y goes (.npy, 1-D f64).
    #[arg(long)]
    pub out: PathBuf,
    /// Where x₀ goes (.npy, f64, the sample's shape), for the PNG and for errors.
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

/// Stream of the measurement noise (past core's conventional streams).
const STREAM: u64 = 7 << 32;

/// The data set of `--data`: a training config, or a run directory's saved config; returns
/// the config's path and the loaded data (`measure` and `likelihood` read held-out samples).
pub(super) fn load_data_set(data: &Path) -> Result<(PathBuf, Data)> {
    let config = if data.is_dir() {
        data.join(files::CONFIG)
    } else {
        data.to_path_buf()
    };
    let cfg = TrainConfig::from_file(&config, &[])
        .with_context(|| format!("--data {}", data.display()))?;
    let data = cfg.data.load()?;
    Ok((config, data))
}

pub fn run(args: Args) -> Result<()> {
    let (config, data) = load_data_set(&args.data)?;
    let held = &data.held_out;
    if let Some(i) = args.index.iter().find(|&&i| i >= held.len()) {
        bail!(
            "--index {i}: the held-out split of {} has {} samples (0..{})",
            config.display(),
            held.len(),
            held.len()
        );
    }
    let dim = held.dim();
    let image = (held.shape.len() == 3).then_some(held.shape.as_slice());
    let op = args
        .op
        .build(dim, image)?
        .context("--operator is needed: matrix, mask, downsample or blur")?;
    let (mut ys, mut xs) = (Vec::new(), Vec::new());
    for &i in &args.index {
        let x0: Array1<f64> = held.x.row(i).mapv(f64::from);
        let z = normal_rows(args.seed, i as u64, 1, STREAM, op.out_dim());
        ys.extend(measure(op.as_ref(), &x0, &z.row(0).to_owned())?);
        xs.extend(x0);
    }
    // One index keeps the single-measurement shapes that `sample --y` reads.
    let m = args.index.len();
    let lead: &[usize] = if m == 1 { &[] } else { &[m] };
    let y_shape = [lead, &[op.out_dim()]].concat();
    npy::write(&args.out, &y_shape, &ys)?;
    let mut wrote = format!("y {y_shape:?} → {}", args.out.display());
    if let Some(t) = &args.truth {
        let x_shape = [lead, held.shape.as_slice()].concat();
        npy::write(t, &x_shape, &xs)?;
        wrote = format!("{wrote}, x₀ {x_shape:?} → {}", t.display());
    }
    let which = args
        .index
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    eprintln!(
        "held-out sample(s) {which} of {} measured by --operator {} (s = {}): {wrote}",
        data.name,
        args.op.operator.as_deref().unwrap_or(""),
        op.noise_std()
    );
    Ok(())
}
