//! Bring your own model: any closure D(x̃; σ̃) ≈ E[x₀ | x̃ = x₀ + σ̃ε] samples with one call.
//!
//! The "model" here is the exact denoiser of a 1-D two-component Gaussian mixture, written by
//! hand as a user would write a network call; the run compares the samples with the mixture.
//!
//! `cargo run --release -p tweedie-samplers --example bring_your_own_model`

use ndarray::Array2;
use tweedie_samplers::{grids, plain_fn, sample, Init, SamplerError, SamplerKind};

/// Weights, means and standard deviations of the data distribution.
const W: [f64; 2] = [0.3, 0.7];
const MU: [f64; 2] = [-2.0, 1.5];
const S: [f64; 2] = [0.25, 0.5];

/// E[x₀ | x̃] for the mixture: Σ_k r_k(x̃)·(μ_k + s_k²/(s_k² + σ̃²)·(x̃ − μ_k)), with
/// r_k ∝ w_k·N(x̃; μ_k, s_k² + σ̃²) the posterior component probabilities.
fn denoise(x: f64, sigma: f64) -> f64 {
    let v = [S[0] * S[0] + sigma * sigma, S[1] * S[1] + sigma * sigma];
    let log_r: Vec<f64> = (0..2)
        .map(|k| W[k].ln() - 0.5 * v[k].ln() - 0.5 * (x - MU[k]).powi(2) / v[k])
        .collect();
    let top = log_r[0].max(log_r[1]);
    let r: Vec<f64> = log_r.iter().map(|l| (l - top).exp()).collect();
    let total = r[0] + r[1];
    (0..2)
        .map(|k| r[k] / total * (MU[k] + S[k] * S[k] / v[k] * (x - MU[k])))
        .sum()
}

fn main() -> Result<(), SamplerError> {
    let model = plain_fn(|x: &Array2<f64>, sigma: f64| x.mapv(|v| denoise(v, sigma)));
    let sigmas = grids::karras(32, 0.002, 80.0, 7.0)?;
    let n = 20_000;

    // The one call: model, sampler, σ̃ grid, initial state (noise at σ̃_max), seed.
    let out = sample(
        &model,
        SamplerKind::Heun,
        &sigmas,
        Init::Noise(Array2::zeros((n, 1))),
        0,
    )?;

    let x: Vec<f64> = out.samples.iter().copied().collect();
    // The components are 14 standard deviations apart: split them at the midpoint's density dip.
    let (left, right): (Vec<f64>, Vec<f64>) = x.iter().partition(|v| **v < -0.5);
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt();
        (m, s)
    };
    println!("Heun, 32 steps, {} denoiser calls, {n} samples", out.nfe);
    println!("component  weight (exact)  mean (exact)   std (exact)");
    for (k, part) in [left, right].iter().enumerate() {
        let (m, s) = stats(part);
        println!(
            "{k}          {:.4} ({:.2})    {:+.4} ({:+.2})  {:.4} ({:.2})",
            part.len() as f64 / n as f64,
            W[k],
            m,
            MU[k],
            s,
            S[k]
        );
    }
    Ok(())
}
