//! NVlabs/edm's class names and `_init_kwargs` translated into tweedie's model config, and the
//! network's state_dict collected from the module tree.
//!
//! Defaults are EDM's (training/networks.py), which differ from tweedie's: e.g. SongUNet's
//! `channel_mult` defaults to [1,2,2,2] and `dropout` to 0.10 there.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};
use tweedie_core::defaults as df;
use tweedie_core::Precond;

use super::pickle::StorageType;
use super::torch::TensorView;
use super::value::{Converter, Value};
use super::{io_err, ImportError};
use crate::checkpoint::{save_checkpoint, ModelConfig};
use crate::config::DhariwalConfig;
use crate::config::{DecoderType, Embedding, EncoderType, NetConfig, UnetConfig};
use crate::error::NetsError;
use crate::precond::Wrapper;

/// What an EDM pickle holds, translated: the config, the named tensors (state_dict order, the
/// iDDPM `u` buffer dropped after checking it) and metadata (original class names and kwargs).
#[derive(Debug)]
pub struct EdmImport<'a> {
    /// The tweedie model config.
    pub config: ModelConfig,
    /// state_dict entries by EDM name (which is tweedie's name).
    pub tensors: Vec<(String, TensorView<'a>)>,
    /// Metadata written next to `tweedie.model` (`edm.class_name`, `edm.init_kwargs`, …).
    pub metadata: BTreeMap<String, String>,
}

/// Summary of an import for the CLI.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Preconditioner class (EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond).
    pub precond_class: String,
    /// Network class (SongUNet, DhariwalUNet).
    pub model_class: String,
    /// The translated config.
    pub config: ModelConfig,
    /// Number of tensors written.
    pub tensors: usize,
    /// Number of scalars in them.
    pub scalars: usize,
}

fn structure(what: &str, reason: impl Into<String>) -> ImportError {
    ImportError::Structure {
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn unsupported(what: &str, reason: impl Into<String>) -> ImportError {
    ImportError::Unsupported {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// A persistent object's class name and state.
fn persistent<'v, 'a>(
    v: &'v Value<'a>,
    what: &str,
    role: &str,
) -> Result<(&'v str, &'v Value<'a>), ImportError> {
    match v {
        Value::Persistent {
            class_name, state, ..
        } => Ok((class_name, state)),
        Value::None => Err(structure(
            what,
            format!("{role} is None (a snapshot without a network?)"),
        )),
        o => Err(structure(
            what,
            format!("{role} is a {}, not an EDM persistent object", o.kind()),
        )),
    }
}

/// The keyword arguments of an EDM object, consumed one by one; leftovers are refused.
struct Kwargs<'v, 'a> {
    what: String,
    class: String,
    map: BTreeMap<String, &'v Value<'a>>,
}

impl<'v, 'a> Kwargs<'v, 'a> {
    fn of(state: &'v Value<'a>, class: &str, what: &str) -> Result<Self, ImportError> {
        match state.get("_init_args") {
            None | Some(Value::None) => {}
            Some(Value::Tuple(t)) | Some(Value::List(t)) if t.is_empty() => {}
            Some(_) => {
                return Err(unsupported(
                    what,
                    format!("{class} was built with positional arguments"),
                ))
            }
        }
        let Some(Value::Dict(items)) = state.get("_init_kwargs") else {
            return Err(structure(
                what,
                format!("{class} has no `_init_kwargs` dict (recorded init args)"),
            ));
        };
        let mut map = BTreeMap::new();
        for (k, v) in items {
            let Value::Str(k) = k else {
                return Err(structure(
                    what,
                    format!("{class} kwargs have a {} key", k.kind()),
                ));
            };
            map.insert(k.clone(), v);
        }
        Ok(Kwargs {
            what: what.to_string(),
            class: class.to_string(),
            map,
        })
    }

    fn bad(&self, key: &str, v: &Value<'_>, want: &str) -> ImportError {
        structure(
            &self.what,
            format!("{}.{key} is {v:?}, expected {want}", self.class),
        )
    }

    fn take(&mut self, key: &str) -> Option<&'v Value<'a>> {
        self.map.remove(key)
    }

    fn usize(&mut self, key: &str, default: Option<usize>) -> Result<usize, ImportError> {
        match self.take(key) {
            Some(Value::Int(i)) if *i >= 0 => Ok(*i as usize),
            Some(Value::Bool(b)) => Ok(*b as usize),
            Some(v) => Err(self.bad(key, v, "a non-negative integer")),
            None => default.ok_or_else(|| {
                structure(
                    &self.what,
                    format!("{} lacks required kwarg `{key}`", self.class),
                )
            }),
        }
    }

    fn f64(&mut self, key: &str, default: f64) -> Result<f64, ImportError> {
        match self.take(key) {
            Some(Value::Int(i)) => Ok(*i as f64),
            Some(Value::Float(f)) => Ok(*f),
            Some(v) => Err(self.bad(key, v, "a number")),
            None => Ok(default),
        }
    }

    fn bool(&mut self, key: &str, default: bool) -> Result<bool, ImportError> {
        match self.take(key) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Int(i)) => Ok(*i != 0),
            Some(v) => Err(self.bad(key, v, "a bool")),
            None => Ok(default),
        }
    }

    fn string(&mut self, key: &str, default: &str) -> Result<String, ImportError> {
        match self.take(key) {
            Some(Value::Str(s)) => Ok(s.clone()),
            Some(v) => Err(self.bad(key, v, "a string")),
            None => Ok(default.to_string()),
        }
    }

    fn list(&mut self, key: &str, default: &[f64]) -> Result<Vec<f64>, ImportError> {
        match self.take(key) {
            Some(v @ (Value::List(items) | Value::Tuple(items))) => items
                .iter()
                .map(|x| match x {
                    Value::Int(i) => Ok(*i as f64),
                    Value::Float(f) => Ok(*f),
                    _ => Err(self.bad(key, v, "a list of numbers")),
                })
                .collect(),
            Some(v) => Err(self.bad(key, v, "a list")),
            None => Ok(default.to_vec()),
        }
    }

    fn usizes(&mut self, key: &str, default: &[usize]) -> Result<Vec<usize>, ImportError> {
        let d: Vec<f64> = default.iter().map(|&x| x as f64).collect();
        let v = self.list(key, &d)?;
        v.iter()
            .map(|&x| {
                if x >= 0.0 && x.fract() == 0.0 {
                    Ok(x as usize)
                } else {
                    Err(structure(
                        &self.what,
                        format!("{}.{key} holds {x}, expected integers", self.class),
                    ))
                }
            })
            .collect()
    }

    /// Refuses kwargs nobody consumed: tweedie would silently build a different network.
    fn finish(self) -> Result<(), ImportError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(unsupported(
                &self.what,
                format!("{} kwarg `{k}` is not known to this importer", self.class),
            )),
        }
    }
}

