//! Conditional sampling against the exact posterior p(x₀ | y) of Gaussian-mixture priors.

mod common;

use common::{assert_ok, check, gaussian, mixture_2d, mixture_64d, random_spd, Bias};
use ndarray::{array, Array1, Array2};
use tweedie_core::process::Edm;
use tweedie_core::rng::normal_vec;
use tweedie_core::{Timer, TimerKind};
use tweedie_samplers::ops::measure;
use tweedie_samplers::problems::posterior_errors;
use tweedie_samplers::{
    Blur, Cfg, CondSampler, Daps, Diffpir, Downsample, DpsGsg, Enkg, ForwardModel, Fps,
    GaussianMixture, GradientGuidance, Guidance, Init, Mask, MatrixOp, Pnpdm, Sampler, SamplerKind,
};

const SMALL: Bias = Bias {
    weight: 0.005,
    mean: 0.01,
    cov: 0.01,
};

fn edm() -> Edm {
    Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    }
}

fn cond_run(
    prior: &GaussianMixture,
    op: &dyn ForwardModel,
    y: &Array1<f64>,
    guidance: Guidance,
    kind: SamplerKind,
    steps: usize,
    n: usize,
) -> (Array2<f64>, usize) {
    let p = edm();
    let c = CondSampler {
        process: &p,
        grid: TimerKind::edm().grid(&p, steps).unwrap(),
        kind,
        model: prior,
        op,
        y: y.clone(),
        guidance,
        seed: 21,
        first_index: 0,
    };
    let out = c
        .run(Init::Exact(Array2::<f64>::zeros((n, prior.dim()))), None)
        .unwrap();
    (out.samples, out.nfe)
}

/// A measurement of a draw from the prior (seeded).
fn observe(prior: &GaussianMixture, op: &dyn ForwardModel, seed: u64) -> Array1<f64> {
    let x0 = prior.sample_rows(1, 0.0, seed, 0).row(0).to_owned();
    measure(
        op,
        &x0,
        &Array1::from(normal_vec(seed, 0, 99, op.out_dim())),
    )
    .unwrap()
}

/// With the exact posterior score, samples match the exact posterior mixture (2-D, two modes left).
#[test]
fn exact_posterior_2d_matrix() {
    let prior = mixture_2d();
    let op = MatrixOp::new(array![[0.6, 0.8]], 0.5).unwrap();
    // y between the projections of components 0 and 2 (−1.8, −2.5): the posterior keeps two modes.
    let y = array![-2.1];
    let post = prior.posterior(&op.matrix().unwrap(), &y, 0.5).unwrap();
    let w = post.weights();
    assert!(
        w.iter().filter(|w| **w > 0.1).count() >= 2,
        "posterior weights {w:?}"
    );
    let (x, _) = cond_run(
        &prior,
        &op,
        &y,
        Guidance::ExactPosterior,
        SamplerKind::Heun,
        24,
        4000,
    );
    assert_ok("exact posterior 2-D", &check(&x, &post, SMALL));
    // Not the prior: the prior's statistics fail on these samples.
    assert!(!check(&x, &prior, SMALL).failures.is_empty());
}

/// Inpainting half the coordinates of the 64-D mixture, exact posterior score, stochastic sampler.
#[test]
fn exact_posterior_64d_inpainting() {
    let prior = mixture_64d();
    let keep: Vec<bool> = (0..64).map(|i| i % 2 == 0).collect();
    let op = Mask::new(&keep, 0.2).unwrap();
    let y = observe(&prior, &op, 5);
    let post = prior.posterior(&op.matrix().unwrap(), &y, 0.2).unwrap();
    let (x, _) = cond_run(
        &prior,
        &op,
        &y,
        Guidance::ExactPosterior,
        SamplerKind::DpmSolverPp2mSde { eta: 1.0 },
        48,
        1500,
    );
    assert_ok("exact posterior 64-D inpainting", &check(&x, &post, SMALL));
}

