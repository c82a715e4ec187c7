//! A downscaling model (trained with `[conditioning] kind = "downscale"` on `fields`) against
//! the exact posterior p(x | y) of the Gaussian random field given its block averages y.
//!
//! For each of K held-out fields x: y = its f×f block averages; N model samples given y; the
//! exact posterior (Gaussian conditioning, `FieldPosterior` with the average-pooling operator and
//! no noise) gives the mean μ, the per-mode variance and N exact draws (Matheron's rule), which
//! set the Monte-Carlo floor of every figure. Prints a markdown table and writes a PNG: one
//! column per condition (the first 8), rows the low-resolution input, the truth, the exact
//! posterior mean, the model's sample mean, two model samples and two exact draws.
//!
//! cargo run --profile dev -p tweedie-train --example downscale_posterior -- RUN_DIR [K] [N] [PNG]

use std::path::PathBuf;

use ndarray::{Array1, Array2, ArrayView1, Axis};
use tweedie_samplers::{Downsample, ForwardModel};
use tweedie_train::data::fields_posterior::{sample_mode_variance, FieldPosterior};
use tweedie_train::data::{FieldSpec, GroundTruth};
use tweedie_train::sample::{generate, NetModel};
use tweedie_train::trainer::{files, Sampling};
use tweedie_train::{TrainConfig, TrainError};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Fields shown per condition: low-res input, truth, exact mean, model mean, 2 model samples,
/// 2 exact draws.
const TILES: usize = 8;

/// Figures of one set of N draws given one condition.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    /// RMS(x̄ − μ) / RMS posterior std: the sample mean's error in posterior standard deviations.
    mean_err: f64,
    /// Radial bins of the per-mode variance about the sample mean against the exact posterior's:
    /// max and mean |log ratio|.
    var_max: f64,
    var_mean: f64,
    /// RMS(x̄ − truth) (the Bayes floor is the exact μ's).
    mean_to_truth: f64,
    /// RMS(A x − y) / RMS(y): how far the draws' own block averages are from the condition.
    consistency: f64,
}

fn rms(a: ArrayView1<f64>) -> f64 {
    (a.iter().map(|v| v * v).sum::<f64>() / a.len().max(1) as f64).sqrt()
}

/// The exact posterior's figures a set of draws is compared with.
struct Exact<'a> {
    mu: &'a Array1<f64>,
    radial: &'a [f64],
    post_std: f64,
}

