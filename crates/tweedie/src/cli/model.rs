//! Network checkpoints for the subcommands (`sample --model`, `sample --classifier`): one
//! loader each so that every command reports a missing or corrupt file the same way.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Device;
use tweedie::nets::{
    load_checkpoint, load_classifier, trained_label_dropout, DeviceSpec, LoadedModel, NetClassifier,
};

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
    load_checkpoint(path, device).or_else(|e| {
        if tweedie::nets::classifier::is_classifier_checkpoint(path) {
            bail!(
                "--model {}: is a classifier checkpoint (`tweedie train-classifier`), not a \
                 denoiser: pass it as --classifier, with a denoiser as --model",
                path.display()
            );
        }
        Err(e).with_context(|| format!("loading model {}", path.display()))
    })
}

/// Refuses classifier-free guidance with weight `w` > 0 on a checkpoint whose null label was
/// never trained: D_w = (1+w)·D(x; σ, c) − w·D(x; σ, ∅) would extrapolate away from an
/// output the network never learnt. (w = 0 is the plain conditional model and always fine.)
pub fn check_null_label_trained(path: &Path, loaded: &LoadedModel, w: f64) -> Result<()> {
    if w == 0.0 || loaded.config.net.label_dim() == 0 {
        return Ok(());
    }
    if trained_label_dropout(path, &loaded.config, &loaded.extra)? > 0.0 {
        return Ok(());
    }
    bail!(
        "--cfg {w}: {} was trained without label dropout, so its null label (the all-zero \
         label that guidance uses for the unconditional denoiser) was never trained and the \
         guided denoiser would extrapolate from an untrained output; retrain with \
         `training.label_dropout` > 0 (default 0.1), sample with --class alone (no guidance), \
         or pass --cfg-untrained-null to guide anyway",
        path.display()
    )
}

/// Loads the classifier of `--classifier` for guiding `--model` (at `model`, drawing samples
/// of `shape`, metadata `model_extra`) towards `class` with scale `scale`; refuses, naming
/// both files, a classifier trained on samples of another shape or on other data, a class
/// outside its classes, and a scale that is negative or not finite.
pub fn load_guidance_classifier(
    path: &Path,
    device: Device,
    model: &Path,
    model_extra: &std::collections::BTreeMap<String, String>,
    shape: &[usize],
    class: usize,
    scale: f64,
) -> Result<NetClassifier> {
    if !(scale.is_finite() && scale >= 0.0) {
        bail!("--classifier-scale {scale}: need a finite scale ≥ 0 (0 is no guidance)");
    }
    let loaded = load_classifier(path, device)
        .with_context(|| format!("loading classifier {}", path.display()))?;
    let theirs: Vec<usize> = loaded
        .config
        .sample_shape()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    if theirs != shape {
        bail!(
            "--classifier {}: trained on samples of shape {theirs:?}, but {} draws samples of \
             shape {shape:?}",
            path.display(),
            model.display()
        );
    }
    let key = tweedie::train::guidance_classifier::META_DATA;
    if let (Some(a), Some(b)) = (loaded.extra.get(key), model_extra.get(key)) {
        if a != b {
            bail!(
                "--classifier {}: trained on the data set `{a}`, but {} was trained on `{b}`",
                path.display(),
                model.display()
            );
        }
    }
    let classes = loaded.config.classes;
    if class >= classes {
        bail!(
            "--class {class}: the classifier {} has classes 0..{classes}",
            path.display()
        );
    }
    Ok(NetClassifier::new(loaded.classifier))
}
