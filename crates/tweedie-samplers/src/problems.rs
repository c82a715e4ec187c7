//! The Gaussian-mixture problems that the samplers are measured on, and the score of samples
//! against an exact mixture: the priors of the sampler tests (`tests/`) and of the bias tables in
//! docs/conditional.md (`cargo run --profile dev -p tweedie-samplers --example cond_bias`). Their
//! components are far apart (misassignment probability < 1e-9), so per-component statistics of
//! correctly distributed samples have the textbook standard errors.

use ndarray::{array, Array1, Array2, Array3, Axis};
use tweedie_core::mixture::GaussianMixture;
use tweedie_core::rng::{normal_rows, normal_vec};

use crate::ops::{measure, ForwardModel, Mask, MatrixOp};

/// 2-D, three components, anisotropic covariances, weights 0.2 / 0.3 / 0.5; means ≥ 9 std apart.
pub fn mixture_2d() -> GaussianMixture {
    GaussianMixture::new(
        array![0.2, 0.3, 0.5],
        array![[-3.0, 0.0], [3.0, 1.5], [0.5, -3.5]],
        array![
            [[0.30, 0.10], [0.10, 0.15]],
            [[0.10, -0.05], [-0.05, 0.25]],
            [[0.20, 0.0], [0.0, 0.08]],
        ],
    )
    .expect("the 2-D problem's constants form a valid mixture")
}

/// 64-D, three components with random SPD covariances (eigenvalues evenly spread over
/// [0.05, 0.35], seeds 100–102) and means of norm ≈ 4 in random directions (seed 200; pairwise
/// separation ≫ 10 std), weights 0.25 / 0.35 / 0.4.
pub fn mixture_64d() -> GaussianMixture {
    let d = 64;
    let mut covs = Array3::zeros((3, d, d));
    for (k, mut c) in covs.outer_iter_mut().enumerate() {
        c.assign(&random_spd(d, 0.05, 0.35, 100 + k as u64));
    }
    let means = normal_rows(200, 0, 3, 0, d) * 0.5;
    GaussianMixture::new(array![0.25, 0.35, 0.4], means, covs)
        .expect("the 64-D problem's covariances are positive definite")
}

/// One inverse problem of the conditional bias tables: y = A·x₀ + n on a mixture prior.
#[derive(Debug)]
pub struct CondProblem {
    /// The table's heading.
    pub title: &'static str,
    pub prior: GaussianMixture,
    pub op: Box<dyn ForwardModel>,
    pub y: Array1<f64>,
    /// Samples drawn per method.
    pub n: usize,
    /// Whether replacement (inpainting only) applies.
    pub inpainting: bool,
}

/// The four problems of docs/conditional.md (`cond_bias` and `bench-conditional`): on
/// [`mixture_2d`] a one-row A with two posterior modes and inpainting x₁; on [`mixture_64d`] 16
/// random projections (entries N(0, 1/16), seed 31) and every 4th coordinate, both measuring the
/// prior draw of seed 5, with noise (stream 99) of seed 5 (projections) and 6 (mask).
pub fn conditional_problems() -> Vec<CondProblem> {
    let m2 = mixture_2d();
    let m64 = mixture_64d();
    let proj = MatrixOp::new(normal_rows(31, 0, 16, 0, 64) * 0.25, 0.2)
        .expect("the projection problem's A is finite");
    let x0 = m64.sample_rows(1, 0.0, 5, 0).row(0).to_owned();
    let y_proj = measure(&proj, &x0, &Array1::from(normal_vec(5, 0, 99, 16)))
        .expect("A·x₀ + n of matching lengths");
    let keep: Vec<bool> = (0..64).map(|i| i % 4 == 0).collect();
    let mask = Mask::new(&keep, 0.05).expect("a mask of 64 with 16 kept");
    let y_mask = measure(&mask, &x0, &Array1::from(normal_vec(6, 0, 99, 16)))
        .expect("M·x₀ + n of matching lengths");
    vec![
        CondProblem {
            title: "2-D mixture, y = 0.6·x₁ + 0.8·x₂ + n, s = 0.5, y = −2.1 (two posterior modes)",
            prior: m2.clone(),
            op: Box::new(MatrixOp::new(array![[0.6, 0.8]], 0.5).expect("a finite 1×2 A")),
            y: array![-2.1],
            n: 4000,
            inpainting: false,
        },
        CondProblem {
            title: "2-D mixture, inpainting x₁ (s = 0.1), y = 0.0",
            prior: m2,
            op: Box::new(Mask::new(&[true, false], 0.1).expect("a mask of 2 with 1 kept")),
            y: array![0.0],
            n: 4000,
            inpainting: true,
        },
        CondProblem {
            title: "64-D mixture, 16 random projections (s = 0.2)",
            prior: m64.clone(),
            op: Box::new(proj),
            y: y_proj,
            n: 1000,
            inpainting: false,
        },
        CondProblem {
            title: "64-D mixture, inpainting every 4th coordinate (s = 0.05)",
            prior: m64,
            op: Box::new(mask),
            y: y_mask,
            n: 1000,
            inpainting: true,
        },
    ]
}

