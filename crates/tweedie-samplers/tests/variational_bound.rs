//! The variational bound (`tweedie_samplers::variational_bound`) against exact answers:
//! hand-computed terms on a 3-level grid, and the identity E_{x₀}[L(x₀) + log q(x₀)] =
//! KL(q(x_{u_0}) ‖ N(0, I)) of a chain whose reverse steps are exact (Gaussian data, exact
//! denoiser and exact reverse-step variance through the learned v).

use std::f64::consts::{LN_2, TAU};

use ndarray::Array2;
use tweedie_core::likelihood::{log_normal_interval, Dequantizer};
use tweedie_core::process::{iddpm_clipped_log_beta_tilde, iddpm_u_grid, DdpmStep};
use tweedie_samplers::variational_bound::{Decoder, VariationalBound};
use tweedie_samplers::{Capabilities, LearnedVariance, Model};

/// A model given by closures D(x̃; σ̃) and v(σ̃) (v constant over elements; `None`: no
/// learned variance).
struct Closures<D, V> {
    den: D,
    v: Option<V>,
}

impl<D, V> Model<Array2<f64>> for Closures<D, V>
where
    D: Fn(&Array2<f64>, f64) -> Array2<f64> + Send + Sync,
    V: Fn(f64) -> f64 + Send + Sync,
{
    fn denoise(&self, x: &Array2<f64>, sigma: f64) -> tweedie_samplers::Result<Array2<f64>> {
        Ok((self.den)(x, sigma))
    }
    fn capabilities(&self) -> Capabilities<'_, Array2<f64>> {
        Capabilities {
            learned_variance: self.v.as_ref().map(|_| self as &dyn LearnedVariance<_>),
            ..Capabilities::none()
        }
    }
}

impl<D, V> LearnedVariance<Array2<f64>> for Closures<D, V>
where
    D: Fn(&Array2<f64>, f64) -> Array2<f64> + Send + Sync,
    V: Fn(f64) -> f64 + Send + Sync,
{
    fn denoise_variance(
        &self,
        x: &Array2<f64>,
        sigma: f64,
    ) -> tweedie_samplers::Result<(Array2<f64>, Option<Array2<f64>>)> {
        let v = self.v.as_ref().map(|v| x.mapv(|_| v(sigma)));
        Ok(((self.den)(x, sigma), v))
    }
}

fn bound(grid: Vec<f64>, decoder: Decoder) -> VariationalBound {
    VariationalBound {
        grid,
        decoder,
        seed: 3,
        first_index: 0,
    }
}

