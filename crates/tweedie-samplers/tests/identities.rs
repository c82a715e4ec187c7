//! Exact identities between samplers, noise bookkeeping, NFE counts and error paths.

mod common;

use common::mixture_2d;
use ndarray::{s, Array2, Array3};
use tweedie_core::process::{Edm, VpLinear};
use tweedie_core::{Process, Timer, TimerKind};
use tweedie_samplers::{Init, Sampler, SamplerKind, SamplerSpec};

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

fn run_on(
    p: &dyn Process,
    kind: SamplerKind,
    steps: usize,
    x_t: &Array2<f64>,
    seed: u64,
) -> Array2<f64> {
    let mix = mixture_2d();
    let grid = TimerKind::edm().grid(p, steps).unwrap();
    Sampler::new(p, grid, kind, &mix)
        .unwrap()
        .seed(seed)
        .run(Init::Latents(x_t.clone()), None)
        .unwrap()
        .samples
}

/// DDIM(η) in process coordinates, Euler ancestral(η) in σ̃ and DDPM's posterior sampling are
/// three derivations of one update (s̃² = η²σ̃′²(σ̃² − σ̃′²)/σ̃²); DDIM(0) is Euler in σ̃.
#[test]
fn ddim_euler_ancestral_ddpm_coincide() {
    let vp = VpLinear {
        beta_min: 0.1,
        beta_d: 19.9,
        eps_t: 1e-3,
    };
    let x_t = mixture_2d().sample_rows(50, 80.0, 3, 0) * vp.alpha(vp.t_of_sigma_tilde(80.0));
    for eta in [0.0, 0.3, 1.0] {
        let a = run_on(&vp, SamplerKind::Ddim { eta }, 12, &x_t, 9);
        let b = run_on(
            &vp,
            SamplerKind::EulerAncestral { eta, s_noise: 1.0 },
            12,
            &x_t,
            9,
        );
        assert!(max_diff(&a, &b) < 1e-10, "η = {eta}: {}", max_diff(&a, &b));
    }
    let a = run_on(&vp, SamplerKind::Ddim { eta: 1.0 }, 12, &x_t, 9);
    let c = run_on(
        &vp,
        SamplerKind::DdpmAncestral {
            learned_variance: true,
        },
        12,
        &x_t,
        9,
    );
    assert!(max_diff(&a, &c) < 1e-10, "{}", max_diff(&a, &c));
    let e = run_on(&vp, SamplerKind::Euler, 12, &x_t, 9);
    let d = run_on(&vp, SamplerKind::Ddim { eta: 0.0 }, 12, &x_t, 9);
    assert!(max_diff(&d, &e) < 1e-10);
    // …and stochastic runs really are stochastic.
    let f = run_on(&vp, SamplerKind::Ddim { eta: 1.0 }, 12, &x_t, 10);
    assert!(max_diff(&a, &f) > 1e-2);
}

/// A sample depends on (seed, index) only: splitting a batch with `first_index` changes nothing.
#[test]
fn samples_do_not_depend_on_batching() {
    let p = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let mix = mixture_2d();
    for kind in [
        SamplerKind::EdmStochastic {
            s_churn: 40.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
        },
        SamplerKind::DpmSolverPp2mSde { eta: 1.0 },
        SamplerKind::EulerMaruyama,
    ] {
        let grid = TimerKind::edm().grid(&p, 10).unwrap();
        let full = Sampler::new(&p, grid.clone(), kind.clone(), &mix)
            .unwrap()
            .seed(4)
            .run(Init::Noise(Array2::<f64>::zeros((10, 2))), None)
            .unwrap()
            .samples;
        let tail = Sampler::new(&p, grid, kind, &mix)
            .unwrap()
            .seed(4)
            .first_index(6)
            .run(Init::Noise(Array2::<f64>::zeros((4, 2))), None)
            .unwrap()
            .samples;
        assert_eq!(full.slice(s![6.., ..]), tail);
    }
}

