//! Checkpoints: safetensors with the full model config as JSON metadata, so a checkpoint alone
//! rebuilds its denoiser; written atomically (temp file + rename); typed errors on load.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::conditioning::Conditioning;
use crate::config::NetConfig;
use crate::error::{NetsError, Result};
use crate::precond::{PrecondDenoiser, Wrapper};

/// Metadata key of the model config JSON.
pub const META_MODEL: &str = "tweedie.model";
/// Metadata key of the format version.
pub const META_FORMAT: &str = "tweedie.format";
/// Current checkpoint format version.
pub const FORMAT_VERSION: &str = "1";

/// Metadata key: the probability with which training replaced a class label by the null
/// (all-zero) label, as a decimal; written by tweedie-train for class-conditional models.
pub const META_LABEL_DROPOUT: &str = "tweedie.train.label_dropout";

/// How often the null label (the all-zero one-hot that classifier-free guidance evaluates as
/// "unconditional") was trained: the training's record under [`META_LABEL_DROPOUT`], else
/// the network's own in-forward `label_dropout` (an imported EDM network), so a checkpoint
/// written before the record existed counts as trained without dropout. A record that is not a
/// probability is a [`NetsError::CheckpointMetadata`] naming `path`.
pub fn trained_label_dropout(
    path: &Path,
    config: &ModelConfig,
    extra: &BTreeMap<String, String>,
) -> Result<f64> {
    let Some(text) = extra.get(META_LABEL_DROPOUT) else {
        return Ok(config.net.label_dropout());
    };
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(NetsError::CheckpointMetadata {
            path: path.to_path_buf(),
            reason: format!("`{META_LABEL_DROPOUT}` = {text:?} is not a probability in [0, 1]"),
        }),
    }
}

/// Everything needed to rebuild a denoiser: network architecture and wrapper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The raw network.
    pub net: NetConfig,
    /// Preconditioning or parametrization adapter.
    pub wrapper: Wrapper,
    /// The low-resolution input the network is conditioned on (image-conditioned models);
    /// absent for every other model, so their configs read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditioning: Option<Conditioning>,
}

impl ModelConfig {
    /// Builds the denoiser on `device` with fresh weights; its variables live in the returned store.
    pub fn build(&self, device: Device) -> Result<(VarStore, PrecondDenoiser)> {
        let vs = VarStore::new(device);
        let mut d = PrecondDenoiser::new(&vs.root(), &self.net, self.wrapper.clone())?;
        d.set_conditioning(self.conditioning.clone())?;
        Ok((vs, d))
    }
}

/// A loaded checkpoint: the denoiser, its variables, its config and the extra metadata.
#[derive(Debug)]
pub struct LoadedModel {
    /// Variables of the denoiser.
    pub vs: VarStore,
    /// The denoiser.
    pub denoiser: PrecondDenoiser,
    /// The config read from the metadata.
    pub config: ModelConfig,
    /// Metadata other than the model config (training step, kimg, …).
    pub extra: BTreeMap<String, String>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> NetsError {
    NetsError::CheckpointIo {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn to_bytes(t: &Tensor) -> Result<(Vec<usize>, Vec<u8>)> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let shape = t.size().iter().map(|&d| d as usize).collect();
    let v: Vec<f32> = Vec::<f32>::try_from(t.flatten(0, -1))?;
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok((shape, bytes))
}

/// Writes named tensors (as f32) and metadata to `path` atomically: a crash leaves either the
/// old file or the new one, never half of one.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (shape, bytes) = to_bytes(t)?;
        owned.push((name.clone(), shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| io_err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(views, &Some(meta)).map_err(|e| io_err(path, e))?;
    atomic_write(path, &bytes).map_err(|e| io_err(path, e))
}

/// Writes `bytes` to `path` atomically and durably: a temp file `.NAME.tmp-PID` beside it,
/// fsynced, renamed over `path`, then the directory fsynced so the rename itself survives a
/// power loss (POSIX makes a rename durable only once its directory is synced). A crash leaves
/// the old file or the new one, never half of one; a killed writer's temp file is removed by
/// the next run (tweedie-train's `rundir`).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temp_path(path)?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(path)
}

/// The temp file beside `path` that [`atomic_write`] (and any writer that streams into a file
/// before renaming it over `path`) uses: `.NAME.tmp-PID`, which rundir's clean-up recognises.
pub fn temp_path(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    Ok(path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    )))
}

