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
