//! Building blocks of SongUNet (Song et al. 2021, re-implemented by Karras et al. 2022),
//! named like the reference's modules so state_dicts load without renaming.

use tch::{nn, Kind, Tensor};

use crate::config::{group_count, Embedding};

/// Xavier-uniform weights scaled by `gain`: w ~ gain·√(6/(fan_in+fan_out))·U(−1, 1)
/// (Glorot & Bengio 2010; EDM `weight_init(mode='xavier_uniform')`).
pub(crate) fn xavier_uniform(
    p: &nn::Path,
    name: &str,
    dims: &[i64],
    fan_in: i64,
    fan_out: i64,
    gain: f64,
) -> Tensor {
    let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
    p.var(
        name,
        dims,
        nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )
}

/// Fully connected layer y = x·Wᵀ + b with Xavier-uniform W and zero b.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

/// Weight initialisation of a layer (EDM `weight_init` modes as its networks use them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum WInit {
    /// Xavier-uniform weights scaled by the gain, zero bias (SongUNet).
    Xavier(f64),
    /// Weights and bias uniform in ±√(1/fan_in) (ADM's kaiming_uniform·√⅓, PyTorch's default).
    KaimingUniform,
    /// Weights N(0, gain²/fan_in), no bias draw (ADM's label map).
    KaimingNormal(f64),
    /// All zeros (ADM's output layers).
    Zero,
}

impl WInit {
    fn weight(self, p: &nn::Path, dims: &[i64], fan_in: i64, fan_out: i64) -> Tensor {
        let bound = (1.0 / fan_in.max(1) as f64).sqrt();
        match self {
            WInit::Xavier(gain) => xavier_uniform(p, "weight", dims, fan_in, fan_out, gain),
            WInit::KaimingUniform => p.var(
                "weight",
                dims,
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            WInit::KaimingNormal(gain) => p.var(
                "weight",
                dims,
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: gain * bound,
                },
            ),
            WInit::Zero => p.zeros("weight", dims),
        }
    }

    fn bias(self, p: &nn::Path, n: i64, fan_in: i64) -> Tensor {
        let bound = (1.0 / fan_in.max(1) as f64).sqrt();
        match self {
            WInit::KaimingUniform => p.var(
                "bias",
                &[n],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            _ => p.zeros("bias", &[n]),
        }
    }
}

impl Linear {
    pub(crate) fn new(p: &nn::Path, fan_in: usize, fan_out: usize, bias: bool, gain: f64) -> Self {
        Self::with_init(p, fan_in, fan_out, bias, WInit::Xavier(gain))
    }

