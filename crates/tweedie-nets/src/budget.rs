//! Limits on what a network config from an untrusted file may ask for, checked from shapes
//! alone before any tensor is allocated: bounded sizes, output channels that the denoiser can
//! use, and a parameter count that must fit a budget and the file that claims to hold it.
//!
//! A checkpoint stores every trainable parameter, so a network needing more parameters than the
//! file holds values cannot be what the file contains: that is how a 200-byte file whose
//! metadata describes a giant network is refused without building it.

use tweedie_core::Invalid;

use crate::config::{DhariwalConfig, MlpConfig, NetConfig, UnetConfig};
use crate::error::{NetsError, Result};

/// Most resolution levels (`channel_mult` entries).
pub const MAX_LEVELS: usize = 16;
/// Largest image side (`resolution`, `width`).
pub const MAX_SIDE: usize = 1 << 16;
/// Most channels of any layer (`model_channels · mult`, inputs, outputs, hidden widths).
pub const MAX_CHANNELS: usize = 1 << 16;
/// Most residual blocks per level.
pub const MAX_BLOCKS: usize = 64;
/// Most class labels (one-hot width) and augmentation labels.
pub const MAX_LABELS: usize = 1 << 20;
/// Largest MLP data dimension.
pub const MAX_DIM: usize = 1 << 24;
/// Most entries of `attn_resolutions` and `resample_filter`.
pub const MAX_LIST: usize = 64;
/// Parameter budget: 2³⁴ f32 parameters (64 GiB), past any network this project trains.
pub const MAX_PARAMETERS: u128 = 1 << 34;

fn at_most(key: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        Err(NetsError::invalid(key, v, format!("must be at most {max}")))
    } else {
        Ok(())
    }
}

/// Output channels the denoiser can use: C (the mean) or 2C (iDDPM's learned variance).
fn check_out(key: &str, out: usize, input: usize, input_key: &str) -> Result<()> {
    if out == input || out == 2 * input {
        Ok(())
    } else {
        Err(NetsError::invalid(
            key,
            out,
            format!(
                "must equal {input_key} = {input} (or twice it for a learned variance): the \
                 denoiser's output has the input's shape"
            ),
        ))
    }
}

fn check_unet_like(
    resolution: usize,
    width: usize,
    channel_mult: &[usize],
    model_channels: usize,
    num_blocks: usize,
    attn: usize,
) -> Result<()> {
    at_most("resolution", resolution, MAX_SIDE)?;
    at_most("width", width, MAX_SIDE)?;
    at_most("channel_mult (levels)", channel_mult.len(), MAX_LEVELS)?;
    at_most("model_channels", model_channels, MAX_CHANNELS)?;
    for &m in channel_mult {
        let c = (model_channels as u128) * (m as u128);
        if c > MAX_CHANNELS as u128 {
            return Err(NetsError::invalid(
                "channel_mult",
                m,
                format!("model_channels·{m} = {c} channels, at most {MAX_CHANNELS}"),
            ));
        }
    }
    at_most("num_blocks", num_blocks, MAX_BLOCKS)?;
    at_most("attn_resolutions (entries)", attn, MAX_LIST)
}

/// Sizes of a SongUNet within bounds (before `validate`, whose arithmetic assumes it).
fn check_unet(c: &UnetConfig) -> Result<()> {
    check_unet_like(
        c.resolution,
        c.width(),
        &c.channel_mult,
        c.model_channels,
        c.num_blocks,
        c.attn_resolutions.len(),
    )?;
    at_most("in_channels", c.in_channels, MAX_CHANNELS)?;
    at_most("cond_channels", c.cond_channels, MAX_CHANNELS)?;
    at_most("label_dim", c.label_dim, MAX_LABELS)?;
    at_most("augment_dim", c.augment_dim, MAX_LABELS)?;
    at_most("channel_mult_emb", c.channel_mult_emb, 64)?;
    at_most("channel_mult_noise", c.channel_mult_noise, 64)?;
    at_most("resample_filter (taps)", c.resample_filter.len(), MAX_LIST)?;
    check_out("out_channels", c.out_channels, c.in_channels, "in_channels")
}

fn check_adm(c: &DhariwalConfig) -> Result<()> {
    check_unet_like(
        c.resolution,
        c.resolution,
        &c.channel_mult,
        c.model_channels,
        c.num_blocks,
        c.attn_resolutions.len(),
    )?;
    at_most("in_channels", c.in_channels, MAX_CHANNELS)?;
    at_most("label_dim", c.label_dim, MAX_LABELS)?;
    at_most("augment_dim", c.augment_dim, MAX_LABELS)?;
    at_most("channel_mult_emb", c.channel_mult_emb, 64)?;
    check_out("out_channels", c.out_channels, c.in_channels, "in_channels")
}

