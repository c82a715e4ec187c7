//! Exponential moving averages of network weights: EDM's half-life in images with ramp-up
//! (Karras et al. 2022, training_loop.py) and the power warm-up of Karras et al. 2023 / diffusers.

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};
use tweedie_core::Invalid;

use crate::error::{NetsError, Result};

/// How the EMA decay β (θ_ema ← β·θ_ema + (1−β)·θ) evolves during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmaSchedule {
    /// β = 0.5^(B / max(h, 1e-8)), h = min(1000·halflife_kimg, ramp·n_img) (EDM; ramp optional).
    Edm {
        /// Half-life in thousands of images (EDM CIFAR-10: 500).
        halflife_kimg: f64,
        /// Ramp-up ratio (EDM: 0.05); `None` disables the ramp-up.
        #[serde(default)]
        rampup_ratio: Option<f64>,
    },
    /// β = clamp(1 − (1 + k/inv_gamma)^(−power), min_decay, max_decay) at update k = 0, 1, …
    Power {
        /// γ⁻¹ (1 for the usual warm-up).
        inv_gamma: f64,
        /// Exponent (2/3 for long runs, 3/4 for short ones).
        power: f64,
        /// Upper bound of β.
        max_decay: f64,
        /// Lower bound of β.
        #[serde(default)]
        min_decay: f64,
    },
}

impl EmaSchedule {
    /// EDM's CIFAR-10 setting: half-life 500 kimg, ramp-up 0.05.
    pub fn edm_default() -> Self {
        EmaSchedule::Edm {
            halflife_kimg: 500.0,
            rampup_ratio: Some(0.05),
        }
    }

    /// Checks every value; the error names the key and value.
    pub fn validate(&self) -> Result<()> {
        let pos = |k: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(NetsError::invalid(k, v, "must be finite and > 0"))
            }
        };
        match self {
            EmaSchedule::Edm {
                halflife_kimg,
                rampup_ratio,
            } => {
                pos("halflife_kimg", *halflife_kimg)?;
                if let Some(r) = rampup_ratio {
                    pos("rampup_ratio", *r)?;
                }
                Ok(())
            }
            EmaSchedule::Power {
                inv_gamma,
                power,
                max_decay,
                min_decay,
            } => {
                pos("inv_gamma", *inv_gamma)?;
                pos("power", *power)?;
                if !(0.0..=1.0).contains(max_decay) {
                    return Err(NetsError::invalid(
                        "max_decay",
                        max_decay,
                        "must be in [0, 1]",
                    ));
                }
                if !(0.0..=*max_decay).contains(min_decay) {
                    return Err(NetsError::invalid(
                        "min_decay",
                        min_decay,
                        "must be in [0, max_decay]",
                    ));
                }
                Ok(())
            }
        }
    }

    /// β for the update made after `step` earlier updates, when `cur_nimg` images were seen
    /// before this batch of `batch_size`.
    pub fn beta(&self, step: u64, cur_nimg: u64, batch_size: usize) -> f64 {
        match self {
            EmaSchedule::Edm {
                halflife_kimg,
                rampup_ratio,
            } => {
                let mut h = halflife_kimg * 1000.0;
                if let Some(r) = rampup_ratio {
                    h = h.min(cur_nimg as f64 * r);
                }
                0.5f64.powf(batch_size as f64 / h.max(1e-8))
            }
            EmaSchedule::Power {
                inv_gamma,
                power,
                max_decay,
                min_decay,
            } => {
                let v = 1.0 - (1.0 + step as f64 / inv_gamma).powf(-power);
                v.clamp(*min_decay, *max_decay)
            }
        }
    }
}

/// Shadow copy of a var store's trainable variables, updated θ_ema ← θ + β·(θ_ema − θ).
#[derive(Debug)]
pub struct Ema {
    schedule: EmaSchedule,
    shadow: Vec<(String, Tensor)>,
    step: u64,
}

fn trainable_named(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copies the fixed buffers (non-trainable variables: Fourier frequencies, resample filters)
/// of `from` into the same-named variables of `to`. The EMA averages only trainable weights,
/// like the reference's; a sampling copy built separately needs the live model's buffers too,
/// or its random Fourier frequencies would differ from the ones the network was trained with.
pub fn copy_buffers(from: &VarStore, to: &VarStore) -> Result<()> {
    let src = from.variables();
    tch::no_grad(|| {
        for (name, mut dst) in to.variables() {
            if dst.requires_grad() {
                continue;
            }
            let s = src.get(&name).ok_or_else(|| {
                NetsError::Shape(format!("buffer `{name}` is not in the source var store"))
            })?;
            if s.size() != dst.size() {
                return Err(NetsError::Shape(format!(
                    "buffer `{name}`: {:?} in the source, {:?} in the target",
                    s.size(),
                    dst.size()
                )));
            }
            dst.copy_(s);
        }
        Ok(())
    })
}

impl Ema {
    /// Starts the average at the current weights of `vs`.
    pub fn new(vs: &VarStore, schedule: EmaSchedule) -> Result<Self> {
        schedule.validate()?;
        let shadow = tch::no_grad(|| {
            trainable_named(vs)
                .into_iter()
                .map(|(n, t)| (n, t.detach().copy()))
                .collect()
        });
        Ok(Ema {
            schedule,
            shadow,
            step: 0,
        })
    }

    /// Number of updates so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The schedule.
    pub fn schedule(&self) -> &EmaSchedule {
        &self.schedule
    }

    /// One update after an optimizer step on a batch of `batch_size`, `cur_nimg` images having
    /// been seen before it; returns the β used.
    pub fn update(&mut self, vs: &VarStore, cur_nimg: u64, batch_size: usize) -> Result<f64> {
        let beta = self.schedule.beta(self.step, cur_nimg, batch_size);
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, s) in self.shadow.iter_mut() {
                let p = vars.get(name).ok_or_else(|| {
                    NetsError::Shape(format!("EMA variable `{name}` is not in the var store"))
                })?;
                let new = p.detach().to_device(s.device()).lerp(&*s, beta);
                s.copy_(&new);
            }
            Ok::<(), NetsError>(())
        })?;
        self.step += 1;
        Ok(beta)
    }

    /// Copies the averaged weights into `vs` (for sampling or saving).
    pub fn copy_to(&self, vs: &VarStore) -> Result<()> {
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, s) in &self.shadow {
                let mut p = vars
                    .get(name)
                    .ok_or_else(|| {
                        NetsError::Shape(format!("EMA variable `{name}` is not in the var store"))
                    })?
                    .shallow_clone();
                p.copy_(s);
            }
            Ok(())
        })
    }

    /// The averaged tensors by variable name (sorted).
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Replaces the averaged tensors (when resuming), checking names and shapes.
    pub fn load(
        &mut self,
        named: &std::collections::HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        tch::no_grad(|| {
            for (name, s) in self.shadow.iter_mut() {
                let src = named
                    .get(name)
                    .ok_or_else(|| NetsError::Shape(format!("EMA state lacks `{name}`")))?;
                if src.size() != s.size() {
                    return Err(NetsError::Shape(format!(
                        "EMA `{name}`: shape {:?} vs {:?}",
                        src.size(),
                        s.size()
                    )));
                }
                s.copy_(src);
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}
