//! The run's config file and metrics.jsonl: written on a fresh run, cut back on resume, read
//! for the loss plot and the report.

use std::path::Path;

use super::files;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

pub(super) fn write_config(run_dir: &Path, cfg: &TrainConfig) -> Result<String> {
    let text = cfg.to_toml()?;
    crate::plot::atomic_write(&run_dir.join(files::CONFIG), text.as_bytes()).map_err(
        |e| match e {
            TrainError::Io { path, source } => TrainError::Other(format!(
                "run directory {} is not writable ({}: {source})",
                run_dir.display(),
                path.display()
            )),
            other => other,
        },
    )?;
    Ok(text)
}

/// Keeps the metrics lines of steps ≤ `step` (a resumed run rewrites what came after its
/// checkpoint).
pub(crate) fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::plot::atomic_write(path, kept.as_bytes())
}

/// (step, loss) pairs of a run's metrics.jsonl.
pub fn read_loss_history(run_dir: &Path) -> (Vec<u64>, Vec<f64>) {
    let text = std::fs::read_to_string(run_dir.join(files::METRICS)).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?)))
        .unzip()
}
