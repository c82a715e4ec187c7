//! Typed, TOML-friendly network configurations and named presets.

use serde::{Deserialize, Serialize};
use tweedie_core::Invalid;

use crate::error::{NetsError, Result};

/// Noise-level embedding: sinusoidal positional (DDPM++, Ho et al. 2020) or random Fourier
/// features (NCSN++, Song et al. 2021; Tancik et al. 2020).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Embedding {
    /// e(c) = [sin(c·ωᵢ), cos(c·ωᵢ)], ωᵢ = 10000^(−i/(N/2−1)).
    Positional,
    /// e(c) = [sin(2π·c·fᵢ), cos(2π·c·fᵢ)], fᵢ ~ N(0, 16²) fixed at construction.
    Fourier,
}

/// Encoder variant of SongUNet (Song et al. 2021, Appendix H).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderType {
    /// Plain residual blocks (DDPM++).
    Standard,
    /// Input pyramid added to the first block of each level through 1×1 convolutions.
    Skip,
    /// Input pyramid as a residual branch: x ← (x + conv↓(aux))/√2 (NCSN++).
    Residual,
}

/// Decoder variant of SongUNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderType {
    /// Output head at full resolution only.
    Standard,
    /// Output heads at every resolution, upsampled and summed.
    Skip,
}

/// SongUNet hyper-parameters (Song et al. 2021 as re-implemented by Karras et al. 2022).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnetConfig {
    /// Image height at input and output (and width too unless `width` is set).
    pub resolution: usize,
    /// Image width when it differs from the height (rectangular grids, e.g. 24×48); the
    /// reference's variable names then read `{h}x{w}_…`. `attn_resolutions` refer to heights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Input channels.
    pub in_channels: usize,
    /// Extra input channels of a conditioning field concatenated to the input (image-
    /// conditioned models, e.g. a low-resolution field upsampled: [`crate::Conditioning`]);
    /// the first convolution sees `in_channels + cond_channels`, the output is unchanged.
    #[serde(skip_serializing_if = "is_zero")]
    pub cond_channels: usize,
    /// Output channels (2× input for iDDPM's learned variance; the denoiser uses the first ones).
    pub out_channels: usize,
    /// Number of classes (one-hot labels); 0 = unconditional.
    pub label_dim: usize,
    /// Dimension of augmentation labels; 0 = none.
    pub augment_dim: usize,
    /// Base channel count.
    pub model_channels: usize,
    /// Channel multiplier per resolution level.
    pub channel_mult: Vec<usize>,
    /// Embedding width = model_channels · channel_mult_emb.
    pub channel_mult_emb: usize,
    /// Residual blocks per level.
    pub num_blocks: usize,
    /// Resolutions with self-attention.
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability of intermediate activations.
    pub dropout: f64,
    /// Probability of dropping class labels in training (classifier-free guidance).
    pub label_dropout: f64,
    /// Noise-level embedding.
    pub embedding: Embedding,
    /// Noise-embedding width = model_channels · channel_mult_noise.
    pub channel_mult_noise: usize,
    /// Encoder variant.
    pub encoder: EncoderType,
    /// Decoder variant.
    pub decoder: DecoderType,
    /// 1-D resampling filter ([1,1] box for DDPM++, [1,3,3,1] for NCSN++).
    pub resample_filter: Vec<f64>,
}

impl Default for UnetConfig {
    /// DDPM++ at the EDM CIFAR-10 settings (Karras et al. 2022, train.py `--arch=ddpmpp`).
    fn default() -> Self {
        UnetConfig {
            resolution: 32,
            width: None,
            in_channels: 3,
            cond_channels: 0,
            out_channels: 3,
            label_dim: 0,
            augment_dim: 0,
            model_channels: 128,
            channel_mult: vec![2, 2, 2],
            channel_mult_emb: 4,
            num_blocks: 4,
            attn_resolutions: vec![16],
            dropout: 0.13,
            label_dropout: 0.0,
            embedding: Embedding::Positional,
            channel_mult_noise: 1,
            encoder: EncoderType::Standard,
            decoder: DecoderType::Standard,
            resample_filter: vec![1.0, 1.0],
        }
    }
}

