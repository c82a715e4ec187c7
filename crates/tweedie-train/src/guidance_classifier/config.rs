//! The config of `tweedie train-classifier`: `[diffusion]` (whose training density of σ̃ noises
//! the inputs, and whose σ_data scales them), `[data]` (labelled images), `[network]` (a U-Net
//! preset whose encoder the classifier is, plus any U-Net key) and `[training]`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tweedie_core::Invalid;
use tweedie_nets::{NetConfig, UnetConfig};

use crate::config::{
    apply_sets, check_adam, check_top_level, in_file, parse_table, read_table, section,
};
use crate::data::DataConfig;
use crate::error::{at_least_one, positive, section_value, Result, TrainError};
use crate::formulation::{DiffusionConfig, Formulation};

mod d {
    /// Batch, Adam, intervals and device as the denoiser's trainer has them.
    pub use crate::config::d::{
        adam_eps, batch_size, beta1, beta2, ckpt_every, device, grad_clip, log_every, lr,
        train_steps as steps, warmup,
    };
    pub fn eval_sigmas() -> Vec<f64> {
        vec![0.1, 0.5, 1.0, 2.0, 5.0]
    }
}

/// The U-Net preset whose encoder the classifier is when `[network]` names none.
pub const DEFAULT_PRESET: &str = "ddpmpp-tiny";

/// `[training]` of a classifier run: Adam with warm-up and clipping, no EMA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierTraining {
    /// Samples per step.
    #[serde(default = "d::batch_size")]
    pub batch_size: usize,
    /// Adam learning rate after warm-up.
    #[serde(default = "d::lr")]
    pub lr: f64,
    /// Linear LR warm-up over this many steps.
    #[serde(default = "d::warmup")]
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this value (none when absent).
    #[serde(default = "d::grad_clip", skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Adam β₁, β₂, ε.
    #[serde(default = "d::beta1")]
    pub adam_beta1: f64,
    #[serde(default = "d::beta2")]
    pub adam_beta2: f64,
    #[serde(default = "d::adam_eps")]
    pub adam_eps: f64,
    /// Optimiser steps.
    #[serde(default = "d::steps")]
    pub steps: u64,
    /// Write the training state every N steps (and at the end, and on Ctrl-C).
    #[serde(default = "d::ckpt_every")]
    pub checkpoint_every: u64,
    /// Append to metrics.jsonl every N steps.
    #[serde(default = "d::log_every")]
    pub log_every: u64,
    /// Seed of initial weights, batches, noise levels and noise.
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "d::device")]
    pub device: String,
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        ClassifierTraining {
            batch_size: d::batch_size(),
            lr: d::lr(),
            warmup_steps: d::warmup(),
            grad_clip: d::grad_clip(),
            adam_beta1: d::beta1(),
            adam_beta2: d::beta2(),
            adam_eps: d::adam_eps(),
            steps: d::steps(),
            checkpoint_every: d::ckpt_every(),
            log_every: d::log_every(),
            seed: 0,
            device: d::device(),
        }
    }
}

/// `[eval]` of a classifier run: held-out accuracy at fixed noise levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierEval {
    /// σ̃ at which the held-out accuracy is measured after training.
    #[serde(default = "d::eval_sigmas")]
    pub sigmas: Vec<f64>,
}

impl Default for ClassifierEval {
    fn default() -> Self {
        ClassifierEval {
            sigmas: d::eval_sigmas(),
        }
    }
}

/// A whole classifier-training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierTrainConfig {
    pub diffusion: DiffusionConfig,
    pub data: DataConfig,
    /// The encoder's U-Net (the preset expanded, shape keys set from the data at training).
    pub network: UnetConfig,
    pub training: ClassifierTraining,
    pub eval: ClassifierEval,
}

const SECTIONS: [&str; 5] = ["diffusion", "data", "network", "training", "eval"];

/// `[network]`: the U-Net preset's table (default [`DEFAULT_PRESET`]) with the user's keys on top.
fn expand_network(raw: &toml::Table) -> Result<toml::Value> {
    let mut user = match raw.get("network") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(other) => {
            return Err(TrainError::Config(format!(
                "[network] must be a table, got {other}"
            )))
        }
    };
    let name = match user.remove("preset") {
        None => DEFAULT_PRESET.to_string(),
        Some(toml::Value::String(s)) => s,
        Some(other) => {
            return Err(TrainError::invalid(
                "network.preset",
                other,
                "must be a U-Net preset name",
            ))
        }
    };
    let preset = match NetConfig::preset(&name)
        .map_err(|e| TrainError::invalid("network.preset", &name, e.to_string()))?
    {
        NetConfig::Unet(u) => u,
        _ => {
            return Err(TrainError::invalid(
                "network.preset",
                &name,
                "the classifier is a U-Net encoder: name a SongUNet preset (ddpmpp-tiny, \
                 ddpmpp-small, …)",
            ))
        }
    };
    let mut table = match toml::Value::try_from(&preset) {
        Ok(toml::Value::Table(t)) => t,
        _ => {
            return Err(TrainError::Config(format!(
                "network preset `{name}` does not serialise to a table"
            )))
        }
    };
    for (k, v) in user {
        table.insert(k, v);
    }
    Ok(toml::Value::Table(table))
}

