#!/usr/bin/env python3
"""diffuse (github.com/jcopo/diffuse, PyPI `diffuse-jax`) on tweedie's conditional-sampling problems.

Driven by `cargo xtask bench-conditional --with-diffuse` (crates/tweedie-bench/src/cond.rs), which
installs the hash-pinned lock requirements/bench-diffuse.txt into a throwaway virtualenv and
runs

    python diffuse_cond.py check       # prints {"diffuse": version, "jax": version} or fails
    python diffuse_cond.py run DIR     # reads DIR/job.json, writes DIR/results.json and endpoints

Each problem of job.json gives a Gaussian mixture prior, a matrix A, the noise std s, y, the
latents x_T (tweedie's own draw from the prior's exact p_T at sigma_max) and the sigma grid. The
exact mixture denoiser D(x; sigma) is handed to diffuse as an "x0" network; diffuse's conditional
denoisers (DPS, FPS, TMP) then run with diffuse's Heun integrator on diffuse's HeunTimer, which with
n_steps = len(grid) - 1 reproduces tweedie's Karras grid point for point (the run stops at
sigma_min: diffuse's timers have no final sigma = 0; HeunTimer gets a `tf`, see run_one).

diffuse's own `EDM` class clips sigma to [0.001, 0.999] and uses g(t) = 1 where the EDM forward
process x_t = x_0 + t*eps has g(t)^2 = d(t^2)/dt = 2t; a run with `"model": "edm"` therefore uses
`EdmProcess` below (sigma = t unclipped, g = sqrt(2t)), and `"model": "edm-shipped"` uses diffuse's
class as it is, to measure what that costs.

The sampling loop is CondDenoiser.generate's (vmap of `step` over the particles, then
`resampler` when `resample`), written out here only because generate draws its own x_T ~ N(0, I),
which is the wrong scale for sigma_max = 80 and not tweedie's latents.

NFE: every batched call of the denoiser, counted at run time by a host callback, a JVP or VJP
through it counted once (as tweedie counts). Wall time: the second of two identical calls of the
compiled function (compilation is reported separately).
"""

import json
import os
import sys
import time

# One CPU thread, set before jax is imported (XLA reads the flags at start-up).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def versions():
    from importlib.metadata import version

    return {"diffuse": version("diffuse-jax"), "jax": version("jax")}


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "check":
        import diffuse.denoisers.cond  # noqa: F401  (fails here, not later, when it does not import)

        print(json.dumps(versions()))
        return
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        sys.exit("usage: diffuse_cond.py check | run DIR")
    run(sys.argv[2])


