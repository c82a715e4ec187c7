//! The training config: TOML sections `[diffusion]`, `[sampling]`, `[data]`, `[network]`,
//! `[training]`, `[eval]`; `--set key=value` overrides; validation naming key and value.
//!
//! `[network]` takes `preset = "ddpmpp-tiny"` (a tweedie-nets preset) plus any of the
//! network's own keys, which override the preset. Shape keys (resolution, channels, dim,
//! label_dim) are then set from the data by the trainer.

use std::path::Path;
use tweedie_core::Invalid;

use serde::{Deserialize, Serialize};
use tweedie_nets::{Conditioning, EmaSchedule, NetConfig};
use tweedie_samplers::{SamplerKind, SamplerParams, SamplerSpec};

use crate::data::DataConfig;
use crate::error::{at_least_one, positive, section_value, Result, TrainError};
use crate::formulation::{DiffusionConfig, Formulation};
use crate::optim::AdamConfig;

/// Defaults of the train config (the classifier's `[training]` shares its optimiser's).
pub(crate) mod d {
    pub fn steps_sampling() -> usize {
        18
    }
    pub fn sampler() -> String {
        "heun".into()
    }
    pub fn grid() -> usize {
        64
    }
    pub fn batch_size() -> usize {
        128
    }
    pub fn lr() -> f64 {
        1e-3
    }
    pub fn warmup() -> u64 {
        100
    }
    pub fn grad_clip() -> Option<f64> {
        Some(1.0)
    }
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.999
    }
    pub fn adam_eps() -> f64 {
        1e-8
    }
    pub fn ema() -> tweedie_nets::EmaSchedule {
        // Half-life ramp-up of 5 % of the images seen (EDM), capped at 500 kimg: suits short runs.
        tweedie_nets::EmaSchedule::edm_default()
    }
    pub fn train_steps() -> u64 {
        2000
    }
    pub fn ckpt_every() -> u64 {
        500
    }
    pub fn sample_every() -> u64 {
        1000
    }
    pub fn log_every() -> u64 {
        25
    }
    pub fn device() -> String {
        "auto".into()
    }
    pub fn label_dropout() -> f64 {
        0.1
    }
    pub fn eval_n() -> usize {
        1000
    }
    pub fn eval_sigmas() -> Vec<f64> {
        vec![0.1, 0.3, 1.0, 3.0]
    }
    pub fn eval_batch() -> usize {
        500
    }
}

/// `[sampling]`: how samples (grids, evaluation) are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Steps N of the ρ-grid (EDM: 18 for Heun on CIFAR-10).
    #[serde(default = "d::steps_sampling")]
    pub steps: usize,
    /// Sampler name (tweedie-samplers); "heun" with `s_churn` > 0 is EDM's stochastic sampler.
    #[serde(default = "d::sampler")]
    pub sampler: String,
    /// EDM stochastic sampler: S_churn, S_min, S_max, S_noise (Karras et al. 2022, Alg. 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s_churn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s_max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s_noise: Option<f64>,
    /// η of DDIM / ancestral samplers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    /// Samples in each PNG grid.
    #[serde(default = "d::grid")]
    pub grid: usize,
    /// Seed of the sampler's noise (sample i depends on (seed, i) only).
    #[serde(default)]
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            steps: d::steps_sampling(),
            sampler: d::sampler(),
            s_churn: None,
            s_min: None,
            s_max: None,
            s_noise: None,
            eta: None,
            grid: d::grid(),
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// The sampler parameters set in this section.
    pub fn params(&self) -> SamplerParams {
        SamplerParams {
            s_churn: self.s_churn,
            s_min: self.s_min,
            s_max: self.s_max,
            s_noise: self.s_noise,
            eta: self.eta,
        }
    }

    /// The sampler with its parameters, validated ([`SamplerKind::with_params`]).
    pub fn spec(&self) -> Result<SamplerSpec> {
        let kind =
            SamplerKind::with_params(&self.sampler, &self.params()).map_err(|e| match e {
                tweedie_samplers::SamplerError::InvalidValue(v) => {
                    TrainError::InvalidValue(v.in_section("sampling"))
                }
                other => TrainError::invalid("sampling.sampler", &self.sampler, other.to_string()),
            })?;
        let spec = SamplerSpec {
            kind,
            steps: self.steps,
        };
        spec.validate()
            .map_err(|e| TrainError::invalid("sampling", &self.sampler, e.to_string()))?;
        Ok(spec)
    }
}