/// NFE formulas, trajectory recording and the per-step callback.
#[test]
fn nfe_trajectory_and_callback() {
    let p = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let mix = mixture_2d();
    let n = 10;
    for (kind, nfe) in [
        (SamplerKind::Euler, n),
        (SamplerKind::Heun, 2 * n - 1),
        (SamplerKind::DpmSolverPp2s, 2 * n - 1),
        (SamplerKind::DpmSolverPp2m, n),
        (SamplerKind::Deis3, n),
        (
            SamplerKind::EdmStochastic {
                s_churn: 10.0,
                s_min: 0.0,
                s_max: f64::INFINITY,
                s_noise: 1.0,
            },
            2 * n - 1,
        ),
    ] {
        let grid = TimerKind::edm().grid(&p, n).unwrap();
        let mut seen = Vec::new();
        let mut cb =
            |i: &tweedie_samplers::StepInfo<Array2<f64>>| seen.push((i.step, i.sigma_next));
        let out = Sampler::new(&p, grid.clone(), kind.clone(), &mix)
            .unwrap()
            .record(true)
            .run(Init::Noise(Array2::<f64>::zeros((3, 2))), Some(&mut cb))
            .unwrap();
        assert_eq!(out.nfe, nfe, "{kind:?}");
        assert_eq!(out.trajectory.len(), n + 1);
        assert_eq!(out.sigmas, grid.sigma_tilde);
        assert_eq!(seen.len(), n);
        assert_eq!(seen[n - 1], (n - 1, 0.0));
        assert_eq!(out.trajectory[n], out.samples);
    }
}

/// Higher-rank states ([B, C, H, W]) and f32 states run the same arithmetic.
#[test]
fn image_shaped_and_f32_states() {
    let p = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let mix = mixture_2d();
    let grid = TimerKind::edm().grid(&p, 8).unwrap();
    let x_t = mix.sample_rows(6, 80.0, 2, 0);
    let flat = Sampler::new(&p, grid.clone(), SamplerKind::Heun, &mix)
        .unwrap()
        .run(Init::Latents(x_t.clone()), None)
        .unwrap();
    let x3: Array3<f64> = x_t.clone().into_shape_with_order((6, 1, 2)).unwrap();
    let shaped = Sampler::new(&p, grid.clone(), SamplerKind::Heun, &mix)
        .unwrap()
        .run(Init::Latents(x3), None)
        .unwrap();
    assert_eq!(
        shaped.samples.into_shape_with_order((6, 2)).unwrap(),
        flat.samples
    );
    let x32 = x_t.mapv(|v| v as f32);
    let f32_out = Sampler::new(&p, grid, SamplerKind::Heun, &mix)
        .unwrap()
        .run(Init::Latents(x32), None)
        .unwrap();
    let diff = max_diff(&f32_out.samples.mapv(|v| v as f64), &flat.samples);
    // f32 rounding of a state of size ≤ 80 (ulp ≈ 8e-6) through 15 evaluations.
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let p = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let mix = mixture_2d();
    assert!(SamplerSpec::parse("heun", 0)
        .unwrap_err()
        .to_string()
        .contains("steps"));
    assert!(SamplerSpec::parse("nope", 5)
        .unwrap_err()
        .to_string()
        .contains("known samplers"));
    let grid = TimerKind::edm().grid(&p, 4).unwrap();
    let bad = tweedie_core::TimeGrid {
        t: vec![1.0],
        sigma_tilde: vec![1.0],
    };
    assert!(Sampler::<Array2<f64>>::new(&p, bad, SamplerKind::Euler, &mix).is_err());
    // Wrong state width for the mixture.
    let r = Sampler::new(&p, grid, SamplerKind::Euler, &mix)
        .unwrap()
        .run(Init::Exact(Array2::<f64>::zeros((3, 5))), None);
    assert!(r.is_err());
}

