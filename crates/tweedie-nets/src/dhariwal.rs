//! DhariwalUNet: the ADM architecture (Dhariwal & Nichol 2021) as re-implemented by Karras et
//! al. 2022, with variables named like the reference state_dict (`model.enc.64x64_conv`,
//! `model.dec.8x8_in0`, `model.out_norm`, …). Differs from SongUNet in: adaptive scale/shift
//! from the embedding, attention heads of 64 channels, GroupNorm eps 1e-5, skip scale 1, no
//! resampling projection, a bias-free label map added after the mapping MLP, a [cos, sin]
//! embedding without endpoint, a final GroupNorm + convolution, and Kaiming-uniform init.

use tch::{nn, Kind, Tensor};
use tweedie_core::Invalid;

use crate::config::{check_pos, check_prob, group_count, DhariwalConfig};
use crate::error::{NetsError, Result};
use crate::layers::{attention, Conv2d, ConvOpts, GroupNorm, Linear, Resample, WInit};
use crate::network::{Network, ParamCount};

/// ADM's channels per attention head (EDM `channels_per_head=64`).
const HEAD_CHANNELS: usize = 64;
/// ADM's GroupNorm epsilon.
const EPS: f64 = 1e-5;

/// One module of the encoder or decoder, in the reference's order.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// 3×3 convolution (first encoder layer).
    Conv {
        name: String,
        cin: usize,
        cout: usize,
    },
    /// Residual block.
    Block {
        name: String,
        cin: usize,
        cout: usize,
        resample: Resample,
        attention: bool,
    },
}

/// The module list of a config: built once, used by both the network and the shape-only count.
fn plan(cfg: &DhariwalConfig) -> (Vec<Item>, Vec<Item>, usize) {
    let mc = cfg.model_channels;
    let mut enc = Vec::new();
    let mut skips = Vec::new();
    let mut cout = cfg.in_channels;
    for (level, &mult) in cfg.channel_mult.iter().enumerate() {
        let res = cfg.resolution >> level;
        let name = |s: &str| format!("{res}x{res}_{s}");
        if level == 0 {
            let cin = cout;
            cout = mc * mult;
            enc.push(Item::Conv {
                name: name("conv"),
                cin,
                cout,
            });
        } else {
            enc.push(Item::Block {
                name: name("down"),
                cin: cout,
                cout,
                resample: Resample::Down,
                attention: false,
            });
        }
        skips.push(cout);
        for idx in 0..cfg.num_blocks {
            let cin = cout;
            cout = mc * mult;
            enc.push(Item::Block {
                name: name(&format!("block{idx}")),
                cin,
                cout,
                resample: Resample::None,
                attention: cfg.attn_resolutions.contains(&res),
            });
            skips.push(cout);
        }
    }
    let mut dec = Vec::new();
    let levels = cfg.channel_mult.len();
    for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
        let res = cfg.resolution >> level;
        let name = |s: &str| format!("{res}x{res}_{s}");
        let same = |n: &str, resample, attention| Item::Block {
            name: name(n),
            cin: cout,
            cout,
            resample,
            attention,
        };
        if level == levels - 1 {
            dec.push(same("in0", Resample::None, true));
            dec.push(same("in1", Resample::None, false));
        } else {
            dec.push(same("up", Resample::Up, false));
        }
        for idx in 0..=cfg.num_blocks {
            // One skip per encoder item; plan() pushed exactly as many as the decoder pops.
            let cin = cout + skips.pop().unwrap_or(0);
            cout = mc * mult;
            dec.push(Item::Block {
                name: name(&format!("block{idx}")),
                cin,
                cout,
                resample: Resample::None,
                attention: cfg.attn_resolutions.contains(&res),
            });
        }
    }
    (enc, dec, cout)
}

/// Attention heads of a block with `cout` channels: cout/64, none below 64 channels (as EDM).
fn heads(attention: bool, cout: usize) -> usize {
    if attention {
        cout / HEAD_CHANNELS
    } else {
        0
    }
}

