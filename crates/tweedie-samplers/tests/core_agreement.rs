//! The samplers' batched mixture model agrees with core's reference `GaussianMixture`:
//! denoiser, posterior covariance (Tweedie: σ̃²·J) and the exact posterior given y = A·x₀ + n.

use ndarray::{array, Array2};
use tweedie_core::mixture::preset;
use tweedie_core::process::VpLinear;
use tweedie_core::rng::normal_rows;
use tweedie_core::Process;
use tweedie_samplers::MixtureModel;

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

#[test]
fn batched_mixture_matches_core() {
    let vp = VpLinear {
        beta_min: 0.1,
        beta_d: 19.9,
        eps_t: 1e-3,
    };
    for name in ["gmm2d", "gmm64d"] {
        let g = preset(name).unwrap();
        let m = MixtureModel::try_from(&g).unwrap();
        let d = g.dim();
        for t in [0.05, 0.3, 0.8] {
            let (a, s) = (vp.alpha(t), vp.sigma(t));
            let x_t = g.sample(40, 3) * a + normal_rows(4, 0, 40, 0, d) * s;
            let core = g.denoiser(x_t.view(), &vp, t).unwrap();
            let mine = m.denoise_rows(&(&x_t / a), s / a);
            assert!(
                max_diff(&core, &mine) < 1e-10,
                "{name} t={t}: {}",
                max_diff(&core, &mine)
            );
            let cov = g.posterior_cov(x_t.view(), &vp, t).unwrap();
            let row = (&x_t.row(0) / a).to_owned();
            let c = m.posterior_cov_row(&row, s / a);
            let cc = cov.index_axis(ndarray::Axis(0), 0).to_owned();
            assert!(
                max_diff(&cc, &c) < 1e-10,
                "{name} t={t} cov: {}",
                max_diff(&cc, &c)
            );
        }
        let a = normal_rows(9, 0, 2, 0, d);
        let y = array![0.3, -0.4];
        let core = g
            .posterior_given_measurement(a.view(), y.view(), (Array2::<f64>::eye(2) * 0.04).view())
            .unwrap();
        let mine = m.posterior(&a, &y, 0.2).unwrap();
        for k in 0..g.n_components() {
            assert!((core.weights()[k] - mine.weights()[k]).abs() < 1e-10);
            assert!((&core.means().row(k) - &mine.means().row(k))
                .iter()
                .all(|v| v.abs() < 1e-10));
            let ck = core.covs().index_axis(ndarray::Axis(0), k).to_owned();
            assert!(max_diff(&ck, &mine.covs()[k]) < 1e-10);
        }
    }
}