/// A network predicting ε, v, score or flow velocity becomes the same EDM denoiser through core's
/// conversions: the mixture re-expressed in each parametrization round-trips to 1e-10.
#[test]
fn param_models_convert_to_the_denoiser() {
    use tweedie_core::param::convert;
    use tweedie_core::process::{Flow, VpLinear};
    use tweedie_core::Param;
    use tweedie_samplers::{GaussianMixture, Model, ParamModel, TimeModel};

    struct AsParam<'a> {
        mix: GaussianMixture,
        param: Param,
        process: &'a dyn Process,
    }
    impl TimeModel<Array2<f64>> for AsParam<'_> {
        fn predict(&self, x_t: &Array2<f64>, t: f64) -> tweedie_samplers::Result<Array2<f64>> {
            let a = self.process.alpha(t);
            let d = self.mix.denoise_rows(&(x_t / a), self.process.sigma(t) / a);
            Ok(convert(Param::X0, self.param, self.process, t, x_t, &d))
        }
    }
    let vp = VpLinear {
        beta_min: 0.1,
        beta_d: 19.9,
        eps_t: 1e-3,
    };
    let flow = Flow {
        t_min: 0.0,
        t_max: 1.0,
    };
    let mix = mixture_2d();
    let x = mix.sample_rows(20, 1.3, 4, 0);
    for (p, param) in [
        (&vp as &dyn Process, Param::Eps),
        (&vp, Param::V),
        (&vp, Param::Score),
        (&flow, Param::Velocity),
        (&flow, Param::Eps),
    ] {
        let m = ParamModel {
            net: AsParam {
                mix: mix.clone(),
                param,
                process: p,
            },
            param,
            process: p,
        };
        let d = m.denoise(&x, 1.3).unwrap();
        let want = mix.denoise_rows(&x, 1.3);
        assert!(
            max_diff(&d, &want) < 1e-10,
            "{param:?}: {}",
            max_diff(&d, &want)
        );
    }
}

/// The mixture's exact denoiser with a constant learned-variance interpolation v.
struct WithVariance(f64);

impl tweedie_samplers::Model<Array2<f64>> for WithVariance {
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie_samplers::Result<Array2<f64>> {
        mixture_2d().denoise(x, sigma)
    }
    fn capabilities(&self) -> tweedie_samplers::Capabilities<'_, Array2<f64>> {
        tweedie_samplers::Capabilities {
            learned_variance: Some(self),
            ..tweedie_samplers::Capabilities::none()
        }
    }
}

impl tweedie_samplers::LearnedVariance<Array2<f64>> for WithVariance {
    fn denoise_variance(
        &self,
        x: &Array2<f64>,
        sigma: f64,
    ) -> tweedie_samplers::Result<(Array2<f64>, Option<Array2<f64>>)> {
        Ok((
            tweedie_samplers::Model::denoise(self, x, sigma)?,
            Some(x.mapv(|_| self.0)),
        ))
    }
}

fn ddpm_run(
    model: &WithVariance,
    learned_variance: bool,
    grid: tweedie_core::TimeGrid,
) -> Array2<f64> {
    let vp = tweedie_core::ProcessKind::vp_cosine().build();
    let x_t = Array2::from_shape_fn((16, 2), |(i, j)| (i as f64 - 7.5) * 0.3 + j as f64);
    Sampler::new(
        vp.as_ref(),
        grid,
        SamplerKind::DdpmAncestral { learned_variance },
        model,
    )
    .unwrap()
    .seed(5)
    .run(Init::Latents(x_t), None)
    .unwrap()
    .samples
}

/// v = 0 gives the variance β̃ bit for bit: the learned-variance sampler reproduces the
/// fixed-variance one exactly, and `ddpm_fixed` ignores any v.
#[test]
fn ddpm_with_learned_v_zero_is_the_fixed_variance_sampler_exactly() {
    let vp = tweedie_core::ProcessKind::vp_cosine().build();
    let grid = TimerKind::edm().grid(vp.as_ref(), 12).unwrap();
    let fixed = ddpm_run(&WithVariance(0.0), false, grid.clone());
    let learned_zero = ddpm_run(&WithVariance(0.0), true, grid.clone());
    assert_eq!(fixed, learned_zero);
    assert_eq!(ddpm_run(&WithVariance(0.7), false, grid.clone()), fixed);
    assert_ne!(ddpm_run(&WithVariance(0.7), true, grid), fixed);
}

