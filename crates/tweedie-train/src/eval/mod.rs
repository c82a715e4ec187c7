//! Evaluation of a trained run against ground truth where it exists (`tweedie eval`, and the
//! end of `tweedie train`), written to `eval.json` and `report.md` in the run directory.
//!
//! - mixture: samples are assigned to their most likely component; per-component weights,
//!   means and covariances are compared with exact samples assigned the same way, as
//!   z-scores (differences in standard errors derived from the sample counts);
//! - fields: radially averaged power spectrum of samples against the exact S(k);
//! - digits: accuracy of the project's digits classifier, and the Fréchet distance between
//!   generated and held-out digits in its feature space, next to the same distance for real
//!   training digits (the floor set by the sample sizes);
//! - other 2-D toys: sliced Wasserstein-1 distance to held-out data, next to the floor;
//! - every dataset: the trained denoiser's error on held-out data at several σ̃ against a
//!   reference denoiser (crate::denoising).
mod digits;
mod fields;
mod mixture;
mod pixels;
mod toy;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tweedie_core::Invalid;

use serde_json::{json, Value};

use digits::eval_digits;
use fields::eval_fields;
use mixture::eval_mixture;
use pixels::eval_generic;
use toy::eval_toy;
pub use toy::sliced_w1;

use crate::config::TrainConfig;
use crate::data::{DataConfig, GroundTruth};
use crate::denoising::{denoising_error, Reference};
use crate::error::{Result, TrainError};
use crate::sample::{generate, NetModel};
use crate::trainer::{files, read_loss_history, Sampling, TrainOutcome};

/// What an evaluation found.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub run_dir: PathBuf,
    /// Every figure, as written to eval.json.
    pub json: Value,
    /// The report's evaluation section (markdown).
    pub markdown: String,
    /// One line per headline figure, for the console.
    pub headline: Vec<String>,
}

impl EvalReport {
    /// Console summary.
    pub fn summary(&self) -> String {
        let mut s = format!("evaluation of {}:\n", self.run_dir.display());
        for h in &self.headline {
            let _ = writeln!(s, "  {h}");
        }
        let _ = write!(
            s,
            "  report: {}",
            self.run_dir.join(files::REPORT).display()
        );
        s
    }
}

/// Options of `tweedie eval` that override the run's config.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub n_samples: Option<usize>,
    pub device: Option<String>,
}

fn other(e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(e.to_string())
}

/// Evaluates the run in `run_dir` (its `model.safetensors` and config), writes eval.json,
/// samples.npy and report.md there, and returns the figures.
pub fn evaluate_run(
    run_dir: &Path,
    cfg: Option<&TrainConfig>,
    outcome: Option<&TrainOutcome>,
) -> Result<EvalReport> {
    evaluate_run_with(run_dir, cfg, outcome, &EvalOptions::default())
}

/// [`evaluate_run`] with overrides.
///
/// Ctrl-C (with the handler of `tweedie train` installed) stops it between batches with
/// [`TrainError::InterruptedAfterTraining`]; the model and training state are untouched and
/// no report is written.
pub fn evaluate_run_with(
    run_dir: &Path,
    cfg: Option<&TrainConfig>,
    outcome: Option<&TrainOutcome>,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    evaluate(run_dir, cfg, outcome, opts).map_err(crate::trainer::stopped_after_training(run_dir))
}

