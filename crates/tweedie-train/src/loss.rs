//! Per-formulation training losses, all in denoiser form:
//! L = E_{σ̃ ~ p(σ̃), x₀, ε} λ(σ̃)·mean_j (D(x₀ + σ̃ε; σ̃) − x₀)_j²
//! (Karras et al. 2022, eq. 8 / training/loss.py), with p(σ̃) and λ from tweedie-core.
//!
//! For ε-, v- and velocity-networks D is formed by the Tweedie adapter of tweedie-nets and λ
//! is c₀(P)², so the loss equals the usual ‖P̂ − P‖² (tested). The mean runs over the
//! elements of a sample (so values do not grow with resolution), then over the batch.

use rand::Rng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};
use tweedie_core::rng::{normal_rows, stream_rng, streams};
use tweedie_core::weighting::{Draw, NoiseLevel};
use tweedie_core::Process;

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
}

impl Loss {
    /// Builds the process of the formulation.
    pub fn new(formulation: Formulation) -> Result<Self> {
        let process = formulation.process.try_build()?;
        Ok(Loss {
            formulation,
            process,
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
        let d = denoise(&x_tilde, &sig_t)?;
        if d.size() != size {
            return Err(TrainError::Other(format!(
                "loss: denoiser returned {:?} for {size:?}",
                d.size()
            )));
        }
        let w = Tensor::from_slice(&self.weights(levels))
            .to_device(dev)
            .to_kind(Kind::Float);
        let err = (d - x0)
            .square()
            .to_kind(Kind::Float)
            .view([b, -1])
            .mean_dim(1, false, Kind::Float);
        Ok(err * w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formulation::{DiffusionConfig, WeightingKind};
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
        let mut c = DiffusionConfig::new(FormulationKind::Eps);
        c.weighting = Some(WeightingKind::MinSnr);
        c.gamma = Some(5.0);
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
        for kind in [
            FormulationKind::Edm,
            FormulationKind::Vp,
            FormulationKind::Ve,
            FormulationKind::Iddpm,
            FormulationKind::Flow,
            FormulationKind::Eps,
            FormulationKind::V,
        ] {
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
}
