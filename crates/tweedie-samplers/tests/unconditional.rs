//! Every integrator against the exact answer: per-component weights, means and covariances of
//! samples from 2-D and 64-D Gaussian mixtures, started from the exact p_T.

mod common;

use common::{assert_ok, check, mixture_2d, mixture_64d, Bias};
use ndarray::Array2;
use tweedie_core::process::{Edm, Flow, Ve, VpLinear};
use tweedie_core::{Process, Timer, TimerKind};
use tweedie_samplers::{GaussianMixture, Init, Sampler, SamplerKind};

fn edm() -> Edm {
    Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    }
}

fn run(
    p: &dyn Process,
    timer: &TimerKind,
    kind: SamplerKind,
    steps: usize,
    mix: &GaussianMixture,
    n: usize,
    seed: u64,
) -> (Array2<f64>, usize) {
    let grid = timer.grid(p, steps).unwrap();
    let d = Sampler::new(p, grid, kind, mix).unwrap().seed(seed);
    let out = d
        .run(Init::Exact(Array2::<f64>::zeros((n, mix.dim()))), None)
        .unwrap();
    (out.samples, out.nfe)
}

fn edm_timer() -> TimerKind {
    TimerKind::edm()
}

/// Measured discretisation bias stays below these allowances at the step counts used (see
/// docs/samplers.md); the dominant term of each bound is 5 standard errors.
const SMALL: Bias = Bias {
    weight: 0.005,
    mean: 0.01,
    cov: 0.01,
};

macro_rules! mixture_test {
    ($name:ident, $kind:expr, $steps:expr, $nfe:expr) => {
        #[test]
        fn $name() {
            let mix = mixture_2d();
            let (x, nfe) = run(&edm(), &edm_timer(), $kind, $steps, &mix, 4000, 1);
            assert_eq!(nfe, $nfe, "NFE");
            assert_ok(concat!(stringify!($name), " 2-D"), &check(&x, &mix, SMALL));
            let mix = mixture_64d();
            let (x, _) = run(&edm(), &edm_timer(), $kind, $steps, &mix, 1500, 2);
            assert_ok(concat!(stringify!($name), " 64-D"), &check(&x, &mix, SMALL));
        }
    };
}

mixture_test!(euler_2d_64d, SamplerKind::Euler, 64, 64);
mixture_test!(heun_2d_64d, SamplerKind::Heun, 18, 35);
mixture_test!(
    edm_stochastic_2d_64d,
    SamplerKind::EdmStochastic {
        s_churn: 40.0,
        s_min: 0.05,
        s_max: 50.0,
        s_noise: 1.003
    },
    40,
    79
);
mixture_test!(
    euler_ancestral_2d_64d,
    SamplerKind::EulerAncestral {
        eta: 1.0,
        s_noise: 1.0
    },
    64,
    64
);
mixture_test!(ddim_eta_half_2d_64d, SamplerKind::Ddim { eta: 0.5 }, 64, 64);
mixture_test!(
    ddpm_2d_64d,
    SamplerKind::DdpmAncestral {
        learned_variance: true
    },
    64,
    64
);
mixture_test!(dpmpp_2s_2d_64d, SamplerKind::DpmSolverPp2s, 18, 35);
mixture_test!(dpmpp_2m_2d_64d, SamplerKind::DpmSolverPp2m, 24, 24);
mixture_test!(
    dpmpp_2m_sde_2d_64d,
    SamplerKind::DpmSolverPp2mSde { eta: 1.0 },
    48,
    48
);
mixture_test!(euler_maruyama_2d_64d, SamplerKind::EulerMaruyama, 256, 256);
mixture_test!(deis3_2d_64d, SamplerKind::Deis3, 18, 18);