    pub(crate) fn with_init(
        p: &nn::Path,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
        init: WInit,
    ) -> Self {
        let (i, o) = (fan_in as i64, fan_out as i64);
        let weight = init.weight(p, &[o, i], i, o);
        let bias = bias.then(|| init.bias(p, o, i));
        Linear { weight, bias }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// Class-label term of the mapping network: `map_label(y·√C)` for one-hot (or soft) labels y,
/// as SongUNet adds it to the noise embedding. Missing labels mean "unconditional" (y = 0), and
/// in training each row's labels are dropped to 0 with probability `dropout`, which is what
/// classifier-free guidance needs.
#[derive(Debug)]
pub(crate) struct LabelEmbedding {
    map_label: Linear,
    dim: i64,
    dropout: f64,
}

impl LabelEmbedding {
    /// `None` for unconditional networks (`label_dim` = 0); the weights live under `p/map_label`.
    pub(crate) fn new(
        p: &nn::Path,
        label_dim: usize,
        channels: usize,
        dropout: f64,
    ) -> Option<Self> {
        (label_dim > 0).then(|| LabelEmbedding {
            map_label: Linear::new(&(p / "map_label"), label_dim, channels, true, 1.0),
            dim: label_dim as i64,
            dropout,
        })
    }

    /// The term [B, channels] for `batch` rows, in `like`'s kind and device.
    pub(crate) fn forward(&self, labels: Option<&Tensor>, like: &Tensor, train: bool) -> Tensor {
        let batch = like.size()[0];
        let mut y = match labels {
            Some(y) => y.to_kind(like.kind()).reshape([-1, self.dim]),
            None => Tensor::zeros([batch, self.dim], (like.kind(), like.device())),
        };
        if train && self.dropout > 0.0 {
            let keep = Tensor::rand([batch, 1], (Kind::Float, like.device())).ge(self.dropout);
            y = y * keep.to_kind(like.kind());
        }
        self.map_label.forward(&(y * (self.dim as f64).sqrt()))
    }
}

/// GroupNorm with the reference's group count min(32, C/4) (Wu & He 2018).
#[derive(Debug)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub(crate) fn new(p: &nn::Path, channels: usize, eps: f64) -> Self {
        GroupNorm {
            weight: p.ones("weight", &[channels as i64]),
            bias: p.zeros("bias", &[channels as i64]),
            groups: group_count(channels) as i64,
            eps,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// Up/down-sampling mode of a [`Conv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resample {
    None,
    Up,
    Down,
}

/// Convolution with optional FIR up/down-sampling by 2 (filter f⊗f / (Σf)², Zhang 2019),
/// optionally fused into the convolution as in the reference's `fused_resample`.
#[derive(Debug)]
pub(crate) struct Conv2d {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    filter: Option<Tensor>,
    resample: Resample,
    fused: bool,
    /// Filter [1,1]: down = 2×2 average pool, up = nearest ×2 (same numbers, fewer FLOPs).
    box_filter: bool,
    in_channels: i64,
    out_channels: i64,
    w_pad: i64,
    f_pad: i64,
}

/// Options of [`Conv2d::new`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvOpts<'a> {
    pub kernel: usize,
    pub resample: Resample,
    pub filter: &'a [f64],
    pub fused: bool,
    pub gain: f64,
}

impl Conv2d {
    pub(crate) fn new(p: &nn::Path, cin: usize, cout: usize, o: ConvOpts<'_>) -> Self {
        Self::with_init(p, cin, cout, o, WInit::Xavier(o.gain))
    }

    /// As [`Conv2d::new`] with an explicit initialisation (`o.gain` is then unused).
    pub(crate) fn with_init(
        p: &nn::Path,
        cin: usize,
        cout: usize,
        o: ConvOpts<'_>,
        init: WInit,
    ) -> Self {
        let (ci, co, k) = (cin as i64, cout as i64, o.kernel as i64);
        let weight = (k > 0).then(|| init.weight(p, &[co, ci, k, k], ci * k * k, co * k * k));
        let bias = (k > 0).then(|| init.bias(p, co, ci * k * k));
        let n = o.filter.len() as i64;
        let filter = (o.resample != Resample::None).then(|| {
            let f = Tensor::from_slice(o.filter).to_kind(Kind::Float);
            let norm = f.sum(Kind::Float).square();
            let f2 = (f.outer(&f) / norm)
                .reshape([1, 1, n, n])
                .to_device(p.device());
            p.add("resample_filter", f2, false)
        });
        let box_filter = o.filter.len() == 2 && o.filter[0] == o.filter[1];
        Conv2d {
            weight,
            bias,
            filter,
            resample: o.resample,
            fused: o.fused,
            box_filter,
            in_channels: ci,
            out_channels: co,
            w_pad: k / 2,
            f_pad: (n - 1) / 2,
        }
    }

    fn down(&self, x: &Tensor, f: &Tensor, channels: i64, pad: i64) -> Tensor {
        if self.box_filter && pad == 0 {
            x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)
        } else {
            let w = f.to_kind(x.kind()).repeat([channels, 1, 1, 1]);
            x.conv2d(&w, None::<&Tensor>, [2, 2], [pad, pad], [1, 1], channels)
        }
    }