def mixture_denoiser(spec):
    """D(x; sigma) = E[x_0 | x_0 + sigma*eps = x] of a Gaussian mixture, for one row x.

    With Sigma_k = Q_k diag(lam_k) Q_k^T: the responsibilities use N(x; mu_k, Sigma_k + sigma^2 I),
    the component means mu_k + Q_k diag(lam_k / (lam_k + sigma^2)) Q_k^T (x - mu_k).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    w = np.asarray(spec["weights"], dtype=np.float64)
    mu = jnp.asarray(np.asarray(spec["means"], dtype=np.float64))
    lam, q = np.linalg.eigh(np.asarray(spec["covs"], dtype=np.float64))
    lam, q, logw = jnp.asarray(lam), jnp.asarray(q), jnp.asarray(np.log(np.maximum(w, 1e-300)))

    def denoise(x, sigma):
        z = jnp.einsum("kji,kj->ki", q, x[None, :] - mu)  # Q_k^T (x - mu_k)
        v = lam + sigma * sigma
        logp = logw - 0.5 * jnp.sum(z * z / v + jnp.log(v), axis=1)
        r = jax.nn.softmax(logp)
        means = mu + jnp.einsum("kij,kj->ki", q, lam / v * z)
        return r @ means

    return denoise


class MatrixOperator:
    """y = A x + n, n ~ N(0, std^2 I), in diffuse's ForwardModel protocol (0.1.0 names the adjoint
    `restore`, the GitHub main `adjoint`)."""

    def __init__(self, a, std):
        import jax.numpy as jnp

        self.a = jnp.asarray(a, dtype=jnp.float64)
        self.std = float(std)

    def apply(self, x, measurement_state):
        return self.a @ x

    def restore(self, v, measurement_state):
        return self.a.T @ v

    adjoint = restore


def edm_process():
    """sigma(t) = t, alpha = 1, f = 0, g = sqrt(2t): the EDM forward process, unclipped."""
    import jax.numpy as jnp
    from diffuse.diffusion.sde import DiffusionModel

    class EdmProcess(DiffusionModel):
        def noise_level(self, t):
            return t

        def signal_level(self, t):
            return jnp.ones_like(t)

        def sde_coefficients(self, t):
            return jnp.zeros_like(t), jnp.sqrt(2.0 * t)

    return EdmProcess()


def build(method, options, model, timer, predictor, op, dim):
    from diffuse.integrator.deterministic import HeunIntegrator
    from diffuse.denoisers.cond import DPSDenoiser, FPSDenoiser, TMPDenoiser

    common = dict(
        integrator=HeunIntegrator(model=model, timer=timer),
        model=model,
        predictor=predictor,
        forward_model=op,
        x0_shape=(dim,),
    )
    if method == "dps":
        return DPSDenoiser(**common, **options)
    if method == "fps":
        return FPSDenoiser(**common, **options)
    if method == "tmp":
        return TMPDenoiser(**common, **options)
    if method == "tmp2":
        from diffuse.denoisers.cond.tmp2 import TMPDenoiser as Tmp2

        return Tmp2(**common, **options)
    if method == "tmp3":
        from diffuse.denoisers.cond.tmp3 import TMPDenoiser as Tmp3

        return Tmp3(**common, **options)
    raise ValueError(f"unknown method {method!r} (dps, fps, tmp, tmp2, tmp3)")


def sampler(denoiser, n_steps, measurement_state):
    """CondDenoiser.generate from given latents (see the module comment)."""
    import jax

    def sample(latents, key):
        n = latents.shape[0]
        key, _ = jax.random.split(key)
        keys = jax.random.split(key, n)
        state = jax.vmap(denoiser.init, in_axes=(0, 0, None))(latents, keys, n)

        def body(state, k):
            ks = jax.random.split(k, n)
            nxt = jax.vmap(denoiser.step, in_axes=(0, 0, None))(ks, state, measurement_state)
            if denoiser.resample:
                nxt = denoiser.resampler(nxt, measurement_state, k)
            return nxt, None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, n_steps))
        return state.integrator_state.position

    return jax.jit(sample)


def run_one(problem, spec, grid, latents, noise, counter):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from diffuse.base_forward_model import MeasurementState
    from diffuse.diffusion.sde import EDM, SDE, LinearSchedule
    from diffuse.predictor import Predictor
    from diffuse.timer.base import HeunTimer, VpTimer

    n_steps = len(grid) - 1
    kind = spec.get("model", "edm")
    if kind == "vp":
        # diffuse's own VP SDE (beta linear 0.1 -> 20 on [0, 1]) and VpTimer, from x_T = the
        # standard-normal rows of `noise` (what generate draws; alpha_T = 0.0066, so p_T ~ N(0, I)).
        model = SDE(beta=LinearSchedule(b_min=0.1, b_max=20.0, t0=0.0, T=1.0))
        timer = VpTimer(n_steps=n_steps, eps=1e-3, tf=1.0)
        grid_diff = None
        latents = noise
    else:
        # diffuse's ChurnedIntegrator traces its churn branch even at churn rate 0, and that
        # branch reads `timer.tf`, which HeunTimer lacks (AttributeError in 0.1.0 and on GitHub
        # main); tf is the churn's upper bound on t, sigma_max here. Nothing else changes.
        class KarrasTimer(HeunTimer):
            tf = grid[0]

        model = edm_process() if kind == "edm" else EDM()
        timer = KarrasTimer(n_steps=n_steps, rho=7.0, sigma_min=grid[-1], sigma_max=grid[0])
        grid_diff = max(abs(float(timer(i)) - s) / s for i, s in enumerate(grid))
    denoise = mixture_denoiser(problem["mixture"])

    def network(x, t):
        # x_t = alpha x_0 + sigma eps, so x_t/alpha is x_0 plus noise of std sigma/alpha.
        jax.debug.callback(counter.bump)
        alpha = model.signal_level(t)
        return denoise(x / alpha, model.noise_level(t) / alpha)

    predictor = Predictor(model, network, "x0")
    op = MatrixOperator(problem["a"], problem["noise_std"])
    dim = latents.shape[1]
    den = build(spec["method"], spec.get("options", {}), model, timer, predictor, op, dim)
    ms = MeasurementState(y=jnp.asarray(problem["y"], dtype=jnp.float64), mask_history=jnp.zeros(1))
    f = sampler(den, n_steps, ms)
    x = jnp.asarray(latents)
    key = jax.random.PRNGKey(int(spec.get("seed", 0)))
    t0 = time.perf_counter()
    f(x, key).block_until_ready()
    compile_s = time.perf_counter() - t0
    counter.calls = 0
    t0 = time.perf_counter()
    out = f(x, key).block_until_ready()
    wall = time.perf_counter() - t0
    return np.asarray(out, dtype=np.float64), counter.calls, wall, compile_s, grid_diff


class Counter:
    def __init__(self):
        self.calls = 0

    def bump(self):
        self.calls += 1


def run(job_dir):
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    with open(os.path.join(job_dir, "job.json")) as fh:
        job = json.load(fh)
    results = dict(versions(), runs=[])
    counter = Counter()
    for problem in job["problems"]:
        latents = np.load(os.path.join(job_dir, problem["latents"]))
        noise = np.load(os.path.join(job_dir, problem["noise"]))
        for spec in job["runs"]:
            rid = f"{problem['id']}-{spec['id']}"
            res = {"problem": problem["id"], "id": spec["id"], "endpoint": None, "error": None}
            try:
                x, nfe, wall, compile_s, grid_diff = run_one(problem, spec, job["grid"], latents, noise, counter)
                path = f"{rid}.npy"
                np.save(os.path.join(job_dir, path), x)
                res.update(endpoint=path, nfe=nfe, wall_s=wall, compile_s=compile_s, grid_max_rel_diff=grid_diff)
            except Exception as e:  # reported in the table, never a crash of the whole job
                res["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            print(f"[diffuse] {rid}: {res.get('error') or '%d NFE, %.2f s' % (res['nfe'], res['wall_s'])}", file=sys.stderr)
            results["runs"].append(res)
    with open(os.path.join(job_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
