//! `cargo xtask setup`: libtorch for tch from PyTorch's wheels, in a project-local
//! virtualenv, plus the digits data set.
//!
//! Layout (relative to the workspace root):
//! - `.venv/`: virtualenv made with the system `python3 -m venv`;
//! - `.venv/torch`: symlink to the venv's `torch` package; the `[env] LIBTORCH` of
//!   `.cargo/config.toml` points here;
//! - `.venv/share/tweedie/digits.csv.gz`: scikit-learn's 8×8 digits (1,797 rows of 64
//!   pixels 0–16 and a label), taken from the scikit-learn wheel;
//! - `.venv/pip-install.log`: pip's full output of the last install.
//!
//! For tweedie-dist's c10d shim it also installs gloo's headers (Debian `libgloo-dev`; the
//! wheel lacks them) and, on CUDA wheels, the CUDA C runtime headers the NCCL headers need
//! (`nvidia-cuda-crt`, pinned), with a clear message where it cannot.
//!
//! Every pip install reads a hash-pinned lock of `requirements/` (see [`crate::locks`]):
//! `setup.txt` (torch, numpy and their 28 dependencies), `cuda-headers.txt`, `digits.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::locks;
use crate::run::{capture, logged, step};

/// The PyTorch release whose libtorch tch 0.26 is written against.
pub const TORCH_VERSION: &str = "2.13.0";

/// Where the trainer finds the digits data, relative to the workspace root.
pub const DIGITS_PATH: &str = ".venv/share/tweedie/digits.csv.gz";

/// Where the digits data sits inside the scikit-learn wheel.
const DIGITS_IN_WHEEL: &str = "sklearn/datasets/data/digits.csv.gz";

/// Makes sure libtorch and the data are in place; fast (no process started) when they are.
pub fn run(root: &Path) -> Result<()> {
    let venv = root.join(".venv");
    let digits = root.join(DIGITS_PATH);

    if let Some(source) = user_libtorch(root) {
        println!("xtask: using the libtorch of {source}; not touching .venv");
        if !digits.is_file() {
            // The data is a convenience here: the user manages their own environment.
            if let Err(err) = fetch_digits(root, &venv, &digits) {
                println!("xtask: warning: could not fetch the digits data: {err:#}");
            }
        }
        return Ok(());
    }

    let link = venv.join("torch");
    if let Some(version) = installed_torch_version(&link) {
        if version_matches(&version) && has_libtorch(&link) && digits.is_file() {
            dist_prerequisites(root, &venv_python(&venv), &link);
            println!("xtask: set-up ok (torch {version} in .venv, digits data present)");
            return Ok(());
        }
    }

    step("setting up .venv (libtorch from PyTorch wheels; first time: a few minutes)");
    let python = venv_python(&venv);
    if !python.is_file() || !pip_works(&python) {
        create_venv(&venv)?;
    }
    let torch_dir = match torch_package_dir(&python)? {
        Some(dir)
            if read_torch_version(&dir)
                .as_deref()
                .is_some_and(version_matches) =>
        {
            dir
        }
        _ => {
            install_torch(root, &python, &venv)?;
            torch_package_dir(&python)?
                .context("pip reported success but the virtualenv has no torch package")?
        }
    };
    link_torch(&venv, &torch_dir)?;
    if !has_libtorch(&link) {
        bail!(
            "{} has no lib/libtorch_cpu: the installed torch package is not usable by tch",
            link.display()
        );
    }
    if !digits.is_file() {
        fetch_digits(root, &venv, &digits)?;
    }
    dist_prerequisites(root, &python, &link);
    let version = installed_torch_version(&link).unwrap_or_else(|| TORCH_VERSION.to_string());
    println!("xtask: set-up done: torch {version} in .venv, LIBTORCH = .venv/torch, data in {DIGITS_PATH}");
    Ok(())
}

