//! The measurement operator flags shared by `tweedie sample` and `tweedie measure`, and the
//! pictures of a measurement: y = A·x₀ + n, n ~ N(0, s²I).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array2, Axis};
use tweedie::samplers::rows::cg_solve;
use tweedie::samplers::{Blur, Boundary, Downsample, ForwardModel, Mask, MatrixOp};

/// `--operator NAME` and its parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Measurement operator for conditional sampling: matrix, mask, downsample, blur.
    #[arg(long)]
    pub operator: Option<String>,
    /// Measurement noise standard deviation s (y = A·x₀ + n, n ~ N(0, s²I)).
    #[arg(long, default_value_t = 0.0)]
    pub noise_std: f64,
    /// Matrix A (.npy, [m, D]) for --operator matrix.
    #[arg(long)]
    pub matrix: Option<PathBuf>,
    /// Observed coordinates for --operator mask, comma-separated (e.g. 0,2,5).
    #[arg(long, value_delimiter = ',')]
    pub observe: Vec<usize>,
    /// Mask for --operator mask as a .npy of D values (any shape), 1 = observed, 0 = not
    /// (instead of --observe, for images).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Image shape C,H,W for --operator downsample/blur (default: a checkpoint's or data
    /// set's sample shape).
    #[arg(long, value_delimiter = ',')]
    pub image: Vec<usize>,
    /// Pooling factor of --operator downsample.
    #[arg(long, default_value_t = 2)]
    pub factor: usize,
    /// Kernel std (pixels) and radius of --operator blur.
    #[arg(long, default_value_t = 1.0)]
    pub blur_width: f64,
    #[arg(long, default_value_t = 2)]
    pub blur_radius: usize,
    /// What --operator blur reads beyond the edge: zero, or periodic (wrap around, for
    /// periodic fields; the operator is then circulant).
    #[arg(long, default_value = "zero")]
    pub blur_boundary: String,
}

impl OperatorArgs {
    /// The operator on samples of `dim` values (of image shape `shape` when known), or None
    /// without `--operator`. Errors name the flag and the value at fault.
    pub fn build(
        &self,
        dim: usize,
        shape: Option<&[usize]>,
    ) -> Result<Option<Box<dyn ForwardModel>>> {
        let Some(name) = self.operator.as_deref() else {
            return Ok(None);
        };
        let s = self.noise_std;
        if !(s.is_finite() && s >= 0.0) {
            bail!("--noise-std {s}: must be finite and ≥ 0");
        }
        let image = || -> Result<(usize, usize, usize)> {
            let given = match (self.image.as_slice(), shape) {
                ([], Some(sh)) => sh,
                (im, _) => im,
            };
            match given {
                [c, h, w]
                    if [*c, *h, *w]
                        .iter()
                        .try_fold(1usize, |a, &v| a.checked_mul(v))
                        == Some(dim) =>
                {
                    Ok((*c, *h, *w))
                }
                other => bail!("--image {other:?}: need C,H,W with C·H·W = {dim}"),
            }
        };
        let op: Box<dyn ForwardModel> = match name {
            "matrix" => {
                let p = self
                    .matrix
                    .as_ref()
                    .context("--operator matrix needs --matrix A.npy")?;
                let a = super::sample::read_npy2(p)?;
                if a.ncols() != dim {
                    bail!(
                        "--matrix {}: shape {:?}, need [m, {dim}]",
                        p.display(),
                        a.shape()
                    );
                }
                Box::new(MatrixOp::new(a, s)?)
            }
            "mask" => Box::new(Mask::new(&self.keep(dim)?, s)?),
            "downsample" => {
                let (c, h, w) = image()?;
                if self.factor == 0 || h % self.factor != 0 || w % self.factor != 0 {
                    bail!(
                        "--factor {}: must divide the image's height {h} and width {w}",
                        self.factor
                    );
                }
                Box::new(Downsample::new(c, h, w, self.factor, s)?)
            }
            "blur" => {
                let (c, h, w) = image()?;
                let boundary = match self.blur_boundary.as_str() {
                    "zero" => Boundary::Zero,
                    "periodic" => Boundary::Periodic,
                    other => bail!("--blur-boundary {other}: known: zero, periodic"),
                };
                Box::new(
                    Blur::new(c, h, w, self.blur_width, self.blur_radius, s)?
                        .with_boundary(boundary),
                )
            }
            other => bail!("--operator {other}: known operators: matrix, mask, downsample, blur"),
        };
        Ok(Some(op))
    }

    /// The observed coordinates of `--operator mask`, from --observe or --mask.
    fn keep(&self, dim: usize) -> Result<Vec<bool>> {
        match (&self.mask, self.observe.is_empty()) {
            (Some(_), false) => bail!("--mask and --observe: give one of them"),
            (None, true) => bail!("--operator mask needs --observe I,J,… or --mask M.npy"),
            (None, false) => {
                if let Some(i) = self.observe.iter().find(|i| **i >= dim) {
                    bail!("--observe {i}: coordinate out of range 0..{dim}");
                }
                Ok((0..dim).map(|i| self.observe.contains(&i)).collect())
            }
            (Some(p), true) => {
                let m = tweedie::train::data::npy::read(p)?.to_f64();
                if m.len() != dim {
                    bail!(
                        "--mask {}: {} values (shape {:?}), the samples have {dim}",
                        p.display(),
                        m.len(),
                        m.shape()
                    );
                }
                if let Some(v) = m.iter().find(|v| **v != 0.0 && **v != 1.0) {
                    bail!(
                        "--mask {}: value {v}; a mask holds 0 and 1 only",
                        p.display()
                    );
                }
                Ok(m.iter().map(|v| *v == 1.0).collect())
            }
        }
    }
}

/// The measurement read from `path`, checked: 1-D, finite, as long as the operator's output.
pub fn read_y(path: &std::path::Path, op: &dyn ForwardModel) -> Result<Array1<f64>> {
    let y = super::sample::read_npy1(path)?;
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        bail!(
            "--y {}: y[{i}] = {} is NaN or infinite; a measurement must be finite",
            path.display(),
            y[i]
        );
    }
    if y.len() != op.out_dim() {
        bail!(
            "--y {}: {} entries, the operator measures {}",
            path.display(),
            y.len(),
            op.out_dim()
        );
    }
    Ok(y)
}

/// The measurement as a picture in sample space: y itself where A maps samples to samples
/// (blur), else the least-norm x with A·x = y, Aᵀ(AAᵀ)⁻¹y (a mask fills the unobserved with 0,
/// a downsample repeats each block average over its block).
pub fn measurement_picture(op: &dyn ForwardModel, y: &Array1<f64>) -> Result<Array1<f64>> {
    if op.out_dim() == op.in_dim() {
        return Ok(y.clone());
    }
    let y2: Array2<f64> = y.clone().insert_axis(Axis(0));
    let solve = cg_solve(
        |u| op.apply(&op.adjoint(u)?),
        &y2,
        2 * op.out_dim() + 20,
        1e-10,
    )?;
    // Only a picture: a rank-deficient AAᵀ (a matrix operator) may stop CG short, and the
    // iterate is still shown, with a note.
    if !solve.converged {
        eprintln!(
            "note: the measurement picture Aᵀ(AAᵀ)⁻¹y is approximate (CG stopped at relative residual {:.1e} after {} iterations)",
            solve.worst_residual, solve.iterations
        );
    }
    Ok(op.adjoint(&solve.u)?.row(0).to_owned())
}
