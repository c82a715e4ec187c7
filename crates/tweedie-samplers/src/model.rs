//! Models as samplers see them: a denoiser in EDM form D(x̃; σ̃) ≈ E[x₀ | x̃ = x₀ + σ̃ε]
//! (Karras et al. 2022 §2), with optional vector-Jacobian product and exact posterior.

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array1;

use crate::error::{Result, SamplerError};
use crate::ops::ForwardModel;
use crate::state::State;

/// A denoiser D(x̃; σ̃) ≈ E[x₀ | x̃], x̃ = x_t/α = x₀ + σ̃·ε (Karras et al. 2022, eq. 3).
///
/// Any other parametrization (score, ε, v, flow velocity) becomes this form through the
/// Tweedie conversions of `tweedie_core::param`. σ̃ is shared by the batch.
///
/// # Capabilities
///
/// Every model has `denoise`; what only some models have is a capability, reached through
/// [`Model::capabilities`]: a vector-Jacobian product ([`Vjp`]), a learned reverse-step
/// variance ([`LearnedVariance`]), an exact posterior ([`ExactPosterior`]), exact draws of the
/// marginal p_σ̃ ([`ExactMarginal`]) and a discrete set of noise levels ([`SigmaRounding`]).
/// `capabilities` has no default, so every model, and above all every wrapper, states what it
/// keeps: a wrapper that does not change D forwards its inner model's capabilities (`&M`,
/// `Box<M>`), one that changes D provides its own or none, and forgetting is a compile error
/// rather than a silent fallback. Samplers call capabilities through [`ModelExt`], whose
/// methods say what happens when one is absent.
pub trait Model<S: State>: Send + Sync {
    /// D(x̃; σ̃).
    fn denoise(&self, x: &S, sigma: f64) -> Result<S>;

    /// What the model can do besides `denoise` ([`Capabilities::none`] for a plain denoiser).
    fn capabilities(&self) -> Capabilities<'_, S>;
}

/// The optional capabilities of a [`Model`], each `None` when absent.
pub struct Capabilities<'a, S: State> {
    /// J(x̃)ᵀ·v with J = ∂D/∂x̃ (gradient guidance: DPS, ΠGDM, TMP).
    pub vjp: Option<&'a dyn Vjp<S>>,
    /// The reverse-step variance interpolation v of iDDPM networks (ancestral DDPM).
    pub learned_variance: Option<&'a dyn LearnedVariance<S>>,
    /// The exact posterior model p(x₀ | y) (analytic models).
    pub exact_posterior: Option<&'a dyn ExactPosterior<S>>,
    /// Exact draws of x̃ = x₀ + σ̃·ε (analytic models; `Init::Exact`).
    pub exact_marginal: Option<&'a dyn ExactMarginal<S>>,
    /// The noise levels the model actually evaluates (iDDPM's u-grid).
    pub sigma_rounding: Option<&'a dyn SigmaRounding>,
}

impl<S: State> Capabilities<'_, S> {
    /// No capability: a plain denoiser.
    pub fn none() -> Self {
        Capabilities {
            vjp: None,
            learned_variance: None,
            exact_posterior: None,
            exact_marginal: None,
            sigma_rounding: None,
        }
    }
}

impl<'a, S: State> Capabilities<'a, S> {
    /// What a guidance wrapper keeps (classifier-free and classifier guidance, whose D is built
    /// from the inner model's evaluations at the same σ̃): the inner model's σ̃ rounding, and,
    /// when the inner model has a learned variance, the wrapper's own (`wrapper`: the guided D
    /// with the inner v). A VJP, posterior or exact draws of the inner D are not the guided
    /// D's, so they go.
    pub fn guided(
        wrapper: &'a dyn LearnedVariance<S>,
        inner_has_variance: bool,
        sigma_rounding: Option<&'a dyn SigmaRounding>,
    ) -> Self {
        Capabilities {
            learned_variance: inner_has_variance.then_some(wrapper),
            sigma_rounding,
            ..Capabilities::none()
        }
    }
}

