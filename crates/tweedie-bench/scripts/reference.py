#!/usr/bin/env python3
"""Side-by-side reference harness for `cargo xtask bench-samplers`.

Runs k-diffusion's samplers and diffusers' schedulers on an exact Gaussian-mixture
denoiser (PyTorch, float64) with the latents and sigma grids that the Rust bench wrote,
and writes the endpoints and the cost of each run back for the Rust side to score.

Usage (the Rust bench drives this; it can also be run by hand):

    python reference.py check                 # which reference libraries import; JSON on stdout
    python reference.py run JOB_DIR           # JOB_DIR/job.json -> JOB_DIR/out/*.npy + results.json
    python reference.py selftest              # exactness checks of the mixture denoiser

job.json (all paths relative to JOB_DIR; "gaussian": {"variance": v} in place of "mixture" is the
prior N(0, v I), and "shape": [3, 32, 32] hands the latent rows to the samplers in that shape):

    {"mixture": "mixture.json", "latents": "latents.npy", "threads": 1, "repeats": 2,
     "runs": [{"id": "k_euler_s10", "lib": "k-diffusion", "sampler": "euler",
               "sigmas": [80.0, ..., 0.002, 0.0],
               "grid": {"kind": "karras", "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "steps": 10},
               "seed": 0, "options": {}}]}

mixture.json: {"weights": [K], "means": [[D] * K], "covs": [[[D] * D] * K]} (EDM form:
x_sigma = x0 + sigma * eps, so p_sigma is the mixture with covariances C_k + sigma^2 I).

results.json: {"versions": {...}, "runs": [{"id", "lib", "sampler", "steps", "nfe",
"wall_s", "model_s", "overhead_s", "overhead_per_step_s", "grid_max_rel_diff", "notes"}]}
where overhead is wall time outside the model calls (the sampler's own arithmetic and
bookkeeping), measured on the fastest of `repeats` runs.
"""

import importlib.util
import json
import math
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

# ----------------------------------------------------------------------------------------
# Exact Gaussian-mixture denoiser
# ----------------------------------------------------------------------------------------


class MixtureDenoiser:
    """E[x0 | x_sigma] for x0 ~ sum_k w_k N(mu_k, C_k) and x_sigma = x0 + sigma * eps.

    With C_k = U_k diag(lam_k) U_k^T, p(x_sigma | k) = N(mu_k, C_k + sigma^2 I) and
    E[x0 | x_sigma, k] = mu_k + C_k (C_k + sigma^2 I)^-1 (x_sigma - mu_k); the posterior
    weights r_k(x_sigma) mix them (Tweedie's formula, written per component).
    """

    def __init__(self, weights, means, covs, dtype=torch.float64):
        self.log_w = torch.log(torch.as_tensor(weights, dtype=dtype))
        self.mu = torch.as_tensor(means, dtype=dtype)  # [K, D]
        covs = torch.as_tensor(covs, dtype=dtype)  # [K, D, D]
        covs = 0.5 * (covs + covs.transpose(1, 2))
        lam, u = torch.linalg.eigh(covs)
        if bool((lam <= 0).any()):
            raise ValueError("mixture covariance is not positive definite")
        self.lam = lam  # [K, D]
        self.u = u  # [K, D, D]
        self.calls = 0
        self.seconds = 0.0

    @property
    def dim(self):
        return self.mu.shape[1]

    def __call__(self, x, sigma):
        """Denoise x [N, D] at noise level sigma (scalar or [N]); counts calls and time."""
        t0 = time.perf_counter()
        out = self.denoise(x, sigma)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def denoise(self, x, sigma):
        x = x.to(self.mu.dtype)
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        s2 = sigma.reshape(-1, 1, 1) ** 2 if sigma.ndim else sigma.reshape(1, 1, 1) ** 2  # [N|1, 1, 1]
        y = torch.einsum("kde,nkd->nke", self.u, x[:, None, :] - self.mu[None])  # [N, K, D]
        var = self.lam[None] + s2  # [N, K, D]
        maha = (y * y / var).sum(-1)
        logdet = torch.log(var).sum(-1)
        logits = self.log_w[None] - 0.5 * (maha + logdet)
        r = torch.softmax(logits, dim=1)  # [N, K]
        shrunk = y * (self.lam[None] / var)  # [N, K, D]
        post = self.mu[None] + torch.einsum("kde,nke->nkd", self.u, shrunk)
        return (r[:, :, None] * post).sum(1)

    def reset(self):
        self.calls = 0
        self.seconds = 0.0


