//! The side-by-side part: drives `crates/tweedie-bench/scripts/reference.py` (k-diffusion and diffusers
//! on the same exact mixture denoiser, written in PyTorch) from the project's virtualenv.
//!
//! The script is compiled into the binary and written next to each job, so the bench runs
//! from any working directory. Every failure here is a reason to skip, never a crash.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use tweedie_core::mixture::GaussianMixture;

/// The harness, as committed in scripts/.
const REFERENCE_PY: &str = include_str!("../../scripts/reference.py");

/// The reference libraries and what they need, as hash-pinned locks made by
/// `requirements/lock.py` (a benchmark compares against fixed reference code, and installs
/// nothing it has not checked): k-diffusion without its dependencies (wandb, clip,
/// torchvision…, which sampling.py does not use) plus the ones it does use; diffusers with its
/// dependencies. Both go on top of the set-up's `requirements/setup.txt` (torch, numpy).
const KDIFFUSION_LOCK: Lock = Lock {
    file: "bench-kdiffusion.txt",
    text: include_str!("../../../../requirements/bench-kdiffusion.txt"),
};
const DIFFUSERS_LOCK: Lock = Lock {
    file: "bench-diffusers.txt",
    text: include_str!("../../../../requirements/bench-diffusers.txt"),
};

/// A lock file compiled into the binary (written next to the job, like the script).
struct Lock {
    file: &'static str,
    text: &'static str,
}

/// pip's options for installing exactly a lock: every wheel's sha256 checked, nothing
/// resolved, no source builds.
const PIP_LOCKED: [&str; 3] = ["--require-hashes", "--no-deps", "--only-binary=:all:"];

/// A python interpreter with torch, and which reference libraries import there.
#[derive(Debug, Clone)]
pub struct Harness {
    pub python: PathBuf,
    pub kdiffusion: Option<String>,
    pub diffusers: Option<String>,
    pub torch: String,
}

#[derive(Debug, Deserialize)]
struct CheckOut {
    torch: String,
    #[serde(rename = "k-diffusion")]
    kdiffusion: Option<String>,
    #[serde(rename = "k-diffusion-error")]
    kdiffusion_error: Option<String>,
    diffusers: Option<String>,
    #[serde(rename = "diffusers-error")]
    diffusers_error: Option<String>,
}

/// The virtualenv's python: `explicit`, else the project's own `.venv/bin/python` (of the
/// workspace this binary was built from). Never a `.venv` of the working directory: pip would
/// install into whatever project the user happens to stand in.
pub fn find_python(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    Some(workspace.join(".venv").join("bin").join("python")).filter(|p| p.exists())
}

fn write_script(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("reference.py");
    std::fs::write(&path, REFERENCE_PY).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn check(python: &Path, script: &Path) -> Result<CheckOut> {
    let out = Command::new(python)
        .arg(script)
        .arg("check")
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "`{} reference.py check` failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the harness's check output")
}

/// [`pip_install_lock`] of a lock compiled into the binary, written into `work` first.
fn pip(python: &Path, lock: &Lock, work: &Path) -> Result<()> {
    let path = work.join(lock.file);
    std::fs::write(&path, lock.text).with_context(|| format!("writing {}", path.display()))?;
    pip_install_lock(python, &path)
}

