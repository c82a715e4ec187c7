//! The front door, shaped like k-diffusion's `sample_heun(model, x, sigmas)`: one call takes a
//! model, a sampler, a σ̃ grid, an initial state and a seed, and returns the samples and the
//! number of denoiser evaluations.
//!
//! (Example on the crate's front page.)
//!
//! Everything here is a thin layer over [`Sampler`], which adds step hooks, recording,
//! callbacks and chunked runs.

use tweedie_core::process::Edm;
use tweedie_core::Invalid;
use tweedie_core::{Process, TimeGrid};

use crate::error::{Result, SamplerError};
use crate::kind::{Churn, SamplerKind};
use crate::model::Model;
use crate::sampler::{Init, SampleOutput, Sampler};
use crate::state::State;

/// A sampler as the front door takes it: the integrator, the process it runs in and optional
/// churn. A bare [`SamplerKind`] converts into one under the EDM process (α = 1, σ = σ̃, as in
/// k-diffusion); DDIM, ancestral DDPM and Euler–Maruyama depend on the process, so a model
/// trained under another one names it: `SamplerKind::Ddim { eta: 0.0 }.with_process(&vp)`.
#[derive(Clone)]
pub struct Method<'p> {
    /// The integrator.
    pub kind: SamplerKind,
    /// The process (None: EDM).
    pub process: Option<&'p dyn Process>,
    /// Churn before every step (Euler, Heun, DPM-Solver++(2S)).
    pub churn: Option<Churn>,
}

impl<'p> Method<'p> {
    /// Run under `process` (its α and σ set the DDIM, DDPM and Euler–Maruyama updates).
    pub fn with_process(mut self, process: &'p dyn Process) -> Self {
        self.process = Some(process);
        self
    }
    /// Churn before every step (see [`Churn`]).
    pub fn with_churn(mut self, churn: Churn) -> Self {
        self.churn = Some(churn);
        self
    }
}

impl From<SamplerKind> for Method<'_> {
    fn from(kind: SamplerKind) -> Self {
        Method {
            kind,
            process: None,
            churn: None,
        }
    }
}

impl From<&SamplerKind> for Method<'_> {
    fn from(kind: &SamplerKind) -> Self {
        kind.clone().into()
    }
}

impl SamplerKind {
    /// This sampler under `process` (the builder for process-aware samplers).
    pub fn with_process(self, process: &dyn Process) -> Method<'_> {
        Method::from(self).with_process(process)
    }
    /// This sampler with churn before every step.
    pub fn with_churn<'p>(self, churn: Churn) -> Method<'p> {
        Method::from(self).with_churn(churn)
    }
}

/// The EDM process the front door runs in when none is named (t = σ̃, α = 1).
const EDM: Edm = Edm {
    sigma_min: 0.0,
    sigma_max: f64::INFINITY,
};

/// Samples with `method` over the decreasing σ̃ grid `sigmas` (σ̃ = σ/α, usually ending at 0, as
/// [`crate::grids`] builds them), starting from `init` at σ̃ = `sigmas[0]`, noise keyed by
/// `seed` (sample i by (seed, i)). `Init::Edm(x)` is k-diffusion's x: the state x̃ itself.
/// Returns the samples at the grid's end (x₀ when it ends at 0) and the NFE. One call:
/// `sample(&model, SamplerKind::Heun, &sigmas, Init::Noise(zeros), seed)`.
pub fn sample<'p, S: State, M: Model<S> + ?Sized>(
    model: &M,
    method: impl Into<Method<'p>>,
    sigmas: &[f64],
    init: Init<S>,
    seed: u64,
) -> Result<SampleOutput<S>> {
    let m = method.into();
    let process = m.process.unwrap_or(&EDM);
    let grid = sigma_grid(process, sigmas)?;
    // `&M` is a model for unsized M too (a `dyn Model`), and sized, so it coerces.
    let model: &dyn Model<S> = &model;
    let mut s = Sampler::new(process, grid, m.kind, model)?.seed(seed);
    if let Some(c) = m.churn {
        s = s.churn(c);
    }
    s.run(init, None)
}

