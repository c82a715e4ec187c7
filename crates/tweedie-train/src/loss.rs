//! Per-formulation training losses, all in denoiser form:
//! L = E_{σ̃ ~ p(σ̃), x₀, ε} λ(σ̃)·mean_j (D(x₀ + σ̃ε; σ̃) − x₀)_j²
//! (Karras et al. 2022, eq. 8 / training/loss.py), with p(σ̃) and λ from tweedie-core.
//!
//! For ε-, v- and velocity-networks D is formed by the Tweedie adapter of tweedie-nets and λ
//! is c₀(P)², so the loss equals the usual ‖P̂ − P‖² (tested). The mean runs over the
//! elements of a sample (so values do not grow with resolution), then over the batch.
//!
//! iDDPM with `learned_variance` adds the VLB term of the hybrid loss (Nichol & Dhariwal 2021,
//! eq. 16) per sample: L = L_simple + λ·M·L_j, where j is the sample's drawn u-grid index
//! (σ̃ = u_j, j uniform on 0..M−1, so M·L_j is an unbiased estimate of Σ_j L_j; the prior
//! term L_M has no parameters and is left out) and L_j is in bits per element (mean over the
//! elements, divided by ln 2). With λ = 0.001 and M = 1000 this is the reference's
//! `mse + vb·M/1000`. L_j, in VP coordinates x = √ᾱ·x̃ (ᾱ = 1/(1 + σ̃²)), for the step
//! u_j → u_{j+1} with coefficients from `tweedie_core::process::DdpmStep`:
//! - j < M−1: KL(q(x_s | x_t, x₀) ‖ p_θ(x_s | x_t)) between Gaussians, the posterior
//!   N(c₀x₀ + c_t·x_t, β̃) and the model N(c₀·sg(D) + c_t·x_t, σ²), with sg the stop-gradient:
//!   the VLB term trains only the variance, log σ² = v·log β + (1 − v)·log β̃, v = (raw + 1)/2.
//! - j = M−1 (u_M = 0): q is a point mass at x₀, so, as the paper's L_0, the term is the
//!   decoder's −log p_θ(x₀ | x_t), with β̃ clipped to the previous step's β̃ in log σ² (the
//!   reference's clipping). The reference discretizes p_θ into 256 bins for 8-bit images; our
//!   data are continuous, so we use the Gaussian density −log N(x₀; sg(D), σ²), the limit of
//!   the discretized likelihood as the bin width Δ → 0 up to the constant −log Δ, which has no
//!   gradient. This term can be negative.

use rand::Rng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};
use tweedie_core::process::{iddpm_clipped_log_beta_tilde, iddpm_steps, DdpmStep};
use tweedie_core::rng::{normal_rows, stream_rng, streams};
use tweedie_core::weighting::{Draw, NoiseLevel};
use tweedie_core::Invalid;
use tweedie_core::Process;
use tweedie_nets::{variance_fraction, Wrapper};

use crate::error::{Result, TrainError};
use crate::formulation::{Formulation, FormulationKind};

/// Rectified-flow times are kept in [FLOW_T_EPS, 1 − FLOW_T_EPS]: at t = 0 the velocity loss
/// has weight 1/t² = ∞ on a zero denoiser error, and in f32 the rounding of D − x₀ (≈1e-7)
/// divided by t stays below 1e-3 in velocity units for t ≥ 1e-4.
pub const FLOW_T_EPS: f64 = 1e-4;

/// RNG stream of the noise-level draws (sample g of the run is index g).
pub const STREAM_SIGMA: u64 = streams::TRAIN;
/// RNG stream of the noise ε.
pub const STREAM_NOISE: u64 = streams::TRAIN + 1;

/// A formulation's loss: density, weight and process, ready to evaluate on a batch.
#[derive(Debug)]
pub struct Loss {
    formulation: Formulation,
    process: Box<dyn Process>,
    vlb: Option<Vlb>,
}

/// The VLB term of iDDPM's hybrid loss: the u-grid and its reverse steps.
#[derive(Debug)]
struct Vlb {
    /// λ·M: the weight on L_j in bits per element.
    weight: f64,
    /// u_0 > … > u_M = 0.
    u: Vec<f64>,
    /// Step j: u_j → u_{j+1}.
    steps: Vec<DdpmStep>,
    /// log β̃_j, the last one clipped.
    log_beta_tilde: Vec<f64>,
}