#[test]
fn adaptive_2d_64d_reports_nfe() {
    let mix = mixture_2d();
    let kind = SamplerKind::Adaptive {
        rtol: 1e-3,
        atol: 1e-3,
    };
    let (x, nfe) = run(&edm(), &edm_timer(), kind.clone(), 18, &mix, 4000, 1);
    eprintln!("adaptive 2-D NFE {nfe}");
    assert!(nfe > 10 && nfe < 400, "NFE {nfe}");
    assert_ok("adaptive 2-D", &check(&x, &mix, SMALL));
    let mix = mixture_64d();
    let (x, _) = run(&edm(), &edm_timer(), kind, 18, &mix, 1500, 2);
    assert_ok("adaptive 64-D", &check(&x, &mix, SMALL));
    // Tighter tolerance costs more evaluations.
    let (_, nfe_tight) = run(
        &edm(),
        &edm_timer(),
        SamplerKind::Adaptive {
            rtol: 1e-5,
            atol: 1e-5,
        },
        18,
        &mixture_2d(),
        200,
        1,
    );
    assert!(nfe_tight > nfe, "{nfe_tight} vs {nfe}");
}

/// The process matters for Euler–Maruyama, DDIM and DDPM: run them on VP, VE and flow too.
#[test]
fn stochastic_samplers_on_every_process() {
    let mix = mixture_2d();
    let vp = VpLinear {
        beta_min: 0.1,
        beta_d: 19.9,
        eps_t: 1e-3,
    };
    let ve = Ve {
        sigma_min: 0.02,
        sigma_max: 100.0,
    };
    let flow = Flow {
        t_min: 0.0,
        t_max: 1.0,
    };
    let cases: Vec<(&str, &dyn Process, TimerKind, SamplerKind, usize)> = vec![
        (
            "em vp",
            &vp,
            TimerKind::vp_linear(),
            SamplerKind::EulerMaruyama,
            500,
        ),
        (
            "em ve",
            &ve,
            TimerKind::ve_geometric(),
            SamplerKind::EulerMaruyama,
            500,
        ),
        (
            "em flow",
            &flow,
            TimerKind::uniform_time(),
            SamplerKind::EulerMaruyama,
            500,
        ),
        (
            "ddpm vp",
            &vp,
            TimerKind::vp_linear(),
            SamplerKind::DdpmAncestral {
                learned_variance: true,
            },
            200,
        ),
        (
            "ddim vp",
            &vp,
            TimerKind::vp_linear(),
            SamplerKind::Ddim { eta: 0.0 },
            100,
        ),
        (
            "heun flow (σ̃ grid)",
            &flow,
            TimerKind::edm(),
            SamplerKind::Heun,
            32,
        ),
        (
            "euler flow (uniform t from t = 1)",
            &flow,
            TimerKind::uniform_time(),
            SamplerKind::Euler,
            100,
        ),
        (
            "heun ve",
            &ve,
            TimerKind::ve_geometric(),
            SamplerKind::Heun,
            32,
        ),
    ];
    for (name, p, timer, kind, steps) in cases {
        let (x, _) = run(p, &timer, kind, steps, &mix, 2500, 3);
        assert_ok(name, &check(&x, &mix, SMALL));
    }
}

/// The checks can fail: collapsed samples, too few steps, and a wrong model are all caught.
#[test]
fn checks_reject_wrong_samples() {
    let mix = mixture_2d();
    let n = 4000;
    let exact = mix.sample_rows(n, 0.0, 5, 0);
    assert!(
        check(&exact, &mix, Bias::default()).failures.is_empty(),
        "exact samples must pass"
    );
    // Collapsed onto the component means (what an MMD with a loose bandwidth lets through).
    let cls = mix.component_of(exact.view()).unwrap();
    let collapsed = Array2::from_shape_fn((n, 2), |(i, j)| {
        mix.means()[[cls[i], j]] + 0.05 * exact[[i, j]]
    });
    assert!(!check(&collapsed, &mix, SMALL).failures.is_empty());
    // Euler with 4 steps is visibly biased.
    let (x, _) = run(&edm(), &edm_timer(), SamplerKind::Euler, 4, &mix, n, 1);
    assert!(!check(&x, &mix, SMALL).failures.is_empty());
    // Covariances inflated by 30 %.
    let wide =
        GaussianMixture::new(mix.weights().clone(), mix.means().clone(), mix.covs() * 1.3).unwrap();
    let x = wide.sample_rows(n, 0.0, 6, 0);
    assert!(!check(&x, &mix, SMALL).failures.is_empty());
}

