//! Every conditional method on a trained fields model against the exact Gaussian posterior:
//! `cargo run --profile dev -p tweedie-train --example fields_posterior -- RUN_DIR [N] [STEPS]`
//! (RUN_DIR from `tweedie train --config configs/fields-edm.toml`; N samples per method,
//! default 64; STEPS grid steps, default 32).
//!
//! For held-out field 0 and three operators (a mask of 30 % of the pixels, 4× block averages,
//! a periodic Gaussian blur), y = A·x₀ + s·z; the exact posterior (`FieldPosterior`: CG for the
//! first two, Fourier space for the blur) gives the mean μ and each Fourier mode's variance.
//! Per method: ‖x̄ − μ‖ in posterior standard deviations √(tr P/D) (N exact draws score ≈
//! 1/√N: the sampling floor), and the radially averaged per-mode variance of the samples over
//! the exact one (the largest |log ratio| over |k| = 1…8, and the ratio at |k| = 1 and 8).
//! Prints one Markdown table per operator (docs/results.md has its run on a trained fields model).

use std::time::Instant;

use ndarray::{Array1, Array2, Axis};
use tch::{Device, Kind, Tensor};
use tweedie_core::space::TchTensor;
use tweedie_core::{ProcessKind, Timer, TimerKind};
use tweedie_nets::{load_checkpoint, NetModel};
use tweedie_samplers::ops::measure;
use tweedie_samplers::{
    Blur, Boundary, CondSampler, Downsample, ForwardModel, Guidance, Init, Mask, SamplerKind, State,
};
use tweedie_train::data::fields_posterior::{sample_mode_variance, FieldPosterior};
use tweedie_train::data::{FieldSpec, GroundTruth};
use tweedie_train::TrainConfig;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The methods and the integrator each runs under (PnP-DM needs a stochastic one).
const METHODS: [(&str, &str); 10] = [
    ("dps", "heun"),
    ("pigdm", "heun"),
    ("tmp", "heun"),
    ("replacement", "heun"),
    ("fps", "heun"),
    ("diffpir", "heun"),
    ("daps", "heun"),
    ("pnpdm", "euler_ancestral"),
    ("enkg", "heun"),
    ("dps_gsg", "heun"),
];

/// (‖x̄ − μ‖/√tr P, max |log(v̂/v)| over radial bins, v̂/v at the first and last bin).
fn score(
    spec: &FieldSpec,
    x: &Array2<f64>,
    mu: &Array1<f64>,
    tr_p: f64,
    exact_radial: &[f64],
) -> Res<(f64, f64, f64, f64)> {
    if x.iter().any(|v| !v.is_finite()) {
        return Ok((f64::INFINITY, f64::INFINITY, f64::NAN, f64::NAN));
    }
    let mean = x.mean_axis(Axis(0)).ok_or("no samples")?;
    let err = (&mean - mu).mapv(|v| v * v).sum().sqrt() / tr_p.sqrt();
    let v = spec.radial_average(&sample_mode_variance(x.view(), spec.height, spec.width)?);
    let ratios: Vec<f64> = v.iter().zip(exact_radial).map(|(a, b)| a / b).collect();
    let worst = ratios.iter().map(|r| r.ln().abs()).fold(0.0, f64::max);
    Ok((err, worst, ratios[0], *ratios.last().unwrap_or(&f64::NAN)))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let run = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: fields_posterior RUN_DIR [N] [STEPS]")?,
    );
    let n: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;
    let cfg = TrainConfig::from_file(&run.join("config.toml"), &[])?;
    let data = cfg.data.load()?;
    let GroundTruth::Fields(spec) = &data.truth else {
        return Err("the run was not trained on fields".into());
    };
    let (h, w) = (spec.height, spec.width);
    let loaded = load_checkpoint(&run.join("model.safetensors"), Device::Cpu)?;
    let net = NetModel::new(loaded.denoiser, 0);
    let process = ProcessKind::edm().try_build()?;
    let grid = TimerKind::edm().grid(process.as_ref(), steps)?;

    let x0: Array1<f64> = data.held_out.x.row(0).mapv(f64::from);
    let keep: Vec<bool> = (0..h * w)
        .map(|i| tweedie_core::rng::uniform(3, i as u64, 0) < 0.3)
        .collect();
    let ops: Vec<(&str, Box<dyn ForwardModel>)> = vec![
        (
            "mask, 30 % of pixels, s = 0.05",
            Box::new(Mask::new(&keep, 0.05)?),
        ),
        (
            "4× block averages, s = 0.02",
            Box::new(Downsample::new(1, h, w, 4, 0.02)?),
        ),
        (
            "periodic Gaussian blur (width 1.5 px, radius 4), s = 0.05",
            Box::new(Blur::new(1, h, w, 1.5, 4, 0.05)?.with_boundary(Boundary::Periodic)),
        ),
    ];
    println!(
        "n = {n} samples per method, EDM grid of {steps} steps; held-out field 0; model {}\n",
        run.display()
    );
    for (name, op) in &ops {
        let z = tweedie_core::rng::normal_rows(11, 0, 1, 0, op.out_dim());
        let y = measure(op.as_ref(), &x0, &z.row(0).to_owned())?;
        let post = FieldPosterior::new(spec, op.as_ref())?;
        let mu = post.mean(&y)?;
        let mode_var = post.mode_variance()?;
        let tr_p: f64 = mode_var.iter().sum();
        let exact_radial = spec.radial_average(&mode_var);
        println!(
            "#### {name} ({}; posterior std √(tr P/D) = {:.4}, prior 0.5)\n",
            if post.is_fourier() { "Fourier" } else { "CG" },
            (tr_p / (h * w) as f64).sqrt()
        );
        println!("| method | NFE | wall time | mean error (÷ posterior std) | max \\|log variance ratio\\| | variance ratio \\|k\\| = 1 | \\|k\\| = {} |", spec.radial_bins());
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let t = Instant::now();
        let exact = post.sample(&y, n, 1)?;
        let (e, wv, r1, rk) = score(spec, &exact, &mu, tr_p, &exact_radial)?;
        println!(
            "| exact draws (floor) | — | {:.2} s | {e:.3} | {wv:.3} | {r1:.2} | {rk:.2} |",
            t.elapsed().as_secs_f64()
        );
        for (method, sampler) in METHODS {
            let guidance = Guidance::from_name(method)?;
            let kind = SamplerKind::from_name(sampler)?;
            let like = TchTensor(Tensor::zeros(
                [n as i64, 1, h as i64, w as i64],
                (Kind::Float, Device::Cpu),
            ));
            let c = match CondSampler::new(
                process.as_ref(),
                grid.clone(),
                kind,
                &net,
                op.as_ref(),
                y.clone(),
                guidance,
            ) {
                Ok(c) => c,
                Err(e) => {
                    println!("| {method} | refused: {e} | | | | | |");
                    continue;
                }
            };
            let t = Instant::now();
            let out = c.seed(5).run(Init::Noise(like), None);
            let secs = t.elapsed().as_secs_f64();
            match out {
                Ok(out) => {
                    let x = out.samples.to_rows();
                    let (e, wv, r1, rk) = score(spec, &x, &mu, tr_p, &exact_radial)?;
                    println!(
                        "| {method} ({sampler}) | {} | {secs:.1} s | {e:.3} | {wv:.3} | {r1:.2} | {rk:.2} |",
                        out.nfe
                    );
                }
                Err(e) => println!("| {method} ({sampler}) | | {secs:.1} s | failed: {e} | | | |"),
            }
        }
        println!();
    }
    Ok(())
}
