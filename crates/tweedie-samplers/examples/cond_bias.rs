//! Measures the bias of every posterior sampler (DPS, ΠGDM, TMP, replacement, FPS-SMC, DiffPIR,
//! DAPS, PnP-DM, EnKG, DPS-GSG) against the exact posterior of Gaussian-mixture priors; prints
//! the tables of docs/conditional.md. `--only NAME` runs the methods whose label contains NAME.
//!
//! `--plot PATH` also writes the 2-D two-mode problem's samples as scatter panels (PNG).
//!
//! `cargo run --profile dev -p tweedie-samplers --example cond_bias -- --plot docs/results/cond-2d.png`
#![allow(clippy::needless_range_loop)]

use std::time::Instant;

use ndarray::{Array1, Array2, Axis};
use tweedie_core::process::Edm;
use tweedie_core::{Timer, TimerKind};
use tweedie_samplers::problems::{conditional_problems, posterior_errors};
use tweedie_samplers::{
    CondSampler, Daps, Diffpir, DpsGsg, Enkg, ForwardModel, Fps, FpsNoise, GaussianMixture,
    GradientGuidance, Guidance, Init, Pnpdm, SamplerKind,
};

/// Overall data standard deviation √(tr Cov[x₀]/D), the natural σ_data for ΠGDM.
fn data_std(m: &GaussianMixture) -> f64 {
    let x = m.sample_rows(20000, 0.0, 77, 0);
    let mean = x.mean_axis(Axis(0)).unwrap();
    ((&x - &mean).mapv(|v| v * v).sum() / x.len() as f64).sqrt()
}

fn run(
    prior: &GaussianMixture,
    op: &dyn ForwardModel,
    y: &Array1<f64>,
    g: Guidance,
    kind: SamplerKind,
    n: usize,
) -> Result<(Array2<f64>, usize), String> {
    let p = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let c = CondSampler {
        process: &p,
        grid: TimerKind::edm().grid(&p, 32).map_err(|e| e.to_string())?,
        kind,
        model: prior,
        op,
        y: y.clone(),
        guidance: g,
        seed: 1,
        first_index: 0,
    };
    let out = c
        .run(Init::Exact(Array2::<f64>::zeros((n, prior.dim()))), None)
        .map_err(|e| e.to_string())?;
    Ok((out.samples, out.nfe))
}

