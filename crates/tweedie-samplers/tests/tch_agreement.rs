//! Same seed, same sampler: tch-CPU-f64 agrees with ndarray-f64 to 1e-10; tch-f32 to 1e-4.
#![cfg(feature = "tch")]

mod common;

use common::mixture_2d;
use ndarray::Array2;
use tch::{Kind, Tensor};
use tweedie_core::process::{Edm, VpLinear};
use tweedie_core::space::TchTensor;
use tweedie_core::{Process, Timer, TimerKind};
use tweedie_samplers::{Init, ModelExt, Sampler, SamplerKind, State};

fn tensor(x: &Array2<f64>, kind: Kind) -> TchTensor {
    let v: Vec<f64> = x.iter().copied().collect();
    TchTensor(
        Tensor::from_slice(&v)
            .reshape([x.nrows() as i64, x.ncols() as i64])
            .to_kind(kind),
    )
}

#[test]
fn tch_matches_ndarray() {
    let mix = mixture_2d();
    let vp = VpLinear {
        beta_min: 0.1,
        beta_d: 19.9,
        eps_t: 1e-3,
    };
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let cases: Vec<(&dyn Process, SamplerKind)> = vec![
        (&edm, SamplerKind::Heun),
        (
            &edm,
            SamplerKind::EdmStochastic {
                s_churn: 40.0,
                s_min: 0.0,
                s_max: f64::INFINITY,
                s_noise: 1.003,
            },
        ),
        (&edm, SamplerKind::DpmSolverPp2mSde { eta: 1.0 }),
        (&edm, SamplerKind::Deis3),
        (&vp, SamplerKind::EulerMaruyama),
        (&vp, SamplerKind::Ddim { eta: 0.7 }),
    ];
    for (p, kind) in cases {
        let grid = TimerKind::edm().grid(p, 16).unwrap();
        let nd = Sampler::new(p, grid.clone(), kind.clone(), &mix)
            .unwrap()
            .seed(5)
            .run(Init::Noise(Array2::<f64>::zeros((64, 2))), None)
            .unwrap()
            .samples;
        for (k, tol) in [(Kind::Double, 1e-10), (Kind::Float, 1e-4)] {
            let like = tensor(&Array2::zeros((64, 2)), k);
            let t = Sampler::new(p, grid.clone(), kind.clone(), &mix)
                .unwrap()
                .seed(5)
                .run(Init::Noise(like), None)
                .unwrap()
                .samples
                .to_rows();
            let diff = (&t - &nd).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            eprintln!(
                "{:>16} {:?}: max |tch − ndarray| = {diff:.3e}",
                kind.name(),
                k
            );
            assert!(diff < tol, "{kind:?} {k:?}: {diff}");
        }
        // Latents given as a tensor are used as given.
        let lat = tensor(&mix.sample_rows(8, 80.0, 1, 0), Kind::Double);
        let out = Sampler::new(p, grid, kind, &mix)
            .unwrap()
            .run(Init::Latents(lat), None)
            .unwrap();
        assert_eq!(out.samples.batch(), 8);
    }
}

/// Autograd VJP of a tch denoiser: D(x) = tanh(x)·c has Jᵀv = c·(1 − tanh²x)·v.
#[test]
fn tch_fn_model_vjp() {
    use tweedie_samplers::tch_state::TchFnModel;
    use tweedie_samplers::Model;
    let m = TchFnModel {
        f: |x: &Tensor, s: f64| x.tanh() * (1.0 / (1.0 + s)),
    };
    let x = tensor(&mixture_2d().sample_rows(5, 1.0, 2, 0), Kind::Double);
    let v = tensor(&mixture_2d().sample_rows(5, 1.0, 3, 0), Kind::Double);
    let (d, jv) = m.denoise_vjp(&x, 0.5, &v).unwrap();
    let expect: Tensor = (1.0 - x.tanh().square()) * &v.0 * (1.0 / 1.5);
    let diff = (&jv.0 - expect).abs().max().double_value(&[]);
    assert!(diff < 1e-14, "{diff}");
    let d2 = m.denoise(&x, 0.5).unwrap();
    assert_eq!((&d.0 - &d2.0).abs().max().double_value(&[]), 0.0);
}

