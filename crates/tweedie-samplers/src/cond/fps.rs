//! FPS-SMC: filtering posterior sampling with sequential Monte Carlo (Dou & Song 2024, ICLR,
//! "Diffusion posterior sampling for linear inverse problem solving: a filtering perspective").

use serde::{Deserialize, Serialize};
use tweedie_core::rng::uniform;
use tweedie_core::{Invalid, LinearSpace};

use super::common::{self, stream};
use super::smc::{self, Resampling};
use super::CondSampler;
use crate::error::{Result, SamplerError};
use crate::rows::Rows;
use crate::sampler::{Init, SampleOutput};
use crate::state::State;

/// FPS-SMC in EDM coordinates. A path of noisy measurements ỹ_σ̃ = y + A·W(σ̃²) (W a Brownian
/// motion, so ỹ_σ̃ = A·x̃_σ̃ + n as for the forward process) is drawn per particle group
/// (Dou & Song 2024, §3: y_{1:T} is independent of x₀ given y, so p(x₀ | y_{0:T}) = p(x₀ | y)).
/// Then for each step σ̃ → σ̃′, with D = D(x̃; σ̃), the ancestral kernel N(μ, vI),
/// μ = D + (σ̃′²/σ̃²)(x̃ − D), v = σ̃′²(1 − σ̃′²/σ̃²), is conditioned on the path, particle
/// log-weights gain the predictive density of the path's next value, particles are resampled
/// when ESS < `ess_threshold`·M, and each moves to a draw of the conditioned Gaussian.
///
/// Two likelihoods of the path, [`FpsNoise`]: `shared` (default) is the exact joint law, in
/// which every ỹ_σ̃ − A·x̃_σ̃ is the same n: x̃_T is drawn given ỹ_T with noise s, then every
/// move keeps A·x̃′ = A·x̃ + (ỹ′ − ỹ) (weight N(ỹ′ − ỹ; A(μ − x̃), vAAᵀ)); `fresh` is the paper's
/// filtering model ỹ_σ̃ = A·x̃_σ̃ + n_σ̃ with independent n_σ̃ ~ N(0, s²I) (weight
/// N(ỹ′; Aμ, vAAᵀ + s²I)), which counts the measurement once per step and so over-conditions.
///
/// The batch is cut into groups of `particles` consecutive samples (by global index), each its
/// own particle system; at the end each group is resampled once more, so the rows are equally
/// weighted draws and sample i depends on (seed, its group) only. Needs a linear operator
/// (matrix, mask, downsample, blur); `shared` needs A of full row rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fps {
    /// Particles per group M ≥ 1 (the batch size and first index must be multiples of M).
    #[serde(default = "particles")]
    pub particles: usize,
    /// Resampling scheme.
    #[serde(default)]
    pub resampling: Resampling,
    /// Resample when ESS < threshold·M, threshold ∈ [0, 1] (0: never, 1: every step).
    #[serde(default = "ess_threshold")]
    pub ess_threshold: f64,
    /// The path's likelihood.
    #[serde(default)]
    pub noise: FpsNoise,
}

/// How FPS relates the measurement path to the state (see [`Fps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FpsNoise {
    /// One noise n for the whole path (the exact joint law).
    #[default]
    Shared,
    /// Independent noise at every step (Dou & Song 2024's filtering model).
    Fresh,
}

fn particles() -> usize {
    20
}
fn ess_threshold() -> f64 {
    0.5
}

impl Default for Fps {
    fn default() -> Self {
        Fps {
            particles: particles(),
            resampling: Resampling::default(),
            ess_threshold: ess_threshold(),
            noise: FpsNoise::default(),
        }
    }
}

