//! `tweedie likelihood`: log p(x₀) of every data point under a model, by the probability-flow
//! ODE (`tweedie::samplers::likelihood`): exact divergence for small dimensions, Hutchinson's
//! estimator (Rademacher or Gaussian probes, standard error reported) otherwise; uniform
//! dequantisation and bits/dim for integer data (`--levels 256` for 8-bit images). With
//! `--method vlb`, the variational bound of an iDDPM checkpoint's chain instead (`super::vlb`).
//!
//! Writes `--out` as a 1-D f64 .npy of log-densities in nats (of the dequantised levels with
//! `--levels`; −L, the bound, with `--method vlb`) and, next to it, `<out>_bpd.npy` with
//! bits/dim. Point i depends on (seed, i) only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::{s, Array1, Array2};
use ndarray_npy::WriteNpyExt;
use tch::{Kind, Tensor};
use tweedie::core::likelihood::{bits_per_dim, Dequantizer};
use tweedie::core::process::Edm;
use tweedie::core::rng::{fill_uniforms, streams};
use tweedie::core::space::TchTensor;
use tweedie::nets::NetModel;
use tweedie::samplers::likelihood::{Divergence, Likelihood, LikelihoodOutput, Probe};
use tweedie::samplers::Model;

/// `tweedie likelihood --model gmm2d --data x.npy --out logp.npy`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    tweedie sample --model gmm2d --n 200 --out x.npy && tweedie likelihood --model gmm2d --data x.npy --out logp.npy\n  \
    tweedie likelihood --model runs/digits/model.safetensors --data runs/digits --divergence rademacher --probes 4 --out logp.npy\n  \
    tweedie likelihood --model runs/digits/model.safetensors --data test.npy --levels 17 --out logp.npy\n  \
    tweedie likelihood --method vlb --model runs/digits-iddpm/model.safetensors --data runs/digits-iddpm --out vlb.npy")]