/// TMP is exact for Gaussian priors (Cov[x₀|x̃] = σ̃²J is then exact and constant), for every operator.
#[test]
fn tmp_is_exact_for_gaussian_priors() {
    let d = 16; // 4×4 single-channel images
    let prior = gaussian(
        Array1::from_shape_fn(d, |i| 0.1 * i as f64 - 0.5),
        random_spd(d, 0.05, 1.0, 7),
    );
    let ops: Vec<(&str, Box<dyn ForwardModel>)> = vec![
        (
            "matrix",
            Box::new(
                MatrixOp::new(tweedie_core::rng::normal_rows(3, 0, 5, 0, d) * 0.5, 0.1).unwrap(),
            ),
        ),
        (
            "downsample",
            Box::new(Downsample::new(1, 4, 4, 2, 0.05).unwrap()),
        ),
        ("blur", Box::new(Blur::new(1, 4, 4, 0.7, 1, 0.1).unwrap())),
    ];
    for (name, op) in ops {
        let y = observe(&prior, op.as_ref(), 8);
        let post = prior
            .posterior(&op.matrix().unwrap(), &y, op.noise_std())
            .unwrap();
        let (x, nfe) = cond_run(
            &prior,
            op.as_ref(),
            &y,
            Guidance::Gradient(GradientGuidance::Tmp {
                cg_iters: 64,
                cg_tol: 1e-10,
            }),
            SamplerKind::Heun,
            24,
            2000,
        );
        eprintln!("TMP {name}: NFE {nfe}");
        assert_ok(&format!("TMP {name}"), &check(&x, &post, SMALL));
    }
}

/// ΠGDM is exact for an isotropic Gaussian prior N(0, σ_d²I) with matching σ_data.
#[test]
fn pigdm_is_exact_for_isotropic_gaussian() {
    let d = 8;
    let sd = 0.7;
    let prior = gaussian(Array1::zeros(d), Array2::eye(d) * (sd * sd));
    let op = MatrixOp::new(tweedie_core::rng::normal_rows(4, 0, 3, 0, d), 0.2).unwrap();
    let y = observe(&prior, &op, 9);
    let post = prior.posterior(&op.matrix().unwrap(), &y, 0.2).unwrap();
    let (x, _) = cond_run(
        &prior,
        &op,
        &y,
        Guidance::Gradient(GradientGuidance::Pigdm { sigma_data: sd }),
        SamplerKind::Heun,
        24,
        3000,
    );
    assert_ok("ΠGDM isotropic", &check(&x, &post, SMALL));
    // A wrong σ_data makes it approximate: its bias shows.
    let (x, _) = cond_run(
        &prior,
        &op,
        &y,
        Guidance::Gradient(GradientGuidance::Pigdm {
            sigma_data: 3.0 * sd,
        }),
        SamplerKind::Heun,
        24,
        3000,
    );
    assert!(!check(&x, &post, SMALL).failures.is_empty());
}

/// Replacement pins the observed coordinates to y exactly when the measurement is noiseless,
/// and for an independent-coordinates Gaussian prior it is exact on the free coordinates too.
#[test]
fn replacement_inpainting() {
    let d = 6;
    let cov = Array2::from_diag(&Array1::from_shape_fn(d, |i| 0.2 + 0.1 * i as f64));
    let prior = gaussian(Array1::from_shape_fn(d, |i| i as f64 - 2.0), cov);
    let keep = [true, false, true, false, false, true];
    let op = Mask::new(&keep, 0.0).unwrap();
    let y = array![0.3, -0.7, 1.1];
    let (x, _) = cond_run(
        &prior,
        &op,
        &y,
        Guidance::Replacement,
        SamplerKind::Heun,
        24,
        3000,
    );
    for i in 0..x.nrows() {
        assert_eq!(
            op.apply(&x.row(i).to_owned().insert_axis(ndarray::Axis(0)))
                .unwrap()
                .row(0),
            y.view()
        );
    }
    // Free coordinates: independent of the observed ones under a diagonal prior → prior marginals.
    let free = [1usize, 3, 4];
    let xf = x.select(ndarray::Axis(1), &free);
    let pf = gaussian(
        Array1::from(free.iter().map(|&i| i as f64 - 2.0).collect::<Vec<_>>()),
        Array2::from_diag(&Array1::from(
            free.iter()
                .map(|&i| 0.2 + 0.1 * i as f64)
                .collect::<Vec<_>>(),
        )),
    );
    assert_ok("replacement free coordinates", &check(&xf, &pf, SMALL));
    assert!(CondSampler {
        process: &edm(),
        grid: TimerKind::edm().grid(&edm(), 4).unwrap(),
        kind: SamplerKind::Euler,
        model: &prior,
        op: &MatrixOp::new(Array2::eye(d), 0.0).unwrap(),
        y: Array1::zeros(d),
        guidance: Guidance::Replacement,
        seed: 0,
        first_index: 0,
    }
    .run(Init::Noise(Array2::<f64>::zeros((2, d))), None)
    .is_err());
}