/// `[training]`: optimiser, schedule, intervals, seed, device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Samples per step.
    #[serde(default = "d::batch_size")]
    pub batch_size: usize,
    /// Adam learning rate after warm-up.
    #[serde(default = "d::lr")]
    pub lr: f64,
    /// Linear LR warm-up over this many steps (lr·min(1, (k+1)/warmup)).
    #[serde(default = "d::warmup")]
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this value (none when absent).
    #[serde(default = "d::grad_clip", skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Adam β₁, β₂, ε (Kingma & Ba 2015).
    #[serde(default = "d::beta1")]
    pub adam_beta1: f64,
    #[serde(default = "d::beta2")]
    pub adam_beta2: f64,
    #[serde(default = "d::adam_eps")]
    pub adam_eps: f64,
    /// EMA of the weights (tweedie-nets schedules).
    #[serde(default = "d::ema")]
    pub ema: EmaSchedule,
    /// Optimiser steps.
    #[serde(default = "d::train_steps")]
    pub steps: u64,
    /// Write a checkpoint every N steps (and at the end, and on Ctrl-C).
    #[serde(default = "d::ckpt_every")]
    pub checkpoint_every: u64,
    /// Write a sample grid every N steps (0 = only at the end).
    #[serde(default = "d::sample_every")]
    pub sample_every: u64,
    /// Append to metrics.jsonl every N steps.
    #[serde(default = "d::log_every")]
    pub log_every: u64,
    /// Seed of initial weights, batches, noise levels and noise.
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "d::device")]
    pub device: String,
    /// Train a class-conditional model on the data's labels.
    #[serde(default)]
    pub conditional: bool,
    /// Conditional training only: the probability with which a sample's class label is
    /// replaced by the null label (the all-zero one-hot), so that the one network also learns
    /// the unconditional denoiser that classifier-free guidance (`tweedie sample --cfg`) needs.
    /// Default 0.1: Ho & Salimans 2022 (§4.1) found p_uncond = 0.1 and 0.2 equally good and
    /// 0.5 worse, and DiT (Peebles & Xie 2023) trains with 0.1; EDM's `label_dropout` network
    /// argument defaults to 0 because its conditional models were never guided. Drawn per
    /// sample from the keyed noise (stream [`crate::trainer::STREAM_LABEL_DROP`]), so runs do
    /// not depend on the batch split, the rank count or a resume.
    #[serde(default = "d::label_dropout")]
    pub label_dropout: f64,
    /// Random horizontal flips of image data (probability ½), off by default (digits are not symmetric).
    #[serde(default)]
    pub hflip: bool,
    /// Uniform dequantisation of integer data (digits, 8-bit images): each training value
    /// moves uniformly within its level's bin, x + (u − ½)/c, c = (L − 1)/2, drawn per sample
    /// and element from the keyed noise (stream [`crate::trainer::STREAM_DEQUANTIZE`]). The
    /// model then learns a density without point masses at the levels, which is what the
    /// dequantised likelihood (`tweedie likelihood --levels`) bounds tightly at small σ̃_min
    /// (Song et al. 2021, "Maximum likelihood training of score-based diffusion models").
    /// Off by default; an error on data without levels.
    #[serde(default)]
    pub dequantize: bool,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            batch_size: d::batch_size(),
            lr: d::lr(),
            warmup_steps: d::warmup(),
            grad_clip: d::grad_clip(),
            adam_beta1: d::beta1(),
            adam_beta2: d::beta2(),
            adam_eps: d::adam_eps(),
            ema: d::ema(),
            steps: d::train_steps(),
            checkpoint_every: d::ckpt_every(),
            sample_every: d::sample_every(),
            log_every: d::log_every(),
            seed: 0,
            device: d::device(),
            conditional: false,
            label_dropout: d::label_dropout(),
            hflip: false,
            dequantize: false,
        }
    }
}