impl Vlb {
    /// Grid index j of a drawn σ̃ = u_j (exact: the density draws grid values).
    fn index(&self, sigma: f64) -> Result<usize> {
        let m = self.steps.len();
        let j = self.u[..m].partition_point(|&v| v > sigma);
        if j < m && self.u[j] == sigma {
            Ok(j)
        } else {
            Err(TrainError::Other(format!(
                "loss: σ̃ = {sigma} is not on the iDDPM u-grid (the VLB term needs a grid step)"
            )))
        }
    }
}

impl Loss {
    /// Builds the process of the formulation (and the u-grid steps of a learned variance).
    pub fn new(formulation: Formulation) -> Result<Self> {
        let process = formulation.process.try_build()?;
        let vlb = match &formulation.learned_variance {
            None => None,
            Some(lv) => {
                let u = match &formulation.wrapper {
                    Wrapper::Precond(p) => p.u_grid(),
                    Wrapper::Param(_) => None,
                }
                .ok_or_else(|| {
                    TrainError::invalid(
                        "diffusion.learned_variance",
                        true,
                        "needs the iDDPM u-grid",
                    )
                })?;
                let steps = iddpm_steps(&u);
                Some(Vlb {
                    weight: lv.vlb_weight * steps.len() as f64,
                    log_beta_tilde: iddpm_clipped_log_beta_tilde(&steps),
                    steps,
                    u,
                })
            }
        };
        Ok(Loss {
            formulation,
            process,
            vlb,
        })
    }

    /// The resolved formulation.
    pub fn formulation(&self) -> &Formulation {
        &self.formulation
    }

    /// The forward process.
    pub fn process(&self) -> &dyn Process {
        self.process.as_ref()
    }

    /// Noise level for one draw of the kind the density consumes (uniform in [0, 1) or
    /// standard normal), via `NoiseDensity::sample` of tweedie-core.
    pub fn level(&self, draw: f64) -> NoiseLevel {
        let lv = self.formulation.density.sample(self.process.as_ref(), draw);
        if self.formulation.kind == FormulationKind::Flow {
            let t = lv.t.clamp(FLOW_T_EPS, 1.0 - FLOW_T_EPS);
            return NoiseLevel {
                t,
                sigma_tilde: self.process.sigma_tilde(t),
            };
        }
        lv
    }

    /// Noise levels of samples `first..first+n` of a run with `seed`: sample g uses its own
    /// generator (seed, g), so levels do not depend on batch size or resumption.
    pub fn draw_levels(&self, seed: u64, first: u64, n: usize) -> Vec<NoiseLevel> {
        let normal = self.formulation.density.draw() == Draw::Normal;
        (first..first + n as u64)
            .map(|g| {
                let mut rng = stream_rng(seed, g, STREAM_SIGMA);
                let d: f64 = if normal {
                    rng.sample(StandardNormal)
                } else {
                    rng.gen()
                };
                self.level(d)
            })
            .collect()
    }

    /// Standard-normal noise for samples `first..first+n`, `dim` values each, as f32 [n, dim].
    pub fn draw_noise(seed: u64, first: u64, n: usize, dim: usize) -> Tensor {
        let a = normal_rows(seed, first, n, STREAM_NOISE, dim);
        let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        Tensor::from_slice(&v).view([n as i64, dim as i64])
    }

    /// λ at each level, in denoiser space.
    pub fn weights(&self, levels: &[NoiseLevel]) -> Vec<f64> {
        levels
            .iter()
            .map(|l| {
                self.formulation
                    .weight
                    .at(self.process.as_ref(), l.t, l.sigma_tilde)
            })
            .collect()
    }

    /// Per-sample losses [B]: λ_i · mean_j (D(x̃; σ̃)_ij − x₀_ij)² with x̃ = x₀ + σ̃ε.
    ///
    /// `denoise(x̃, σ̃)` gets σ̃ as a Double tensor [B] and returns D shaped like x̃; `eps` is
    /// shaped like `x0` (or [B, D] with the same number of elements).
    pub fn per_sample<F>(
        &self,
        denoise: F,
        x0: &Tensor,
        eps: &Tensor,
        levels: &[NoiseLevel],
    ) -> Result<Tensor>
    where
        F: FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
    {
        self.per_sample_with_variance(|x, s| Ok((denoise(x, s)?, None)), x0, eps, levels)
    }