/// A value as JSON for metadata; non-finite floats become strings ("inf"), tensors a summary.
fn to_json(v: &Value<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::BigInt => J::String("<big int>".into()),
        Value::Float(f) if f.is_finite() => J::from(*f),
        Value::Float(f) => J::String(f.to_string()),
        Value::Str(s) => J::String(s.clone()),
        Value::Bytes(n) => J::String(format!("<{n} bytes>")),
        Value::Tuple(x) | Value::List(x) | Value::Set(x) => {
            J::Array(x.iter().map(to_json).collect())
        }
        Value::Dict(items) => J::Object(
            items
                .iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::Str(s) => s.clone(),
                        o => to_json(o).to_string(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Value::Storage(_) => J::String("<storage>".into()),
        Value::Tensor(t) => J::String(format!("<tensor {:?}>", t.size)),
        Value::Persistent { class_name, .. } => J::String(format!("<{class_name}>")),
        Value::ModuleDict(_) => J::String("<ModuleDict>".into()),
    }
}

fn kwargs_json(state: &Value<'_>) -> String {
    state
        .get("_init_kwargs")
        .map(|k| to_json(k).to_string())
        .unwrap_or_else(|| "null".into())
}

/// SongUNet kwargs with EDM's defaults.
fn song_unet(k: &mut Kwargs<'_, '_>) -> Result<UnetConfig, ImportError> {
    let what = k.what.clone();
    let embedding = match k.string("embedding_type", "positional")?.as_str() {
        "positional" => Embedding::Positional,
        "fourier" => Embedding::Fourier,
        o => return Err(unsupported(&what, format!("SongUNet embedding_type '{o}'"))),
    };
    let encoder = match k.string("encoder_type", "standard")?.as_str() {
        "standard" => EncoderType::Standard,
        "skip" => EncoderType::Skip,
        "residual" => EncoderType::Residual,
        o => return Err(unsupported(&what, format!("SongUNet encoder_type '{o}'"))),
    };
    let decoder = match k.string("decoder_type", "standard")?.as_str() {
        "standard" => DecoderType::Standard,
        "skip" => DecoderType::Skip,
        o => return Err(unsupported(&what, format!("SongUNet decoder_type '{o}'"))),
    };
    Ok(UnetConfig {
        resolution: k.usize("img_resolution", None)?,
        // EDM's networks are square.
        width: None,
        in_channels: k.usize("in_channels", None)?,
        cond_channels: 0,
        out_channels: k.usize("out_channels", None)?,
        label_dim: k.usize("label_dim", Some(0))?,
        augment_dim: k.usize("augment_dim", Some(0))?,
        model_channels: k.usize("model_channels", Some(128))?,
        channel_mult: k.usizes("channel_mult", &[1, 2, 2, 2])?,
        channel_mult_emb: k.usize("channel_mult_emb", Some(4))?,
        num_blocks: k.usize("num_blocks", Some(4))?,
        attn_resolutions: k.usizes("attn_resolutions", &[16])?,
        dropout: k.f64("dropout", 0.10)?,
        label_dropout: k.f64("label_dropout", 0.0)?,
        embedding,
        channel_mult_noise: k.usize("channel_mult_noise", Some(1))?,
        encoder,
        decoder,
        resample_filter: k.list("resample_filter", &[1.0, 1.0])?,
    })
}

/// DhariwalUNet kwargs with EDM's defaults.
fn dhariwal_unet(k: &mut Kwargs<'_, '_>) -> Result<DhariwalConfig, ImportError> {
    Ok(DhariwalConfig {
        resolution: k.usize("img_resolution", None)?,
        in_channels: k.usize("in_channels", None)?,
        out_channels: k.usize("out_channels", None)?,
        label_dim: k.usize("label_dim", Some(0))?,
        augment_dim: k.usize("augment_dim", Some(0))?,
        model_channels: k.usize("model_channels", Some(192))?,
        channel_mult: k.usizes("channel_mult", &[1, 2, 3, 4])?,
        channel_mult_emb: k.usize("channel_mult_emb", Some(4))?,
        num_blocks: k.usize("num_blocks", Some(3))?,
        attn_resolutions: k.usizes("attn_resolutions", &[32, 16, 8])?,
        dropout: k.f64("dropout", 0.10)?,
        label_dropout: k.f64("label_dropout", 0.0)?,
    })
}

/// A float attribute of the state must agree with what the kwargs say (it is what EDM used).
fn check_attr(
    state: &Value<'_>,
    class: &str,
    key: &str,
    want: f64,
    what: &str,
) -> Result<(), ImportError> {
    let got = match state.get(key) {
        Some(Value::Float(f)) => *f,
        Some(Value::Int(i)) => *i as f64,
        _ => return Ok(()),
    };
    let same = got == want || (got - want).abs() <= 1e-6 * want.abs().max(1.0);
    if same {
        Ok(())
    } else {
        Err(structure(
            what,
            format!("{class}.{key} = {got} but its kwargs give {want}"),
        ))
    }
}

/// Collects parameters and persistent buffers of a module tree in state_dict order.
fn collect<'a>(
    module: &Value<'a>,
    prefix: &str,
    out: &mut Vec<(String, TensorView<'a>)>,
    what: &str,
) -> Result<(), ImportError> {
    let state = match module {
        Value::Persistent { state, .. } | Value::ModuleDict(state) => state.as_ref(),
        o => {
            return Err(structure(
                what,
                format!("module `{prefix}` is a {}", o.kind()),
            ))
        }
    };
    let skip: Vec<&str> = match state.get("_non_persistent_buffers_set") {
        Some(Value::Set(s) | Value::List(s)) => s
            .iter()
            .filter_map(|v| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for field in ["_parameters", "_buffers"] {
        match state.get(field) {
            Some(Value::Dict(items)) => {
                for (k, v) in items {
                    let Value::Str(name) = k else {
                        return Err(structure(
                            what,
                            format!("`{prefix}{field}` has a non-string key"),
                        ));
                    };
                    match v {
                        Value::None => {}
                        _ if field == "_buffers" && skip.contains(&name.as_str()) => {}
                        Value::Tensor(t) => out.push((format!("{prefix}{name}"), t.clone())),
                        o => {
                            return Err(structure(
                                what,
                                format!("`{prefix}{name}` is a {}, not a tensor", o.kind()),
                            ))
                        }
                    }
                }
            }
            None => {}
            Some(o) => {
                return Err(structure(
                    what,
                    format!("`{prefix}{field}` is a {}", o.kind()),
                ))
            }
        }
    }
    match state.get("_modules") {
        Some(Value::Dict(items)) => {
            for (k, v) in items {
                let Value::Str(name) = k else {
                    return Err(structure(
                        what,
                        format!("`{prefix}_modules` has a non-string key"),
                    ));
                };
                if !matches!(v, Value::None) {
                    collect(v, &format!("{prefix}{name}."), out, what)?;
                }
            }
        }
        None => {}
        Some(o) => {
            return Err(structure(
                what,
                format!("`{prefix}_modules` is a {}", o.kind()),
            ))
        }
    }
    Ok(())
}

/// Decodes a float tensor to f64 (for checks on small buffers).
fn to_f64(t: &TensorView<'_>) -> Vec<f64> {
    let b = t.contiguous_bytes();
    match t.storage.dtype {
        StorageType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        StorageType::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        StorageType::Bf16 => b
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
            .collect(),
        // Half buffers are not expected; NaN fails the comparison that uses this.
        StorageType::F16 => vec![f64::NAN; b.len() / 2],
    }
}

/// Translates the network of an EDM snapshot (or a bare pickled EDM network) in `bytes`.
pub fn read_edm<'a>(bytes: &'a [u8], what: &str) -> Result<EdmImport<'a>, ImportError> {
    let p = super::pickle::parse(bytes, 0, false, what)?;
    if p.end != bytes.len() {
        return Err(structure(
            what,
            format!("{} bytes after the pickle's end", bytes.len() - p.end),
        ));
    }
    let root = Converter::new(&p, bytes.len(), what).root()?;
    let net = match &root {
        Value::Dict(_) => root
            .get("ema")
            .ok_or_else(|| structure(what, "a dict without `ema`: not an EDM training snapshot"))?,
        v => v,
    };
    let (pclass, pstate) = persistent(net, what, "the network (`ema`)")?;
    let mut pk = Kwargs::of(pstate, pclass, what)?;
    let img_resolution = pk.usize("img_resolution", None)?;
    let img_channels = pk.usize("img_channels", None)?;
    let label_dim = pk.usize("label_dim", Some(0))?;
    let use_fp16 = pk.bool("use_fp16", false)?;
    let mut metadata = BTreeMap::new();
    let (precond, default_model, out_factor) = match pclass {
        "EDMPrecond" => {
            let sigma_data = pk.f64("sigma_data", df::SIGMA_DATA)?;
            let smin = pk.f64("sigma_min", 0.0)?;
            let smax = pk.f64("sigma_max", f64::INFINITY)?;
            check_attr(pstate, pclass, "sigma_data", sigma_data, what)?;
            metadata.insert("edm.sigma_min".into(), smin.to_string());
            metadata.insert("edm.sigma_max".into(), smax.to_string());
            (Precond::Edm { sigma_data }, "DhariwalUNet", 1)
        }
        "VPPrecond" => {
            let beta_d = pk.f64("beta_d", df::VP_BETA_D)?;
            let beta_min = pk.f64("beta_min", df::VP_BETA_MIN)?;
            let m = pk.f64("M", df::VP_M)?;
            let eps_t = pk.f64("epsilon_t", df::VP_EPS_T)?;
            for (k, v) in [("beta_d", beta_d), ("beta_min", beta_min), ("M", m), ("epsilon_t", eps_t)] {
                check_attr(pstate, pclass, k, v, what)?;
            }
            (
                Precond::Vp {
                    beta_min,
                    beta_d,
                    m,
                    eps_t,
                },
                "SongUNet",
                1,
            )
        }
        "VEPrecond" => {
            let smin = pk.f64("sigma_min", df::VE_SIGMA_MIN)?;
            let smax = pk.f64("sigma_max", df::VE_SIGMA_MAX)?;
            metadata.insert("edm.sigma_min".into(), smin.to_string());
            metadata.insert("edm.sigma_max".into(), smax.to_string());
            (Precond::Ve, "SongUNet", 1)
        }
        "iDDPMPrecond" => {
            let c1 = pk.f64("C_1", df::IDDPM_C1)?;
            let c2 = pk.f64("C_2", df::IDDPM_C2)?;
            let m = pk.usize("M", Some(df::IDDPM_M))?;
            for (k, v) in [("C_1", c1), ("C_2", c2), ("M", m as f64)] {
                check_attr(pstate, pclass, k, v, what)?;
            }
            (Precond::Iddpm { c1, c2, m }, "DhariwalUNet", 2)
        }
        other => {
            return Err(unsupported(
                what,
                format!("preconditioner class `{other}` (known: EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond)"),
            ))
        }
    };
    precond
        .validate()
        .map_err(|e| unsupported(what, format!("{pclass} parameters: {e}")))?;
    let model_type = pk.string("model_type", default_model)?;
    // The remaining precond kwargs were forwarded to the network, whose own kwargs are read below.
    let model = pstate
        .get("_modules")
        .and_then(|m| m.get("model"))
        .ok_or_else(|| structure(what, format!("{pclass} has no `model` submodule")))?;
    let (mclass, mstate) = persistent(model, what, "`model`")?;
    if mclass != model_type {
        return Err(structure(
            what,
            format!("{pclass}.model_type is '{model_type}' but `model` is a {mclass}"),
        ));
    }
    let mut mk = Kwargs::of(mstate, mclass, what)?;
    let net_cfg = match mclass {
        "SongUNet" => NetConfig::Unet(song_unet(&mut mk)?),
        "DhariwalUNet" => NetConfig::Dhariwal(dhariwal_unet(&mut mk)?),
        other => {
            return Err(unsupported(
                what,
                format!("network class `{other}` (known: SongUNet, DhariwalUNet)"),
            ))
        }
    };
    mk.finish()?;
    let (res, cin, cout, mlabel) = match &net_cfg {
        NetConfig::Unet(u) => (u.resolution, u.in_channels, u.out_channels, u.label_dim),
        NetConfig::Dhariwal(u) => (u.resolution, u.in_channels, u.out_channels, u.label_dim),
        NetConfig::Mlp(_) => unreachable!("only U-Nets are translated"),
    };
    if (res, cin, cout, mlabel)
        != (
            img_resolution,
            img_channels,
            out_factor * img_channels,
            label_dim,
        )
    {
        return Err(structure(
            what,
            format!(
                "{mclass} is {res}×{res}, {cin}→{cout} channels, {mlabel} labels, but {pclass} says \
                 {img_resolution}×{img_resolution}, {img_channels} channels ({}× out), {label_dim} labels",
                out_factor
            ),
        ));
    }
    net_cfg
        .validate()
        .map_err(|e| unsupported(what, format!("{mclass} config: {e}")))?;

    let mut tensors = Vec::new();
    collect(net, "", &mut tensors, what)?;
    // iDDPM's u-grid is recomputed by tweedie-core; the file's copy must agree with it.
    if let Some(i) = tensors.iter().position(|(n, _)| n == "u") {
        let (_, u) = tensors.remove(i);
        let Some(grid) = precond.u_grid() else {
            return Err(structure(what, format!("{pclass} has a buffer `u`")));
        };
        let got = to_f64(&u);
        let worst = got
            .iter()
            .zip(&grid)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(
                if got.len() == grid.len() {
                    0.0
                } else {
                    f64::INFINITY
                },
                f64::max,
            );
        if worst.is_nan() || worst > 1e-4 {
            return Err(unsupported(
                what,
                format!("the file's iDDPM u-grid differs from tweedie-core's (relative {worst:e})"),
            ));
        }
    }
    metadata.insert("edm.class_name".into(), pclass.to_string());
    metadata.insert("edm.init_kwargs".into(), kwargs_json(pstate));
    metadata.insert("edm.model.class_name".into(), mclass.to_string());
    metadata.insert("edm.model.init_kwargs".into(), kwargs_json(mstate));
    metadata.insert("edm.use_fp16".into(), use_fp16.to_string());
    // Leftover precond kwargs are the network's; nothing else may hide there.
    for key in pk.map.keys() {
        if mk_known(key, mclass) {
            continue;
        }
        return Err(unsupported(
            what,
            format!("{pclass} kwarg `{key}` is not known to this importer"),
        ));
    }
    Ok(EdmImport {
        config: ModelConfig {
            net: net_cfg,
            wrapper: Wrapper::Precond(precond),
            conditioning: None,
        },
        tensors,
        metadata,
    })
}

/// Whether `key` is a kwarg of network class `class` (forwarded through the preconditioner).
fn mk_known(key: &str, class: &str) -> bool {
    const COMMON: &[&str] = &[
        "augment_dim",
        "model_channels",
        "channel_mult",
        "channel_mult_emb",
        "num_blocks",
        "attn_resolutions",
        "dropout",
        "label_dropout",
    ];
    const SONG: &[&str] = &[
        "embedding_type",
        "channel_mult_noise",
        "encoder_type",
        "decoder_type",
        "resample_filter",
    ];
    COMMON.contains(&key) || (class == "SongUNet" && SONG.contains(&key))
}

fn kind_of(t: &TensorView<'_>) -> Kind {
    match t.storage.dtype {
        StorageType::F32 => Kind::Float,
        StorageType::F64 => Kind::Double,
        StorageType::F16 => Kind::Half,
        StorageType::Bf16 => Kind::BFloat16,
    }
}

/// Imports the EDM pickle at `input` into a tweedie checkpoint at `output`: translates the config,
/// builds the tweedie network, copies every tensor into it (names and shapes must match exactly)
/// and saves it atomically with the EDM metadata.
pub fn import_edm(input: &Path, output: &Path) -> Result<ImportReport, ImportError> {
    let bytes = std::fs::read(input).map_err(|e| io_err(input, e))?;
    let what = input.display().to_string();
    let imp = read_edm(&bytes, &what)?;
    // The pickle's kwargs are untrusted: bound them before building. A weight is at least
    // 2 bytes (f16), so the file holds at most len/2 values.
    crate::budget::check_untrusted(&imp.config.net, Some(bytes.len() as u128 / 2)).map_err(
        |e| NetsError::CheckpointMetadata {
            path: input.to_path_buf(),
            reason: e.to_string(),
        },
    )?;
    let (vs, _) = imp.config.build(Device::Cpu)?;
    let vars = vs.variables();
    let mut seen = std::collections::HashSet::new();
    // Tensor bytes beyond twice the file would mean storages reused over and over: refuse.
    let mut budget = 2 * bytes.len();
    let mut scalars = 0;
    for (name, view) in &imp.tensors {
        let Some(dst) = vars.get(name) else {
            return Err(NetsError::UnexpectedTensor {
                path: input.to_path_buf(),
                name: name.clone(),
            }
            .into());
        };
        if !seen.insert(name.clone()) {
            return Err(structure(&what, format!("tensor `{name}` appears twice")));
        }
        let shape: Vec<i64> = view.size.iter().map(|&d| d as i64).collect();
        if shape != dst.size() {
            return Err(NetsError::ShapeMismatch {
                path: input.to_path_buf(),
                name: name.clone(),
                expected: dst.size(),
                found: shape,
            }
            .into());
        }
        let n = view.numel() * view.storage.dtype.size();
        if n > budget {
            return Err(ImportError::Tensor {
                what: what.clone(),
                reason: "tensors read more bytes than twice the file holds (storages reused)"
                    .into(),
            });
        }
        budget -= n;
        let data = view.contiguous_bytes();
        let src = Tensor::f_from_data_size(&data, &shape, kind_of(view))
            .map_err(NetsError::from)?
            .to_kind(Kind::Float);
        let mut dst = dst.shallow_clone();
        tch::no_grad(|| dst.f_copy_(&src)).map_err(NetsError::from)?;
        scalars += view.numel();
    }
    let mut missing: Vec<&String> = vars.keys().filter(|k| !seen.contains(*k)).collect();
    missing.sort();
    if let Some(name) = missing.first() {
        return Err(NetsError::MissingTensor {
            path: input.to_path_buf(),
            name: (*name).clone(),
        }
        .into());
    }
    let mut meta = imp.metadata.clone();
    if let Some(f) = input.file_name() {
        meta.insert("edm.source".into(), f.to_string_lossy().into_owned());
    }
    save_checkpoint(output, &vs, &imp.config, &meta)?;
    let (pclass, mclass) = (
        imp.metadata["edm.class_name"].clone(),
        imp.metadata["edm.model.class_name"].clone(),
    );
    Ok(ImportReport {
        precond_class: pclass,
        model_class: mclass,
        config: imp.config,
        tensors: imp.tensors.len(),
        scalars,
    })
}