/// Adam's keys, which the denoiser's and the classifier's `[training]` sections name alike
/// (serde cannot flatten one shared struct into sections that deny unknown keys): one mapping
/// onto [`AdamConfig`] for both, and one check ([`check_adam`]).
macro_rules! adam_keys {
    ($($section:ty),+) => {$(
        impl $section {
            /// The optimiser that the section's Adam keys describe.
            pub fn adam(&self) -> AdamConfig {
                AdamConfig {
                    lr: self.lr,
                    beta1: self.adam_beta1,
                    beta2: self.adam_beta2,
                    eps: self.adam_eps,
                    warmup_steps: self.warmup_steps,
                    grad_clip: self.grad_clip,
                }
            }
        }
    )+};
}
adam_keys!(
    TrainingConfig,
    crate::guidance_classifier::ClassifierTraining
);

/// Checks a `[training]` section's Adam keys; errors name the key and value.
pub(crate) fn check_adam(a: &AdamConfig) -> Result<()> {
    positive("training.lr", a.lr)?;
    if let Some(c) = a.grad_clip {
        positive("training.grad_clip", c)?;
    }
    for (k, v) in [
        ("training.adam_beta1", a.beta1),
        ("training.adam_beta2", a.beta2),
    ] {
        if !(0.0..1.0).contains(&v) {
            return Err(TrainError::invalid(k, v, "must be in [0, 1)"));
        }
    }
    positive("training.adam_eps", a.eps)?;
    Ok(())
}

/// `[eval]`: what the report measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Samples generated for evaluation.
    #[serde(default = "d::eval_n")]
    pub n_samples: usize,
    /// Samples per sampler batch.
    #[serde(default = "d::eval_batch")]
    pub batch_size: usize,
    /// σ̃ at which the trained denoiser is compared with a reference on held-out data.
    #[serde(default = "d::eval_sigmas")]
    pub denoiser_sigmas: Vec<f64>,
    /// Skip evaluation at the end of training.
    #[serde(default)]
    pub skip: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            n_samples: d::eval_n(),
            batch_size: d::eval_batch(),
            denoiser_sigmas: d::eval_sigmas(),
            skip: false,
        }
    }
}

/// A whole training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub diffusion: DiffusionConfig,
    pub sampling: SamplingConfig,
    pub data: DataConfig,
    pub network: NetConfig,
    pub training: TrainingConfig,
    pub eval: EvalConfig,
    /// `[conditioning]`: train a network conditioned on a low-resolution version of each
    /// sample (`kind = "downscale"`, `factor = f`: the f×f block averages, upsampled and
    /// concatenated to the network's input channels). Absent: unconditioned on images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditioning: Option<Conditioning>,
}

const SECTIONS: [&str; 7] = [
    "diffusion",
    "sampling",
    "data",
    "network",
    "training",
    "eval",
    "conditioning",
];

/// Top-level key naming the config a file builds on (`extends = "base/toy.toml"`), resolved
/// relative to the file that holds it.
pub const EXTENDS: &str = "extends";

/// Reads a config file as a TOML table with the files it extends merged underneath it:
/// the base first, then each file's own keys on top ([`merge`]). A missing base or a cycle is
/// an error naming the files.
pub fn read_table(path: &Path) -> Result<toml::Table> {
    read_chain(path, &mut Vec::new())
}