/// What tweedie-dist's shim needs beyond the wheel. Failures are warnings: without gloo
/// the shim builds without Gloo (and says so when used); without the crt headers, without NCCL.
///
/// The CUDA C runtime (`crt/host_config.h`) and CCCL (`nv/target`) headers, locked in
/// `requirements/cuda-headers.txt`, match the CUDA 13.0 runtime of the torch wheel:
/// `cuda_runtime.h` and `cuda_fp16.h`, included by ProcessGroupNCCL.hpp, need them; the
/// runtime wheel lacks them.
fn dist_prerequisites(root: &Path, python: &Path, torch: &Path) {
    if !gloo_headers_present() {
        if let Err(err) = install_gloo_headers() {
            println!(
                "xtask: warning: gloo headers not found and not installed ({err:#}); \
                 distributed training needs them: install Debian/Ubuntu `libgloo-dev` \
                 (or set GLOO_INCLUDE_DIR to a folder holding gloo/config.h)"
            );
        }
    }
    if torch.join("lib/libtorch_cuda.so").is_file() && !crt_headers_present(torch) {
        let lock = locks::path(root, "cuda-headers");
        step(&format!(
            "pip install --require-hashes -r {} (CUDA headers for the NCCL process group)",
            shown(root, &lock)
        ));
        let mut args = locks::pip_args("install", &lock);
        args.push("-q".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(err) = capture(python, &args) {
            println!(
                "xtask: warning: the CUDA headers of {} not installed ({err:#}); \
                 tweedie-dist builds without NCCL",
                shown(root, &lock)
            );
        }
    }
}

fn gloo_headers_present() -> bool {
    ["/usr/include", "/usr/local/include"]
        .iter()
        .any(|d| Path::new(d).join("gloo/config.h").is_file())
        || std::env::var_os("GLOO_INCLUDE_DIR")
            .is_some_and(|d| Path::new(&d).join("gloo/config.h").is_file())
}

/// `apt-get install libgloo-dev`, as root or through sudo.
fn install_gloo_headers() -> Result<()> {
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("no apt-get on this system");
    }
    let root = capture(Path::new("id"), &["-u"]).is_ok_and(|u| u.trim() == "0");
    let prefix: &[&str] = if root { &[] } else { &["sudo", "-n"] };
    step("apt-get install libgloo-dev (gloo headers for the c10d shim)");
    let run = |args: &[&str]| -> Result<()> {
        let all: Vec<&str> = prefix.iter().chain(args).copied().collect();
        let status = Command::new(all[0])
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("cannot run {}", all[0]))?;
        if !status.success() {
            bail!("`{}` failed ({status})", all.join(" "));
        }
        Ok(())
    };
    run(&["apt-get", "update", "-qq"])?;
    run(&[
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "libgloo-dev",
    ])
}

/// Whether the `nvidia/*/include` folders next to the torch package hold `crt/host_config.h`
/// and `nv/target` (directly or under `cccl/`).
fn crt_headers_present(torch: &Path) -> bool {
    let Some(site) = torch
        .canonicalize()
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
    else {
        return false;
    };
    let includes: Vec<PathBuf> = std::fs::read_dir(site.join("nvidia"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("include"))
                .collect()
        })
        .unwrap_or_default();
    let has = |rel: &str| {
        includes
            .iter()
            .any(|d| d.join(rel).is_file() || d.join("cccl").join(rel).is_file())
    };
    has("crt/host_config.h") && has("nv/target")
}

/// A libtorch chosen by the user, described for a message, or `None` for ours.
///
/// `cargo xtask` itself runs with the `[env] LIBTORCH` of `.cargo/config.toml`
/// (= `<root>/.venv/torch`), so a LIBTORCH equal to that path is ours, not the user's.
fn user_libtorch(root: &Path) -> Option<String> {
    if let Some(v) = std::env::var_os("LIBTORCH_USE_PYTORCH").filter(|v| !v.is_empty()) {
        return Some(format!(
            "the python on PATH (LIBTORCH_USE_PYTORCH={})",
            v.to_string_lossy()
        ));
    }
    let libtorch = PathBuf::from(std::env::var_os("LIBTORCH").filter(|v| !v.is_empty())?);
    let ours = root.join(".venv").join("torch");
    let same = libtorch == ours
        || matches!(
            (libtorch.canonicalize(), ours.canonicalize()),
            (Ok(a), Ok(b)) if a == b
        );
    (!same).then(|| format!("LIBTORCH={}", libtorch.display()))
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

fn version_matches(version: &str) -> bool {
    // Local build tags (+cu130, +cpu) do not change the C++ API.
    version.split('+').next() == Some(TORCH_VERSION)
}

/// The torch version behind `.venv/torch`, read from its `version.py` (no Python started).
fn installed_torch_version(link: &Path) -> Option<String> {
    read_torch_version(link)
}

fn read_torch_version(torch_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(torch_dir.join("version.py")).ok()?;
    text.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("__version__")?
            .trim_start()
            .strip_prefix('=')?;
        Some(
            value
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string(),
        )
    })
}

/// Whether `torch_dir/lib` holds the libtorch shared libraries tch links.
fn has_libtorch(torch_dir: &Path) -> bool {
    std::fs::read_dir(torch_dir.join("lib")).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("libtorch_cpu"))
    })
}