pub struct Args {
    /// Model: a built-in mixture preset (gmm2d, gmm64d), a mixture TOML file or a network
    /// checkpoint (`.safetensors`).
    #[arg(long)]
    pub model: String,
    /// Data points: a 2-D .npy [n, D] (D = the model's sample size) in the model's data space,
    /// or integer levels 0 … L−1 with --levels L; or a training config (.toml) or run
    /// directory, whose held-out split is used (as levels where the data set is integer:
    /// digits 17, 8-bit images 256).
    #[arg(long)]
    pub data: PathBuf,
    /// Only the first N points.
    #[arg(long)]
    pub first: Option<usize>,
    /// Output .npy: log p(x₀) in nats for every point ([n], f64); bits/dim go to `<out>_bpd.npy`.
    #[arg(long)]
    pub out: PathBuf,
    /// Integer data with L levels (256 for 8-bit images, 17 for the digits): dequantise
    /// y = (x + u − ½)/((L−1)/2) − 1 with u ~ U[0, 1) and report the density of x + u.
    #[arg(long)]
    pub levels: Option<u32>,
    /// ode: the probability-flow ODE (any model); vlb: the variational bound of a discrete
    /// iDDPM chain (an iDDPM checkpoint; its learned variance if it has one), docs/samplers.md.
    #[arg(long, default_value = "ode")]
    pub method: String,
    /// ODE: divergence auto (exact up to 64 dimensions, else rademacher), exact, rademacher,
    /// gaussian [default: auto].
    #[arg(long)]
    pub divergence: Option<String>,
    /// ODE: Hutchinson probes per point (≥ 2 gives a standard error) [default: 4].
    #[arg(long)]
    pub probes: Option<usize>,
    /// ODE: RK4 steps in ln σ̃ from --sigma-min to --sigma-max (4 model evaluations each)
    /// [default: 64]. VLB: steps K of the chain, a sub-grid of the model's M-step u-grid
    /// (1 evaluation each) [default: M].
    #[arg(long)]
    pub steps: Option<usize>,
    /// ODE: σ̃ where the data enter; the result is log p_{σ̃_min}(x₀) [default: 0.002; with
    /// --levels L a quarter of a bin, 1/(2(L − 1)): 0.00196 for 8-bit data, 1/32 for the digits].
    #[arg(long)]
    pub sigma_min: Option<f64>,
    /// ODE: σ̃ of the prior N(0, σ̃_max²I) [default: 80].
    #[arg(long)]
    pub sigma_max: Option<f64>,
    /// Seed of probes and dequantisation noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Points per batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Device for network checkpoints: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// A progress bar over `len` solver steps on stderr (drawn only on a terminal), or a hidden one.
pub(super) fn progress_bar(len: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps, {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

/// Runs `f` on batches of `batch` rows, giving it the batch's first row and an `on_step`
/// that advances `pb` by the batch's solver steps; the concatenation is the caller's.
pub(super) fn for_batches<T>(
    rows: usize,
    batch: usize,
    pb: &indicatif::ProgressBar,
    mut f: impl FnMut(usize, usize, &mut dyn FnMut(usize)) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for start in (0..rows).step_by(batch) {
        let end = (start + batch).min(rows);
        pb.set_message(format!("points {start}..{end} of {rows}"));
        let base = pb.position();
        out.push(
            f(start, end, &mut |done| pb.set_position(base + done as u64))
                .with_context(|| format!("points {start}..{end}"))?,
        );
    }
    pb.finish_and_clear();
    Ok(out)
}

fn divergence(args: &Args, dim: usize) -> Result<Divergence> {
    let hutch = |probe| Divergence::Hutchinson {
        probe,
        probes: args.probes.unwrap_or(4),
    };
    Ok(match args.divergence.as_deref().unwrap_or("auto") {
        "auto" if dim <= 64 => Divergence::Exact,
        "auto" | "rademacher" => hutch(Probe::Rademacher),
        "exact" => Divergence::Exact,
        "gaussian" => hutch(Probe::Gaussian),
        other => bail!("--divergence {other}: expected auto, exact, rademacher or gaussian"),
    })
}

/// The data in model space (dequantised with --levels), point i's noise keyed by (seed, i).
pub(super) fn model_space(
    args: &Args,
    x: Array2<f64>,
) -> Result<(Array2<f64>, Option<Dequantizer>)> {
    let Some(levels) = args.levels else {
        if x.iter().any(|v| !v.is_finite()) {
            bail!("{}: non-finite values", args.data.display());
        }
        return Ok((x, None));
    };
    let q = Dequantizer::new(levels).context("--levels")?;
    let mut y = x;
    let mut u = vec![0.0; y.ncols()];
    for (i, mut row) in y.rows_mut().into_iter().enumerate() {
        fill_uniforms(args.seed, i as u64, streams::LIKELIHOOD - 1, &mut u);
        for (v, u) in row.iter_mut().zip(&u) {
            q.check_level(*v)
                .with_context(|| format!("{} row {i}", args.data.display()))?;
            *v = q.dequantize(*v, *u);
        }
    }
    Ok((y, Some(q)))
}

/// The points of --data (the first --first of them) and, for a data set's held-out split,
/// its levels in `args.levels`.
fn read_points(args: &mut Args) -> Result<Array2<f64>> {
    let is_config = args.data.is_dir() || args.data.extension().is_some_and(|e| e == "toml");
    let x = if is_config {
        let (config, data) = super::measure::load_data_set(&args.data)?;
        match (data.levels, args.levels) {
            (Some(l), Some(given)) if given != l => bail!(
                "--levels {given}: the held-out split of {} has {l} levels",
                config.display()
            ),
            (None, Some(given)) => bail!(
                "--levels {given}: the held-out split of {} is continuous data, not levels",
                config.display()
            ),
            (levels, _) => {
                args.levels = levels;
                data.held_out_levels()
                    .unwrap_or_else(|| data.held_out.x.mapv(f64::from))
            }
        }
    } else {
        super::sample::read_npy2(&args.data)?
    };
    let x = match args.first {
        Some(0) => bail!("--first 0: need at least one point"),
        Some(n) if n < x.nrows() => x.slice(s![..n, ..]).to_owned(),
        _ => x,
    };
    if x.nrows() == 0 {
        bail!("{}: no data points", args.data.display());
    }
    Ok(x)
}

pub fn run(mut args: Args) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch 0: need at least one point per batch");
    }
    let x = read_points(&mut args)?;
    match args.method.as_str() {
        "ode" => {}
        "vlb" => return super::vlb::run(&args, x),
        other => bail!("--method {other}: expected ode or vlb"),
    }
    let (y, deq) = model_space(&args, x)?;
    let dim = y.ncols();
    let (sigma_min, sigma_max) = (
        args.sigma_min.unwrap_or(match deq {
            Some(q) => q.ode_sigma_min(),
            None => tweedie_core::defaults::EDM_SIGMA_MIN,
        }),
        args.sigma_max
            .unwrap_or(tweedie_core::defaults::EDM_SIGMA_MAX),
    );
    let steps = args.steps.unwrap_or(64);
    let spec = Likelihood {
        sigma_min,
        sigma_max,
        steps,
        divergence: divergence(&args, dim)?,
        seed: args.seed,
        first_index: 0,
    };
    let started = std::time::Instant::now();
    let (logp, se, nfe, exact) = if super::model::is_checkpoint(&args.model) {
        let (l, s, n) = run_checkpoint(&args, &spec, &y)?;
        (l, s, n, None)
    } else {
        let mix = super::sample::load_mixture(&args.model)?;
        if mix.dim() != dim {
            bail!(
                "{}: points have {dim} values, mixture dimension {}",
                args.data.display(),
                mix.dim()
            );
        }
        let model = &mix;
        let (l, s, n) = batched(&args, &spec, &y, |spec, rows, on_step| {
            spec.run_with_progress(&model, rows, None, on_step)
        })?;
        // The mixture's exact log p_{σ̃_min} as a check of the solve (EDM: σ = σ̃, α = 1).
        let edm = Edm {
            sigma_min,
            sigma_max,
        };
        let exact = mix.log_prob_t(y.view(), &edm, sigma_min)?;
        (l, s, n, Some(exact))
    };
    let logp = match deq {
        Some(q) => logp.mapv(|l| q.log_density_of_levels(l, dim)),
        None => logp,
    };
    let bpd = logp.mapv(|l| bits_per_dim(l, dim));
    let bpd_path = write_outputs(&args.out, &logp, &bpd)?;
    let n = logp.len() as f64;
    println!(
        "{} points, D = {dim}, {:?}, {steps} RK4 steps over σ̃ {sigma_min} … {sigma_max}, {nfe} VJPs, {:.1} s",
        logp.len(),
        spec.divergence,
        started.elapsed().as_secs_f64()
    );
    println!(
        "mean log p = {:.4} nats, {:.4} ± {:.4} bits/dim (± standard error over points){}",
        logp.sum() / n,
        bpd.sum() / n,
        std_error(&bpd),
        if deq.is_some() {
            " (dequantised levels)"
        } else {
            ""
        }
    );
    if let Some(se) = se {
        println!(
            "Hutchinson standard error per point: mean {:.4} nats, max {:.4}; of the mean: {:.4}",
            se.sum() / n,
            se.fold(0.0_f64, |a, b| a.max(*b)),
            (se.mapv(|v| v * v).sum()).sqrt() / n
        );
    }
    if let (Some(exact), None) = (exact, deq) {
        let err = (&logp - &exact).mapv(f64::abs);
        println!(
            "exact mixture log p_σ̃_min: max |error| = {:.2e} nats, mean {:.2e} (prior N(0, σ̃_max²I) + solver)",
            err.fold(0.0_f64, |a, b| a.max(*b)),
            err.sum() / n
        );
    }
    println!("wrote {} and {}", args.out.display(), bpd_path.display());
    Ok(())
}

/// Runs `f` on batches of rows (first index = the batch's first row) and concatenates.
fn batched(
    args: &Args,
    spec: &Likelihood,
    y: &Array2<f64>,
    mut f: impl FnMut(
        &Likelihood,
        &Array2<f64>,
        &mut dyn FnMut(usize),
    ) -> tweedie::samplers::Result<LikelihoodOutput>,
) -> Result<(Array1<f64>, Option<Array1<f64>>, usize)> {
    let pb = progress_bar(y.nrows().div_ceil(args.batch) * spec.steps, args.quiet);
    let outs = for_batches(y.nrows(), args.batch, &pb, |start, end, on_step| {
        let mut sp = spec.clone();
        sp.first_index = start as u64;
        Ok(f(&sp, &y.slice(s![start..end, ..]).to_owned(), on_step)?)
    })?;
    let mut logp = Vec::with_capacity(y.nrows());
    let mut se: Vec<f64> = Vec::new();
    let mut nfe = 0;
    for out in outs {
        logp.extend(out.log_p);
        if let Some(s) = out.std_err {
            se.extend(s);
        }
        nfe += out.nfe;
    }
    let se = (se.len() == logp.len()).then(|| Array1::from(se));
    Ok((Array1::from(logp), se, nfe))
}

/// A checkpoint's likelihood: f32 tensors on --device, VJPs by autograd.
fn run_checkpoint(
    args: &Args,
    spec: &Likelihood,
    y: &Array2<f64>,
) -> Result<(Array1<f64>, Option<Array1<f64>>, usize)> {
    let net = load_net(args, y.ncols())?;
    batched(args, spec, y, |spec, rows, on_step| {
        let m: &dyn Model<TchTensor> = &net.model;
        spec.run_with_progress(m, &net.rows_to_state(rows), None, on_step)
    })
}

/// A loaded denoiser checkpoint with the sample shape and device its rows go to.
pub(super) struct LoadedNet {
    pub model: NetModel,
    pub config: tweedie::nets::ModelConfig,
    shape: Vec<i64>,
    device: tch::Device,
}

impl LoadedNet {
    /// Rows [B, D] as an f32 tensor [B, sample shape…] on the model's device.
    pub fn rows_to_state(&self, rows: &Array2<f64>) -> TchTensor {
        let mut full = vec![rows.nrows() as i64];
        full.extend(&self.shape);
        let v: Vec<f32> = rows.iter().map(|&v| v as f32).collect();
        TchTensor(
            Tensor::from_slice(&v)
                .reshape(full.as_slice())
                .to_kind(Kind::Float)
                .to_device(self.device),
        )
    }
}

/// Loads --model on --device and checks that its samples have `dim` values.
pub(super) fn load_net(args: &Args, dim: usize) -> Result<LoadedNet> {
    let device = super::model::device(&args.device)?;
    let path = Path::new(&args.model);
    let loaded = super::model::load(path, device)?;
    let label_dim = loaded.config.net.label_dim();
    let shape: Vec<i64> = loaded.config.net.sample_shape().to_vec();
    let numel: i64 = shape.iter().product();
    if dim as i64 != numel {
        bail!(
            "{}: points have {dim} values, the model's samples {shape:?} have {numel}",
            args.data.display(),
        );
    }
    if label_dim > 0 {
        eprintln!(
            "note: class-conditional model, likelihood of the unconditional model (no class)"
        );
    }
    Ok(LoadedNet {
        model: NetModel::new(loaded.denoiser, label_dim),
        config: loaded.config,
        shape,
        device,
    })
}

/// Standard error of the mean of `v` (0 for fewer than two values).
pub(super) fn std_error(v: &Array1<f64>) -> f64 {
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let m = v.sum() / n as f64;
    (v.mapv(|x| (x - m).powi(2)).sum() / ((n - 1) * n) as f64).sqrt()
}

/// Writes log p (nats) to `out` and bits/dim next to it; returns the bits/dim path.
pub(super) fn write_outputs(out: &Path, logp: &Array1<f64>, bpd: &Array1<f64>) -> Result<PathBuf> {
    write_npy(out, logp)?;
    let path = bpd_path(out);
    write_npy(&path, bpd)?;
    Ok(path)
}

fn bpd_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("likelihood");
    out.with_file_name(format!("{stem}_bpd.npy"))
}

