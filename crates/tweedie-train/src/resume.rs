//! What `--resume` compares: the whole effective config (every key but `training.steps`, which
//! may be raised to train longer) and a fingerprint of the training data.
//!
//! The data fingerprint is SHA-256 of the loaded training tensor (shape, rows, f32 values) and
//! its labels, i.e. of exactly what the loop trains on after loading and normalisation. A hash
//! of file names, sizes and mtimes would be cheaper on huge sets but refuses a copied data
//! folder (new mtimes) and accepts an in-place edit that keeps size and mtime; hashing the
//! tensor costs one pass over memory already loaded (≈ 1 s per GB), small next to training.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tweedie_core::Invalid;

use crate::data::Dataset;
use crate::error::{Result, TrainError};

/// The key a resume may always change: raising it trains longer.
pub const FREE_KEY: &str = "training.steps";
/// The pseudo-key of the data fingerprint in difference lists and `--allow-change`.
pub const DATA_KEY: &str = "data.fingerprint";

/// Which differences a resume accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowChanges {
    /// Keys (or section prefixes such as `eval`) that may differ.
    pub keys: Vec<String>,
    /// Accept every difference.
    pub any: bool,
}

impl AllowChanges {
    fn allows(&self, key: &str) -> bool {
        self.any
            || self.keys.iter().any(|a| {
                key == a
                    || key
                        .strip_prefix(a.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

/// Keys added to the config after runs were made whose default differs from what those runs
/// did: (section, key, the value a run without the key trained with, whether it applies to the
/// saved table). Runs write their whole effective config, so a saved config without the key
/// predates it. Without this, a resume would read the run's config with today's default on
/// both sides of the comparison and change training silently.
type PredatedKey = (&'static str, &'static str, f64, fn(&toml::Table) -> bool);
const PREDATED_KEYS: [PredatedKey; 1] = [
    // Label dropout (default 0.1) came after conditional training, which dropped no labels.
    // Unconditional runs never read it, so they keep the default and compare as before.
    ("training", "label_dropout", 0.0, |raw| {
        raw.get("training")
            .and_then(|t| t.get("conditional"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    }),
];

/// Writes into a run's saved config table the value each key it predates had in that run
/// (see `PREDATED_KEYS`); keys present are left alone.
pub fn fill_predated_keys(raw: &mut toml::Table) {
    for (section, key, value, applies) in PREDATED_KEYS {
        if !applies(raw) {
            continue;
        }
        if let Some(toml::Value::Table(t)) = raw.get_mut(section) {
            t.entry(key).or_insert(toml::Value::Float(value));
        }
    }
}

/// Every leaf of `cfg` as dotted key → TOML value text (arrays are one leaf).
pub fn flatten<T: serde::Serialize>(cfg: &T) -> Result<BTreeMap<String, String>> {
    let v = toml::Value::try_from(cfg)
        .map_err(|e| TrainError::Config(format!("cannot compare configs: {e}")))?;
    let mut out = BTreeMap::new();
    walk("", &v, &mut out);
    Ok(out)
}

fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// SHA-256 fingerprint of a training set: `ROWS×[SHAPE] sha256:HEX` (see the module docs).
pub fn data_fingerprint(d: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update(b"tweedie.data.v1");
    h.update((d.x.nrows() as u64).to_le_bytes());
    h.update((d.shape.len() as u64).to_le_bytes());
    for &s in &d.shape {
        h.update((s as u64).to_le_bytes());
    }
    // Rows in order, values as little-endian f32, converted in chunks to keep hashing fast.
    let owned: Vec<f32>;
    let values = match d.x.as_slice() {
        Some(s) => s,
        None => {
            owned = d.x.iter().copied().collect();
            &owned
        }
    };
    let mut buf = Vec::with_capacity(4 * 4096);
    for chunk in values.chunks(4096) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        h.update(&buf);
    }
    match (&d.labels, d.num_classes) {
        (Some(l), c) => {
            h.update(b"labels");
            h.update((c.unwrap_or(0) as u64).to_le_bytes());
            for chunk in l.chunks(4096) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
                h.update(&buf);
            }
        }
        (None, _) => h.update(b"unlabelled"),
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{}×{:?} sha256:{hex}", d.x.nrows(), d.shape)
}

/// The differences (key, old, new) between a run's config and data and those of a resume,
/// minus `training.steps` and what `allow` accepts. An allowed key that names nothing is an
/// error (a typo would otherwise allow nothing, silently).
pub fn differences<T: serde::Serialize>(
    old: &T,
    new: &T,
    old_data: Option<&str>,
    new_data: &str,
    allow: &AllowChanges,
) -> Result<Vec<(String, String, String)>> {
    let (a, b) = (flatten(old)?, flatten(new)?);
    for k in &allow.keys {
        let known = k == DATA_KEY
            || k == "data"
            || a.keys().chain(b.keys()).any(|key| {
                key == k
                    || key
                        .strip_prefix(k.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            });
        if !known {
            return Err(TrainError::invalid(
                "--allow-change",
                k,
                "names no config key (keys look like `training.lr` or a section such as `eval`)",
            ));
        }
    }
    let absent = || "(absent)".to_string();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y && k != FREE_KEY && !allow.allows(k) {
            out.push((
                k.clone(),
                x.cloned().unwrap_or_else(absent),
                y.cloned().unwrap_or_else(absent),
            ));
        }
    }
    // A state written before fingerprints existed cannot be compared; the caller warns.
    if let Some(old_data) = old_data {
        if old_data != new_data && !allow.allows(DATA_KEY) {
            out.push((
                DATA_KEY.to_string(),
                old_data.to_string(),
                new_data.to_string(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    fn cfg(sets: &[&str]) -> TrainConfig {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        match TrainConfig::from_toml_str(
            "[diffusion]\ntype = \"EDM\"\n[data]\ntype = \"moons\"\n[network]\npreset = \"mlp-small\"\n",
            &sets,
        ) {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        }
    }

    #[test]
    fn every_key_but_steps_is_compared_and_listed_old_to_new() -> Result<()> {
        let old = cfg(&[]);
        let new = cfg(&[
            "training.steps=99",
            "training.seed=3",
            "training.lr=0.5",
            "training.ema.type=\"edm\"",
            "training.ema.halflife_kimg=1.5",
            "training.adam_beta2=0.9",
            "eval.skip=true",
        ]);
        let none = AllowChanges::default();
        let d = differences(&old, &new, Some("a"), "a", &none)?;
        let keys: Vec<&str> = d.iter().map(|x| x.0.as_str()).collect();
        assert!(keys.contains(&"training.seed"), "{keys:?}");
        assert!(keys.contains(&"training.lr"), "{keys:?}");
        assert!(keys.contains(&"eval.skip"), "{keys:?}");
        assert!(keys.contains(&"training.adam_beta2"), "{keys:?}");
        assert!(
            keys.iter().any(|k| k.starts_with("training.ema")),
            "{keys:?}"
        );
        assert!(!keys.contains(&FREE_KEY));
        let seed = d.iter().find(|x| x.0 == "training.seed");
        assert_eq!(seed.map(|x| (x.1.as_str(), x.2.as_str())), Some(("0", "3")));
        // Allowed keys and sections drop out; the data fingerprint is compared too.
        let allow = AllowChanges {
            keys: vec!["training".into(), "eval.skip".into()],
            any: false,
        };
        let d = differences(&old, &new, Some("a"), "b", &allow)?;
        assert_eq!(
            d,
            vec![(DATA_KEY.to_string(), "a".to_string(), "b".to_string())]
        );
        let any = AllowChanges {
            keys: vec![],
            any: true,
        };
        assert!(differences(&old, &new, Some("a"), "b", &any)?.is_empty());
        // Only the step count changed: nothing to report.
        assert!(differences(&old, &cfg(&["training.steps=7"]), Some("a"), "a", &none)?.is_empty());
        Ok(())
    }

    /// A conditional run saved before `training.label_dropout` existed trained without
    /// dropout: its config reads as 0 (a given value is kept; unconditional runs keep the
    /// default, which they never use), and a config that means 0.1 is a listed difference.
    #[test]
    fn a_saved_config_without_label_dropout_reads_as_no_dropout() -> Result<()> {
        let base = "[diffusion]\ntype = \"EDM\"\n[data]\ntype = \"moons\"\n[network]\n\
                    preset = \"mlp-small\"\n[training]\n";
        let old_cond = format!("{base}conditional = true\n");
        let run = TrainConfig::from_run_toml_str(&old_cond, &[])?;
        assert_eq!(run.training.label_dropout, 0.0);
        let given = format!("{old_cond}label_dropout = 0.2\n");
        assert_eq!(
            TrainConfig::from_run_toml_str(&given, &[])?
                .training
                .label_dropout,
            0.2
        );
        let set = ["training.label_dropout=0.3".to_string()];
        assert_eq!(
            TrainConfig::from_run_toml_str(&old_cond, &set)?
                .training
                .label_dropout,
            0.3
        );
        let uncond = TrainConfig::from_run_toml_str(base, &[])?;
        assert_eq!(uncond.training.label_dropout, 0.1);
        // Today's reading of the same text (a user's config file) means the default 0.1.
        let today = TrainConfig::from_toml_str(&old_cond, &[])?;
        let d = differences(&run, &today, None, "a", &AllowChanges::default())?;
        assert_eq!(
            d,
            vec![(
                "training.label_dropout".to_string(),
                "0.0".to_string(),
                "0.1".to_string()
            )]
        );
        Ok(())
    }

    #[test]
    fn an_allowed_key_that_names_nothing_is_an_error() {
        let allow = AllowChanges {
            keys: vec!["training.lrr".into()],
            any: false,
        };
        let e = differences(&cfg(&[]), &cfg(&[]), None, "a", &allow);
        assert!(
            matches!(&e, Err(e) if e.to_string().contains("training.lrr")),
            "{e:?}"
        );
    }

    #[test]
    fn the_fingerprint_sees_one_changed_value_and_a_changed_label() -> Result<()> {
        let x = ndarray::Array2::from_shape_fn((5, 2), |(i, j)| (i * 2 + j) as f32);
        let a = Dataset::new(x.clone(), vec![2], Some(vec![0, 1, 0, 1, 0]))?;
        let mut y = x.clone();
        y[[4, 1]] += 1e-3;
        let b = Dataset::new(y, vec![2], Some(vec![0, 1, 0, 1, 0]))?;
        let c = Dataset::new(x.clone(), vec![2], Some(vec![0, 1, 0, 1, 1]))?;
        let fa = data_fingerprint(&a);
        assert!(fa.starts_with("5×[2] sha256:"), "{fa}");
        assert_eq!(fa, data_fingerprint(&a.clone()));
        assert_ne!(fa, data_fingerprint(&b));
        assert_ne!(fa, data_fingerprint(&c));
        Ok(())
    }
}