impl DhariwalConfig {
    /// Checks every value; the error names the offending key and value.
    pub fn validate(&self) -> Result<()> {
        check_pos("resolution", self.resolution)?;
        check_pos("in_channels", self.in_channels)?;
        check_pos("out_channels", self.out_channels)?;
        check_pos("model_channels", self.model_channels)?;
        check_pos("channel_mult_emb", self.channel_mult_emb)?;
        check_prob("dropout", self.dropout)?;
        check_prob("label_dropout", self.label_dropout)?;
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return Err(NetsError::invalid(
                "channel_mult",
                format!("{:?}", self.channel_mult),
                "needs at least one level, every multiplier > 0",
            ));
        }
        let div = 1usize << (self.channel_mult.len() - 1);
        if self.resolution % div != 0 {
            return Err(NetsError::invalid(
                "resolution",
                self.resolution,
                format!("must be divisible by 2^(levels−1) = {div}"),
            ));
        }
        if self.model_channels % 2 != 0 || self.model_channels < 4 {
            return Err(NetsError::invalid(
                "model_channels",
                self.model_channels,
                "must be even and ≥ 4 (cos/sin embedding)",
            ));
        }
        let (enc, dec, _) = plan(self);
        for item in enc.iter().chain(&dec) {
            let (cin, cout, attention) = match item {
                Item::Conv { cout, .. } => (*cout, *cout, false),
                Item::Block {
                    cin,
                    cout,
                    attention,
                    ..
                } => (*cin, *cout, *attention),
            };
            for c in [cin, cout] {
                let g = group_count(c);
                if g == 0 || c % g != 0 {
                    return Err(NetsError::invalid(
                        "model_channels",
                        self.model_channels,
                        format!("GroupNorm needs min(32, C/4) to divide C; fails for C = {c}"),
                    ));
                }
            }
            let h = heads(attention, cout);
            if h > 0 && cout % h != 0 {
                return Err(NetsError::invalid(
                    "model_channels",
                    self.model_channels,
                    format!("{cout} channels do not split into {h} attention heads"),
                ));
            }
        }
        Ok(())
    }

    /// Parameter and buffer counts from shapes alone (no tensor is allocated): what
    /// [`crate::count_params`] reports after building, for presets too large to build in a test.
    pub fn shape_count(&self) -> ParamCount {
        let mc = self.model_channels;
        let emb = mc * self.channel_mult_emb;
        let mut c = ParamCount {
            parameters: 0,
            parameter_tensors: 0,
            buffers: 0,
        };
        let add = |c: &mut ParamCount, n: usize, tensors: usize| {
            c.parameters += n;
            c.parameter_tensors += tensors;
        };
        // Convolution k×k with bias (k = 0: resampling only), plus its filter buffer.
        let conv = |c: &mut ParamCount, cin: usize, cout: usize, k: usize, resample: bool| {
            if k > 0 {
                c.parameters += cout * cin * k * k + cout;
                c.parameter_tensors += 2;
            }
            c.buffers += resample as usize;
        };
        if self.augment_dim > 0 {
            add(&mut c, self.augment_dim * mc, 1);
        }
        add(&mut c, mc * emb + emb, 2);
        add(&mut c, emb * emb + emb, 2);
        if self.label_dim > 0 {
            add(&mut c, self.label_dim * emb, 1);
        }
        let (enc, dec, cout) = plan(self);
        for item in enc.iter().chain(&dec) {
            match item {
                Item::Conv { cin, cout, .. } => conv(&mut c, *cin, *cout, 3, false),
                Item::Block {
                    cin,
                    cout,
                    resample,
                    attention,
                    ..
                } => {
                    let (ci, co, rs) = (*cin, *cout, *resample != Resample::None);
                    add(&mut c, 2 * ci, 2);
                    conv(&mut c, ci, co, 3, rs);
                    add(&mut c, emb * 2 * co + 2 * co, 2);
                    add(&mut c, 2 * co, 2);
                    conv(&mut c, co, co, 3, false);
                    if ci != co || rs {
                        conv(&mut c, ci, co, if ci != co { 1 } else { 0 }, rs);
                    }
                    if heads(*attention, co) > 0 {
                        add(&mut c, 2 * co, 2);
                        conv(&mut c, co, 3 * co, 1, false);
                        conv(&mut c, co, co, 1, false);
                    }
                }
            }
        }
        add(&mut c, 2 * cout, 2);
        conv(&mut c, cout, self.out_channels, 3, false);
        c
    }
}

/// ADM residual block: adaptive GroupNorm scale/shift from the embedding, optional up/down
/// sampling, multi-head self-attention with 64 channels per head.
#[derive(Debug)]
struct AdmBlock {
    in_channels: i64,
    norm0: GroupNorm,
    conv0: Conv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    skip: Option<Conv2d>,
    attn: Option<(GroupNorm, Conv2d, Conv2d, i64)>,
    dropout: f64,
}