fn read_chain(path: &Path, chain: &mut Vec<std::path::PathBuf>) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    // Canonical paths so that `a.toml` and `./x/../a.toml` are seen as one file in a cycle.
    let canon = path.canonicalize().map_err(|e| TrainError::io(path, e))?;
    if let Some(i) = chain.iter().position(|p| *p == canon) {
        let cycle: Vec<String> = chain[i..]
            .iter()
            .chain([&canon])
            .map(|p| p.display().to_string())
            .collect();
        return Err(TrainError::Config(format!(
            "`{EXTENDS}` cycle: {}",
            cycle.join(" → ")
        )));
    }
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let base = match table.remove(EXTENDS) {
        None => return Ok(table),
        Some(toml::Value::String(b)) => b,
        Some(other) => {
            return Err(TrainError::invalid(
                &format!("{} {EXTENDS}", path.display()),
                other,
                "must be the path of another config file (a string)",
            ))
        }
    };
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&base);
    chain.push(canon);
    let mut merged = read_chain(&base_path, chain).map_err(|e| match e {
        // A base that cannot be read is named together with the file that asked for it.
        TrainError::Io { path: p, source } => TrainError::Config(format!(
            "{}: {EXTENDS} = \"{base}\": cannot read {}: {source}",
            path.display(),
            p.display()
        )),
        other => other,
    })?;
    chain.pop();
    merge(&mut merged, table);
    Ok(merged)
}

/// Deep-merges `over` into `base`: tables merge key by key, any other value (arrays
/// included) replaces the base's. A table whose `type` or `preset` differs from the base's is
/// replaced whole, so that keys of one variant (EDM's `p_mean`) never leak into another (VP).
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if ["type", "preset"]
                    .iter()
                    .all(|tag| o.get(*tag).is_none() || o.get(*tag) == b.get(*tag)) =>
            {
                merge(b, o)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Parses `value` as a TOML value (number, bool, array, inline table, quoted string); anything
/// that does not parse is taken as a bare string (`--set data.type=moons`).
fn parse_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

/// Applies one `key=value` override (dotted key) to a TOML table, creating tables on the way.
pub fn apply_set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set `{assignment}`: expected key=value")))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::Config(format!(
            "--set `{assignment}`: empty key component"
        )));
    }
    let (last, path) = parts
        .split_last()
        .ok_or_else(|| TrainError::Config(format!("--set `{assignment}`: empty key")))?;
    let mut cur = table;
    for (i, p) in path.iter().enumerate() {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(TrainError::Config(format!(
                    "--set `{assignment}`: `{}` is a value, not a section",
                    parts[..=i].join(".")
                )))
            }
        };
    }
    cur.insert(last.to_string(), parse_value(value.trim()));
    Ok(())
}

/// Takes the section `name` out of a config table and deserialises it (`None` when absent).
pub(crate) fn section<T: serde::de::DeserializeOwned>(
    raw: &mut toml::Table,
    name: &str,
) -> Result<Option<T>> {
    raw.remove(name)
        .map(|v| section_value(&format!("[{name}]"), v))
        .transpose()
}

/// A config's TOML text as a table.
pub(crate) fn parse_table(text: &str) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))
}

/// Applies every `--set key=value` override in order.
pub(crate) fn apply_sets(raw: &mut toml::Table, sets: &[String]) -> Result<()> {
    sets.iter().try_for_each(|s| apply_set(raw, s))
}