/// (D(x̃; σ̃), J(x̃)ᵀ·v) with J = ∂D/∂x̃; for an exact denoiser J = Cov[x₀ | x̃]/σ̃² (symmetric).
pub trait Vjp<S: State>: Send + Sync {
    /// (D, Jᵀv) in one evaluation.
    fn vjp(&self, x: &S, sigma: f64, v: &S) -> Result<(S, S)>;
}

/// (D(x̃; σ̃), v) for models that learned their reverse-step variance (iDDPM, Nichol & Dhariwal
/// 2021): the per-element interpolation v of log σ² = v·log β + (1 − v)·log β̃ that the DDPM
/// ancestral step uses, in the same evaluation as D (`None` when this network has no variance
/// output after all).
pub trait LearnedVariance<S: State>: Send + Sync {
    /// (D, v) in one evaluation.
    fn denoise_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)>;
}

/// The exact posterior model p(x₀ | y) for y = A·x₀ + n, n ~ N(0, s²I).
pub trait ExactPosterior<S: State>: Send + Sync {
    /// The posterior as a model of its own.
    fn posterior(&self, op: &dyn ForwardModel, y: &Array1<f64>) -> Result<Box<dyn Model<S>>>;
}

/// Exact draws of x̃ = x₀ + σ̃·ε.
pub trait ExactMarginal<S: State>: Send + Sync {
    /// A draw shaped like `template`, row i keyed by (seed, first_index + i).
    fn draw(&self, template: &S, sigma: f64, seed: u64, first_index: u64) -> Result<S>;
}

/// The noise level a model with a discrete σ̃ set actually evaluates at σ̃ (iDDPM's u-grid:
/// `tweedie_core::Precond::round_sigma`).
pub trait SigmaRounding: Send + Sync {
    /// The nearest representable σ̃.
    fn rounded(&self, sigma: f64) -> f64;
}

/// The samplers' view of a model's capabilities: one method each, with the behaviour when the
/// capability is absent. Implemented for every model and not overridable, so no wrapper can
/// change what an absent capability means.
pub trait ModelExt<S: State>: Model<S> {
    /// Whether the model has a vector-Jacobian product.
    fn has_vjp(&self) -> bool {
        self.capabilities().vjp.is_some()
    }
    /// (D, Jᵀv); an `Unsupported` error without a VJP.
    fn denoise_vjp(&self, x: &S, sigma: f64, v: &S) -> Result<(S, S)> {
        match self.capabilities().vjp {
            Some(c) => c.vjp(x, sigma, v),
            None => Err(SamplerError::Unsupported(
                "a vector-Jacobian product".into(),
            )),
        }
    }
    /// (D, v) with a learned variance, else (D, None); one evaluation either way.
    fn denoise_with_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)> {
        match self.capabilities().learned_variance {
            Some(c) => c.denoise_variance(x, sigma),
            None => Ok((self.denoise(x, sigma)?, None)),
        }
    }
    /// The exact posterior model, when the model knows it.
    fn exact_posterior(
        &self,
        op: &dyn ForwardModel,
        y: &Array1<f64>,
    ) -> Option<Result<Box<dyn Model<S>>>> {
        self.capabilities()
            .exact_posterior
            .map(|c| c.posterior(op, y))
    }
    /// An exact draw of x̃ = x₀ + σ̃·ε, when the model can make one.
    fn sample_marginal(
        &self,
        template: &S,
        sigma: f64,
        seed: u64,
        first_index: u64,
    ) -> Option<Result<S>> {
        self.capabilities()
            .exact_marginal
            .map(|c| c.draw(template, sigma, seed, first_index))
    }
    /// The σ̃ the model evaluates at σ̃ (σ̃ itself without rounding).
    fn round_sigma(&self, sigma: f64) -> f64 {
        self.capabilities()
            .sigma_rounding
            .map_or(sigma, |c| c.rounded(sigma))
    }
}

impl<S: State, M: Model<S> + ?Sized> ModelExt<S> for M {}