class GaussianDenoiser:
    """E[x0 | x_sigma] = v / (v + sigma^2) * x for x0 ~ N(0, v I): one elementwise pass, so the
    sampler's own per-step cost dominates (the bench's overhead case)."""

    def __init__(self, variance):
        self.variance = float(variance)
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, x, sigma):
        t0 = time.perf_counter()
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        c = self.variance / (self.variance + sigma * sigma)
        out = x * (c.reshape(-1, *([1] * (x.ndim - 1))) if c.ndim else c)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def reset(self):
        self.calls = 0
        self.seconds = 0.0


def load_mixture(path):
    with open(path) as f:
        m = json.load(f)
    return MixtureDenoiser(m["weights"], m["means"], m["covs"])


# ----------------------------------------------------------------------------------------
# Reference libraries
# ----------------------------------------------------------------------------------------


def load_kdiffusion_sampling():
    """Import k_diffusion/sampling.py alone, by file path.

    The package's __init__ pulls in wandb, clip, torchvision...; sampling.py needs only
    `utils.append_dims` from the package, which a stub module provides.
    """
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        raise ImportError("k_diffusion is not installed")
    path = Path(spec.origin).parent / "sampling.py"
    pkg = types.ModuleType("kdiff_ref")
    pkg.__path__ = []
    utils = types.ModuleType("kdiff_ref.utils")

    def append_dims(x, target_dims):
        extra = target_dims - x.ndim
        if extra < 0:
            raise ValueError(f"input has {x.ndim} dims, more than target_dims={target_dims}")
        return x[(...,) + (None,) * extra]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["kdiff_ref"] = pkg
    sys.modules["kdiff_ref.utils"] = utils
    mspec = importlib.util.spec_from_file_location("kdiff_ref.sampling", path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules["kdiff_ref.sampling"] = mod
    mspec.loader.exec_module(mod)
    return mod


def check_libs():
    status = {"python": sys.version.split()[0], "torch": torch.__version__}
    try:
        load_kdiffusion_sampling()
        from importlib.metadata import version

        status["k-diffusion"] = version("k-diffusion")
    except Exception as e:  # noqa: BLE001 - any import failure means "skip this library"
        status["k-diffusion"] = None
        status["k-diffusion-error"] = f"{type(e).__name__}: {e}"
    try:
        import diffusers  # noqa: F401
        from diffusers import EulerDiscreteScheduler  # noqa: F401

        status["diffusers"] = diffusers.__version__
    except Exception as e:  # noqa: BLE001
        status["diffusers"] = None
        status["diffusers-error"] = f"{type(e).__name__}: {e}"
    return status


# k-diffusion samplers by name: (function name, keyword arguments, deterministic?)
K_SAMPLERS = {
    "euler": ("sample_euler", {}, True),
    "heun": ("sample_heun", {}, True),
    "dpm_2": ("sample_dpm_2", {}, True),
    "lms": ("sample_lms", {}, True),
    # eta = 0 turns the ancestral DPM-Solver++(2S) into the deterministic single-step solver.
    "dpmpp_2s": ("sample_dpmpp_2s_ancestral", {"eta": 0.0}, True),
    "dpmpp_2m": ("sample_dpmpp_2m", {}, True),
    # eta = 0: the deterministic DPM-Solver++(3M).
    "dpmpp_3m": ("sample_dpmpp_3m_sde", {"eta": 0.0}, True),
    # Karras et al. 2022 Alg. 2 (EDM's stochastic sampler) with S_churn = 40, as tweedie's default.
    "heun_churn": ("sample_heun", {"s_churn": 40.0}, False),
    "euler_ancestral": ("sample_euler_ancestral", {"eta": 1.0}, False),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", {"eta": 1.0}, False),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {"eta": 1.0}, False),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {"eta": 1.0}, False),
}


def run_kdiffusion(kd, model, x, run):
    name = run["sampler"]
    sigmas = torch.tensor(run["sigmas"], dtype=torch.float64)
    opts = dict(run.get("options", {}))
    if name == "dpm_adaptive":
        # Adaptive DPM-Solver integrates to sigma_min and stops; the fixed-grid samplers
        # end with one denoiser call at sigma_min, so we add that call to compare endpoints.
        rtol = float(opts.get("rtol", 0.05))
        atol = float(opts.get("atol", 0.0078))
        smin = float(sigmas[sigmas > 0].min())
        smax = float(sigmas.max())
        xs = kd.sample_dpm_adaptive(model, x, smin, smax, rtol=rtol, atol=atol, disable=True)
        return model(xs, smin * xs.new_ones([xs.shape[0]])), "adaptive to sigma_min, then D(x; sigma_min)"
    if name not in K_SAMPLERS:
        raise KeyError(f"unknown k-diffusion sampler `{name}`")
    fname, kw, _det = K_SAMPLERS[name]
    kw = {**kw, **opts}
    if name in ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_3m"):
        # The default Brownian-tree noise needs torchsde's tree (and its own seeding); plain
        # per-step Gaussian noise is what the ancestral samplers use and what we compare against.
        kw.setdefault("noise_sampler", kd.default_noise_sampler(x))
    fn = getattr(kd, fname)
    return fn(model, x, sigmas, disable=True, **kw), ""


def karras_grid(steps, sigma_min, sigma_max, rho):
    ramp = np.linspace(0.0, 1.0, steps)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return list((hi + ramp * (lo - hi)) ** rho) + [0.0]


# diffusers' multistep schedulers of the VP family: (class, keyword arguments). They work on
# the VP state x_t = alpha * x~ with alpha = 1/sqrt(1 + sigma^2) and take the denoiser's
# output directly with prediction_type="sample".
VP_MULTISTEP = {
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2"}),
    "unipc3": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"}),
    "deis3": ("DEISMultistepScheduler", {"solver_order": 3}),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "dpmsolver++"}),
}