/// fsyncs the folder holding `path`, so that a rename into it survives a power loss.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()))
}

/// fsyncs a directory (the current one for `None`); a no-op where directories cannot be opened.
fn sync_dir(dir: Option<&Path>) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A checkpoint's metadata: `extra`, the whole model config as JSON and the format version.
fn metadata(
    path: &Path,
    config: &ModelConfig,
    extra: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut meta = extra.clone();
    let json = serde_json::to_string(config).map_err(|e| io_err(path, e))?;
    meta.insert(META_MODEL.into(), json);
    meta.insert(META_FORMAT.into(), FORMAT_VERSION.into());
    Ok(meta)
}

/// Saves the denoiser's variables (`vs`) with `config` and `extra` metadata to `path`.
pub fn save_checkpoint(
    path: &Path,
    vs: &VarStore,
    config: &ModelConfig,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let meta = metadata(path, config, extra)?;
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    save_tensors(path, &named, &meta)
}

/// Saves the EMA weights of `ema` (buffers from `vs`) as a sampling checkpoint: what
/// `tweedie sample --model` should load after training (Karras et al. 2022 sample from the EMA).
pub fn save_ema_checkpoint(
    path: &Path,
    vs: &VarStore,
    ema: &crate::ema::Ema,
    config: &ModelConfig,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = metadata(path, config, extra)?;
    meta.insert("tweedie.ema_step".into(), ema.step().to_string());
    let averaged: HashMap<&str, &Tensor> =
        ema.tensors().iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| {
            let t = averaged
                .get(n.as_str())
                .map(|a| a.shallow_clone())
                .unwrap_or(t);
            (n, t)
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    save_tensors(path, &named, &meta)
}

/// The raw bytes of a checkpoint file, with a typed error for a missing file.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NetsError::CheckpointNotFound {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path, e)),
    }
}

pub(crate) fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let corrupt = |e: safetensors::SafeTensorError| NetsError::CheckpointCorrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
    let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
    Ok((st, meta.metadata().clone().unwrap_or_default()))
}

/// Reads only the model config and extra metadata of a checkpoint (validated as
/// [`load_checkpoint`] does, before anything is built).
pub fn read_config(path: &Path) -> Result<(ModelConfig, BTreeMap<String, String>)> {
    let bytes = read_file(path)?;
    let (st, meta) = parse(path, &bytes)?;
    config_from_meta(path, meta, stored_values(&st))
}

/// Number of values a safetensors file holds, from its header (nothing is converted).
fn stored_values(st: &SafeTensors<'_>) -> u128 {
    st.tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().map(|&d| d as u128).product::<u128>())
        .sum()
}

/// Takes the format version out of a checkpoint's metadata (a denoiser's or a classifier's):
/// the reason to refuse the file unless it is this build's.
pub(crate) fn take_format_version(
    meta: &mut HashMap<String, String>,
) -> std::result::Result<(), String> {
    match meta.remove(META_FORMAT).as_deref() {
        Some(FORMAT_VERSION) => Ok(()),
        other => Err(format!(
            "format version {other:?}, this build reads {FORMAT_VERSION}"
        )),
    }
}

