//! How a run is driven beyond its config, and what a finished run reports.

use std::path::PathBuf;

use crate::resume::AllowChanges;
use crate::rundir::RunLock;

/// How a run is driven (beyond its config).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// The run directory (created when new).
    pub run_dir: PathBuf,
    /// Continue the run in `run_dir` from its training state.
    pub resume: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Behave as if Ctrl-C came after this many steps of the whole run (tests).
    pub interrupt_at: Option<u64>,
    /// A fresh run whose `run_dir` is taken uses `run_dir-2`, `-3`, … instead of refusing
    /// (default names, which two runs launched in the same second share).
    pub unique_dir: bool,
    /// The differences from the run's config and data that a resume accepts.
    pub allow: AllowChanges,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run directory (with a suffix when `unique_dir` found the name taken).
    pub run_dir: PathBuf,
    /// The run directory's lock (the writing rank's): held while any clone of this outcome
    /// lives, since evaluation after training writes into the directory too.
    pub lock: Option<std::sync::Arc<RunLock>>,
    /// Steps done in total.
    pub steps: u64,
    /// Mean loss over the last logging interval; `None` when this invocation trained no step
    /// (a resume of a finished run).
    pub last_loss: Option<f64>,
    /// Seconds spent in this invocation's training steps.
    pub train_seconds: f64,
    /// Steps per second in this invocation.
    pub steps_per_second: f64,
}

/// A default run directory: `runs/<name>-<UTC yyyymmdd-hhmmss>`.
pub fn default_run_dir(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    PathBuf::from("runs").join(format!(
        "{name}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    ))
}
