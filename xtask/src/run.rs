//! Running child processes: cargo with inherited output, and long quiet tools (pip) with
//! progress lines, a full log and the log's tail on failure.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Prints a step header.
pub fn step(what: &str) {
    println!("==> xtask: {what}");
}

/// The cargo that runs us (cargo sets `CARGO`), in the workspace root.
pub fn cargo_command(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root);
    cmd
}

/// Runs `cargo <args>` with inherited output; fails naming the command.
pub fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let status = cargo_command(root)
        .args(args)
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Test counts summed over the `test result:` lines of `cargo test`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl TestCounts {
    /// Adds the counts of one libtest summary line
    /// (`test result: ok. 3 passed; 0 failed; 1 ignored; …`); other lines add nothing.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    /// Sums two counts.
    pub fn plus(self, other: TestCounts) -> TestCounts {
        TestCounts {
            passed: self.passed + other.passed,
            failed: self.failed + other.failed,
            ignored: self.ignored + other.ignored,
        }
    }
}

/// Runs `cargo test …`, echoing its output as it comes, and sums its test counts.
pub fn cargo_test(root: &Path, args: &[&str]) -> Result<TestCounts> {
    let mut child = cargo_command(root)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo")?;
    let mut counts = TestCounts::default();
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            counts.add_line(&line);
            let _ = writeln!(out, "{line}");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!(
            "`cargo {}` failed ({status}): {} passed, {} failed",
            args.join(" "),
            counts.passed,
            counts.failed
        );
    }
    Ok(counts)
}

/// Runs `cargo <args>` and returns its stdout; stderr is shown.
pub fn cargo_output(root: &Path, args: &[&str]) -> Result<String> {
    let out = cargo_command(root)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo")?;
    if !out.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a short command and returns its trimmed stdout, or an error with its output.
pub fn capture(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}):\n{}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// How many lines of a failed tool's output to show.
const TAIL_LINES: usize = 30;

/// Runs a long, chatty tool: its whole output (stdout and stderr) goes to `log`; lines
/// that `progress` maps to `Some(text)` are echoed as that text with the elapsed time, and a heartbeat
/// is printed when it has been quiet for a while. On failure the error carries the last
/// lines of output.
pub fn logged(
    program: &Path,
    args: &[impl AsRef<OsStr>],
    log: &Path,
    progress: fn(&str) -> Option<String>,
) -> Result<()> {
    let describe = format!(
        "{} {}",
        program.display(),
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut log_file = std::fs::File::create(log)
        .with_context(|| format!("cannot create log file {}", log.display()))?;
    writeln!(log_file, "$ {describe}")?;
    let log_file = Arc::new(Mutex::new(log_file));

    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;

    let start = Instant::now();
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let last_output = Arc::new(Mutex::new(Instant::now()));
    let mut readers = Vec::new();
    let streams: [Box<dyn Read + Send>; 2] = [
        Box::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("no stdout pipe"))?,
        ),
        Box::new(
            child
                .stderr
                .take()
                .ok_or_else(|| anyhow!("no stderr pipe"))?,
        ),
    ];
    for stream in streams {
        let (tail, log_file, last_output) = (tail.clone(), log_file.clone(), last_output.clone());
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                if let Ok(mut f) = log_file.lock() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(text) = progress(&line) {
                    println!("    [{:>4}s] {text}", start.elapsed().as_secs());
                    if let Ok(mut t) = last_output.lock() {
                        *t = Instant::now();
                    }
                }
                if let Ok(mut t) = tail.lock() {
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        }));
    }

    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(mut t) = last_output.lock() {
            if t.elapsed() >= Duration::from_secs(20) {
                println!("    [{:>4}s] … still running", start.elapsed().as_secs());
                *t = Instant::now();
            }
        }
    };
    for r in readers {
        let _ = r.join();
    }
    if !status.success() {
        let tail = tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"));
        bail!(
            "`{describe}` failed ({status}); last lines of its output (full log: {}):\n{}",
            log.display(),
            tail.unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn sums_libtest_summaries() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 44 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 2.85s");
        c.add_line("running 3 tests");
        c.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        assert_eq!(
            c,
            TestCounts {
                passed: 45,
                failed: 2,
                ignored: 2
            }
        );
    }
}