fn table(
    title: &str,
    prior: &GaussianMixture,
    op: &dyn ForwardModel,
    y: &Array1<f64>,
    n: usize,
    replacement: bool,
) -> Vec<(String, Array2<f64>)> {
    let mut kept = vec![];
    let post = prior
        .posterior(&op.matrix().unwrap(), y, op.noise_std())
        .unwrap();
    let sd = data_std(prior);
    println!("\n### {title}\n");
    println!(
        "exact posterior weights: {:?}; n = {n}; Heun, 32 EDM steps; σ_data = {sd:.2} for ΠGDM\n",
        post.weights()
            .iter()
            .map(|w| format!("{w:.3}"))
            .collect::<Vec<_>>()
    );
    println!("| method | NFE | wall time | max abs weight error | max mean error (÷ posterior std) | max rel. cov error (Frobenius) | sample weights |");
    println!("|---|---|---|---|---|---|---|");
    let heun = SamplerKind::Heun;
    let anc = SamplerKind::from_name("euler_ancestral").expect("known sampler");
    let mut methods = vec![
        (
            "exact score (noise floor)",
            Guidance::ExactPosterior,
            heun.clone(),
        ),
        (
            "DPS (scale 1)",
            Guidance::Gradient(GradientGuidance::Dps { scale: 1.0 }),
            heun.clone(),
        ),
        (
            "DPS (scale 0.1)",
            Guidance::Gradient(GradientGuidance::Dps { scale: 0.1 }),
            heun.clone(),
        ),
        (
            "ΠGDM",
            Guidance::Gradient(GradientGuidance::Pigdm { sigma_data: sd }),
            heun.clone(),
        ),
        (
            "TMP",
            Guidance::Gradient(GradientGuidance::Tmp {
                cg_iters: 50,
                cg_tol: 1e-8,
            }),
            heun.clone(),
        ),
    ];
    if replacement {
        methods.push(("replacement", Guidance::Replacement, heun.clone()));
    }
    methods.extend([
        (
            "FPS-SMC (M = 20)",
            Guidance::from(Fps::default()),
            heun.clone(),
        ),
        (
            "FPS-SMC (M = 200)",
            Guidance::from(Fps {
                particles: 200,
                ..Fps::default()
            }),
            heun.clone(),
        ),
        (
            "FPS-SMC, paper's fresh noise (M = 20)",
            Guidance::from(Fps {
                noise: FpsNoise::Fresh,
                ..Fps::default()
            }),
            heun.clone(),
        ),
        (
            "FPS (M = 1, no SMC)",
            Guidance::from(Fps {
                particles: 1,
                ..Fps::default()
            }),
            heun.clone(),
        ),
        ("DiffPIR", Guidance::from(Diffpir::default()), heun.clone()),
        ("DAPS", Guidance::from(Daps::default()), heun.clone()),
        ("PnP-DM", Guidance::from(Pnpdm::default()), anc.clone()),
        ("EnKG", Guidance::from(Enkg::default()), heun.clone()),
        (
            "DPS-GSG (scale 1)",
            Guidance::from(DpsGsg {
                sigma_data: sd,
                ..DpsGsg::default()
            }),
            heun.clone(),
        ),
        (
            "DPS-GSG (scale 0.1)",
            Guidance::from(DpsGsg {
                scale: 0.1,
                sigma_data: sd,
                ..DpsGsg::default()
            }),
            heun.clone(),
        ),
    ]);
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    for (name, g, kind) in methods {
        if let Some(o) = &only {
            if !name.to_lowercase().contains(&o.to_lowercase()) {
                continue;
            }
        }
        let t0 = Instant::now();
        let r = run(prior, op, y, g, kind, n);
        let wall = t0.elapsed().as_secs_f64();
        match r {
            Ok((x, nfe)) => {
                let s = posterior_errors(&x, &post);
                kept.push((name.to_string(), x.clone()));
                println!(
                    "| {name} | {nfe} | {wall:.2} s | {:.3} | {:.3} | {:.3} | {:?} |",
                    s.weight,
                    s.mean,
                    s.cov,
                    s.weights
                        .iter()
                        .map(|w| format!("{w:.3}"))
                        .collect::<Vec<_>>()
                );
            }
            Err(e) => println!("| {name} | – | – | failed: {e} | | | |"),
        }
    }
    kept
}

/// Scatter panels, 5 per row, 320 px each, axes [−6, 6]²: exact posterior draws grey, the
/// method's first 1500 samples blue; panel order as `panels`.
fn plot(path: &str, exact: &Array2<f64>, panels: &[(String, Array2<f64>)]) -> Result<(), String> {
    use plotters::prelude::*;
    let cols = 5;
    let rows = panels.len().div_ceil(cols);
    let size = 320u32;
    let root =
        BitMapBackend::new(path, (size * cols as u32, size * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((rows, cols));
    for ((_, x), area) in panels.iter().zip(areas.iter()) {
        let mut chart = ChartBuilder::on(area)
            .margin(6)
            .build_cartesian_2d(-6.0..6.0, -6.0..6.0)
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                exact
                    .rows()
                    .into_iter()
                    .take(1500)
                    .map(|r| Circle::new((r[0], r[1]), 1, RGBColor(170, 170, 170).filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                x.rows()
                    .into_iter()
                    .take(1500)
                    .map(|r| Circle::new((r[0], r[1]), 1, RGBColor(30, 90, 200).filled())),
            )
            .map_err(|e| e.to_string())?;
        area.draw(&Rectangle::new(
            [(0, 0), (size as i32 - 1, size as i32 - 1)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn main() {
    let problems = conditional_problems();
    let plot_path: Option<String> = std::env::args().skip_while(|a| a != "--plot").nth(1);
    for (i, p) in problems.iter().enumerate() {
        let kept = table(p.title, &p.prior, p.op.as_ref(), &p.y, p.n, p.inpainting);
        // The scatter panels are of the first (two-mode 2-D) problem.
        if let (0, Some(path)) = (i, &plot_path) {
            let post = p
                .prior
                .posterior(&p.op.matrix().unwrap(), &p.y, p.op.noise_std())
                .unwrap();
            let exact = post.sample_rows(1500, 0.0, 3, 0);
            match plot(path, &exact, &kept) {
                Ok(()) => println!(
                    "\nscatter panels → {path}: {:?}",
                    kept.iter().map(|k| &k.0).collect::<Vec<_>>()
                ),
                Err(e) => println!("\nplot {path} failed: {e}"),
            }
        }
    }
}