/// `pip install --require-hashes --no-deps --only-binary=:all: -r <lock>` in `python`'s
/// environment (every benchmark's one pip call); fails with the last lines of pip's stderr.
pub(crate) fn pip_install_lock(python: &Path, lock: &Path) -> Result<()> {
    let path = lock.to_string_lossy().into_owned();
    let mut args: Vec<&str> = PIP_LOCKED.to_vec();
    args.extend(["-r", &path]);
    eprintln!(
        "[bench] {} -m pip install {}",
        python.display(),
        args.join(" ")
    );
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(&args)
        .output()
        .with_context(|| format!("running pip from {}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        bail!(
            "pip install {} failed: {}",
            args.join(" "),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}

/// Finds the interpreter and makes k-diffusion and diffusers importable (installing them into
/// that environment when `install`); `Err` carries the reason the side-by-side part is skipped.
pub fn prepare(explicit: Option<&Path>, install: bool, work: &Path) -> Result<Harness> {
    let python = find_python(explicit).context(
        "no virtualenv python (.venv/bin/python; run `cargo xtask setup` or pass --python)",
    )?;
    let script = write_script(work)?;
    let mut st = check(&python, &script)?;
    if install && st.kdiffusion.is_none() {
        if let Err(e) = pip(&python, &KDIFFUSION_LOCK, work) {
            eprintln!("[bench] could not install k-diffusion: {e:#}");
        }
    }
    if install && st.diffusers.is_none() {
        if let Err(e) = pip(&python, &DIFFUSERS_LOCK, work) {
            eprintln!("[bench] could not install diffusers: {e:#}");
        }
    }
    if install {
        st = check(&python, &script)?;
    }
    if st.kdiffusion.is_none() && st.diffusers.is_none() {
        bail!(
            "neither k-diffusion ({}) nor diffusers ({}) imports",
            st.kdiffusion_error.as_deref().unwrap_or("not installed"),
            st.diffusers_error.as_deref().unwrap_or("not installed")
        );
    }
    Ok(Harness {
        python,
        kdiffusion: st.kdiffusion,
        diffusers: st.diffusers,
        torch: st.torch,
    })
}

/// The σ grid a run uses, and how it was built (the diffusers EDM schedulers rebuild it).
#[derive(Debug, Clone, Serialize)]
pub struct GridSpec {
    pub kind: &'static str,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    pub steps: usize,
}

/// One reference run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSpec {
    pub id: String,
    pub lib: &'static str,
    pub sampler: String,
    pub sigmas: Vec<f64>,
    pub grid: GridSpec,
    pub seed: u64,
    pub options: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct GaussianJson {
    variance: f64,
}

#[derive(Debug, Serialize)]
struct JobJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mixture: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gaussian: Option<GaussianJson>,
    /// The shape each latent row is handed to the samplers in (e.g. [3, 32, 32]).
    #[serde(skip_serializing_if = "Option::is_none")]
    shape: Option<&'a [usize]>,
    latents: &'a str,
    threads: usize,
    repeats: usize,
    runs: &'a [RunSpec],
}

/// What the harness measured for one run.
#[derive(Debug, Clone, Deserialize)]
pub struct RunResult {
    pub id: String,
    pub lib: String,
    pub sampler: String,
    pub steps: usize,
    #[serde(default)]
    pub nfe: usize,
    #[serde(default)]
    pub wall_s: f64,
    #[serde(default)]
    pub model_s: f64,
    #[serde(default)]
    pub grid_max_rel_diff: f64,
    #[serde(default)]
    pub notes: String,
    pub endpoint: Option<String>,
    pub error: Option<String>,
    pub skipped: Option<String>,
    /// Endpoints `[N, D]`, read back from `endpoint`.
    #[serde(skip)]
    pub x0: Option<Array2<f64>>,
}

#[derive(Debug, Deserialize)]
struct ResultsJson {
    runs: Vec<RunResult>,
}

/// Writes the job (mixture, latents, runs) into `dir`, runs the harness, reads the endpoints.
pub fn run(
    h: &Harness,
    dir: &Path,
    mixture: &GaussianMixture,
    latents: &Array2<f64>,
    runs: &[RunSpec],
    threads: usize,
) -> Result<Vec<RunResult>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("mixture.json"),
        serde_json::to_vec(&mixture.to_spec())?,
    )
    .context("writing mixture.json")?;
    let job = JobJson {
        mixture: Some("mixture.json"),
        gaussian: None,
        shape: None,
        latents: "latents.npy",
        threads,
        repeats: 2,
        runs,
    };
    run_job(h, dir, &job, latents)
}

/// The same with the prior N(0, variance·I) as the model and each latent row handed to the
/// samplers as an array of `shape` (the overhead case's images).
pub fn run_gaussian(
    h: &Harness,
    dir: &Path,
    variance: f64,
    shape: &[usize],
    latents: &Array2<f64>,
    runs: &[RunSpec],
    threads: usize,
) -> Result<Vec<RunResult>> {
    let job = JobJson {
        mixture: None,
        gaussian: Some(GaussianJson { variance }),
        shape: Some(shape),
        latents: "latents.npy",
        threads,
        repeats: 2,
        runs,
    };
    run_job(h, dir, &job, latents)
}

fn run_job(
    h: &Harness,
    dir: &Path,
    job: &JobJson,
    latents: &Array2<f64>,
) -> Result<Vec<RunResult>> {
    let script = write_script(dir)?;
    ndarray_npy::write_npy(dir.join("latents.npy"), latents).context("writing latents.npy")?;
    std::fs::write(dir.join("job.json"), serde_json::to_vec(job)?).context("writing job.json")?;
    let mut cmd = Command::new(&h.python);
    cmd.arg(&script).arg("run").arg(dir);
    // The Python side gets this process's allocator settings (tweedie_nets::device::
    // retain_freed_memory), so both sides' overheads are measured on the same malloc.
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        if let Some(tunables) = tweedie_nets::device::retained_memory_tunables() {
            cmd.env("GLIBC_TUNABLES", tunables);
        }
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", h.python.display()))?;
    if !status.success() {
        bail!("the reference harness exited with {status}");
    }
    let text = std::fs::read(dir.join("results.json")).context("reading results.json")?;
    let mut res: ResultsJson = serde_json::from_slice(&text).context("parsing results.json")?;
    for r in &mut res.runs {
        if let Some(rel) = &r.endpoint {
            let a: Array2<f64> = ndarray_npy::read_npy(dir.join(rel))
                .with_context(|| format!("reading endpoint {rel}"))?;
            if a.dim() != latents.dim() {
                bail!(
                    "endpoint {rel} has shape {:?}, latents {:?}",
                    a.dim(),
                    latents.dim()
                );
            }
            r.x0 = Some(a);
        }
    }
    Ok(res.runs)
}
