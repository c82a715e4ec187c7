//! `cargo xtask bench-samplers` (`tweedie-bench bench-samplers`): quality against exact answers vs cost, for every sampler, side by
//! side with k-diffusion and diffusers on the same mixture, latents and σ grid.
//!
//! Ground truth: the analytic Gaussian mixture. The deterministic endpoint of each sampler is
//! compared with a reference solve of the probability-flow ODE dx/dσ = (x − D(x; σ))/σ
//! (Karras et al. 2022, eq. 3) by classical RK4 in log σ with many steps; the sample
//! distribution is compared component by component with the exact mixture.

mod cases;
mod ckpt;
mod overhead;
mod plot;
pub(crate) mod python;
mod stats;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use tweedie_samplers::{Capabilities, GaussianMixture, Model};

use cases::{Case, CaseKind};
use stats::ComponentErrors;

/// Options of `tweedie-bench bench-samplers`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Results folder: bench.md, bench.csv, error_vs_nfe.png and the reference job files.
    #[arg(long, default_value = "results/bench-samplers")]
    pub out: PathBuf,
    /// Smoke run for CI: NFE {5, 10, 20}, 256 samples, a short reference solve.
    #[arg(long)]
    pub quick: bool,
    /// NFE budgets to measure (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub nfe: Option<Vec<usize>>,
    /// Samples per mixture (default 4000 in 2-D, 500 in higher dimensions).
    #[arg(long)]
    pub samples: Option<usize>,
    /// tweedie-core mixture presets to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "gmm2d,gmm64d")]
    pub mixtures: Vec<String>,
    /// Seed of the latents and of the stochastic samplers' noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the side-by-side runs of k-diffusion and diffusers.
    #[arg(long)]
    pub no_python: bool,
    /// Do not pip-install k-diffusion/diffusers into the virtualenv when they are missing.
    #[arg(long)]
    pub no_install: bool,
    /// Python interpreter for the side-by-side runs (default: .venv/bin/python).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// A trained checkpoint to benchmark against its own reference solve (deterministic samplers).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Latents for --model (default 8; 4 with --quick). Network calls dominate: one timed run each.
    #[arg(long)]
    pub model_samples: Option<usize>,
    /// Batch of the overhead case's 3×32×32 images (default 64; 16 with --quick; 0 skips it).
    #[arg(long)]
    pub image_batch: Option<usize>,
}

/// Karras et al. 2022 grid parameters used throughout (EDM defaults).
const SIGMA_MIN: f64 = tweedie_core::defaults::EDM_SIGMA_MIN;
const SIGMA_MAX: f64 = tweedie_core::defaults::EDM_SIGMA_MAX;
const RHO: f64 = 7.0;

/// Adaptive-solver tolerances (rtol = atol) swept in place of NFE budgets.
const ADAPTIVE_TOLS: [f64; 4] = [1e-2, 1e-3, 1e-4, 1e-5];

/// A model wrapper that counts calls and the time spent inside them, so that the sampler's
/// own overhead is wall time minus model time.
pub struct Timed<'a> {
    inner: &'a dyn Model<Array2<f64>>,
    nanos: AtomicU64,
    calls: AtomicUsize,
}

impl<'a> Timed<'a> {
    fn new(inner: &'a dyn Model<Array2<f64>>) -> Self {
        Timed {
            inner,
            nanos: AtomicU64::new(0),
            calls: AtomicUsize::new(0),
        }
    }
    fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Model<Array2<f64>> for Timed<'_> {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie_samplers::Result<Array2<f64>> {
        let t0 = Instant::now();
        let r = self.inner.denoise(x, sigma);
        self.nanos
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        r
    }
    /// Only `denoise` is timed: the benchmarks sample mixtures with ODE/SDE samplers.
    fn capabilities(&self) -> Capabilities<'_, Array2<f64>> {
        Capabilities::none()
    }
}

/// One measured run (ours or a reference library's).
#[derive(Debug, Clone)]
struct Row {
    mixture: String,
    lib: String,
    sampler: String,
    deterministic: bool,
    /// NFE budget asked for (or tolerance label for the adaptive solver).
    budget: String,
    steps: usize,
    nfe: usize,
    rms_err: Option<f64>,
    /// Median over samples of ‖x₀ − x₀_ref‖ (robust to the few samples that switch modes).
    med_err: Option<f64>,
    /// Fraction of samples whose endpoint lies in another component than the reference's.
    switched: Option<f64>,
    /// Moment errors against the exact mixture (`None` for a trained model: no ground truth).
    comp: Option<ComponentErrors>,
    wall_s: f64,
    model_s: f64,
    samples: usize,
    notes: String,
    /// Reference runs: max |x₀ − x₀_ours| against our counterpart at the same steps.
    diff_ours: Option<f64>,
    /// Reference runs: max relative difference of the σ grid they used from ours.
    grid_diff: f64,
}

