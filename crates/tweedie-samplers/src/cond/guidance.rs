//! How the measurement enters sampling, one variant per mechanism: the exact posterior of an
//! analytic model, a gradient added to the model (any sampler), a per-step replacement, or a
//! posterior sampler with a loop of its own. What each needs of the sampler, the operator and
//! the model is checked by [`Guidance::check`] before anything runs.

use serde::{Deserialize, Serialize};
use tweedie_core::Invalid;

use super::{
    replacement, Daps, Diffpir, DpsGsg, Enkg, Fps, GradientGuidance, Pnpdm, PosteriorSampler,
};
use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::model::{Model, ModelExt};
use crate::ops::ForwardModel;
use crate::state::State;

/// How the measurement enters sampling: ∇log p(x̃|y) = ∇log p(x̃) + ∇log p(y|x̃).
///
/// Its serde form is flat, `{ type = "dps", scale = 1.0 }`, as are the names of
/// [`Guidance::from_name`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Guidance {
    /// Sample the model's exact posterior p(x₀|y) (analytic models, e.g. the mixture's posterior mixture).
    ExactPosterior,
    /// Inpainting by replacement (Song et al. 2021 App. I; Lugmayr et al. 2022 without resampling):
    /// after each step, observed coordinates are set to y + σ̃′·ε. Needs a selection operator (mask)
    /// and a sampler on a fixed grid.
    Replacement,
    /// ĝ ≈ ∇log p(y|x̃) added to the model, which any sampler then runs (DPS, ΠGDM, TMP; see
    /// [`GradientGuidance`]).
    #[serde(untagged)]
    Gradient(GradientGuidance),
    /// A posterior sampler with its own loop (FPS, DiffPIR, DAPS, PnP-DM, EnKG, DPS-GSG; see
    /// [`PosteriorSampler`]).
    #[serde(untagged)]
    Posterior(PosteriorSampler),
}

/// The names [`Guidance::from_name`] knows.
pub const GUIDANCE_NAMES: &str =
    "exact_posterior, dps, pigdm, tmp, replacement, fps, diffpir, daps, pnpdm, enkg, dps_gsg";

impl Guidance {
    /// Checks the parameters; errors name key and value.
    pub fn validate(&self) -> Result<()> {
        match self {
            Guidance::ExactPosterior | Guidance::Replacement => Ok(()),
            Guidance::Gradient(g) => g.validate(),
            Guidance::Posterior(m) => m.validate(),
        }
    }

    /// The parameters, and what the mechanism needs of the sampler `kind`, the operator `op`
    /// and the model: a gradient guidance a VJP (and DPS a noisy measurement), replacement a
    /// mask and a fixed grid, a posterior sampler what its method names.
    pub fn check<S: State>(
        &self,
        kind: &SamplerKind,
        op: &dyn ForwardModel,
        model: &dyn Model<S>,
    ) -> Result<()> {
        match self {
            Guidance::ExactPosterior => match model.capabilities().exact_posterior {
                Some(_) => Ok(()),
                None => Err(SamplerError::Unsupported("an exact posterior".into())),
            },
            Guidance::Replacement => replacement::check(op, kind),
            Guidance::Gradient(g) => g.check(model.has_vjp(), op),
            Guidance::Posterior(m) => m.check(kind, op),
        }
    }

    /// Parse a guidance by name with default parameters.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "exact" | "exact_posterior" => Guidance::ExactPosterior,
            "dps" => GradientGuidance::dps().into(),
            "pigdm" | "pgdm" | "πgdm" => GradientGuidance::pigdm().into(),
            "tmp" => GradientGuidance::tmp().into(),
            "replacement" | "replace" => Guidance::Replacement,
            "fps" | "fps_smc" => Fps::default().into(),
            "diffpir" => Diffpir::default().into(),
            "daps" => Daps::default().into(),
            "pnpdm" | "pnp_dm" => Pnpdm::default().into(),
            "enkg" => Enkg::default().into(),
            "dps_gsg" | "dpsgsg" => DpsGsg::default().into(),
            _ => {
                return Err(SamplerError::invalid(
                    "guidance",
                    name,
                    format!("known: {GUIDANCE_NAMES}"),
                ))
            }
        })
    }
}

impl From<GradientGuidance> for Guidance {
    fn from(g: GradientGuidance) -> Self {
        Guidance::Gradient(g)
    }
}

impl From<PosteriorSampler> for Guidance {
    fn from(m: PosteriorSampler) -> Self {
        Guidance::Posterior(m)
    }
}
