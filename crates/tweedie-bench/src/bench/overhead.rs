//! The overhead part of `bench-samplers`: each sampler's own cost per step (wall time outside
//! model calls) on gmm64d's state and on a batch of 3×32×32 images, beside k-diffusion's on
//! the same state, model and grid, and against the cost of reading and writing the state once.
//!
//! The image case's model is the exact denoiser of the prior N(0, σ_d²I),
//! D(x̃; σ̃) = σ_d²/(σ_d² + σ̃²)·x̃: one elementwise pass, so the model time is small and known,
//! and its probability-flow ODE has the closed-form endpoint x₀ = x_T·σ_d/√(σ_d² + σ_max²),
//! which the deterministic samplers' errors are measured against.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use ndarray::Array2;
use tweedie_samplers::{Capabilities, Model};

use super::cases::{self, Case, CaseKind};
use super::{fmt_e, median, python, run_case, Reference, Row, RHO, SIGMA_MAX, SIGMA_MIN};

/// The image state of the overhead case.
pub const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];
/// σ_d of the image case's prior N(0, σ_d²I) (EDM's data scale).
const SIGMA_DATA: f64 = 0.5;
/// The image case's NFE budget: each sampler takes the most steps that fit.
const IMAGE_NFE: usize = 20;
/// Per-step overhead ceilings of the target: ÷ k-diffusion's, ÷ one read and write of the state.
pub const TARGET_VS_KDIFFUSION: f64 = 0.2;
pub const TARGET_VS_READ_WRITE: f64 = 3.0;

/// The exact denoiser of N(0, σ_d²I).
struct GaussianPrior;

impl Model<Array2<f64>> for GaussianPrior {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie_samplers::Result<Array2<f64>> {
        let v = SIGMA_DATA * SIGMA_DATA;
        Ok(x * (v / (v + sigma * sigma)))
    }
    fn capabilities(&self) -> Capabilities<'_, Array2<f64>> {
        Capabilities::none()
    }
}

/// The name of the image case in the tables.
pub fn image_name(batch: usize) -> String {
    format!(
        "image {}×{}×{} ({batch} samples; Gaussian prior σ_d = {SIGMA_DATA})",
        IMAGE_SHAPE[0], IMAGE_SHAPE[1], IMAGE_SHAPE[2]
    )
}

