#!/usr/bin/env python3
"""How the bench's tuned grids were picked (TUNED_KARRAS, TUNED_LOGSNR_SIGMA_MIN in
crates/tweedie-bench/src/bench/cases.rs), on mixtures that are NOT the benchmark's.

Issue #13 asks that any numerically tuned schedule be tuned on a problem other than the
benchmark mixtures (gmm2d, gmm64d). This script scores logrho-DEIS of order 3 (tweedie's
`deis_logrho`: epsilon interpolated in log sigma, integrated exactly over sigma, the last step
to sigma = 0 included) on two other mixtures: TUNE2D (2-D, 3 components) and TUNE16D (16-D,
4 random low-rank-plus-diagonal components), from latents at sigma_max = 80, against an RK4
reference solve, over Karras grids rho in {3, 5, 7, 10}, log-SNR and polyexponential grids,
each ending at sigma_min in {0.002, 0.01, 0.03, 0.1} then 0, at NFE 5, 10 and 20, and prints
the best grids per NFE for each mixture.

    .venv/bin/python crates/tweedie-bench/scripts/tune_grids.py      # numpy only; ~2 min
"""

import math

import numpy as np

SMAX = 80.0


class Mixture:
    """Exact denoiser E[x0 | x0 + sigma*eps] of a Gaussian mixture (numpy, float64)."""

    def __init__(self, weights, means, covs):
        self.logw = np.log(np.asarray(weights, float))
        self.mu = np.asarray(means, float)
        self.lam, self.u = np.linalg.eigh(np.asarray(covs, float))

    def denoise(self, x, sigma):
        y = np.einsum("kde,nkd->nke", self.u, x[:, None, :] - self.mu[None])
        var = self.lam[None] + sigma * sigma
        logits = self.logw[None] - 0.5 * ((y * y / var).sum(-1) + np.log(var).sum(-1))
        r = np.exp(logits - logits.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        post = self.mu[None] + np.einsum("kde,nke->nkd", self.u, y * (self.lam[None] / var))
        return (r[:, :, None] * post).sum(1)

    def draw(self, n, rng):
        w = np.exp(self.logw)
        k = rng.choice(len(w), n, p=w / w.sum())
        z = rng.standard_normal((n, self.mu.shape[1]))
        return self.mu[k] + np.einsum("nde,ne->nd", self.u[k], z * np.sqrt(self.lam[k]))


def tune2d():
    return Mixture([0.5, 0.3, 0.2], [[-1.5, 1.0], [1.0, -1.0], [3.0, 2.0]],
                   [[[0.15, 0.05], [0.05, 0.1]], [[0.6, 0.2], [0.2, 0.3]], [[0.03, 0.0], [0.0, 0.2]]])


def tune16d():
    rng = np.random.default_rng(1234)
    means, covs = [], []
    for c in range(4):
        means.append(0.7 * rng.standard_normal(16))
        b = rng.standard_normal((16, 3))
        covs.append(b @ b.T * 0.05 + np.eye(16) * (0.03 + 0.02 * c))
    return Mixture([0.35, 0.3, 0.2, 0.15], means, covs)


def reference(m, x, steps, smin=0.002):
    """RK4 on dx/du = x - D(x; e^u), u = log sigma, then D(x; sigma_min) (as the bench)."""
    u0, h = math.log(SMAX), (math.log(smin) - math.log(SMAX)) / steps
    f = lambda x, u: x - m.denoise(x, math.exp(u))  # noqa: E731
    for i in range(steps):
        u = u0 + i * h
        k1 = f(x, u)
        k2 = f(x + 0.5 * h * k1, u + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, u + 0.5 * h)
        k4 = f(x + h * k3, u + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return m.denoise(x, smin)


def exp_poly_integral(coeffs, h):
    """int_{-h}^0 e^v sum_n c_n v^n dv, h may be inf."""
    total = 0.0
    for n, c in enumerate(coeffs):
        # I_n = -e^{-h}(-h)^n - n I_{n-1}, I_0 = 1 - e^{-h}
        e = 0.0 if math.isinf(h) else math.exp(-h)
        i = 1.0 - e
        for k in range(1, n + 1):
            i = (0.0 if e == 0.0 else -e * (-h) ** k) - k * i
        total += c * i
    return total


def deis_logrho(m, x, sigmas, order=3):
    hist = []
    for s, s1 in zip(sigmas[:-1], sigmas[1:]):
        hist.insert(0, (s, (x - m.denoise(x, s)) / s))
        hist = hist[:order]
        nodes = [math.log(sj / s) for sj, _ in hist]
        h = math.inf if s1 == 0 else math.log(s / s1)
        for j, (_, eps) in enumerate(hist):
            poly, den = np.array([1.0]), 1.0
            for k, v in enumerate(nodes):
                if k != j:
                    poly, den = np.convolve(poly, [-v, 1.0]), den * (nodes[j] - v)
            x = x - s * exp_poly_integral(poly / den, h) * eps
    return x


def grids(n):
    for smin in (0.002, 0.01, 0.03, 0.1):
        for rho in (3, 5, 7, 10):
            r = np.linspace(0, 1, n)
            yield f"karras rho={rho} smin={smin}", list((SMAX ** (1 / rho) + r * (smin ** (1 / rho) - SMAX ** (1 / rho))) ** rho) + [0.0]
        yield f"logsnr smin={smin}", list(np.exp(np.linspace(math.log(SMAX), math.log(smin), n))) + [0.0]
        for rho in (1.5, 2.0):
            r = np.linspace(1, 0, n) ** rho
            yield f"polyexp rho={rho} smin={smin}", list(np.exp(r * (math.log(SMAX) - math.log(smin)) + math.log(smin))) + [0.0]


def main():
    for name, mixture, n, ref_steps in (("tune2d", tune2d(), 1000, 512), ("tune16d", tune16d(), 200, 256)):
        rng = np.random.default_rng(0)
        xt = mixture.draw(n, rng) + SMAX * rng.standard_normal((n, mixture.mu.shape[1]))
        ref = reference(mixture, xt.copy(), ref_steps)
        for nfe in (5, 10, 20):
            scored = sorted(
                (float(np.median(np.linalg.norm(deis_logrho(mixture, xt.copy(), g) - ref, axis=1))), label)
                for label, g in grids(nfe)
            )
            print(f"{name} NFE {nfe}: " + "; ".join(f"{label}: {e:.2e}" for e, label in scored[:4]), flush=True)


if __name__ == "__main__":
    main()
