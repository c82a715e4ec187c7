//! Image conditioning (downscaling): a network that denoises a field x given a low-resolution
//! version of it, y = block averages of x over f×f blocks. The condition enters the network as
//! extra input channels: y upsampled back to the field's grid (each block's average repeated
//! over its f×f pixels), concatenated to c_in·x̃ (`UnetConfig::cond_channels`). The denoiser
//! then approximates E[x₀ | x̃, y], and sampling it draws from p(x₀ | y).
//!
//! The condition of a training sample is computed from that sample's own data, so training
//! stays keyed per sample: batch-, rank- and resume-independent.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tweedie_core::Invalid;

use crate::error::{NetsError, Result};

/// What the network is conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditioningKind {
    /// The f×f block averages of the field (its low-resolution version), nearest-upsampled.
    Downscale,
}

/// `[conditioning]` of a training config, recorded in the checkpoint's model config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditioning {
    /// What the condition is.
    pub kind: ConditioningKind,
    /// Downscaling factor f: the low-resolution grid is (H/f)×(W/f).
    pub factor: usize,
}

impl Conditioning {
    /// Checks the factor alone (≥ 2); [`Conditioning::check_shape`] checks it against a grid.
    pub fn validate(&self) -> Result<()> {
        if self.factor < 2 {
            return Err(NetsError::invalid(
                "conditioning.factor",
                self.factor,
                "must be ≥ 2 (factor 1 would condition the field on itself)",
            ));
        }
        Ok(())
    }

    /// Checks that the factor divides both sides of a sample of shape [C, H, W].
    pub fn check_shape(&self, sample_shape: &[i64]) -> Result<()> {
        self.validate()?;
        let &[_, h, w] = sample_shape else {
            return Err(NetsError::invalid(
                "conditioning.kind",
                "downscale",
                format!("needs image data [C, H, W], the samples are {sample_shape:?}"),
            ));
        };
        let f = self.factor as i64;
        if h % f != 0 || w % f != 0 {
            return Err(NetsError::invalid(
                "conditioning.factor",
                self.factor,
                format!("does not divide the {h}×{w} grid (both sides must be multiples of it)"),
            ));
        }
        Ok(())
    }

    /// Extra input channels the network needs for samples of `channels` channels.
    pub fn channels(&self, channels: usize) -> usize {
        channels
    }

    /// Shape [C, H/f, W/f] of the condition of one sample of shape [C, H, W].
    pub fn low_shape(&self, sample_shape: &[i64]) -> Result<Vec<i64>> {
        self.check_shape(sample_shape)?;
        let f = self.factor as i64;
        Ok(vec![
            sample_shape[0],
            sample_shape[1] / f,
            sample_shape[2] / f,
        ])
    }

    /// The condition of a batch of fields [B, C, H, W]: their f×f block averages
    /// [B, C, H/f, W/f] (in the input's dtype).
    pub fn low_res(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        if s.len() != 4 {
            return Err(NetsError::Shape(format!(
                "downscaling needs a batch [B, C, H, W], got {s:?}"
            )));
        }
        self.check_shape(&s[1..])?;
        let (b, c, h, w, f) = (s[0], s[1], s[2], s[3], self.factor as i64);
        // [B, C, H/f, f, W/f, f] → mean over the two block axes.
        Ok(x.reshape([b, c, h / f, f, w / f, f])
            .mean_dim([3i64, 5].as_slice(), false, x.kind()))
    }

    /// The network's extra input for a condition [B, C, H/f, W/f]: each block average repeated
    /// over its f×f pixels, [B, C, H, W], as f32.
    pub fn upsample(&self, low: &Tensor) -> Tensor {
        let f = self.factor as i64;
        low.to_kind(Kind::Float)
            .repeat_interleave_self_int(f, Some(2), None)
            .repeat_interleave_self_int(f, Some(3), None)
    }

    /// Checks a batch of conditions against the network's sample shape: [B, C, H/f, W/f].
    pub fn check_condition(&self, cond: &Tensor, batch: i64, sample_shape: &[i64]) -> Result<()> {
        let mut want = vec![batch];
        want.extend(self.low_shape(sample_shape)?);
        if cond.size() != want {
            return Err(NetsError::Shape(format!(
                "condition {:?} does not fit: the network is conditioned on the {}×{} block \
                 averages of its {}×{} fields, [B, C, H/f, W/f] = {want:?}",
                cond.size(),
                self.factor,
                self.factor,
                sample_shape[1],
                sample_shape[2]
            )));
        }
        Ok(())
    }
}