fn pip_works(python: &Path) -> bool {
    Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python 3 interpreter from PATH (`TWEEDIE_PYTHON` overrides).
fn system_python() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("TWEEDIE_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec!["python3".into(), "python".into()],
    };
    for candidate in &candidates {
        if let Ok(major) = capture(candidate, &["-c", "import sys; print(sys.version_info[0])"]) {
            if major == "3" {
                return Ok(candidate.clone());
            }
        }
    }
    let tried: Vec<String> = candidates
        .iter()
        .map(|c| format!("`{}`", c.display()))
        .collect();
    bail!(
        "no Python 3 interpreter found (tried {}). tweedie installs libtorch {TORCH_VERSION} \
         from PyTorch's wheels into .venv and needs Python 3 with the venv module for that \
         (e.g. `apt install python3 python3-venv`). Alternatively point LIBTORCH at an \
         existing libtorch {TORCH_VERSION}.",
        tried.join(" and ")
    )
}

fn create_venv(venv: &Path) -> Result<()> {
    let python = system_python()?;
    println!("xtask: creating .venv with `{} -m venv`", python.display());
    let existed = venv.exists();
    let venv_str = venv.to_string_lossy();
    let result = capture(&python, &["-m", "venv", &venv_str]).map(|_| ());
    if let Err(err) = result {
        if !existed {
            let _ = std::fs::remove_dir_all(venv);
        }
        return Err(err.context(
            "cannot create the virtualenv .venv; on Debian/Ubuntu install the venv module \
             (`apt install python3-venv`)",
        ));
    }
    if !pip_works(&venv_python(venv)) {
        bail!("the new virtualenv .venv has no working pip (python -m pip failed); install python3-venv / ensurepip");
    }
    Ok(())
}

/// A path for messages: relative to the workspace root when inside it.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Installs `requirements/setup.txt` (torch TORCH_VERSION, numpy and every dependency, each
/// wheel's sha256 checked) into the virtualenv, with progress lines. Off the locked platform
/// (Linux x86_64) the lock's dependency set does not apply: the `==` pins of `setup.in` are
/// installed without hashes, with a warning.
fn install_torch(root: &Path, python: &Path, venv: &Path) -> Result<()> {
    let args = if locks::LOCKED_PLATFORM {
        let lock = locks::path(root, "setup");
        let pins = locks::read(root, "setup")?;
        println!(
            "xtask: pip install --require-hashes -r {} (torch {TORCH_VERSION} and {} more packages, \
             every wheel's sha256 checked; about 2 minutes and 5 GB with the CUDA wheels)",
            shown(root, &lock),
            pins.len().saturating_sub(1)
        );
        locks::pip_args("install", &lock)
    } else {
        let input = root.join(locks::DIR).join("setup.in");
        println!(
            "xtask: warning: the hash locks of {}/ are resolved for Linux x86_64; installing \
             the pinned versions of {} without hash checking",
            locks::DIR,
            shown(root, &input)
        );
        [
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-r",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([input.to_string_lossy().into_owned()])
        .collect()
    };
    logged(python, &args, &venv.join("pip-install.log"), pip_progress)
        .context("installing torch into .venv failed")
}

/// The lines of pip's output worth showing while it runs, shortened: what is being
/// collected (not why), big downloads, how many packages get installed, errors.
fn pip_progress(line: &str) -> Option<String> {
    let l = line.trim();
    if let Some(rest) = l.strip_prefix("Collecting ") {
        let what = rest.split(" (from ").next().unwrap_or(rest);
        return Some(format!("collecting {what}"));
    }
    if let Some(rest) = l.strip_prefix("Downloading ") {
        // "name.whl (526.6 MB)": only downloads of 100 MB or more are worth a line.
        let big = rest
            .rsplit_once(" (")
            .and_then(|(_, size)| size.strip_suffix(" MB)"))
            .and_then(|mb| mb.parse::<f64>().ok())
            .is_some_and(|mb| mb >= 100.0);
        return big.then(|| format!("downloading {rest}"));
    }
    if let Some(rest) = l.strip_prefix("Installing collected packages: ") {
        let n = rest.split(',').count();
        return Some(format!("installing {n} packages (the slow part)"));
    }
    if l.starts_with("Successfully installed") {
        return Some("installed".to_string());
    }
    l.starts_with("ERROR").then(|| l.to_string())
}

/// The venv's torch package folder, found without importing torch (which takes seconds).
fn torch_package_dir(python: &Path) -> Result<Option<PathBuf>> {
    let out = capture(
        python,
        &[
            "-c",
            "import importlib.util as u; s = u.find_spec('torch'); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
        ],
    )?;
    Ok((!out.is_empty()).then(|| PathBuf::from(out)))
}

/// Points `.venv/torch` at the torch package (relative when inside the venv, so the venv
/// can be moved with its workspace).
fn link_torch(venv: &Path, torch_dir: &Path) -> Result<()> {
    let link = venv.join("torch");
    let venv_abs = venv.canonicalize().unwrap_or_else(|_| venv.to_path_buf());
    let target = torch_dir
        .strip_prefix(&venv_abs)
        .or_else(|_| torch_dir.strip_prefix(venv))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| torch_dir.to_path_buf());
    match std::fs::symlink_metadata(&link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                return Ok(());
            }
            std::fs::remove_file(&link)
                .with_context(|| format!("cannot replace {}", link.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a symlink; move it away so the set-up can link the torch package there",
            link.display()
        ),
        Err(_) => {}
    }
    symlink_dir(&target, &link)
        .with_context(|| format!("cannot link {} -> {}", link.display(), target.display()))
}

