//! `cargo xtask bench-conditional` (`tweedie-bench bench-conditional`): tweedie's posterior
//! samplers that `diffuse` also has (DPS, FPS, TMP) on the four problems of docs/conditional.md,
//! and with `--with-diffuse` diffuse itself (PyPI `diffuse-jax` 0.1.0, JAX) on the same prior,
//! operator, y, noise, σ grid and latents, each scored against the exact posterior.
//!
//! diffuse runs from a throwaway virtualenv (default `target/bench-venvs/diffuse`), created here
//! and filled from `requirements/bench-diffuse.txt` (pinned, hash-checked, no dependency
//! resolution), never the project's `.venv`. The harness is `scripts/diffuse_cond.py`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use serde::Deserialize;
use serde_json::json;
use tweedie_core::process::Edm;
use tweedie_core::rng::normal_rows;
use tweedie_core::{Timer, TimerKind};
use tweedie_samplers::problems::{conditional_problems, posterior_errors, CondProblem};
use tweedie_samplers::{
    CondSampler, Fps, GaussianMixture, GradientGuidance, Guidance, Init, Model, ModelExt,
    SamplerKind,
};

const SCRIPT: &str = include_str!("../scripts/diffuse_cond.py");
/// diffuse, jax and what diffuse's conditional denoisers import, hash-pinned by
/// `requirements/lock.py` (diffuse-jax without its declared flax/optax/matplotlib…).
const REQUIREMENTS: &str = include_str!("../../../requirements/bench-diffuse.txt");
/// The diffuse release the requirements pin; a virtualenv with another one is reinstalled.
const DIFFUSE_VERSION: &str = "0.1.0";

/// Grid of every run: 32 EDM (Karras ρ = 7) steps from σ = 80 to 0.002, then 0.
const STEPS: usize = 32;
/// Seed of tweedie's noise and of the latents (the seed `cond_bias` uses).
const SEED: u64 = 1;

/// Options of `tweedie-bench bench-conditional`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also run diffuse (diffuse-jax 0.1.0: DPS, FPS, TMP) on the same problems.
    #[arg(long)]
    pub with_diffuse: bool,
    /// diffuse's virtualenv, created and filled when missing (default: target/bench-venvs/diffuse of the workspace).
    #[arg(long)]
    pub venv: Option<PathBuf>,
    /// The interpreter that creates that virtualenv.
    #[arg(long, default_value = "python3")]
    pub base_python: PathBuf,
    /// Use the virtualenv as it is: no creation, no pip.
    #[arg(long)]
    pub no_install: bool,
    /// Results folder: conditional.md and the diffuse job (latents, endpoints).
    #[arg(long, default_value = "results/bench-conditional")]
    pub out: PathBuf,
    /// Problems to run, by table number in docs/conditional.md (1–4, comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub problems: Option<Vec<usize>>,
    /// Samples per problem (default: 4000 in 2-D, 1000 in 64-D, as in docs/conditional.md).
    #[arg(long)]
    pub samples: Option<usize>,
}

/// One scored run.
struct Row {
    setting: &'static str,
    method: String,
    nfe: Option<usize>,
    wall_s: Option<f64>,
    samples: Option<Array2<f64>>,
    note: String,
}

/// One diffuse run of the harness (see diffuse_cond.py for `method` and `model`).
struct DiffuseRun {
    id: String,
    setting: &'static str,
    label: &'static str,
    method: &'static str,
    model: &'static str,
    options: serde_json::Value,
}