def run_diffusers_vp_multistep(model, x, run):
    """A VP multistep scheduler on the job's sigma grid (set into `.sigmas` after set_timesteps).

    DEIS has no final_sigmas_type: a step to sigma = 0 would divide by zero in its log-SNR,
    so it integrates to the grid's last nonzero sigma and ends with one denoiser call there,
    like k-diffusion's adaptive solver; the NFE is the same as the other runs'."""
    import diffusers

    name = run["sampler"]
    cls, kw = VP_MULTISTEP[name]
    sigmas = [float(s) for s in run["sigmas"]]
    to_zero = cls != "DEISMultistepScheduler"
    grid = sigmas if to_zero else sigmas[:-1]
    n = len(grid) - 1
    extra = {"final_sigmas_type": "zero"} if to_zero else {}
    sched = getattr(diffusers, cls)(prediction_type="sample", **kw, **extra)
    sched.set_timesteps(n)
    if len(sched.timesteps) != n or len(sched.sigmas) != n + 1:
        raise RuntimeError(f"unexpected {cls} layout: {len(sched.timesteps)} timesteps")
    sched.sigmas = torch.tensor(grid, dtype=torch.float32)
    alpha = lambda s: 1.0 / math.sqrt(1.0 + s * s)  # noqa: E731
    sample = x * alpha(grid[0])
    for i, t in enumerate(sched.timesteps):
        idx = sched.step_index if sched.step_index is not None else i
        sigma = float(sched.sigmas[idx])
        d = model(sample.to(torch.float64) / alpha(sigma), sigma)
        sample = sched.step(d, t, sample).prev_sample
    sample = sample.to(torch.float64)
    notes = ["grid set into .sigmas after set_timesteps (float32); VP state alpha*x"]
    if not to_zero:
        sample = model(sample / alpha(grid[-1]), grid[-1])
        notes.append("to sigma_min, then D(x; sigma_min)")
    return sample, "; ".join(notes), 0.0


