//! TOML configs for process, preconditioning and timer, validated with errors that name key and value.
//!
//! Each section is one of the core enums (`type = "..."` selects the variant, missing fields take
//! the published defaults, unknown fields are rejected). Larger configs elsewhere embed these
//! types and call [`Validate::validate`] (or [`parse`]) so errors keep naming the key.

use crate::error::{CoreError, Result};
use crate::precond::Precond;
use crate::process::ProcessKind;
use crate::timer::TimerKind;
use crate::weighting::{LossWeight, NoiseDensity};
use serde::de::DeserializeOwned;

/// Range checks after parsing; errors name the offending key and value.
pub trait Validate {
    /// Checks every value.
    fn validate(&self) -> Result<()>;
}

impl Validate for ProcessKind {
    fn validate(&self) -> Result<()> {
        ProcessKind::validate(self)
    }
}
impl Validate for Precond {
    fn validate(&self) -> Result<()> {
        Precond::validate(self)
    }
}
impl Validate for TimerKind {
    fn validate(&self) -> Result<()> {
        TimerKind::validate(self)
    }
}
impl Validate for NoiseDensity {
    fn validate(&self) -> Result<()> {
        NoiseDensity::validate(self)
    }
}
impl Validate for LossWeight {
    fn validate(&self) -> Result<()> {
        LossWeight::validate(self)
    }
}

/// Prefixes the key of an [`CoreError::InvalidValue`] with its section (`timer.sigma_max`).
pub fn in_section(section: &str, e: CoreError) -> CoreError {
    match e {
        CoreError::InvalidValue(v) => CoreError::InvalidValue(v.in_section(section)),
        other => other,
    }
}

/// The math-core sections of a run config.
///
/// ```toml
/// [process]
/// type = "vp"
/// [precond]
/// type = "edm"
/// sigma_data = 0.5
/// [timer]
/// type = "edm"
/// rho = 7.0
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// Noise process (`[process]`).
    pub process: ProcessKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Preconditioning (`[precond]`).
    pub precond: Option<Precond>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Sampling time grid (`[timer]`).
    pub timer: Option<TimerKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Training noise-level density (`[noise]`).
    pub noise: Option<NoiseDensity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Training loss weight λ(σ̃) (`[loss_weight]`).
    pub loss_weight: Option<LossWeight>,
}

impl Validate for CoreConfig {
    fn validate(&self) -> Result<()> {
        self.process
            .validate()
            .map_err(|e| in_section("process", e))?;
        if let Some(p) = &self.precond {
            p.validate().map_err(|e| in_section("precond", e))?;
        }
        if let Some(t) = &self.timer {
            t.validate().map_err(|e| in_section("timer", e))?;
        }
        if let Some(n) = &self.noise {
            n.validate().map_err(|e| in_section("noise", e))?;
        }
        if let Some(w) = &self.loss_weight {
            w.validate().map_err(|e| in_section("loss_weight", e))?;
        }
        Ok(())
    }
}

/// Parses TOML into `T` and validates it.
pub fn parse<T: DeserializeOwned + Validate>(text: &str) -> Result<T> {
    let v: T = toml::from_str(text).map_err(|e| CoreError::Parse(e.to_string()))?;
    v.validate()?;
    Ok(v)
}

/// Reads, parses and validates a TOML file.
pub fn load<T: DeserializeOwned + Validate>(path: impl AsRef<std::path::Path>) -> Result<T> {
    let p = path.as_ref();
    let text = std::fs::read_to_string(p).map_err(|e| CoreError::Io {
        path: p.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&text).map_err(|e| match e {
        CoreError::Parse(m) => CoreError::Parse(format!("{}: {m}", p.display())),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::DdimSpacing;

    #[test]
    fn full_config_round_trips() {
        let text = r#"
[process]
type = "ddpm"
num_steps = 500
schedule = { type = "scaled_linear" }

[precond]
type = "iddpm"

[timer]
type = "shifted"
shift = 3.0
base = { type = "ddim", spacing = "trailing" }

[noise]
type = "flow_logit_normal"

[loss_weight]
type = "min_snr"
gamma = 5.0
"#;
        let c: CoreConfig = parse(text).unwrap();
        assert_eq!(c.precond, Some(Precond::iddpm()));
        assert_eq!(
            c.timer,
            Some(TimerKind::shifted(
                3.0,
                TimerKind::ddim(DdimSpacing::Trailing)
            ))
        );
        let again: CoreConfig = parse(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn errors_name_section_key_and_value() {
        let e = parse::<CoreConfig>("[process]\ntype = \"edm\"\n[timer]\ntype = \"edm\"\nsigma_min = 1.0\nsigma_max = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timer.sigma_max") && e.contains("0.5"), "{e}");
        let e =
            parse::<CoreConfig>("[process]\ntype = \"edm\"\n[timer]\ntype = \"edm\"\nrho = 0.0\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("timer.rho") && e.contains('0'), "{e}");
        let e = parse::<CoreConfig>("[process]\ntype = \"vp\"\nbeta_mni = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("beta_mni"), "{e}");
        let e = parse::<CoreConfig>("[process]\ntype = \"vp\"\n[sampler]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sampler"), "{e}");
        let e = parse::<CoreConfig>("[process]\ntype = \"warp\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("warp"), "{e}");
        let e = load::<CoreConfig>("/nonexistent/x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