/// Grid u = (2, ½, 0): ᾱ = (1/5, 4/5, 1). Step 0 (VP α_t² = 0.2, α_s² = 0.8): β = 0.8 − ¼·0.2 =
/// 0.75, β̃ = 0.2·0.75/0.8 = 0.1875, c_x0 = √0.8·0.75/0.8 (c_x0² = 0.703125). Step 1 (to 0):
/// β = 0.2, β̃ = 0 (clipped to 0.1875), c_x0 = 1, c_xt = 0. A model whose D = x₀ + δ(σ̃)
/// ignores x̃ makes every term independent of the draws: with v = ½ the model's variance is
/// √(β·β̃) and the terms are closed forms.
#[test]
fn hand_computed_terms_on_a_three_level_grid() {
    let x0 = Array2::from_shape_vec((2, 2), vec![0.3, -0.6, 0.0, 1.0]).unwrap();
    let delta = |s: f64| if s == 2.0 { 0.1 } else { 0.05 };
    let data = x0.clone();
    let model = Closures {
        den: move |_: &Array2<f64>, s: f64| data.mapv(|x| x + delta(s)),
        v: Some(|_: f64| 0.5),
    };
    let prior = |x: f64| 0.5 * (-(0.8f64.ln()) - 1.0 + 0.8 + 0.2 * x * x);
    // KL(N(μ̃, β̃) ‖ N(μ̃ + c_x0·δ, 0.375)) = ½(ln 2 − 1 + ½ + 0.703125·δ²/0.375).
    let kl0 = 0.5 * (LN_2 - 0.5 + 0.703125 * 0.01 / 0.375);
    let log_var_dec = 0.5 * (0.1875f64 * 0.2).ln();
    let nll = 0.5 * (TAU.ln() + log_var_dec + 0.0025 / log_var_dec.exp());

    let t = bound(vec![2.0, 0.5, 0.0], Decoder::Continuous)
        .run(&model, &x0)
        .unwrap();
    assert_eq!(t.nfe, 2);
    for (i, row) in x0.rows().into_iter().enumerate() {
        let want_prior: f64 = row.iter().map(|&x| prior(x)).sum();
        assert!(
            (t.prior[i] - want_prior).abs() < 1e-14,
            "{i}: {}",
            t.prior[i]
        );
        assert!(
            (t.diffusion[i] - 2.0 * kl0).abs() < 1e-13,
            "{i}: {}",
            t.diffusion[i]
        );
        assert!(
            (t.decoder[i] - 2.0 * nll).abs() < 1e-13,
            "{i}: {}",
            t.decoder[i]
        );
        assert!((t.total()[i] - (want_prior + 2.0 * kl0 + 2.0 * nll)).abs() < 1e-13);
    }

    // Three levels (c = 1): sample 1 holds levels 1 and 2, bins [−½, ½] and [½, ∞); the
    // decoder is N(x + 0.05, √0.0375) on each bin.
    let q = Dequantizer::new(3).unwrap();
    let e = bound(vec![2.0, 0.5, 0.0], Decoder::Discretized(q))
        .run(&model, &x0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample 0 element 0"),
        "0.3 is no level centre: {e}"
    );
    let levels = x0.slice(ndarray::s![1..2, ..]).to_owned();
    let data = levels.clone();
    let model_levels = Closures {
        den: move |_: &Array2<f64>, s: f64| data.mapv(|x| x + delta(s)),
        v: Some(|_: f64| 0.5),
    };
    let t = bound(vec![2.0, 0.5, 0.0], Decoder::Discretized(q))
        .run(&model_levels, &levels)
        .unwrap();
    let sd = (0.5 * log_var_dec).exp();
    let want = -log_normal_interval((-0.5 - 0.05) / sd, (0.5 - 0.05) / sd)
        - log_normal_interval((0.5 - 1.05) / sd, f64::INFINITY);
    assert!(
        (t.decoder[0] - want).abs() < 1e-13,
        "{} vs {want}",
        t.decoder[0]
    );
    assert!((t.diffusion[0] - 2.0 * kl0).abs() < 1e-13);
}

/// Gaussian data N(0, s²I): with the exact denoiser D = s²/(s² + σ̃²)·x̃ and v set so that the
/// model's variance is the exact Var[x_s | x_t] = β̃ + c_x0²·s²σ̃²/(s² + σ̃²), every reverse
/// step is exact, so E_{x₀}[L(x₀)] = H(q₀) + KL(q(x_{u_0}) ‖ N(0, I)): the mean of
/// L(x₀) + log q(x₀) over points must equal D·½(τ² − 1 − ln τ²), τ² = α²s² + 1 − α², within
/// five standard errors (measured: −0.17 ± 0.094 against 1.5e-18). With the fixed variance β̃
/// instead the bound is loose: the same mean lies far above it (measured 1.88 ± 0.16).
#[test]
fn exact_reverse_steps_make_the_bound_the_entropy_plus_the_prior_gap() {
    let (s, n, dim) = (0.7f64, 400, 4);
    let grid = iddpm_u_grid(0.001, 0.008, 1000);
    let steps: Vec<DdpmStep> = grid.windows(2).map(|w| DdpmStep::vp(w[0], w[1])).collect();
    let log_bt = iddpm_clipped_log_beta_tilde(&steps);
    let g = grid.clone();
    let v_exact = move |sigma: f64| {
        let j = g.iter().position(|&u| u == sigma).expect("σ̃ on the grid");
        let st = &steps[j];
        let var =
            st.beta_tilde + st.coef_x0.powi(2) * s * s * sigma * sigma / (s * s + sigma * sigma);
        let (a, b) = st.learned_log_variance(log_bt[j]);
        (var.ln() - a) / b
    };
    let den = move |x: &Array2<f64>, sigma: f64| x * (s * s / (s * s + sigma * sigma));
    let x0 = tweedie_core::rng::normal_rows(11, 0, n, 0, dim) * s;
    let log_q: Vec<f64> = x0
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .map(|&x| -0.5 * (x * x / (s * s) + (TAU * s * s).ln()))
                .sum()
        })
        .collect();
    let a2 = DdpmStep::vp_alpha(grid[0]).powi(2);
    let tau2 = a2 * s * s + 1.0 - a2;
    let gap = dim as f64 * 0.5 * (tau2 - 1.0 - tau2.ln());

    let mean_and_se = |l: Vec<f64>| {
        let d: Vec<f64> = l.iter().zip(&log_q).map(|(l, q)| l + q).collect();
        let m = d.iter().sum::<f64>() / n as f64;
        let var = d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        (m, (var / n as f64).sqrt())
    };
    let exact = Closures {
        den,
        v: Some(v_exact),
    };
    let t = bound(grid.clone(), Decoder::Continuous)
        .run(&exact, &x0)
        .unwrap();
    assert_eq!(t.nfe, 1000);
    let (m, se) = mean_and_se(t.total());
    assert!(
        (m - gap).abs() < 5.0 * se,
        "mean L + log q = {m} ± {se}, expected {gap}"
    );

    let fixed = Closures {
        den,
        v: None::<fn(f64) -> f64>,
    };
    let t = bound(grid, Decoder::Continuous).run(&fixed, &x0).unwrap();
    let (m_fixed, se_fixed) = mean_and_se(t.total());
    assert!(
        m_fixed - gap > 5.0 * (se + se_fixed),
        "fixed β̃: {m_fixed} ± {se_fixed} vs {gap}"
    );
}