    fn up(&self, x: &Tensor, f: &Tensor, channels: i64, pad: i64) -> Tensor {
        if self.box_filter && pad == 0 {
            let s = x.size();
            x.upsample_nearest2d([s[2] * 2, s[3] * 2], Some(2.0), Some(2.0))
        } else {
            let w = (f.to_kind(x.kind()) * 4.0).repeat([channels, 1, 1, 1]);
            x.conv_transpose2d(
                &w,
                None::<&Tensor>,
                [2, 2],
                [pad, pad],
                [0, 0],
                channels,
                [1, 1],
            )
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let (wp, fp) = (self.w_pad, self.f_pad);
        let conv = |x: &Tensor, w: &Tensor, pad: i64| {
            x.conv2d(w, None::<&Tensor>, [1, 1], [pad, pad], [1, 1], 1)
        };
        let y = match (&self.weight, &self.filter) {
            (Some(w), Some(f)) if self.fused && self.resample == Resample::Up => {
                let y = self.up(x, f, self.in_channels, (fp - wp).max(0));
                conv(&y, w, (wp - fp).max(0))
            }
            (Some(w), Some(f)) if self.fused && self.resample == Resample::Down => {
                let y = conv(x, w, wp + fp);
                self.down(&y, f, self.out_channels, 0)
            }
            (Some(w), None) => return x.conv2d(w, self.bias.as_ref(), [1, 1], [wp, wp], [1, 1], 1),
            (w, f) => {
                let mut y = x.shallow_clone();
                if let Some(f) = f {
                    y = match self.resample {
                        Resample::Up => self.up(&y, f, self.in_channels, fp),
                        Resample::Down => self.down(&y, f, self.in_channels, fp),
                        Resample::None => y,
                    };
                }
                match w {
                    Some(w) => conv(&y, w, wp),
                    None => y,
                }
            }
        };
        match &self.bias {
            Some(b) => y + b.reshape([1, -1, 1, 1]),
            None => y,
        }
    }
}

/// Residual block of SongUNet with optional resampling and single-head self-attention
/// (the reference's UNetBlock with adaptive_scale=False, resample_proj=True, skip_scale=√½).
#[derive(Debug)]
pub(crate) struct UNetBlock {
    pub(crate) in_channels: i64,
    norm0: GroupNorm,
    conv0: Conv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    skip: Option<Conv2d>,
    attn: Option<(GroupNorm, Conv2d, Conv2d)>,
    dropout: f64,
    skip_scale: f64,
}

/// Options shared by every block of a SongUNet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockOpts<'a> {
    pub emb_channels: usize,
    pub dropout: f64,
    pub filter: &'a [f64],
}

/// EDM's `init_zero` gain: output layers start near zero so each block starts near identity.
pub(crate) const INIT_ZERO: f64 = 1e-5;
/// EDM's `init_attn` gain √0.2 for the qkv projection.
const INIT_ATTN: f64 = 0.447_213_595_499_958;

impl UNetBlock {
    /// [`UNetBlock::new`] on the heap (blocks are large next to the other U-Net items).
    pub(crate) fn boxed(
        p: &nn::Path,
        cin: usize,
        cout: usize,
        resample: Resample,
        attention: bool,
        o: BlockOpts<'_>,
    ) -> Box<Self> {
        Box::new(Self::new(p, cin, cout, resample, attention, o))
    }