impl Row {
    fn overhead_s(&self) -> f64 {
        (self.wall_s - self.model_s).max(0.0)
    }
    fn overhead_per_step_us(&self) -> f64 {
        self.overhead_s() / self.steps.max(1) as f64 * 1e6
    }
    fn overhead_frac(&self) -> f64 {
        if self.model_s > 0.0 {
            self.overhead_s() / self.model_s
        } else {
            f64::NAN
        }
    }
    fn wall_per_sample_us(&self) -> f64 {
        self.wall_s / self.samples.max(1) as f64 * 1e6
    }
}

/// The reference endpoint and its own error estimate.
struct Reference {
    x0: Array2<f64>,
    steps: usize,
    nfe: usize,
    /// Richardson estimate of the RK4 solve's RMS error: ‖x_N − x_{N/2}‖ / 15.
    self_err: f64,
    seconds: f64,
    /// Most likely component of each reference endpoint.
    labels: Vec<usize>,
}

/// A tweedie-core mixture preset (`gmm2d`, `gmm64d`) as a sampler model: the same ground
/// truth as the samplers' own tests.
pub fn bench_mixture(name: &str) -> Result<GaussianMixture> {
    tweedie_core::mixture::preset(name).with_context(|| format!("mixture preset `{name}`"))
}

/// Karras et al. 2022 eq. 5 grid of `steps` noise levels, then 0.
fn karras_grid(steps: usize) -> Result<Vec<f64>> {
    cases::karras_grid(steps, SIGMA_MIN, SIGMA_MAX, RHO)
}

/// RK4 on dx/du = x − D(x; eᵘ), u = log σ, from σ_max to σ_min in `steps` equal steps, then
/// x₀ = D(x; σ_min): the same last step every grid here ends with.
fn rk4_solve(model: &dyn Model<Array2<f64>>, x: &Array2<f64>, steps: usize) -> Result<Array2<f64>> {
    let (u0, u1) = (SIGMA_MAX.ln(), SIGMA_MIN.ln());
    let h = (u1 - u0) / steps as f64;
    let f =
        |x: &Array2<f64>, u: f64| -> Result<Array2<f64>> { Ok(x - &model.denoise(x, u.exp())?) };
    let mut x = x.clone();
    for i in 0..steps {
        let u = u0 + i as f64 * h;
        let k1 = f(&x, u)?;
        let k2 = f(&(&x + &(&k1 * (0.5 * h))), u + 0.5 * h)?;
        let k3 = f(&(&x + &(&k2 * (0.5 * h))), u + 0.5 * h)?;
        let k4 = f(&(&x + &(&k3 * h)), u + h)?;
        x = &x + &((&k1 + &(&k2 * 2.0) + &(&k3 * 2.0) + &k4) * (h / 6.0));
    }
    Ok(model.denoise(&x, SIGMA_MIN)?)
}

fn reference_solve(
    model: &dyn Model<Array2<f64>>,
    mixture: Option<&GaussianMixture>,
    xt: &Array2<f64>,
    steps: usize,
) -> Result<Reference> {
    let t0 = Instant::now();
    let fine = rk4_solve(model, xt, steps)?;
    let coarse = rk4_solve(model, xt, steps / 2)?;
    // RK4 halves its error 16-fold per step doubling: err(fine) ≈ ‖fine − coarse‖ / 15.
    let self_err = stats::rms_distance(&fine, &coarse) / 15.0;
    Ok(Reference {
        labels: match mixture {
            Some(m) => m.component_of(fine.view())?,
            None => Vec::new(),
        },
        x0: fine,
        steps,
        nfe: 4 * steps + 1,
        self_err,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn fmt_f3(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        Some(_) => "inf".into(),
        None => "—".into(),
    }
}

fn fmt_e(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.2e}"),
        Some(_) => "inf".into(),
        None => "—".into(),
    }
}

struct Settings {
    nfe: Vec<usize>,
    samples_2d: usize,
    samples_hd: usize,
    ref_steps_2d: usize,
    ref_steps_hd: usize,
    ref_steps_model: usize,
}