    /// As [`Loss::per_sample`] for a denoiser that also returns the raw variance channels of a
    /// learned-variance network (`PrecondDenoiser::forward_with_variance`); with
    /// `learned_variance` the VLB term of the hybrid loss is added (module docs).
    pub fn per_sample_with_variance<F>(
        &self,
        denoise: F,
        x0: &Tensor,
        eps: &Tensor,
        levels: &[NoiseLevel],
    ) -> Result<Tensor>
    where
        F: FnOnce(&Tensor, &Tensor) -> Result<(Tensor, Option<Tensor>)>,
    {
        let size = x0.size();
        let b = *size
            .first()
            .ok_or_else(|| TrainError::Other("loss: x0 has no batch dimension".into()))?;
        if b as usize != levels.len() || eps.numel() != x0.numel() {
            return Err(TrainError::Other(format!(
                "loss: batch {size:?}, {} noise levels, noise of {} elements",
                levels.len(),
                eps.numel()
            )));
        }
        let mut bshape = vec![b];
        bshape.extend(std::iter::repeat_n(1i64, size.len() - 1));
        let dev = x0.device();
        let sig: Vec<f64> = levels.iter().map(|l| l.sigma_tilde).collect();
        let sig_t = Tensor::from_slice(&sig).to_device(dev);
        let x_tilde = x0
            + eps.view(size.as_slice()).to_device(dev)
                * sig_t.to_kind(x0.kind()).view(bshape.as_slice());
        let (d, raw_variance) = denoise(&x_tilde, &sig_t)?;
        if d.size() != size {
            return Err(TrainError::Other(format!(
                "loss: denoiser returned {:?} for {size:?}",
                d.size()
            )));
        }
        let w = Tensor::from_slice(&self.weights(levels))
            .to_device(dev)
            .to_kind(Kind::Float);
        let err = (&d - x0)
            .square()
            .to_kind(Kind::Float)
            .view([b, -1])
            .mean_dim(1, false, Kind::Float);
        let simple = err * w;
        let Some(vlb) = &self.vlb else {
            return Ok(simple);
        };
        let raw = raw_variance.ok_or_else(|| {
            TrainError::invalid(
                "diffusion.learned_variance",
                true,
                "the network has no variance outputs (it must emit twice the data's channels)",
            )
        })?;
        if raw.size() != size {
            return Err(TrainError::Other(format!(
                "loss: variance output {:?} for {size:?}",
                raw.size()
            )));
        }
        let vb = vlb_bits(vlb, x0, &x_tilde, &d, &raw, levels)?;
        Ok(simple + vb * vlb.weight)
    }
}

/// Elementwise KL(N(μ₁, e^{l₁}) ‖ N(μ₂, e^{l₂})) in nats:
/// ½(l₂ − l₁ − 1 + e^{l₁ − l₂} + (μ₁ − μ₂)²·e^{−l₂}).
pub fn gaussian_kl(mean1: &Tensor, log_var1: &Tensor, mean2: &Tensor, log_var2: &Tensor) -> Tensor {
    ((log_var2 - log_var1) - 1.0
        + (log_var1 - log_var2).exp()
        + (mean1 - mean2).square() * (-log_var2).exp())
        * 0.5
}

/// Elementwise −log N(x; μ, e^{l}) in nats: ½(log 2π + l + (x − μ)²·e^{−l}).
pub fn gaussian_nll(x: &Tensor, mean: &Tensor, log_var: &Tensor) -> Tensor {
    ((x - mean).square() * (-log_var).exp() + log_var + (2.0 * std::f64::consts::PI).ln()) * 0.5
}

