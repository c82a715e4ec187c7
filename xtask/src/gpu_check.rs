//! `cargo xtask gpu-check`: the one-shot check of every CUDA path, for a machine that has a GPU
//! for a few minutes only.
//!
//! It builds everything first (so device time is not spent compiling), then runs each CUDA
//! check in turn, each under its own time limit and all within [`BUDGET`], and ends with one
//! Markdown table (also written to `target/gpu-check.md`) that can be pasted into a report:
//! check, result, seconds, and the figures the check printed. Without a CUDA device every
//! check is reported as skipped with the reason, and the exit status is 0; with one, any
//! failed check (or one the budget left no time for) makes it non-zero.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::run::{cargo, cargo_command, step};

/// Device time for all checks together (the build before them is not counted): GPU machines
/// are lent for minutes, so the whole check must fit in 8 with a margin.
const BUDGET: Duration = Duration::from_secs(450);

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
    /// The budget was spent before this check could start.
    NotRun,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skipped",
            Outcome::NotRun => "NOT RUN",
        }
    }
}

/// One row of the final table.
struct Row {
    check: &'static str,
    outcome: Outcome,
    seconds: f64,
    detail: String,
}

/// One CUDA check: a cargo command line and the output lines worth keeping in the table.
struct Check {
    name: &'static str,
    cargo_args: Vec<String>,
    /// Output lines containing any of these are the check's figures.
    keep: &'static [&'static str],
    limit: Duration,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `cargo run` of a package's binary `bin` with arguments `rest`.
fn run_bin(package: &str, bin: &str, rest: &[&str]) -> Vec<String> {
    let mut v = args(&[
        "run",
        "--profile",
        "dev",
        "-q",
        "-p",
        package,
        "--bin",
        bin,
        "--",
    ]);
    v.extend(args(rest));
    v
}

/// `cargo test` of one integration test of a package, its output shown.
fn run_test(package: &str, test: &str) -> Vec<String> {
    args(&[
        "test",
        "--profile",
        "dev",
        "-p",
        package,
        "--test",
        test,
        "--",
        "--nocapture",
    ])
}

fn checks(run_dir: &Path) -> Vec<Check> {
    let tweedie = |rest: &[&str]| run_bin("tweedie", "tweedie", rest);
    let bench = |rest: &[&str]| run_bin("tweedie-bench", "tweedie-bench", rest);
    let run = run_dir.to_string_lossy().to_string();
    let mut train = tweedie(&[
        "train",
        "--config",
        "configs/toy-edm.toml",
        "--set",
        "training.device=\"cuda\"",
        "--set",
        "training.steps=400",
        "--quiet",
        "--out",
    ]);
    train.push(run.clone());
    let mut sample = tweedie(&["sample", "--device", "cuda", "--n", "4096", "--model"]);
    sample.push(format!("{run}/model.safetensors"));
    sample.extend(args(&["--out"]));
    sample.push(format!("{run}/gpu-samples.npy"));
    // One rank under the launcher: the trainer's data-parallel path with an NCCL group
    // (device cuda picks NCCL) and DDP's reducer on CUDA gradients.
    let mut nccl_train = tweedie(&[
        "launch",
        "--nproc",
        "1",
        "--timeout",
        "60",
        "--",
        "train",
        "--config",
        "configs/toy-edm.toml",
        "--set",
        "training.device=\"cuda\"",
        "--set",
        "training.steps=100",
        "--set",
        "eval.skip=true",
        "--quiet",
        "--out",
    ]);
    nccl_train.push(format!("{run}-nccl"));
    vec![
        Check {
            name: "U-Net forward, bf16 autocast and one training step: CPU vs CUDA",
            cargo_args: run_test("tweedie-nets", "cuda"),
            keep: &["forward:", "bf16", "loss:", "parameters", "skipped"],
            limit: Duration::from_secs(60),
        },
        Check {
            name: "samplers on ndarray vs tch CPU vs tch CUDA; training step (consistency)",
            cargo_args: bench(&["consistency"]),
            keep: &["cuda", "CUDA", "max", "skipped"],
            limit: Duration::from_secs(90),
        },
        Check {
            name: "NCCL process group and collectives",
            cargo_args: run_test("tweedie-dist", "collectives"),
            keep: &["nccl", "NCCL", "skipped", "test result"],
            limit: Duration::from_secs(60),
        },
        Check {
            name:
                "NCCL: 1-rank data-parallel training (tweedie launch, toy EDM on CUDA, 100 steps)",
            cargo_args: nccl_train,
            keep: &["data-parallel", "trained", "error", "failed"],
            limit: Duration::from_secs(60),
        },
        Check {
            name:
                "training step tch vs PyTorch eager, CIFAR-10 DDPM++ (55.7 M parameters), batch 64",
            cargo_args: bench(&[
                "bench-nets",
                "--preset",
                "ddpmpp-cifar10",
                "--batch",
                "64",
                "--iters",
                "20",
                "--device",
                "cuda",
            ]),
            keep: &[
                "max |tch",
                "training step",
                "forward+backward",
                "forward (no",
                "error",
            ],
            limit: Duration::from_secs(120),
        },
        Check {
            name: "tweedie train on CUDA (toy EDM, 400 steps)",
            cargo_args: train,
            keep: &["loss", "report", "samples/s", "error"],
            limit: Duration::from_secs(60),
        },
        Check {
            name: "tweedie sample on CUDA from that checkpoint",
            cargo_args: sample,
            keep: &["NFE", "wrote", "samples", "error"],
            limit: Duration::from_secs(40),
        },
    ]
}