#[cfg(unix)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(target, link)
}

/// Takes `digits.csv.gz` out of the scikit-learn wheel (a zip) without installing
/// scikit-learn and its dependencies.
///
/// The wheel is checked against `requirements/digits.txt` (every wheel of the release is
/// hashed there, so this works on any platform).
fn fetch_digits(root: &Path, venv: &Path, dest: &Path) -> Result<()> {
    step("fetching the digits data set from the scikit-learn wheel");
    let python = match venv_python(venv) {
        p if p.is_file() => p,
        _ => system_python()?,
    };
    let tmp = std::env::temp_dir().join(format!("tweedie-sklearn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| {
        let log = tmp.join("pip-download.log");
        let mut args = locks::pip_args("download", &locks::path(root, "digits"));
        args.extend(["--dest".to_string(), tmp.to_string_lossy().into_owned()]);
        logged(&python, &args, &log, pip_progress)
            .context("downloading the scikit-learn wheel failed")?;
        let wheel = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .context("pip download produced no scikit-learn wheel")?;
        let parent = dest.parent().context("digits path has no parent")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // Written next to the destination, then renamed: never a half-written file.
        let partial = dest.with_extension("gz.partial");
        capture(
            &python,
            &[
                "-c",
                "import sys, zipfile\n\
                 with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as f:\n    \
                 f.write(z.read(sys.argv[2]))",
                &wheel.to_string_lossy(),
                DIGITS_IN_WHEEL,
                &partial.to_string_lossy(),
            ],
        )
        .with_context(|| format!("cannot extract {DIGITS_IN_WHEEL} from {}", wheel.display()))?;
        let bytes = std::fs::read(&partial)?;
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            bail!("{DIGITS_IN_WHEEL} in {} is not gzip data", wheel.display());
        }
        std::fs::rename(&partial, dest)
            .with_context(|| format!("cannot move the data to {}", dest.display()))?;
        println!(
            "xtask: digits data ({} bytes) in {}",
            bytes.len(),
            dest.strip_prefix(root).unwrap_or(dest).display()
        );
        Ok(())
    })();
    // On failure the folder stays: the error points at its pip log.
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_versions_with_local_tags_match() {
        assert!(version_matches("2.13.0"));
        assert!(version_matches("2.13.0+cu130"));
        assert!(version_matches("2.13.0+cpu"));
        assert!(!version_matches("2.13.1"));
        assert!(!version_matches("2.1.0+cu118"));
    }

    #[test]
    fn pip_progress_is_short() {
        assert_eq!(
            pip_progress("Collecting sympy>=1.13.3 (from torch==2.13.0)").as_deref(),
            Some("collecting sympy>=1.13.3")
        );
        assert_eq!(
            pip_progress(
                "  Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (526.6 MB)"
            )
            .as_deref(),
            Some("downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (526.6 MB)")
        );
        assert_eq!(
            pip_progress("  Downloading jinja2-3.1.6-py3-none-any.whl (134 kB)"),
            None
        );
        assert_eq!(
            pip_progress("Installing collected packages: a, b, c").as_deref(),
            Some("installing 3 packages (the slow part)")
        );
        assert_eq!(pip_progress("Requirement already satisfied: numpy"), None);
        assert!(pip_progress("ERROR: No matching distribution").is_some());
    }

    #[test]
    fn reads_version_py() {
        let dir = std::env::temp_dir().join(format!("xtask-version-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("version.py"),
            "x = 1\n__version__ = '2.13.0+cu130'\n",
        )
        .unwrap();
        assert_eq!(read_torch_version(&dir).as_deref(), Some("2.13.0+cu130"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_torch_version(&dir), None);
    }
}