/// Each method on the EDM grid and on diffuse's own VP SDE, and DPS once with diffuse's EDM class.
fn diffuse_runs() -> Vec<DiffuseRun> {
    let methods = [
        ("dps", "DPS, ζ = 0.01 (default)", "dps", json!({})),
        (
            "dps05",
            "DPS, ζ = 0.5 (authors' scale 1)",
            "dps",
            json!({"zeta": 0.5}),
        ),
        ("fps", "FPS (resampling on)", "fps", json!({})),
        ("tmp", "TMP (tmp.py, exported)", "tmp", json!({})),
        ("tmp3", "TMP, tmp3.py (ζ = 0.1)", "tmp3", json!({})),
        ("tmp2", "TMPD-D, tmp2.py", "tmp2", json!({})),
    ];
    let mut runs = vec![];
    for (setting, model, prefix) in [
        ("diffuse, EDM grid", "edm", ""),
        ("diffuse, own VP SDE", "vp", "vp-"),
    ] {
        for (id, label, method, options) in &methods {
            runs.push(DiffuseRun {
                id: format!("{prefix}{id}"),
                setting,
                label,
                method,
                model,
                options: options.clone(),
            });
        }
    }
    runs.push(DiffuseRun {
        id: "dps-shipped".into(),
        setting: "diffuse, its EDM class",
        label: "DPS, ζ = 0.01",
        method: "dps",
        model: "edm-shipped",
        options: json!({}),
    });
    runs
}