impl Settings {
    fn new(a: &Args) -> Self {
        let mut s = if a.quick {
            Settings {
                nfe: vec![5, 10, 20],
                samples_2d: 256,
                samples_hd: 256,
                ref_steps_2d: 128,
                ref_steps_hd: 64,
                ref_steps_model: 16,
            }
        } else {
            Settings {
                nfe: vec![5, 10, 20, 50, 100],
                samples_2d: 4000,
                samples_hd: 500,
                ref_steps_2d: 512,
                ref_steps_hd: 256,
                ref_steps_model: 64,
            }
        };
        if let Some(n) = &a.nfe {
            s.nfe = n.clone();
        }
        if let Some(n) = a.samples {
            s.samples_2d = n;
            s.samples_hd = n;
        }
        s
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    if args.samples == Some(0) {
        bail!("--samples 0: need at least 1 sample (tables of 0 samples would report 0 and ∞)");
    }
    let settings = Settings::new(&args);
    if settings.nfe.iter().any(|&n| n < 2) {
        bail!("--nfe values must be at least 2, got {:?}", settings.nfe);
    }
    for m in &args.mixtures {
        bench_mixture(m)
            .with_context(|| format!("--mixtures: {:?}", tweedie_core::mixture::PRESETS))?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let started = Instant::now();
    let threads = rayon::current_num_threads();
    eprintln!("[bench] build: {}", build_profile());

    let harness = if args.no_python {
        eprintln!("[bench] side-by-side runs skipped: --no-python");
        None
    } else {
        match python::prepare(
            args.python.as_deref(),
            !args.no_install,
            &args.out.join("reference"),
        ) {
            Ok(h) => {
                eprintln!(
                    "[bench] side by side with k-diffusion {} and diffusers {} (torch {}, {})",
                    h.kdiffusion.as_deref().unwrap_or("(unavailable)"),
                    h.diffusers.as_deref().unwrap_or("(unavailable)"),
                    h.torch,
                    h.python.display()
                );
                Some(h)
            }
            Err(e) => {
                eprintln!("[bench] side-by-side runs skipped: {e:#}");
                None
            }
        }
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut refs: Vec<(String, Reference, usize)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for preset in &args.mixtures {
        let mixture = bench_mixture(preset)?;
        let dim = mixture.dim();
        let name = format!("{preset} ({dim}-D; K = {})", mixture.n_components());
        let n = if dim <= 2 {
            settings.samples_2d
        } else {
            settings.samples_hd
        };
        let xt = mixture.sample_rows(n, SIGMA_MAX, args.seed, 0);
        let ref_steps = if dim <= 2 {
            settings.ref_steps_2d
        } else {
            settings.ref_steps_hd
        };
        eprintln!("[bench] {name}: {n} samples; reference RK4 solve ({ref_steps} steps)…");
        let reference = reference_solve(&mixture, Some(&mixture), &xt, ref_steps)?;
        eprintln!(
            "[bench] {name}: reference done in {:.1} s, estimated RMS error {:.1e}",
            reference.seconds, reference.self_err
        );

        // Exact samples give the floor of the moment errors at this sample count.
        let exact = mixture.sample_rows(n, 0.0, args.seed ^ 0x5eed, 0);
        let comp = stats::component_errors(&exact, &mixture.component_of(exact.view())?, &mixture);
        rows.push(Row {
            mixture: name.clone(),
            lib: "exact".into(),
            sampler: "exact draws".into(),
            deterministic: false,
            budget: "—".into(),
            steps: 0,
            nfe: 0,
            rms_err: None,
            med_err: None,
            switched: None,
            comp: Some(comp),
            wall_s: 0.0,
            model_s: 0.0,
            samples: n,
            notes: "moment-error floor at this sample count".into(),
            diff_ours: None,
            grid_diff: 0.0,
        });
        let ref_comp = stats::component_errors(&reference.x0, &reference.labels, &mixture);
        rows.push(Row {
            mixture: name.clone(),
            lib: "tweedie".into(),
            sampler: "reference RK4".into(),
            deterministic: true,
            budget: "—".into(),
            steps: reference.steps,
            nfe: reference.nfe,
            rms_err: Some(reference.self_err),
            med_err: None,
            switched: None,
            comp: Some(ref_comp),
            wall_s: 0.0,
            model_s: 0.0,
            samples: n,
            notes: "RMS error column: Richardson estimate of its own error".into(),
            diff_ours: None,
            grid_diff: 0.0,
        });

        let all_cases = cases::all(args.seed)?;
        // Our deterministic endpoints by (sampler, steps), to diff against the references'.
        let mut ours_x0: HashMap<(&'static str, usize), Array2<f64>> = HashMap::new();
        // The NFE budget (or tolerance) each reference run belongs to, by run id.
        let mut py_budget: HashMap<String, String> = HashMap::new();
        let mut py_runs = Vec::new();
        for case in &all_cases {
            let budgets: Vec<(String, usize, Option<f64>)> = match case.kind {
                CaseKind::Adaptive => ADAPTIVE_TOLS
                    .iter()
                    .map(|t| (format!("tol {t:.0e}"), 0, Some(*t)))
                    .collect(),
                _ => settings
                    .nfe
                    .iter()
                    .filter_map(|&b| case.steps_for_nfe(b).map(|s| (b.to_string(), s, None)))
                    .collect(),
            };
            for (budget, steps, tol) in budgets {
                let (row, x0) = run_case(
                    case,
                    &mixture,
                    Some(&mixture),
                    &xt,
                    &reference,
                    &name,
                    &budget,
                    steps,
                    tol,
                    2,
                )?;
                if case.kind == CaseKind::Deterministic {
                    ours_x0.insert((case.name, steps), x0);
                }
                eprintln!(
                    "[bench] {name} {:<22} {:>8} nfe={:>4} err={:>9} ovh/model={:.3}",
                    case.name,
                    budget,
                    row.nfe,
                    fmt_e(row.rms_err),
                    row.overhead_frac()
                );
                rows.push(row);
                if let (true, Some(t)) = (harness.is_some(), tol) {
                    // k-diffusion's adaptive DPM-Solver (order 3) at the same tolerance; it
                    // integrates between the grid's end points, so any grid ending at 0 does.
                    let id = format!("kdiffusion_dpm_adaptive_tol{t:.0e}");
                    let mut options = serde_json::Map::new();
                    options.insert("rtol".into(), t.into());
                    options.insert("atol".into(), t.into());
                    py_budget.insert(id.clone(), budget.clone());
                    py_runs.push(python::RunSpec {
                        id,
                        lib: "k-diffusion",
                        sampler: "dpm_adaptive".into(),
                        sigmas: karras_grid(2)?,
                        grid: python::GridSpec {
                            kind: "karras",
                            sigma_min: SIGMA_MIN,
                            sigma_max: SIGMA_MAX,
                            rho: RHO,
                            steps: 2,
                        },
                        seed: args.seed,
                        options,
                    });
                }
                if harness.is_some() && tol.is_none() {
                    let grid = karras_grid(steps)?;
                    for (lib, sampler) in case.reference_equivalents() {
                        let id = format!("{}_{}_s{}", lib.replace('-', ""), sampler, steps);
                        py_budget.insert(id.clone(), budget.clone());
                        py_runs.push(python::RunSpec {
                            id,
                            lib,
                            sampler: sampler.to_string(),
                            sigmas: grid.clone(),
                            grid: python::GridSpec {
                                kind: "karras",
                                sigma_min: SIGMA_MIN,
                                sigma_max: SIGMA_MAX,
                                rho: RHO,
                                steps,
                            },
                            seed: args.seed,
                            options: Default::default(),
                        });
                    }
                }
            }
        }
        py_runs.sort_by(|a, b| a.id.cmp(&b.id));
        py_runs.dedup_by(|a, b| a.id == b.id);
        if let Some(h) = &harness {
            let dir = args.out.join("reference").join(preset);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            eprintln!("[bench] {name}: {} reference-library runs…", py_runs.len());
            match python::run(h, &dir, &mixture, &xt, &py_runs, threads) {
                Ok(results) => {
                    let first_ref_row = rows.len();
                    for r in results {
                        if let Some(msg) = r.error.as_ref().or(r.skipped.as_ref()) {
                            notes.push(format!(
                                "{name}: {} ({} {}, {} steps) not measured: {msg}",
                                r.id, r.lib, r.sampler, r.steps
                            ));
                            continue;
                        }
                        let Some(x0) = &r.x0 else { continue };
                        let deterministic = !cases::is_stochastic(&r.lib, &r.sampler);
                        let labels = mixture.component_of(x0.view())?;
                        let comp = stats::component_errors(x0, &labels, &mixture);
                        let budget = py_budget.get(&r.id).cloned().unwrap_or_else(|| "—".into());
                        let adaptive = r.sampler == "dpm_adaptive";
                        let diff_ours = cases::ours_for(&r.lib, &r.sampler)
                            .and_then(|o| ours_x0.get(&(o, r.steps)))
                            .filter(|_| deterministic)
                            .map(|o| stats::max_abs_diff(o, x0));
                        let note = r.notes.clone();
                        rows.push(Row {
                            mixture: name.clone(),
                            lib: r.lib.clone(),
                            sampler: r.sampler.clone(),
                            deterministic,
                            budget,
                            steps: if adaptive { r.nfe } else { r.steps },
                            nfe: r.nfe,
                            rms_err: deterministic.then(|| stats::rms_distance(x0, &reference.x0)),
                            med_err: deterministic
                                .then(|| stats::median_distance(x0, &reference.x0)),
                            switched: deterministic
                                .then(|| stats::switched(&labels, &reference.labels)),
                            comp: Some(comp),
                            wall_s: r.wall_s,
                            model_s: r.model_s,
                            samples: n,
                            notes: note,
                            grid_diff: r.grid_max_rel_diff,
                            diff_ours,
                        });
                    }
                    rows[first_ref_row..].sort_by(|a, b| {
                        (a.lib.as_str(), a.sampler.as_str(), a.steps).cmp(&(
                            b.lib.as_str(),
                            b.sampler.as_str(),
                            b.steps,
                        ))
                    });
                }
                Err(e) => {
                    eprintln!("[bench] {name}: reference-library runs failed, skipped: {e:#}");
                    notes.push(format!("{name}: reference-library runs failed: {e:#}"));
                }
            }
        }
        refs.push((name, reference, n));
    }

    if let Some(path) = &args.model {
        let (name, reference, n) = bench_checkpoint(path, &args, &settings, &mut rows)?;
        refs.push((name, reference, n));
    }

    // Overhead per step: gmm64d from the runs above, and the 3×32×32 image case.
    let all_cases = cases::all(args.seed)?;
    let mut problems: Vec<overhead::Problem> = refs
        .iter()
        .filter(|(name, _, _)| name.starts_with("gmm64d"))
        .map(|(name, _, n)| overhead::Problem {
            label: "gmm64d".into(),
            table_name: name.clone(),
            read_write_s: overhead::read_write_seconds(*n, 64),
        })
        .collect();
    let image_batch = args.image_batch.unwrap_or(if args.quick { 16 } else { 64 });
    if image_batch > 0 {
        let (image_rows, image_notes) = overhead::image_case(
            &all_cases,
            image_batch,
            args.seed,
            harness.as_ref(),
            &args.out,
            threads,
        )?;
        rows.extend(image_rows);
        notes.extend(image_notes);
        problems.push(overhead::Problem {
            label: "3×32×32".into(),
            table_name: overhead::image_name(image_batch),
            read_write_s: overhead::read_write_seconds(
                image_batch,
                overhead::IMAGE_SHAPE.iter().product(),
            ),
        });
    }
    let overhead_md = overhead::render(&rows, &problems, &all_cases);
    eprintln!("{overhead_md}");

    let mut md = render_markdown(
        &rows,
        &refs,
        &notes,
        &settings,
        threads,
        harness.as_ref(),
        started.elapsed().as_secs_f64(),
    );
    md.push_str(&overhead_md);
    write_atomic(&args.out.join("bench.md"), md.as_bytes())?;
    write_atomic(&args.out.join("bench.csv"), render_csv(&rows).as_bytes())?;
    let panels: Vec<plot::Panel> = refs
        .iter()
        .map(|(name, _, n)| plot_panel(&rows, name, *n))
        .collect();
    plot::write_png(&args.out.join("error_vs_nfe.png"), &panels)?;
    eprintln!(
        "[bench] wrote {}/bench.md, bench.csv, error_vs_nfe.png in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The deterministic samplers on a trained checkpoint, against its own RK4 reference solve.
fn bench_checkpoint(
    path: &Path,
    args: &Args,
    settings: &Settings,
    rows: &mut Vec<Row>,
) -> Result<(String, Reference, usize)> {
    let (net, numel) = ckpt::load(path)?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let name = format!("model {file}");
    let n = args.model_samples.unwrap_or(if args.quick { 4 } else { 8 });
    if n == 0 {
        bail!("--model-samples must be at least 1");
    }
    // x_T = σ_max·z with per-sample keyed noise: the latents depend on (seed, index) only.
    let xt =
        tweedie_core::rng::normal_rows(args.seed, 0, n, tweedie_core::rng::streams::INIT, numel)
            * SIGMA_MAX;
    let ref_steps = settings.ref_steps_model;
    eprintln!(
        "[bench] {name}: {n} latents of {} values; reference RK4 solve ({ref_steps} steps)…",
        numel
    );
    let reference = reference_solve(&net, None, &xt, ref_steps)?;
    eprintln!(
        "[bench] {name}: reference done in {:.1} s, estimated RMS error {:.1e}",
        reference.seconds, reference.self_err
    );
    for case in cases::all(args.seed)?
        .iter()
        .filter(|c| c.kind == CaseKind::Deterministic)
    {
        for &b in &settings.nfe {
            let Some(steps) = case.steps_for_nfe(b) else {
                continue;
            };
            let (row, _) = run_case(
                case,
                &net,
                None,
                &xt,
                &reference,
                &name,
                &b.to_string(),
                steps,
                None,
                1,
            )?;
            eprintln!(
                "[bench] {name} {:<12} {:>4} nfe={:>4} median err={:>9}",
                case.name,
                b,
                row.nfe,
                fmt_e(row.med_err)
            );
            rows.push(row);
        }
    }
    Ok((name, reference, n))
}

#[allow(clippy::too_many_arguments)]
fn run_case(
    case: &Case,
    model: &dyn Model<Array2<f64>>,
    mixture: Option<&GaussianMixture>,
    xt: &Array2<f64>,
    reference: &Reference,
    name: &str,
    budget: &str,
    steps: usize,
    tol: Option<f64>,
    repeats: usize,
) -> Result<(Row, Array2<f64>)> {
    // The fastest of `repeats` runs (the first warms the allocator and the rayon pool).
    let mut best: Option<(f64, f64, usize, Array2<f64>)> = None;
    for _ in 0..repeats.max(1) {
        let timed = Timed::new(model);
        // The latents' copy is the harness's, not the sampler's: made before the clock starts.
        let x = xt.clone();
        let t0 = Instant::now();
        let x0 = case
            .run(&timed, x, steps, tol)
            .with_context(|| format!("{} at {budget}", case.name))?;
        let wall = t0.elapsed().as_secs_f64();
        if best.as_ref().is_none_or(|b| wall < b.0) {
            best = Some((wall, timed.seconds(), timed.calls(), x0));
        }
    }
    let Some((wall, model_s, calls, x0)) = best else {
        bail!("no run")
    };
    let deterministic = !matches!(case.kind, CaseKind::Stochastic);
    let labels = match mixture {
        Some(m) => Some(m.component_of(x0.view())?),
        None => None,
    };
    let comp = mixture
        .zip(labels.as_ref())
        .map(|(m, l)| stats::component_errors(&x0, l, m));
    let row = Row {
        mixture: name.to_string(),
        lib: "tweedie".into(),
        sampler: case.name.to_string(),
        deterministic,
        budget: budget.to_string(),
        steps: if tol.is_some() { calls } else { steps },
        nfe: calls,
        rms_err: deterministic.then(|| stats::rms_distance(&x0, &reference.x0)),
        med_err: deterministic.then(|| stats::median_distance(&x0, &reference.x0)),
        switched: labels
            .as_ref()
            .filter(|_| deterministic)
            .map(|l| stats::switched(l, &reference.labels)),
        comp,
        wall_s: wall,
        model_s,
        samples: xt.nrows(),
        notes: String::new(),
        diff_ours: None,
        grid_diff: 0.0,
    };
    Ok((row, x0))
}

/// The build profile, since timings of an unoptimised build mean little.
fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev profile (debug assertions on; tweedie-core's kernels and noise at opt-level 3, dependencies at 2, the other workspace crates at 1)"
    } else {
        "release profile"
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn render_csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "mixture,lib,sampler,budget,steps,nfe,rms_err,median_err,switched,weight_err,mean_err,cov_err,wall_s,model_s,overhead_s,\
         wall_per_sample_us,overhead_over_model,overhead_per_step_us,samples\n",
    );
    let num = |v: Option<f64>| v.map(|v| format!("{v:.6e}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.6e},{:.6e},{:.6e},{:.4},{:.4},{:.3},{}",
            r.mixture,
            r.lib,
            r.sampler,
            r.budget,
            r.steps,
            r.nfe,
            num(r.rms_err),
            num(r.med_err),
            num(r.switched),
            num(r.comp.map(|c| c.weight)),
            num(r.comp.map(|c| c.mean)),
            num(r.comp.map(|c| c.cov)),
            r.wall_s,
            r.model_s,
            r.overhead_s(),
            r.wall_per_sample_us(),
            r.overhead_frac(),
            r.overhead_per_step_us(),
            r.samples
        );
    }
    s
}

/// Label of a line in the plot and tables: "tweedie heun", "k-diffusion heun", …
fn label(r: &Row) -> String {
    format!("{} {}", r.lib, r.sampler)
}

fn plot_panel(rows: &[Row], mixture: &str, n: usize) -> plot::Panel {
    let mut series: Vec<plot::Series> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.mixture == mixture && r.deterministic && r.lib != "exact" && r.steps > 0)
    {
        if r.sampler == "reference RK4" {
            continue;
        }
        let (Some(e), l) = (r.med_err, label(r)) else {
            continue;
        };
        match series.iter_mut().find(|s| s.label == l) {
            Some(s) => s.points.push((r.nfe as f64, e)),
            None => {
                // A method and its reference implementations share a colour; the marker tells
                // the library apart.
                let color_key = if r.lib == "tweedie" {
                    r.sampler.clone()
                } else {
                    cases::ours_for(&r.lib, &r.sampler)
                        .map(str::to_string)
                        .unwrap_or_else(|| label(r))
                };
                let marker = match r.lib.as_str() {
                    "tweedie" => plot::Marker::Dot,
                    "k-diffusion" => plot::Marker::Square,
                    _ => plot::Marker::Diamond,
                };
                series.push(plot::Series {
                    label: l,
                    points: vec![(r.nfe as f64, e)],
                    color_key,
                    marker,
                })
            }
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    plot::Panel {
        title: format!("{mixture}, {n} samples"),
        x_label: "NFE".into(),
        y_label: "median error vs reference".into(),
        series,
    }
}

/// Empirical order: −slope of log err vs log NFE over the runs with NFE ≥ 20 (the asymptotic
/// range; below that every solver is pre-asymptotic on these grids).
fn order_of(rows: &[Row], mixture: &str, lib: &str, sampler: &str) -> Option<f64> {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| {
            r.mixture == mixture
                && r.lib == lib
                && r.sampler == sampler
                && r.nfe >= 19
                && r.budget != "—"
        })
        .filter_map(|r| r.med_err.map(|e| (r.nfe as f64, e)))
        .collect();
    stats::loglog_slope(&pts).map(|s| -s)
}

fn render_markdown(
    rows: &[Row],
    refs: &[(String, Reference, usize)],
    notes: &[String],
    settings: &Settings,
    threads: usize,
    harness: Option<&python::Harness>,
    seconds: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# bench-samplers\n");
    let _ = writeln!(s, "Build: {}.", build_profile());
    let _ = writeln!(
        s,
        "Karras grid σ ∈ [{SIGMA_MIN}, {SIGMA_MAX}], ρ = {RHO}, then σ = 0; NFE budgets {:?}; {} rayon threads; total {:.0} s.",
        settings.nfe, threads, seconds
    );
    match harness {
        Some(h) => {
            let _ = writeln!(
                s,
                "Side by side: k-diffusion {}, diffusers {}, torch {} (same mixture denoiser in PyTorch f64, same latents, same σ grid).",
                h.kdiffusion.as_deref().unwrap_or("unavailable"),
                h.diffusers.as_deref().unwrap_or("unavailable"),
                h.torch
            );
        }
        None => {
            let _ = writeln!(s, "Side-by-side runs: skipped (see the run's log).");
        }
    }
    let _ = writeln!(
        s,
        "\nColumns: RMS err / median err = RMS / median over samples of ‖x₀ − x₀_ref‖ (deterministic samplers only); \
         switched = share of samples whose endpoint lies in another mixture component than the reference's (these few \
         samples near a separatrix dominate the RMS error; the median shows the solver's convergence); w/μ/Σ err = max over \
         components of |ŵ−w|, ‖μ̂−μ‖/√trΣ, ‖Σ̂−Σ‖_F/‖Σ‖_F (samples assigned to their most likely component); \
         ovh/model = time outside model calls ÷ time inside them; ovh/step = time outside model calls per step.\n"
    );
    for (name, reference, n) in refs {
        let _ = writeln!(s, "## {name} ({n} samples)\n");
        let _ = writeln!(
            s,
            "Reference: RK4 in log σ, {} steps ({} NFE), estimated RMS error {:.1e}, {:.1} s.\n",
            reference.steps, reference.nfe, reference.self_err, reference.seconds
        );
        let _ = writeln!(
            s,
            "| lib | sampler | budget | steps | NFE | RMS err | median err | switched | w err | μ err | Σ err | µs/sample | ovh/model | ovh/step µs |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in rows.iter().filter(|r| &r.mixture == name) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.lib,
                r.sampler,
                r.budget,
                r.steps,
                r.nfe,
                fmt_e(r.rms_err),
                fmt_e(r.med_err),
                r.switched
                    .map(|f| format!("{:.2}%", 100.0 * f))
                    .unwrap_or("—".into()),
                fmt_f3(r.comp.map(|c| c.weight)),
                fmt_f3(r.comp.map(|c| c.mean)),
                fmt_f3(r.comp.map(|c| c.cov)),
                if r.wall_s > 0.0 {
                    format!("{:.1}", r.wall_per_sample_us())
                } else {
                    "—".into()
                },
                if r.wall_s > 0.0 {
                    format!("{:.3}", r.overhead_frac())
                } else {
                    "—".into()
                },
                if r.wall_s > 0.0 {
                    format!("{:.1}", r.overhead_per_step_us())
                } else {
                    "—".into()
                },
            );
        }
        best_per_budget(&mut s, rows, name, &settings.nfe);
        // Convergence orders.
        let _ = writeln!(
            s,
            "\nEmpirical convergence order (−slope of log median err vs log NFE, NFE ≥ 19):\n"
        );
        let _ = writeln!(s, "| lib | sampler | order |");
        let _ = writeln!(s, "|---|---|---:|");
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in rows
            .iter()
            .filter(|r| &r.mixture == name && r.deterministic && r.budget != "—")
        {
            let key = (r.lib.clone(), r.sampler.clone());
            if seen.contains(&key) || r.budget.starts_with("tol") {
                continue;
            }
            seen.push(key);
            let o = order_of(rows, name, &r.lib, &r.sampler);
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                r.lib,
                r.sampler,
                o.map(|o| format!("{o:.2}")).unwrap_or("—".into())
            );
        }
        // Side by side.
        let pairs: Vec<(&Row, &Row)> = rows
            .iter()
            .filter(|r| &r.mixture == name && r.lib != "tweedie" && r.lib != "exact")
            .filter_map(|theirs| {
                let ours_name = cases::ours_for(&theirs.lib, &theirs.sampler)?;
                rows.iter()
                    .find(|o| {
                        &o.mixture == name
                            && o.lib == "tweedie"
                            && o.sampler == ours_name
                            && o.steps == theirs.steps
                    })
                    .map(|ours| (ours, theirs))
            })
            .collect();
        if !pairs.is_empty() {
            let _ = writeln!(
                s,
                "\nSide by side at equal steps and grid (ratios < 1: tweedie lower). max |Δx₀| is the largest \
                 difference between the two endpoints for the same latents: ≈1e-13 means the same arithmetic, \
                 ≈1e-6 the other side's float32 σ grid or state.\n"
            );
            let _ = writeln!(
                s,
                "| tweedie | reference | steps | NFE ours/theirs | median err ours | median err theirs | err ratio | max \\|Δx₀\\| | ovh/step ours µs | ovh/step theirs µs | ovh ratio |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            let mut by_pair: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
            for (o, t) in pairs {
                let err_ratio = match (o.med_err, t.med_err) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                let ovh_ratio = o.overhead_per_step_us() / t.overhead_per_step_us().max(1e-9);
                let key = format!("{} vs {} {}", o.sampler, t.lib, t.sampler);
                match by_pair.iter_mut().find(|p| p.0 == key) {
                    Some(p) => {
                        p.1.extend(err_ratio);
                        p.2.push(ovh_ratio);
                    }
                    None => by_pair.push((key, err_ratio.into_iter().collect(), vec![ovh_ratio])),
                }
                let _ = writeln!(
                    s,
                    "| {} | {} {} | {} | {}/{} | {} | {} | {} | {} | {:.1} | {:.1} | {:.3} |",
                    o.sampler,
                    t.lib,
                    t.sampler,
                    o.steps,
                    o.nfe,
                    t.nfe,
                    fmt_e(o.med_err),
                    fmt_e(t.med_err),
                    err_ratio.map(|r| format!("{r:.3}")).unwrap_or("—".into()),
                    fmt_e(t.diff_ours),
                    o.overhead_per_step_us(),
                    t.overhead_per_step_us(),
                    ovh_ratio,
                );
            }
            let _ = writeln!(s, "\nMedian ratios over the NFE budgets:\n");
            let _ = writeln!(s, "| pair | error ratio | overhead-per-step ratio |");
            let _ = writeln!(s, "|---|---:|---:|");
            for (key, errs, ovhs) in &by_pair {
                let _ = writeln!(
                    s,
                    "| {key} | {} | {} |",
                    median(errs)
                        .map(|m| format!("{m:.3}"))
                        .unwrap_or("—".into()),
                    median(ovhs)
                        .map(|m| format!("{m:.3}"))
                        .unwrap_or("—".into()),
                );
            }
        }
        let _ = writeln!(s);
    }
    // One line per (library, sampler): its note and the largest σ-grid difference over runs.
    let mut extra: Vec<(String, String, f64)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| !r.notes.is_empty() && r.lib != "exact")
    {
        let key = format!("{} {}", r.lib, r.sampler);
        match extra.iter_mut().find(|e| e.0 == key) {
            Some(e) => e.2 = e.2.max(r.grid_diff),
            None => extra.push((key, r.notes.clone(), r.grid_diff)),
        }
    }
    if !extra.is_empty() || !notes.is_empty() {
        let _ = writeln!(s, "## Notes\n");
        for (key, note, grid) in &extra {
            if *grid > 0.0 {
                let _ = writeln!(
                    s,
                    "- {key}: {note}; σ grid differs from ours by ≤ {grid:.1e} (relative)"
                );
            } else {
                let _ = writeln!(s, "- {key}: {note}");
            }
        }
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// The lowest median error of each library's deterministic samplers at each NFE budget, and
/// tweedie's best over the best other library's (issue #13's target: ≤ 0.5).
fn best_per_budget(s: &mut String, rows: &[Row], mixture: &str, budgets: &[usize]) {
    let best = |lib: &str, budget: &str| -> Option<(f64, String)> {
        rows.iter()
            .filter(|r| r.mixture == mixture && r.lib == lib && r.deterministic)
            .filter(|r| r.budget == budget)
            .filter_map(|r| {
                r.med_err
                    .filter(|e| e.is_finite())
                    .map(|e| (e, r.sampler.clone()))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    let cell = |b: &Option<(f64, String)>| match b {
        Some((e, n)) => format!("{} ({n})", fmt_e(Some(*e))),
        None => "—".into(),
    };
    let _ = writeln!(
        s,
        "\nBest median error per NFE budget (deterministic samplers, each library's best; ratio = \
         tweedie ÷ the best other library):\n"
    );
    let _ = writeln!(
        s,
        "| NFE | tweedie | k-diffusion | diffusers | ratio | ≤ 0.5 |\n|---:|---|---|---|---:|---|"
    );
    for b in budgets {
        let budget = b.to_string();
        let ours = best("tweedie", &budget);
        let (k, d) = (best("k-diffusion", &budget), best("diffusers", &budget));
        let other = [k.as_ref(), d.as_ref()]
            .into_iter()
            .flatten()
            .map(|o| o.0)
            .min_by(f64::total_cmp);
        let ratio = match (&ours, other) {
            (Some(o), Some(t)) if t > 0.0 => Some(o.0 / t),
            _ => None,
        };
        let _ = writeln!(
            s,
            "| {b} | {} | {} | {} | {} | {} |",
            cell(&ours),
            cell(&k),
            cell(&d),
            ratio.map(|r| format!("{r:.2}")).unwrap_or("—".into()),
            match ratio {
                Some(r) if r <= 0.5 => "met",
                Some(_) => "not met",
                None => "—",
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_run_writes_tables_and_plot_and_errors_shrink_with_nfe() {
        let out = std::env::temp_dir().join(format!("tweedie-bench-test-{}", std::process::id()));
        let args = Args {
            out: out.clone(),
            quick: true,
            nfe: Some(vec![10, 40]),
            samples: Some(64),
            mixtures: vec!["gmm2d".into()],
            seed: 1,
            no_python: true,
            no_install: true,
            python: None,
            model: None,
            model_samples: None,
            image_batch: Some(4),
        };
        run(args).unwrap();
        let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
        let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
        assert!(md.contains("Empirical convergence order"));
        assert!(md.contains("Best median error per NFE budget"));
        let png = image::open(out.join("error_vs_nfe.png")).unwrap();
        assert!(png.width() > 600);
        // Median error of each deterministic fixed-grid sampler: 40 NFE beats 10 NFE.
        let med = |sampler: &str, budget: &str| -> f64 {
            let line = csv
                .lines()
                .find(|l| l.contains(&format!(",tweedie,{sampler},{budget},")))
                .unwrap_or_else(|| panic!("no row for {sampler} at {budget}"));
            line.split(',').nth(7).unwrap().parse().unwrap()
        };
        for s in [
            "euler",
            "heun",
            "dpmpp_2s",
            "dpmpp_2m",
            "deis3",
            "deis_logrho",
        ] {
            assert!(
                med(s, "40") < med(s, "10"),
                "{s}: {} vs {}",
                med(s, "40"),
                med(s, "10")
            );
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}