/// DhariwalUNet hyper-parameters; defaults are EDM's (`DhariwalUNet.__init__`) at 64×64×3.
///
/// Its keys are a subset of [`UnetConfig`]'s, restated rather than shared: serde cannot
/// `flatten` a common part into a struct that denies unknown fields, and both must refuse a
/// key their network lacks. `validate` and `shape_count` live with the network (dhariwal.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DhariwalConfig {
    /// Image side at input and output.
    pub resolution: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (2× input for iDDPM's learned variance).
    pub out_channels: usize,
    /// Number of classes; 0 = unconditional.
    pub label_dim: usize,
    /// Dimension of augmentation labels; 0 = none.
    pub augment_dim: usize,
    /// Base channel count.
    pub model_channels: usize,
    /// Channel multiplier per resolution level.
    pub channel_mult: Vec<usize>,
    /// Embedding width = model_channels · channel_mult_emb.
    pub channel_mult_emb: usize,
    /// Residual blocks per level.
    pub num_blocks: usize,
    /// Resolutions with self-attention (blocks narrower than 64 channels have none).
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability of intermediate activations.
    pub dropout: f64,
    /// Probability of dropping class labels in training.
    pub label_dropout: f64,
}

impl Default for DhariwalConfig {
    /// EDM's DhariwalUNet defaults (192 channels, mult [1,2,3,4], 3 blocks, attention at 32/16/8).
    fn default() -> Self {
        DhariwalConfig {
            resolution: 64,
            in_channels: 3,
            out_channels: 3,
            label_dim: 0,
            augment_dim: 0,
            model_channels: 192,
            channel_mult: vec![1, 2, 3, 4],
            channel_mult_emb: 4,
            num_blocks: 3,
            attn_resolutions: vec![32, 16, 8],
            dropout: 0.10,
            label_dropout: 0.0,
        }
    }
}

/// MLP denoiser for low-dimensional data (2-D toys, Gaussian mixtures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Data dimension d (inputs are [B, d]).
    pub dim: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Number of residual blocks.
    pub num_blocks: usize,
    /// Noise-embedding width (even).
    pub noise_channels: usize,
    /// Width of the conditioning embedding after the mapping MLP.
    pub emb_channels: usize,
    /// Noise-level embedding.
    pub embedding: Embedding,
    /// Number of classes; 0 = unconditional.
    pub label_dim: usize,
    /// Probability of dropping class labels in training.
    pub label_dropout: f64,
    /// Dropout probability inside the blocks.
    pub dropout: f64,
    /// Output width, a multiple of `dim` (default `dim`; 2·dim for a learned-variance iDDPM
    /// network, whose extra outputs are the variance interpolation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_dim: Option<usize>,
}

impl Default for MlpConfig {
    /// 2-D toy default: 3 residual blocks of width 128.
    fn default() -> Self {
        MlpConfig {
            dim: 2,
            hidden: 128,
            num_blocks: 3,
            noise_channels: 64,
            emb_channels: 128,
            embedding: Embedding::Positional,
            label_dim: 0,
            label_dropout: 0.0,
            dropout: 0.0,
            out_dim: None,
        }
    }
}

/// A network architecture, as written in TOML (`type = "unet" | "mlp"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NetConfig {
    /// SongUNet (DDPM++ / NCSN++).
    Unet(UnetConfig),
    /// Residual MLP.
    Mlp(MlpConfig),
    /// DhariwalUNet (ADM).
    Dhariwal(DhariwalConfig),
}

/// Names of every preset, in the order `tweedie nets params` lists them.
pub const PRESETS: &[&str] = &[
    "ddpmpp-cifar10",
    "ddpmpp-cifar10-cond",
    "ncsnpp-cifar10",
    "ddpmpp-tiny",
    "ddpmpp-small",
    "ncsnpp-tiny",
    "mlp-2d",
    "mlp-small",
    "adm-imagenet64",
    "adm-small",
];