impl Fps {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(SamplerError::invalid(
                "particles",
                0,
                "need at least 1 particle",
            ));
        }
        if !(0.0..=1.0).contains(&self.ess_threshold) {
            return Err(SamplerError::invalid(
                "ess_threshold",
                self.ess_threshold,
                "must be in [0, 1]",
            ));
        }
        Ok(())
    }

    /// Runs FPS-SMC for `c` from `init`.
    pub fn run<S: State>(&self, c: &CondSampler<S>, init: Init<S>) -> Result<SampleOutput<S>> {
        self.validate()?;
        let begin = common::begin(c, init)?;
        let (b, d, mm) = (begin.x.nrows(), begin.x.ncols(), self.particles);
        if !b.is_multiple_of(mm) || !c.first_index.is_multiple_of(mm as u64) {
            return Err(SamplerError::invalid(
                "particles",
                mm,
                format!(
                    "the batch ({b}) and its first index ({}) must be multiples of the group size",
                    c.first_index
                ),
            ));
        }
        let groups = b / mm;
        let g0 = c.first_index / mm as u64;
        let m = begin.y.ncols();
        let y = begin.y_rows(groups)?;
        let common::Begin {
            sig, like, mut x, ..
        } = begin;
        let n = sig.len() - 1;
        let s = c.op.noise_std();
        // ỹ at every grid point, per group, built upwards from ỹ = y (+ A·σ̃_N·z if σ̃_N > 0).
        let path_noise = |k: usize| {
            x.host_like(&tweedie_core::rng::normal_rows(
                c.seed,
                g0,
                groups,
                stream(k, 0),
                d,
            ))?
            .apply(c.op)
        };
        let mut ys: Vec<S::Rows> = Vec::with_capacity(n + 1);
        ys.push(y.lincomb(1.0, &path_noise(n)?, sig[n]));
        for k in (0..n).rev() {
            let dz = path_noise(k)?.scale((sig[k] * sig[k] - sig[k + 1] * sig[k + 1]).sqrt());
            let next = ys.last().unwrap_or(&y).lincomb(1.0, &dz, 1.0);
            ys.push(next);
        }
        ys.reverse();
        // Row i of the batch belongs to group i / M.
        let group_of: Vec<usize> = (0..b).map(|i| i / mm).collect();
        let expand = |g: &S::Rows| g.select_rows(&group_of);
        let mut logw = vec![0.0; b];
        let mut nfe = 0;
        let shared = self.noise == FpsNoise::Shared;
        if shared {
            // x̃_T = x₀ + σ̃_T·ε given ỹ_T = A·x̃_T + n, with x₀ ≈ D(x̃_T; σ̃_T): at σ̃_T ≫ data
            // scale the evidence N(ỹ_T; A·x₀, σ̃_T²AAᵀ + s²I) hardly depends on x₀.
            let den = common::denoise_rows(c.model, &like, &x, sig[0])?;
            nfe += 1;
            let z = common::normals(c, &x, b, stream(n + 1, 1), d)?;
            let w = common::normals(c, &x, b, stream(n + 1, 2), m)?;
            x = common::condition_gaussian(
                c.op,
                &den,
                sig[0] * sig[0],
                &expand(&ys[0])?,
                Some(&z),
                Some(&w),
            )?;
        }
        for k in 0..n {
            let (sg, sn) = (sig[k], sig[k + 1]);
            let den = common::denoise_rows(c.model, &like, &x, sg)?;
            nfe += 1;
            let ratio = (sn * sn) / (sg * sg);
            let mu = den.lincomb(1.0, &x.lincomb(1.0, &den, -1.0), ratio);
            let v = sn * sn * (1.0 - ratio);
            // The value A·x̃′ should take (shared) or the next measurement (fresh).
            let target = if shared {
                expand(&ys[k + 1].lincomb(1.0, &ys[k], -1.0))?.lincomb(1.0, &x.apply(c.op)?, 1.0)
            } else {
                expand(&ys[k + 1])?
            };
            let r = target.lincomb(1.0, &mu.apply(c.op)?, -1.0);
            // Predictive log-weight −½rᵀ(vAAᵀ + s_eff²I)⁻¹r (its normaliser is common to all particles).
            let s2 = if shared { 0.0 } else { s * s };
            if v > 0.0 || s2 > 0.0 {
                let u = common::solve_cov(c.op, v, s2, &r)?;
                for (l, qi) in logw.iter_mut().zip(r.row_dots(&u)?) {
                    *l -= 0.5 * qi;
                }
            }
            // Resampling before the move (the weights depend on x̃ only: fully adapted).
            let (mu, target) = match self.resample_index(c, k, &mut logw, false) {
                Some(idx) => (mu.select_rows(&idx)?, target.select_rows(&idx)?),
                None => (mu, target),
            };
            let z = common::normals(c, &x, b, stream(k, 1), d)?;
            x = if shared {
                // Matheron with an exact observation: x̃′ = x_p + Aᵀ(AAᵀ)⁻¹(target − A·x_p).
                let xp = mu.lincomb(1.0, &z, v.sqrt());
                let r = target.lincomb(1.0, &xp.apply(c.op)?, -1.0);
                let u = common::solve_cov(c.op, 1.0, 0.0, &r)?;
                xp.lincomb(1.0, &u.adjoint(c.op)?, 1.0)
            } else {
                let w = common::normals(c, &x, b, stream(k, 2), m)?;
                common::condition_gaussian(c.op, &mu, v, &target, Some(&z), Some(&w))?
            };
        }
        if let Some(idx) = self.resample_index(c, n, &mut logw, true) {
            x = x.select_rows(&idx)?;
        }
        common::finish(c, &like, &x, nfe)
    }

    /// Ancestors for the groups whose ESS fell below the threshold (every non-uniform one if
    /// `last`), their weights reset; None when no group resamples.
    fn resample_index<S: State>(
        &self,
        c: &CondSampler<S>,
        k: usize,
        logw: &mut [f64],
        last: bool,
    ) -> Option<Vec<usize>> {
        let mm = self.particles;
        let g0 = c.first_index / mm as u64;
        let mut idx: Vec<usize> = (0..logw.len()).collect();
        let mut any = false;
        for (g, chunk) in logw.chunks_mut(mm).enumerate() {
            let w = smc::normalize(chunk);
            let e = smc::ess(&w);
            let go = if last {
                e < mm as f64 * (1.0 - 1e-12)
            } else {
                e < self.ess_threshold * mm as f64
            };
            if !go {
                continue;
            }
            any = true;
            let gi = g0 + g as u64;
            let anc = smc::resample(&w, self.resampling, |i| {
                uniform(c.seed, gi * mm as u64 + i as u64, stream(k, 3))
            });
            for (i, a) in anc.into_iter().enumerate() {
                idx[g * mm + i] = g * mm + a;
            }
            chunk.iter_mut().for_each(|l| *l = 0.0);
        }
        any.then_some(idx)
    }
}