fn check_mlp(c: &MlpConfig) -> Result<()> {
    at_most("dim", c.dim, MAX_DIM)?;
    at_most("hidden", c.hidden, MAX_CHANNELS)?;
    at_most("num_blocks", c.num_blocks, MAX_BLOCKS)?;
    at_most("noise_channels", c.noise_channels, MAX_CHANNELS)?;
    at_most("emb_channels", c.emb_channels, MAX_CHANNELS)?;
    at_most("label_dim", c.label_dim, MAX_LABELS)?;
    if let Some(o) = c.out_dim {
        check_out("out_dim", o, c.dim, "dim")?;
    }
    Ok(())
}

/// MLP parameters, exactly: mapping (n·e + e, e² + e), input (d·h + h), blocks of
/// 2(h² + h) + e·h + h, output (h·o + o), labels (L·n + n).
fn mlp_parameters(c: &MlpConfig) -> u128 {
    let [n, e, h, d, o, l, b] = [
        c.noise_channels,
        c.emb_channels,
        c.hidden,
        c.dim,
        c.out_width(),
        c.label_dim,
        c.num_blocks,
    ]
    .map(|v| v as u128);
    let label = if l > 0 { l * n + n } else { 0 };
    (n * e + e)
        + (e * e + e)
        + (d * h + h)
        + b * (2 * (h * h + h) + e * h + h)
        + (h * o + o)
        + label
}

/// A lower bound of SongUNet's parameters: its mapping layers and, per residual block, both
/// 3×3 convolutions, the embedding projection, the 1×1 skip where channels change and the
/// attention projections (norms, biases and the auxiliary input/output paths left out),
/// following the channel bookkeeping of `SongUnet::new`.
fn unet_min_parameters(c: &UnetConfig) -> u128 {
    let mc = c.model_channels as u128;
    let emb = mc * c.channel_mult_emb as u128;
    let noise = mc * c.channel_mult_noise as u128;
    let block = |cin: u128, cout: u128, attn: bool| {
        9 * cin * cout
            + 9 * cout * cout
            + emb * cout
            + if cin != cout { cin * cout } else { 0 }
            + if attn { 4 * cout * cout } else { 0 }
    };
    let mut total = noise * emb + emb * emb + (c.label_dim + c.augment_dim) as u128 * noise;
    let mut skips = Vec::new();
    let mut cout = c.in_channels as u128;
    for (level, &m) in c.channel_mult.iter().enumerate() {
        let attn = c.attn_resolutions.contains(&(c.resolution >> level));
        if level == 0 {
            total += 9 * cout * mc;
            cout = mc;
        } else {
            total += block(cout, cout, false);
        }
        skips.push(cout);
        for _ in 0..c.num_blocks {
            let cin = cout;
            cout = mc * m as u128;
            total += block(cin, cout, attn);
            skips.push(cout);
        }
    }
    let levels = c.channel_mult.len();
    for (level, &m) in c.channel_mult.iter().enumerate().rev() {
        let attn = c.attn_resolutions.contains(&(c.resolution >> level));
        if level == levels - 1 {
            total += block(cout, cout, true) + block(cout, cout, false);
        } else {
            total += block(cout, cout, false);
        }
        for idx in 0..=c.num_blocks {
            let cin = cout + skips.pop().unwrap_or(0);
            cout = mc * m as u128;
            total += block(cin, cout, attn && idx == c.num_blocks);
        }
    }
    total + 9 * cout * c.out_channels as u128
}

/// f32 values one sample keeps alive in a U-Net forward pass without gradients: the skip
/// activations the decoder reads ((blocks + 1) maps per level), four maps of the widest level
/// at twice its channels (a decoder block's concatenated input and its temporaries), and
/// attention scores (pixels² per 64-channel head, twice for the softmax).
fn unet_sampling_values(
    (height, width): (usize, usize),
    channel_mult: &[usize],
    model_channels: usize,
    num_blocks: usize,
    attn_resolutions: &[usize],
) -> u128 {
    let (mut skips, mut widest, mut scores) = (0u128, 0u128, 0u128);
    for (level, &m) in channel_mult.iter().enumerate() {
        let shr = |v: usize| v.checked_shr(level as u32).unwrap_or(0) as u128;
        let pixels = shr(height).saturating_mul(shr(width));
        let c = (model_channels as u128).saturating_mul(m as u128);
        let map = c.saturating_mul(pixels);
        skips = skips.saturating_add((num_blocks as u128 + 1).saturating_mul(map));
        widest = widest.max(map);
        if attn_resolutions.contains(&(height.checked_shr(level as u32).unwrap_or(0))) {
            let heads = (c / 64).max(1);
            scores = scores.saturating_add(heads.saturating_mul(pixels.saturating_mul(pixels)));
        }
    }
    skips
        .saturating_add(widest.saturating_mul(8))
        .saturating_add(scores.saturating_mul(2))
}

