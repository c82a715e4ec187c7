//! Ancestral and SDE samplers: Euler ancestral in σ̃ (k-diffusion), and DDIM, ancestral DDPM
//! and Euler–Maruyama in the process's own coordinates x_t = α·x̃ (their updates depend on
//! α and σ separately, not on σ̃ alone).

use crate::error::Result;
use crate::integrators::Run;
use crate::model::ModelExt;
use crate::state::State;
use crate::step::stream;

impl<S: State> Run<'_, '_, S> {
    pub(super) fn euler_ancestral(&mut self, mut x: S, eta: f64, s_noise: f64) -> Result<S> {
        for i in 0..self.n() {
            let (s, s1) = (self.s[i], self.s[i + 1]);
            let den = self.den(&x, s)?;
            let up = (eta * (s1 * s1 * (s * s - s1 * s1) / (s * s)).sqrt()).min(s1);
            let down = (s1 * s1 - up * up).max(0.0).sqrt();
            // In place: x̃ ← (σ_down/σ̃)x̃ + (1 − σ_down/σ̃)D + S_noise·σ_up·ε.
            let r = down / s;
            let finite = if up > 0.0 {
                x.combine_add_randn(
                    (r, &[(1.0 - r, &den)], s_noise * up),
                    self.seed,
                    self.first_index,
                    stream(i, 0),
                )?
            } else {
                x.combine_assign(r, &[(1.0 - r, &den)])
            };
            x = self.end_step(i, x, finite, &den)?;
        }
        Ok(x)
    }

    pub(super) fn ddim(&mut self, mut x: S, eta: f64) -> Result<S> {
        for i in 0..self.n() {
            let ((a, sg), (a1, sg1)) = (self.alpha_sigma(i), self.alpha_sigma(i + 1));
            let den = self.den(&x, self.s[i])?;
            // Process coordinates x_t = a·x̃: x_t′ = a′·D + k·ε̂ + s_d·ε with ε̂ = (x_t − a·D)/σ,
            // k = √(σ′² − s_d²); in x̃′ = x_t′/a′ one pass, x̃′ = c·x̃ + (1 − c)·D + (s_d/a′)·ε
            // with c = k·a/(σ·a′).
            let ratio = (a * sg1) / (a1 * sg);
            let sd = eta * sg1 * (1.0 - ratio * ratio).max(0.0).sqrt();
            let k = (sg1 * sg1 - sd * sd).max(0.0).sqrt();
            let c = k * a / (sg * a1);
            let finite = if sd > 0.0 {
                x.combine_add_randn(
                    (c, &[(1.0 - c, &den)], sd / a1),
                    self.seed,
                    self.first_index,
                    stream(i, 0),
                )?
            } else {
                x.combine_assign(c, &[(1.0 - c, &den)])
            };
            x = self.end_step(i, x, finite, &den)?;
        }
        Ok(x)
    }

    /// Ancestral DDPM; with `learned_variance` a model's v sets the per-element variance
    /// β̃·(β/β̃)^v = exp(v·log β + (1 − v)·log β̃), so v = 0 is exactly the fixed-variance step.
    pub(super) fn ddpm(&mut self, mut x: S, learned_variance: bool) -> Result<S> {
        for i in 0..self.n() {
            let ((a, sg), (a1, sg1)) = (self.alpha_sigma(i), self.alpha_sigma(i + 1));
            let (den, v) = if learned_variance {
                self.m.denoise_with_variance(&x, self.s[i])?
            } else {
                (self.den(&x, self.s[i])?, None)
            };
            // Posterior mean and noise in process coordinates x_t = a·x̃, taken to x̃′ = x_t′/a′
            // in one pass: x̃′ = (c_xt·a/a′)·x̃ + (c_x0/a′)·D + (√β̃/a′)·ε.
            let step = tweedie_core::DdpmStep::new(a, sg, a1, sg1);
            let var = step.beta_tilde;
            let (cx, cd, ce) = (step.coef_xt * a / a1, step.coef_x0 / a1, var.sqrt() / a1);
            let finite = match &v {
                _ if !(var > 0.0) => x.combine_assign(cx, &[(cd, &den)]),
                None => x.combine_add_randn(
                    (cx, &[(cd, &den)], ce),
                    self.seed,
                    self.first_index,
                    stream(i, 0),
                )?,
                Some(v) => {
                    // std = √β̃·exp(½·v·(log β − log β̃)), per element.
                    let eps = self
                        .noise(&x, i, 0)?
                        .mul_exp(v, 0.5 * step.learned_log_variance(var.ln()).1)?;
                    x.combine_assign(cx, &[(cd, &den), (ce, &eps)])
                }
            };
            x = self.end_step(i, x, finite, &den)?;
        }
        Ok(x)
    }

    pub(super) fn euler_maruyama(&mut self, x: S) -> Result<S> {
        let p = self.process;
        self.steps(x, |run, i, _, _, x, den| {
            let ((a, sg), (a1, _)) = (run.alpha_sigma(i), run.alpha_sigma(i + 1));
            let (f, g2) = p.sde_coeffs(run.t[i]);
            let dt = run.t[i + 1] - run.t[i];
            // x_t′ = x_t + (f·x_t − g²·(a·D − x_t)/σ²)·dt + g√|dt|·ε, with x_t = a·x̃; then x̃′ = x_t′/a′.
            let cx = a / a1 * (1.0 + f * dt + g2 * dt / (sg * sg));
            let cd = -a / a1 * g2 * dt / (sg * sg);
            let mut xn = x;
            let finite = xn.combine_add_randn(
                (cx, &[(cd, den)], (g2 * dt.abs()).sqrt() / a1),
                run.seed,
                run.first_index,
                stream(i, 0),
            )?;
            Ok((xn, finite))
        })
    }
}