/// Every operator's tensor form equals its host form (apply and adjoint) to f64 rounding, on
/// images with 2 channels and a non-square grid, both blur boundaries and a radius beyond the
/// image (zero padding), and the rows' fallback through the host for a periodic blur too wide
/// for circular padding.
#[test]
fn tensor_operators_equal_host_operators() {
    use tweedie_samplers::ops::ForwardModel;
    use tweedie_samplers::{Blur, Boundary, Downsample, Mask, MatrixOp, Rows};
    let (c, h, w) = (2usize, 6usize, 8usize);
    let n = c * h * w;
    let keep: Vec<bool> = (0..n).map(|i| (i * 7) % 3 == 0).collect();
    let ops: Vec<(&str, Box<dyn ForwardModel>)> = vec![
        (
            "matrix",
            Box::new(MatrixOp::new(tweedie_core::rng::normal_rows(1, 0, 5, 0, n), 0.1).unwrap()),
        ),
        ("mask", Box::new(Mask::new(&keep, 0.1).unwrap())),
        (
            "downsample",
            Box::new(Downsample::new(c, h, w, 2, 0.1).unwrap()),
        ),
        ("blur", Box::new(Blur::new(c, h, w, 1.1, 2, 0.1).unwrap())),
        (
            "wide blur",
            Box::new(Blur::new(c, h, w, 3.0, 9, 0.1).unwrap()),
        ),
        (
            "periodic blur",
            Box::new(
                Blur::new(c, h, w, 1.1, 3, 0.1)
                    .unwrap()
                    .with_boundary(Boundary::Periodic),
            ),
        ),
        (
            "periodic blur wider than the image (host fallback)",
            Box::new(
                Blur::new(c, h, w, 3.0, 7, 0.1)
                    .unwrap()
                    .with_boundary(Boundary::Periodic),
            ),
        ),
    ];
    for (name, op) in &ops {
        assert_eq!(
            op.tensor_op().is_some(),
            !name.contains("fallback"),
            "{name}"
        );
        let x = tweedie_core::rng::normal_rows(2, 0, 3, 0, n);
        let y = tweedie_core::rng::normal_rows(3, 0, 3, 0, op.out_dim());
        let (xt, yt) = (tensor(&x, Kind::Double), tensor(&y, Kind::Double));
        let ax = op.apply(&x).unwrap();
        let aty = op.adjoint(&y).unwrap();
        let ax_t = Rows::apply(&xt, op.as_ref()).unwrap().to_host();
        let aty_t = Rows::adjoint(&yt, op.as_ref()).unwrap().to_host();
        let e1 = (&ax - &ax_t).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let e2 = (&aty - &aty_t).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(e1 < 1e-13 && e2 < 1e-13, "{name}: apply {e1}, adjoint {e2}");
    }
}

/// DPS, ΠGDM, TMP and replacement on tensor states (operators on the tensor's device) give
/// the ndarray run's samples on the 2-D mixture (the same model on both state types).
#[test]
fn gradient_guidance_and_replacement_on_tensors_match_ndarray() {
    use tweedie_samplers::{CondSampler, Guidance, Mask, MatrixOp};
    let mix = mixture_2d();
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let grid = TimerKind::edm().grid(&edm, 12).unwrap();
    let x0 = mix.sample_rows(16, 80.0, 4, 0);
    let matrix = MatrixOp::new(ndarray::array![[0.6, 0.8]], 0.5).unwrap();
    let mask = Mask::new(&[true, false], 0.1).unwrap();
    for (name, op) in [
        ("dps", &matrix as &dyn tweedie_samplers::ForwardModel),
        ("pigdm", &matrix),
        ("tmp", &matrix),
        ("replacement", &mask),
    ] {
        let y = ndarray::array![-0.7];
        let guidance = Guidance::from_name(name).unwrap();
        let nd = CondSampler::new(
            &edm,
            grid.clone(),
            SamplerKind::Heun,
            &mix,
            op,
            y.clone(),
            guidance.clone(),
        )
        .unwrap()
        .run(Init::Edm(x0.clone().into_dyn()), None)
        .unwrap()
        .samples
        .to_rows();
        let t = CondSampler::new(&edm, grid.clone(), SamplerKind::Heun, &mix, op, y, guidance)
            .unwrap()
            .run(Init::Edm(tensor(&x0, Kind::Double)), None)
            .unwrap()
            .samples
            .to_rows();
        let e = (&nd - &t).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(e < 1e-9, "{name}: tensor and ndarray runs differ by {e}");
    }
}

