//! `tweedie sample`: draw samples from an analytic Gaussian mixture (built-in preset or TOML
//! file) with any sampler, unconditionally or given a measurement y = A·x₀ + n, or from a
//! trained network checkpoint (`.safetensors`), optionally class-conditional with
//! classifier-free guidance.
//!
//! Output is a `.npy` array [n, D] (f64), written atomically, plus a PNG grid next to it for
//! image-shaped checkpoint samples. Sample i depends on (seed, i) only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use tch::{Kind, Tensor};
use tweedie::core::mixture::{preset, GaussianMixture, PRESETS};
use tweedie::core::space::TchTensor;
use tweedie::core::{Process, ProcessKind, TimeGrid, Timer, TimerKind};

use super::schedule::from_key_values;
use tweedie::nets::NetModel;
use tweedie::samplers::{
    Cfg, ClassifierGuided, CondSampler, ForwardModel, Guidance, Init, Model, PosteriorSampler,
    Sampler, SamplerKind, SamplerParams, SamplerSpec, State,
};
use tweedie::train::data::netcdf::{write_samples as write_nc_samples, META_KEY as NC_META_KEY};
use tweedie::train::data::{npy, NetcdfMeta};
use tweedie::train::plot::{write_field_grid, write_image_grid};

/// `tweedie sample --model gmm2d --sampler heun --steps 18 --n 1000 --seed 0 --out x.npy`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    tweedie sample --model gmm2d --sampler heun --steps 18 --n 1000 --out x.npy\n  \
    tweedie sample --model mix.toml --sampler edm_stochastic --churn 40 --steps 40 --n 500 --out x.npy\n  \
    tweedie sample --model gmm2d --sampler ddim --eta 0.5 --process vp --timer vp_linear --steps 50 --n 100 --out x.npy\n  \
    tweedie sample --model gmm2d --sampler heun --steps 32 --n 1000 --out post.npy \\\n      \
    --operator mask --observe 0 --y y.npy --noise-std 0.1 --guidance tmp\n  \
    tweedie sample --model gmm2d --sampler heun --steps 32 --n 1000 --out post.npy \\\n      \
    --operator matrix --matrix a.npy --y y.npy --noise-std 0.5 --guidance fps\n  \
    tweedie sample --model runs/digits/model.safetensors --sampler heun --steps 18 --n 64 --class 3 --cfg 1.5 --out x.npy\n  \
    tweedie sample --model runs/digits/model.safetensors --classifier runs/digits-clf/classifier.safetensors \\\n      \
    --class 3 --classifier-scale 2 --n 64 --out x.png")]
pub struct Args {
    /// Model: a built-in mixture preset (gmm2d, gmm64d), a mixture TOML file
    /// (`weights = [...]`, `means = [[...]]`, `covs = [[[...]]]`) or a network checkpoint
    /// (`.safetensors`, as written by `tweedie train`).
    #[arg(long)]
    pub model: String,
    /// Sampler: euler, heun, edm_stochastic, euler_ancestral, ddim, ddpm_ancestral, ddpm_fixed,
    /// dpmpp_2s, dpmpp_2m, dpmpp_2m_sde, euler_maruyama, deis3, lms, ipndm, dpmpp_3m,
    /// dpmpp_3m_sde, dpmpp_3m_damped, deis_logrho, unipc, unipc_bh1, adaptive (docs/samplers.md).
    #[arg(long, default_value = "heun")]
    pub sampler: String,
    /// Number of steps (≥ 1).
    #[arg(long, default_value_t = 18)]
    pub steps: usize,
    /// S_churn of edm_stochastic (heun with --churn > 0 is edm_stochastic, Karras et al. 2022, Alg. 2).
    #[arg(long)]
    pub churn: Option<f64>,
    /// S_min, S_max and S_noise of edm_stochastic (churn only for σ̃ ∈ [S_min, S_max]; EDM's
    /// ImageNet-64 set-up: --churn 40 --s-min 0.05 --s-max 50 --s-noise 1.003).
    #[arg(long)]
    pub s_min: Option<f64>,
    #[arg(long)]
    pub s_max: Option<f64>,
    #[arg(long)]
    pub s_noise: Option<f64>,
    /// η of ddim, euler_ancestral and dpmpp_2m_sde (in [0, 1]).
    #[arg(long)]
    pub eta: Option<f64>,
    /// Process (TOML `type`): edm, vp, vp_cosine, ve, flow.
    #[arg(long, default_value = "edm")]
    pub process: String,
    /// Timer (TOML `type`): edm, vp_linear, ve_geometric, exponential, uniform_logsnr, uniform_time, …
    #[arg(long, default_value = "edm")]
    pub timer: String,
    /// A timer parameter as KEY=VALUE, VALUE in TOML syntax (repeatable; the keys of the timer's
    /// TOML config, as `tweedie schedule` takes them), e.g. `--timer-param rho=10
    /// --timer-param sigma_min=0.01` (the bench's tuned Karras grid).
    #[arg(long = "timer-param", value_name = "KEY=VALUE")]
    pub timer_params: Vec<String>,
    /// A process parameter as KEY=VALUE (repeatable), e.g. `--process vp --process-param beta_d=19.9`.
    #[arg(long = "process-param", value_name = "KEY=VALUE")]
    pub process_params: Vec<String>,
    /// Number of samples.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Seed; sample i depends on (seed, i) only.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from x_T in this .npy file ([n, D], f64, process coordinates).
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// Start from x_T ~ N(0, σ(T)²I) instead of the mixture's exact p_T.
    #[arg(long)]
    pub gaussian_start: bool,
    /// Output .npy file ([n, D], f64).
    #[arg(long)]
    pub out: PathBuf,
    /// The measurement operator (--operator and its parameters).
    #[command(flatten)]
    pub op: super::operator::OperatorArgs,
    /// Measurement y (.npy, 1-D f64).
    #[arg(long)]
    pub y: Option<PathBuf>,
    /// Guidance: exact_posterior, dps, pigdm, tmp, replacement, fps, diffpir, daps, pnpdm
    /// (with a stochastic --sampler, e.g. euler_ancestral), enkg, dps_gsg; each with its paper's
    /// defaults (docs/conditional.md).
    #[arg(long, default_value = "exact_posterior")]
    pub guidance: String,
    /// With --operator on an image checkpoint: the true image (.npy of C·H·W values, e.g. from
    /// `tweedie measure --truth`), drawn in the PNG beside the measurement and the samples.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Device for network checkpoints: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Class to sample from a class-conditional checkpoint (default: unconditional).
    #[arg(long)]
    pub class: Option<usize>,
    /// Classifier-free guidance weight w ≥ 0 with --class: D_w = (1+w)·D(x; σ, c) − w·D(x; σ).
    #[arg(long)]
    pub cfg: Option<f64>,
    /// Samples per network call for a checkpoint (default: as many as fit the memory budget,
    /// see docs/reliability.md). Rows are streamed to the .npy as each batch ends, so memory
    /// does not grow with --n; the samples do not depend on it beyond float rounding
    /// (fixed-grid samplers).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Classifier guidance (Dhariwal & Nichol 2021): a noise-conditional classifier checkpoint
    /// (`tweedie train-classifier`) whose ∇log p(c | x̃, σ̃) steers the sampler towards --class.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Scale s ≥ 0 of classifier guidance: D_s = D(x̃; σ̃) + s·σ̃²·∇log p(c | x̃, σ̃) (default 1).
    #[arg(long)]
    pub classifier_scale: Option<f64>,
    /// Guide with --cfg even though the checkpoint records no label dropout, i.e. its null
    /// label was never trained (e.g. an imported network whose training dropped labels
    /// outside it, or to measure what an untrained null label does).
    #[arg(long)]
    pub cfg_untrained_null: bool,
    /// Low-resolution fields for a checkpoint trained with `[conditioning]` (downscaling):
    /// a .npy of M conditions, [M, C, H/f, W/f] (or [M, C·(H/f)·(W/f)], or one condition
    /// without the M axis); `--n` must be a multiple of M, and samples k·n/M … (k+1)·n/M − 1
    /// are drawn given condition k. `tweedie measure --index I,J,… --operator downsample
    /// --factor f` makes one from held-out fields.
    #[arg(long)]
    pub condition: Option<PathBuf>,
}

