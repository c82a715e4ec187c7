//! Classifier guidance (Dhariwal & Nichol 2021, §4): a noise-conditional classifier
//! p(c | x̃, σ̃) steers any sampler towards class c by adding its log-probability gradient to
//! the model's score.

use tweedie_core::Invalid;

use crate::error::{Result, SamplerError};
use crate::model::{Capabilities, LearnedVariance, Model, ModelExt};
use crate::state::State;

/// A noise-conditional classifier p(c | x̃, σ̃) as guidance needs it: its number of classes
/// and ∇_x̃ log p(c | x̃, σ̃) (in EDM coordinates x̃ = x₀ + σ̃·ε).
pub trait ClassifierGradient<S: State>: Send + Sync {
    /// Number of classes C; classes are 0..C.
    fn classes(&self) -> usize;
    /// ∇_x̃ log p(c | x̃, σ̃) shaped like `x`, for one class shared by the batch (σ̃ > 0).
    fn grad_log_prob(&self, x: &S, sigma: f64, class: usize) -> Result<S>;
}

impl<S: State, C: ClassifierGradient<S> + ?Sized> ClassifierGradient<S> for &C {
    fn classes(&self) -> usize {
        (**self).classes()
    }
    fn grad_log_prob(&self, x: &S, sigma: f64, class: usize) -> Result<S> {
        (**self).grad_log_prob(x, sigma, class)
    }
}

impl<S: State, C: ClassifierGradient<S> + ?Sized> ClassifierGradient<S> for Box<C> {
    fn classes(&self) -> usize {
        (**self).classes()
    }
    fn grad_log_prob(&self, x: &S, sigma: f64, class: usize) -> Result<S> {
        (**self).grad_log_prob(x, sigma, class)
    }
}

/// Classifier guidance with scale s ≥ 0, in tweedie's EDM coordinates:
///
/// D_s(x̃; σ̃) = D(x̃; σ̃) + s·σ̃²·∇_x̃ log p(c | x̃, σ̃).
///
/// By Tweedie's formula D = x̃ + σ̃²·∇log p_σ̃(x̃), so D_s is the denoiser of the tilted density
/// p_σ̃(x̃)·p(c | x̃, σ̃)^s: its score is ∇log p_σ̃ + s·∇log p(c | ·). At s = 1 with the exact
/// classifier this is the class-conditional denoiser E[x₀ | x̃, c] exactly; s > 1 sharpens
/// towards c (Dhariwal & Nichol's "scale", their eq. 10 written for the score of x̃ rather
/// than ε). At σ̃ = 0 the term vanishes and the classifier is not called.
///
/// A wrapper that changes D: it keeps the model's σ̃ rounding and its learned variance (v of
/// the unguided evaluation, as guided-diffusion does), and has no vector-Jacobian product (it
/// would need the classifier's Hessian), exact posterior or exact marginal.
#[derive(Debug, Clone)]
pub struct ClassifierGuided<M, C> {
    model: M,
    classifier: C,
    class: usize,
    scale: f64,
}

impl<M, C> ClassifierGuided<M, C> {
    /// Guides `model` towards `class` of `classifier` with scale s; refuses a class outside
    /// 0..C and a scale that is negative or not finite.
    pub fn new<S: State>(model: M, classifier: C, class: usize, scale: f64) -> Result<Self>
    where
        C: ClassifierGradient<S>,
    {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(SamplerError::invalid(
                "classifier_scale",
                scale,
                "must be finite and ≥ 0",
            ));
        }
        let classes = classifier.classes();
        if class >= classes {
            return Err(SamplerError::invalid(
                "class",
                class,
                format!("the classifier has classes 0..{classes}"),
            ));
        }
        Ok(ClassifierGuided {
            model,
            classifier,
            class,
            scale,
        })
    }

    /// The guided class.
    pub fn class(&self) -> usize {
        self.class
    }

    /// The scale s.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// D_s from the unguided output `d`.
    fn guide<S: State>(&self, d: S, x: &S, sigma: f64) -> Result<S>
    where
        C: ClassifierGradient<S>,
    {
        if self.scale == 0.0 || sigma == 0.0 {
            return Ok(d);
        }
        let g = self.classifier.grad_log_prob(x, sigma, self.class)?;
        Ok(d.lincomb(1.0, &g, self.scale * sigma * sigma))
    }
}

impl<S: State, M: Model<S>, C: ClassifierGradient<S>> Model<S> for ClassifierGuided<M, C> {
    fn denoise(&self, x: &S, sigma: f64) -> Result<S> {
        let d = self.model.denoise(x, sigma)?;
        self.guide(d, x, sigma)
    }
    fn capabilities(&self) -> Capabilities<'_, S> {
        let inner = self.model.capabilities();
        Capabilities::guided(self, inner.learned_variance.is_some(), inner.sigma_rounding)
    }
}

impl<S: State, M: Model<S>, C: ClassifierGradient<S>> LearnedVariance<S>
    for ClassifierGuided<M, C>
{
    fn denoise_variance(&self, x: &S, sigma: f64) -> Result<(S, Option<S>)> {
        let (d, v) = self.model.denoise_with_variance(x, sigma)?;
        Ok((self.guide(d, x, sigma)?, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};
    use tweedie_core::space::LinearSpace;

    /// A stand-in classifier with ∇log p(0 | ·) = +1 and ∇log p(1 | ·) = −1 everywhere.
    struct Linear2;
    impl ClassifierGradient<Array2<f64>> for Linear2 {
        fn classes(&self) -> usize {
            2
        }
        fn grad_log_prob(&self, x: &Array2<f64>, _: f64, class: usize) -> Result<Array2<f64>> {
            let sign = if class == 0 { 1.0 } else { -1.0 };
            Ok(x.mapv(|_| sign))
        }
    }

    #[test]
    fn adds_s_sigma2_grad_and_refuses_bad_scale_and_class() {
        let m = crate::model::plain_fn(|x: &Array2<f64>, _| x.scale(0.5));
        let g = ClassifierGuided::new(&m, Linear2, 1, 2.0).unwrap();
        let x = array![[1.0, -2.0]];
        // 0.5·x̃ + 2·3²·(−1).
        assert_eq!(g.denoise(&x, 3.0).unwrap(), array![[-17.5, -19.0]]);
        // No guidance at σ̃ = 0.
        assert_eq!(g.denoise(&x, 0.0).unwrap(), array![[0.5, -1.0]]);
        for s in [-1.0, f64::NAN, f64::INFINITY] {
            let e = ClassifierGuided::new(&m, Linear2, 0, s)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("classifier_scale"), "{e}");
        }
        let e = ClassifierGuided::new(&m, Linear2, 2, 1.0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("class") && e.contains("0..2"), "{e}");
    }
}
