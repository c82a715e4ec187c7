//! What the posterior samplers with loops of their own share: checked inputs, the start state,
//! row-wise denoising, keyed noise, sub-grids, and exact draws of a Gaussian prior N(μ, vI)
//! conditioned on y = A·x + n (Matheron's rule), which FPS and PnP-DM use for linear operators.
//!
//! Everything works on the state's rows where they live ([`State::device_rows`]): a tensor
//! state stays on its device; per step only keyed noise goes there (made on the host, as every
//! sampler's noise is) and per-row scalars (CG's inner products, FPS's weights) come back.

use ndarray::{Array1, Array2, Axis};
use tweedie_core::rng::{normal_rows, streams};
use tweedie_core::Invalid;
use tweedie_core::{Process, TimeGrid};

use super::CondSampler;
use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::model::Model;
use crate::ops::ForwardModel;
use crate::rows::{cg, repeat_row, Rows};
use crate::sampler::{Init, SampleOutput, Sampler, SIGMA_TILDE_CAP};
use crate::state::State;

/// CG iterations and tolerance for the m×m solves (vAAᵀ + s²I)u = r: exact for m ≤ 500.
const CG_ITERS: usize = 500;
const CG_TOL: f64 = 1e-12;

/// The noise stream of draw `draw` in outer step `step` of a posterior sampler.
pub(crate) fn stream(step: usize, draw: u64) -> u64 {
    streams::COND + ((step as u64) << 20) + draw
}

/// A seed for the sub-run of outer step `step` (PnP-DM's prior step, EnKG's diffusion step):
/// sub-runs draw noise through [`Sampler`] with their own streams, so each outer step gets its
/// own seed; sample i still depends on (seed, i) only.
pub(crate) fn sub_seed(seed: u64, step: usize) -> u64 {
    seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(step as u64 + 1))
}

/// The measurement as a row, checked: its length is the operator's output and it is finite.
pub(crate) fn checked_y(op: &dyn ForwardModel, y: &Array1<f64>) -> Result<Array2<f64>> {
    if y.len() != op.out_dim() {
        return Err(SamplerError::Shape(format!(
            "measurement y has {} entries, the operator measures {}",
            y.len(),
            op.out_dim()
        )));
    }
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return Err(SamplerError::invalid(
            "y",
            format!("y[{i}] = {}", y[i]),
            "the measurement must be finite",
        ));
    }
    Ok(y.clone().insert_axis(Axis(0)))
}

/// σ̃ of the sampler's grid, the first capped at [`SIGMA_TILDE_CAP`] (as [`Sampler`] does).
pub(crate) fn sigmas<S: State>(c: &CondSampler<S>) -> Result<Vec<f64>> {
    let mut s = c.grid.sigma_tilde.clone();
    if s.len() < 2 {
        return Err(SamplerError::invalid(
            "steps",
            s.len().saturating_sub(1),
            "grid needs at least 1 step",
        ));
    }
    if !(s[0] <= SIGMA_TILDE_CAP) {
        s[0] = SIGMA_TILDE_CAP;
    }
    for w in s.windows(2) {
        if !(w[0] > w[1]) || w[1] < 0.0 {
            return Err(SamplerError::invalid(
                "grid",
                format!("{s:?}"),
                "σ̃ must be strictly decreasing and non-negative",
            ));
        }
    }
    Ok(s)
}

/// x̃ at the grid's first σ̃ from `init` (as [`Sampler::run`] starts), checked against the operator.
pub(crate) fn start<S: State>(c: &CondSampler<S>, init: Init<S>, sigma0: f64) -> Result<S> {
    let x = init.start(
        c.model,
        sigma0,
        c.process.alpha(c.grid.t[0]),
        c.seed,
        c.first_index,
    )?;
    if x.sample_len() != c.op.in_dim() {
        return Err(SamplerError::Shape(format!(
            "state has {} elements per sample, the operator's input has {}",
            x.sample_len(),
            c.op.in_dim()
        )));
    }
    Ok(x)
}

/// What every posterior sampler starts from: the checked measurement y (one host row), the σ̃
/// grid, the starting state (kept as the template of the output) and its rows.
pub(crate) struct Begin<S: State> {
    pub y: Array2<f64>,
    pub sig: Vec<f64>,
    pub like: S,
    pub x: S::Rows,
}

impl<S: State> Begin<S> {
    /// y repeated over `b` rows where the state lives.
    pub fn y_rows(&self, b: usize) -> Result<S::Rows> {
        repeat_row(&self.x, &self.y, b)
    }
}

/// [`checked_y`], [`sigmas`] and [`start`] in the order every method needs them.
pub(crate) fn begin<S: State>(c: &CondSampler<S>, init: Init<S>) -> Result<Begin<S>> {
    let y = checked_y(c.op, &c.y)?;
    let sig = sigmas(c)?;
    let like = start(c, init, sig[0])?;
    let x = like.device_rows();
    Ok(Begin { y, sig, like, x })
}