/// Rows drawn into the PNG grid next to the samples: the first 256 (a 16×16 grid), so a
/// 50,000-sample run draws a readable picture without holding every sample.
const GRID_ROWS: usize = 256;

pub(super) fn load_mixture(spec: &str) -> Result<GaussianMixture> {
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "toml") || path.exists() {
        return GaussianMixture::from_toml_file(path)
            .with_context(|| format!("reading mixture {}", path.display()));
    }
    preset(spec).with_context(|| {
        format!(
            "--model {spec}: not a file; built-in mixtures: {} (or a network checkpoint .safetensors)",
            PRESETS.join(", ")
        )
    })
}

fn sampler_kind(args: &Args) -> Result<SamplerSpec> {
    let params = SamplerParams {
        s_churn: args.churn,
        s_min: args.s_min,
        s_max: args.s_max,
        s_noise: args.s_noise,
        eta: args.eta,
    };
    let spec = SamplerSpec {
        kind: SamplerKind::with_params(&args.sampler, &params)
            .with_context(|| format!("--sampler {}", args.sampler))?,
        steps: args.steps,
    };
    spec.validate()
        .with_context(|| format!("--sampler {} --steps {}", args.sampler, args.steps))?;
    Ok(spec)
}

fn operator(args: &Args, dim: usize) -> Result<Option<Box<dyn ForwardModel>>> {
    args.op.build(dim, None)
}

/// A 2-D .npy array as f64 (any accepted dtype, C or Fortran order), header checked first.
pub(super) fn read_npy2(p: &Path) -> Result<Array2<f64>> {
    let a = tweedie::train::data::npy::read(p)?.to_f64();
    let shape = a.shape().to_vec();
    a.into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| anyhow::anyhow!("{}: expected a 2-D array, got shape {shape:?}", p.display()))
}

/// A 1-D .npy array as f64.
pub(super) fn read_npy1(p: &Path) -> Result<Array1<f64>> {
    let a = tweedie::train::data::npy::read(p)?.to_f64();
    let shape = a.shape().to_vec();
    a.into_dimensionality::<ndarray::Ix1>()
        .map_err(|_| anyhow::anyhow!("{}: expected a 1-D array, got shape {shape:?}", p.display()))
}