/// `Model` for smart pointers and references to models: both methods forward.
macro_rules! forward_model {
    ($($ptr:ty),*) => {$(
        impl<S: State, M: Model<S> + ?Sized> Model<S> for $ptr {
            fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
                (**self).denoise(x, sigma)
            }
            fn capabilities(&self) -> Capabilities<'_, S> {
                (**self).capabilities()
            }
        }
    )*};
}
forward_model!(Box<M>, &M);

/// A closure D(x̃; σ̃) as a model ([`from_fn`]): anything that maps (x̃, σ̃) to a denoised state.
pub struct FnModel<F>(pub F);

impl<S: State, F: Fn(&S, f64) -> Result<S> + Send + Sync> Model<S> for FnModel<F> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        (self.0)(x, sigma)
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        Capabilities::none()
    }
}

/// A closure `Fn(&x̃, σ̃) -> Result<D>` as a model.
pub fn from_fn<S: State, F: Fn(&S, f64) -> Result<S> + Send + Sync>(f: F) -> FnModel<F> {
    FnModel(f)
}

/// An infallible closure D(x̃; σ̃) as a model ([`plain_fn`]).
pub struct PlainFnModel<F>(pub F);

impl<S: State, F: Fn(&S, f64) -> S + Send + Sync> Model<S> for PlainFnModel<F> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        Ok((self.0)(x, sigma))
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        Capabilities::none()
    }
}

/// A closure `Fn(&x̃, σ̃) -> D` that cannot fail as a model.
pub fn plain_fn<S: State, F: Fn(&S, f64) -> S + Send + Sync>(f: F) -> PlainFnModel<F> {
    PlainFnModel(f)
}

/// A class-conditional denoiser D(x̃; σ̃, c); `class = None` is the unconditional model.
///
/// `class_capabilities` has no default, for the reason given at [`Model`].
pub trait ClassModel<S: State>: Send + Sync {
    /// D(x̃; σ̃, c) for one class shared by the batch (or unconditional).
    fn denoise_class(&self, x: &S, sigma: f64, class: Option<usize>) -> Result<S>;

    /// What the model can do besides `denoise_class`.
    fn class_capabilities(&self) -> ClassCapabilities<'_, S>;
}

/// The optional capabilities of a [`ClassModel`], each `None` when absent.
pub struct ClassCapabilities<'a, S: State> {
    /// The learned reverse-step variance, per class.
    pub learned_variance: Option<&'a dyn ClassLearnedVariance<S>>,
    /// The noise levels the model actually evaluates.
    pub sigma_rounding: Option<&'a dyn SigmaRounding>,
}

impl<S: State> ClassCapabilities<'_, S> {
    /// No capability.
    pub fn none() -> Self {
        ClassCapabilities {
            learned_variance: None,
            sigma_rounding: None,
        }
    }
}

/// [`LearnedVariance`] of a class-conditional model.
pub trait ClassLearnedVariance<S: State>: Send + Sync {
    /// (D(x̃; σ̃, c), v) in one evaluation.
    fn denoise_class_variance(
        &self,
        x: &S,
        sigma: f64,
        class: Option<usize>,
    ) -> Result<(S, Option<S>)>;
}

/// Classifier-free guidance D_w = D(x̃; σ̃, c) + w·(D(x̃; σ̃, c) − D(x̃; σ̃)) (Ho & Salimans 2022).
///
/// w = 0 is plain conditional sampling; w > 0 sharpens towards p(c | x)^w. Two network
/// evaluations per call (counted as one NFE, as is customary). Keeps the network's σ̃ rounding
/// and learned variance (v of the conditional evaluation, as GLIDE/ADM's guided sampling does);
/// it has no VJP of its own.
#[derive(Debug, Clone)]
pub struct Cfg<M> {
    /// The class-conditional model.
    pub model: M,
    /// The class to sample.
    pub class: usize,
    /// Guidance weight w ≥ 0.
    pub w: f64,
}

