//! Analytic Gaussian mixture: the ground truth of every test.

// TODO(core helper): GaussianMixture { weights, means: Array2<f64> [K,D], covs: Array3<f64> [K,D,D] }
//   new(..) -> Result (validates SPD), sample(n, seed) -> Array2, marginal(process,t) -> GaussianMixture of x_t,
//   log_prob(x) / score(x) (batch [N,D]), denoiser(x_t, process, t) = E[x₀|x_t],
//   posterior_cov(x_t, process, t) = Cov[x₀|x_t], responsibilities, component_of(x),
//   posterior_given_measurement(a: &Array2, y: &Array1, noise_cov: &Array2) -> GaussianMixture.
