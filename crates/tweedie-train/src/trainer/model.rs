//! The network fitted to the data, and the device it trains on.

use tch::Device;
use tweedie_core::Invalid;
use tweedie_nets::{Conditioning, ModelConfig, NetConfig};

use crate::config::TrainConfig;
use crate::data::{Data, Dataset};
use crate::error::{Result, TrainError};

/// (channels, height, width) of image data whose sides fit a U-Net with `channel_mult` levels.
fn image_shape(data: &Dataset, channel_mult: &[usize]) -> Result<(usize, usize, usize)> {
    let &[c, h, w] = data.shape.as_slice() else {
        return Err(TrainError::invalid(
            "network.type",
            "unet",
            format!(
                "the U-Net needs image data [C, H, W], the data are {:?}",
                data.shape
            ),
        ));
    };
    let levels = channel_mult.len().saturating_sub(1) as u32;
    let div = 1usize << levels;
    if h % div != 0 || w % div != 0 {
        return Err(TrainError::invalid(
            "network.channel_mult",
            format!("{channel_mult:?}"),
            format!(
                "the data grid {h}×{w} does not fit a U-Net of {} levels: both sides \
                 must be divisible by 2^(levels−1) = {div} (crop or pad the grid, or \
                 use fewer levels)",
                levels + 1,
            ),
        ));
    }
    Ok((c, h, w))
}

/// Sets the network's shape keys (resolution, channels, dim) and label_dim from the data,
/// and its conditioning channels from `conditioning` (whose factor must divide the grid).
pub fn fit_network_to_data(
    net: &mut NetConfig,
    data: &Dataset,
    conditional: bool,
    conditioning: Option<&Conditioning>,
) -> Result<()> {
    let label_dim = if conditional {
        data.num_classes.ok_or_else(|| {
            TrainError::invalid("training.conditional", true, "the data set has no labels")
        })?
    } else {
        0
    };
    match net {
        NetConfig::Unet(u) => {
            let (c, h, w) = image_shape(data, &u.channel_mult)?;
            u.resolution = h;
            u.width = (w != h).then_some(w);
            u.in_channels = c;
            u.out_channels = c;
            u.label_dim = label_dim;
            u.cond_channels = match conditioning {
                Some(cd) => {
                    cd.check_shape(&[c as i64, h as i64, w as i64])?;
                    cd.channels(c)
                }
                None => 0,
            };
        }
        NetConfig::Dhariwal(u) => {
            let (c, h, w) = image_shape(data, &u.channel_mult)?;
            if h != w {
                return Err(TrainError::Data(format!(
                    "the ADM U-Net needs square images, the data are {h}×{w}"
                )));
            }
            u.resolution = h;
            u.in_channels = c;
            u.out_channels = c;
            u.label_dim = label_dim;
        }
        NetConfig::Mlp(m) => {
            m.dim = data.dim();
            m.label_dim = label_dim;
        }
    }
    net.validate()
        .map_err(|e| TrainError::invalid("network", "(config)", e.to_string()))
}

pub(super) fn device_of(cfg: &TrainConfig) -> Result<Device> {
    let spec: tweedie_nets::DeviceSpec = cfg.training.device.parse().map_err(|e| {
        TrainError::invalid("training.device", &cfg.training.device, format!("{e}"))
    })?;
    spec.resolve()
        .map_err(|e| TrainError::invalid("training.device", &cfg.training.device, format!("{e}")))
}

/// The denoiser config (network + wrapper) of a training config fitted to its data.
pub fn model_config(cfg: &TrainConfig, data: &Data) -> Result<ModelConfig> {
    let mut net = cfg.network.clone();
    fit_network_to_data(
        &mut net,
        &data.train,
        cfg.training.conditional,
        cfg.conditioning.as_ref(),
    )?;
    let f = cfg.formulation()?;
    crate::formulation::widen_for_learned_variance(&f, &mut net);
    Ok(ModelConfig {
        net,
        wrapper: f.wrapper,
        conditioning: cfg.conditioning.clone(),
    })
}