def run_diffusers(model, x, run):
    """Drive a diffusers scheduler with the job's sigma grid; returns (x0, notes, grid used)."""
    import diffusers

    if run["sampler"] in VP_MULTISTEP:
        return run_diffusers_vp_multistep(model, x, run)

    # We evaluate the denoiser on the raw state on purpose (the model takes sigma directly),
    # so the "call scale_model_input first" warning does not apply.
    diffusers.utils.logging.set_verbosity_error()
    name = run["sampler"]
    sigmas = [float(s) for s in run["sigmas"]]
    grid = run.get("grid", {})
    n = len(sigmas) - 1
    notes = []

    if name == "euler":
        # Public custom-sigma API; the scheduler stores sigmas in float32 and upcasts the
        # state to float32 in every step.
        sched = diffusers.EulerDiscreteScheduler(prediction_type="sample")
        sched.set_timesteps(sigmas=sigmas)
        notes.append("custom sigmas via set_timesteps(sigmas=...); float32 grid and state update")
    elif name == "heun":
        # HeunDiscreteScheduler has no custom-sigma argument: its grid comes from the
        # training betas. We set its `sigmas` attribute to our grid, interleaved as
        # set_timesteps does (first/second-order stages share a sigma).
        sched = diffusers.HeunDiscreteScheduler(prediction_type="sample")
        sched.set_timesteps(n)
        s = torch.tensor(sigmas, dtype=torch.float32)
        sched.sigmas = torch.cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]])
        if len(sched.timesteps) != 2 * n - 1:
            raise RuntimeError("unexpected HeunDiscreteScheduler timestep layout")
        notes.append("grid injected by overwriting .sigmas (no public custom-sigma API); float32 grid")
    elif name in ("edm_dpmpp_2m", "edm_euler"):
        # The EDM schedulers build the Karras grid themselves from (sigma_min, sigma_max, rho):
        # the same formula, evaluated in float32 then stored as float32.
        if grid.get("kind") != "karras":
            raise ValueError("the diffusers EDM schedulers only build Karras grids")
        common = dict(sigma_min=grid["sigma_min"], sigma_max=grid["sigma_max"], rho=grid["rho"], sigma_data=0.5)
        if name == "edm_dpmpp_2m":
            sched = diffusers.EDMDPMSolverMultistepScheduler(
                **common, solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="zero"
            )
        else:
            sched = diffusers.EDMEulerScheduler(**common, final_sigmas_type="zero")
        sched.set_timesteps(n)
        notes.append("scheduler-built Karras grid (float32)")
    else:
        raise KeyError(f"unknown diffusers scheduler `{name}`")

    used = sched.sigmas.to(torch.float64)
    ref = torch.tensor(sigmas, dtype=torch.float64)
    if name == "heun":
        used_plain = torch.cat([used[:1], used[1:-1:2], used[-1:]])
    else:
        used_plain = used
    if used_plain.shape != ref.shape:
        raise RuntimeError(f"{name}: scheduler grid has {used_plain.numel()} entries, job grid {ref.numel()}")
    pos = ref > 0
    grid_diff = float(((used_plain[pos] - ref[pos]).abs() / ref[pos]).max())

    sample = x.clone()
    edm = name.startswith("edm_")
    sigma_data = 0.5
    for i, t in enumerate(sched.timesteps):
        idx = sched.step_index if sched.step_index is not None else i
        sigma = float(sched.sigmas[idx])
        d = model(sample, sigma)
        if edm:
            # These schedulers take the raw network output F and form
            # D = c_skip x + c_out F themselves; hand them the F that yields our exact D.
            c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
            c_out = sigma * sigma_data / math.sqrt(sigma**2 + sigma_data**2)
            out = (d - c_skip * sample) / c_out
        else:
            out = d
        sample = sched.step(out, t, sample).prev_sample
    return sample.to(torch.float64), "; ".join(notes), grid_diff


DIFFUSERS_SAMPLERS = {"euler": True, "heun": True, "edm_dpmpp_2m": True, "edm_euler": True,
                      **{k: True for k in VP_MULTISTEP}}