/// The time grid of σ̃ values under `process`: t = t(σ̃), and t = 0 at σ̃ = 0.
fn sigma_grid(process: &dyn Process, sigmas: &[f64]) -> Result<TimeGrid> {
    if sigmas.len() < 2 {
        return Err(SamplerError::invalid(
            "sigmas",
            format!("{sigmas:?}"),
            "need at least 2 noise levels (1 step)",
        ));
    }
    Ok(TimeGrid::at_levels(process, sigmas.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grids;
    use crate::model::plain_fn;
    use ndarray::{array, Array2};
    use tweedie_core::mixture::GaussianMixture;
    use tweedie_core::process::VpLinear;
    use tweedie_core::{Timer, TimerKind};

    fn mix() -> GaussianMixture {
        GaussianMixture::new(
            array![1.0],
            array![[1.0, -1.0]],
            array![[[0.5, 0.1], [0.1, 0.3]]],
        )
        .unwrap()
    }

    /// The front door is the sampler: same grid, same seed, same samples and NFE; it is seeded;
    /// bad input gives errors that name it.
    #[test]
    fn front_door_matches_the_sampler_and_checks_inputs() {
        let mix = mix();
        let sigmas = grids::karras(8, 0.002, 80.0, 7.0).unwrap();
        let zeros = Array2::<f64>::zeros((20, 2));
        let a = sample(
            &mix,
            SamplerKind::Heun,
            &sigmas,
            Init::Exact(zeros.clone()),
            3,
        )
        .unwrap();
        let edm = Edm {
            sigma_min: 0.002,
            sigma_max: 80.0,
        };
        let grid = TimerKind::edm().grid(&edm, 8).unwrap();
        assert_eq!(grid.sigma_tilde, sigmas);
        let b = Sampler::new(&edm, grid, SamplerKind::Heun, &mix)
            .unwrap()
            .seed(3)
            .run(Init::Exact(zeros.clone()), None)
            .unwrap();
        assert_eq!(a.samples, b.samples);
        assert_eq!((a.nfe, b.nfe), (15, 15));
        let c = sample(
            &mix,
            &SamplerKind::Heun,
            &sigmas,
            Init::Noise(zeros.clone()),
            4,
        )
        .unwrap();
        assert_ne!(a.samples, c.samples);
        let e = sample(
            &mix,
            SamplerKind::Heun,
            &[80.0],
            Init::Noise(zeros.clone()),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sigmas"), "{e}");
        let e = sample(
            &mix,
            SamplerKind::Heun,
            &[1.0, 2.0, 0.0],
            Init::Noise(zeros),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("decreasing"), "{e}");
    }

    /// A process named through the builder reaches the process-aware samplers: DDIM under VP
    /// on the VP grid is the sampler run with that process and grid.
    #[test]
    fn process_through_the_builder() {
        let mix = mix();
        let vp = VpLinear {
            beta_min: 0.1,
            beta_d: 19.9,
            eps_t: 1e-3,
        };
        let sigmas = grids::vp(30, 19.9, 0.1, 1e-3).unwrap();
        let x = mix.sample_rows(10, sigmas[0], 1, 0);
        let kind = SamplerKind::DdpmAncestral {
            learned_variance: false,
        };
        let a = sample(
            &mix,
            kind.clone().with_process(&vp),
            &sigmas,
            Init::Edm(x.clone()),
            2,
        )
        .unwrap();
        let grid = TimerKind::VpLinear { eps_s: 1e-3 }.grid(&vp, 30).unwrap();
        let x_t = x.clone() * vp.alpha(grid.t[0]);
        let b = Sampler::new(&vp, grid, kind.clone(), &mix)
            .unwrap()
            .seed(2)
            .run(Init::Latents(x_t), None)
            .unwrap();
        let close = a
            .samples
            .iter()
            .zip(b.samples.iter())
            .all(|(p, q)| (p - q).abs() < 1e-9);
        assert!(close, "front door and sampler differ under VP");
        // The process matters: the same kind under EDM gives other samples.
        let c = sample(&mix, kind, &sigmas, Init::Edm(x), 2).unwrap();
        assert!(a.samples != c.samples);
    }

    /// A closure is a model; churn goes through the builder.
    #[test]
    fn closure_model_and_churn() {
        let model = plain_fn(|x: &Array2<f64>, s: f64| x / (1.0 + s * s));
        let sigmas = grids::exponential(10, 0.01, 50.0).unwrap();
        let init = || Init::Noise(Array2::<f64>::zeros((4, 3)));
        let plain = sample(&model, SamplerKind::Euler, &sigmas, init(), 0).unwrap();
        assert_eq!(plain.nfe, 10);
        let churned = sample(
            &model,
            SamplerKind::Euler.with_churn(Churn::default()),
            &sigmas,
            init(),
            0,
        )
        .unwrap();
        assert!(plain.samples != churned.samples);
    }
}