/// Checks that a network taking `cond_channels` extra input channels for samples of
/// `sample_shape` fits `conditioning` (or, without one, takes no extra channels).
pub fn check_network(
    conditioning: Option<&Conditioning>,
    sample_shape: &[i64],
    cond_channels: usize,
) -> Result<()> {
    match conditioning {
        None if cond_channels > 0 => Err(NetsError::invalid(
            "cond_channels",
            cond_channels,
            "the network takes a conditioning input but no conditioning is recorded",
        )),
        None => Ok(()),
        Some(c) => {
            c.check_shape(sample_shape)?;
            let want = c.channels(sample_shape[0].max(0) as usize);
            if cond_channels != want {
                return Err(NetsError::invalid(
                    "cond_channels",
                    cond_channels,
                    format!(
                        "conditioning {c} of {}-channel samples needs {want}",
                        sample_shape[0]
                    ),
                ));
            }
            Ok(())
        }
    }
}

impl std::fmt::Display for Conditioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ConditioningKind::Downscale => write!(f, "downscale ×{}", self.factor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Block averages of a known 4×4 field at f = 2, and their upsampling, value by value.
    #[test]
    fn block_averages_and_upsampling_are_exact() -> Result<()> {
        let c = Conditioning {
            kind: ConditioningKind::Downscale,
            factor: 2,
        };
        let x = Tensor::arange(16, (Kind::Double, Device::Cpu)).view([1, 1, 4, 4]);
        let low = c.low_res(&x)?;
        // Blocks {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}.
        let want = Tensor::from_slice(&[2.5f64, 4.5, 10.5, 12.5]).view([1, 1, 2, 2]);
        assert!(low.equal(&want), "{low}");
        let up = c.upsample(&low);
        assert_eq!(up.size(), vec![1, 1, 4, 4]);
        assert_eq!(f64::try_from(up.get(0).get(0).get(1).get(1))?, 2.5);
        assert_eq!(f64::try_from(up.get(0).get(0).get(3).get(0))?, 10.5);
        // The block averages of the upsampled condition are the condition.
        assert!(c.low_res(&up.to_kind(Kind::Double))?.equal(&want));
        Ok(())
    }

    /// A sample's condition depends on that sample alone, so a batch's conditions are its
    /// shards' (data-parallel ranks, resumed steps) bit for bit.
    #[test]
    fn a_batchs_conditions_are_its_shards() -> Result<()> {
        let c = Conditioning {
            kind: ConditioningKind::Downscale,
            factor: 4,
        };
        let x = Tensor::randn([6, 2, 8, 8], (Kind::Float, Device::Cpu));
        let whole = c.low_res(&x)?;
        let shards = Tensor::cat(
            &[
                c.low_res(&x.narrow(0, 0, 2))?,
                c.low_res(&x.narrow(0, 2, 4))?,
            ],
            0,
        );
        assert!(whole.equal(&shards));
        assert_eq!(whole.size(), vec![6, 2, 2, 2]);
        Ok(())
    }

    #[test]
    fn bad_factors_and_conditions_are_named() {
        let c = |factor| Conditioning {
            kind: ConditioningKind::Downscale,
            factor,
        };
        let e = c(1).validate().unwrap_err().to_string();
        assert!(e.contains("conditioning.factor") && e.contains('1'), "{e}");
        let e = c(3).check_shape(&[1, 16, 16]).unwrap_err().to_string();
        assert!(
            e.contains("conditioning.factor") && e.contains("16×16"),
            "{e}"
        );
        let e = c(2).check_shape(&[2]).unwrap_err().to_string();
        assert!(e.contains("[C, H, W]"), "{e}");
        let wrong = Tensor::zeros([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let e = c(4)
            .check_condition(&wrong, 3, &[1, 16, 16])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[3, 1, 4, 4]") && e.contains("[3, 1, 8, 8]"),
            "{e}"
        );
    }
}
