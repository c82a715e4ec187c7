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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tweedie_core::Invalid;

use ndarray::Array2;
use rand::Rng;
use rand_distr::StandardNormal;
use serde_json::{json, Value};
use tweedie_core::mixture::GaussianMixture;
use tweedie_core::rng::stream_rng;

use crate::classifier::{default_cache_path, frechet, Classifier};
use crate::config::TrainConfig;
use crate::data::{Data, DataConfig, FieldSpec, GroundTruth};
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

/// Per-component statistics of samples assigned to their most likely component.
struct Assigned {
    count: Vec<usize>,
    mean: Vec<Vec<f64>>,
    cov: Vec<Array2<f64>>,
}

fn assign_stats(gm: &GaussianMixture, x: &Array2<f64>) -> Result<Assigned> {
    let comp = gm.component_of(x.view())?;
    let (k, d) = (gm.n_components(), gm.dim());
    let mut count = vec![0usize; k];
    let mut sum = vec![vec![0.0; d]; k];
    for (row, &c) in x.rows().into_iter().zip(&comp) {
        count[c] += 1;
        for j in 0..d {
            sum[c][j] += row[j];
        }
    }
    let mean: Vec<Vec<f64>> = sum
        .iter()
        .zip(&count)
        .map(|(s, &n)| s.iter().map(|v| v / n.max(1) as f64).collect())
        .collect();
    let mut cov = vec![Array2::<f64>::zeros((d, d)); k];
    for (row, &c) in x.rows().into_iter().zip(&comp) {
        for i in 0..d {
            for j in 0..d {
                cov[c][[i, j]] += (row[i] - mean[c][i]) * (row[j] - mean[c][j]);
            }
        }
    }
    for (c, n) in cov.iter_mut().zip(&count) {
        *c /= (*n as f64 - 1.0).max(1.0);
    }
    Ok(Assigned { count, mean, cov })
}

