//! Preconditioned denoisers D(x̃; σ̃) = c_skip·x̃ + c_out·F(c_in·x̃; c_noise) (Karras et al.
//! 2022, eq. 7), with per-sample coefficients computed in f64 by tweedie-core.

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};
use tweedie_core::param::convert_coeffs;
use tweedie_core::Invalid;
use tweedie_core::{Param, Precond, PrecondCoeffs, ProcessKind};

use crate::builder::build_network;
use crate::conditioning::Conditioning;
use crate::config::NetConfig;
use crate::error::{NetsError, Result};
use crate::network::Network;

/// σ̃ of a batch on the host, one value per sample: `sigma` holds B values or one that all
/// B samples share (a host read of σ̃, not of the batch).
pub(crate) fn sigma_per_sample(sigma: &Tensor, batch: i64) -> Result<Vec<f64>> {
    let s: Vec<f64> = Vec::<f64>::try_from(
        sigma
            .to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .flatten(0, -1),
    )?;
    match s.len() {
        1 => Ok(vec![s[0]; batch as usize]),
        n if n as i64 == batch => Ok(s),
        n => Err(NetsError::Shape(format!(
            "sigma has {n} entries for a batch of {batch}"
        ))),
    }
}

/// A network trained on another parametrization P ∈ {ε, v, velocity, score, x₀} of process
/// `process`, taking x_t and c_noise = time_scale·t. As a denoiser (Tweedie's formula):
/// t = t(σ̃), x_t = α(t)·x̃, D = a·x_t + b·F(x_t; time_scale·t) with (a, b) = convert(P → x₀).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamAdapter {
    /// What the network predicts.
    pub param: Param,
    /// The forward process it was trained on.
    pub process: ProcessKind,
    /// c_noise = time_scale·t (e.g. 999 for DDPM timestep inputs, 1 for flow models).
    #[serde(default = "one")]
    pub time_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// How the raw network becomes a denoiser: Karras et al. Table 1 preconditioning, or a
/// Tweedie conversion from another parametrization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Wrapper {
    /// D = c_skip·x̃ + c_out·F(c_in·x̃; c_noise) with VP/VE/iDDPM/EDM coefficients.
    Precond(Precond),
    /// ε-, v-, velocity-, score- or x₀-networks converted to a denoiser.
    Param(ParamAdapter),
}

/// Per-sample coefficient tensors: c_skip, c_out, c_in shaped [B, 1, …] and c_noise [B].
#[derive(Debug)]
pub struct CoeffTensors {
    /// Weight of the skip connection x̃.
    pub c_skip: Tensor,
    /// Weight of the network output.
    pub c_out: Tensor,
    /// Input scaling.
    pub c_in: Tensor,
    /// Noise conditioning fed to the network, [B].
    pub c_noise: Tensor,
    /// Whether every c_out is exactly 0 (the network need not run).
    pub all_skip: bool,
}

/// The interpolation v = (raw + 1)/2 of log σ² = v·log β + (1 − v)·log β̃ from a
/// learned-variance network's raw output (Nichol & Dhariwal 2021, eq. 15: raw ∈ [−1, 1] ideally,
/// not constrained).
pub fn variance_fraction(raw: &Tensor) -> Tensor {
    (raw + 1.0) * 0.5
}

/// A network plus its wrapper: the denoiser D(x̃; σ̃) ≈ E[x₀ | x̃] every sampler and loss uses.
#[derive(Debug)]
pub struct PrecondDenoiser {
    net: Box<dyn Network>,
    wrapper: Wrapper,
    process: Option<Box<dyn tweedie_core::Process>>,
    u_grid: Option<Vec<f64>>,
    label_dim: usize,
    /// [C, H, W] or [d] when built from a config: inputs are checked before libtorch sees them.
    sample_shape: Option<Vec<i64>>,
    /// Extra input channels the network was built with (`cond_channels`).
    net_cond_channels: usize,
    augment_dim: usize,
    autocast: bool,
    /// The low-resolution field the network is conditioned on, when it is (checked against
    /// the network's `cond_channels` by [`PrecondDenoiser::set_conditioning`]).
    conditioning: Option<Conditioning>,
}