fn figures(
    spec: &FieldSpec,
    op: &dyn ForwardModel,
    x: &Array2<f64>,
    y: &Array1<f64>,
    exact: &Exact,
    truth: ArrayView1<f64>,
) -> Result<Figures> {
    let mean = x.mean_axis(Axis(0)).ok_or("no samples")?;
    let var = sample_mode_variance(x.view(), spec.height, spec.width)?;
    let (mut vmax, mut vsum, mut nb) = (0.0f64, 0.0, 0);
    for (g, e) in spec.radial_average(&var).iter().zip(exact.radial) {
        if *e > 0.0 {
            let l = (g / e).ln().abs();
            vmax = vmax.max(l);
            vsum += l;
            nb += 1;
        }
    }
    let ax = op.apply(x)?;
    let resid: f64 = ax
        .rows()
        .into_iter()
        .map(|r| rms((&r - y).view()).powi(2))
        .sum::<f64>()
        / x.nrows() as f64;
    Ok(Figures {
        mean_err: rms((&mean - exact.mu).view()) / exact.post_std,
        var_max: vmax,
        var_mean: vsum / nb.max(1) as f64,
        mean_to_truth: rms((&mean - &truth).view()),
        consistency: resid.sqrt() / rms(y.view()),
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let run = PathBuf::from(args.next().ok_or("usage: RUN_DIR [K] [N] [PNG]")?);
    let k: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let n: usize = args.next().map_or(Ok(256), |s| s.parse())?;
    let png = args.next().map(PathBuf::from);
    let cfg = TrainConfig::from_file(&run.join(files::CONFIG), &[])?;
    let cond = cfg
        .conditioning
        .clone()
        .ok_or("the run was trained without [conditioning]")?;
    let data = cfg.data.load()?;
    let GroundTruth::Fields(spec) = &data.truth else {
        return Err("the run's data are not Gaussian random fields".into());
    };
    let (h, w, f) = (spec.height, spec.width, cond.factor);
    if data.train.shape != [1, h, w] || k > data.held_out.len() {
        return Err(format!("need one-channel fields and ≥ {k} held-out samples").into());
    }
    let device = tch::Device::Cpu;
    let loaded = tweedie_nets::load_checkpoint(&run.join(files::MODEL), device)?;
    let f_cfg = cfg.formulation()?;
    let sampling = Sampling {
        ema_vs: loaded.vs,
        model: NetModel::new(loaded.denoiser, 0).on_device(device),
        process: f_cfg.process.try_build()?,
        timer: tweedie_core::TimerKind::Edm {
            sigma_min: f_cfg.sigma_min,
            sigma_max: f_cfg.sigma_max,
            rho: f_cfg.rho,
        },
        max_batch: tweedie_nets::budget::sampling_batch(&loaded.config.net, usize::MAX),
    };
    let plan = sampling.plan(&cfg, &data.train.shape, n)?;

    // Noiseless block averages: the operator of the training conditions.
    let op = Downsample::new(1, h, w, f, 0.0)?;
    let post = FieldPosterior::new(spec, &op)?;
    let mode_var = post.mode_variance()?;
    let exact_radial = spec.radial_average(&mode_var);
    let post_std = (mode_var.iter().sum::<f64>() / (h * w) as f64).sqrt();

    let (mut model_fig, mut exact_fig) = (Vec::new(), Vec::new());
    let mut exact_mean_to_truth = Vec::new();
    let mut low_to_truth = Vec::new();
    let mut tiles: Vec<Array1<f64>> = Vec::new();
    let t0 = std::time::Instant::now();
    for j in 0..k {
        let truth = data.held_out.x.row(j).mapv(f64::from);
        let y = op
            .apply(&truth.view().insert_axis(Axis(0)).to_owned())?
            .row(0)
            .to_owned();
        let x_t = tch::Tensor::from_slice(truth.as_slice().ok_or("row")?)
            .view([1, 1, h as i64, w as i64]);
        let low = cond.low_res(&x_t.expand([n as i64, 1, h as i64, w as i64], false))?;
        let (xs, _) = generate(&sampling.model, &plan, (j * n) as u64, n, None, Some(&low))?;
        let xs = xs.mapv(f64::from);
        let mu = post.mean(&y)?;
        let draws = post.sample(&y, n, j as u64)?;
        let exact = Exact {
            mu: &mu,
            radial: &exact_radial,
            post_std,
        };
        let up = op.adjoint(&y.view().insert_axis(Axis(0)).to_owned())? * (f * f) as f64;
        model_fig.push(figures(spec, &op, &xs, &y, &exact, truth.view())?);
        exact_fig.push(figures(spec, &op, &draws, &y, &exact, truth.view())?);
        exact_mean_to_truth.push(rms((&mu - &truth).view()));
        low_to_truth.push(rms((&up.row(0) - &truth).view()));
        let model_mean = xs.mean_axis(Axis(0)).ok_or("no samples")?;
        for t in [
            up.row(0).to_owned(),
            truth.clone(),
            mu,
            model_mean,
            xs.row(0).to_owned(),
            xs.row(1).to_owned(),
            draws.row(0).to_owned(),
            draws.row(1).to_owned(),
        ] {
            tiles.push(t);
        }
    }
    let secs = t0.elapsed().as_secs_f64();

    let avg = |v: &[Figures], g: fn(&Figures) -> f64| v.iter().map(g).sum::<f64>() / v.len() as f64;
    let worst = |v: &[Figures], g: fn(&Figures) -> f64| v.iter().map(g).fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "{k} held-out {h}×{w} fields, f = {f} ({}×{} block averages), {n} draws each; model: \
         {} {} steps (the run's [sampling]); exact posterior pixel std {post_std:.4}; \
         sampling {secs:.0} s\n",
        h / f,
        w / f,
        cfg.sampling.sampler,
        cfg.sampling.steps
    );
    println!("| draws | mean error (posterior σ), mean / max over conditions | spectrum mean \\|log ratio\\| | spectrum max \\|log ratio\\| | RMS(x̄ − truth) | RMS(Ax − y)/RMS(y) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, v) in [
        ("model", &model_fig),
        ("exact posterior (floor)", &exact_fig),
    ] {
        println!(
            "| {name} | {:.3} / {:.3} | {:.3} | {:.3} | {:.4} | {:.2e} |",
            avg(v, |x| x.mean_err),
            worst(v, |x| x.mean_err),
            avg(v, |x| x.var_mean),
            worst(v, |x| x.var_max),
            avg(v, |x| x.mean_to_truth),
            avg(v, |x| x.consistency),
        );
    }
    println!(
        "\nRMS(μ − truth) of the exact posterior mean {:.4}; of the upsampled low-resolution field {:.4}; \
         Monte-Carlo floor of the mean error 1/√N = {:.3}",
        mean(&exact_mean_to_truth),
        mean(&low_to_truth),
        1.0 / (n as f64).sqrt()
    );
    println!(
        "\nradial bins of the posterior variance (exact): {:?}",
        exact_radial
            .iter()
            .map(|v| format!("{v:.2e}"))
            .collect::<Vec<_>>()
    );
    if let Some(p) = png {
        // One kind of field per row, one condition per column (the first 8 conditions).
        let cols = k.min(8);
        let rows: Vec<f32> = (0..TILES)
            .flat_map(|kind| (0..cols).map(move |j| j * TILES + kind))
            .flat_map(|i| tiles[i].iter().map(|&v| v as f32).collect::<Vec<_>>())
            .collect();
        let x = Array2::from_shape_vec((TILES * cols, h * w), rows)?;
        tweedie_train::plot::write_field_grid_cols(&p, x.view(), &[1, h, w], cols)
            .map_err(|e: TrainError| e.to_string())?;
        println!("\nwrote {} (columns: the first {cols} conditions; rows: low-res input, truth, exact posterior mean, model mean, 2 model samples, 2 exact draws)", p.display());
    }
    Ok(())
}
