//! Network checkpoints for the subcommands (`sample --model`): one
//! loader so that every command reports a missing or corrupt file the same way.

use std::path::Path;

use anyhow::{Context, Result};
use tch::Device;
use tweedie::nets::{load_checkpoint, DeviceSpec, LoadedModel};

/// Whether `--model VALUE` names a network checkpoint (a `.safetensors` file) rather than a
/// mixture preset or TOML file.
pub fn is_checkpoint(spec: &str) -> bool {
    Path::new(spec)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Parses `auto | cpu | cuda | cuda:N` and resolves it to a libtorch device (an absent GPU is
/// an error, not a silent CPU fallback).
pub fn device(spec: &str) -> Result<Device> {
    let d: DeviceSpec = spec.parse().with_context(|| format!("--device {spec}"))?;
    d.resolve().with_context(|| format!("--device {spec}"))
}

/// Loads a tweedie checkpoint (config in the safetensors metadata) onto `device`; the error
/// names the file and says whether it is missing, unreadable or corrupt.
pub fn load(path: &Path, device: Device) -> Result<LoadedModel> {
    load_checkpoint(path, device).with_context(|| format!("loading model {}", path.display()))
}