impl AdmBlock {
    fn new(
        p: &nn::Path,
        cin: usize,
        cout: usize,
        resample: Resample,
        attention: bool,
        emb: usize,
        dropout: f64,
    ) -> Self {
        let filter: &[f64] = &[1.0, 1.0];
        let o = |kernel, resample| ConvOpts {
            kernel,
            resample,
            filter,
            fused: false,
            gain: 1.0,
        };
        let ku = WInit::KaimingUniform;
        let norm0 = GroupNorm::new(&(p / "norm0"), cin, EPS);
        let conv0 = Conv2d::with_init(&(p / "conv0"), cin, cout, o(3, resample), ku);
        let affine = Linear::with_init(&(p / "affine"), emb, 2 * cout, true, ku);
        let norm1 = GroupNorm::new(&(p / "norm1"), cout, EPS);
        let conv1 = Conv2d::with_init(
            &(p / "conv1"),
            cout,
            cout,
            o(3, Resample::None),
            WInit::Zero,
        );
        // No resampling projection: a same-width resampling skip is the bare FIR filter.
        let skip = (cout != cin || resample != Resample::None).then(|| {
            let k = if cout != cin { 1 } else { 0 };
            Conv2d::with_init(&(p / "skip"), cin, cout, o(k, resample), ku)
        });
        let h = heads(attention, cout);
        let attn = (h > 0).then(|| {
            (
                GroupNorm::new(&(p / "norm2"), cout, EPS),
                Conv2d::with_init(&(p / "qkv"), cout, 3 * cout, o(1, Resample::None), ku),
                Conv2d::with_init(&(p / "proj"), cout, cout, o(1, Resample::None), WInit::Zero),
                h as i64,
            )
        });
        AdmBlock {
            in_channels: cin as i64,
            norm0,
            conv0,
            affine,
            norm1,
            conv1,
            skip,
            attn,
            dropout,
        }
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let h = self.conv0.forward(&self.norm0.forward(x).silu());
        let params = self
            .affine
            .forward(emb)
            .unsqueeze(2)
            .unsqueeze(3)
            .to_kind(h.kind());
        let ss = params.chunk(2, 1);
        // h ← silu(shift + GN(h)·(scale + 1))
        let h = (&ss[1] + self.norm1.forward(&h) * (&ss[0] + 1.0)).silu();
        let h = self.conv1.forward(&h.dropout(self.dropout, train));
        let mut x = match &self.skip {
            Some(s) => h + s.forward(x),
            None => h + x,
        };
        if let Some((norm2, qkv, proj, heads)) = &self.attn {
            let s = x.size();
            let (b, c) = (s[0], s[1]);
            let ch = c / heads;
            let a = attention(
                &qkv.forward(&norm2.forward(&x))
                    .reshape([b * heads, ch, 3, -1]),
            );
            x = proj.forward(&a.reshape(s.as_slice())) + x;
        }
        x
    }
}

#[derive(Debug)]
enum Module {
    Conv(Conv2d),
    Block(Box<AdmBlock>),
}

/// The DhariwalUNet F(x; c_noise, labels) of Karras et al. 2022 (ADM, Dhariwal & Nichol 2021).
#[derive(Debug)]
pub struct DhariwalUnet {
    cfg: DhariwalConfig,
    map_augment: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    map_label: Option<Linear>,
    enc: Vec<Module>,
    dec: Vec<AdmBlock>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
}