fn evaluate(
    run_dir: &Path,
    cfg: Option<&TrainConfig>,
    outcome: Option<&TrainOutcome>,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    let owned;
    let cfg = match cfg {
        Some(c) => c,
        None => {
            owned = TrainConfig::from_file(&run_dir.join(files::CONFIG), &[])?;
            &owned
        }
    };
    let mut cfg = cfg.clone();
    if let Some(d) = &opts.device {
        cfg.training.device = d.clone();
    }
    if let Some(n) = opts.n_samples {
        if n == 0 {
            return Err(TrainError::invalid("n_samples", 0, "must be ≥ 1"));
        }
        cfg.eval.n_samples = n;
    }
    let data = cfg.data.load()?;
    let device = {
        let spec: tweedie_nets::DeviceSpec = cfg.training.device.parse().map_err(|e| {
            TrainError::invalid("training.device", &cfg.training.device, format!("{e}"))
        })?;
        spec.resolve().map_err(|e| {
            TrainError::invalid("training.device", &cfg.training.device, format!("{e}"))
        })?
    };
    let model_path = run_dir.join(files::MODEL);
    let loaded =
        crate::trainer::with_torch_rng(|| tweedie_nets::load_checkpoint(&model_path, device))
            .map_err(|e| TrainError::Checkpoint {
                path: model_path.clone(),
                reason: e.to_string(),
            })?;
    let label_dim = loaded.config.net.label_dim();
    let params = tweedie_nets::count_params(&loaded.config.net)
        .map(|p| p.parameters)
        .unwrap_or(0);
    let sampling = Sampling {
        ema_vs: loaded.vs,
        model: NetModel::new(loaded.denoiser, label_dim).on_device(device),
        process: cfg.formulation()?.process.try_build()?,
        timer: {
            let f = cfg.formulation()?;
            tweedie_core::TimerKind::Edm {
                sigma_min: f.sigma_min,
                sigma_max: f.sigma_max,
                rho: f.rho,
            }
        },
        max_batch: tweedie_nets::budget::sampling_batch(&loaded.config.net, usize::MAX),
    };
    let n = cfg.eval.n_samples;
    let labels = crate::trainer::grid_labels(&cfg, &data.train, n);
    let plan = sampling.plan(&cfg, &data.train.shape, cfg.eval.batch_size)?;
    let t0 = Instant::now();
    let conditions = crate::trainer::held_out_conditions(&cfg, &data, n)?;
    let (x, nfe) = generate(
        &sampling.model,
        &plan,
        0,
        n,
        labels.as_deref(),
        conditions.as_ref(),
    )?;
    let sample_s = t0.elapsed().as_secs_f64();
    {
        let mut shape = vec![n];
        shape.extend(&data.train.shape);
        let values = x
            .as_slice()
            .ok_or_else(|| other("samples are not contiguous"))?;
        crate::data::npy::write(&run_dir.join("samples.npy"), &shape, values)?;
    }

    let mut md = String::new();
    let mut head = Vec::new();
    let metrics = match &data.truth {
        GroundTruth::Mixture(gm) => eval_mixture(gm, &x, &mut md, &mut head)?,
        GroundTruth::Fields(spec) => eval_fields(spec, &x, &data, &mut md, &mut head)?,
        GroundTruth::None => match &cfg.data {
            DataConfig::Digits { .. } => {
                eval_digits(&cfg, &x, labels.as_deref(), &data, &mut md, &mut head)?
            }
            DataConfig::Checkerboard { .. }
            | DataConfig::Moons { .. }
            | DataConfig::SwissRoll { .. } => eval_toy(&cfg, &x, &data, &mut md, &mut head)?,
            DataConfig::Netcdf(_) if data.netcdf.is_some() && data.train.is_image() => {
                let meta = data
                    .netcdf
                    .as_ref()
                    .ok_or_else(|| other("NetCDF metadata"))?;
                crate::data::netcdf::evaluate(
                    x.view(),
                    data.held_out.x.view(),
                    meta,
                    &mut md,
                    &mut head,
                )?
            }
            _ => eval_generic(&x, &data, &mut md, &mut head)?,
        },
    };
    let mut metrics = metrics;
    crate::trainer::check_stop()?;
    if let Some(c) = &cfg.conditioning {
        // The references are unconditional denoisers: no lower bound for E[x₀ | x̃, y].
        let _ = writeln!(
            md,
            "The held-out denoising table is left out: the model is conditioned ({c}) and the \
             reference denoisers are not (docs/conditional.md compares it with the exact \
             posterior instead).\n"
        );
    } else {
        metrics["denoising"] = denoising_error(
            &sampling.model,
            &data,
            &Reference::for_data(&data)?,
            &cfg.eval.denoiser_sigmas,
            sampling.batch(cfg.eval.batch_size),
            Some(&run_dir.join(files::DENOISING_PLOT)),
            &mut md,
            &mut head,
        )?;
    }
    let spec = cfg.sampling.spec()?;
    head.insert(
        0,
        format!(
            "sampled {n} with {} ({} steps, NFE {nfe}) in {sample_s:.1} s",
            spec.kind.name(),
            spec.steps
        ),
    );

    // Training figures: from this invocation, else from metrics.jsonl.
    let (steps, losses) = read_loss_history(run_dir);
    let metrics_text = std::fs::read_to_string(run_dir.join(files::METRICS)).unwrap_or_default();
    let last = metrics_text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<Value>(l).ok());
    let elapsed = last.as_ref().and_then(|v| v.get("elapsed_s")?.as_f64());
    let json = json!({
        "data": data.name,
        "formulation": cfg.diffusion.kind().name(),
        "network_parameters": params,
        "training": {
            "steps": outcome.map(|o| o.steps).or(steps.last().copied()),
            "last_loss": outcome.and_then(|o| o.last_loss).or(losses.last().copied()),
            "seconds": outcome.map(|o| o.train_seconds).or(elapsed),
            "steps_per_second": outcome.map(|o| o.steps_per_second),
        },
        "sampling": {"sampler": spec.kind.name(), "steps": spec.steps, "nfe": nfe, "n": n, "seconds": sample_s},
        "metrics": metrics,
    });
    crate::plot::atomic_write(
        &run_dir.join(files::EVAL),
        serde_json::to_string_pretty(&json)
            .map_err(other)?
            .as_bytes(),
    )?;

    let mut report = String::new();
    let _ = writeln!(report, "# tweedie run report\n");
    let _ = writeln!(report, "| | |\n|---|---|");
    let _ = writeln!(report, "| run | `{}` |", run_dir.display());
    let _ = writeln!(report, "| formulation | {} |", cfg.diffusion.kind().name());
    let _ = writeln!(
        report,
        "| data | {} ({} training / {} held-out samples of shape {:?}) |",
        data.name,
        data.train.len(),
        data.held_out.len(),
        data.train.shape
    );
    let net_name = match &loaded.config.net {
        tweedie_nets::NetConfig::Unet(_) => "U-Net (SongUNet)",
        tweedie_nets::NetConfig::Dhariwal(_) => "U-Net (ADM, DhariwalUNet)",
        tweedie_nets::NetConfig::Mlp(_) => "MLP",
    };
    let _ = writeln!(report, "| network | {net_name}, {params} parameters |");
    let tr = &json["training"];
    let _ = writeln!(
        report,
        "| training | {} steps of batch {}, {} s, last loss {} |",
        tr["steps"],
        cfg.training.batch_size,
        tr["seconds"]
            .as_f64()
            .map_or("?".into(), |s| format!("{s:.1}")),
        tr["last_loss"]
            .as_f64()
            .map_or("?".into(), |l| format!("{l:.4}"))
    );
    let _ = writeln!(
        report,
        "| sampling | {} with {} steps (NFE {nfe}), {n} samples in {sample_s:.1} s, device {:?} |",
        spec.kind.name(),
        spec.steps,
        device
    );
    let _ = writeln!(
        report,
        "\n![loss]({})  ![samples]({})\n",
        files::LOSS_PLOT,
        files::SAMPLES
    );
    let _ = writeln!(report, "## Evaluation\n");
    report.push_str(&md);
    let _ = writeln!(
        report,
        "Figures in `{}`; samples in `samples.npy`; resolved config in `{}`.",
        files::EVAL,
        files::CONFIG
    );
    crate::plot::atomic_write(&run_dir.join(files::REPORT), report.as_bytes())?;
    Ok(EvalReport {
        run_dir: run_dir.to_path_buf(),
        json,
        markdown: md,
        headline: head,
    })
}