fn eval_mixture(
    gm: &GaussianMixture,
    x: &Array2<f32>,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let xs = x.mapv(f64::from);
    let n = xs.nrows() as f64;
    let gen = assign_stats(gm, &xs)?;
    // The reference is exact samples assigned the same way (assignment truncates overlapping
    // tails, so the raw component parameters are not the right target).
    let n_ref = 200_000;
    let reference = assign_stats(gm, &gm.sample(n_ref, 0x5EED))?;
    let _ = writeln!(
        md,
        "### Mixture: per-component weights, means, covariances\n"
    );
    let _ = writeln!(
        md,
        "Samples assigned to their most likely component, against {n_ref} exact samples assigned the same way. \
         z = difference / standard error from the sample counts (|z| ≲ 3 is sampling noise).\n"
    );
    let _ = writeln!(md, "| k | true weight | weight (ref) | weight (gen) | z(weight) | max z(mean) | max z(cov) | rel. cov error |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    let mut comps = Vec::new();
    let (mut worst_w, mut worst_m, mut worst_c) = (0.0f64, 0.0f64, 0.0f64);
    let d = gm.dim();
    for k in 0..gm.n_components() {
        let w_ref = reference.count[k] as f64 / n_ref as f64;
        let w_gen = gen.count[k] as f64 / n;
        let z_w = (w_gen - w_ref) / (w_ref * (1.0 - w_ref) / n).sqrt().max(1e-12);
        let nk = gen.count[k].max(1) as f64;
        let rc = &reference.cov[k];
        let mut z_m = 0.0f64;
        let mut z_c = 0.0f64;
        for i in 0..d {
            z_m = z_m.max(
                (gen.mean[k][i] - reference.mean[k][i]).abs() / (rc[[i, i]] / nk).sqrt().max(1e-12),
            );
            for j in 0..d {
                let se = ((rc[[i, i]] * rc[[j, j]] + rc[[i, j]].powi(2)) / nk)
                    .sqrt()
                    .max(1e-12);
                z_c = z_c.max((gen.cov[k][[i, j]] - rc[[i, j]]).abs() / se);
            }
        }
        let rel = (&gen.cov[k] - rc).mapv(|v| v * v).sum().sqrt()
            / rc.mapv(|v| v * v).sum().sqrt().max(1e-12);
        worst_w = worst_w.max(z_w.abs());
        worst_m = worst_m.max(z_m);
        worst_c = worst_c.max(z_c);
        let _ = writeln!(
            md,
            "| {k} | {:.3} | {w_ref:.3} | {w_gen:.3} | {z_w:+.2} | {z_m:.2} | {z_c:.2} | {rel:.3} |",
            gm.weights()[k]
        );
        comps.push(json!({"k": k, "weight_true": gm.weights()[k], "weight_ref": w_ref, "weight_gen": w_gen, "z_weight": z_w,
            "max_z_mean": z_m, "max_z_cov": z_c, "rel_cov_error": rel, "count": gen.count[k],
            "mean_gen": gen.mean[k], "mean_ref": reference.mean[k]}));
    }
    let _ = writeln!(md);
    head.push(format!("mixture: max |z| weight {worst_w:.2}, mean {worst_m:.2}, covariance {worst_c:.2} (≲ 3 is noise)"));
    Ok(
        json!({"components": comps, "max_abs_z_weight": worst_w, "max_z_mean": worst_m, "max_z_cov": worst_c}),
    )
}

fn eval_fields(
    spec: &FieldSpec,
    x: &Array2<f32>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let exact = spec.exact_radial_spectrum();
    let gen = spec.radial_spectrum(x.view())?;
    let ho = spec.radial_spectrum(data.held_out.x.view())?;
    let _ = writeln!(md, "### Fields: radially averaged power spectrum\n");
    let _ = writeln!(
        md,
        "| |k| | exact S | generated | generated / exact | held-out / exact |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut worst = 0.0f64;
    let mut worst_ref = 0.0f64;
    for (b, ((e, g), h)) in exact.iter().zip(&gen).zip(&ho).enumerate() {
        let _ = writeln!(
            md,
            "| {} | {e:.4e} | {g:.4e} | {:.3} | {:.3} |",
            b + 1,
            g / e,
            h / e
        );
        worst = worst.max((g / e).ln().abs());
        worst_ref = worst_ref.max((h / e).ln().abs());
    }
    let _ = writeln!(
        md,
        "\nmax |log(generated/exact)| = {worst:.3} (held-out data: {worst_ref:.3})\n"
    );
    head.push(format!(
        "fields: spectrum max |log ratio| {worst:.3} (held-out data {worst_ref:.3})"
    ));

    Ok(
        json!({"spectrum": {"exact": exact, "generated": gen, "held_out": ho, "max_abs_log_ratio": worst,
        "held_out_max_abs_log_ratio": worst_ref}}),
    )
}

fn eval_digits(
    cfg: &TrainConfig,
    x: &Array2<f32>,
    labels: Option<&[i64]>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let digits_path = match &cfg.data {
        DataConfig::Digits { path: Some(p) } => p.clone(),
        _ => crate::data::digits::default_path()?,
    };
    let clf = Classifier::cached(&data.train, &default_cache_path(&digits_path))?;
    let acc = clf.accuracy(&data.held_out)?;
    let f_gen = clf.features(x.view())?;
    let f_ho = clf.features(data.held_out.x.view())?;
    let m = x.nrows().min(data.train.len());
    let f_tr = clf.features(data.train.x.slice(ndarray::s![..m, ..]))?;
    let fd = frechet(&f_gen, &f_ho)?;
    let fd_ref = frechet(&f_tr, &f_ho)?;
    let pred = clf.predict(x.view())?;
    let mut hist = [0usize; 10];
    for &p in &pred {
        if (0..10).contains(&p) {
            hist[p as usize] += 1;
        }
    }
    let cond_acc = labels
        .map(|l| pred.iter().zip(l).filter(|(a, b)| a == b).count() as f64 / l.len().max(1) as f64);
    let _ = writeln!(md, "### Digits: classifier features\n");
    let _ = writeln!(
        md,
        "Classifier (64→256→64→10 MLP trained by the project on the {} training digits): held-out accuracy **{:.1} %**.\n",
        data.train.len(),
        100.0 * acc
    );
    let _ = writeln!(
        md,
        "| Fréchet distance in classifier feature space | value |"
    );
    let _ = writeln!(md, "|---|---|");
    let _ = writeln!(
        md,
        "| generated ({} samples) vs held-out ({}) | **{fd:.3}** |",
        x.nrows(),
        data.held_out.len()
    );
    let _ = writeln!(
        md,
        "| real training digits ({m}) vs held-out (floor) | {fd_ref:.3} |"
    );
    let _ = writeln!(
        md,
        "\nPredicted classes of the generated digits: {hist:?}\n"
    );
    if let Some(c) = cond_acc {
        let _ = writeln!(
            md,
            "Class-conditional samples classified as their requested class: {:.1} %\n",
            100.0 * c
        );
    }
    head.push(format!("digits: classifier accuracy {:.1} %, Fréchet distance {fd:.3} (real-data floor {fd_ref:.3})", 100.0 * acc));
    Ok(
        json!({"classifier_accuracy": acc, "frechet": fd, "frechet_real_floor": fd_ref, "predicted_class_counts": hist,
        "conditional_accuracy": cond_acc}),
    )
}

/// Sliced Wasserstein-1 distance between two sample sets (first min(n₁, n₂) rows of each), over
/// 128 fixed random directions.
pub fn sliced_w1(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let m = a.nrows().min(b.nrows());
    let d = a.ncols();
    let mut total = 0.0;
    let dirs = 128;
    for k in 0..dirs {
        let mut rng = stream_rng(0x51CE, k, 0);
        let mut th: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        let norm = th.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        th.iter_mut().for_each(|v| *v /= norm);
        let proj = |x: &Array2<f64>| -> Vec<f64> {
            let mut p: Vec<f64> = x
                .rows()
                .into_iter()
                .take(m)
                .map(|r| r.iter().zip(&th).map(|(a, b)| a * b).sum())
                .collect();
            p.sort_by(f64::total_cmp);
            p
        };
        let (pa, pb) = (proj(a), proj(b));
        total += pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f64>() / m.max(1) as f64;
    }
    total / dirs as f64
}

fn eval_toy(
    cfg: &TrainConfig,
    x: &Array2<f32>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let g = x.mapv(f64::from);
    let h = data.held_out.x.mapv(f64::from);
    let t = data.train.x.mapv(f64::from);
    let sw = sliced_w1(&g, &h);
    let floor = sliced_w1(&t, &h);
    let _ = writeln!(
        md,
        "### {}: sliced Wasserstein-1 distance to held-out data\n",
        data.name
    );
    let _ = writeln!(md, "| | value |\n|---|---|");
    let _ = writeln!(md, "| generated vs held-out | **{sw:.4}** |");
    let _ = writeln!(md, "| training data vs held-out (floor) | {floor:.4} |");
    let mut out = json!({"sliced_w1": sw, "sliced_w1_floor": floor});
    if matches!(cfg.data, DataConfig::Checkerboard { .. }) {
        let on = g
            .rows()
            .into_iter()
            .filter(|r| {
                r[0].abs() <= 2.0
                    && r[1].abs() <= 2.0
                    && (r[0].floor() as i64 + r[1].floor() as i64).rem_euclid(2) == 0
            })
            .count() as f64
            / g.nrows().max(1) as f64;
        let _ = writeln!(
            md,
            "| fraction of samples on the board's even squares (ideal 1) | {on:.3} |"
        );
        out["on_board_fraction"] = json!(on);
        head.push(format!(
            "checkerboard: {:.1} % of samples on the right squares",
            100.0 * on
        ));
    }
    let _ = writeln!(md);
    head.push(format!(
        "{}: sliced W1 {sw:.4} (data floor {floor:.4})",
        data.name
    ));
    Ok(out)
}

fn eval_generic(
    x: &Array2<f32>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let stats = |a: &Array2<f32>| {
        let m = a.mean().unwrap_or(0.0) as f64;
        let s = a
            .mapv(|v| (v as f64 - m).powi(2))
            .mean()
            .unwrap_or(0.0)
            .sqrt();
        (m, s)
    };
    let (mg, sg) = stats(x);
    let (mh, sh) = stats(&data.held_out.x);
    let _ = writeln!(
        md,
        "### Pixel statistics\n\n| | mean | std |\n|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| generated | {mg:.4} | {sg:.4} |\n| held-out | {mh:.4} | {sh:.4} |\n"
    );
    head.push(format!(
        "pixels: mean {mg:.3} / std {sg:.3} (held-out {mh:.3} / {sh:.3})"
    ));
    Ok(json!({"mean": mg, "std": sg, "held_out_mean": mh, "held_out_std": sh}))
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
pub fn evaluate_run_with(
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
    };
    let n = cfg.eval.n_samples;
    let labels = crate::trainer::grid_labels(&cfg, &data.train, n);
    let plan = sampling.plan(&cfg, &data.train.shape, cfg.eval.batch_size)?;
    let t0 = Instant::now();
    let (x, nfe) = generate(&sampling.model, &plan, 0, n, labels.as_deref())?;
    let sample_s = t0.elapsed().as_secs_f64();
    {
        use ndarray_npy::WriteNpyExt;
        let mut shape = vec![n];
        shape.extend(&data.train.shape);
        let arr = x
            .clone()
            .into_shape_with_order(ndarray::IxDyn(&shape))
            .map_err(other)?;
        let mut buf = Vec::new();
        arr.write_npy(&mut buf).map_err(other)?;
        crate::plot::atomic_write(&run_dir.join("samples.npy"), &buf)?;
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
    metrics["denoising"] = denoising_error(
        &sampling.model,
        &data,
        &Reference::for_data(&data)?,
        &cfg.eval.denoiser_sigmas,
        cfg.eval.batch_size,
        Some(&run_dir.join(files::DENOISING_PLOT)),
        &mut md,
        &mut head,
    )?;
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
            "last_loss": outcome.map(|o| o.last_loss).or(losses.last().copied()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliced_w1_is_zero_for_equal_sets_and_the_shift_for_shifted_ones() {
        let a = Array2::from_shape_fn((500, 2), |(i, j)| ((i * 7 + j * 3) % 50) as f64 / 10.0);
        assert!(sliced_w1(&a, &a).abs() < 1e-12);
        // A shift by c along x moves each projection by c·θ_x: the mean |θ_x| over directions.
        let b = &a + &ndarray::arr1(&[1.0, 0.0]);
        let s = sliced_w1(&a, &b);
        // E|θ_x| for θ uniform on the circle is 2/π; 128 directions give it within a few %.
        assert!((s - 2.0 / std::f64::consts::PI).abs() < 0.06, "{s}");
    }

    #[test]
    fn mixture_evaluation_passes_exact_samples_and_flags_collapsed_ones() -> Result<()> {
        let gm = crate::data::mixture_preset("gmm2d")?;
        let mut md = String::new();
        let mut head = Vec::new();
        let exact = gm.sample(4000, 77).mapv(|v| v as f32);
        let v = eval_mixture(&gm, &exact, &mut md, &mut head)?;
        for key in ["max_abs_z_weight", "max_z_mean"] {
            assert!(
                v[key].as_f64().unwrap_or(f64::NAN) < 4.5,
                "{key} = {}",
                v[key]
            );
        }
        // Samples collapsed onto the component means pass an MMD test at loose bandwidth but
        // not this one: the covariance z-scores explode.
        let (xs, lab) = gm.sample_with_labels(4000, 78);
        let collapsed = Array2::from_shape_fn(xs.dim(), |(i, j)| gm.means()[[lab[i], j]] as f32);
        let v = eval_mixture(&gm, &collapsed, &mut md, &mut head)?;
        assert!(
            v["max_z_cov"].as_f64().unwrap_or(0.0) > 20.0,
            "{}",
            v["max_z_cov"]
        );
        Ok(())
    }
}