/// Refuses an `--out` that cannot be written or would overwrite the model, before any sampling:
/// a directory, a path in a missing folder, or the checkpoint itself (naming the path).
fn check_out(args: &Args) -> Result<()> {
    let out = &args.out;
    if out.is_dir() {
        bail!(
            "--out {}: is a directory; give a file such as {}",
            out.display(),
            out.join("samples.npy").display()
        );
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "--out {}: the folder {} does not exist (create it first)",
            out.display(),
            parent.display()
        );
    }
    let model = Path::new(&args.model);
    if let Ok(m) = model.canonicalize() {
        for written in [data_path(out), png_path(out)] {
            let dir = written
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let w = match (dir.canonicalize(), written.file_name()) {
                (Ok(d), Some(f)) => d.join(f),
                _ => written.clone(),
            };
            if w == m {
                bail!(
                    "--out {}: would overwrite the model {} (writing {}); choose another file",
                    out.display(),
                    model.display(),
                    written.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether `--out` names the PNG grid (`x.png`): the array then goes to `x.npy` next to it.
fn is_png(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// The array file written for `--out`: `out` itself, or `x.npy` for `--out x.png`.
fn data_path(out: &Path) -> PathBuf {
    if is_png(out) {
        out.with_extension("npy")
    } else {
        out.to_path_buf()
    }
}

/// Writes [n, D] rows atomically (temp file, fsync, rename, folder fsync).
pub(super) fn write_npy_atomic(path: &Path, x: &Array2<f64>) -> Result<()> {
    let x = x.as_standard_layout();
    let values = x.as_slice().context("samples are not contiguous")?;
    Ok(npy::write(path, x.shape(), values)?)
}

pub fn run(args: Args) -> Result<()> {
    if args.n == 0 {
        bail!("--n 0: need at least one sample");
    }
    check_out(&args)?;
    if super::model::is_checkpoint(&args.model) {
        return run_checkpoint(&args);
    }
    if is_nc(&args.out) {
        bail!(
            "--out {}: NetCDF output is for models trained on NetCDF data; write .npy for a mixture",
            args.out.display()
        );
    }
    if let Some(t) = &args.truth {
        bail!(
            "--truth {}: draws the true image in the PNG of an image checkpoint; a mixture has none",
            t.display()
        );
    }
    if args.classifier.is_some() || args.classifier_scale.is_some() {
        bail!(
            "--classifier and --classifier-scale apply to network checkpoints, not mixtures \
             (a mixture's classes are its components: sample one with --model on its TOML)"
        );
    }
    if args.class.is_some() || args.cfg.is_some() {
        bail!("--class and --cfg apply to class-conditional network checkpoints, not mixtures");
    }
    if let Some(c) = &args.condition {
        bail!(
            "--condition {}: applies to network checkpoints trained with [conditioning], not \
             mixtures (condition a mixture on a measurement with --operator and --y)",
            c.display()
        );
    }
    if let Some(b) = args.batch {
        bail!(
            "--batch {b} applies to network checkpoints: a mixture's --n samples are drawn \
             together (ensemble guidance couples them; their memory is checked against --n)"
        );
    }
    if is_png(&args.out) {
        bail!(
            "--out {}: mixture samples are vectors, not images; use --out FILE.npy",
            args.out.display()
        );
    }
    let mix = load_mixture(&args.model)?;
    let model = mix;
    let dim = model.dim();
    // The [n, D] f64 samples are held in full: refuse an --n the machine cannot hold.
    tweedie::core::budget::check_array("--n", args.n, &[args.n, dim], 8)?;
    let spec = sampler_kind(&args)?;
    let (process, grid) = process_and_grid(&args, spec.steps)?;
    let shape = IxDyn(&[args.n, dim]);
    let init = match read_latents(&args, dim, "mixture dimension")? {
        Some(l) => Init::Latents(l.into_dyn()),
        None if args.gaussian_start => Init::Noise(ArrayD::zeros(shape)),
        None => Init::Exact(ArrayD::zeros(shape)),
    };
    let op = operator(&args, dim)?;
    let out = match (&op, &args.y) {
        (None, None) => Sampler::new(process.as_ref(), grid, spec.kind.clone(), &model)?
            .seed(args.seed)
            .run(init, None)?,
        (Some(op), Some(yp)) => {
            let y = super::operator::read_y(yp, op.as_ref())?;
            let guidance = Guidance::from_name(&args.guidance)?;
            CondSampler::new(
                process.as_ref(),
                grid,
                spec.kind.clone(),
                &model,
                op.as_ref(),
                y,
                guidance,
            )?
            .seed(args.seed)
            .run(init, None)?
        }
        (Some(_), None) => bail!("--operator needs a measurement --y FILE.npy"),
        (None, Some(_)) => bail!("--y needs an --operator"),
    };
    let x = out
        .samples
        .into_dimensionality::<ndarray::Ix2>()
        .context("samples")?;
    write_npy_atomic(&args.out, &x)?;
    eprintln!(
        "{} samples of dimension {dim} with {} ({} steps, NFE {}) → {}",
        args.n,
        spec.kind.name(),
        spec.steps,
        out.nfe,
        args.out.display()
    );
    Ok(())
}

/// The PNG written next to `out` (`x.npy` → `x.png`; `x.png` itself).
fn png_path(out: &Path) -> PathBuf {
    out.with_extension("png")
}

/// The `--process` and its `--timer` grid of `steps` steps.
fn process_and_grid(args: &Args, steps: usize) -> Result<(Box<dyn Process>, TimeGrid)> {
    let pk: ProcessKind = from_key_values(&args.process, &args.process_params)
        .with_context(|| format!("--process {}", args.process))?;
    pk.validate()
        .with_context(|| format!("--process {}", args.process))?;
    let process = pk.try_build()?;
    let timer: TimerKind = from_key_values(&args.timer, &args.timer_params)
        .with_context(|| format!("--timer {}", args.timer))?;
    timer
        .check_process(&pk)
        .with_context(|| format!("--timer {} --process {}", args.timer, args.process))?;
    let grid = timer
        .grid(process.as_ref(), steps)
        .with_context(|| format!("--timer {}", args.timer))?;
    timer
        .check_grid_range(process.as_ref(), &grid)
        .with_context(|| format!("--timer {} --process {}", args.timer, args.process))?;
    Ok((process, grid))
}

/// The `--latents` array, checked to be [n, dim] (`what` names dim in the error).
fn read_latents(args: &Args, dim: usize, what: &str) -> Result<Option<Array2<f64>>> {
    let Some(p) = &args.latents else {
        return Ok(None);
    };
    let l = read_npy2(p)?;
    if let Some(i) = l.iter().position(|v| !v.is_finite()) {
        bail!(
            "--latents {}: value {} (row {}) is NaN or infinite; latents must be finite",
            p.display(),
            i,
            i / l.ncols().max(1)
        );
    }
    if l.shape() != [args.n, dim] {
        bail!(
            "--latents {}: shape {:?}, expected [{}, {dim}] (--n × {what})",
            p.display(),
            l.shape(),
            args.n
        );
    }
    Ok(Some(l))
}

/// Samples a network checkpoint: the same samplers on libtorch tensors (f32) on `--device`.
/// Whether `--out` asks for NetCDF (`.nc`).
fn is_nc(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some("nc")
}

fn run_checkpoint(args: &Args) -> Result<()> {
    if args.gaussian_start {
        bail!("--gaussian-start is not supported with a network checkpoint (mixtures only)");
    }
    // Under torchrun / `tweedie launch` each rank samples on its own GPU (cuda:LOCAL_RANK), as
    // training does: NCCL refuses two ranks on one device.
    let dist_env = tweedie_dist::DistEnv::from_env()?;
    let device = match (super::model::device(&args.device)?, &dist_env) {
        (tch::Device::Cuda(_), Some(env)) => tch::Device::Cuda(env.local_rank),
        (d, _) => d,
    };
    let path = Path::new(&args.model);
    let loaded = super::model::load(path, device)?;
    let label_dim = loaded.config.net.label_dim();
    let nc_meta: Option<NetcdfMeta> = loaded
        .extra
        .get(NC_META_KEY)
        .map(|s| serde_json::from_str(s))
        .transpose()
        .with_context(|| format!("{}: NetCDF metadata", path.display()))?;
    if is_nc(&args.out) && nc_meta.is_none() {
        bail!(
            "--out {}: {} was not trained on NetCDF data, so it has no variable names, units or \
             coordinates to write; use --out FILE.npy",
            args.out.display(),
            path.display()
        );
    }
    let shape: Vec<usize> = loaded
        .config
        .net
        .sample_shape()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let dim: usize = shape.iter().product();
    if is_png(&args.out) && shape.len() != 3 {
        bail!(
            "--out {}: {} draws vectors of shape {shape:?}, not images; use --out FILE.npy",
            args.out.display(),
            path.display()
        );
    }
    let image_shape = (shape.len() == 3).then_some(shape.as_slice());
    let cond = conditioning(args, dim, image_shape)?;
    let batch = match args.batch {
        Some(0) => bail!("--batch 0: need at least one sample per batch"),
        Some(b) => b.min(args.n),
        None => tweedie::nets::budget::sampling_batch(&loaded.config.net, args.n),
    };
    // FPS's particle groups are consecutive rows: a batch holds whole groups.
    let batch = match cond.as_ref().map(|c| &c.guidance) {
        Some(Guidance::Posterior(PosteriorSampler::Fps(f))) if args.batch.is_none() => {
            (batch / f.particles).max(1) * f.particles
        }
        _ => batch,
    };
    // One batch's state (f32 tensors, f64 rows) is what sampling holds at a time; the rows
    // go to disk, so --n is checked against the free space there.
    tweedie::core::budget::check_array("--batch", batch, &[batch, dim], 12)?;
    npy::check_disk("--n", args.n, &[args.n, dim], 8, &data_path(&args.out))?;
    if is_nc(&args.out) {
        // NetCDF output is written whole: its rows are held.
        tweedie::core::budget::check_array("--n", args.n, &[args.n, dim], 4)?;
    }
    if let (Some(w), false) = (args.cfg, args.cfg_untrained_null) {
        super::model::check_null_label_trained(path, &loaded, w)?;
    }
    // Classifier guidance: the class goes to the classifier (and to the network as well when
    // the network is class-conditional, as Dhariwal & Nichol guide their conditional models).
    let guided = match (&args.classifier, args.class) {
        (Some(_), None) => bail!("--classifier needs --class (the class to guide towards)"),
        (Some(_), Some(_)) if args.cfg.is_some() => {
            bail!("--classifier and --cfg are two guidances: choose one")
        }
        (None, _) if args.classifier_scale.is_some() => {
            bail!("--classifier-scale needs --classifier")
        }
        (Some(cp), Some(c)) => Some(super::model::load_guidance_classifier(
            cp,
            device,
            path,
            &loaded.extra,
            &shape,
            c,
            args.classifier_scale.unwrap_or(1.0),
        )?),
        (None, _) => None,
    };
    let net_class = match guided {
        Some(_) if label_dim == 0 => None,
        _ => args.class,
    };
    let conditions = read_conditions(args, path, &loaded.config, &shape)?;
    let net = NetModel::new(loaded.denoiser, label_dim).on_device(device);
    // Kept past the wrapping below (CFG, classifier guidance): each batch's conditions.
    let condition_slot = net.condition_slot();
    let model: Box<dyn Model<TchTensor>> = match (net_class, args.cfg) {
        (Some(c), _) if label_dim == 0 => {
            bail!("--class {c}: {} is unconditional", path.display())
        }
        (Some(c), _) if c >= label_dim => {
            bail!("--class {c}: {} has classes 0..{label_dim}", path.display())
        }
        (None, Some(_)) => bail!("--cfg needs --class"),
        (Some(c), Some(w)) => {
            if !(w.is_finite() && w >= 0.0) {
                bail!("--cfg {w}: need a finite weight ≥ 0");
            }
            Box::new(Cfg {
                model: net,
                class: c,
                w,
            })
        }
        (c, None) => Box::new(net.with_class(c)),
    };
    let model: Box<dyn Model<TchTensor>> = match (guided, args.class) {
        (Some(clf), Some(c)) => Box::new(ClassifierGuided::new(
            model,
            clf,
            c,
            args.classifier_scale.unwrap_or(1.0),
        )?),
        _ => model,
    };
    let spec = sampler_kind(args)?;
    let (process, grid) = process_and_grid(args, spec.steps)?;
    if let Some(c) = &cond {
        // Refused here, before any sampling: what the method needs of the sampler, the
        // operator and the network (a VJP for DPS, ΠGDM, TMP; a mask for replacement; …).
        c.guidance
            .check(&spec.kind, c.op.as_ref(), model.as_ref())
            .with_context(|| format!("--guidance {}", args.guidance))?;
    }
    let latents = read_latents(args, dim, &format!("sample size {shape:?}"))?;
    // Under torchrun / `tweedie launch`: round k covers rows k·B·W .. (k+1)·B·W, rank r draws
    // its r-th block of B (sample i is keyed by (seed, i) alone), rank 0 gathers and appends
    // them, so every rank holds one batch and the file is written in order as it goes.
    let pg = match dist_env {
        Some(env) => Some(tweedie_dist::ProcessGroup::new(
            &env,
            tweedie_dist::Backend::for_device(device),
        )?),
        None => None,
    };
    let (rank, world) = pg.as_ref().map_or((0, 1), |p| (p.rank(), p.world_size()));
    let per_round = batch
        .checked_mul(world)
        .context("--batch × world size overflows")?;
    let draw = |lo: usize, hi: usize| -> Result<(Array2<f64>, usize)> {
        if hi <= lo {
            return Ok((Array2::zeros((0, dim)), 0));
        }
        let mut full: Vec<i64> = vec![(hi - lo) as i64];
        full.extend(shape.iter().map(|&d| d as i64));
        let init = match &latents {
            Some(l) => {
                let v: Vec<f32> = l
                    .slice(ndarray::s![lo..hi, ..])
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let t = Tensor::f_from_slice(&v)?
                    .f_reshape(full.as_slice())?
                    .to_device(device);
                Init::Latents(TchTensor(t))
            }
            None => Init::Noise(TchTensor(Tensor::zeros(
                full.as_slice(),
                (Kind::Float, device),
            ))),
        };
        if let Some(c) = &conditions {
            condition_slot.set(Some(c.rows(lo, hi)?));
        }
        let out = match &cond {
            None => tch::no_grad(|| -> Result<_> {
                Ok(Sampler::new(
                    process.as_ref(),
                    grid.clone(),
                    spec.kind.clone(),
                    model.as_ref(),
                )?
                .seed(args.seed)
                .first_index(lo as u64)
                .run(init, None)?)
            })?,
            // Not under no_grad: DPS, ΠGDM and TMP take the network's VJP through autograd
            // (plain evaluations are no-grad inside NetModel).
            Some(c) => CondSampler::new(
                process.as_ref(),
                grid.clone(),
                spec.kind.clone(),
                model.as_ref(),
                c.op.as_ref(),
                c.y.clone(),
                c.guidance.clone(),
            )?
            .seed(args.seed)
            .first_index(lo as u64)
            .run(init, None)
            .with_context(|| format!("--guidance {} (rows {lo}..{hi})", args.guidance))?,
        };
        Ok((out.samples.to_rows(), out.nfe))
    };
    let mut sink = if rank == 0 {
        Some(Sink::create(args, nc_meta.as_ref(), dim)?)
    } else {
        None
    };
    let mut grid_rows: Vec<f32> = Vec::new();
    let mut nfe = 0;
    for g in (0..args.n).step_by(per_round) {
        let lo = (g + rank * batch).min(args.n);
        let hi = (lo + batch).min(args.n);
        let (x, used) = draw(lo, hi)?;
        nfe = nfe.max(used);
        let x = match &pg {
            Some(pg) => gather_rows(pg, &x, batch, (args.n - g).min(per_round), device)?,
            None => x,
        };
        let Some(sink) = sink.as_mut() else {
            continue;
        };
        let bad = x.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            bail!(
                "sampling produced {bad} non-finite values in rows {g}..{}",
                g + x.nrows()
            );
        }
        let take = x
            .nrows()
            .min(GRID_ROWS.saturating_sub(grid_rows.len() / dim.max(1)));
        grid_rows.extend(x.slice(ndarray::s![..take, ..]).iter().map(|&v| v as f32));
        sink.append(&x)?;
    }
    let Some(sink) = sink else {
        return Ok(());
    };
    sink.finish()?;
    let mut wrote = data_path(&args.out).display().to_string();
    if let [c, _, _] = shape.as_slice() {
        let png = png_path(&args.out);
        let mut xf = Array2::from_shape_vec((grid_rows.len() / dim.max(1), dim), grid_rows)?;
        if let Some(cond) = &cond {
            // Measurement first, then the truth when given, then the samples.
            xf = cond.picture_rows(&xf)?;
        }
        if nc_meta.is_some() || !matches!(c, 1 | 3) {
            write_field_grid(&png, xf.view(), &shape)
        } else {
            write_image_grid(&png, xf.view(), &shape)
        }
        .with_context(|| format!("writing {}", png.display()))?;
        wrote = format!("{wrote}, {}", png.display());
    }
    eprintln!(
        "{} samples of shape {shape:?} from {} on {device:?} with {} ({} steps, NFE {}) in \
         batches of {batch} → {wrote}",
        args.n,
        path.display(),
        spec.kind.name(),
        spec.steps,
        nfe,
    );
    Ok(())
}

/// What conditional sampling of a checkpoint is given: the operator, the measurement, the
/// guidance, and optionally the true sample (for the PNG).
struct Conditioning {
    op: Box<dyn ForwardModel>,
    y: Array1<f64>,
    guidance: Guidance,
    truth: Option<Array1<f64>>,
}

impl Conditioning {
    /// The PNG's rows: the measurement as a picture, the truth when given, then `samples`.
    fn picture_rows(&self, samples: &Array2<f32>) -> Result<Array2<f32>> {
        let mut rows = vec![super::operator::measurement_picture(
            self.op.as_ref(),
            &self.y,
        )?];
        rows.extend(self.truth.clone());
        let head = ndarray::stack(
            ndarray::Axis(0),
            &rows.iter().map(|r| r.view()).collect::<Vec<_>>(),
        )?
        .mapv(|v| v as f32);
        Ok(ndarray::concatenate(
            ndarray::Axis(0),
            &[head.view(), samples.view()],
        )?)
    }
}

/// `--operator`, `--y`, `--guidance` and `--truth` for a checkpoint of `dim` values per sample
/// (image shape `image` when it has one), checked; None for unconditional sampling.
fn conditioning(args: &Args, dim: usize, image: Option<&[usize]>) -> Result<Option<Conditioning>> {
    let op = args.op.build(dim, image)?;
    let (op, y) = match (op, &args.y) {
        (None, None) => {
            if let Some(t) = &args.truth {
                bail!("--truth {}: needs --operator and --y", t.display());
            }
            return Ok(None);
        }
        (Some(op), Some(yp)) => {
            let y = super::operator::read_y(yp, op.as_ref())?;
            (op, y)
        }
        (Some(_), None) => bail!("--operator needs a measurement --y FILE.npy"),
        (None, Some(_)) => bail!("--y needs an --operator"),
    };
    if args.class.is_some() || args.cfg.is_some() {
        bail!("--class/--cfg with --operator: conditional sampling of class-conditional networks is not supported; sample an unconditional checkpoint");
    }
    let guidance = Guidance::from_name(&args.guidance)?;
    if guidance == Guidance::ExactPosterior {
        bail!(
            "--guidance exact_posterior: a trained network has no closed-form posterior; \
             choose one of dps, pigdm, tmp, replacement, fps, diffpir, daps, pnpdm, enkg, \
             dps_gsg (docs/conditional.md)"
        );
    }
    let truth = match &args.truth {
        None => None,
        Some(p) => {
            let t = tweedie::train::data::npy::read(p)?.to_f64();
            if t.len() != dim {
                bail!(
                    "--truth {}: {} values (shape {:?}), the samples have {dim}",
                    p.display(),
                    t.len(),
                    t.shape()
                );
            }
            Some(Array1::from_iter(t.iter().copied()))
        }
    };
    Ok(Some(Conditioning {
        op,
        y,
        guidance,
        truth,
    }))
}

/// The `--condition` fields of a conditioned checkpoint, [M, C, H/f, W/f] f32 on the CPU, and
/// how many consecutive samples each one gets.
struct Conditions {
    fields: Tensor,
    per: usize,
}

impl Conditions {
    /// The conditions of samples lo..hi (sample i gets field ⌊i/per⌋).
    fn rows(&self, lo: usize, hi: usize) -> Result<Tensor> {
        let idx: Vec<i64> = (lo..hi).map(|i| (i / self.per) as i64).collect();
        Ok(self.fields.f_index_select(0, &Tensor::from_slice(&idx))?)
    }
}

/// Reads and checks `--condition` against the checkpoint's recorded conditioning: a
/// conditioned checkpoint needs it, an unconditioned one refuses it; the file must hold M
/// finite fields of the low-resolution shape, and M must divide `--n`.
fn read_conditions(
    args: &Args,
    model: &Path,
    config: &tweedie::nets::ModelConfig,
    shape: &[usize],
) -> Result<Option<Conditions>> {
    let (cond, path) = match (&config.conditioning, &args.condition) {
        (None, None) => return Ok(None),
        (None, Some(p)) => bail!(
            "--condition {}: {} is not conditioned on a low-resolution field (it was trained \
             without [conditioning])",
            p.display(),
            model.display()
        ),
        (Some(c), None) => bail!(
            "{} is conditioned ({c}): give the low-resolution fields to sample from with \
             --condition LOW.npy (`tweedie measure --index 0,1 --operator downsample --factor {f}` \
             makes one from held-out fields)",
            model.display(),
            f = c.factor
        ),
        (Some(c), Some(p)) => (c, p),
    };
    let sample: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let low = cond.low_shape(&sample)?;
    let dlow: usize = low.iter().map(|&d| d as usize).product();
    let a = npy::read(path)?.to_f64();
    let s = a.shape().to_vec();
    let m = if s.iter().map(|&d| d as i64).eq(low.iter().copied()) || s == [dlow] {
        1
    } else if s.len() >= 2
        && s[1..].iter().product::<usize>() == dlow
        && (s.len() == 2 || s[1..].iter().map(|&d| d as i64).eq(low.iter().copied()))
    {
        s[0]
    } else {
        bail!(
            "--condition {}: shape {s:?}, but {} is conditioned on the {f}×{f} block averages \
             of its {}×{} fields: need [M, {}, {}, {}] (or [M, {dlow}])",
            path.display(),
            model.display(),
            shape[1],
            shape[2],
            low[0],
            low[1],
            low[2],
            f = cond.factor,
        )
    };
    if m == 0 {
        bail!("--condition {}: holds no fields", path.display());
    }
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        bail!(
            "--condition {}: value {i} (field {}) is NaN or infinite; conditions must be finite",
            path.display(),
            i / dlow
        );
    }
    if !args.n.is_multiple_of(m) {
        bail!(
            "--n {}: must be a multiple of the {m} conditions in {} (each gets --n/M samples)",
            args.n,
            path.display()
        );
    }
    let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let mut dims = vec![m as i64];
    dims.extend(&low);
    Ok(Some(Conditions {
        fields: Tensor::f_from_slice(&v)?.f_reshape(dims.as_slice())?,
        per: args.n / m,
    }))
}

/// Where the rows of a checkpoint's samples go as batches end: streamed into the `.npy`, or
/// gathered for a NetCDF file (written whole, with its variables and coordinates).
enum Sink<'a> {
    Npy(npy::NpyWriter<f64>),
    Netcdf {
        path: PathBuf,
        meta: &'a NetcdfMeta,
        rows: Vec<f32>,
        dim: usize,
    },
}

impl<'a> Sink<'a> {
    fn create(args: &Args, nc_meta: Option<&'a NetcdfMeta>, dim: usize) -> Result<Self> {
        Ok(match nc_meta {
            Some(meta) if is_nc(&args.out) => Sink::Netcdf {
                path: args.out.clone(),
                meta,
                rows: Vec::new(),
                dim,
            },
            _ => Sink::Npy(npy::NpyWriter::create(
                &data_path(&args.out),
                &[args.n, dim],
            )?),
        })
    }

    fn append(&mut self, x: &Array2<f64>) -> Result<()> {
        match self {
            Sink::Npy(w) => Ok(w.append(
                x.as_standard_layout()
                    .as_slice()
                    .context("samples are not contiguous")?,
            )?),
            Sink::Netcdf { rows, .. } => {
                rows.extend(x.iter().map(|&v| v as f32));
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Npy(w) => Ok(w.finish()?),
            Sink::Netcdf {
                path,
                meta,
                rows,
                dim,
            } => {
                let x = Array2::from_shape_vec((rows.len() / dim.max(1), dim), rows)?;
                Ok(write_nc_samples(&path, x.view(), meta)?)
            }
        }
    }
}

/// Every rank's rows (at most `per` each, rank order) concatenated: one all-gather of
/// zero-padded [per, D] blocks, trimmed to `n` rows.
fn gather_rows(
    pg: &tweedie_dist::ProcessGroup,
    x: &Array2<f64>,
    per: usize,
    n: usize,
    device: tch::Device,
) -> Result<Array2<f64>> {
    let dim = x.ncols();
    let mut block = vec![0.0f64; per * dim];
    block[..x.len()].copy_from_slice(x.as_standard_layout().as_slice().unwrap_or(&[]));
    let t = Tensor::f_from_slice(&block)?
        .f_reshape([per as i64, dim as i64])?
        .to_device(device);
    let all = pg.all_gather(&t)?.to_device(tch::Device::Cpu);
    let flat = Vec::<f64>::try_from(all.reshape([-1]))?;
    let rows = flat.len() / dim.max(1);
    let x = Array2::from_shape_vec((rows, dim), flat)?;
    Ok(x.slice(ndarray::s![..n, ..]).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["t", "--model", "gmm2d", "--out", "/nonexistent/x.npy"];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    #[test]
    fn bad_input_is_named() {
        let e = format!(
            "{:#}",
            sampler_kind(&args(&["--sampler", "eulr"])).unwrap_err()
        );
        assert!(e.contains("eulr") && e.contains("heun"), "{e}");
        let e = format!("{:#}", sampler_kind(&args(&["--steps", "0"])).unwrap_err());
        assert!(e.contains("steps") && e.contains('0'), "{e}");
        let e = format!(
            "{:#}",
            sampler_kind(&args(&["--sampler", "euler", "--churn", "5"])).unwrap_err()
        );
        assert!(e.contains("s_churn") && e.contains("edm_stochastic"), "{e}");
        // Heun with churn is EDM's stochastic sampler, as in a train config.
        let s = sampler_kind(&args(&["--churn", "5"])).unwrap();
        assert!(matches!(s.kind, SamplerKind::EdmStochastic { s_churn, .. } if s_churn == 5.0));
        let s = sampler_kind(&args(&["--sampler", "ddim", "--eta", "0.3"])).unwrap();
        assert_eq!(s.kind, SamplerKind::Ddim { eta: 0.3 });
        assert!(sampler_kind(&args(&["--sampler", "ddim", "--eta", "2"])).is_err());
        let e = format!("{:#}", load_mixture("no_such_mixture").unwrap_err());
        assert!(e.contains("gmm2d"), "{e}");
        let e = format!(
            "{:#}",
            operator(&args(&["--operator", "mask", "--observe", "7"]), 2).unwrap_err()
        );
        assert!(e.contains("observe 7"), "{e}");
        let e = format!(
            "{:#}",
            operator(&args(&["--operator", "blur", "--image", "1,3,3"]), 2).unwrap_err()
        );
        assert!(e.contains("C·H·W"), "{e}");
    }

    /// The bench's tuned grids from the CLI: the same levels as the timers built in code.
    #[test]
    fn timer_and_process_parameters_set_the_grid() {
        let (p, g) = process_and_grid(
            &args(&["--timer-param", "rho=10", "--timer-param", "sigma_min=0.01"]),
            10,
        )
        .unwrap();
        let want = TimerKind::Edm {
            sigma_min: 0.01,
            sigma_max: 80.0,
            rho: 10.0,
        }
        .grid(p.as_ref(), 10)
        .unwrap();
        assert_eq!(g.sigma_tilde, want.sigma_tilde);
        assert_eq!(g.sigma_tilde[9], 0.01);
        let (_, g) = process_and_grid(
            &args(&[
                "--process",
                "ve",
                "--process-param",
                "sigma_max=50",
                "--timer",
                "ve_geometric",
                "--timer-param",
                "sigma_max=50",
            ]),
            4,
        )
        .unwrap();
        // (σ̃ = 50 through VE's t = σ² and back: one rounding)
        assert!(
            (g.sigma_tilde[0] - 50.0).abs() < 1e-12,
            "{}",
            g.sigma_tilde[0]
        );
        let e = format!(
            "{:#}",
            process_and_grid(&args(&["--timer-param", "rho=0"]), 4).unwrap_err()
        );
        assert!(e.contains("--timer edm") && e.contains("rho"), "{e}");
    }

    #[test]
    fn samples_a_preset_to_npy() {
        let dir = std::env::temp_dir().join(format!("tweedie-sample-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("x.npy");
        let mut a = args(&["--n", "50", "--steps", "8"]);
        a.out = out.clone();
        run(a).unwrap();
        let x = read_npy2(&out).unwrap();
        assert_eq!(x.shape(), &[50, 2]);
        assert!(x.iter().all(|v| v.is_finite()));
        std::fs::remove_dir_all(&dir).ok();
    }

    fn save_tiny(dir: &Path, preset: &str, label_dim: usize) -> PathBuf {
        use std::collections::BTreeMap;
        use tweedie::core::Precond;
        use tweedie::nets::{save_checkpoint, ModelConfig, NetConfig, Wrapper};
        let mut net = NetConfig::preset(preset).unwrap();
        if let NetConfig::Unet(u) = &mut net {
            u.label_dim = label_dim;
        }
        let cfg = ModelConfig {
            net,
            wrapper: Wrapper::Precond(Precond::edm()),
            conditioning: None,
        };
        let (vs, _) = cfg.build(tch::Device::Cpu).unwrap();
        let path = dir.join(format!("{preset}-{label_dim}.safetensors"));
        save_checkpoint(&path, &vs, &cfg, &BTreeMap::new()).unwrap();
        path
    }

    fn ckpt_args(model: &Path, out: &Path, extra: &[&str]) -> Args {
        let mut v = vec![
            "t",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--n",
            "4",
            "--sampler",
            "euler",
            "--steps",
            "3",
        ];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    #[test]
    fn samples_an_untrained_checkpoint_to_npy_and_png() {
        let dir = std::env::temp_dir().join(format!("tweedie-sample-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("x.npy");
        let unet = save_tiny(&dir, "ddpmpp-tiny", 0);
        run(ckpt_args(&unet, &out, &[])).unwrap();
        let x = read_npy2(&out).unwrap();
        assert_eq!(x.shape(), &[4, 64]);
        assert!(x.iter().all(|v| v.is_finite()));
        // Euler from σ = 80 with an untrained network: the samples are far from the x_T = 0
        // template, so a run that silently skipped sampling would fail here.
        assert!(x.iter().any(|v| v.abs() > 1e-3));
        let png = image::open(png_path(&out)).unwrap();
        assert!(png.width() >= 2 * 32 && png.height() >= 2 * 32);
        // Same seed, same samples; another seed, other samples.
        let again = dir.join("y.npy");
        run(ckpt_args(&unet, &again, &[])).unwrap();
        assert_eq!(read_npy2(&again).unwrap(), x);
        run(ckpt_args(&unet, &again, &["--seed", "1"])).unwrap();
        assert_ne!(read_npy2(&again).unwrap(), x);

        let cond = save_tiny(&dir, "ddpmpp-tiny", 3);
        // Its null label was never trained (no label-dropout record): guidance is refused
        // unless asked for explicitly.
        let e = format!(
            "{:#}",
            run(ckpt_args(&cond, &out, &["--class", "2", "--cfg", "1.5"])).unwrap_err()
        );
        assert!(e.contains("without label dropout"), "{e}");
        run(ckpt_args(
            &cond,
            &out,
            &["--class", "2", "--cfg", "1.5", "--cfg-untrained-null"],
        ))
        .unwrap();
        let x = read_npy2(&out).unwrap();
        assert_eq!(x.shape(), &[4, 64]);
        assert!(x.iter().all(|v| v.is_finite()));
        let e = format!(
            "{:#}",
            run(ckpt_args(&cond, &out, &["--class", "3"])).unwrap_err()
        );
        assert!(e.contains("0..3"), "{e}");
        let e = format!(
            "{:#}",
            run(ckpt_args(&unet, &out, &["--class", "0"])).unwrap_err()
        );
        assert!(e.contains("unconditional"), "{e}");

        let mlp = save_tiny(&dir, "mlp-2d", 0);
        run(ckpt_args(&mlp, &out, &[])).unwrap();
        let x = read_npy2(&out).unwrap();
        assert_eq!(x.shape(), &[4, 2]);
        assert!(x.iter().all(|v| v.is_finite()));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Classifier guidance end to end: a classifier trained a few steps by the library behind
    /// `tweedie train-classifier` guides an untrained checkpoint; scale 0 is the unguided
    /// sampler bit for bit, scale 4 moves the samples; a class past the classifier's is refused.
    #[test]
    fn classifier_guidance_trains_a_classifier_and_samples_with_it() {
        use tweedie::train::guidance_classifier::{
            files, train_classifier, ClassifierOptions, ClassifierTrainConfig,
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg = ClassifierTrainConfig::from_toml_str(
            "[diffusion]\ntype = \"EDM\"\n[network]\nmodel_channels = 8\nattn_resolutions = []\n\
             [training]\nbatch_size = 16\nsteps = 4\ndevice = \"cpu\"\n[eval]\nsigmas = [1.0]\n",
            &[],
        )
        .unwrap();
        let trained = train_classifier(
            &cfg,
            &ClassifierOptions {
                run_dir: dir.path().join("clf"),
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        let clf = trained.run_dir.join(files::CLASSIFIER);
        let clf = clf.to_str().unwrap();
        let unet = save_tiny(dir.path(), "ddpmpp-tiny", 0);
        let draw = |extra: &[&str], name: &str| {
            let out = dir.path().join(name);
            run(ckpt_args(&unet, &out, extra)).unwrap();
            read_npy2(&out).unwrap()
        };
        let plain = draw(&[], "plain.npy");
        let guided = |s: &str| {
            draw(
                &["--classifier", clf, "--class", "3", "--classifier-scale", s],
                &format!("s{s}.npy"),
            )
        };
        assert_eq!(guided("0"), plain);
        let x = guided("4");
        assert_eq!(x.shape(), &[4, 64]);
        assert!(x.iter().all(|v| v.is_finite()));
        assert_ne!(x, plain);
        let out = dir.path().join("x.npy");
        let e = format!(
            "{:#}",
            run(ckpt_args(
                &unet,
                &out,
                &["--classifier", clf, "--class", "10"]
            ))
            .unwrap_err()
        );
        assert!(e.contains("0..10"), "{e}");
    }

    /// Sample i depends on (seed, i) only, so the rows streamed batch by batch equal the rows
    /// of one batch of all n, for batch sizes that do and do not divide n, with deterministic
    /// and stochastic samplers and with latents. Equal to f32 rounding, not bit for bit:
    /// libtorch's CPU convolution picks its kernel and thread split by batch size, and one row
    /// in 448 came out 1 ulp apart at --batch 1 (a wrong noise key or latent row is O(1) off).
    #[test]
    fn batched_sampling_equals_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let unet = save_tiny(dir.path(), "ddpmpp-tiny", 0);
        let latents = dir.path().join("z.npy");
        let z: Vec<f64> = (0..7 * 64)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
            .collect();
        npy::write(&latents, &[7, 64], &z).unwrap();
        // (sampler, eta, latents): ckpt_args sets --sampler euler, so fields are set after parsing.
        for (sampler, eta, with_latents) in [
            ("euler", None, false),
            ("euler_ancestral", Some(1.0), false),
            ("dpmpp_2m", None, true),
        ] {
            let draw = |batch: &str| {
                let out = dir.path().join(format!("b{batch}.npy"));
                let mut a = ckpt_args(&unet, &out, &["--batch", batch]);
                a.n = 7;
                a.sampler = sampler.to_string();
                a.eta = eta;
                a.latents = with_latents.then(|| latents.clone());
                run(a).unwrap();
                read_npy2(&out).unwrap()
            };
            let whole = draw("7");
            assert_eq!(whole.shape(), &[7, 64]);
            for b in ["1", "2", "3", "6", "100"] {
                let x = draw(b);
                let scale = whole.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let diff = x
                    .iter()
                    .zip(&whole)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    diff <= 1e-5 * scale,
                    "--batch {b} {sampler} differs from one batch by {diff:e} (max |x| {scale:e})"
                );
            }
        }
        let out = dir.path().join("x.npy");
        let e = format!(
            "{:#}",
            run(ckpt_args(&unet, &out, &["--batch", "0"])).unwrap_err()
        );
        assert!(e.contains("--batch 0"), "{e}");
        let mut a = args(&["--n", "5", "--batch", "2"]);
        a.out = out.clone();
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("--batch 2") && e.contains("mixture"), "{e}");
    }

    #[test]
    fn netcdf_out_writes_physical_units_and_needs_netcdf_metadata() {
        use std::collections::BTreeMap;
        use tweedie::core::Precond;
        use tweedie::nets::{save_checkpoint, ModelConfig, NetConfig, Wrapper};
        use tweedie::train::data::netcdf::{Coord, VarMeta};
        let dir = std::env::temp_dir().join(format!("tweedie-sample-nc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A checkpoint that carries NetCDF metadata: one variable `sst` (K) on 8×8.
        let cfg = ModelConfig {
            net: NetConfig::preset("ddpmpp-tiny").unwrap(),
            wrapper: Wrapper::Precond(Precond::edm()),
            conditioning: None,
        };
        let (vs, _) = cfg.build(tch::Device::Cpu).unwrap();
        let meta = NetcdfMeta {
            dims: ["lat".into(), "lon".into()],
            grid: [8, 8],
            coords: [
                None,
                Some(Coord {
                    values: (0..8).map(|i| 45.0 * i as f64).collect(),
                    attrs: BTreeMap::from([("units".to_string(), "degrees_east".to_string())]),
                }),
            ],
            variables: vec![VarMeta {
                name: "sst".into(),
                attrs: BTreeMap::from([("units".to_string(), "K".to_string())]),
                mean: 290.0,
                std: 0.001,
                mask: None,
            }],
        };
        let extra = BTreeMap::from([(
            NC_META_KEY.to_string(),
            serde_json::to_string(&meta).unwrap(),
        )]);
        let model = dir.join("nc.safetensors");
        save_checkpoint(&model, &vs, &cfg, &extra).unwrap();
        let out = dir.join("x.nc");
        run(ckpt_args(&model, &out, &[])).unwrap();
        let f = ::netcdf::open(&out).unwrap();
        let v = f.variable("sst").unwrap();
        assert_eq!(v.dimensions()[0].len(), 4);
        let vals: Vec<f32> = v.get_values(..).unwrap();
        // mean + std·x with std = 0.001: every value within 0.1 K of 290 K for |x| < 100.
        assert!(
            vals.iter().all(|&x| (f64::from(x) - 290.0).abs() < 0.1),
            "{:?}",
            &vals[..4]
        );
        let lon: Vec<f64> = f.variable("lon").unwrap().get_values(..).unwrap();
        assert_eq!(lon[1], 45.0);
        assert!(png_path(&out).is_file());
        // A checkpoint without NetCDF metadata, and a mixture, cannot write .nc.
        let plain = save_tiny(&dir, "ddpmpp-tiny", 0);
        let e = format!("{:#}", run(ckpt_args(&plain, &out, &[])).unwrap_err());
        assert!(
            e.contains("not trained on NetCDF") && e.contains(".npy"),
            "{e}"
        );
        let mut a = args(&["--n", "5"]);
        a.out = out.clone();
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("x.nc") && e.contains("mixture"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_or_corrupt_checkpoints_are_named() {
        let dir = std::env::temp_dir().join(format!("tweedie-sample-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("x.npy");
        let bad = dir.join("bad.safetensors");
        std::fs::write(&bad, b"definitely not safetensors").unwrap();
        let e = format!("{:#}", run(ckpt_args(&bad, &out, &[])).unwrap_err());
        assert!(
            e.contains("bad.safetensors") && e.contains("corrupt"),
            "{e}"
        );
        let missing = dir.join("missing.safetensors");
        let e = format!("{:#}", run(ckpt_args(&missing, &out, &[])).unwrap_err());
        assert!(
            e.contains("missing.safetensors") && e.contains("not found"),
            "{e}"
        );
        let mut a = ckpt_args(&missing, &out, &[]);
        a.device = "tpu".into();
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("tpu"), "{e}");
        assert!(!out.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