/// Churn (Karras et al. 2022, Alg. 2) on every sampler it suits: Euler and DPM-Solver++(2S)
/// with churn sample the exact mixture; Heun with churn is exactly EDM's stochastic sampler;
/// churn changes the samples (it is applied), S_churn = 0 changes nothing, and samplers it
/// does not suit reject it by name.
#[test]
fn churn_with_every_sampler_it_suits() {
    use tweedie_samplers::Churn;
    let churn = Churn {
        s_churn: 40.0,
        s_min: 0.05,
        s_max: 50.0,
        s_noise: 1.0,
    };
    let mix = mixture_2d();
    let p = edm();
    let go = |kind: SamplerKind, steps: usize, churn: Option<Churn>, n: usize| {
        let grid = edm_timer().grid(&p, steps).unwrap();
        let mut s = Sampler::new(&p, grid, kind, &mix).unwrap().seed(4);
        if let Some(c) = churn {
            s = s.churn(c);
        }
        s.run(Init::Exact(Array2::<f64>::zeros((n, 2))), None)
    };
    for (name, kind, steps, nfe) in [
        ("euler + churn", SamplerKind::Euler, 256, 256),
        ("dpmpp_2s + churn", SamplerKind::DpmSolverPp2s, 40, 79),
        ("heun + churn", SamplerKind::Heun, 40, 79),
    ] {
        let out = go(kind.clone(), steps, Some(churn), 4000).unwrap();
        assert_eq!(out.nfe, nfe, "{name} NFE");
        assert_ok(name, &check(&out.samples, &mix, SMALL));
        let plain = go(kind.clone(), steps, None, 50).unwrap().samples;
        let churned = go(kind.clone(), steps, Some(churn), 50).unwrap().samples;
        assert!(plain != churned, "{name}: churn left the samples unchanged");
        let none = Churn {
            s_churn: 0.0,
            ..churn
        };
        assert_eq!(go(kind, steps, Some(none), 50).unwrap().samples, plain);
    }
    let edm_stochastic = SamplerKind::EdmStochastic {
        s_churn: churn.s_churn,
        s_min: churn.s_min,
        s_max: churn.s_max,
        s_noise: churn.s_noise,
    };
    assert_eq!(
        go(SamplerKind::Heun, 40, Some(churn), 50).unwrap().samples,
        go(edm_stochastic.clone(), 40, None, 50).unwrap().samples
    );
    for kind in [
        SamplerKind::Ddim { eta: 0.0 },
        SamplerKind::DpmSolverPp2m,
        SamplerKind::Deis3,
        edm_stochastic,
    ] {
        let e = go(kind.clone(), 18, Some(churn), 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("churn") && e.contains(kind.name()), "{e}");
    }
    let bad = Churn {
        s_noise: -1.0,
        ..churn
    };
    let e = go(SamplerKind::Euler, 18, Some(bad), 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s_noise"), "{e}");
}
mixture_test!(
    dpmpp_3m_sde_2d_64d,
    SamplerKind::DpmSolverPp3mSde { eta: 1.0 },
    48,
    48
);
// Extrapolating D in λ through three points overshoots on the ρ = 7 grid's large early steps:
// at 18 steps the 2-D means are off by 6 standard errors (UniPC's corrector, same predictor,
// passes at 18), at 32 steps every check passes.
mixture_test!(dpmpp_3m_2d_64d, SamplerKind::DpmSolverPp3m, 32, 32);
mixture_test!(
    unipc_2d_64d,
    SamplerKind::UniPc {
        order: 3,
        variant: tweedie_core::multistep::UniPcVariant::Bh2,
        corrector: true
    },
    18,
    18
);
mixture_test!(lms_2d_64d, SamplerKind::Lms { order: 4 }, 18, 18);
mixture_test!(ipndm_2d_64d, SamplerKind::Ipndm { order: 4 }, 24, 24);
// The two low-NFE solvers (tests/low_nfe.rs has their exact-step and order tests).
mixture_test!(
    deis_logrho_2d_64d,
    SamplerKind::DeisLogRho { order: 3 },
    18,
    18
);
mixture_test!(
    dpmpp_3m_damped_2d_64d,
    SamplerKind::DpmSolverPp3mDamped,
    24,
    24
);