impl DhariwalUnet {
    /// Builds the network under `p` (the reference puts it under `model`), validating `cfg` first.
    pub fn new(p: &nn::Path, cfg: &DhariwalConfig) -> Result<Self> {
        cfg.validate()?;
        let mc = cfg.model_channels;
        let emb = mc * cfg.channel_mult_emb;
        let ku = WInit::KaimingUniform;
        let map_augment = (cfg.augment_dim > 0).then(|| {
            Linear::with_init(
                &(p / "map_augment"),
                cfg.augment_dim,
                mc,
                false,
                WInit::Zero,
            )
        });
        let map_layer0 = Linear::with_init(&(p / "map_layer0"), mc, emb, true, ku);
        let map_layer1 = Linear::with_init(&(p / "map_layer1"), emb, emb, true, ku);
        let map_label = (cfg.label_dim > 0).then(|| {
            let gain = (cfg.label_dim as f64).sqrt();
            Linear::with_init(
                &(p / "map_label"),
                cfg.label_dim,
                emb,
                false,
                WInit::KaimingNormal(gain),
            )
        });
        let (enc_plan, dec_plan, cout) = plan(cfg);
        let block = |base: &nn::Path, item: &Item| -> Option<Box<AdmBlock>> {
            match item {
                Item::Block {
                    name,
                    cin,
                    cout,
                    resample,
                    attention,
                } => Some(Box::new(AdmBlock::new(
                    &(base / name.as_str()),
                    *cin,
                    *cout,
                    *resample,
                    *attention,
                    emb,
                    cfg.dropout,
                ))),
                Item::Conv { .. } => None,
            }
        };
        let pe = p / "enc";
        let enc = enc_plan
            .iter()
            .map(|item| match item {
                Item::Conv { name, cin, cout } => Module::Conv(Conv2d::with_init(
                    &(&pe / name.as_str()),
                    *cin,
                    *cout,
                    ConvOpts {
                        kernel: 3,
                        resample: Resample::None,
                        filter: &[1.0, 1.0],
                        fused: false,
                        gain: 1.0,
                    },
                    ku,
                )),
                b => Module::Block(block(&pe, b).unwrap_or_else(|| unreachable!())),
            })
            .collect();
        let pd = p / "dec";
        let dec = dec_plan
            .iter()
            .filter_map(|item| block(&pd, item).map(|b| *b))
            .collect();
        let out_norm = GroupNorm::new(&(p / "out_norm"), cout, EPS);
        let out_conv = Conv2d::with_init(
            &(p / "out_conv"),
            cout,
            cfg.out_channels,
            ConvOpts {
                kernel: 3,
                resample: Resample::None,
                filter: &[1.0, 1.0],
                fused: false,
                gain: 1.0,
            },
            WInit::Zero,
        );
        Ok(DhariwalUnet {
            cfg: cfg.clone(),
            map_augment,
            map_layer0,
            map_layer1,
            map_label,
            enc,
            dec,
            out_norm,
            out_conv,
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &DhariwalConfig {
        &self.cfg
    }
}

/// ADM's timestep embedding of c [B] → [B, N]: [cos(c·ωᵢ), sin(c·ωᵢ)], ωᵢ = 10000^(−i/(N/2))
/// (no endpoint; Dhariwal & Nichol 2021 as in EDM's PositionalEmbedding(endpoint=False)).
fn adm_embedding(c: &Tensor, channels: i64) -> Tensor {
    let x = c.to_kind(Kind::Float);
    let half = channels / 2;
    let i = Tensor::arange(half, (Kind::Float, x.device())) / (half as f64);
    let freqs = i.multiply_scalar(-(10000f64.ln())).exp();
    let arg = x.outer(&freqs);
    Tensor::cat(&[arg.cos(), arg.sin()], 1)
}

impl Network for DhariwalUnet {
    fn forward(
        &self,
        x: &Tensor,
        c_noise: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let mut emb = adm_embedding(c_noise, self.cfg.model_channels as i64).to_kind(x.kind());
        if let (Some(m), Some(a)) = (&self.map_augment, augment_labels) {
            emb = emb + m.forward(&a.to_kind(x.kind()));
        }
        let emb = self.map_layer0.forward(&emb).silu();
        let mut emb = self.map_layer1.forward(&emb);
        if let Some(m) = &self.map_label {
            let batch = x.size()[0];
            let dim = self.cfg.label_dim as i64;
            let mut y = match class_labels {
                Some(y) => y.to_kind(x.kind()).reshape([-1, dim]),
                None => Tensor::zeros([batch, dim], (x.kind(), x.device())),
            };
            if train && self.cfg.label_dropout > 0.0 {
                let keep =
                    Tensor::rand([batch, 1], (Kind::Float, x.device())).ge(self.cfg.label_dropout);
                y = y * keep.to_kind(x.kind());
            }
            emb = emb + m.forward(&y);
        }
        let emb = emb.silu();

        let mut skips = Vec::with_capacity(self.enc.len());
        let mut h = x.shallow_clone();
        for m in &self.enc {
            h = match m {
                Module::Conv(c) => c.forward(&h),
                Module::Block(b) => b.forward(&h, &emb, train),
            };
            skips.push(h.shallow_clone());
        }
        for b in &self.dec {
            if h.size()[1] != b.in_channels {
                if let Some(s) = skips.pop() {
                    h = Tensor::cat(&[h, s], 1);
                }
            }
            h = b.forward(&h, &emb, train);
        }
        self.out_conv.forward(&self.out_norm.forward(&h).silu())
    }
}