/// The output: x̃ at the grid's end, in process coordinates.
pub(crate) fn finish<S: State>(
    c: &CondSampler<S>,
    like: &S,
    x: &S::Rows,
    nfe: usize,
) -> Result<SampleOutput<S>> {
    let t_end = *c.grid.t.last().unwrap_or(&0.0);
    let alpha = if t_end == 0.0 {
        1.0
    } else {
        c.process.alpha(t_end)
    };
    Ok(SampleOutput {
        samples: like.with_device_rows(x)?.scale(alpha),
        nfe,
        trajectory: vec![],
        sigmas: vec![],
    })
}

/// D(x̃; σ̃) on rows, with a clear error when the model returns non-finite values.
pub(crate) fn denoise_rows<S: State>(
    model: &dyn Model<S>,
    like: &S,
    x: &S::Rows,
    sigma: f64,
) -> Result<S::Rows> {
    let d = model.denoise(&like.with_device_rows(x)?, sigma)?;
    if !d.all_finite() {
        return Err(SamplerError::Numerical(format!(
            "the denoiser returned non-finite values at σ̃ = {sigma}"
        )));
    }
    Ok(d.device_rows())
}

/// The time grid of the σ̃ values `sigmas` under `process` (t = 0 at σ̃ = 0).
pub(crate) fn time_grid(process: &dyn Process, sigmas: &[f64]) -> TimeGrid {
    TimeGrid::at_levels(process, sigmas.to_vec())
}

/// EDM's ρ = 7 grid of `n` steps from σ̃ = `sigma` down to 0 (smallest non-zero level σ̃/100
/// or 0.002, whichever is smaller), for the reverse-diffusion sub-runs of DAPS, EnKG and PnP-DM.
pub(crate) fn sub_grid(n: usize, sigma: f64) -> Result<Vec<f64>> {
    if n == 1 {
        return Ok(vec![sigma, 0.0]);
    }
    crate::grids::karras(n, (sigma / 100.0).min(0.002), sigma, 7.0)
}

/// Runs `kind` from x̃ (rows) at σ̃ = `sigma` to 0 in `n` steps: x̂₀ of the ODE (DAPS, EnKG) or,
/// for a stochastic `kind`, a draw of p(x₀ | x̃) (PnP-DM's prior step). One step of the ODE is
/// Tweedie's D(x̃; σ̃). Returns (rows, NFE).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reverse_to_zero<S: State>(
    c: &CondSampler<S>,
    kind: &SamplerKind,
    like: &S,
    x: &S::Rows,
    sigma: f64,
    n: usize,
    seed: u64,
) -> Result<(S::Rows, usize)> {
    if n == 1 && !kind.is_stochastic() {
        return Ok((denoise_rows(c.model, like, x, sigma)?, 1));
    }
    let grid = time_grid(c.process, &sub_grid(n, sigma)?);
    let out = Sampler::new(c.process, grid, kind.clone(), c.model)?
        .seed(seed)
        .first_index(c.first_index)
        .run(Init::Edm(like.with_device_rows(x)?), None)?;
    Ok((out.samples.device_rows(), out.nfe))
}

/// Per-row solve of (v·AAᵀ + s²I)u = r by conjugate gradients (exact up to `CG_TOL`).
pub(crate) fn solve_cov<R: Rows>(op: &dyn ForwardModel, v: f64, s2: f64, r: &R) -> Result<R> {
    cg(
        |u: &R| Ok(u.adjoint(op)?.apply(op)?.lincomb(v, u, s2)),
        r,
        CG_ITERS,
        CG_TOL,
    )
}

/// A draw of x ~ N(μ, vI) conditioned on y = A·x + n, n ~ N(0, s²I), by Matheron's rule
/// (Journel & Huijbregts 1978; Wilson et al. 2020): x = x_p + v·Aᵀ(vAAᵀ + s²I)⁻¹(y − A·x_p − s·w),
/// x_p = μ + √v·z, z and w standard normal (`z`, `w` = None gives the conditional mean).
pub(crate) fn condition_gaussian<R: Rows>(
    op: &dyn ForwardModel,
    mu: &R,
    v: f64,
    y: &R,
    z: Option<&R>,
    w: Option<&R>,
) -> Result<R> {
    if v <= 0.0 {
        return Ok(mu.clone());
    }
    let s = op.noise_std();
    let xp = match z {
        Some(z) => mu.lincomb(1.0, z, v.sqrt()),
        None => mu.clone(),
    };
    let mut r = y.lincomb(1.0, &xp.apply(op)?, -1.0);
    if let Some(w) = w {
        r = r.lincomb(1.0, w, -s);
    }
    let u = solve_cov(op, v, s * s, &r)?;
    Ok(xp.lincomb(1.0, &u.adjoint(op)?, v))
}

/// Standard normals for `rows` rows where `like` lives (row i keyed by (seed, first_index + i),
/// drawn on the host).
pub(crate) fn normals<S: State, R: Rows>(
    c: &CondSampler<S>,
    like: &R,
    rows: usize,
    stream: u64,
    len: usize,
) -> Result<R> {
    like.host_like(&normal_rows(c.seed, c.first_index, rows, stream, len))
}