/// The exact denoiser of N(0, 0.25·I) with a learned variance v(σ̃) that varies with σ̃.
fn gaussian_prior_with_variance() -> impl Model<Array2<f64>> {
    Closures {
        den: |x: &Array2<f64>, sigma: f64| x * (0.25 / (0.25 + sigma * sigma)),
        v: Some(|sigma: f64| 0.3 + 0.01 * sigma.min(10.0)),
    }
}

/// Row i's terms depend on (seed, first_index + i) only, not on the batch split.
#[test]
fn terms_do_not_depend_on_the_batch_split() {
    let grid = iddpm_u_grid(0.001, 0.008, 50);
    let model = gaussian_prior_with_variance();
    let x0 = tweedie_core::rng::normal_rows(5, 0, 6, 0, 3) * 0.5;
    let whole = bound(grid.clone(), Decoder::Continuous)
        .run(&model, &x0)
        .unwrap()
        .total();
    let mut b = bound(grid, Decoder::Continuous);
    b.first_index = 4;
    let tail = b
        .run(&model, &x0.slice(ndarray::s![4.., ..]).to_owned())
        .unwrap()
        .total();
    for k in 0..2 {
        assert!((whole[4 + k] - tail[k]).abs() < 1e-12, "{k}");
    }
}

/// The progress hook sees every chain step once, in order, and leaves the terms bit for bit.
#[test]
fn progress_hook_counts_chain_steps_without_changing_the_terms() {
    let grid = iddpm_u_grid(0.001, 0.008, 12);
    let model = gaussian_prior_with_variance();
    let x0 = tweedie_core::rng::normal_rows(5, 0, 3, 0, 2) * 0.5;
    let b = bound(grid, Decoder::Continuous);
    let plain = b.run(&model, &x0).unwrap().total();
    let mut seen = Vec::new();
    let hooked = b
        .run_with_progress(&model, &x0, &mut |done| seen.push(done))
        .unwrap()
        .total();
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    assert_eq!(plain, hooked);
}

#[test]
fn bad_grids_and_data_are_named() {
    let model = Closures {
        den: |x: &Array2<f64>, _s: f64| x.clone(),
        v: None::<fn(f64) -> f64>,
    };
    let x0 = Array2::from_elem((1, 2), 0.0);
    for grid in [
        vec![1.0, 0.5],
        vec![0.0],
        vec![1.0, 2.0, 0.0],
        vec![f64::NAN, 0.0],
    ] {
        let e = bound(grid.clone(), Decoder::Continuous)
            .run(&model, &x0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("grid") && e.contains("u_K = 0"), "{grid:?}: {e}");
    }
    let e = bound(vec![1.0, 0.0], Decoder::Continuous)
        .run(&model, &Array2::from_elem((1, 2), f64::NAN))
        .unwrap_err()
        .to_string();
    assert!(e.contains("finite"), "{e}");
    let q = Dequantizer::new(17).unwrap();
    let e = bound(vec![1.0, 0.0], Decoder::Discretized(q))
        .run(&model, &Array2::from_elem((1, 2), 0.01))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample 0 element 0") && e.contains("level centre"),
        "{e}"
    );
}