def run_job(job_dir):
    job_dir = Path(job_dir)
    with open(job_dir / "job.json") as f:
        job = json.load(f)
    torch.set_num_threads(int(job.get("threads", 1)))
    repeats = max(1, int(job.get("repeats", 2)))
    latents = torch.from_numpy(np.load(job_dir / job["latents"])).to(torch.float64)
    if job.get("gaussian") is not None:
        model = GaussianDenoiser(job["gaussian"]["variance"])
    else:
        model = load_mixture(job_dir / job["mixture"])
        if latents.ndim != 2 or latents.shape[1] != model.dim:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, mixture dimension is {model.dim}")
    # Rows [N, D] are handed to the samplers as [N, *shape] (e.g. images [N, 3, 32, 32]).
    flat_shape = tuple(latents.shape)
    if job.get("shape"):
        latents = latents.reshape(latents.shape[0], *job["shape"])
    out_dir = job_dir / "out"
    out_dir.mkdir(exist_ok=True)

    libs = check_libs()
    kd = load_kdiffusion_sampling() if libs.get("k-diffusion") else None
    results = []
    for run in job["runs"]:
        lib = run["lib"]
        rec = {"id": run["id"], "lib": lib, "sampler": run["sampler"], "steps": len(run["sigmas"]) - 1}
        if (lib == "k-diffusion" and kd is None) or (lib == "diffusers" and not libs.get("diffusers")):
            rec["skipped"] = f"{lib} is not importable"
            results.append(rec)
            continue
        best = None
        try:
            for _ in range(repeats):
                torch.manual_seed(int(run.get("seed", 0)))
                model.reset()
                x = latents.clone()
                t0 = time.perf_counter()
                if lib == "k-diffusion":
                    y, notes = run_kdiffusion(kd, model, x, run)
                    grid_diff = 0.0
                elif lib == "diffusers":
                    y, notes, grid_diff = run_diffusers(model, x, run)
                else:
                    raise KeyError(f"unknown library `{lib}`")
                wall = time.perf_counter() - t0
                if best is None or wall < best[0]:
                    best = (wall, model.seconds, model.calls, y, notes, grid_diff)
        except Exception as e:  # noqa: BLE001 - report, keep going with the other runs
            rec["error"] = f"{type(e).__name__}: {e}"
            results.append(rec)
            continue
        wall, model_s, calls, y, notes, grid_diff = best
        y = y.reshape(flat_shape)
        np.save(out_dir / f"{run['id']}.npy", y.detach().cpu().numpy().astype(np.float64))
        rec.update(
            nfe=calls,
            wall_s=wall,
            model_s=model_s,
            overhead_s=max(wall - model_s, 0.0),
            overhead_per_step_s=max(wall - model_s, 0.0) / max(rec["steps"], 1),
            grid_max_rel_diff=grid_diff,
            notes=notes,
            endpoint=f"out/{run['id']}.npy",
        )
        results.append(rec)
        print(f"[reference] {lib:11s} {run['sampler']:20s} steps={rec['steps']:4d} nfe={calls:4d} "
              f"wall={wall * 1e3:8.2f} ms", file=sys.stderr, flush=True)
    with open(job_dir / "results.json.tmp", "w") as f:
        json.dump({"versions": libs, "threads": torch.get_num_threads(), "runs": results}, f, indent=1)
    os.replace(job_dir / "results.json.tmp", job_dir / "results.json")


# ----------------------------------------------------------------------------------------
# Self-test: the denoiser against a direct dense formula
# ----------------------------------------------------------------------------------------


def selftest():
    g = torch.Generator().manual_seed(0)
    k, d, n = 3, 5, 7
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mu = torch.randn(k, d, generator=g, dtype=torch.float64) * 3
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    den = MixtureDenoiser(w, mu, covs)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    for sigma in (0.01, 0.7, 30.0):
        eye = torch.eye(d, dtype=torch.float64)
        logp, post = [], []
        for j in range(k):
            c = covs[j] + sigma**2 * eye
            dist = torch.distributions.MultivariateNormal(mu[j], covariance_matrix=c)
            logp.append(torch.log(w[j]) + dist.log_prob(x))
            post.append(mu[j] + (covs[j] @ torch.linalg.solve(c, (x - mu[j]).T)).T)
        r = torch.softmax(torch.stack(logp, 1), 1)
        want = (r[:, :, None] * torch.stack(post, 1)).sum(1)
        got = den.denoise(x, sigma)
        err = float((got - want).abs().max())
        # Per-sample sigma must agree with the scalar path.
        got_vec = den.denoise(x, torch.full((n,), sigma, dtype=torch.float64))
        err_vec = float((got_vec - want).abs().max())
        print(f"sigma={sigma:6.2f} max|D - dense| = {err:.3e} (per-sample sigma {err_vec:.3e})")
        if not (err < 1e-10 and err_vec < 1e-10):
            raise SystemExit("selftest FAILED")
    # One component with sigma -> large: D -> mu; sigma -> 0: D -> x.
    one = MixtureDenoiser([1.0], mu[:1], covs[:1])
    if float((one.denoise(x, 1e6) - mu[0]).abs().max()) > 1e-6:
        raise SystemExit("selftest FAILED: D(x; large sigma) != mean")
    if float((one.denoise(x, 1e-7) - x).abs().max()) > 1e-6:
        raise SystemExit("selftest FAILED: D(x; tiny sigma) != x")
    print("selftest ok")


def main(argv):
    if len(argv) >= 2 and argv[1] == "check":
        print(json.dumps(check_libs()))
        return 0
    if len(argv) >= 3 and argv[1] == "run":
        run_job(argv[2])
        return 0
    if len(argv) >= 2 and argv[1] == "selftest":
        selftest()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