fn config_from_meta(
    path: &Path,
    mut meta: HashMap<String, String>,
    stored: u128,
) -> Result<(ModelConfig, BTreeMap<String, String>)> {
    let bad = |reason: String| NetsError::CheckpointMetadata {
        path: path.to_path_buf(),
        reason,
    };
    let json = meta.remove(META_MODEL).ok_or_else(|| {
        bad(format!(
            "no `{META_MODEL}` entry (not a tweedie checkpoint?)"
        ))
    })?;
    take_format_version(&mut meta).map_err(bad)?;
    let config: ModelConfig =
        serde_json::from_str(&json).map_err(|e| bad(format!("model config: {e}")))?;
    // Untrusted sizes first: validate() and the builder assume them bounded.
    crate::budget::check_untrusted(&config.net, Some(stored)).map_err(|e| bad(e.to_string()))?;
    config.net.validate()?;
    crate::conditioning::check_network(
        config.conditioning.as_ref(),
        &config.net.sample_shape(),
        config.net.cond_channels(),
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok((config, meta.into_iter().collect()))
}

fn view_to_tensor(
    path: &Path,
    name: &str,
    v: &safetensors::tensor::TensorView<'_>,
) -> Result<Tensor> {
    let kind = match v.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        d => {
            return Err(NetsError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.into(),
                dtype: format!("{d:?}"),
            });
        }
    };
    let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(v.data(), &shape, kind)?.to_kind(Kind::Float))
}

/// Copies every variable of `vs` from the safetensors `bytes`, checking names and shapes;
/// tensors named in `ignore` may be present in the file without a matching variable.
pub fn load_into(path: &Path, bytes: &[u8], vs: &VarStore, ignore: &[&str]) -> Result<()> {
    let (st, _) = parse(path, bytes)?;
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(|_| NetsError::MissingTensor {
            path: path.to_path_buf(),
            name: name.clone(),
        })?;
        let src = view_to_tensor(path, name, &view)?;
        if !bool::try_from(src.isfinite().all())? {
            return Err(NetsError::NonFiniteTensor {
                path: path.to_path_buf(),
                name: name.clone(),
            });
        }
        let mut dst = vars[name].shallow_clone();
        if src.size() != dst.size() {
            return Err(NetsError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: dst.size(),
                found: src.size(),
            });
        }
        tch::no_grad(|| dst.f_copy_(&src))?;
    }
    let mut extra: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !vars.contains_key(*n) && !ignore.contains(&n.as_str()))
        .cloned()
        .collect();
    extra.sort();
    if let Some(name) = extra.into_iter().next() {
        return Err(NetsError::UnexpectedTensor {
            path: path.to_path_buf(),
            name,
        });
    }
    Ok(())
}

/// Loads a tweedie checkpoint: config from metadata, then weights, onto `device`.
pub fn load_checkpoint(path: &Path, device: Device) -> Result<LoadedModel> {
    let bytes = read_file(path)?;
    let (st, meta) = parse(path, &bytes)?;
    let (config, extra) = config_from_meta(path, meta, stored_values(&st))?;
    let (vs, denoiser) = config.build(device)?;
    load_into(path, &bytes, &vs, &[])?;
    Ok(LoadedModel {
        vs,
        denoiser,
        config,
        extra,
    })
}

/// Loads a state_dict exported from the reference (NVlabs/edm `net.state_dict()` saved as
/// safetensors: names `model.enc.32x32_conv.weight`, …) into a denoiser built from `config`.
/// The iDDPM u-grid buffer `u` is recomputed by tweedie-core, so it is ignored.
pub fn load_reference_state_dict(
    path: &Path,
    config: &ModelConfig,
    device: Device,
) -> Result<LoadedModel> {
    let bytes = read_file(path)?;
    let (_, meta) = parse(path, &bytes)?;
    // The config is the caller's, not the file's: bound it, and let a network larger than the
    // file fail on the first missing or misshapen tensor, which names it.
    crate::budget::check_untrusted(&config.net, None).map_err(|e| {
        NetsError::CheckpointMetadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let (vs, denoiser) = config.build(device)?;
    load_into(path, &bytes, &vs, &["u"])?;
    Ok(LoadedModel {
        vs,
        denoiser,
        config: config.clone(),
        extra: meta.into_iter().collect(),
    })
}