/// Names the file in a config error (`path: message`); other errors pass unchanged.
pub(crate) fn in_file(path: &Path) -> impl FnOnce(TrainError) -> TrainError + '_ {
    move |e| match e {
        TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// Refuses what the top level of a config table may not hold: `extends`, which only a file
/// read by `<reader>::from_file` can resolve, and keys outside `sections` (the message says
/// `unknown section or key `k`{of} (sections: …)`).
pub(crate) fn check_top_level(
    raw: &toml::Table,
    sections: &[&str],
    reader: &str,
    of: &str,
) -> Result<()> {
    if raw.contains_key(EXTENDS) {
        return Err(TrainError::Config(format!(
            "`{EXTENDS}` names a file relative to the config that holds it: read the config with \
             {reader}::from_file"
        )));
    }
    if let Some(k) = raw.keys().find(|k| !sections.contains(&k.as_str())) {
        let names: Vec<String> = sections.iter().map(|s| format!("[{s}]")).collect();
        return Err(TrainError::Config(format!(
            "unknown section or key `{k}`{of} (sections: {})",
            names.join(", ")
        )));
    }
    Ok(())
}

/// The network preset used when `[network]` names none: an MLP for 2-D toys, the tiny U-Net otherwise.
fn default_preset(raw: &toml::Table) -> &'static str {
    let data_type = raw
        .get("data")
        .and_then(|d| d.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("digits");
    match data_type {
        "mixture" | "checkerboard" | "moons" | "swiss_roll" | "npy" => "mlp-2d",
        _ => "ddpmpp-tiny",
    }
}

/// Expands `[network]`: the preset's full table with the user's keys on top.
fn expand_network(raw: &toml::Table) -> Result<toml::Table> {
    let user = match raw.get("network") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(other) => {
            return Err(TrainError::Config(format!(
                "[network] must be a table, got {other}"
            )))
        }
    };
    let preset = match user.get("preset") {
        None => Some(default_preset(raw).to_string()),
        Some(toml::Value::String(s)) if s == "none" => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(TrainError::invalid(
                "network.preset",
                other,
                "must be a preset name",
            ))
        }
    };
    let mut out = match &preset {
        Some(p) => {
            let cfg = NetConfig::preset(p)
                .map_err(|e| TrainError::invalid("network.preset", p, e.to_string()))?;
            match toml::Value::try_from(&cfg) {
                Ok(toml::Value::Table(t)) => t,
                _ => {
                    return Err(TrainError::Config(format!(
                        "network preset `{p}` does not serialise to a table"
                    )))
                }
            }
        }
        None => toml::Table::new(),
    };
    if let (Some(a), Some(b)) = (out.get("type"), user.get("type")) {
        if a != b {
            // A different network type drops the preset's keys (they belong to the other type).
            out = toml::Table::new();
        }
    }
    for (k, v) in user {
        if k != "preset" {
            out.insert(k, v);
        }
    }
    Ok(out)
}

impl TrainConfig {
    /// Parses TOML text with overrides, expands the network preset and validates.
    pub fn from_toml_str(text: &str, sets: &[String]) -> Result<Self> {
        let mut raw = parse_table(text)?;
        apply_sets(&mut raw, sets)?;
        Self::from_table(raw)
    }

    /// Parses a run's saved config (its `config.toml`, or the copy in its training state) with
    /// overrides. A key the run predates reads as the value the run trained with, not today's
    /// default ([`crate::resume::fill_predated_keys`]), so a resume continues the run unchanged.
    pub fn from_run_toml_str(text: &str, sets: &[String]) -> Result<Self> {
        let mut raw = parse_table(text)?;
        crate::resume::fill_predated_keys(&mut raw);
        apply_sets(&mut raw, sets)?;
        Self::from_table(raw)
    }

    /// [`Self::from_run_toml_str`] of a run directory's `config.toml`.
    pub fn from_run_file(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_run_toml_str(&text, sets).map_err(in_file(path))
    }

    /// Reads a config file (and the files it `extends`) with overrides.
    pub fn from_file(path: &Path, sets: &[String]) -> Result<Self> {
        let mut raw = read_table(path)?;
        apply_sets(&mut raw, sets)?;
        Self::from_table(raw).map_err(in_file(path))
    }

    /// Builds from a parsed TOML table (after overrides).
    pub fn from_table(mut raw: toml::Table) -> Result<Self> {
        check_top_level(&raw, &SECTIONS, "TrainConfig", "")?;
        let net = expand_network(&raw)?;
        raw.insert("network".into(), toml::Value::Table(net));
        let diffusion = raw
            .remove("diffusion")
            .map(DiffusionConfig::from_toml)
            .transpose()?
            .ok_or_else(|| TrainError::Config("missing section [diffusion]".into()))?;
        let cfg = TrainConfig {
            diffusion,
            sampling: section(&mut raw, "sampling")?.unwrap_or_default(),
            data: section(&mut raw, "data")?.unwrap_or_default(),
            network: section(&mut raw, "network")?
                .ok_or_else(|| TrainError::Config("missing [network]".into()))?,
            training: section(&mut raw, "training")?.unwrap_or_default(),
            eval: section(&mut raw, "eval")?.unwrap_or_default(),
            conditioning: section(&mut raw, "conditioning")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved config as TOML (what the run directory keeps).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| TrainError::Config(format!("cannot write config: {e}")))
    }

