//! SongUNet: DDPM++ and NCSN++ (Song et al. 2021) as configured by Karras et al. 2022,
//! with variables named exactly like the reference state_dict (`enc.32x32_block0.conv0.weight`, …).

use tch::{nn, Tensor};

use crate::config::{DecoderType, EncoderType, UnetConfig};
use crate::error::Result;
use crate::layers::{
    BlockOpts, Conv2d, ConvOpts, GroupNorm, LabelEmbedding, Linear, NoiseEmbedding, Resample,
    UNetBlock, INIT_ZERO,
};
use crate::network::Network;

#[derive(Debug)]
enum Enc {
    Conv(Conv2d),
    Block(Box<UNetBlock>),
    AuxDown(Conv2d),
    AuxSkip(Conv2d),
    AuxResidual(Conv2d),
}

#[derive(Debug)]
enum Dec {
    Block(Box<UNetBlock>),
    AuxUp(Conv2d),
    AuxNorm(GroupNorm),
    AuxConv(Conv2d),
}

/// The SongUNet F(x; c_noise, labels) of Karras et al. 2022 (their training/networks.py).
#[derive(Debug)]
pub struct SongUnet {
    cfg: UnetConfig,
    map_noise: NoiseEmbedding,
    map_label: Option<LabelEmbedding>,
    map_augment: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    enc: Vec<Enc>,
    dec: Vec<Dec>,
}

impl SongUnet {
    /// Builds the network under `p` (the reference puts it under `model`), validating `cfg` first.
    pub fn new(p: &nn::Path, cfg: &UnetConfig) -> Result<Self> {
        cfg.validate()?;
        let mc = cfg.model_channels;
        let emb_channels = mc * cfg.channel_mult_emb;
        let noise_channels = mc * cfg.channel_mult_noise;
        let filter = cfg.resample_filter.as_slice();
        let bo = BlockOpts {
            emb_channels,
            dropout: cfg.dropout,
            filter,
        };
        let plain = |kernel, gain| ConvOpts {
            kernel,
            resample: Resample::None,
            filter,
            fused: false,
            gain,
        };

        let map_noise = NoiseEmbedding::new(&(p / "map_noise"), cfg.embedding, noise_channels);
        let map_label = LabelEmbedding::new(p, cfg.label_dim, noise_channels, cfg.label_dropout);
        let map_augment = (cfg.augment_dim > 0).then(|| {
            Linear::new(
                &(p / "map_augment"),
                cfg.augment_dim,
                noise_channels,
                false,
                1.0,
            )
        });
        let map_layer0 = Linear::new(&(p / "map_layer0"), noise_channels, emb_channels, true, 1.0);
        let map_layer1 = Linear::new(&(p / "map_layer1"), emb_channels, emb_channels, true, 1.0);

        let pe = p / "enc";
        let mut enc = Vec::new();
        let mut skips = Vec::new();
        // A conditioning field enters as extra input channels (the aux pyramid sees it too).
        let mut cout = cfg.in_channels + cfg.cond_channels;
        let mut caux = cout;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            let res = cfg.resolution >> level;
            let wres = cfg.width() >> level;
            let name = |s: &str| format!("{res}x{wres}_{s}");
            if level == 0 {
                let cin = cout;
                cout = mc;
                enc.push(Enc::Conv(Conv2d::new(
                    &(&pe / name("conv")),
                    cin,
                    cout,
                    plain(3, 1.0),
                )));
                skips.push(cout);
            } else {
                let b =
                    UNetBlock::new(&(&pe / name("down")), cout, cout, Resample::Down, false, bo);
                enc.push(Enc::Block(Box::new(b)));
                skips.push(cout);
                match cfg.encoder {
                    EncoderType::Standard => {}
                    EncoderType::Skip => {
                        let down = ConvOpts {
                            resample: Resample::Down,
                            ..plain(0, 1.0)
                        };
                        enc.push(Enc::AuxDown(Conv2d::new(
                            &(&pe / name("aux_down")),
                            caux,
                            caux,
                            down,
                        )));
                        enc.push(Enc::AuxSkip(Conv2d::new(
                            &(&pe / name("aux_skip")),
                            caux,
                            cout,
                            plain(1, 1.0),
                        )));
                    }
                    EncoderType::Residual => {
                        let o = ConvOpts {
                            resample: Resample::Down,
                            fused: true,
                            ..plain(3, 1.0)
                        };
                        enc.push(Enc::AuxResidual(Conv2d::new(
                            &(&pe / name("aux_residual")),
                            caux,
                            cout,
                            o,
                        )));
                        caux = cout;
                    }
                }
            }
            for idx in 0..cfg.num_blocks {
                let cin = cout;
                cout = mc * mult;
                let attn = cfg.attn_resolutions.contains(&res);
                enc.push(Enc::Block(UNetBlock::boxed(
                    &(&pe / name(&format!("block{idx}"))),
                    cin,
                    cout,
                    Resample::None,
                    attn,
                    bo,
                )));
                skips.push(cout);
            }
        }

