//! Build-script helper for crates that link libtorch through `tch`.
//!
//! Two problems with a plain tch build, both fixed here at link time:
//!
//! - torch-sys adds no rpath, so binaries fail at start-up with "libtorch_cpu.so: cannot
//!   open shared object file" unless the user sets `LD_LIBRARY_PATH`;
//! - nothing in the binary references a `libtorch_cuda.so` symbol directly, so linkers
//!   that default to `--as-needed` drop it and CUDA silently reports unavailable
//!   (tch-rs issues 177, 182, 291, 980).
//!
//! torch-sys (`links = "tch"`) publishes its library folder as `cargo:libtorch_lib=`;
//! cargo hands it as `DEP_TCH_LIBTORCH_LIB` only to build scripts of packages that
//! depend on torch-sys *directly*, and `cargo:rustc-link-arg` only reaches that package's
//! own binaries, tests, examples and benches. So every package that links tch lists
//! torch-sys as a dependency and calls [`link_libtorch`] from its `build.rs`:
//!
//! ```text
//! fn main() {
//!     tweedie_build::link_libtorch();
//! }
//! ```
//!
//! What it tells the linker, for a CUDA libtorch on Linux and on macOS:
//!
//! ```
//! use std::path::PathBuf;
//! use tweedie_build::{link_args, Libtorch};
//!
//! let info = Libtorch {
//!     lib_dir: PathBuf::from("/opt/libtorch/lib"),
//!     cuda: true,
//!     version: Some("2.13.0".into()),
//! };
//! assert_eq!(
//!     link_args(&info, "linux"),
//!     ["-Wl,-rpath,/opt/libtorch/lib", "-Wl,--no-as-needed", "-ltorch_cuda", "-Wl,--as-needed"]
//! );
//! assert_eq!(link_args(&info, "macos"), ["-Wl,-rpath,/opt/libtorch/lib"]);
//! ```

use std::env;
use std::path::{Path, PathBuf};

/// What [`link_libtorch`] found and told cargo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libtorch {
    /// The folder holding libtorch_cpu.so (and libtorch_cuda.so on CUDA builds).
    pub lib_dir: PathBuf,
    /// Whether libtorch_cuda was found there and is linked with `--no-as-needed`.
    pub cuda: bool,
    /// The libtorch version read from the installation (`version.py` of a PyTorch
    /// package or `build-version` of a standalone libtorch), if any.
    pub version: Option<String>,
}

/// Emit the link arguments for this package's binaries and tests: an rpath to the
/// libtorch folder and, when it has one, a forced `libtorch_cuda` dependency.
///
/// Also exports `TWEEDIE_LIBTORCH_VERSION`, `TWEEDIE_LIBTORCH_LIB` and
/// `TWEEDIE_LIBTORCH_CUDA` (`1` or `0`) to the crate (`option_env!`), which the CLI prints
/// in `tweedie info`. Returns `None` (and
/// emits nothing) when torch-sys published no folder, e.g. when the package was built
/// without its `tch` feature, or on Windows where torch-sys does not publish it.
pub fn link_libtorch() -> Option<Libtorch> {
    println!("cargo:rerun-if-changed=build.rs");
    let lib_dir = PathBuf::from(env::var_os("DEP_TCH_LIBTORCH_LIB")?);
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let info = inspect(&lib_dir, &target_os);
    for arg in link_args(&info, &target_os) {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!(
        "cargo:rustc-env=TWEEDIE_LIBTORCH_LIB={}",
        info.lib_dir.display()
    );
    println!(
        "cargo:rustc-env=TWEEDIE_LIBTORCH_CUDA={}",
        u8::from(info.cuda)
    );
    if let Some(version) = &info.version {
        println!("cargo:rustc-env=TWEEDIE_LIBTORCH_VERSION={version}");
    }
    Some(info)
}

/// Look at a libtorch library folder: CUDA present? which version?
pub fn inspect(lib_dir: &Path, target_os: &str) -> Libtorch {
    let cuda_name = match target_os {
        "windows" => "torch_cuda.dll",
        "macos" => "libtorch_cuda.dylib",
        _ => "libtorch_cuda.so",
    };
    Libtorch {
        lib_dir: lib_dir.to_path_buf(),
        cuda: lib_dir.join(cuda_name).is_file(),
        version: lib_dir.parent().and_then(read_version),
    }
}

/// The linker arguments for `info` on `target_os` (GNU-style `-Wl,` flags).
pub fn link_args(info: &Libtorch, target_os: &str) -> Vec<String> {
    let mut args = Vec::new();
    if matches!(target_os, "linux" | "macos" | "freebsd" | "android") {
        args.push(format!("-Wl,-rpath,{}", info.lib_dir.display()));
    }
    // `--no-as-needed` is a GNU ld / lld option; macOS has no libtorch_cuda anyway.
    if info.cuda && target_os != "macos" && target_os != "windows" {
        args.extend(["-Wl,--no-as-needed", "-ltorch_cuda", "-Wl,--as-needed"].map(String::from));
    }
    args
}

/// The version of the libtorch rooted at `root` (the folder above `lib/`).
fn read_version(root: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        let v = text.trim();
        if !v.is_empty() {
            return Some(v.to_string());
        }
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    parse_version_py(&text)
}

/// The `__version__ = '…'` value of a PyTorch `version.py`.
fn parse_version_py(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("__version__")?;
        let rest = rest.trim_start().strip_prefix('=')?.trim();
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = &rest[1..];
        let end = inner.find(quote)?;
        Some(inner[..end].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = env::temp_dir().join(format!("tweedie-build-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        dir
    }

    #[test]
    fn parses_pytorch_version_py() {
        let text = "from typing import Optional\n__version__ = '2.13.0+cu130'\ndebug = False\n";
        assert_eq!(parse_version_py(text).as_deref(), Some("2.13.0+cu130"));
        assert_eq!(
            parse_version_py("__version__ = \"2.1\"").as_deref(),
            Some("2.1")
        );
        assert_eq!(parse_version_py("__version_info__ = 3"), None);
        assert_eq!(parse_version_py("__version__ = 2"), None);
    }

    #[test]
    fn cuda_libtorch_gets_rpath_and_forced_torch_cuda() {
        let root = scratch("cuda");
        std::fs::write(root.join("lib/libtorch_cuda.so"), b"").unwrap();
        std::fs::write(root.join("version.py"), "__version__ = '2.13.0+cu130'\n").unwrap();
        let info = inspect(&root.join("lib"), "linux");
        assert!(info.cuda);
        assert_eq!(info.version.as_deref(), Some("2.13.0+cu130"));
        let args = link_args(&info, "linux");
        assert_eq!(
            args,
            vec![
                format!("-Wl,-rpath,{}", root.join("lib").display()),
                "-Wl,--no-as-needed".to_string(),
                "-ltorch_cuda".to_string(),
                "-Wl,--as-needed".to_string(),
            ]
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cpu_libtorch_gets_rpath_only() {
        let root = scratch("cpu");
        std::fs::write(root.join("build-version"), "2.13.0+cpu\n").unwrap();
        let info = inspect(&root.join("lib"), "linux");
        assert!(!info.cuda);
        assert_eq!(info.version.as_deref(), Some("2.13.0+cpu"));
        assert_eq!(
            link_args(&info, "linux"),
            vec![format!("-Wl,-rpath,{}", root.join("lib").display())]
        );
        assert!(link_args(&info, "windows").is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }
}
