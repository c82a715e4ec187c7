//! Classifier guidance against the exact answer: for a Gaussian mixture with its analytic
//! noisy classifier p(c | x̃, σ̃) = w_c·N(x̃; μ_c, Σ_c + σ̃²I) / p_σ̃(x̃), guided at s = 1 the
//! denoiser is the exact class-conditional denoiser E[x₀ | x̃, c] (core's component c), and a
//! sampler run with it is a run of the component's own denoiser. The gradient goes through
//! tch autograd, as for a trained classifier.
#![cfg(feature = "tch")]

use ndarray::{Array2, Array3};
use tch::{Kind, Tensor};
use tweedie_core::process::Edm;
use tweedie_core::space::TchTensor;
use tweedie_core::{Timer, TimerKind};
use tweedie_samplers::problems::mixture_2d;
use tweedie_samplers::tch_state::TchFnClassifier;
use tweedie_samplers::{ClassifierGuided, Init, Model, Sampler, SamplerKind, State};

fn tensor(x: &Array2<f64>) -> Tensor {
    let v: Vec<f64> = x.iter().copied().collect();
    Tensor::from_slice(&v).reshape([x.nrows() as i64, x.ncols() as i64])
}

/// log w_k + log N(x̃; μ_k, Σ_k + σ̃²I) for each component k, as tensors of x̃ [B, d].
fn mixture_logits(
    w: &[f64],
    means: &Array2<f64>,
    covs: &Array3<f64>,
) -> impl Fn(&Tensor, f64) -> Tensor + Send + Sync {
    let (w, means, covs) = (w.to_vec(), means.clone(), covs.clone());
    move |x, sigma| {
        let d = means.ncols() as i64;
        let cols: Vec<Tensor> = (0..w.len())
            .map(|k| {
                let c: Vec<f64> = covs.outer_iter().nth(k).unwrap().iter().copied().collect();
                let a = Tensor::from_slice(&c).reshape([d, d])
                    + Tensor::eye(d, (Kind::Double, x.device())) * (sigma * sigma);
                let mu: Vec<f64> = means.row(k).to_vec();
                let r = x - Tensor::from_slice(&mu).reshape([1, d]);
                let quad = (r.matmul(&a.inverse()) * &r).sum_dim_intlist(1, false, Kind::Double);
                let log_norm = -0.5 * (a.logdet() + (2.0 * std::f64::consts::PI).ln() * d as f64);
                quad * -0.5 + log_norm + w[k].ln()
            })
            .collect();
        Tensor::stack(&cols, 1)
    }
}

fn points() -> Array2<f64> {
    Array2::from_shape_fn((9, 2), |(i, j)| {
        ((i * 7 + j * 3) % 11) as f64 * 0.8 - 4.0 + 0.1 * j as f64
    })
}

#[test]
fn guided_at_scale_one_is_the_exact_class_conditional_denoiser() {
    let mix = mixture_2d();
    let w: Vec<f64> = mix.weights().to_vec();
    let clf = TchFnClassifier {
        logits: mixture_logits(&w, mix.means(), mix.covs()),
        classes: 3,
    };
    let x = TchTensor(tensor(&points()));
    for c in 0..3 {
        let exact = mix.component(c).unwrap();
        let guided = ClassifierGuided::new(&mix, &clf, c, 1.0).unwrap();
        let twice = ClassifierGuided::new(&mix, &clf, c, 2.0).unwrap();
        for sigma in [0.05, 0.5, 2.0, 10.0] {
            let want = Model::<TchTensor>::denoise(&exact, &x, sigma)
                .unwrap()
                .to_rows();
            let d = Model::<TchTensor>::denoise(&mix, &x, sigma)
                .unwrap()
                .to_rows();
            let got = guided.denoise(&x, sigma).unwrap().to_rows();
            let err = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-9, "class {c}, σ̃ {sigma}: |D_1 − D_c| = {err:e}");
            // Linear in s: D_2 = D + 2·(D_c − D).
            let got2 = twice.denoise(&x, sigma).unwrap().to_rows();
            let want2 = &d + &((&want - &d) * 2.0);
            let err2 = (&got2 - &want2).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err2 < 1e-9, "class {c}, σ̃ {sigma}: |D_2 − …| = {err2:e}");
        }
    }
}

#[test]
fn a_sampler_run_with_guidance_at_scale_one_is_a_run_of_the_component() {
    let mix = mixture_2d();
    let w: Vec<f64> = mix.weights().to_vec();
    let clf = TchFnClassifier {
        logits: mixture_logits(&w, mix.means(), mix.covs()),
        classes: 3,
    };
    let edm = Edm {
        sigma_min: 0.002,
        sigma_max: 80.0,
    };
    let grid = TimerKind::edm().grid(&edm, 24).unwrap();
    let c = 2;
    let exact = mix.component(c).unwrap();
    let guided = ClassifierGuided::new(&mix, &clf, c, 1.0).unwrap();
    let run = |m: &dyn Model<TchTensor>| {
        Sampler::new(&edm, grid.clone(), SamplerKind::Heun, m)
            .unwrap()
            .seed(5)
            .run(
                Init::Noise(TchTensor(Tensor::zeros(
                    [64, 2],
                    (Kind::Double, tch::Device::Cpu),
                ))),
                None,
            )
            .unwrap()
            .samples
            .to_rows()
    };
    let (a, b) = (run(&guided), run(&exact));
    let err = (&a - &b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(err < 1e-8, "guided vs component samples differ by {err:e}");
    // And the samples are the component's: every one nearest to μ_c in the component's metric.
    assert!(mix.component_of(a.view()).unwrap().iter().all(|&k| k == c));
}