/// Classifier-free guidance with w = 0 samples the class exactly; w > 0 keeps every sample in it.
#[test]
fn classifier_free_guidance() {
    let mix = mixture_2d();
    let p = edm();
    for (class, w) in [(0usize, 0.0), (2, 0.0), (1, 2.0)] {
        let model = Cfg {
            model: mix.clone(),
            class,
            w,
        };
        let grid = TimerKind::edm().grid(&p, 24).unwrap();
        let out = Sampler::new(&p, grid, SamplerKind::Heun, &model)
            .unwrap()
            .seed(3)
            .run(Init::Noise(Array2::<f64>::zeros((3000, 2))), None)
            .unwrap();
        let comp = mix.component(class).unwrap();
        if w == 0.0 {
            assert_ok(
                &format!("CFG class {class}"),
                &check(&out.samples, &comp, SMALL),
            );
        } else {
            assert!(mix
                .component_of(out.samples.view())
                .unwrap()
                .iter()
                .all(|c| *c == class));
        }
    }
}

/// DPS needs a VJP and a noisy measurement; errors name the problem.
#[test]
fn guidance_errors() {
    let prior = mixture_2d();
    let op = MatrixOp::new(array![[1.0, 0.0]], 0.0).unwrap();
    let p = edm();
    let c = CondSampler {
        process: &p,
        grid: TimerKind::edm().grid(&p, 4).unwrap(),
        kind: SamplerKind::Euler,
        model: &prior,
        op: &op,
        y: array![0.0],
        guidance: Guidance::Gradient(GradientGuidance::Dps { scale: 1.0 }),
        seed: 0,
        first_index: 0,
    };
    let e = c
        .run(Init::Noise(Array2::<f64>::zeros((2, 2))), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("noise_std"), "{e}");
    assert!(Guidance::from_name("dsp").is_err());
    assert_eq!(
        Guidance::from_name("TMP").unwrap(),
        Guidance::Gradient(GradientGuidance::Tmp {
            cg_iters: 50,
            cg_tol: 1e-8
        })
    );
}