/// Seconds to read and write a `[rows, cols]` f64 state once (a copy between two buffers; the
/// fastest of 50, warm).
pub fn read_write_seconds(rows: usize, cols: usize) -> f64 {
    let src = vec![1.0f64; rows * cols];
    let mut dst = vec![0.0f64; rows * cols];
    let mut best = f64::INFINITY;
    for _ in 0..50 {
        let t0 = Instant::now();
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

/// Runs every fixed-grid sampler (and its k-diffusion counterpart, when the harness is there)
/// on `batch` images; returns the rows and notes.
pub fn image_case(
    all_cases: &[Case],
    batch: usize,
    seed: u64,
    harness: Option<&python::Harness>,
    out: &Path,
    threads: usize,
) -> Result<(Vec<Row>, Vec<String>)> {
    let name = image_name(batch);
    let dim: usize = IMAGE_SHAPE.iter().product();
    let v = SIGMA_DATA * SIGMA_DATA;
    // x_T from the exact marginal N(0, (σ_d² + σ_max²)I), keyed per sample.
    let xt = tweedie_core::rng::normal_rows(seed, 0, batch, tweedie_core::rng::streams::INIT, dim)
        * (v + SIGMA_MAX * SIGMA_MAX).sqrt();
    let reference = Reference {
        x0: &xt * (SIGMA_DATA / (v + SIGMA_MAX * SIGMA_MAX).sqrt()),
        steps: 0,
        nfe: 0,
        self_err: 0.0,
        seconds: 0.0,
        labels: Vec::new(),
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut py_runs = Vec::new();
    for case in all_cases
        .iter()
        .filter(|c| c.kind != CaseKind::Adaptive && !c.name.ends_with("_logsnr"))
    {
        let Some(steps) = case.steps_for_nfe(IMAGE_NFE) else {
            continue;
        };
        let (row, _) = run_case(
            case,
            &GaussianPrior,
            None,
            &xt,
            &reference,
            &name,
            &IMAGE_NFE.to_string(),
            steps,
            None,
            2,
        )?;
        eprintln!(
            "[bench] {name} {:<16} nfe={:>3} ovh/step={:>8.1} µs median err={}",
            case.name,
            row.nfe,
            row.overhead_per_step_us(),
            fmt_e(row.med_err)
        );
        rows.push(row);
        if let Some(k) = cases::overhead_counterpart(case.name) {
            py_runs.push(python::RunSpec {
                id: format!("kdiffusion_{k}_s{steps}"),
                lib: "k-diffusion",
                sampler: k.to_string(),
                sigmas: cases::karras_grid(steps, SIGMA_MIN, SIGMA_MAX, RHO)?,
                grid: python::GridSpec {
                    kind: "karras",
                    sigma_min: SIGMA_MIN,
                    sigma_max: SIGMA_MAX,
                    rho: RHO,
                    steps,
                },
                seed,
                options: Default::default(),
            });
        }
    }
    py_runs.sort_by(|a, b| a.id.cmp(&b.id));
    py_runs.dedup_by(|a, b| a.id == b.id);
    let Some(h) = harness.filter(|h| h.kdiffusion.is_some()) else {
        return Ok((rows, notes));
    };
    let dir = out.join("reference").join("image");
    eprintln!("[bench] {name}: {} k-diffusion runs…", py_runs.len());
    match python::run_gaussian(h, &dir, v, &IMAGE_SHAPE, &xt, &py_runs, threads) {
        Ok(results) => {
            for r in results {
                if let Some(msg) = r.error.as_ref().or(r.skipped.as_ref()) {
                    notes.push(format!("{name}: {} not measured: {msg}", r.id));
                    continue;
                }
                let deterministic = !cases::is_stochastic(&r.lib, &r.sampler);
                let med =
                    r.x0.as_ref()
                        .filter(|_| deterministic)
                        .map(|x0| super::stats::median_distance(x0, &reference.x0));
                rows.push(Row {
                    mixture: name.clone(),
                    lib: r.lib.clone(),
                    sampler: r.sampler.clone(),
                    deterministic,
                    budget: IMAGE_NFE.to_string(),
                    steps: r.steps,
                    nfe: r.nfe,
                    rms_err: None,
                    med_err: med,
                    switched: None,
                    comp: None,
                    wall_s: r.wall_s,
                    model_s: r.model_s,
                    samples: batch,
                    notes: r.notes.clone(),
                    diff_ours: None,
                    grid_diff: r.grid_max_rel_diff,
                });
            }
        }
        Err(e) => notes.push(format!("{name}: k-diffusion runs failed: {e:#}")),
    }
    Ok((rows, notes))
}

/// One problem of the overhead table: the rows of a mixture/case name, and its state's
/// read-and-write time.
pub struct Problem {
    pub label: String,
    pub table_name: String,
    pub read_write_s: f64,
}

/// Per-step overhead of `lib sampler` on `problem`, µs: the median over its runs (NFE budgets),
/// with the steps of each run.
fn per_step(rows: &[Row], problem: &str, lib: &str, sampler: &str) -> Vec<(usize, f64)> {
    rows.iter()
        .filter(|r| r.mixture == problem && r.lib == lib && r.sampler == sampler && r.wall_s > 0.0)
        .map(|r| (r.steps, r.overhead_per_step_us()))
        .collect()
}

/// The overhead table: per sampler and problem, ours and k-diffusion's overhead per step, their
/// ratio, ours ÷ one read and write of the state, and whether both targets are met.
pub fn render(rows: &[Row], problems: &[Problem], all_cases: &[Case]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Overhead per step\n\nWall time outside model calls per step (µs; median over the NFE budgets, \
         fastest of two runs each), beside k-diffusion's for the same method (or, where k-diffusion lacks it, \
         its cheapest sampler of the same kind) at the same steps; \"÷ rw\" divides by the time to read and \
         write the state once (a copy, fastest of 50). Target: ≤ {TARGET_VS_KDIFFUSION}× k-diffusion and \
         ≤ {TARGET_VS_READ_WRITE}× rw on every problem.\n"
    );
    for p in problems {
        let _ = writeln!(
            s,
            "- {}: read + write of the state {:.1} µs",
            p.label,
            p.read_write_s * 1e6
        );
    }
    let _ = write!(s, "\n| sampler | k-diffusion |");
    for p in problems {
        let _ = write!(
            s,
            " {0} ours | {0} k-diff. | {0} ratio | {0} ÷ rw |",
            p.label
        );
    }
    let _ = writeln!(s, " target met |");
    let _ = write!(s, "|---|---|");
    for _ in problems {
        let _ = write!(s, "---:|---:|---:|---:|");
    }
    let _ = writeln!(s, "---|");
    for case in all_cases
        .iter()
        .filter(|c| c.kind != CaseKind::Adaptive && !c.name.ends_with("_logsnr"))
    {
        let kd = cases::overhead_counterpart(case.name);
        let _ = write!(s, "| {} | {} |", case.name, kd.unwrap_or("—"));
        let mut met = Some(true);
        for p in problems {
            let ours = per_step(rows, &p.table_name, "tweedie", case.name);
            let theirs = kd
                .map(|k| per_step(rows, &p.table_name, "k-diffusion", k))
                .unwrap_or_default();
            // Ratios at equal steps, then their median.
            let ratios: Vec<f64> = ours
                .iter()
                .filter_map(|(n, o)| {
                    theirs
                        .iter()
                        .find(|(m, _)| m == n)
                        .map(|(_, t)| o / t.max(1e-9))
                })
                .collect();
            let o = median(&ours.iter().map(|x| x.1).collect::<Vec<_>>());
            let t = median(&theirs.iter().map(|x| x.1).collect::<Vec<_>>());
            let ratio = median(&ratios);
            let rw = o.map(|o| o / (p.read_write_s * 1e6));
            let f = |v: Option<f64>, d: usize| v.map(|v| format!("{v:.d$}")).unwrap_or("—".into());
            let _ = write!(
                s,
                " {} | {} | {} | {} |",
                f(o, 1),
                f(t, 1),
                f(ratio, 3),
                f(rw, 2)
            );
            met = match (met, ratio, rw) {
                (Some(m), Some(r), Some(w)) => {
                    Some(m && r <= TARGET_VS_KDIFFUSION && w <= TARGET_VS_READ_WRITE)
                }
                _ => None,
            };
        }
        let _ = writeln!(
            s,
            " {} |",
            match met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            }
        );
    }
    s
}
