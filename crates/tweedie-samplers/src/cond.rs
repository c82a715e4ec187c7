//! Conditional sampling x₀ ~ p(x₀ | y) for y = A·x₀ + n, by one of four mechanisms
//! ([`Guidance`]): the exact posterior of an analytic model; gradient guidance, which turns the
//! model into a conditional denoiser D(x̃; σ̃ | y) = x̃ + σ̃²·∇log p(x̃ | y) (Tweedie's formula)
//! that every integrator can then run; replacement, a per-step correction; and posterior
//! samplers with loops of their own.

use ndarray::Array1;
use tweedie_core::{Process, TimeGrid};

use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::model::{Counted, Model, ModelExt};
use crate::ops::ForwardModel;
use crate::sampler::{Callback, Init, SampleOutput, Sampler, StepHook};
use crate::state::State;

pub mod classifier;
mod common;
pub mod daps;
pub mod diffpir;
pub mod dps_gsg;
pub mod enkg;
pub mod fps;
pub mod gradient;
pub mod guidance;
pub mod pnpdm;
pub mod posterior;
pub mod replacement;
pub mod smc;

pub use classifier::{ClassifierGradient, ClassifierGuided};
pub use daps::Daps;
pub use diffpir::Diffpir;
pub use dps_gsg::DpsGsg;
pub use enkg::Enkg;
pub use fps::{Fps, FpsNoise};
pub use gradient::{cg_rows, GradientGuidance, GuidedModel};
pub use guidance::{Guidance, GUIDANCE_NAMES};
pub use pnpdm::Pnpdm;
pub use posterior::PosteriorSampler;
pub use replacement::Replacement;
pub use smc::Resampling;

/// A conditional sampler: a [`Sampler`] + a guidance + a forward model, sampling x₀ ~ p(x₀ | y).
///
/// Classifier-free guidance for class-conditional models is [`crate::model::Cfg`], and
/// classifier guidance [`ClassifierGuided`], each run by a plain [`Sampler`].
pub struct CondSampler<'a, S: State> {
    pub process: &'a dyn Process,
    pub grid: TimeGrid,
    pub kind: SamplerKind,
    pub model: &'a dyn Model<S>,
    pub op: &'a dyn ForwardModel,
    pub y: Array1<f64>,
    pub guidance: Guidance,
    pub seed: u64,
    pub first_index: u64,
}

impl<'a, S: State> CondSampler<'a, S> {
    /// A conditional sampler (seed 0, first index 0), refused here when the guidance's
    /// parameters are out of range or the guidance does not go with the sampler, the operator
    /// or the model (see [`Guidance::check`]).
    pub fn new(
        process: &'a dyn Process,
        grid: TimeGrid,
        kind: SamplerKind,
        model: &'a dyn Model<S>,
        op: &'a dyn ForwardModel,
        y: Array1<f64>,
        guidance: Guidance,
    ) -> Result<Self> {
        let c = CondSampler {
            process,
            grid,
            kind,
            model,
            op,
            y,
            guidance,
            seed: 0,
            first_index: 0,
        };
        c.check()?;
        Ok(c)
    }

    /// Seed of the keyed noise.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Index of the first sample (chunked runs).
    pub fn first_index(mut self, first_index: u64) -> Self {
        self.first_index = first_index;
        self
    }

    /// Whether the guidance goes with the sampler, the operator and the model (see
    /// [`Guidance::check`]); [`CondSampler::run`] asks first.
    pub fn check(&self) -> Result<()> {
        self.guidance.check(&self.kind, self.op, self.model)
    }

    /// Run from `init` (see [`Init`]); `Init::Exact` draws from the exact p_T of the posterior for
    /// `ExactPosterior` and of the prior otherwise.
    pub fn run(&self, init: Init<S>, callback: Option<Callback<'_, S>>) -> Result<SampleOutput<S>> {
        self.check()?;
        let go = |m: &dyn Model<S>, hook: Option<&dyn StepHook<S>>, init: Init<S>, cb| {
            let mut d = Sampler::new(self.process, self.grid.clone(), self.kind.clone(), m)?
                .seed(self.seed)
                .first_index(self.first_index);
            if let Some(h) = hook {
                d = d.hook(h);
            }
            d.run(init, cb)
        };
        match &self.guidance {
            Guidance::ExactPosterior => {
                let post = self
                    .model
                    .exact_posterior(self.op, &self.y)
                    .ok_or_else(|| SamplerError::Unsupported("an exact posterior".into()))??;
                go(post.as_ref(), None, init, callback)
            }
            Guidance::Replacement => {
                let hook = Replacement::new(self.op, &self.y)?;
                go(self.model, Some(&hook), init, callback)
            }
            Guidance::Posterior(m) => m.run(self, init),
            Guidance::Gradient(g) => {
                // Count the network's own evaluations (forward or forward + VJP), not guided calls.
                let inner = Counted::new(self.model);
                let gm = GuidedModel::new(&inner, self.op, &self.y, g.clone())?;
                let mut out = go(&gm, None, init, callback)?;
                out.nfe = inner.nfe();
                Ok(out)
            }
        }
    }
}