impl PrecondDenoiser {
    /// Builds the network of `net_cfg` under `p / "model"` (the reference's naming) and wraps it.
    pub fn new(p: &nn::Path, net_cfg: &NetConfig, wrapper: Wrapper) -> Result<Self> {
        let net = build_network(&(p / "model"), net_cfg)?;
        let mut d = Self::from_network(net, wrapper, net_cfg.label_dim())?;
        d.sample_shape = Some(net_cfg.sample_shape());
        d.net_cond_channels = net_cfg.cond_channels();
        d.augment_dim = match net_cfg {
            NetConfig::Unet(u) => u.augment_dim,
            NetConfig::Dhariwal(u) => u.augment_dim,
            NetConfig::Mlp(_) => 0,
        };
        Ok(d)
    }

    /// Wraps an existing network (tests use mock networks here).
    pub fn from_network(net: Box<dyn Network>, wrapper: Wrapper, label_dim: usize) -> Result<Self> {
        let (process, u_grid) = match &wrapper {
            Wrapper::Precond(pc) => {
                pc.validate()?;
                (None, pc.u_grid())
            }
            Wrapper::Param(a) => {
                if !(a.time_scale.is_finite() && a.time_scale > 0.0) {
                    return Err(NetsError::invalid(
                        "time_scale",
                        a.time_scale,
                        "must be finite and > 0",
                    ));
                }
                (Some(a.process.try_build()?), None)
            }
        };
        Ok(PrecondDenoiser {
            net,
            wrapper,
            process,
            u_grid,
            label_dim,
            sample_shape: None,
            net_cond_channels: 0,
            augment_dim: 0,
            autocast: false,
            conditioning: None,
        })
    }

    /// The wrapper (preconditioning or parametrization adapter).
    pub fn wrapper(&self) -> &Wrapper {
        &self.wrapper
    }