impl NetConfig {
    /// The named preset (see [`PRESETS`]); CIFAR-10 presets follow EDM's train.py exactly.
    pub fn preset(name: &str) -> Result<NetConfig> {
        let ddpmpp = UnetConfig::default();
        let ncsnpp = UnetConfig {
            embedding: Embedding::Fourier,
            channel_mult_noise: 2,
            encoder: EncoderType::Residual,
            resample_filter: vec![1.0, 3.0, 3.0, 1.0],
            ..UnetConfig::default()
        };
        // 8×8 one-channel digits: small enough for a sub-second training step on 2 cores.
        let tiny = UnetConfig {
            resolution: 8,
            in_channels: 1,
            out_channels: 1,
            model_channels: 32,
            channel_mult: vec![1, 1],
            channel_mult_emb: 2,
            num_blocks: 1,
            attn_resolutions: vec![4],
            dropout: 0.0,
            ..UnetConfig::default()
        };
        let cfg = match name {
            "ddpmpp-cifar10" => NetConfig::Unet(ddpmpp),
            "ddpmpp-cifar10-cond" => NetConfig::Unet(UnetConfig {
                label_dim: 10,
                ..ddpmpp
            }),
            "ncsnpp-cifar10" => NetConfig::Unet(ncsnpp),
            "ddpmpp-tiny" => NetConfig::Unet(tiny),
            // 32×32 RGB at CPU scale (3 levels down to 8×8, attention at 8×8).
            "ddpmpp-small" => NetConfig::Unet(UnetConfig {
                resolution: 32,
                in_channels: 3,
                out_channels: 3,
                channel_mult: vec![1, 2, 2],
                attn_resolutions: vec![8],
                ..tiny
            }),
            "ncsnpp-tiny" => NetConfig::Unet(UnetConfig {
                embedding: Embedding::Fourier,
                channel_mult_noise: 2,
                encoder: EncoderType::Residual,
                resample_filter: vec![1.0, 3.0, 3.0, 1.0],
                ..tiny
            }),
            "mlp-2d" => NetConfig::Mlp(MlpConfig::default()),
            "mlp-small" => NetConfig::Mlp(MlpConfig {
                hidden: 64,
                num_blocks: 2,
                emb_channels: 64,
                ..MlpConfig::default()
            }),
            // EDM's ImageNet-64 network (train.py `--arch=adm --cond=1`): 295,899,267 parameters.
            "adm-imagenet64" => NetConfig::Dhariwal(DhariwalConfig {
                label_dim: 1000,
                ..Default::default()
            }),
            // 8×8 one-channel ADM with one 64-channel attention head at 4×4 (CPU tests, digits).
            "adm-small" => NetConfig::Dhariwal(DhariwalConfig {
                resolution: 8,
                in_channels: 1,
                out_channels: 1,
                model_channels: 32,
                channel_mult: vec![1, 2],
                num_blocks: 1,
                attn_resolutions: vec![4],
                dropout: 0.0,
                ..Default::default()
            }),
            _ => {
                return Err(NetsError::UnknownPreset {
                    name: name.to_string(),
                    known: PRESETS.join(", "),
                });
            }
        };
        Ok(cfg)
    }

    /// Checks every value; the error names the offending key and value.
    pub fn validate(&self) -> Result<()> {
        match self {
            NetConfig::Unet(c) => c.validate(),
            NetConfig::Mlp(c) => c.validate(),
            NetConfig::Dhariwal(c) => c.validate(),
        }
    }

    /// Number of class labels (0 = unconditional).
    pub fn label_dim(&self) -> usize {
        match self {
            NetConfig::Unet(c) => c.label_dim,
            NetConfig::Mlp(c) => c.label_dim,
            NetConfig::Dhariwal(c) => c.label_dim,
        }
    }

    /// Extra input channels of a conditioning field (only SongUNet takes them; 0 otherwise).
    pub fn cond_channels(&self) -> usize {
        match self {
            NetConfig::Unet(c) => c.cond_channels,
            NetConfig::Mlp(_) | NetConfig::Dhariwal(_) => 0,
        }
    }

    /// The network's own in-forward label dropout (EDM's `label_dropout` network argument,
    /// drawn from torch's generator; tweedie's trainer draws its own, `training.label_dropout`).
    pub fn label_dropout(&self) -> f64 {
        match self {
            NetConfig::Unet(c) => c.label_dropout,
            NetConfig::Mlp(c) => c.label_dropout,
            NetConfig::Dhariwal(c) => c.label_dropout,
        }
    }

    /// Shape of one input sample: [C, H, W] for the U-Net, [d] for the MLP.
    pub fn sample_shape(&self) -> Vec<i64> {
        match self {
            NetConfig::Unet(c) => vec![c.in_channels as i64, c.resolution as i64, c.width() as i64],
            NetConfig::Mlp(c) => vec![c.dim as i64],
            NetConfig::Dhariwal(c) => vec![
                c.in_channels as i64,
                c.resolution as i64,
                c.resolution as i64,
            ],
        }
    }
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

pub(crate) fn check_prob(key: &str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(NetsError::invalid(key, p, "must be in [0, 1)"))
    }
}

pub(crate) fn check_pos(key: &str, v: usize) -> Result<()> {
    if v > 0 {
        Ok(())
    } else {
        Err(NetsError::invalid(key, v, "must be > 0"))
    }
}

/// GroupNorm of the reference: min(32, C/4) groups, which must divide C.
pub(crate) fn group_count(channels: usize) -> usize {
    32.min(channels / 4)
}

impl UnetConfig {
    /// Image width: `width` when set, else `resolution` (square).
    pub fn width(&self) -> usize {
        self.width.unwrap_or(self.resolution)
    }

