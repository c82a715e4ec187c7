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
pub trait Model<S: State>: Send + Sync {
    /// D(x̃; σ̃).
    fn denoise(&self, x: &S, sigma: f64) -> Result<S>;

    /// (D(x̃; σ̃), J(x̃)ᵀ·v) with J = ∂D/∂x̃; for an exact denoiser J = Cov[x₀ | x̃]/σ̃² (symmetric).
    fn denoise_vjp(&self, _x: &S, _sigma: f64, _v: &S) -> Result<(S, S)> {
        Err(SamplerError::Unsupported(
            "a vector-Jacobian product".into(),
        ))
    }

    /// Whether [`Model::denoise_vjp`] is implemented.
    fn has_vjp(&self) -> bool {
        false
    }

    /// (D(x̃; σ̃), v): the denoiser and, for models that learned their reverse-step variance
    /// (iDDPM, Nichol & Dhariwal 2021), the per-element interpolation v of
    /// log σ² = v·log β + (1 − v)·log β̃ that the DDPM ancestral step uses (one evaluation).
    /// The default has no learned variance.
    fn denoise_with_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)> {
        Ok((self.denoise(x, sigma)?, None))
    }

    /// The exact posterior model p(x₀ | y) for y = A·x₀ + n, n ~ N(0, s²I), when the model knows it.
    fn exact_posterior(
        &self,
        _op: &dyn ForwardModel,
        _y: &Array1<f64>,
    ) -> Option<Result<Box<dyn Model<S>>>> {
        None
    }

    /// The noise level the model actually evaluates at σ̃ (identity except for models with a
    /// discrete σ̃ set, e.g. iDDPM's u-grid: `tweedie_core::Precond::round_sigma`).
    fn round_sigma(&self, sigma: f64) -> f64 {
        sigma
    }

    /// An exact draw of x̃ = x₀ + σ̃·ε shaped like `template`, row i keyed by (seed, first_index + i).
    fn sample_marginal(
        &self,
        _template: &S,
        _sigma: f64,
        _seed: u64,
        _first_index: u64,
    ) -> Option<Result<S>> {
        None
    }
}

/// `Model` for smart pointers and references to models: every method forwards, including the
/// defaulted ones (a forgotten method would silently fall back to its default).
macro_rules! forward_model {
    ($($ptr:ty),*) => {$(
        impl<S: State, M: Model<S> + ?Sized> Model<S> for $ptr {
            fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
                (**self).denoise(x, sigma)
            }
            fn denoise_vjp(&self, x: &S, sigma: f64, v: &S) -> Result<(S, S)> {
                (**self).denoise_vjp(x, sigma, v)
            }
            fn has_vjp(&self) -> bool {
                (**self).has_vjp()
            }
            fn denoise_with_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)> {
                (**self).denoise_with_variance(x, sigma)
            }
            fn exact_posterior(
                &self,
                op: &dyn ForwardModel,
                y: &Array1<f64>,
            ) -> Option<Result<Box<dyn Model<S>>>> {
                (**self).exact_posterior(op, y)
            }
            fn sample_marginal(&self, t: &S, sigma: f64, seed: u64, first: u64) -> Option<Result<S>> {
                (**self).sample_marginal(t, sigma, seed, first)
            }
            fn round_sigma(&self, sigma: f64) -> f64 {
                (**self).round_sigma(sigma)
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
}

/// A closure `Fn(&x̃, σ̃) -> D` that cannot fail as a model.
pub fn plain_fn<S: State, F: Fn(&S, f64) -> S + Send + Sync>(f: F) -> PlainFnModel<F> {
    PlainFnModel(f)
}

/// A class-conditional denoiser D(x̃; σ̃, c); `class = None` is the unconditional model.
pub trait ClassModel<S: State>: Send + Sync {
    /// D(x̃; σ̃, c) for one class shared by the batch (or unconditional).
    fn denoise_class(&self, x: &S, sigma: f64, class: Option<usize>) -> Result<S>;
}

/// Classifier-free guidance D_w = D(x̃; σ̃, c) + w·(D(x̃; σ̃, c) − D(x̃; σ̃)) (Ho & Salimans 2022).
///
/// w = 0 is plain conditional sampling; w > 0 sharpens towards p(c | x)^w. Two network
/// evaluations per call (counted as one NFE, as is customary).
#[derive(Debug, Clone)]
pub struct Cfg<M> {
    /// The class-conditional model.
    pub model: M,
    /// The class to sample.
    pub class: usize,
    /// Guidance weight w ≥ 0.
    pub w: f64,
}

impl<S: State, M: ClassModel<S>> Model<S> for Cfg<M> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        let c = self.model.denoise_class(x, sigma, Some(self.class))?;
        if self.w == 0.0 {
            return Ok(c);
        }
        let u = self.model.denoise_class(x, sigma, None)?;
        Ok(c.lincomb(1.0 + self.w, &u, -self.w))
    }
}

/// Counts denoiser calls (NFE) of the wrapped model.
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
}

impl<S: State> Model<S> for Counted<'_, S> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        self.nfe.fetch_add(1, Ordering::Relaxed);
        self.inner.denoise(x, sigma)
    }
    fn denoise_vjp(&self, x: &S, sigma: f64, v: &S) -> Result<(S, S)> {
        self.nfe.fetch_add(1, Ordering::Relaxed);
        self.inner.denoise_vjp(x, sigma, v)
    }
    fn denoise_with_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)> {
        self.nfe.fetch_add(1, Ordering::Relaxed);
        self.inner.denoise_with_variance(x, sigma)
    }
    fn has_vjp(&self) -> bool {
        self.inner.has_vjp()
    }
    fn exact_posterior(
        &self,
        op: &dyn ForwardModel,
        y: &Array1<f64>,
    ) -> Option<Result<Box<dyn Model<S>>>> {
        self.inner.exact_posterior(op, y)
    }
    fn sample_marginal(&self, t: &S, sigma: f64, seed: u64, first: u64) -> Option<Result<S>> {
        self.inner.sample_marginal(t, sigma, seed, first)
    }
    fn round_sigma(&self, sigma: f64) -> f64 {
        self.inner.round_sigma(sigma)
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
}
