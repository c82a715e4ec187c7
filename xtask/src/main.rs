//! `cargo xtask …`: project automation that builds without libtorch.
//!
//! - `setup`: project-local virtualenv `.venv` with torch (libtorch for tch) and the
//!   digits data set, unless the user points `LIBTORCH`/`LIBTORCH_USE_PYTORCH` elsewhere;
//! - `test`: set-up, then every test, plus the libtorch-free check of the math crates;
//! - `ci`: `cargo fmt --check`, clippy with `-D warnings`, then `test`;
//! - `gpu-check`: every CUDA path in one run, ending in a table (skipped without a GPU);
//! - `bench-samplers`, `bench-conditional`, `consistency`, `bench-nets`, `bench-dist`: the measurement tooling, forwarded to the
//!   `tweedie-bench` binary (crate `tweedie-bench`, not published) after the set-up;
//! - anything else is forwarded to the `tweedie` binary: `cargo xtask train …` runs
//!   `tweedie train …` after the set-up.

mod gpu_check;
mod locks;
mod run;
mod setup;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use run::{cargo, step};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    // `cargo xtask help` is forwarded: it lists tweedie's subcommands.
    disable_help_subcommand = true,
    about = "tweedie project tasks; unknown subcommands run `tweedie <subcommand> …` after the set-up",
    after_help = "Forwarded to the tweedie CLI: train, sample, info, schedule, eval, nets, … \
                  (`cargo xtask train --help`).\n\
                  Forwarded to tweedie-bench: bench-samplers, bench-conditional, consistency, bench-nets, bench-dist \
                  (`cargo xtask bench-samplers --help`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create .venv with torch 2.13.0 (libtorch) and the digits data; fast when done.
    Setup,
    /// Set up, then run all tests (extra arguments go to `cargo test --profile dev --workspace`).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// What CI runs: cargo fmt --check, clippy -D warnings, then `cargo xtask test`.
    Ci,
    /// Build, then every CUDA check (U-Net CPU vs CUDA, consistency, NCCL collectives and 1-rank
    /// training, tch-vs-PyTorch training step, train and sample on CUDA) within 8 minutes, with a
    /// summary table, also written to target/gpu-check.md; skipped (nothing built) without a GPU.
    GpuCheck,
    #[command(external_subcommand)]
    Forward(Vec<OsString>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    let result = match cli.command {
        Command::Setup => setup::run(&root).map(|_| 0),
        Command::Test { args } => test(&root, &args).map(|()| 0),
        Command::Ci => ci(&root).map(|()| 0),
        Command::GpuCheck => gpu_check::run(&root).map(|failed| i32::from(failed > 0)),
        Command::Forward(args) => forward(&root, &args),
    };
    match result {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Set-up, then every test, then the math crates alone (no libtorch).
///
/// `--profile dev` throughout: the profile of `cargo run` and clippy too. A plain
/// `cargo test` (profile "test") compiles torch-sys's build script, and with it libtorch's
/// C++ bindings, a second time: minutes on a small machine.
fn test(root: &Path, extra: &[String]) -> Result<()> {
    setup::run(root)?;

    step("cargo test --profile dev --workspace");
    let mut args = vec!["test", "--profile", "dev", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    let workspace = run::cargo_test(root, &args)?;

    // The math crates must never pull in libtorch: a user who only wants schedules or
    // samplers does not pay for it. Check the dependency graph, then build and test
    // them on their own (their default features, no `tch`).
    step(
        "libtorch-free: cargo tree / cargo test --profile dev -p tweedie-core -p tweedie-samplers",
    );
    let tree = run::cargo_output(
        root,
        &[
            "tree",
            "-p",
            "tweedie-core",
            "-p",
            "tweedie-samplers",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ],
    )?;
    if let Some(line) = tree
        .lines()
        .find(|l| l.starts_with("torch-sys") || l.starts_with("tch "))
    {
        bail!("tweedie-core / tweedie-samplers depend on libtorch by default: `{line}`");
    }
    let math_alone = run::cargo_test(
        root,
        &[
            "test",
            "--profile",
            "dev",
            "-p",
            "tweedie-core",
            "-p",
            "tweedie-samplers",
        ],
    )?;
    // One closing line for people and CI: the sum of both runs (the math crates' tests
    // run twice, with and without libtorch in the build).
    let all = workspace.plus(math_alone);
    println!(
        "tests: {} passed, {} failed, {} skipped",
        all.passed, all.failed, all.ignored
    );
    Ok(())
}

/// Formatting, lints, tests: exactly what `.ci/run` and the GitHub workflow run.
fn ci(root: &Path) -> Result<()> {
    step("cargo fmt --all --check");
    cargo(root, &["fmt", "--all", "--check"])?;
    // Clippy compiles torch-sys, which needs libtorch: set up first.
    setup::run(root)?;
    step("cargo clippy --workspace --all-targets -- -D warnings");
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    test(root, &[])
}

/// Subcommands of the `tweedie-bench` binary (measurement tooling, not the user CLI).
const BENCH_COMMANDS: [&str; 5] = [
    "bench-samplers",
    "bench-conditional",
    "consistency",
    "bench-nets",
    "bench-dist",
];

/// The binary (and package) a forwarded subcommand belongs to.
fn binary_for(command: Option<&OsString>) -> &'static str {
    match command.and_then(|c| c.to_str()) {
        Some(c) if BENCH_COMMANDS.contains(&c) => "tweedie-bench",
        _ => "tweedie",
    }
}

/// `cargo xtask <cmd> …` = set-up, then `tweedie <cmd> …` (or `tweedie-bench <cmd> …` for
/// the measurement tooling); returns that binary's exit code.
///
/// The binary runs in the caller's directory (cargo is pointed at the workspace by
/// `--manifest-path`), so relative paths mean what the user typed; what the binary finds
/// relative to the workspace (the default config, the digits data) is passed explicitly.
fn forward(root: &Path, args: &[OsString]) -> Result<i32> {
    setup::run(root)?;
    let bin = binary_for(args.first());
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("cannot read the current directory: {e}"))?;
    let mut cmd = run::cargo_command(root);
    cmd.current_dir(&cwd)
        .arg("run")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--package", bin, "--bin", bin, "--"])
        .args(with_workspace_defaults(root, &cwd, args));
    // `.cargo/config.toml` is found from the current directory: outside the workspace its
    // LIBTORCH would be missing, so give the one it sets.
    if std::env::var_os("LIBTORCH").is_none() && std::env::var_os("LIBTORCH_USE_PYTORCH").is_none()
    {
        cmd.env("LIBTORCH", root.join(".venv").join("torch"));
    }
    let digits = root.join(setup::DIGITS_PATH);
    if std::env::var_os("TWEEDIE_DIGITS").is_none() && digits.is_file() {
        cmd.env("TWEEDIE_DIGITS", digits);
    }
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start cargo: {e}"))?;
    Ok(status.code().unwrap_or(1))
}

/// `args` plus `--config <root>/configs/default.toml` for a `train` without a config when the
/// caller's directory has no `configs/default.toml` of its own (the CLI's relative default).
fn with_workspace_defaults(root: &Path, cwd: &Path, args: &[OsString]) -> Vec<OsString> {
    let mut out = args.to_vec();
    let is_train = args.first().is_some_and(|a| a == "train");
    let has_config = args.iter().any(|a| {
        a.to_str().is_some_and(|a| {
            a == "-c"
                || a == "--config"
                || a.starts_with("--config=")
                || (a.starts_with("-c") && a.len() > 2)
        })
    });
    let wants_help = args.iter().any(|a| a == "--help" || a == "-h");
    let default = Path::new("configs").join("default.toml");
    if is_train && !has_config && !wants_help && !cwd.join(&default).is_file() {
        out.push("--config".into());
        out.push(root.join(default).into_os_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_from_another_directory_gets_the_workspace_default_config() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let root = Path::new("/ws");
        let elsewhere = std::env::temp_dir();
        assert_eq!(
            with_workspace_defaults(root, &elsewhere, &os(&["train", "--set", "a=1"])),
            os(&[
                "train",
                "--set",
                "a=1",
                "--config",
                "/ws/configs/default.toml"
            ])
        );
        let given = os(&["train", "-c", "mine.toml"]);
        assert_eq!(with_workspace_defaults(root, &elsewhere, &given), given);
        let sample = os(&["sample", "--out", "x.npy"]);
        assert_eq!(with_workspace_defaults(root, &elsewhere, &sample), sample);
    }

    #[test]
    fn measurement_commands_go_to_tweedie_bench_and_the_rest_to_tweedie() {
        let bin = |s: &str| binary_for(Some(&OsString::from(s)));
        assert_eq!(bin("bench-samplers"), "tweedie-bench");
        assert_eq!(bin("bench-conditional"), "tweedie-bench");
        assert_eq!(bin("consistency"), "tweedie-bench");
        assert_eq!(bin("train"), "tweedie");
        assert_eq!(bin("sample"), "tweedie");
        assert_eq!(binary_for(None), "tweedie");
    }
}