fn write_npy(path: &Path, x: &Array1<f64>) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        x.write_npy(std::io::BufWriter::new(f))
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ndarray_npy::ReadNpyExt;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(dir: &Path, extra: &[&str]) -> Args {
        let data = dir.join("x.npy");
        let out = dir.join("l.npy");
        let mut v = vec![
            "t".to_string(),
            "--data".into(),
            data.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        Cli::parse_from(v).args
    }

    fn save(dir: &Path, x: &Array2<f64>) {
        let f = std::fs::File::create(dir.join("x.npy")).unwrap();
        x.write_npy(f).unwrap();
    }

    /// gmm2d: the written log p matches the exact log p_σ̃_min within the default prior's error
    /// (N(0, 80²I) for p_80: up to ~0.015 nats at these points; the solver's is 3e-4 at 48
    /// steps, see tweedie-samplers' tests/likelihood.rs); bits/dim are −log p/(2 ln 2).
    #[test]
    fn mixture_likelihood_to_npy() {
        let dir = std::env::temp_dir().join(format!("tweedie-lik-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = tweedie::core::preset("gmm2d").unwrap();
        let x = g.sample(6, 2);
        save(&dir, &x);
        run(args(&dir, &["--model", "gmm2d", "--steps", "48"])).unwrap();
        let l = Array1::<f64>::read_npy(std::fs::File::open(dir.join("l.npy")).unwrap()).unwrap();
        let b =
            Array1::<f64>::read_npy(std::fs::File::open(dir.join("l_bpd.npy")).unwrap()).unwrap();
        let edm = Edm {
            sigma_min: 0.002,
            sigma_max: 80.0,
        };
        let want = g.log_prob_t(x.view(), &edm, 0.002).unwrap();
        for i in 0..6 {
            assert!(
                (l[i] - want[i]).abs() < 3e-2,
                "{i}: {} vs {}",
                l[i],
                want[i]
            );
            assert!((b[i] + l[i] / (2.0 * std::f64::consts::LN_2)).abs() < 1e-12);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `--data CONFIG`: the held-out split of the config's data set, the same numbers as those
    /// rows given as an .npy; continuous data refuse --levels, and --first 0 is named.
    #[test]
    fn held_out_split_of_a_config() {
        let dir = std::env::temp_dir().join(format!("tweedie-lik-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/toy-edm.toml");
        let cfg = tweedie::train::TrainConfig::from_file(&config, &[]).unwrap();
        let held = cfg.data.load().unwrap().held_out.x.mapv(f64::from);
        save(&dir, &held.slice(s![..3, ..]).to_owned());
        let common = ["--model", "gmm2d", "--steps", "8"];
        run(args(&dir, &common)).unwrap();
        let read = |name: &str| {
            Array1::<f64>::read_npy(std::fs::File::open(dir.join(name)).unwrap()).unwrap()
        };
        let from_npy = read("l.npy");
        let c = config.display().to_string();
        let mut a = args(&dir, &[&common[..], &["--first", "3"]].concat());
        a.data = config.clone();
        run(a).unwrap();
        assert_eq!(read("l.npy"), from_npy);
        let mut a = args(&dir, &[&common[..], &["--levels", "256"]].concat());
        a.data = config.clone();
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(
            e.contains("--levels 256") && e.contains(&c) && e.contains("continuous"),
            "{e}"
        );
        let mut a = args(&dir, &[&common[..], &["--first", "0"]].concat());
        a.data = config;
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("--first 0"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_input_is_named() {
        let dir = std::env::temp_dir().join(format!("tweedie-lik-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        save(&dir, &Array2::from_elem((2, 3), 0.5));
        let e = format!("{:#}", run(args(&dir, &["--model", "gmm2d"])).unwrap_err());
        assert!(e.contains("mixture dimension 2"), "{e}");
        save(&dir, &Array2::from_elem((2, 2), 0.5));
        let e = format!(
            "{:#}",
            run(args(&dir, &["--model", "gmm2d", "--levels", "256"])).unwrap_err()
        );
        assert!(e.contains("integer levels"), "{e}");
        let e = format!(
            "{:#}",
            run(args(&dir, &["--model", "gmm2d", "--divergence", "nope"])).unwrap_err()
        );
        assert!(e.contains("--divergence nope"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
