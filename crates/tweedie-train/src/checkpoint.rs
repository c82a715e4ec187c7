//! The training state of a run (`train_state.safetensors`): weights, EMA, Adam moments, step
//! and config, in one file written atomically, so a crash or Ctrl-C never leaves a state
//! whose parts disagree, and `--resume` continues bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use tch::{nn::VarStore, Tensor};
use tweedie_nets::Ema;

use crate::error::{Result, TrainError};
use crate::optim::Adam;

/// File name of the training state inside a run directory.
pub const STATE_FILE: &str = "train_state.safetensors";
/// Metadata key: optimiser steps done.
pub const META_STEP: &str = "tweedie.train.step";
/// Metadata key: the resolved config (TOML).
pub const META_CONFIG: &str = "tweedie.train.config";
/// Metadata key: format version.
pub const META_FORMAT: &str = "tweedie.train.format";
const FORMAT: &str = "1";
/// Metadata key: fingerprint of the training data ([`crate::resume::data_fingerprint`]).
pub const META_DATA: &str = "tweedie.train.data";

/// Saves weights, EMA, optimiser, step, config and data fingerprint to `path` atomically.
pub fn save_state(
    path: &Path,
    vs: &VarStore,
    ema: &Ema,
    adam: &Adam,
    step: u64,
    config_toml: &str,
    data_fingerprint: &str,
) -> Result<()> {
    save_state_of(
        path,
        vs,
        Some(ema),
        adam,
        step,
        config_toml,
        data_fingerprint,
    )
}

/// [`save_state`] of a model trained with or without an EMA (the guidance classifier has none).
pub fn save_state_of(
    path: &Path,
    vs: &VarStore,
    ema: Option<&Ema>,
    adam: &Adam,
    step: u64,
    config_toml: &str,
    data_fingerprint: &str,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t.detach()))
        .collect();
    if let Some(ema) = ema {
        named.extend(
            ema.tensors()
                .iter()
                .map(|(n, t)| (format!("ema.{n}"), t.shallow_clone())),
        );
    }
    named.extend(adam.state_tensors());
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = BTreeMap::new();
    meta.insert(META_STEP.to_string(), step.to_string());
    meta.insert(META_CONFIG.to_string(), config_toml.to_string());
    meta.insert(META_FORMAT.to_string(), FORMAT.to_string());
    meta.insert(META_DATA.to_string(), data_fingerprint.to_string());
    tweedie_nets::checkpoint::save_tensors(path, &named, &meta).map_err(|e| {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("cannot write: {e}"),
        }
    })
}

/// A training state read from disk.
#[derive(Debug)]
pub struct LoadedState {
    pub step: u64,
    pub config_toml: String,
    /// The data fingerprint; `None` in states written before fingerprints existed.
    pub data_fingerprint: Option<String>,
    pub tensors: HashMap<String, Tensor>,
}

/// Reads and checks a training state (any defect is a [`TrainError::Checkpoint`] naming the file).
pub fn read_state(path: &Path) -> Result<LoadedState> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("corrupt or truncated: {e}")))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("corrupt or truncated: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get(META_FORMAT).map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not a tweedie training state (format {:?})",
            meta.get(META_FORMAT)
        )));
    }
    let step: u64 = meta
        .get(META_STEP)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("missing or invalid `{META_STEP}`")))?;
    let config_toml = meta
        .get(META_CONFIG)
        .cloned()
        .ok_or_else(|| bad(format!("missing `{META_CONFIG}`")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor `{name}` is {:?}, expected F32",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let t = Tensor::from_slice(&data).view(shape.as_slice());
        if !bool::try_from(t.isfinite().all()).unwrap_or(false) {
            return Err(bad(format!("tensor `{name}` has NaN or infinite values")));
        }
        tensors.insert(name, t);
    }
    Ok(LoadedState {
        step,
        config_toml,
        data_fingerprint: meta.get(META_DATA).cloned(),
        tensors,
    })
}

/// Tensors of `state` under `prefix`, with the prefix removed.
fn strip(state: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    state
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .map(|n| (n.to_string(), v.shallow_clone()))
        })
        .collect()
}

/// Copies a loaded state into the live model, EMA and optimiser (all or nothing: every check
/// runs before anything is copied).
pub fn restore(
    path: &Path,
    state: &LoadedState,
    vs: &VarStore,
    ema: &mut Ema,
    adam: &mut Adam,
) -> Result<()> {
    restore_of(path, state, vs, Some(ema), adam)
}

/// [`restore`] of a model trained with or without an EMA.
pub fn restore_of(
    path: &Path,
    state: &LoadedState,
    vs: &VarStore,
    ema: Option<&mut Ema>,
    adam: &mut Adam,
) -> Result<()> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let model = strip(&state.tensors, "model.");
    let vars = vs.variables();
    for (name, v) in &vars {
        let src = model
            .get(name)
            .ok_or_else(|| bad(format!("lacks weight `{name}`")))?;
        if src.size() != v.size() {
            return Err(bad(format!(
                "weight `{name}` has shape {:?}, the model has {:?}",
                src.size(),
                v.size()
            )));
        }
    }
    if let Some(extra) = model.keys().find(|k| !vars.contains_key(*k)) {
        return Err(bad(format!(
            "has weight `{extra}` that the model does not have"
        )));
    }
    let device = vars
        .values()
        .next()
        .map(|t| t.device())
        .unwrap_or(tch::Device::Cpu);
    let on_dev = |m: HashMap<String, Tensor>| -> HashMap<String, Tensor> {
        m.into_iter()
            .map(|(k, v)| (k, v.to_device(device)))
            .collect()
    };
    // Check EMA and Adam into scratch copies first so a defect leaves the live state untouched.
    let ema_t = on_dev(strip(&state.tensors, "ema."));
    let adam_t: HashMap<String, Tensor> = on_dev(
        state
            .tensors
            .iter()
            .filter(|(k, _)| k.starts_with("adam."))
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect(),
    );
    for (name, t) in ema.as_deref().map_or(&[][..], |e| e.tensors()) {
        match ema_t.get(name) {
            Some(s) if s.size() == t.size() => {}
            _ => {
                return Err(bad(format!(
                    "EMA weight `{name}` is missing or has the wrong shape"
                )))
            }
        }
    }
    for (name, t) in adam.state_tensors() {
        match adam_t.get(&name) {
            Some(s) if s.size() == t.size() => {}
            _ => {
                return Err(bad(format!(
                    "optimizer state `{name}` is missing or has the wrong shape"
                )))
            }
        }
    }
    tch::no_grad(|| {
        for (name, v) in &vars {
            if let Some(src) = model.get(name) {
                v.shallow_clone().copy_(&src.to_device(device));
            }
        }
    });
    if let Some(ema) = ema {
        ema.load(&ema_t, state.step)
            .map_err(|e| bad(format!("EMA: {e}")))?;
    }
    adam.load_state(&adam_t, state.step)?;
    Ok(())
}