    /// Checks every value; the error names the offending key and value.
    pub fn validate(&self) -> Result<()> {
        check_pos("resolution", self.resolution)?;
        check_pos("in_channels", self.in_channels)?;
        check_pos("out_channels", self.out_channels)?;
        check_pos("model_channels", self.model_channels)?;
        check_pos("channel_mult_emb", self.channel_mult_emb)?;
        check_pos("channel_mult_noise", self.channel_mult_noise)?;
        check_prob("dropout", self.dropout)?;
        check_prob("label_dropout", self.label_dropout)?;
        if self.channel_mult.is_empty() {
            return Err(NetsError::invalid(
                "channel_mult",
                "[]",
                "needs at least one level",
            ));
        }
        if let Some(m) = self.channel_mult.iter().find(|&&m| m == 0) {
            return Err(NetsError::invalid(
                "channel_mult",
                m,
                "multipliers must be > 0",
            ));
        }
        if let Some(w) = self.width {
            check_pos("width", w)?;
        }
        let levels = self.channel_mult.len();
        // Each level halves the grid: more levels than log2 of the smaller side leave less
        // than one pixel (and 2^(levels−1) overflows past 64 levels).
        let div = u32::try_from(levels - 1)
            .ok()
            .and_then(|s| 1usize.checked_shl(s))
            .filter(|&d| d <= self.resolution.min(self.width()))
            .ok_or_else(|| {
                NetsError::invalid(
                    "channel_mult",
                    format!("{} levels", levels),
                    format!(
                        "{levels} levels halve the {}×{} grid {} times, below one pixel",
                        self.resolution,
                        self.width(),
                        levels - 1
                    ),
                )
            })?;
        for (key, side) in [("resolution", self.resolution), ("width", self.width())] {
            if side % div != 0 {
                return Err(NetsError::invalid(
                    key,
                    side,
                    format!(
                        "the grid {}×{} does not fit the network: both sides must be \
                         divisible by 2^(levels−1) = {div} for {levels} levels (channel_mult)",
                        self.resolution,
                        self.width()
                    ),
                ));
            }
        }
        // Widths are products of user keys: overflow and absurd widths are refused before any
        // layer is built (one C×C 3×3 conv weight of f32 must fit in memory).
        let width = |key: &str, m: usize| -> Result<usize> {
            let c = self.model_channels.checked_mul(m).ok_or_else(|| {
                NetsError::invalid(key, m, format!("model_channels·{key} overflows"))
            })?;
            tweedie_core::budget::check_array(key, m, &[c, c, 9], 4)?;
            Ok(c)
        };
        let emb = width("channel_mult_emb", self.channel_mult_emb)?;
        // The label embedding is a label_dim × emb matrix.
        tweedie_core::budget::check_array("label_dim", self.label_dim, &[self.label_dim, emb], 4)?;
        for &m in &self.channel_mult {
            width("channel_mult", m)?;
        }
        let noise = width("channel_mult_noise", self.channel_mult_noise)?;
        if noise % 2 != 0 || noise < 4 {
            return Err(NetsError::invalid(
                "model_channels",
                self.model_channels,
                "model_channels·channel_mult_noise must be even and ≥ 4 (sin/cos embedding)",
            ));
        }
        for &m in &self.channel_mult {
            let c = self.model_channels * m;
            let g = group_count(c);
            if g == 0 || c % g != 0 {
                return Err(NetsError::invalid(
                    "model_channels",
                    self.model_channels,
                    format!("GroupNorm needs min(32, C/4) to divide C; fails for C = {c}"),
                ));
            }
        }
        if self.resample_filter.is_empty() || self.resample_filter.iter().any(|v| !v.is_finite()) {
            return Err(NetsError::invalid(
                "resample_filter",
                format!("{:?}", self.resample_filter),
                "needs finite taps",
            ));
        }
        let s: f64 = self.resample_filter.iter().sum();
        if s == 0.0 {
            return Err(NetsError::invalid(
                "resample_filter",
                format!("{:?}", self.resample_filter),
                "taps sum to 0",
            ));
        }
        Ok(())
    }
}

impl MlpConfig {
    /// Checks every value; the error names the offending key and value.
    pub fn validate(&self) -> Result<()> {
        check_pos("dim", self.dim)?;
        check_pos("hidden", self.hidden)?;
        check_pos("emb_channels", self.emb_channels)?;
        if self.noise_channels % 2 != 0 || self.noise_channels < 4 {
            return Err(NetsError::invalid(
                "noise_channels",
                self.noise_channels,
                "must be even and ≥ 4",
            ));
        }
        check_prob("dropout", self.dropout)?;
        check_prob("label_dropout", self.label_dropout)?;
        if let Some(o) = self.out_dim {
            if o == 0 || o % self.dim != 0 {
                return Err(NetsError::invalid(
                    "out_dim",
                    o,
                    format!("must be a positive multiple of dim = {}", self.dim),
                ));
            }
        }
        Ok(())
    }

    /// Output width: `out_dim`, or `dim`.
    pub fn out_width(&self) -> usize {
        self.out_dim.unwrap_or(self.dim)
    }
}