pub fn run(args: Args) -> Result<()> {
    let problems = conditional_problems();
    let chosen: Vec<usize> = match &args.problems {
        Some(list) => {
            for &i in list {
                if i == 0 || i > problems.len() {
                    bail!(
                        "--problems {i}: the problems are numbered 1 to {}",
                        problems.len()
                    );
                }
            }
            list.iter().map(|i| i - 1).collect()
        }
        None => (0..problems.len()).collect(),
    };
    if args.samples == Some(0) {
        bail!("--samples 0: at least one sample per problem");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let process = Edm {
        sigma_min: tweedie_core::defaults::EDM_SIGMA_MIN,
        sigma_max: tweedie_core::defaults::EDM_SIGMA_MAX,
    };
    let grid = TimerKind::edm().grid(&process, STEPS)?;

    let mut rows: Vec<Vec<Row>> = vec![];
    let mut latents = vec![];
    for &i in &chosen {
        let p = &problems[i];
        let n = args.samples.unwrap_or(p.n);
        let x_t = <GaussianMixture as ModelExt<Array2<f64>>>::sample_marginal(
            &p.prior,
            &Array2::zeros((n, p.prior.dim())),
            grid.sigma_tilde[0],
            SEED,
            0,
        )
        .context("the mixture draws its exact p_T")??;
        eprintln!(
            "[bench-conditional] tweedie on problem {}: {}",
            i + 1,
            p.title
        );
        rows.push(tweedie_rows(p, &process, &grid, &x_t)?);
        latents.push(x_t);
    }

    let mut header = String::new();
    if args.with_diffuse {
        match diffuse_python(&args) {
            Ok((python, versions)) => {
                header = format!("diffuse-jax {} on jax {}", versions.diffuse, versions.jax);
                let job = args.out.join("diffuse-job");
                let found = run_diffuse(
                    &python,
                    &job,
                    &problems,
                    &chosen,
                    &latents,
                    &grid.sigma_tilde,
                )?;
                for (k, row) in found {
                    rows[k].push(row);
                }
            }
            Err(e) => {
                eprintln!("[bench-conditional] diffuse skipped: {e:#}");
                header = format!("diffuse skipped: {e:#}");
            }
        }
    }

    let md = report(&problems, &chosen, &rows, &header);
    print!("{md}");
    let path = args.out.join("conditional.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("[bench-conditional] → {}", path.display());
    Ok(())
}

/// tweedie's counterparts, as in `cond_bias` (Heun, 32 EDM steps, seed 1): DPS and TMP start
/// from `x_t` (the same draw as `Init::Exact`), the exact posterior and FPS draw their own x_T
/// given y.
fn tweedie_rows(
    p: &CondProblem,
    process: &Edm,
    grid: &tweedie_core::TimeGrid,
    x_t: &Array2<f64>,
) -> Result<Vec<Row>> {
    let methods: [(&str, Guidance, bool); 5] = [
        ("exact score (noise floor)", Guidance::ExactPosterior, false),
        (
            "DPS (scale 1)",
            Guidance::Gradient(GradientGuidance::Dps { scale: 1.0 }),
            true,
        ),
        (
            "DPS (scale 0.1)",
            Guidance::Gradient(GradientGuidance::Dps { scale: 0.1 }),
            true,
        ),
        (
            "TMP",
            Guidance::Gradient(GradientGuidance::Tmp {
                cg_iters: 50,
                cg_tol: 1e-8,
            }),
            true,
        ),
        ("FPS-SMC (M = 20)", Guidance::from(Fps::default()), false),
    ];
    let mut rows = vec![];
    for (name, guidance, given) in methods {
        let c = CondSampler {
            process,
            grid: grid.clone(),
            kind: SamplerKind::Heun,
            model: &p.prior as &dyn Model<Array2<f64>>,
            op: p.op.as_ref(),
            y: p.y.clone(),
            guidance,
            seed: SEED,
            first_index: 0,
        };
        let init = if given {
            Init::Edm(x_t.clone())
        } else {
            Init::Exact(Array2::zeros(x_t.raw_dim()))
        };
        let t0 = Instant::now();
        let out = c.run(init, None);
        let wall = t0.elapsed().as_secs_f64();
        rows.push(match out {
            Ok(o) => Row {
                setting: "tweedie, EDM grid",
                method: name.into(),
                nfe: Some(o.nfe),
                wall_s: Some(wall),
                samples: Some(o.samples),
                note: String::new(),
            },
            Err(e) => Row {
                setting: "tweedie, EDM grid",
                method: name.into(),
                nfe: None,
                wall_s: None,
                samples: None,
                note: format!("failed: {e}"),
            },
        });
    }
    Ok(rows)
}

#[derive(Debug, Deserialize)]
struct Versions {
    diffuse: String,
    jax: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// Writes the harness and the requirements next to the job files.
fn write_harness(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("diffuse_cond.py");
    std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let req = dir.join("bench-diffuse.txt");
    std::fs::write(&req, REQUIREMENTS).with_context(|| format!("writing {}", req.display()))?;
    Ok((script, req))
}

/// Runs `cmd`, failing with the last lines of its stderr.
fn checked(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        bail!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(out.stdout)
}

fn check(python: &Path, script: &Path) -> Result<Versions> {
    let out = checked(
        Command::new(python).arg(script).arg("check"),
        "importing diffuse",
    )?;
    serde_json::from_slice(&out).context("parsing the harness's check output")
}

/// The virtualenv's interpreter with diffuse importable, creating and filling the virtualenv
/// unless `--no-install`.
fn diffuse_python(args: &Args) -> Result<(PathBuf, Versions)> {
    let venv = args.venv.clone().unwrap_or_else(|| {
        workspace()
            .join("target")
            .join("bench-venvs")
            .join("diffuse")
    });
    let python = venv.join("bin").join("python");
    let (script, req) = write_harness(&args.out.join("diffuse-job"))?;
    if args.no_install {
        if !python.exists() {
            bail!("--no-install and no virtualenv at {}", venv.display());
        }
        return Ok((python.clone(), check(&python, &script)?));
    }
    if !python.exists() {
        eprintln!("[bench-conditional] creating {}", venv.display());
        checked(
            Command::new(&args.base_python)
                .args(["-m", "venv"])
                .arg(&venv),
            &format!("{} -m venv", args.base_python.display()),
        )?;
    }
    match check(&python, &script) {
        Ok(v) if v.diffuse == DIFFUSE_VERSION => return Ok((python, v)),
        Ok(v) => eprintln!(
            "[bench-conditional] diffuse {} found, {DIFFUSE_VERSION} pinned",
            v.diffuse
        ),
        Err(_) => {}
    }
    crate::bench::python::pip_install_lock(&python, &req)?;
    let v = check(&python, &script)?;
    Ok((python, v))
}

#[derive(Debug, Deserialize)]
struct DiffuseResult {
    problem: String,
    id: String,
    endpoint: Option<String>,
    error: Option<String>,
    #[serde(default)]
    nfe: usize,
    #[serde(default)]
    wall_s: f64,
    #[serde(default)]
    compile_s: f64,
    #[serde(default)]
    grid_max_rel_diff: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct DiffuseResults {
    runs: Vec<DiffuseResult>,
}

/// Writes the job (problems, latents, standard-normal starts for the VP runs, the σ grid
/// without its final 0), runs the harness, reads the endpoints back: (table index, row).
fn run_diffuse(
    python: &Path,
    dir: &Path,
    problems: &[CondProblem],
    chosen: &[usize],
    latents: &[Array2<f64>],
    sigma_tilde: &[f64],
) -> Result<Vec<(usize, Row)>> {
    let runs = diffuse_runs();
    let mut jprobs = vec![];
    for (&i, x_t) in chosen.iter().zip(latents) {
        let p = &problems[i];
        let a = p.op.matrix().context("the operator as a matrix")?;
        let lat = format!("p{}_latents.npy", i + 1);
        let noise = format!("p{}_noise.npy", i + 1);
        ndarray_npy::write_npy(dir.join(&lat), x_t).context("writing latents")?;
        let eps = normal_rows(SEED, 0, x_t.nrows(), 7, x_t.ncols());
        ndarray_npy::write_npy(dir.join(&noise), &eps).context("writing noise")?;
        jprobs.push(json!({
            "id": format!("p{}", i + 1),
            "mixture": p.prior.to_spec(),
            "a": a.rows().into_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
            "noise_std": p.op.noise_std(),
            "y": p.y.to_vec(),
            "latents": lat,
            "noise": noise,
        }));
    }
    let grid: Vec<f64> = sigma_tilde.iter().copied().filter(|s| *s > 0.0).collect();
    let job = json!({
        "grid": grid,
        "problems": jprobs,
        "runs": runs
            .iter()
            .map(|r| json!({"id": r.id, "method": r.method, "model": r.model, "options": r.options}))
            .collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("job.json"), serde_json::to_vec_pretty(&job)?)
        .context("writing job.json")?;
    let status = Command::new(python)
        .arg(dir.join("diffuse_cond.py"))
        .arg("run")
        .arg(dir)
        .env("OMP_NUM_THREADS", "1")
        .env(
            "XLA_FLAGS",
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        )
        .env("JAX_PLATFORMS", "cpu")
        .status()
        .with_context(|| format!("running {}", python.display()))?;
    if !status.success() {
        bail!("the diffuse harness exited with {status}");
    }
    let text = std::fs::read(dir.join("results.json")).context("reading results.json")?;
    let res: DiffuseResults = serde_json::from_slice(&text).context("parsing results.json")?;
    let mut out = vec![];
    for r in res.runs {
        let Some(k) = chosen
            .iter()
            .position(|&i| format!("p{}", i + 1) == r.problem)
        else {
            continue;
        };
        let Some(spec) = runs.iter().find(|s| s.id == r.id) else {
            continue;
        };
        let samples = match &r.endpoint {
            Some(rel) => Some(
                ndarray_npy::read_npy::<_, Array2<f64>>(dir.join(rel))
                    .with_context(|| format!("reading {rel}"))?,
            ),
            None => None,
        };
        let mut note = match (&r.error, r.grid_max_rel_diff) {
            (Some(e), _) => format!("failed: {e}"),
            (None, Some(d)) => format!("compile {:.1} s; grid within {d:.0e}", r.compile_s),
            (None, None) => format!("compile {:.1} s", r.compile_s),
        };
        if samples.is_none() && r.error.is_none() {
            note = "no endpoint".into();
        }
        out.push((
            k,
            Row {
                setting: spec.setting,
                method: spec.label.into(),
                nfe: r.error.is_none().then_some(r.nfe),
                wall_s: r.error.is_none().then_some(r.wall_s),
                samples,
                note,
            },
        ));
    }
    Ok(out)
}

/// Fraction of rows with a non-finite coordinate or one beyond 10³ (the priors live within
/// |x| < 10): a run with more than 1 % of them is reported as diverged, not scored.
fn diverged(x: &Array2<f64>) -> f64 {
    let bad = x
        .rows()
        .into_iter()
        .filter(|r| r.iter().any(|v| !v.is_finite() || v.abs() > 1e3))
        .count();
    bad as f64 / x.nrows().max(1) as f64
}

/// An error column; "diverges" for non-finite samples or an error above 10⁴.
fn fmt_err(v: f64) -> String {
    if v.is_finite() && v <= 1e4 {
        format!("{v:.3}")
    } else {
        "diverges".into()
    }
}

fn report(problems: &[CondProblem], chosen: &[usize], rows: &[Vec<Row>], header: &str) -> String {
    let mut s = String::new();
    if !header.is_empty() {
        s.push_str(&format!("{header}\n"));
    }
    for (k, &i) in chosen.iter().enumerate() {
        let p = &problems[i];
        let post: GaussianMixture = match p.op.matrix().and_then(|a| {
            p.prior
                .posterior(&a, &p.y, p.op.noise_std())
                .map_err(|e| tweedie_samplers::SamplerError::Unsupported(e.to_string()))
        }) {
            Ok(m) => m,
            Err(e) => {
                s.push_str(&format!("\n#### {}\n\nno exact posterior: {e}\n", p.title));
                continue;
            }
        };
        let w: Vec<String> = post.weights().iter().map(|w| format!("{w:.3}")).collect();
        let n = rows[k]
            .iter()
            .find_map(|r| r.samples.as_ref().map(|x| x.nrows()))
            .unwrap_or(0);
        s.push_str(&format!(
            "\n#### {}\n\nexact posterior weights: {w:?}; n = {n}; Heun, 32 EDM steps (diffuse: 31 Heun steps to σ = 0.002 on its HeunTimer, the same points)\n\n",
            p.title
        ));
        s.push_str("| run | method | NFE | wall time | max abs weight error | max mean error (÷ posterior std) | max rel. cov error (Frobenius) | sample weights | notes |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for r in &rows[k] {
            let nfe = r.nfe.map_or("–".into(), |v| v.to_string());
            let wall = r.wall_s.map_or("–".into(), |v| format!("{v:.2} s"));
            let cols = match &r.samples {
                Some(x) if diverged(x) > 0.01 => {
                    format!(
                        "diverges | diverges | diverges | {:.0} % of rows beyond 10³",
                        100.0 * diverged(x)
                    )
                }
                Some(x) => {
                    let e = posterior_errors(x, &post);
                    let ws: Vec<String> = e.weights.iter().map(|w| format!("{w:.3}")).collect();
                    // posterior_errors scores the moments of the posterior's components of
                    // weight ≥ 5 % that hold ≥ 20 samples; with none, there is nothing to score.
                    let scored = post
                        .weights()
                        .iter()
                        .zip(&e.weights)
                        .any(|(w, v)| *w >= 0.05 && (v * x.nrows() as f64).round() >= 20.0);
                    let (m, c) = if scored {
                        (fmt_err(e.mean), fmt_err(e.cov))
                    } else {
                        ("none in the modes".into(), "–".into())
                    };
                    format!("{} | {m} | {c} | {ws:?}", fmt_err(e.weight))
                }
                None => "– | – | – | –".into(),
            };
            s.push_str(&format!(
                "| {} | {} | {nfe} | {wall} | {cols} | {} |\n",
                r.setting, r.method, r.note
            ));
        }
    }
    s
}