    /// The resolved formulation.
    pub fn formulation(&self) -> Result<Formulation> {
        self.diffusion.resolve()
    }

    /// Checks every value; errors name the key and value.
    pub fn validate(&self) -> Result<()> {
        self.diffusion.resolve()?;
        self.sampling.spec()?;
        self.data.validate()?;
        self.network
            .validate()
            .map_err(|e| TrainError::invalid("network", "(config)", e.to_string()))?;
        let t = &self.training;
        at_least_one("training.batch_size", t.batch_size as u64)?;
        at_least_one("training.steps", t.steps)?;
        check_adam(&t.adam())?;
        if !(0.0..1.0).contains(&t.label_dropout) {
            return Err(TrainError::invalid(
                "training.label_dropout",
                t.label_dropout,
                "must be in [0, 1) (1 would never show the network a label)",
            ));
        }
        if self.network.label_dropout() > 0.0 {
            // Torch's per-step draw would give every rank the same rows' draws.
            return Err(TrainError::invalid(
                "network.label_dropout",
                self.network.label_dropout(),
                "the trainer drops labels itself, per sample from the keyed noise: set \
                 training.label_dropout instead and leave network.label_dropout at 0",
            ));
        }
        if let Some(c) = &self.conditioning {
            c.validate()?;
            if !matches!(self.network, NetConfig::Unet(_)) {
                return Err(TrainError::invalid(
                    "conditioning",
                    c,
                    "needs the SongUNet (network.type = \"unet\", e.g. preset ddpmpp-tiny): \
                     only it takes the condition's extra input channels",
                ));
            }
        } else if self.network.cond_channels() > 0 {
            return Err(TrainError::invalid(
                "network.cond_channels",
                self.network.cond_channels(),
                "is set from [conditioning] by the trainer: add a [conditioning] section \
                 (kind, factor) instead",
            ));
        }
        at_least_one("training.checkpoint_every", t.checkpoint_every)?;
        at_least_one("training.log_every", t.log_every)?;
        t.ema
            .validate()
            .map_err(|e| TrainError::invalid("training.ema", "(schedule)", e.to_string()))?;
        t.device
            .parse::<tweedie_nets::DeviceSpec>()
            .map_err(|e| TrainError::invalid("training.device", &t.device, e.to_string()))?;
        at_least_one("sampling.grid", self.sampling.grid as u64)?;
        if self.eval.n_samples == 0 || self.eval.batch_size == 0 {
            return Err(TrainError::invalid(
                "eval.n_samples",
                self.eval.n_samples,
                "n_samples and batch_size must be ≥ 1",
            ));
        }
        if self.eval.denoiser_sigmas.is_empty() {
            return Err(TrainError::invalid(
                "eval.denoiser_sigmas",
                "[]",
                "needs at least one noise level σ (e.g. [0.1, 0.5, 1.0])",
            ));
        }
        for &s in &self.eval.denoiser_sigmas {
            positive("eval.denoiser_sigmas", s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formulation::FormulationKind;

    const MIN: &str = "[diffusion]\ntype = \"EDM\"\n";

    #[test]
    fn minimal_config_takes_defaults_and_round_trips() -> Result<()> {
        let c = TrainConfig::from_toml_str(MIN, &[])?;
        assert_eq!(c.data, DataConfig::Digits { path: None });
        // Ho & Salimans 2022's p_uncond for classifier-free guidance.
        assert_eq!(c.training.label_dropout, 0.1);
        assert!(matches!(c.network, NetConfig::Unet(_)));
        assert_eq!(c.training.batch_size, 128);
        let text = c.to_toml()?;
        let back = TrainConfig::from_toml_str(&text, &[])?;
        assert_eq!(back, c);
        Ok(())
    }

    #[test]
    fn issue_example_parses_and_heun_with_churn_is_the_edm_sampler() -> Result<()> {
        let text = "[diffusion]\ntype = \"EDM\"\nsigma_data = 1.0\nsigma_min = 0.002\nsigma_max = 80.0\nrho = 7.0\n\
                    p_mean = -1.2\np_std = 1.2\n[sampling]\nsteps = 40\nsampler = \"heun\"\ns_churn = 40.0\n\
                    s_min = 0.05\ns_max = 50.0\ns_noise = 1.003\n";
        let c = TrainConfig::from_toml_str(text, &[])?;
        let spec = c.sampling.spec()?;
        assert_eq!(spec.steps, 40);
        assert_eq!(
            spec.kind,
            SamplerKind::EdmStochastic {
                s_churn: 40.0,
                s_min: 0.05,
                s_max: 50.0,
                s_noise: 1.003
            }
        );
        assert_eq!(c.formulation()?.sigma_data, 1.0);
        Ok(())
    }

    #[test]
    fn set_overrides_reach_every_section_and_the_network_preset() -> Result<()> {
        let sets: Vec<String> = [
            "training.lr=2e-4",
            "training.ema={ type = \"power\", inv_gamma = 1.0, power = 0.75, max_decay = 0.999 }",
            "data.type=moons",
            "data.n=100",
            "network.hidden=32",
            "diffusion.type=flow",
            "sampling.sampler=euler",
        ]
        .map(String::from)
        .to_vec();
        let c = TrainConfig::from_toml_str(MIN, &sets)?;
        assert_eq!(c.training.lr, 2e-4);
        assert!(matches!(c.training.ema, EmaSchedule::Power { .. }));
        assert!(matches!(c.data, DataConfig::Moons { n: 100, .. }));
        match &c.network {
            NetConfig::Mlp(m) => assert_eq!(m.hidden, 32),
            other => panic!("{other:?}"),
        }
        let c = TrainConfig::from_toml_str(
            MIN,
            &[
                "network.preset=ncsnpp-tiny".into(),
                "network.model_channels=16".into(),
            ],
        )?;
        match &c.network {
            NetConfig::Unet(u) => assert_eq!((u.model_channels, u.resample_filter.len()), (16, 4)),
            other => panic!("{other:?}"),
        }
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_key_and_value() {
        let err = |text: &str, sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            TrainConfig::from_toml_str(text, &sets)
                .unwrap_err()
                .to_string()
        };
        let e = err(MIN, &["training.lrr=1"]);
        assert!(e.contains("[training]") && e.contains("lrr"), "{e}");
        let e = err(MIN, &["training.lr=-1"]);
        assert!(e.contains("training.lr") && e.contains("-1"), "{e}");
        // A value of the wrong type names its key, not only the section.
        let e = err(MIN, &["training.steps=abc"]);
        assert!(e.contains("[training] steps") && e.contains("abc"), "{e}");
        let e = err(MIN, &["training.batch_size=0"]);
        assert!(e.contains("training.batch_size"), "{e}");
        for p in ["1", "-0.1", "nan"] {
            let e = err(MIN, &[&format!("training.label_dropout={p}")]);
            assert!(e.contains("training.label_dropout"), "{e}");
        }
        let e = err(MIN, &["network.label_dropout=0.2"]);
        assert!(
            e.contains("network.label_dropout") && e.contains("training.label_dropout"),
            "{e}"
        );
        let e = err(MIN, &["trainin.lr=1"]);
        assert!(e.contains("trainin"), "{e}");
        let e = err(MIN, &["sampling.sampler=nope"]);
        assert!(e.contains("sampling.sampler") && e.contains("nope"), "{e}");
        let e = err(MIN, &["sampling.sampler=euler", "sampling.s_churn=10"]);
        assert!(e.contains("sampling.s_churn") && e.contains("euler"), "{e}");
        let e = err(MIN, &["network.preset=huge"]);
        assert!(e.contains("network.preset") && e.contains("huge"), "{e}");
        let e = err(MIN, &["training.device=tpu"]);
        assert!(e.contains("training.device") && e.contains("tpu"), "{e}");
        let e = err(MIN, &["diffusion.type=VP", "diffusion.p_mean=0"]);
        assert!(e.contains("[diffusion]") && e.contains("p_mean"), "{e}");
        let e = err("[diffusion]\ntype = \"EDM\"\n[training\n", &[]);
        assert!(e.contains("line"), "{e}");
        let e = err("", &[]);
        assert!(e.contains("[diffusion]"), "{e}");
        let e = err(MIN, &["training.lr"]);
        assert!(e.contains("key=value"), "{e}");
        let e = err(MIN, &["training.lr=1", "training.lr.x=1"]);
        assert!(
            e.contains("training.lr") && e.contains("not a section"),
            "{e}"
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn extends_merges_the_base_under_the_file_relative_to_it() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        write(
            dir.path(),
            "base/common.toml",
            "[diffusion]\ntype = \"EDM\"\np_mean = -1.0\n[sampling]\nsteps = 7\ngrid = 9\n\
             [training]\nlr = 1e-4\nema = { type = \"edm\", halflife_kimg = 10.0, rampup_ratio = 0.05 }\n\
             [eval]\ndenoiser_sigmas = [1.0, 2.0, 3.0]\n",
        );
        write(
            dir.path(),
            "base/mid.toml",
            "extends = \"common.toml\"\n[sampling]\nsteps = 8\n",
        );
        let top = write(
            dir.path(),
            "top.toml",
            "extends = \"base/mid.toml\"\n[diffusion]\ntype = \"VP\"\n[training]\n\
             ema = { type = \"power\", inv_gamma = 1.0, power = 0.75, max_decay = 0.999 }\n\
             [eval]\ndenoiser_sigmas = [0.5]\n",
        );
        let c = TrainConfig::from_file(&top, &["sampling.grid=4".into()])?;
        // Child keys win, base keys stay, `--set` comes last.
        assert_eq!((c.sampling.steps, c.sampling.grid), (8, 4));
        assert_eq!(c.training.lr, 1e-4);
        // A new `type` replaces the table: EDM's p_mean does not leak into VP.
        assert_eq!(c.diffusion.kind(), FormulationKind::Vp);
        assert!(matches!(c.training.ema, EmaSchedule::Power { .. }));
        // Arrays are values: replaced, not appended.
        assert_eq!(c.eval.denoiser_sigmas, vec![0.5]);
        Ok(())
    }

    #[test]
    fn extends_refuses_cycles_missing_files_and_text_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.toml", "extends = \"sub/b.toml\"\n");
        write(dir.path(), "sub/b.toml", "extends = \"../a.toml\"\n");
        let e = TrainConfig::from_file(&a, &[]).unwrap_err().to_string();
        assert!(
            e.contains("cycle") && e.contains("a.toml") && e.contains("b.toml"),
            "{e}"
        );
        let me = write(dir.path(), "me.toml", "extends = \"me.toml\"\n");
        let e = TrainConfig::from_file(&me, &[]).unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("me.toml"), "{e}");
        let c = write(dir.path(), "c.toml", "extends = \"nope.toml\"\n");
        let e = TrainConfig::from_file(&c, &[]).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("nope.toml"), "{e}");
        let n = write(dir.path(), "n.toml", "extends = 3\n");
        let e = TrainConfig::from_file(&n, &[]).unwrap_err().to_string();
        assert!(e.contains("extends") && e.contains('3'), "{e}");
        let e = TrainConfig::from_toml_str("extends = \"a.toml\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("extends") && e.contains("from_file"), "{e}");
    }
}