/// `CondSampler::new` refuses a mechanism that does not go with the sampler, the operator or
/// the model before anything runs, with the error a run would give; the guidance's serde form
/// stays flat (`type = "dps"`, as the names of `from_name`).
#[test]
fn cond_sampler_refuses_mismatched_mechanisms_at_construction() {
    let prior = mixture_2d();
    let p = edm();
    let grid = || TimerKind::edm().grid(&p, 4).unwrap();
    let mask = Mask::new(&[true, false], 0.1).unwrap();
    let matrix = MatrixOp::new(array![[0.6, 0.8]], 0.0).unwrap();
    let adaptive = SamplerKind::from_name("adaptive").unwrap();
    let new = |kind: SamplerKind,
               model: &dyn tweedie_samplers::Model<Array2<f64>>,
               op: &dyn ForwardModel,
               g: &str| {
        CondSampler::new(
            &p,
            grid(),
            kind,
            model,
            op,
            array![0.5],
            Guidance::from_name(g).unwrap(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    // A closure model has no VJP and no exact posterior.
    let plain = tweedie_samplers::plain_fn(|x: &Array2<f64>, _s: f64| x.clone());
    let e = new(SamplerKind::Heun, &prior, &mask, "replacement");
    assert!(e.is_empty(), "{e}");
    let e = new(adaptive.clone(), &prior, &mask, "replacement");
    assert!(e.contains("fixed grid"), "{e}");
    let e = new(SamplerKind::Heun, &prior, &matrix, "replacement");
    assert!(e.contains("mask"), "{e}");
    let e = new(SamplerKind::Heun, &prior, &matrix, "dps");
    assert!(e.contains("noise_std"), "{e}");
    let e = new(SamplerKind::Heun, &plain, &mask, "tmp");
    assert!(e.contains("vector-Jacobian"), "{e}");
    let e = new(SamplerKind::Heun, &plain, &mask, "exact_posterior");
    assert!(e.contains("exact posterior"), "{e}");
    let e = new(SamplerKind::Heun, &prior, &mask, "pnpdm");
    assert!(e.contains("stochastic sampler"), "{e}");
    let e = new(adaptive, &prior, &mask, "enkg");
    assert!(e.contains("fixed grid"), "{e}");
    let e = new(SamplerKind::Heun, &prior, &matrix, "dps_gsg");
    assert!(e.contains("noise_std"), "{e}");

    let g: Guidance = toml::from_str("type = \"dps\"\nscale = 0.5").unwrap();
    assert_eq!(g, Guidance::Gradient(GradientGuidance::Dps { scale: 0.5 }));
    let g: Guidance = toml::from_str("type = \"fps\"\nparticles = 7").unwrap();
    assert_eq!(
        g,
        Guidance::from(Fps {
            particles: 7,
            ..Fps::default()
        })
    );
    let g: Guidance = toml::from_str("type = \"replacement\"").unwrap();
    assert_eq!(g, Guidance::Replacement);
    for (name, g) in [
        ("tmp", GradientGuidance::tmp().into()),
        ("daps", Guidance::from(Daps::default())),
    ] {
        assert_eq!(Guidance::from_name(name).unwrap(), g);
        assert_eq!(
            toml::from_str::<Guidance>(&toml::to_string(&g).unwrap()).unwrap(),
            g
        );
    }
    assert!(toml::from_str::<Guidance>("type = \"dsp\"").is_err());
}

/// Regression guard on the measured bias of the approximate methods (docs/samplers.md): on the
/// two-mode 2-D problem, posterior weights within 0.03 and component means within 0.3 posterior
/// standard deviations for ΠGDM and TMP (measured 0.12–0.15), within 1.0 for DPS at scale 0.1 (0.52).
#[test]
fn approximate_guidance_bias_stays_at_measured_level() {
    let prior = mixture_2d();
    let op = MatrixOp::new(array![[0.6, 0.8]], 0.5).unwrap();
    let y = array![-2.1];
    let post = prior.posterior(&op.matrix().unwrap(), &y, 0.5).unwrap();
    for (g, mean_tol) in [
        (
            Guidance::Gradient(GradientGuidance::Pigdm { sigma_data: 2.2 }),
            0.3,
        ),
        (
            Guidance::Gradient(GradientGuidance::Tmp {
                cg_iters: 50,
                cg_tol: 1e-8,
            }),
            0.3,
        ),
        (
            Guidance::Gradient(GradientGuidance::Dps { scale: 0.1 }),
            1.0,
        ),
    ] {
        let (x, _) = cond_run(&prior, &op, &y, g.clone(), SamplerKind::Heun, 32, 2000);
        let cls = post.component_of(x.view()).unwrap();
        for k in 0..post.n_components() {
            let rows: Vec<usize> = (0..x.nrows()).filter(|i| cls[*i] == k).collect();
            let wk = rows.len() as f64 / x.nrows() as f64;
            assert!(
                (wk - post.weights()[k]).abs() < 0.03,
                "{g:?}: weight {k} {wk} vs {}",
                post.weights()[k]
            );
            if post.weights()[k] < 0.05 {
                continue;
            }
            let m = x
                .select(ndarray::Axis(0), &rows)
                .mean_axis(ndarray::Axis(0))
                .unwrap();
            let dm = &m - &post.means().row(k);
            let err = dm.dot(&dm).sqrt() / (post.cov(k).diag().sum() / 2.0).sqrt();
            assert!(
                err < mean_tol,
                "{g:?}: component {k} mean error {err:.3} posterior stds"
            );
        }
    }
}

// ---- The posterior samplers with loops of their own (FPS, DiffPIR, DAPS, PnP-DM, EnKG, DPS-GSG).

/// Every `every`-th row: FPS's rows within a particle group are not independent (resampling
/// copies particles), one row per group is.
fn one_per_group(x: &Array2<f64>, every: usize) -> Array2<f64> {
    let rows: Vec<usize> = (0..x.nrows()).step_by(every).collect();
    x.select(ndarray::Axis(0), &rows)
}

/// (max |Δweight|, max ‖Δμ_k‖/√(tr P_k/D), max ‖ΔP_k‖_F/‖P_k‖_F): the columns of docs/conditional.md.
fn bias_of(x: &Array2<f64>, post: &GaussianMixture) -> (f64, f64, f64) {
    let e = posterior_errors(x, post);
    (e.weight, e.mean, e.cov)
}

/// FPS-SMC with the exact (shared-noise) path likelihood converges to the exact posterior of a
/// linear-Gaussian problem as the grid is refined: its only error is the ancestral kernel's.
#[test]
fn fps_smc_converges_on_linear_gaussian() {
    let d = 4;
    let prior = gaussian(
        Array1::from_shape_fn(d, |i| 0.3 * i as f64 - 0.4),
        random_spd(d, 0.1, 1.0, 17),
    );
    let op = MatrixOp::new(tweedie_core::rng::normal_rows(5, 0, 2, 0, d) * 0.7, 0.3).unwrap();
    let y = observe(&prior, &op, 3);
    let post = prior.posterior(&op.matrix().unwrap(), &y, 0.3).unwrap();
    let fps = Guidance::from(Fps {
        particles: 16,
        ..Fps::default()
    });
    let mut errs = vec![];
    for steps in [16, 128] {
        let (x, nfe) = cond_run(&prior, &op, &y, fps.clone(), SamplerKind::Heun, steps, 8000);
        assert_eq!(nfe, steps + 1);
        let x = one_per_group(&x, 4);
        let e = bias_of(&x, &post);
        eprintln!("FPS-SMC {steps} steps: {e:?}");
        errs.push(e);
        if steps == 128 {
            assert_ok(
                "FPS-SMC 128 steps",
                &check(
                    &x,
                    &post,
                    Bias {
                        weight: 0.0,
                        mean: 0.01,
                        cov: 0.02,
                    },
                ),
            );
        }
    }
    assert!(
        errs[1].2 < errs[0].2,
        "covariance error does not shrink: {errs:?}"
    );
}

/// PnP-DM's split-Gibbs target has the x-marginal p(x)·N(y; Ax, s²I + ρ²AAᵀ): at a fixed ρ and a
/// mask (AAᵀ = I) that is the exact posterior with noise √(s² + ρ²), which the samples match
/// (and not the posterior with noise s).
#[test]
fn pnpdm_targets_the_coupled_posterior() {
    let d = 3;
    let prior = gaussian(array![0.5, -1.0, 0.2], random_spd(d, 0.2, 1.0, 5));
    let (s, rho) = (0.1, 0.4);
    let op = Mask::new(&[true, false, true], s).unwrap();
    let y = array![1.0, -0.5];
    let g = Guidance::from(Pnpdm {
        rho_max: rho,
        rho_min: rho,
        decay: 1.0,
        iterations: 20,
        prior_steps: 40,
    });
    let anc = SamplerKind::from_name("euler_ancestral").unwrap();
    let (x, nfe) = cond_run(&prior, &op, &y, g, anc, 8, 3000);
    assert_eq!(nfe, 1 + 20 * 40);
    let a = op.matrix().unwrap();
    let coupled = prior.posterior(&a, &y, (s * s + rho * rho).sqrt()).unwrap();
    let plain = prior.posterior(&a, &y, s).unwrap();
    eprintln!(
        "PnP-DM vs coupled {:?}, vs plain {:?}",
        bias_of(&x, &coupled),
        bias_of(&x, &plain)
    );
    assert_ok(
        "PnP-DM coupled posterior",
        &check(
            &x,
            &coupled,
            Bias {
                weight: 0.0,
                mean: 0.01,
                cov: 0.02,
            },
        ),
    );
    assert!(!check(&x, &plain, SMALL).failures.is_empty());
}

/// DPS-GSG's smoothed gradient of ‖y − Ax‖² is unbiased for a linear A (central differences of
/// a quadratic are exact): with Q directions it matches −2Aᵀ(y − Ax) to O(√(D/Q)), and on an
/// isotropic Gaussian prior, where σ_d²/(σ̃² + σ_d²) is the exact Jacobian, DPS-GSG with many
/// directions follows DPS sample by sample.
#[test]
fn dps_gsg_tends_to_dps() {
    use tweedie_samplers::cond::dps_gsg::gsg_gradient;
    let d = 6;
    let op = MatrixOp::new(tweedie_core::rng::normal_rows(8, 0, 3, 0, d), 0.2).unwrap();
    let x = tweedie_core::rng::normal_rows(9, 0, 2, 0, d);
    let y = array![[0.3, -0.2, 1.0]];
    let exact = op.adjoint(&(op.apply(&x).unwrap() - &y)).unwrap() * 2.0;
    let mut errs = vec![];
    for q in [100usize, 10000] {
        let g = gsg_gradient(&op, &y, &x, q, 0.01, |i| {
            tweedie_core::rng::normal_rows(1, 0, 2, i as u64, d)
        })
        .unwrap();
        let rel = (&g - &exact).mapv(|v| v * v).sum().sqrt() / exact.mapv(|v| v * v).sum().sqrt();
        errs.push(rel);
    }
    eprintln!("GSG relative error, Q = 100 / 10000: {errs:?}");
    // √(D/Q)-scaling: the error at 100× the directions is ~10× smaller.
    assert!(
        errs[0] < 1.5 * (d as f64 / 100.0).sqrt() && errs[1] < 0.15 * errs[0],
        "{errs:?}"
    );

    let sd = 0.8;
    let prior = gaussian(Array1::zeros(d), Array2::eye(d) * (sd * sd));
    // A noisy measurement, so that DPS itself is stable at this scale.
    let op = MatrixOp::new(tweedie_core::rng::normal_rows(8, 0, 3, 0, d) * 0.5, 0.5).unwrap();
    let yv = observe(&prior, &op, 4);
    let (xd, _) = cond_run(
        &prior,
        &op,
        &yv,
        Guidance::Gradient(GradientGuidance::Dps { scale: 0.5 }),
        SamplerKind::Heun,
        16,
        50,
    );
    let mut diffs = vec![];
    for q in [16usize, 1024] {
        let g = Guidance::from(DpsGsg {
            scale: 0.5,
            queries: q,
            mu: 0.01,
            sigma_data: sd,
        });
        let (xg, nfe) = cond_run(&prior, &op, &yv, g, SamplerKind::Heun, 16, 50);
        assert_eq!(nfe, 31);
        diffs.push((&xg - &xd).mapv(|v| v * v).mean().unwrap().sqrt());
    }
    eprintln!("DPS-GSG vs DPS rms difference, Q = 16 / 1024: {diffs:?}");
    assert!(diffs[1] < 0.2 * diffs[0] && diffs[1] < 0.02, "{diffs:?}");
}

/// An operator without an adjoint: the derivative-free methods (EnKG, DPS-GSG) run with it,
/// a gradient method does not.
#[derive(Debug)]
struct NoAdjoint(MatrixOp);

impl ForwardModel for NoAdjoint {
    fn in_dim(&self) -> usize {
        self.0.in_dim()
    }
    fn out_dim(&self) -> usize {
        self.0.out_dim()
    }
    fn apply(&self, x: &Array2<f64>) -> tweedie_samplers::Result<Array2<f64>> {
        self.0.apply(x)
    }
    fn adjoint(&self, _y: &Array2<f64>) -> tweedie_samplers::Result<Array2<f64>> {
        Err(tweedie_samplers::SamplerError::Unsupported(
            "an adjoint (black-box operator)".into(),
        ))
    }
    fn noise_std(&self) -> f64 {
        self.0.noise_std()
    }
}

#[test]
fn derivative_free_methods_need_no_adjoint() {
    let prior = mixture_2d();
    let op = NoAdjoint(MatrixOp::new(array![[0.6, 0.8]], 0.5).unwrap());
    let y = array![-2.1];
    for g in [
        Guidance::from(Enkg::default()),
        Guidance::from(DpsGsg {
            scale: 0.1,
            ..DpsGsg::default()
        }),
    ] {
        let (x, _) = cond_run(&prior, &op, &y, g, SamplerKind::Heun, 8, 64);
        assert!(x.iter().all(|v| v.is_finite()));
    }
    let p = edm();
    let c = CondSampler {
        process: &p,
        grid: TimerKind::edm().grid(&p, 8).unwrap(),
        kind: SamplerKind::Heun,
        model: &prior,
        op: &op,
        y,
        guidance: Guidance::from(Diffpir::default()),
        seed: 0,
        first_index: 0,
    };
    let e = c
        .run(Init::Exact(Array2::<f64>::zeros((4, 2))), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("adjoint"), "{e}");
}

/// Bad input names the problem: parameters out of range, y with NaN or the wrong length, an
/// operator that does not fit the state, a particle count that does not divide the batch, a
/// deterministic integrator for PnP-DM's prior step.
#[test]
fn posterior_sampler_errors() {
    let prior = mixture_2d();
    let op = MatrixOp::new(array![[0.6, 0.8]], 0.5).unwrap();
    let p = edm();
    let run = |g: Guidance, y: Array1<f64>, n: usize, dim: usize, kind: SamplerKind| {
        let c = CondSampler {
            process: &p,
            grid: TimerKind::edm().grid(&p, 4).unwrap(),
            kind,
            model: &prior,
            op: &op,
            y,
            guidance: g,
            seed: 0,
            first_index: 0,
        };
        c.run(Init::Noise(Array2::<f64>::zeros((n, dim))), None)
            .unwrap_err()
            .to_string()
    };
    let heun = SamplerKind::Heun;
    let all = [
        Guidance::from(Fps::default()),
        Guidance::from(Diffpir::default()),
        Guidance::from(Daps::default()),
        Guidance::from(Pnpdm::default()),
        Guidance::from(Enkg::default()),
        Guidance::from(DpsGsg::default()),
    ];
    let anc = SamplerKind::from_name("euler_ancestral").unwrap();
    for g in &all {
        let e = run(g.clone(), array![f64::NAN], 20, 2, anc.clone());
        assert!(e.contains("y[0]") && e.contains("finite"), "{g:?}: {e}");
        let e = run(g.clone(), array![1.0, 2.0], 20, 2, anc.clone());
        assert!(e.contains("measurement y has 2 entries"), "{g:?}: {e}");
        let e = run(g.clone(), array![1.0], 20, 3, anc.clone());
        assert!(e.contains("3 elements per sample"), "{g:?}: {e}");
    }
    let bad = [
        (
            Guidance::from(Fps {
                particles: 0,
                ..Fps::default()
            }),
            "particles",
        ),
        (
            Guidance::from(Fps {
                ess_threshold: 1.5,
                ..Fps::default()
            }),
            "ess_threshold",
        ),
        (
            Guidance::from(Diffpir {
                lambda: 0.0,
                zeta: 0.3,
            }),
            "lambda",
        ),
        (
            Guidance::from(Diffpir {
                lambda: 1.0,
                zeta: -0.1,
            }),
            "zeta",
        ),
        (
            Guidance::from(Daps {
                eta: 2.0,
                ..Daps::default()
            }),
            "eta",
        ),
        (
            Guidance::from(Daps {
                tau: Some(f64::NAN),
                ..Daps::default()
            }),
            "tau",
        ),
        (
            Guidance::from(Daps {
                ode_steps: 0,
                ..Daps::default()
            }),
            "ode_steps",
        ),
        (
            Guidance::from(Pnpdm {
                rho_min: 20.0,
                ..Pnpdm::default()
            }),
            "rho_min",
        ),
        (
            Guidance::from(Pnpdm {
                decay: 0.0,
                ..Pnpdm::default()
            }),
            "decay",
        ),
        (
            Guidance::from(Enkg {
                scale: -1.0,
                ..Enkg::default()
            }),
            "scale",
        ),
        (
            Guidance::from(Enkg {
                lr_min_ratio: 2.0,
                ..Enkg::default()
            }),
            "lr_min_ratio",
        ),
        (
            Guidance::from(DpsGsg {
                queries: 0,
                ..DpsGsg::default()
            }),
            "queries",
        ),
        (
            Guidance::from(DpsGsg {
                mu: 0.0,
                ..DpsGsg::default()
            }),
            "mu",
        ),
    ];
    for (g, key) in bad {
        let e = run(g.clone(), array![1.0], 20, 2, anc.clone());
        assert!(e.contains(key), "{g:?}: {e}");
        assert!(g.validate().is_err());
    }
    let e = run(
        Guidance::from(Fps::default()),
        array![1.0],
        30,
        2,
        heun.clone(),
    );
    assert!(e.contains("particles") && e.contains("multiples"), "{e}");
    let e = run(
        Guidance::from(Pnpdm::default()),
        array![1.0],
        4,
        2,
        heun.clone(),
    );
    assert!(
        e.contains("stochastic sampler") && e.contains("heun"),
        "{e}"
    );
    for name in ["fps", "diffpir", "daps", "pnpdm", "enkg", "dps_gsg"] {
        assert!(Guidance::from_name(name).is_ok(), "{name}");
    }
    let e = Guidance::from_name("fsp").unwrap_err().to_string();
    assert!(e.contains("dps_gsg"), "{e}");
}

/// Regression guard at the measured bias (docs/conditional.md, the two-mode 2-D problem, 32 EDM
/// steps, n = 4000): weight, mean and covariance errors may not grow past the measurement plus
/// the sampling noise at this n.
#[test]
fn posterior_sampler_bias_stays_at_measured_level() {
    let prior = mixture_2d();
    let op = MatrixOp::new(array![[0.6, 0.8]], 0.5).unwrap();
    let y = array![-2.1];
    let post = prior.posterior(&op.matrix().unwrap(), &y, 0.5).unwrap();
    let anc = SamplerKind::from_name("euler_ancestral").unwrap();
    let heun = SamplerKind::Heun;
    // (method, sampler, measured (weight, mean, cov) errors at n = 4000, seed 21).
    let cases = [
        (
            Guidance::from(Fps::default()),
            heun.clone(),
            (0.05, 0.19, 0.30),
        ),
        (
            Guidance::from(Diffpir::default()),
            heun.clone(),
            (0.04, 0.33, 0.29),
        ),
        (
            Guidance::from(Daps::default()),
            heun.clone(),
            (0.05, 0.25, 0.96),
        ),
        (Guidance::from(Pnpdm::default()), anc, (0.03, 0.03, 0.33)),
        (
            Guidance::from(Enkg::default()),
            heun.clone(),
            (0.30, 4.7, 0.59),
        ),
        (
            Guidance::from(DpsGsg {
                scale: 0.1,
                sigma_data: 2.2,
                ..DpsGsg::default()
            }),
            heun,
            (0.013, 0.33, 0.43),
        ),
    ];
    for (g, kind, (w, m, c)) in cases {
        let (x, _) = cond_run(&prior, &op, &y, g.clone(), kind, 32, 4000);
        let (we, me, ce) = bias_of(&x, &post);
        eprintln!("{g:?}: measured ({we:.3}, {me:.3}, {ce:.3})");
        // Sampling noise at n = 4000: weights ±0.02, means ±0.1 std, covariances ±0.1 (relative).
        assert!(
            we < w + 0.02 && me < m + 0.1 && ce < c + 0.1,
            "{g:?}: ({we:.3}, {me:.3}, {ce:.3}) past the measured ({w}, {m}, {c})"
        );
    }
}