impl<M> Cfg<M> {
    /// D_w from the conditional output `c`.
    fn guide<S: State>(&self, c: S, x: &S, sigma: f64) -> Result<S>
    where
        M: ClassModel<S>,
    {
        if self.w == 0.0 {
            return Ok(c);
        }
        let u = self.model.denoise_class(x, sigma, None)?;
        Ok(c.lincomb(1.0 + self.w, &u, -self.w))
    }
}

impl<S: State, M: ClassModel<S>> Model<S> for Cfg<M> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        let c = self.model.denoise_class(x, sigma, Some(self.class))?;
        self.guide(c, x, sigma)
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        let inner = self.model.class_capabilities();
        Capabilities::guided(self, inner.learned_variance.is_some(), inner.sigma_rounding)
    }
}

impl<S: State, M: ClassModel<S>> LearnedVariance<S> for Cfg<M> {
    fn denoise_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)> {
        let Some(lv) = self.model.class_capabilities().learned_variance else {
            return Ok((self.denoise(x, sigma)?, None));
        };
        let (c, v) = lv.denoise_class_variance(x, sigma, Some(self.class))?;
        Ok((self.guide(c, x, sigma)?, v))
    }
}

/// Counts denoiser calls (NFE) of the wrapped model: `denoise`, each VJP and each evaluation
/// with variance count one; the other capabilities are forwarded uncounted.
pub struct Counted<'a, S: State> {
    inner: &'a dyn Model<S>,
    nfe: AtomicUsize,
}

impl<'a, S: State> Counted<'a, S> {
    /// Wrap `inner` with a zero count.
    pub fn new(inner: &'a dyn Model<S>) -> Self {
        Counted {
            inner,
            nfe: AtomicUsize::new(0),
        }
    }
    /// Denoiser calls so far.
    pub fn nfe(&self) -> usize {
        self.nfe.load(Ordering::Relaxed)
    }
    fn count(&self) {
        self.nfe.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: State> Model<S> for Counted<'_, S> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        self.count();
        self.inner.denoise(x, sigma)
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        let inner = self.inner.capabilities();
        Capabilities {
            vjp: inner.vjp.map(|_| self as &dyn Vjp<S>),
            learned_variance: inner
                .learned_variance
                .map(|_| self as &dyn LearnedVariance<S>),
            ..inner
        }
    }
}

impl<S: State> Vjp<S> for Counted<'_, S> {
    fn vjp(&self, x: &S, sigma: f64, v: &S) -> Result<(S, S)> {
        self.count();
        self.inner.denoise_vjp(x, sigma, v)
    }
}

impl<S: State> LearnedVariance<S> for Counted<'_, S> {
    fn denoise_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)> {
        self.count();
        self.inner.denoise_with_variance(x, sigma)
    }
}

/// A network in its own parametrization: predicts `Param` (ε, x₀, score, v, flow velocity) at (x_t, t).
pub trait TimeModel<S: State>: Send + Sync {
    /// The prediction at x_t, time t.
    fn predict(&self, x_t: &S, t: f64) -> Result<S>;
}

/// Any parametrization as an EDM denoiser: t = t(σ̃), x_t = α(t)·x̃, D = a·x_t + b·pred with (a, b)
/// from `tweedie_core::param::convert_coeffs(param, X0, …)` (Tweedie's formula and its relatives).
pub struct ParamModel<'p, M> {
    /// The network.
    pub net: M,
    /// What it predicts.
    pub param: tweedie_core::Param,
    /// The process it was trained under (its time variable).
    pub process: &'p dyn tweedie_core::Process,
}

impl<S: State, M: TimeModel<S>> Model<S> for ParamModel<'_, M> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        let t = self.process.t_of_sigma_tilde(sigma);
        let x_t = x.scale(self.process.alpha(t));
        let pred = self.net.predict(&x_t, t)?;
        let c = tweedie_core::param::convert_coeffs(
            self.param,
            tweedie_core::Param::X0,
            self.process,
            t,
        );
        Ok(x_t.lincomb(c.a, &pred, c.b))
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        Capabilities::none()
    }
}