    /// The raw network F.
    pub fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }

    /// Conditions the denoiser on a low-resolution field (or removes that): the network must
    /// have been built with the condition's extra input channels (`cond_channels`) and a grid
    /// the factor divides; `None` needs a network without them.
    pub fn set_conditioning(&mut self, conditioning: Option<Conditioning>) -> Result<()> {
        let have = self.net_cond_channels;
        let Some(shape) = self.sample_shape.clone() else {
            return match conditioning {
                None => Ok(()),
                Some(_) => Err(NetsError::invalid(
                    "conditioning",
                    "(set)",
                    "needs a denoiser built from a network config (its sample shape)",
                )),
            };
        };
        crate::conditioning::check_network(conditioning.as_ref(), &shape, have)?;
        self.conditioning = conditioning;
        Ok(())
    }

    /// What the denoiser is conditioned on (`None`: nothing beyond labels).
    pub fn conditioning(&self) -> Option<&Conditioning> {
        self.conditioning.as_ref()
    }

    /// Runs F under bf16 autocast when on CUDA (no effect on CPU); D is still formed in x̃'s dtype.
    pub fn set_autocast(&mut self, enabled: bool) {
        self.autocast = enabled;
    }

    /// Shape of one sample ([C, H, W] or [d]) when built from a network config.
    pub fn sample_shape(&self) -> Option<&[i64]> {
        self.sample_shape.as_deref()
    }

    /// σ̃ as the network can represent it: the nearest u_j for iDDPM, σ̃ itself otherwise.
    pub fn round_sigma(&self, sigma: f64) -> f64 {
        match &self.wrapper {
            Wrapper::Precond(pc) => pc.round_sigma(sigma),
            Wrapper::Param(_) => sigma,
        }
    }

    /// Coefficients at one σ̃, in f64, from tweedie-core.
    pub fn coeffs(&self, sigma: f64) -> Result<PrecondCoeffs> {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(NetsError::invalid(
                "sigma",
                sigma,
                "noise level must be finite and >= 0",
            ));
        }
        match (&self.wrapper, &self.process) {
            (Wrapper::Precond(pc), _) => {
                let c = match &self.u_grid {
                    Some(u) => pc.coeffs_with_grid(sigma, u),
                    None => pc.coeffs(sigma),
                };
                // At σ̃ = 0 a denoiser is the identity; EDM/VE's c_noise = log σ̃ is −∞ there.
                Ok(if c.c_out == 0.0 {
                    PrecondCoeffs { c_noise: 0.0, ..c }
                } else {
                    c
                })
            }
            (Wrapper::Param(a), Some(proc_)) => {
                if sigma == 0.0 {
                    // No noise: E[x₀ | x̃] = x̃ for every parametrization.
                    return Ok(PrecondCoeffs {
                        c_skip: 1.0,
                        c_out: 0.0,
                        c_in: 1.0,
                        c_noise: 0.0,
                    });
                }
                let t = proc_.t_of_sigma_tilde(sigma);
                let alpha = proc_.alpha(t);
                let aff = convert_coeffs(a.param, Param::X0, proc_.as_ref(), t);
                Ok(PrecondCoeffs {
                    c_skip: aff.a * alpha,
                    c_out: aff.b,
                    c_in: alpha,
                    c_noise: a.time_scale * t,
                })
            }
            (Wrapper::Param(_), None) => Err(NetsError::invalid(
                "wrapper",
                "param",
                "process was not built",
            )),
        }
    }

    /// Per-sample coefficient tensors for σ̃ of shape [B] (or a scalar, broadcast to B),
    /// shaped [B, 1, …] to match an input of `ndim` dimensions.
    pub fn coeff_tensors(
        &self,
        sigma: &Tensor,
        batch: i64,
        ndim: usize,
        kind: Kind,
        device: Device,
    ) -> Result<CoeffTensors> {
        let s = sigma_per_sample(sigma, batch)?;
        let cs = s
            .iter()
            .map(|&v| self.coeffs(v))
            .collect::<Result<Vec<_>>>()?;
        let mut shape = vec![batch];
        shape.extend(std::iter::repeat_n(1i64, ndim.saturating_sub(1)));
        let col = |f: &dyn Fn(&PrecondCoeffs) -> f64| {
            let v: Vec<f64> = cs.iter().map(f).collect();
            Tensor::from_slice(&v)
                .to_kind(kind)
                .reshape(shape.as_slice())
                .to_device(device)
        };
        let c_noise: Vec<f64> = cs.iter().map(|c| c.c_noise).collect();
        Ok(CoeffTensors {
            c_skip: col(&|c| c.c_skip),
            c_out: col(&|c| c.c_out),
            c_in: col(&|c| c.c_in),
            c_noise: Tensor::from_slice(&c_noise)
                .to_kind(Kind::Float)
                .to_device(device),
            all_skip: cs.iter().all(|c| c.c_out == 0.0),
        })
    }

    /// D(x̃; σ̃) with labels and augment labels, in training or eval mode (gradients follow the
    /// caller's grad mode). `x` is [B, …]; `sigma` is [B] or a scalar tensor.
    pub fn forward(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        Ok(self
            .forward_with_variance(x, sigma, class_labels, augment_labels, train)?
            .0)
    }

    /// As [`PrecondDenoiser::forward`], plus the raw variance output of a learned-variance
    /// network (iDDPM, Nichol & Dhariwal 2021): when F emits 2C channels for C input channels,
    /// channels C..2C are the paper's v before [`variance_fraction`]; `None` otherwise (and when
    /// every σ̃ is 0, where the network does not run).
    pub fn forward_with_variance(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.forward_conditioned(x, sigma, class_labels, augment_labels, None, train)
    }

    /// As [`PrecondDenoiser::forward_with_variance`] given the condition of a conditioned
    /// denoiser ([`PrecondDenoiser::set_conditioning`]): `condition` is the batch's
    /// low-resolution fields [B, C, H/f, W/f]; the network sees them upsampled to [B, C, H, W]
    /// as extra channels after c_in·x̃ (not scaled: they are clean data). A conditioned
    /// denoiser refuses a missing or misshapen condition, an unconditioned one any condition.
    pub fn forward_conditioned(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        condition: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let size = x.size();
        let Some(&batch) = size.first() else {
            return Err(NetsError::Shape("input must have a batch dimension".into()));
        };
        if let Some(want) = &self.sample_shape {
            if &size[1..] != want.as_slice() {
                return Err(NetsError::Shape(format!(
                    "input {size:?} is not [B, {want:?}…] as the network expects"
                )));
            }
        }
        if let Some(a) = augment_labels {
            if self.sample_shape.is_some() && a.size() != [batch, self.augment_dim as i64] {
                return Err(NetsError::Shape(format!(
                    "augment labels {:?} do not fit batch {batch} × augment_dim {}",
                    a.size(),
                    self.augment_dim
                )));
            }
        }
        if let Some(y) = class_labels {
            let ys = y.size();
            if self.label_dim == 0
                || ys.len() != 2
                || ys[0] != batch
                || ys[1] != self.label_dim as i64
            {
                return Err(NetsError::Shape(format!(
                    "class labels {ys:?} do not fit batch {batch} × label_dim {}",
                    self.label_dim
                )));
            }
        }
        let extra = match (&self.conditioning, condition, &self.sample_shape) {
            (None, None, _) if self.net_cond_channels > 0 => {
                return Err(NetsError::Shape(format!(
                    "the network takes {} conditioning channels but no conditioning is set",
                    self.net_cond_channels
                )))
            }
            (None, None, _) => None,
            (Some(cd), Some(y), Some(shape)) => {
                cd.check_condition(y, batch, shape)?;
                Some(cd.upsample(&y.to_device(x.device())))
            }
            (Some(cd), None, _) => {
                return Err(NetsError::Shape(format!(
                    "the network is conditioned ({cd}): it needs the low-resolution field of \
                     each sample"
                )))
            }
            (None, Some(_), _) | (Some(_), Some(_), None) => {
                return Err(NetsError::Shape(
                    "a condition was given to a network that is not conditioned on one".into(),
                ))
            }
        };
        let c = self.coeff_tensors(sigma, batch, size.len(), x.kind(), x.device())?;
        if c.all_skip {
            return Ok((x * &c.c_skip, None));
        }
        let x_in = (x * &c.c_in).to_kind(Kind::Float);
        let x_in = match extra {
            Some(e) => Tensor::cat(&[x_in, e], 1),
            None => x_in,
        };
        let f = tch::autocast(self.autocast, || {
            self.net
                .forward(&x_in, &c.c_noise, class_labels, augment_labels, train)
        });
        let fs = f.size();
        if fs.len() != size.len() || fs[0] != batch {
            return Err(NetsError::Shape(format!(
                "network returned {fs:?} for input {size:?}"
            )));
        }
        // Learned-variance networks (iDDPM) emit extra channels: the mean is the first C.
        let variance = (size.len() > 1 && fs[1] == 2 * size[1])
            .then(|| f.narrow(1, size[1], size[1]).to_kind(x.kind()));
        let f = if fs[1] > size[1] {
            f.narrow(1, 0, size[1])
        } else {
            f
        };
        let d = x * &c.c_skip + f.to_kind(x.kind()) * &c.c_out;
        // Samples with c_out = 0 are exactly x̃ (their network input may be meaningless).
        Ok((d.where_self(&c.c_out.ne(0.0), &(x * &c.c_skip)), variance))
    }

    /// D(x̃; σ̃) in eval mode without gradients (sampling).
    pub fn denoise(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        tch::no_grad(|| self.forward(x, sigma, class_labels, None, false))
    }

    /// D(x̃; σ̃) at one σ̃ shared by the batch, in eval mode without gradients.
    pub fn denoise_at(
        &self,
        x: &Tensor,
        sigma: f64,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.denoise(x, &Tensor::from(sigma), class_labels)
    }

    /// (D(x̃; σ̃), J(x̃)ᵀ·v) with J = ∂D/∂x̃, through autograd (used by DPS-style guidance).
    pub fn vjp(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        class_labels: Option<&Tensor>,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        self.vjp_conditioned(x, sigma, class_labels, None, v)
    }

    /// [`PrecondDenoiser::vjp`] of a conditioned denoiser (the condition is held fixed).
    pub fn vjp_conditioned(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        class_labels: Option<&Tensor>,
        condition: Option<&Tensor>,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        tch::with_grad(|| {
            let xr = x.detach().set_requires_grad(true);
            let (d, _) =
                self.forward_conditioned(&xr, sigma, class_labels, None, condition, false)?;
            if d.size() != v.size() {
                return Err(NetsError::Shape(format!(
                    "v {:?} does not match D {:?}",
                    v.size(),
                    d.size()
                )));
            }
            let obj = (&d * v.to_kind(d.kind())).sum(d.kind());
            let mut g = Tensor::f_run_backward(&[&obj], &[&xr], false, false)?;
            let g = g
                .pop()
                .ok_or_else(|| NetsError::Shape("autograd returned no gradient".into()))?;
            Ok((d.detach(), g))
        })
    }
}
