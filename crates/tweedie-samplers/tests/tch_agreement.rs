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
