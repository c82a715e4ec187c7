//! Posterior samplers with loops of their own: each runs the sampler's integrator inside its
//! own outer iteration (filtering, proximal steps, Langevin, split Gibbs, ensemble updates).

use serde::{Deserialize, Serialize};

use super::{CondSampler, Daps, Diffpir, DpsGsg, Enkg, Fps, Guidance, Pnpdm};
use crate::error::Result;
use crate::kind::SamplerKind;
use crate::ops::ForwardModel;
use crate::sampler::{Init, SampleOutput};
use crate::state::State;

/// A posterior sampler and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PosteriorSampler {
    /// FPS-SMC (Dou & Song 2024): filtering with a noisy-measurement path and particle weights (see [`Fps`]).
    Fps(Fps),
    /// DiffPIR (Zhu et al. 2023): proximal data step on x̂₀, then re-noising (see [`Diffpir`]).
    Diffpir(Diffpir),
    /// DAPS (Zhang et al. 2024): ODE to x̂₀, Langevin on p(x₀ | x̃, y), re-noise (see [`Daps`]).
    Daps(Daps),
    /// PnP-DM (Wu et al. 2024): split Gibbs with annealed coupling ρ (see [`Pnpdm`]).
    Pnpdm(Pnpdm),
    /// EnKG (Zheng et al. 2024): derivative-free ensemble Kalman guidance (see [`Enkg`]).
    Enkg(Enkg),
    /// DPS-GSG: DPS with a Gaussian-smoothed zeroth-order gradient (see [`DpsGsg`]).
    DpsGsg(DpsGsg),
}

impl PosteriorSampler {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        match self {
            PosteriorSampler::Fps(m) => m.validate(),
            PosteriorSampler::Diffpir(m) => m.validate(),
            PosteriorSampler::Daps(m) => m.validate(),
            PosteriorSampler::Pnpdm(m) => m.validate(),
            PosteriorSampler::Enkg(m) => m.validate(),
            PosteriorSampler::DpsGsg(m) => m.validate(),
        }
    }

    /// The parameters, and what the method needs of the sampler and the operator.
    pub fn check(&self, kind: &SamplerKind, op: &dyn ForwardModel) -> Result<()> {
        match self {
            PosteriorSampler::Pnpdm(m) => m.check(kind),
            PosteriorSampler::Enkg(m) => m.check(kind),
            PosteriorSampler::DpsGsg(m) => m.check(op),
            _ => self.validate(),
        }
    }

    /// Runs the method for `c` from `init`.
    pub fn run<S: State>(&self, c: &CondSampler<S>, init: Init<S>) -> Result<SampleOutput<S>> {
        match self {
            PosteriorSampler::Fps(m) => m.run(c, init),
            PosteriorSampler::Diffpir(m) => m.run(c, init),
            PosteriorSampler::Daps(m) => m.run(c, init),
            PosteriorSampler::Pnpdm(m) => m.run(c, init),
            PosteriorSampler::Enkg(m) => m.run(c, init),
            PosteriorSampler::DpsGsg(m) => m.run(c, init),
        }
    }
}

/// Each method's parameters are a posterior sampler, and a guidance.
macro_rules! posterior_from {
    ($($method:ident),*) => {$(
        impl From<$method> for PosteriorSampler {
            fn from(m: $method) -> Self {
                PosteriorSampler::$method(m)
            }
        }
        impl From<$method> for Guidance {
            fn from(m: $method) -> Self {
                Guidance::Posterior(PosteriorSampler::$method(m))
            }
        }
    )*};
}
posterior_from!(Fps, Diffpir, Daps, Pnpdm, Enkg, DpsGsg);