    pub(crate) fn new(
        p: &nn::Path,
        cin: usize,
        cout: usize,
        resample: Resample,
        attention: bool,
        o: BlockOpts<'_>,
    ) -> Self {
        let eps = 1e-6;
        let plain = |kernel, gain| ConvOpts {
            kernel,
            resample: Resample::None,
            filter: o.filter,
            fused: false,
            gain,
        };
        let conv0 = Conv2d::new(
            &(p / "conv0"),
            cin,
            cout,
            ConvOpts {
                resample,
                ..plain(3, 1.0)
            },
        );
        let skip = (cout != cin || resample != Resample::None).then(|| {
            Conv2d::new(
                &(p / "skip"),
                cin,
                cout,
                ConvOpts {
                    resample,
                    ..plain(1, 1.0)
                },
            )
        });
        let attn = attention.then(|| {
            (
                GroupNorm::new(&(p / "norm2"), cout, eps),
                Conv2d::new(&(p / "qkv"), cout, cout * 3, plain(1, INIT_ATTN)),
                Conv2d::new(&(p / "proj"), cout, cout, plain(1, INIT_ZERO)),
            )
        });
        UNetBlock {
            in_channels: cin as i64,
            norm0: GroupNorm::new(&(p / "norm0"), cin, eps),
            conv0,
            affine: Linear::new(&(p / "affine"), o.emb_channels, cout, true, 1.0),
            norm1: GroupNorm::new(&(p / "norm1"), cout, eps),
            conv1: Conv2d::new(&(p / "conv1"), cout, cout, plain(3, INIT_ZERO)),
            skip,
            attn,
            dropout: o.dropout,
            skip_scale: std::f64::consts::FRAC_1_SQRT_2,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let h = self.conv0.forward(&self.norm0.forward(x).silu());
        let params = self
            .affine
            .forward(emb)
            .unsqueeze(2)
            .unsqueeze(3)
            .to_kind(h.kind());
        let h = self.norm1.forward(&(h + params)).silu();
        let h = self.conv1.forward(&h.dropout(self.dropout, train));
        let res = match &self.skip {
            Some(s) => s.forward(x),
            None => x.shallow_clone(),
        };
        let mut x = (h + res) * self.skip_scale;
        if let Some((norm2, qkv, proj)) = &self.attn {
            let s = x.size();
            let (b, c) = (s[0], s[1]);
            // One head: q, k, v are [B, C, HW].
            let a = attention(&qkv.forward(&norm2.forward(&x)).reshape([b, c, 3, -1]));
            x = (proj.forward(&a.reshape(s.as_slice())) + x) * self.skip_scale;
        }
        x
    }
}

/// The reference's attention (EDM `AttentionOp`) on qkv of shape [B·heads, C_h, 3, HW]:
/// v·softmax(qᵀk/√C_h)ᵀ over the keys, the logits and softmax in f32 as the reference computes
/// them; returns [B·heads, C_h, HW] in v's kind.
pub(crate) fn attention(qkv: &Tensor) -> Tensor {
    let ch = qkv.size()[1];
    let (q, k, v) = (qkv.select(2, 0), qkv.select(2, 1), qkv.select(2, 2));
    let scale = 1.0 / (ch as f64).sqrt();
    let logits = q
        .transpose(1, 2)
        .to_kind(Kind::Float)
        .matmul(&(k * scale).to_kind(Kind::Float));
    let w = logits.softmax(2, Kind::Float).to_kind(v.kind());
    v.matmul(&w.transpose(1, 2))
}

/// Noise-level embedding of c_noise [B] → [B, N]; output order [sin, cos] as the reference
/// produces after its sin/cos swap.
#[derive(Debug)]
pub(crate) enum NoiseEmbedding {
    /// ωᵢ = (1/10000)^(i/(N/2−1)), i = 0…N/2−1 (endpoint=True).
    Positional { channels: i64 },
    /// Fixed random frequencies fᵢ ~ N(0, 16²), stored as buffer `freqs`.
    Fourier { freqs: Tensor },
}

impl NoiseEmbedding {
    pub(crate) fn new(p: &nn::Path, kind: Embedding, channels: usize) -> Self {
        match kind {
            Embedding::Positional => NoiseEmbedding::Positional {
                channels: channels as i64,
            },
            Embedding::Fourier => {
                let f = Tensor::randn([channels as i64 / 2], (Kind::Float, p.device())) * 16.0;
                NoiseEmbedding::Fourier {
                    freqs: p.add("freqs", f, false),
                }
            }
        }
    }

    pub(crate) fn forward(&self, c_noise: &Tensor) -> Tensor {
        let x = c_noise.to_kind(Kind::Float);
        let arg = match self {
            NoiseEmbedding::Positional { channels } => {
                let half = channels / 2;
                let i =
                    Tensor::arange(half, (Kind::Float, x.device())) / ((half - 1).max(1) as f64);
                let freqs = i.multiply_scalar(-(10000f64.ln())).exp();
                x.outer(&freqs)
            }
            NoiseEmbedding::Fourier { freqs } => x.outer(&(freqs * (2.0 * std::f64::consts::PI))),
        };
        Tensor::cat(&[arg.sin(), arg.cos()], 1)
    }
}