/// Q·diag(λ)·Qᵀ with λ evenly spread over [lo, hi] and Q the Gram–Schmidt orthonormalisation
/// of the standard-normal matrix keyed by `seed` (symmetrised against round-off).
pub fn random_spd(d: usize, lo: f64, hi: f64, seed: u64) -> Array2<f64> {
    let g = normal_rows(seed, 0, d, 0, d);
    let mut q = Array2::<f64>::zeros((d, d));
    for j in 0..d {
        let mut v = g.column(j).to_owned();
        for i in 0..j {
            let p = v.dot(&q.column(i));
            v.scaled_add(-p, &q.column(i));
        }
        let nv = v.dot(&v).sqrt();
        q.column_mut(j).assign(&(v / nv));
    }
    let lam = Array1::from_shape_fn(d, |j| lo + (hi - lo) * j as f64 / (d.max(2) - 1) as f64);
    let c = q.dot(&Array2::from_diag(&lam)).dot(&q.t());
    (&c + &c.t()) * 0.5
}

/// How far samples are from an exact (posterior) mixture, each sample assigned to its most
/// likely component; the columns of docs/conditional.md.
#[derive(Debug, Clone, PartialEq)]
pub struct PosteriorErrors {
    /// max_k |ŵ_k − w_k| over all components.
    pub weight: f64,
    /// max_k ‖μ̂_k − μ_k‖ / √(tr Σ_k / D), in posterior standard deviations.
    pub mean: f64,
    /// max_k ‖Σ̂_k − Σ_k‖_F / ‖Σ_k‖_F.
    pub cov: f64,
    /// The sample weights ŵ_k of every component.
    pub weights: Vec<f64>,
}

/// [`PosteriorErrors`] of the rows of `x` [n, D] against `exact`; the mean and covariance
/// errors skip components of weight < 5 % or with fewer than 20 samples. Rows of the wrong
/// width score as infinitely wrong.
pub fn posterior_errors(x: &Array2<f64>, exact: &GaussianMixture) -> PosteriorErrors {
    let Ok(cls) = exact.component_of(x.view()) else {
        return PosteriorErrors {
            weight: f64::INFINITY,
            mean: f64::INFINITY,
            cov: f64::INFINITY,
            weights: vec![],
        };
    };
    let n = x.nrows() as f64;
    let d = exact.dim() as f64;
    let w = exact.weights();
    let mut e = PosteriorErrors {
        weight: 0.0,
        mean: 0.0,
        cov: 0.0,
        weights: vec![],
    };
    for k in 0..exact.n_components() {
        let rows: Vec<usize> = (0..x.nrows()).filter(|i| cls[*i] == k).collect();
        let wk = rows.len() as f64 / n;
        e.weights.push(wk);
        e.weight = e.weight.max((wk - w[k]).abs());
        if w[k] < 0.05 || rows.len() < 20 {
            continue;
        }
        let xs = x.select(Axis(0), &rows);
        let Some(m) = xs.mean_axis(Axis(0)) else {
            continue;
        };
        let p = exact.cov(k);
        let dm = &m - &exact.means().row(k);
        e.mean = e.mean.max(dm.dot(&dm).sqrt() / (p.diag().sum() / d).sqrt());
        let c = &xs - &m;
        let cov = c.t().dot(&c) / (rows.len() as f64 - 1.0);
        let fro = |a: &Array2<f64>| a.mapv(|v| v * v).sum().sqrt();
        e.cov = e.cov.max(fro(&(&cov - &p)) / fro(&p.to_owned()));
    }
    e
}