impl ClassifierTrainConfig {
    /// Parses TOML text with `--set` overrides and validates.
    pub fn from_toml_str(text: &str, sets: &[String]) -> Result<Self> {
        let mut raw = parse_table(text)?;
        apply_sets(&mut raw, sets)?;
        Self::from_table(raw)
    }

    /// Reads a config file (and the files it `extends`) with overrides.
    pub fn from_file(path: &Path, sets: &[String]) -> Result<Self> {
        let mut raw = read_table(path)?;
        apply_sets(&mut raw, sets)?;
        Self::from_table(raw).map_err(in_file(path))
    }

    /// Builds from a parsed TOML table (after overrides).
    pub fn from_table(mut raw: toml::Table) -> Result<Self> {
        check_top_level(
            &raw,
            &SECTIONS,
            "ClassifierTrainConfig",
            " of a classifier config",
        )?;
        let network = section_value("[network]", expand_network(&raw)?)?;
        let diffusion = raw
            .remove("diffusion")
            .map(DiffusionConfig::from_toml)
            .transpose()?
            .ok_or_else(|| {
                TrainError::Config(
                    "missing section [diffusion] (its training density of σ̃ noises the \
                     classifier's inputs)"
                        .into(),
                )
            })?;
        let cfg = ClassifierTrainConfig {
            diffusion,
            data: section(&mut raw, "data")?.unwrap_or_default(),
            network,
            training: section(&mut raw, "training")?.unwrap_or_default(),
            eval: section(&mut raw, "eval")?.unwrap_or_default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved config as TOML (what the run directory keeps).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| TrainError::Config(format!("cannot write config: {e}")))
    }

    /// The resolved formulation (its σ̃ density and σ_data).
    pub fn formulation(&self) -> Result<Formulation> {
        self.diffusion.resolve()
    }

    /// Checks every value; errors name the key and value.
    pub fn validate(&self) -> Result<()> {
        self.diffusion.resolve()?;
        self.data.validate()?;
        self.network
            .validate()
            .map_err(|e| TrainError::invalid("network", "(config)", e.to_string()))?;
        let t = &self.training;
        at_least_one("training.batch_size", t.batch_size as u64)?;
        at_least_one("training.steps", t.steps)?;
        at_least_one("training.checkpoint_every", t.checkpoint_every)?;
        at_least_one("training.log_every", t.log_every)?;
        check_adam(&t.adam())?;
        t.device
            .parse::<tweedie_nets::DeviceSpec>()
            .map_err(|e| TrainError::invalid("training.device", &t.device, e.to_string()))?;
        for &s in &self.eval.sigmas {
            positive("eval.sigmas", s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[diffusion]\ntype = \"EDM\"\n";

    #[test]
    fn minimal_config_takes_the_tiny_encoder_and_round_trips() -> Result<()> {
        let c = ClassifierTrainConfig::from_toml_str(MIN, &["network.model_channels=16".into()])?;
        assert_eq!(c.data, DataConfig::Digits { path: None });
        assert_eq!((c.network.resolution, c.network.model_channels), (8, 16));
        let back = ClassifierTrainConfig::from_toml_str(&c.to_toml()?, &[])?;
        assert_eq!(back, c);
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_key_and_value() {
        let err = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            ClassifierTrainConfig::from_toml_str(MIN, &sets)
                .unwrap_err()
                .to_string()
        };
        let e = err(&["network.preset=mlp-2d"]);
        assert!(e.contains("network.preset") && e.contains("U-Net"), "{e}");
        let e = err(&["network.hidden=3"]);
        assert!(e.contains("[network]") && e.contains("hidden"), "{e}");
        let e = err(&["training.lr=-1"]);
        assert!(e.contains("training.lr"), "{e}");
        let e = err(&["training.label_dropout=0.1"]);
        assert!(e.contains("label_dropout"), "{e}");
        let e = err(&["sampling.steps=3"]);
        assert!(
            e.contains("sampling") && e.contains("classifier config"),
            "{e}"
        );
        let e = err(&["eval.sigmas=[0.0]"]);
        assert!(e.contains("eval.sigmas"), "{e}");
        let e = ClassifierTrainConfig::from_toml_str("", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[diffusion]"), "{e}");
    }
}