/// v = 1 gives the variance β of the forward transition: one step from x_t with the exact
/// posterior mean and noise √β·ε, ε the sampler's draw 0 of step 0.
#[test]
fn ddpm_with_learned_v_one_uses_the_forward_variance() {
    use tweedie_samplers::{Model, State};
    let vp = tweedie_core::ProcessKind::vp_cosine().build();
    let (t0, t1) = (0.6, 0.4);
    let grid = tweedie_core::TimeGrid {
        t: vec![t0, t1],
        sigma_tilde: vec![vp.sigma_tilde(t0), vp.sigma_tilde(t1)],
    };
    let got = ddpm_run(&WithVariance(1.0), true, grid.clone());
    let (a, a1) = (vp.alpha(t0), vp.alpha(t1));
    let (sg, sg1) = (a * grid.sigma_tilde[0], a1 * grid.sigma_tilde[1]);
    let step = tweedie_core::DdpmStep::new(a, sg, a1, sg1);
    let x_t = Array2::from_shape_fn((16, 2), |(i, j)| (i as f64 - 7.5) * 0.3 + j as f64);
    let x_tilde = x_t.mapv(|v| v / a);
    let den = mixture_2d().denoise(&x_tilde, grid.sigma_tilde[0]).unwrap();
    let eps = x_t
        .randn_like(5, 0, tweedie_core::rng::streams::STEP_BASE)
        .unwrap();
    let want = &x_t * step.coef_xt + &den * step.coef_x0 + &eps * step.beta.sqrt();
    // The sampler returns process coordinates at the grid's end (x = a1·x̃).
    assert!(max_diff(&got, &want) < 1e-12, "{}", max_diff(&got, &want));
}

/// The exact denoiser of N(0, I) with one output element replaced by `bad` (the last, so that
/// it lies in the last part of a split pass).
struct NonFinite(f64);

impl<S: tweedie_samplers::State> tweedie_samplers::Model<S> for NonFinite {
    fn denoise(&self, x: &S, sigma: f64) -> tweedie_samplers::Result<S> {
        let mut d = x.to_rows() / (1.0 + sigma * sigma);
        let (i, j) = (d.nrows() - 1, d.ncols() - 1);
        d[[i, j]] = self.0;
        x.with_rows(&d)
    }
    fn capabilities(&self) -> tweedie_samplers::Capabilities<'_, S> {
        tweedie_samplers::Capabilities::none()
    }
}

/// A denoiser that returns NaN or ±∞ stops every fixed-grid sampler after its first step with
/// the step and σ̃ named, on f64 and f32 states, small and split across threads.
#[test]
fn a_non_finite_state_stops_every_sampler_at_its_first_step() {
    let p = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let grid = TimerKind::edm().grid(&p, 6).unwrap();
    let want = format!(
        "numerical failure: non-finite state after step 0 (σ̃ = {})",
        grid.sigma_tilde[1]
    );
    for name in tweedie_samplers::SAMPLER_NAMES {
        let kind = SamplerKind::from_name(name).unwrap();
        if matches!(kind, SamplerKind::Adaptive { .. }) {
            continue;
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let model = NonFinite(bad);
            for (rows, cols) in [(2, 3), (64, 600)] {
                let x = Array2::<f64>::ones((rows, cols));
                let run = |x: Init<Array2<f64>>| {
                    Sampler::new(&p, grid.clone(), kind.clone(), &model)
                        .unwrap()
                        .run(x, None)
                        .map(|_| ())
                };
                let err = run(Init::Latents(x.clone())).unwrap_err().to_string();
                assert_eq!(err, want, "{name}, {bad}, [{rows}, {cols}]");
                let run32 = |x: Init<Array2<f32>>| {
                    Sampler::new(&p, grid.clone(), kind.clone(), &model)
                        .unwrap()
                        .run(x, None)
                        .map(|_| ())
                };
                let err = run32(Init::Latents(x.mapv(|v| v as f32)))
                    .unwrap_err()
                    .to_string();
                assert_eq!(err, want, "{name} f32, {bad}, [{rows}, {cols}]");
            }
        }
    }
}