/// Per-sample L_j in bits per element [B] (module docs): the Gaussian KL for j < M−1, the
/// continuous decoder NLL for j = M−1; the model mean uses the detached denoiser output.
fn vlb_bits(
    vlb: &Vlb,
    x0: &Tensor,
    x_tilde: &Tensor,
    d: &Tensor,
    raw: &Tensor,
    levels: &[NoiseLevel],
) -> Result<Tensor> {
    let size = x0.size();
    let b = size[0];
    let mut bshape = vec![b];
    bshape.extend(std::iter::repeat_n(1i64, size.len() - 1));
    let js = levels
        .iter()
        .map(|l| vlb.index(l.sigma_tilde))
        .collect::<Result<Vec<_>>>()?;
    let last = vlb.steps.len() - 1;
    let (kind, dev) = (x0.kind(), x0.device());
    let col = |f: &dyn Fn(usize) -> f64| {
        let v: Vec<f64> = js.iter().map(|&j| f(j)).collect();
        Tensor::from_slice(&v)
            .to_kind(kind)
            .to_device(dev)
            .view(bshape.as_slice())
    };
    let alpha_t = col(&|j| DdpmStep::vp_alpha(vlb.u[j]));
    let c_x0 = col(&|j| vlb.steps[j].coef_x0);
    let c_xt = col(&|j| vlb.steps[j].coef_xt);
    let line = |j: usize| vlb.steps[j].learned_log_variance(vlb.log_beta_tilde[j]);
    let log_var_a = col(&|j| line(j).0);
    let log_var_b = col(&|j| line(j).1);
    // The true posterior's log β̃; on the last step (a point mass) the clipped value only
    // keeps the unused KL branch finite, so that `where` passes no NaN gradients.
    let log_beta_tilde = col(&|j| vlb.log_beta_tilde[j]);
    let is_last = col(&|j| if j == last { 1.0 } else { 0.0 }).ne(0.0);

    let x_t = x_tilde * &alpha_t;
    let mean_true = x0 * &c_x0 + &x_t * &c_xt;
    let mean_model = d.detach() * &c_x0 + &x_t * &c_xt;
    let log_var = &log_var_a + variance_fraction(&raw.to_kind(kind)) * &log_var_b;
    let kl = gaussian_kl(&mean_true, &log_beta_tilde, &mean_model, &log_var);
    let nll = gaussian_nll(x0, &mean_model, &log_var);
    let nats = nll.where_self(&is_last, &kl);
    Ok(nats
        .to_kind(Kind::Float)
        .view([b, -1])
        .mean_dim(1, false, Kind::Float)
        / std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formulation::{DiffusionConfig, IddpmParams, TableParams, WeightingKind};
    use tweedie_core::Param;

    fn loss(kind: FormulationKind) -> Loss {
        Loss::new(DiffusionConfig::new(kind).resolve().unwrap()).unwrap()
    }

    fn lv(sigma: f64) -> NoiseLevel {
        NoiseLevel {
            t: sigma,
            sigma_tilde: sigma,
        }
    }

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn edm_loss_on_a_tiny_batch_matches_the_hand_computed_value() -> Result<()> {
        let l = loss(FormulationKind::Edm);
        let x0 = Tensor::from_slice(&[1.0f32, 2.0, -1.0, 0.0]).view([2, 2]);
        let eps = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 1.0]).view([2, 2]);
        // D(x̃) = x̃/2. Sample 0: σ̃ = 0.5, x̃ = (1.25, 1.5), D − x₀ = (−0.375, −1.25), mean² =
        // 0.8515625, λ = (0.25+0.25)/(0.25·0.25) = 8 → 6.8125. Sample 1: σ̃ = 2, x̃ = (3, 2),
        // D − x₀ = (2.5, 1), mean² = 3.625, λ = (4+0.25)/(4·0.25) = 4.25 → 15.40625.
        let per = l.per_sample(|x, _| Ok(x * 0.5), &x0, &eps, &[lv(0.5), lv(2.0)])?;
        assert!((per.double_value(&[0]) - 6.8125).abs() < 1e-5);
        assert!((per.double_value(&[1]) - 15.40625).abs() < 1e-5);
        assert!((scalar(&per.mean(Kind::Float)) - 11.109375).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn each_formulation_weight_matches_its_hand_formula() {
        let sig = [0.05f64, 0.7, 3.0];
        for (kind, f) in [
            (
                FormulationKind::Vp,
                (|s: f64| 1.0 / (s * s)) as fn(f64) -> f64,
            ),
            (FormulationKind::Ve, |s| 1.0 / (s * s)),
            (FormulationKind::Iddpm, |s| 1.0 / (s * s)),
            (FormulationKind::Eps, |s| 1.0 / (s * s)),
            // v-loss with α² + σ² = 1: ‖Δv‖² = ‖Δx₀‖²/σ², 1/σ² = (1 + σ̃²)/σ̃².
            (FormulationKind::V, |s| (1.0 + s * s) / (s * s)),
            // velocity loss with α = 1 − t, σ = t: ‖Δu‖² = ‖Δx₀‖²/t², t = σ̃/(1 + σ̃).
            (FormulationKind::Flow, |s| (1.0 + s) * (1.0 + s) / (s * s)),
            (FormulationKind::Edm, |s| (s * s + 0.25) / (s * s * 0.25)),
        ] {
            let l = loss(kind);
            for &s in &sig {
                let t = l.process().t_of_sigma_tilde(s);
                let w = l.weights(&[NoiseLevel { t, sigma_tilde: s }])[0];
                assert!(
                    (w / f(s) - 1.0).abs() < 1e-9,
                    "{kind:?} σ̃={s}: {w} vs {}",
                    f(s)
                );
            }
        }
        let c = DiffusionConfig::Eps(TableParams {
            weighting: Some(WeightingKind::MinSnr),
            gamma: Some(5.0),
            ..Default::default()
        });
        let l = Loss::new(c.resolve().unwrap()).unwrap();
        // min(SNR, γ): SNR = 1/0.01 = 100 → 5; SNR = 1/4 → 0.25.
        assert!((l.weights(&[lv(0.1)])[0] - 5.0).abs() < 1e-12);
        assert!((l.weights(&[lv(2.0)])[0] - 0.25).abs() < 1e-12);
    }

    #[test]
    fn levels_follow_the_core_densities_and_are_reproducible() {
        let l = loss(FormulationKind::Edm);
        let a = l.draw_levels(3, 10, 5);
        let b = l.draw_levels(3, 12, 2);
        assert_eq!(a[2], b[0]);
        // log σ̃ ~ N(−1.2, 1.2²): check mean and std on many draws (5 standard errors).
        let many = l.draw_levels(1, 0, 20_000);
        let logs: Vec<f64> = many.iter().map(|v| v.sigma_tilde.ln()).collect();
        let m = logs.iter().sum::<f64>() / logs.len() as f64;
        let sd = (logs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        assert!((m + 1.2).abs() < 5.0 * 1.2 / (20_000f64).sqrt(), "mean {m}");
        assert!((sd - 1.2).abs() < 0.03, "std {sd}");
        let f = loss(FormulationKind::Flow);
        for v in f.draw_levels(0, 0, 2000) {
            assert!(v.t >= FLOW_T_EPS && v.t <= 1.0 - FLOW_T_EPS);
            assert!((v.sigma_tilde - v.t / (1.0 - v.t)).abs() < 1e-9 * v.sigma_tilde.max(1.0));
        }
        assert_eq!(f.level(0.0).t, FLOW_T_EPS);
    }

    /// For x₀ ~ N(0, s²I), the Bayes denoiser is D* = s²/(s² + σ̃²)·x̃ with error s²σ̃²/(s² + σ̃²)
    /// per element: the loss of D* must equal E λ·s²σ̃²/(s² + σ̃²) over the drawn levels, and any
    /// other gain must do worse on the same draws.
    #[test]
    fn bayes_denoiser_attains_the_exact_minimal_loss_for_every_formulation() -> Result<()> {
        let s = 0.7f64;
        let (n, d) = (20_000usize, 4usize);
        for kind in FormulationKind::ALL {
            let l = loss(kind);
            let levels = l.draw_levels(7, 0, n);
            let x0 = Loss::draw_noise(99, 0, n, d).to_kind(Kind::Double) * s;
            let eps = Loss::draw_noise(5, 0, n, d).to_kind(Kind::Double);
            let bayes = |scale: f64| {
                move |x: &Tensor, sig: &Tensor| -> Result<Tensor> {
                    let g = (sig.square() + s * s).reciprocal() * (s * s * scale);
                    Ok(x * g.view([-1, 1]))
                }
            };
            let per = l
                .per_sample(bayes(1.0), &x0, &eps, &levels)?
                .to_kind(Kind::Double);
            let w = l.weights(&levels);
            let expect: Vec<f64> = levels
                .iter()
                .zip(&w)
                .map(|(v, w)| w * s * s * v.sigma_tilde.powi(2) / (s * s + v.sigma_tilde.powi(2)))
                .collect();
            let got: Vec<f64> = Vec::<f64>::try_from(&per)?;
            let mean_got = got.iter().sum::<f64>() / n as f64;
            let mean_exp = expect.iter().sum::<f64>() / n as f64;
            // Given the level, each per-sample loss is expect_i·χ²_d/d: variance 2·expect_i²/d.
            let se = (expect.iter().map(|e| 2.0 * e * e / d as f64).sum::<f64>()).sqrt() / n as f64;
            assert!(
                (mean_got - mean_exp).abs() < 5.0 * se,
                "{kind:?}: loss {mean_got} vs exact {mean_exp} (se {se})"
            );
            for scale in [0.9, 1.1] {
                let other = scalar(
                    &l.per_sample(bayes(scale), &x0, &eps, &levels)?
                        .mean(Kind::Double),
                );
                assert!(
                    other > mean_got,
                    "{kind:?}: gain ×{scale} gave {other} ≤ Bayes {mean_got}"
                );
            }
        }
        Ok(())
    }

    #[derive(Debug)]
    struct Affine2;
    impl tweedie_nets::Network for Affine2 {
        fn forward(
            &self,
            x: &Tensor,
            c_noise: &Tensor,
            _: Option<&Tensor>,
            _: Option<&Tensor>,
            _: bool,
        ) -> Tensor {
            // An arbitrary smooth function of input and noise input.
            x * 0.3 + (c_noise.view([-1, 1]) * 0.001).sin() - 0.2
        }
    }

    /// Through the tweedie-nets adapters, the denoiser loss of an ε-, v- or velocity-network
    /// equals its native loss ‖P̂ − P‖² computed directly from x_t = αx₀ + σε.
    #[test]
    fn denoiser_loss_equals_the_native_loss_of_eps_v_and_flow_networks() -> Result<()> {
        for (kind, param) in [
            (FormulationKind::Eps, Param::Eps),
            (FormulationKind::V, Param::V),
            (FormulationKind::Flow, Param::Velocity),
        ] {
            let l = loss(kind);
            let den = tweedie_nets::PrecondDenoiser::from_network(
                Box::new(Affine2),
                l.formulation().wrapper.clone(),
                0,
            )
            .map_err(|e| TrainError::Other(e.to_string()))?;
            let (n, d) = (64usize, 3usize);
            let levels = l.draw_levels(1, 0, n);
            let x0 = Loss::draw_noise(2, 0, n, d).to_kind(Kind::Double);
            let eps = Loss::draw_noise(3, 0, n, d).to_kind(Kind::Double);
            let per = l.per_sample(
                |x, s| {
                    den.forward(x, s, None, None, false)
                        .map_err(|e| TrainError::Other(e.to_string()))
                },
                &x0,
                &eps,
                &levels,
            )?;
            let p = l.process();
            for (i, v) in levels.iter().enumerate() {
                let (a, sg) = (p.alpha(v.t), p.sigma(v.t));
                let xi = x0.get(i as i64);
                let ei = eps.get(i as i64);
                let xt = &xi * a + &ei * sg;
                let c_noise = Tensor::from_slice(&[crate::formulation::PARAM_TIME_SCALE * v.t]);
                let pred = tweedie_nets::Network::forward(
                    &Affine2,
                    &xt.view([1, -1]),
                    &c_noise,
                    None,
                    None,
                    false,
                )
                .view([-1]);
                let target = match param {
                    Param::Eps => ei.shallow_clone(),
                    Param::V => &ei * a - &xi * sg,
                    _ => &ei * p.sigma_dot(v.t) + &xi * p.alpha_dot(v.t),
                };
                let native = scalar(&(pred - target).square().mean(Kind::Double));
                let got = per.double_value(&[i as i64]);
                assert!(
                    (got - native).abs() < 1e-4 * native.max(1.0),
                    "{kind:?} sample {i} σ̃={}: {got} vs native {native}",
                    v.sigma_tilde
                );
            }
        }
        Ok(())
    }

    fn scalar_tensor(v: f64) -> Tensor {
        Tensor::from_slice(&[v])
    }

    #[test]
    fn gaussian_kl_and_nll_match_hand_values() {
        let t = scalar_tensor;
        // Identical Gaussians: 0 exactly.
        assert_eq!(
            scalar(&gaussian_kl(&t(0.3), &t(-1.2), &t(0.3), &t(-1.2)).view([])),
            0.0
        );
        // KL(N(1, 1) ‖ N(0, 4)) = ½(ln 4 − 1 + ¼ + ¼) = ln 2 − ¼.
        let kl = scalar(&gaussian_kl(&t(1.0), &t(0.0), &t(0.0), &t(4f64.ln())).view([]));
        assert!((kl - (std::f64::consts::LN_2 - 0.25)).abs() < 1e-15, "{kl}");
        // −log N(1; 0, 4) = ½(ln 2π + ln 4 + ¼).
        let nll = scalar(&gaussian_nll(&t(1.0), &t(0.0), &t(4f64.ln())).view([]));
        let want = 0.5 * ((2.0 * std::f64::consts::PI).ln() + 4f64.ln() + 0.25);
        assert!((nll - want).abs() < 1e-15, "{nll}");
    }

    /// A network with a fixed output [B, 2C] (the first C the ε-prediction, the last C the
    /// raw variance), optionally a leaf tensor that autograd tracks.
    #[derive(Debug)]
    struct Fixed(Tensor);
    impl tweedie_nets::Network for Fixed {
        fn forward(
            &self,
            _: &Tensor,
            _: &Tensor,
            _: Option<&Tensor>,
            _: Option<&Tensor>,
            _: bool,
        ) -> Tensor {
            self.0.shallow_clone()
        }
    }

    fn hybrid(m: usize, vlb_weight: f64) -> Loss {
        let c = DiffusionConfig::Iddpm(IddpmParams {
            num_steps: Some(m),
            learned_variance: Some(true),
            vlb_weight: Some(vlb_weight),
            ..Default::default()
        });
        Loss::new(c.resolve().unwrap()).unwrap()
    }

    fn fixed_denoiser(l: &Loss, out: Tensor) -> tweedie_nets::PrecondDenoiser {
        tweedie_nets::PrecondDenoiser::from_network(
            Box::new(Fixed(out)),
            l.formulation().wrapper.clone(),
            0,
        )
        .unwrap()
    }

    /// L_hybrid = L_simple + λ·M·L_j with L_j computed here in f64 from the step coefficients
    /// (tested against hand values in tweedie-core): a KL step (j = 1) and the last step
    /// (j = M − 1 = 3, the decoder NLL with the clipped β̃).
    #[test]
    fn hybrid_loss_is_the_simple_loss_plus_the_hand_computed_vlb_term() -> Result<()> {
        let (m, lambda) = (4usize, 0.02);
        let l = hybrid(m, lambda);
        let u = l.vlb.as_ref().unwrap().u.clone();
        let x0v = [0.5f64, -1.0, 2.0, 0.25];
        let epsv = [1.0f64, 0.5, -0.5, 2.0];
        let (mean_out, raw_out) = (0.25f64, -0.4f64);
        let x0 = Tensor::from_slice(&x0v).view([2, 2]);
        let eps = Tensor::from_slice(&epsv).view([2, 2]);
        let out = Tensor::from_slice(&[
            mean_out, mean_out, raw_out, raw_out, mean_out, mean_out, raw_out, raw_out,
        ])
        .view([2, 4])
        .to_kind(Kind::Float);
        let den = fixed_denoiser(&l, out);
        let js = [1usize, m - 1];
        let levels: Vec<NoiseLevel> = js.iter().map(|&j| lv(u[j])).collect();
        let per = l.per_sample_with_variance(
            |x, s| Ok(den.forward_with_variance(x, s, None, None, true)?),
            &x0,
            &eps,
            &levels,
        )?;
        let steps = iddpm_steps(&u);
        let clipped = iddpm_clipped_log_beta_tilde(&steps);
        let v = (raw_out + 1.0) / 2.0;
        for (i, &j) in js.iter().enumerate() {
            let st = steps[j];
            let s = u[j];
            let log_var = v * st.beta.ln() + (1.0 - v) * clipped[j];
            let (mut simple, mut vb) = (0.0, 0.0);
            for k in 0..2 {
                let (x, e) = (x0v[2 * i + k], epsv[2 * i + k]);
                let xt = DdpmStep::vp_alpha(s) * (x + s * e);
                // iDDPM preconditioning: D = x̃ − σ̃·F.
                let d = x + s * e - s * mean_out;
                simple += (d - x).powi(2) / (s * s) / 2.0;
                let mu = st.coef_x0 * d + st.coef_xt * xt;
                vb += if j == m - 1 {
                    0.5 * ((2.0 * std::f64::consts::PI).ln()
                        + log_var
                        + (x - mu).powi(2) / log_var.exp())
                } else {
                    let mu_true = st.coef_x0 * x + st.coef_xt * xt;
                    let lbt = st.beta_tilde.ln();
                    0.5 * (log_var - lbt - 1.0
                        + (lbt - log_var).exp()
                        + (mu_true - mu).powi(2) / log_var.exp())
                } / 2.0;
            }
            let want = simple + lambda * m as f64 * vb / std::f64::consts::LN_2;
            let got = per.double_value(&[i as i64]);
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "sample {i} (j = {j}): {got} vs {want}"
            );
            assert!(vb != 0.0);
        }
        Ok(())
    }

    /// The VLB term trains only the variance: its gradient w.r.t. the mean channels of the
    /// network output is exactly zero, while the hybrid loss (through L_simple) reaches them.
    #[test]
    fn vlb_gradient_does_not_reach_the_mean_channels() -> Result<()> {
        let l = hybrid(10, 0.001);
        let u = l.vlb.as_ref().unwrap().u.clone();
        let out = Tensor::from_slice(&[0.3f32, -0.2, 0.1, 0.4, 0.7, -0.5, -0.3, 0.2])
            .view([2, 4])
            .set_requires_grad(true);
        let den = fixed_denoiser(&l, out.shallow_clone());
        let x0 = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25]).view([2, 2]);
        let eps = Tensor::from_slice(&[1.0f32, 0.5, -0.5, 2.0]).view([2, 2]);
        let levels = [lv(u[3]), lv(u[9])];
        let sig = Tensor::from_slice(&[u[3], u[9]]);
        let x_tilde = &x0 + &eps * sig.to_kind(Kind::Float).view([2, 1]);
        let (d, raw) = den.forward_with_variance(&x_tilde, &sig, None, None, true)?;
        let vb = vlb_bits(
            l.vlb.as_ref().unwrap(),
            &x0,
            &x_tilde,
            &d,
            &raw.unwrap(),
            &levels,
        )?;
        let g = Tensor::run_backward(&[vb.sum(Kind::Float)], &[&out], true, false);
        let g = &g[0];
        assert_eq!(
            g.narrow(1, 0, 2).abs().sum(Kind::Double).double_value(&[]),
            0.0
        );
        assert!(g.narrow(1, 2, 2).abs().sum(Kind::Double).double_value(&[]) > 0.0);
        let hybrid = l.per_sample_with_variance(
            |x, s| Ok(den.forward_with_variance(x, s, None, None, true)?),
            &x0,
            &eps,
            &levels,
        )?;
        let g = Tensor::run_backward(&[hybrid.sum(Kind::Float)], &[&out], false, false);
        assert!(
            g[0].narrow(1, 0, 2)
                .abs()
                .sum(Kind::Double)
                .double_value(&[])
                > 0.0
        );
        Ok(())
    }

    #[test]
    fn learned_variance_needs_the_variance_channels() {
        let l = hybrid(10, 0.001);
        let u = l.vlb.as_ref().unwrap().u.clone();
        let x0 = Tensor::from_slice(&[0.5f32, -1.0]).view([1, 2]);
        let e = l
            .per_sample(|x, _| Ok(x * 0.5), &x0, &x0, &[lv(u[2])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("diffusion.learned_variance"), "{e}");
        let e = l
            .per_sample(|x, _| Ok(x * 0.5), &x0, &x0, &[lv(0.123)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("learned_variance") || e.contains("u-grid"),
            "{e}"
        );
    }
}