/// Estimated bytes one sample takes while a network is sampled: the network's live
/// activations (U-Nets: see `unet_sampling_values`; MLP: every hidden layer's output four
/// times) plus 16 copies of the sample for the sampler's states and history, in f32. It sizes
/// the default sampling batch (`tweedie sample --batch`); the measured peaks it gives are in
/// docs/reliability.md.
pub fn sampling_bytes_per_sample(net: &NetConfig) -> u128 {
    let values = match net {
        NetConfig::Unet(c) => unet_sampling_values(
            (c.resolution, c.width()),
            &c.channel_mult,
            c.model_channels,
            c.num_blocks,
            &c.attn_resolutions,
        ),
        NetConfig::Dhariwal(c) => unet_sampling_values(
            (c.resolution, c.resolution),
            &c.channel_mult,
            c.model_channels,
            c.num_blocks,
            &c.attn_resolutions,
        ),
        NetConfig::Mlp(c) => (c.hidden.max(c.emb_channels) as u128)
            .saturating_mul(4)
            .saturating_mul(c.num_blocks as u128 + 2),
    };
    let sample: u128 = net
        .sample_shape()
        .iter()
        .map(|&d| d.max(0) as u128)
        .fold(1u128, u128::saturating_mul);
    values
        .saturating_add(sample.saturating_mul(16))
        .saturating_mul(4)
}

/// Memory one batch of network sampling or evaluation may use by default: 512 MiB.
pub const SAMPLE_MEMORY: u64 = 512 << 20;

/// Samples per network call when sampling or evaluating `n` samples: as many as
/// [`sampling_bytes_per_sample`] fits in [`SAMPLE_MEMORY`] or an eighth of the machine's memory
/// limit ([`tweedie_core::budget::max_bytes`]), whichever is less; at least 1, at most `n`.
pub fn sampling_batch(net: &NetConfig, n: usize) -> usize {
    let budget = SAMPLE_MEMORY.min(tweedie_core::budget::max_bytes() / 8);
    let per = sampling_bytes_per_sample(net).max(1);
    usize::try_from(u128::from(budget) / per)
        .unwrap_or(usize::MAX)
        .clamp(1, n.max(1))
}