        let pd = p / "dec";
        let mut dec = Vec::new();
        let levels = cfg.channel_mult.len();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            let res = cfg.resolution >> level;
            let wres = cfg.width() >> level;
            let name = |s: &str| format!("{res}x{wres}_{s}");
            if level == levels - 1 {
                dec.push(Dec::Block(UNetBlock::boxed(
                    &(&pd / name("in0")),
                    cout,
                    cout,
                    Resample::None,
                    true,
                    bo,
                )));
                dec.push(Dec::Block(UNetBlock::boxed(
                    &(&pd / name("in1")),
                    cout,
                    cout,
                    Resample::None,
                    false,
                    bo,
                )));
            } else {
                dec.push(Dec::Block(UNetBlock::boxed(
                    &(&pd / name("up")),
                    cout,
                    cout,
                    Resample::Up,
                    false,
                    bo,
                )));
            }
            for idx in 0..=cfg.num_blocks {
                // The encoder pushed one skip per block; a mismatch here would be a bug in this loop.
                let cin = cout + skips.pop().unwrap_or(0);
                cout = mc * mult;
                let attn = idx == cfg.num_blocks && cfg.attn_resolutions.contains(&res);
                dec.push(Dec::Block(UNetBlock::boxed(
                    &(&pd / name(&format!("block{idx}"))),
                    cin,
                    cout,
                    Resample::None,
                    attn,
                    bo,
                )));
            }
            if cfg.decoder == DecoderType::Skip || level == 0 {
                if cfg.decoder == DecoderType::Skip && level < levels - 1 {
                    let up = ConvOpts {
                        resample: Resample::Up,
                        ..plain(0, 1.0)
                    };
                    dec.push(Dec::AuxUp(Conv2d::new(
                        &(&pd / name("aux_up")),
                        cfg.out_channels,
                        cfg.out_channels,
                        up,
                    )));
                }
                dec.push(Dec::AuxNorm(GroupNorm::new(
                    &(&pd / name("aux_norm")),
                    cout,
                    1e-6,
                )));
                dec.push(Dec::AuxConv(Conv2d::new(
                    &(&pd / name("aux_conv")),
                    cout,
                    cfg.out_channels,
                    plain(3, INIT_ZERO),
                )));
            }
        }
        Ok(SongUnet {
            cfg: cfg.clone(),
            map_noise,
            map_label,
            map_augment,
            map_layer0,
            map_layer1,
            enc,
            dec,
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &UnetConfig {
        &self.cfg
    }
}

impl Network for SongUnet {
    fn forward(
        &self,
        x: &Tensor,
        c_noise: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let mut emb = self.map_noise.forward(c_noise).to_kind(x.kind());
        if let Some(map_label) = &self.map_label {
            emb = emb + map_label.forward(class_labels, x, train);
        }
        if let (Some(m), Some(a)) = (&self.map_augment, augment_labels) {
            emb = emb + m.forward(&a.to_kind(x.kind()));
        }
        let emb = self.map_layer0.forward(&emb).silu();
        let emb = self.map_layer1.forward(&emb).silu();

        let mut skips: Vec<Tensor> = Vec::new();
        let mut aux = x.shallow_clone();
        let mut h = x.shallow_clone();
        for item in &self.enc {
            match item {
                Enc::AuxDown(c) => aux = c.forward(&aux),
                Enc::AuxSkip(c) => {
                    h = h + c.forward(&aux);
                    if let Some(last) = skips.last_mut() {
                        *last = h.shallow_clone();
                    }
                }
                Enc::AuxResidual(c) => {
                    h = (h + c.forward(&aux)) * std::f64::consts::FRAC_1_SQRT_2;
                    aux = h.shallow_clone();
                    if let Some(last) = skips.last_mut() {
                        *last = h.shallow_clone();
                    }
                }
                Enc::Conv(c) => {
                    h = c.forward(&h);
                    skips.push(h.shallow_clone());
                }
                Enc::Block(b) => {
                    h = b.forward(&h, &emb, train);
                    skips.push(h.shallow_clone());
                }
            }
        }

        let mut out: Option<Tensor> = None;
        let mut tmp: Option<Tensor> = None;
        for item in &self.dec {
            match item {
                Dec::AuxUp(c) => out = out.map(|a| c.forward(&a)),
                Dec::AuxNorm(n) => tmp = Some(n.forward(&h)),
                Dec::AuxConv(c) => {
                    if let Some(t) = tmp.take() {
                        let t = c.forward(&t.silu());
                        out = Some(match out {
                            Some(a) => t + a,
                            None => t,
                        });
                    }
                }
                Dec::Block(b) => {
                    if h.size()[1] != b.in_channels {
                        if let Some(s) = skips.pop() {
                            h = Tensor::cat(&[h, s], 1);
                        }
                    }
                    h = b.forward(&h, &emb, train);
                }
            }
        }
        // Every config has an aux head at level 0, so `out` is set; fall back to h for safety.
        out.unwrap_or(h)
    }
}