/// The six posterior samplers with loops of their own (FPS, DiffPIR, DAPS, PnP-DM, EnKG,
/// DPS-GSG) work on the state's rows where they live: on tensor states (operators on the
/// tensor's device) they give the ndarray run's samples, on the 2-D mixture with a one-row
/// matrix and on the 64-D mixture as 8×8 images with a 2× downsample and a periodic blur.
#[test]
fn posterior_samplers_on_tensors_match_ndarray() {
    use tweedie_samplers::problems::mixture_64d;
    use tweedie_samplers::{
        Blur, Boundary, CondSampler, Daps, Diffpir, Downsample, DpsGsg, Enkg, ForwardModel, Fps,
        Guidance, MatrixOp, Pnpdm,
    };
    /// One seeded run from x̃ = `x0` on the EDM process.
    fn run<S: State>(
        grid: &tweedie_core::TimeGrid,
        kind: &SamplerKind,
        prior: &tweedie_samplers::GaussianMixture,
        op: &dyn ForwardModel,
        y: &ndarray::Array1<f64>,
        guidance: &Guidance,
        x0: S,
    ) -> tweedie_samplers::SampleOutput<S> {
        let edm = Edm {
            sigma_min: 0.002,
            sigma_max: 80.0,
        };
        CondSampler::new(
            &edm,
            grid.clone(),
            kind.clone(),
            prior,
            op,
            y.clone(),
            guidance.clone(),
        )
        .unwrap()
        .seed(3)
        .run(Init::Edm(x0), None)
        .unwrap()
    }
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let grid = TimerKind::edm().grid(&edm, 8).unwrap();
    let anc = SamplerKind::from_name("euler_ancestral").unwrap();
    let methods = [
        (
            Guidance::from(Fps {
                particles: 8,
                ..Fps::default()
            }),
            SamplerKind::Heun,
        ),
        (Guidance::from(Diffpir::default()), SamplerKind::Heun),
        (
            Guidance::from(Daps {
                langevin_steps: 20,
                ..Daps::default()
            }),
            SamplerKind::Heun,
        ),
        (
            Guidance::from(Pnpdm {
                iterations: 8,
                prior_steps: 4,
                ..Pnpdm::default()
            }),
            anc,
        ),
        (Guidance::from(Enkg::default()), SamplerKind::Heun),
        (
            Guidance::from(DpsGsg {
                scale: 0.1,
                queries: 16,
                ..DpsGsg::default()
            }),
            SamplerKind::Heun,
        ),
    ];
    let (m2, m64) = (mixture_2d(), mixture_64d());
    let matrix = MatrixOp::new(ndarray::array![[0.6, 0.8]], 0.5).unwrap();
    let down = Downsample::new(1, 8, 8, 2, 0.1).unwrap();
    let blur = Blur::new(1, 8, 8, 0.6, 2, 0.1)
        .unwrap()
        .with_boundary(Boundary::Periodic);
    let problems: [(&str, &tweedie_samplers::GaussianMixture, &dyn ForwardModel); 3] = [
        ("2-D matrix", &m2, &matrix),
        ("64-D downsample", &m64, &down),
        ("64-D periodic blur", &m64, &blur),
    ];
    for (problem, prior, op) in problems {
        assert!(op.tensor_op().is_some(), "{problem}: no tensor form");
        let x0 = prior.sample_rows(16, 80.0, 4, 0);
        let y = op
            .apply(&prior.sample_rows(1, 0.0, 6, 0))
            .unwrap()
            .row(0)
            .to_owned();
        for (guidance, kind) in &methods {
            let nd = run(&grid, kind, prior, op, &y, guidance, x0.clone().into_dyn());
            let t = run(
                &grid,
                kind,
                prior,
                op,
                &y,
                guidance,
                tensor(&x0, Kind::Double),
            );
            let (a, b) = (nd.samples.to_rows(), t.samples.to_rows());
            let e = (&a - &b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            eprintln!(
                "{problem}, {guidance:?}: max |tensor − ndarray| = {e:.2e} (max |x| {scale:.2})"
            );
            assert!(a.iter().all(|v| v.is_finite()), "{problem}, {guidance:?}");
            assert_eq!(nd.nfe, t.nfe, "{problem}, {guidance:?}");
            assert!(
                e < 1e-9 * (1.0 + scale),
                "{problem}, {guidance:?}: tensor and ndarray runs differ by {e}"
            );
        }
    }
}