/// Checks that `net` may be built from an untrusted file: sizes within the bounds above, output
/// channels the denoiser can use, and (from shapes alone, nothing allocated) a parameter count
/// within [`MAX_PARAMETERS`] and, when `stored` is known, within the values the file holds.
/// Returns the parameter count (exact for the MLP and the ADM U-Net, a lower bound for SongUNet).
pub fn check_untrusted(net: &NetConfig, stored: Option<u128>) -> Result<u128> {
    let need = match net {
        NetConfig::Unet(c) => {
            check_unet(c)?;
            unet_min_parameters(c)
        }
        NetConfig::Dhariwal(c) => {
            check_adm(c)?;
            // Sizes are bounded now: the shape count's products fit in 64 bits.
            c.shape_count().parameters as u128
        }
        NetConfig::Mlp(c) => {
            check_mlp(c)?;
            mlp_parameters(c)
        }
    };
    let gib = |n: u128| (n * 4) as f64 / (1u64 << 30) as f64;
    if need > MAX_PARAMETERS {
        return Err(NetsError::invalid(
            "network",
            format!("{need} parameters"),
            format!(
                "needs {need} parameters ({:.1} GiB in f32), over the budget of {MAX_PARAMETERS} \
                 ({:.0} GiB)",
                gib(need),
                gib(MAX_PARAMETERS)
            ),
        ));
    }
    if let Some(stored) = stored.filter(|&s| need > s) {
        return Err(NetsError::invalid(
            "network",
            format!("{need} parameters"),
            format!(
                "the metadata describes a network of at least {need} parameters ({:.2} GiB in \
                 f32), but the file holds only {stored} values: it cannot contain its weights",
                gib(need)
            ),
        ));
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::count_params;

    #[test]
    fn sampling_memory_per_sample_of_the_tiny_unet() {
        // ddpmpp-tiny: 8×8, 32 channels, levels [1, 1], one block, attention at 4×4.
        // Skips 2·32·64 + 2·32·16 = 5120, widest map 32·64 = 2048 (×8), scores 16² (×2),
        // 16 copies of the 64-value sample: 23,040 f32 = 92,160 bytes.
        let tiny = NetConfig::preset("ddpmpp-tiny").unwrap();
        assert_eq!(sampling_bytes_per_sample(&tiny), 92_160);
        // mlp-2d: 4·max(hidden, emb)·(blocks + 2) values plus 16·2.
        let NetConfig::Mlp(m) = NetConfig::preset("mlp-2d").unwrap() else {
            panic!("mlp-2d is an MLP")
        };
        let v = 4 * m.hidden.max(m.emb_channels) as u128 * (m.num_blocks as u128 + 2) + 32;
        assert_eq!(sampling_bytes_per_sample(&NetConfig::Mlp(m)), 4 * v);
        // The batch: what fits the budget, at most n.
        let budget = u128::from(SAMPLE_MEMORY.min(tweedie_core::budget::max_bytes() / 8));
        let b = sampling_batch(&tiny, 1 << 40) as u128;
        assert!(b * 92_160 <= budget && (b + 1) * 92_160 > budget, "{b}");
        assert_eq!(sampling_batch(&tiny, 5), 5);
    }

    /// Exact for the MLP and the ADM (against building them), and for SongUNet a lower bound
    /// within 5 % of the built count (DDPM++ CIFAR-10: 55,732,739).
    #[test]
    fn parameter_counts_match_or_bound_the_built_networks() -> Result<()> {
        for name in crate::config::PRESETS {
            let net = NetConfig::preset(name)?;
            let need = check_untrusted(&net, None)?;
            let built = match &net {
                NetConfig::Dhariwal(d) => d.shape_count().parameters as u128,
                _ => count_params(&net)?.parameters as u128,
            };
            match net {
                NetConfig::Unet(_) => assert!(
                    need <= built && need as f64 >= 0.95 * built as f64,
                    "{name}: bound {need}, built {built}"
                ),
                _ => assert_eq!(need, built, "{name}"),
            }
        }
        let cond = NetConfig::Mlp(MlpConfig {
            label_dim: 10,
            out_dim: Some(4),
            ..MlpConfig::default()
        });
        assert_eq!(
            check_untrusted(&cond, None)?,
            count_params(&cond)?.parameters as u128
        );
        Ok(())
    }

    #[test]
    fn giant_or_inconsistent_configs_are_refused_before_building() {
        let err = |net: NetConfig, stored: Option<u128>| match check_untrusted(&net, stored) {
            Ok(n) => panic!("accepted {n} parameters"),
            Err(e) => e.to_string(),
        };
        let unet = |f: &dyn Fn(&mut UnetConfig)| {
            let mut c = UnetConfig::default();
            f(&mut c);
            NetConfig::Unet(c)
        };
        let e = err(unet(&|c| c.channel_mult = vec![1; 65]), None);
        assert!(e.contains("channel_mult") && e.contains("16"), "{e}");
        let e = err(unet(&|c| c.channel_mult_noise = usize::MAX), None);
        assert!(e.contains("channel_mult_noise"), "{e}");
        let e = err(unet(&|c| c.out_channels = 1), None);
        assert!(
            e.contains("out_channels") && e.contains("in_channels = 3"),
            "{e}"
        );
        let e = err(unet(&|c| c.model_channels = 1 << 16), None);
        assert!(e.contains("channel_mult") && e.contains("65536"), "{e}");
        // 4096 channels at every one of 16 levels, 64 blocks: far over the budget.
        let e = err(
            unet(&|c| {
                c.model_channels = 4096;
                c.channel_mult = vec![1; 16];
                c.num_blocks = 64;
            }),
            None,
        );
        assert!(e.contains("budget") && e.contains("GiB"), "{e}");
        // A real DDPM++ does not fit in a file of a hundred values.
        let e = err(NetConfig::Unet(UnetConfig::default()), Some(100));
        assert!(e.contains("holds only 100 values"), "{e}");
        let e = err(
            NetConfig::Mlp(MlpConfig {
                dim: 2,
                out_dim: Some(6),
                ..MlpConfig::default()
            }),
            None,
        );
        assert!(e.contains("out_dim"), "{e}");
        let e = err(
            NetConfig::Dhariwal(DhariwalConfig {
                num_blocks: 1 << 40,
                ..DhariwalConfig::default()
            }),
            None,
        );
        assert!(e.contains("num_blocks"), "{e}");
    }
}