/// Runs the check within `limit`; the output is echoed indented and its kept lines returned.
fn run_check(root: &Path, check: &Check, limit: Duration) -> Result<Row> {
    step(check.name);
    let start = Instant::now();
    let mut child = cargo_command(root)
        .args(&check.cargo_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start cargo")?;
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    })
    .collect();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output: String = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    for line in output.lines() {
        println!("    {line}");
    }
    let kept: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && check.keep.iter().any(|k| l.contains(k)))
        .take(6)
        .collect();
    let skipped = output.contains("skipped: no CUDA");
    let outcome = match status {
        Some(s) if s.success() && skipped => Outcome::Skip,
        Some(s) if s.success() => Outcome::Pass,
        _ => Outcome::Fail,
    };
    let mut detail = kept.join("; ");
    if status.is_none() {
        detail = format!("timed out after {} s; {detail}", limit.as_secs());
    }
    Ok(Row {
        check: check.name,
        outcome,
        seconds: start.elapsed().as_secs_f64(),
        detail,
    })
}

/// Whether the machine has an NVIDIA GPU the driver can see (`nvidia-smi`), with its name.
fn gpu_name() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The table, in Markdown.
fn table(device: &str, rows: &[Row]) -> String {
    let mut s =
        format!("GPU check on: {device}\n\n| check | result | s | figures |\n|---|---|---:|---|\n");
    for r in rows {
        let detail = r.detail.replace('|', "/");
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} |",
            r.check,
            r.outcome.label(),
            r.seconds,
            detail
        );
    }
    s
}

/// Builds, runs every CUDA check, prints and writes the table; the number of failed checks.
/// Without a GPU nothing is built: every check is listed as skipped, with the reason.
pub fn run(root: &Path) -> Result<usize> {
    let run_dir = root.join("target").join("gpu-check-run");
    let Some(device) = gpu_name() else {
        let rows: Vec<Row> = checks(&run_dir)
            .iter()
            .map(|c| Row {
                check: c.name,
                outcome: Outcome::Skip,
                seconds: 0.0,
                detail: "no NVIDIA GPU (nvidia-smi absent or sees no device)".into(),
            })
            .collect();
        return finish(root, &table("no GPU", &rows), &rows);
    };
    crate::setup::run(root)?;
    // Compile everything first: device time is for the checks, not for rustc.
    step("build (tests and binaries) before any device time is used");
    cargo(
        root,
        &["build", "--profile", "dev", "--workspace", "--all-targets"],
    )?;
    let _ = std::fs::remove_dir_all(&run_dir);
    let began = Instant::now();
    let mut rows = Vec::new();
    for check in checks(&run_dir) {
        let left = BUDGET.saturating_sub(began.elapsed());
        if left < Duration::from_secs(10) {
            rows.push(Row {
                check: check.name,
                outcome: Outcome::NotRun,
                seconds: 0.0,
                detail: format!("the {} s budget was spent", BUDGET.as_secs()),
            });
            continue;
        }
        rows.push(run_check(root, &check, check.limit.min(left))?);
    }
    let text = format!(
        "{}\nAll checks: {:.0} s (budget {} s).\n",
        table(&device, &rows),
        began.elapsed().as_secs_f64(),
        BUDGET.as_secs()
    );
    finish(root, &text, &rows)
}

/// Prints the table, writes it to target/gpu-check.md; the number of failed or unrun checks.
fn finish(root: &Path, text: &str, rows: &[Row]) -> Result<usize> {
    println!("\n{text}");
    let path = root.join("target").join("gpu-check.md");
    std::fs::create_dir_all(root.join("target"))
        .and_then(|()| std::fs::write(&path, text))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("table written to {}", path.display());
    Ok(rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail | Outcome::NotRun))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_check_with_its_outcome() {
        let rows = vec![
            Row {
                check: "a",
                outcome: Outcome::Pass,
                seconds: 1.4,
                detail: "x | y".into(),
            },
            Row {
                check: "b",
                outcome: Outcome::Fail,
                seconds: 2.0,
                detail: String::new(),
            },
        ];
        let t = table("H200", &rows);
        assert!(t.contains("| a | pass | 1 | x / y |"), "{t}");
        assert!(t.contains("| b | FAIL | 2 |  |"), "{t}");
        assert!(t.starts_with("GPU check on: H200"));
    }
}
