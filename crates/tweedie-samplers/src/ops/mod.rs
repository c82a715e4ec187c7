//! Linear forward models y = A·x + n, n ~ N(0, s²I), acting on rows `[B, n]` in f64; with the
//! `tch` feature also on tensor rows on their device ([`TensorOp`], implemented in `tensor.rs`).

use ndarray::{Array1, Array2, Axis};
use tweedie_core::Invalid;

use crate::error::{Result, SamplerError};

#[cfg(feature = "tch")]
mod tensor;

/// A linear measurement operator with Gaussian noise: y = A·x₀ + n, n ~ N(0, s²I).
///
/// `apply` and `adjoint` act row-wise on `[B, in_dim]` / `[B, out_dim]` arrays; ⟨A x, y⟩ = ⟨x, Aᵀ y⟩.
pub trait ForwardModel: Send + Sync + std::fmt::Debug {
    /// Length n of a flattened signal.
    fn in_dim(&self) -> usize;
    /// Length m of a flattened measurement.
    fn out_dim(&self) -> usize;
    /// A·x for every row.
    fn apply(&self, x: &Array2<f64>) -> Result<Array2<f64>>;
    /// Aᵀ·y for every row.
    fn adjoint(&self, y: &Array2<f64>) -> Result<Array2<f64>>;
    /// Measurement noise standard deviation s.
    fn noise_std(&self) -> f64;
    /// Whether A selects coordinates (A·Aᵀ = I), as inpainting masks do.
    fn is_selection(&self) -> bool {
        false
    }
    /// The operator's kind and shape in a few words, for error messages (its `Debug` form can
    /// hold a whole kernel or matrix).
    fn describe(&self) -> String {
        format!(
            "an operator of {} inputs and {} outputs",
            self.in_dim(),
            self.out_dim()
        )
    }
    /// The dense matrix A [m, n] (by applying A to the identity).
    fn matrix(&self) -> Result<Array2<f64>> {
        Ok(self.apply(&Array2::eye(self.in_dim()))?.t().to_owned())
    }
    /// The kernel when A is circulant (a periodic blur): diagonal in Fourier space, which
    /// exact Gaussian posteriors use instead of an iterative solve.
    fn circulant(&self) -> Option<Circulant<'_>> {
        None
    }
    /// The operator as tensor ops on the rows' device, where it has that form (every built-in
    /// operator does); `None` sends tensor rows through the host.
    #[cfg(feature = "tch")]
    fn tensor_op(&self) -> Option<&dyn TensorOp> {
        None
    }
}

/// A linear operator on f64 row tensors [B, n] → [B, m] and its adjoint, on their device.
#[cfg(feature = "tch")]
pub trait TensorOp: Send + Sync {
    /// A·x for every row of `x` [B, n].
    fn apply_tensor(&self, x: &tch::Tensor) -> Result<tch::Tensor>;
    /// Aᵀ·y for every row of `y` [B, m].
    fn adjoint_tensor(&self, y: &tch::Tensor) -> Result<tch::Tensor>;
}

/// One device copy of a host constant, made on first use on that device and kind.
#[cfg(feature = "tch")]
#[derive(Default)]
pub struct DeviceCopy(std::sync::Mutex<Option<tch::Tensor>>);

#[cfg(feature = "tch")]
impl std::fmt::Debug for DeviceCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCopy")
    }
}

#[cfg(feature = "tch")]
impl Clone for DeviceCopy {
    /// A clone makes its own copy when first used.
    fn clone(&self) -> Self {
        DeviceCopy::default()
    }
}

#[cfg(feature = "tch")]
impl DeviceCopy {
    /// The constant on `device` as `kind`, from `make` (a CPU tensor) the first time.
    fn get(
        &self,
        device: tch::Device,
        kind: tch::Kind,
        make: impl FnOnce() -> Result<tch::Tensor>,
    ) -> Result<tch::Tensor> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            if t.device() == device && t.kind() == kind {
                return Ok(t.shallow_clone());
            }
        }
        let t = make()?
            .f_to_kind(kind)
            .and_then(|t| t.f_to_device(device))
            .map_err(crate::error::tch_err)?;
        *slot = Some(t.shallow_clone());
        Ok(t)
    }
}

/// A circulant operator on [C, H, W] images: each channel correlated with `kernel`
/// ((2r+1)², centre at [r, r]) with periodic wrap-around,
/// (A x)[i, j] = Σ_{a,b} kernel[r + a, r + b]·x[(i + a) mod H, (j + b) mod W].
#[derive(Debug, Clone, Copy)]
pub struct Circulant<'a> {
    /// Channels C.
    pub channels: usize,
    /// Image height H.
    pub height: usize,
    /// Image width W.
    pub width: usize,
    /// The kernel, (2r+1)×(2r+1).
    pub kernel: &'a Array2<f64>,
}

impl Circulant<'_> {
    /// The transfer function of one channel: (F A x)_κ = H(κ)·(F x)_κ for the unitary DFT,
    /// H(κ) = Σ_{a,b} kernel[r + a, r + b]·e^{2πi(κ_y a/H + κ_x b/W)}, as (re, im) per mode,
    /// row-major in (κ_y, κ_x) DFT order.
    pub fn transfer(&self) -> Vec<(f64, f64)> {
        let r = (self.kernel.nrows() / 2) as f64;
        let (h, w) = (self.height, self.width);
        let tau = 2.0 * std::f64::consts::PI;
        let mut out = Vec::with_capacity(h * w);
        for ky in 0..h {
            for kx in 0..w {
                let (mut re, mut im) = (0.0, 0.0);
                for ((a, b), k) in self.kernel.indexed_iter() {
                    let ph = tau
                        * ((ky as f64 * (a as f64 - r)) / h as f64
                            + (kx as f64 * (b as f64 - r)) / w as f64);
                    re += k * ph.cos();
                    im += k * ph.sin();
                }
                out.push((re, im));
            }
        }
        out
    }
}

fn check_cols(x: &Array2<f64>, n: usize, what: &str) -> Result<()> {
    if x.ncols() != n {
        return Err(SamplerError::Shape(format!(
            "{what}: rows have {} entries, operator expects {n}",
            x.ncols()
        )));
    }
    Ok(())
}

fn check_noise(s: f64) -> Result<()> {
    if s >= 0.0 && s.is_finite() {
        Ok(())
    } else {
        Err(SamplerError::invalid(
            "noise_std",
            s,
            "must be finite and ≥ 0",
        ))
    }
}

/// A dense matrix operator y = A·x + n.
#[derive(Debug, Clone)]
pub struct MatrixOp {
    pub(crate) a: Array2<f64>,
    noise_std: f64,
    #[cfg(feature = "tch")]
    pub(crate) on_device: DeviceCopy,
}

impl MatrixOp {
    /// y = A·x + n with A of shape [m, n].
    pub fn new(a: Array2<f64>, noise_std: f64) -> Result<Self> {
        check_noise(noise_std)?;
        if a.is_empty() || a.iter().any(|v| !v.is_finite()) {
            return Err(SamplerError::invalid(
                "A",
                format!("{:?}", a.shape()),
                "must be non-empty and finite",
            ));
        }
        Ok(MatrixOp {
            a,
            noise_std,
            #[cfg(feature = "tch")]
            on_device: Default::default(),
        })
    }
}

impl ForwardModel for MatrixOp {
    fn in_dim(&self) -> usize {
        self.a.ncols()
    }
    fn out_dim(&self) -> usize {
        self.a.nrows()
    }
    fn apply(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(x, self.in_dim(), "MatrixOp::apply")?;
        Ok(x.dot(&self.a.t()))
    }
    fn adjoint(&self, y: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(y, self.out_dim(), "MatrixOp::adjoint")?;
        Ok(y.dot(&self.a))
    }
    fn noise_std(&self) -> f64 {
        self.noise_std
    }
    #[cfg(feature = "tch")]
    fn tensor_op(&self) -> Option<&dyn TensorOp> {
        Some(self)
    }
    fn matrix(&self) -> Result<Array2<f64>> {
        Ok(self.a.clone())
    }
    fn describe(&self) -> String {
        format!("a {}×{} matrix", self.a.nrows(), self.a.ncols())
    }
}

/// Inpainting: y = x[observed] + n (A selects the observed coordinates; Aᵀ scatters with zeros).
#[derive(Debug, Clone)]
pub struct Mask {
    pub(crate) n: usize,
    idx: Vec<usize>,
    noise_std: f64,
    #[cfg(feature = "tch")]
    pub(crate) on_device: DeviceCopy,
}

impl Mask {
    /// Observe the coordinates where `keep` is true.
    pub fn new(keep: &[bool], noise_std: f64) -> Result<Self> {
        check_noise(noise_std)?;
        let idx: Vec<usize> = keep
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        if idx.is_empty() {
            return Err(SamplerError::invalid(
                "mask",
                "all false",
                "must observe at least one coordinate",
            ));
        }
        Ok(Mask {
            n: keep.len(),
            idx,
            noise_std,
            #[cfg(feature = "tch")]
            on_device: Default::default(),
        })
    }
    /// Indices of the observed coordinates.
    pub fn observed(&self) -> &[usize] {
        &self.idx
    }
}

impl ForwardModel for Mask {
    fn in_dim(&self) -> usize {
        self.n
    }
    fn out_dim(&self) -> usize {
        self.idx.len()
    }
    fn apply(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(x, self.n, "Mask::apply")?;
        Ok(x.select(Axis(1), &self.idx))
    }
    fn adjoint(&self, y: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(y, self.idx.len(), "Mask::adjoint")?;
        let mut x = Array2::<f64>::zeros((y.nrows(), self.n));
        for (j, &i) in self.idx.iter().enumerate() {
            x.column_mut(i).assign(&y.column(j));
        }
        Ok(x)
    }
    fn noise_std(&self) -> f64 {
        self.noise_std
    }
    #[cfg(feature = "tch")]
    fn tensor_op(&self) -> Option<&dyn TensorOp> {
        Some(self)
    }
    fn is_selection(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        format!("a mask of {} of {} values", self.idx.len(), self.n)
    }
}

/// Super-resolution: average pooling by `factor` of images [C, H, W] (flattened row-major); Aᵀ spreads y/f².
#[derive(Debug, Clone)]
pub struct Downsample {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) f: usize,
    noise_std: f64,
}

impl Downsample {
    /// Average-pool [C, H, W] by `factor` (which must divide H and W).
    pub fn new(c: usize, h: usize, w: usize, factor: usize, noise_std: f64) -> Result<Self> {
        check_noise(noise_std)?;
        if factor == 0 || !h.is_multiple_of(factor) || !w.is_multiple_of(factor) || c == 0 {
            return Err(SamplerError::invalid(
                "factor",
                factor,
                format!("must divide H = {h} and W = {w}"),
            ));
        }
        Ok(Downsample {
            c,
            h,
            w,
            f: factor,
            noise_std,
        })
    }
}

impl ForwardModel for Downsample {
    fn in_dim(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_dim(&self) -> usize {
        self.c * (self.h / self.f) * (self.w / self.f)
    }
    fn apply(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(x, self.in_dim(), "Downsample::apply")?;
        let (ho, wo, f) = (self.h / self.f, self.w / self.f, self.f);
        let mut y = Array2::<f64>::zeros((x.nrows(), self.out_dim()));
        let inv = 1.0 / (f * f) as f64;
        for (xr, mut yr) in x.outer_iter().zip(y.outer_iter_mut()) {
            for c in 0..self.c {
                for i in 0..self.h {
                    for j in 0..self.w {
                        yr[(c * ho + i / f) * wo + j / f] +=
                            inv * xr[(c * self.h + i) * self.w + j];
                    }
                }
            }
        }
        Ok(y)
    }
    fn adjoint(&self, y: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(y, self.out_dim(), "Downsample::adjoint")?;
        let (ho, wo, f) = (self.h / self.f, self.w / self.f, self.f);
        let inv = 1.0 / (f * f) as f64;
        let mut x = Array2::<f64>::zeros((y.nrows(), self.in_dim()));
        for (yr, mut xr) in y.outer_iter().zip(x.outer_iter_mut()) {
            for c in 0..self.c {
                for i in 0..self.h {
                    for j in 0..self.w {
                        xr[(c * self.h + i) * self.w + j] = inv * yr[(c * ho + i / f) * wo + j / f];
                    }
                }
            }
        }
        Ok(x)
    }
    fn noise_std(&self) -> f64 {
        self.noise_std
    }
    #[cfg(feature = "tch")]
    fn tensor_op(&self) -> Option<&dyn TensorOp> {
        Some(self)
    }
    fn describe(&self) -> String {
        format!(
            "a {f}× downsample of [{}, {}, {}] images to [{}, {}, {}]",
            self.c,
            self.h,
            self.w,
            self.c,
            self.h / self.f,
            self.w / self.f,
            f = self.f
        )
    }
}

/// What a blur reads beyond the image's edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Boundary {
    /// Zeros (the default): A is not circulant.
    #[default]
    Zero,
    /// The image wraps around (periodic fields): A is circulant, diagonal in Fourier space.
    Periodic,
}

/// Gaussian blur of images [C, H, W] with a (2r+1)² kernel k ∝ exp(−(a² + b²)/(2w²)):
/// (A x)[i, j] = Σ_{a,b} k[a, b]·x[i + a, j + b], with zeros beyond the edge or wrapping around
/// ([`Boundary`]); Aᵀ is the matching scatter (correlation's adjoint).
#[derive(Debug, Clone)]
pub struct Blur {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) r: usize,
    pub(crate) k: Array2<f64>,
    noise_std: f64,
    pub(crate) boundary: Boundary,
    #[cfg(feature = "tch")]
    pub(crate) on_device: DeviceCopy,
}

impl Blur {
    /// Blur [C, H, W] with a normalised Gaussian kernel of std `width` pixels and radius `radius`.
    pub fn new(
        c: usize,
        h: usize,
        w: usize,
        width: f64,
        radius: usize,
        noise_std: f64,
    ) -> Result<Self> {
        check_noise(noise_std)?;
        if !(width > 0.0 && width.is_finite()) {
            return Err(SamplerError::invalid("width", width, "must be positive"));
        }
        // The (2r+1)² kernel is allocated: a huge radius is refused before it is.
        let n = radius
            .checked_mul(2)
            .and_then(|v| v.checked_add(1))
            .ok_or_else(|| SamplerError::invalid("blur_radius", radius, "too large"))?;
        tweedie_core::budget::check_array("blur_radius", radius, &[n, n], 8)?;
        let mut k = Array2::from_shape_fn((n, n), |(a, b)| {
            let (da, db) = (a as f64 - radius as f64, b as f64 - radius as f64);
            (-(da * da + db * db) / (2.0 * width * width)).exp()
        });
        let s = k.sum();
        k /= s;
        Ok(Blur {
            c,
            h,
            w,
            r: radius,
            k,
            noise_std,
            boundary: Boundary::Zero,
            #[cfg(feature = "tch")]
            on_device: Default::default(),
        })
    }
    /// The same blur with `boundary` at the edges.
    pub fn with_boundary(mut self, boundary: Boundary) -> Self {
        self.boundary = boundary;
        self
    }
    /// The normalised kernel.
    pub fn kernel(&self) -> &Array2<f64> {
        &self.k
    }
    fn taps(&self, i: usize, j: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.r as isize;
        let (h, w) = (self.h as isize, self.w as isize);
        (-r..=r).flat_map(move |a| {
            (-r..=r).filter_map(move |b| {
                let (mut ii, mut jj) = (i as isize + a, j as isize + b);
                if self.boundary == Boundary::Periodic {
                    (ii, jj) = (ii.rem_euclid(h), jj.rem_euclid(w));
                }
                if ii < 0 || jj < 0 || ii >= h || jj >= w {
                    None
                } else {
                    Some((
                        (ii * w + jj) as usize,
                        self.k[[(a + r) as usize, (b + r) as usize]],
                    ))
                }
            })
        })
    }
}

impl ForwardModel for Blur {
    fn in_dim(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_dim(&self) -> usize {
        self.in_dim()
    }
    fn apply(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(x, self.in_dim(), "Blur::apply")?;
        let hw = self.h * self.w;
        let mut y = Array2::<f64>::zeros(x.raw_dim());
        for (xr, mut yr) in x.outer_iter().zip(y.outer_iter_mut()) {
            for c in 0..self.c {
                for i in 0..self.h {
                    for j in 0..self.w {
                        yr[c * hw + i * self.w + j] =
                            self.taps(i, j).map(|(p, kv)| kv * xr[c * hw + p]).sum();
                    }
                }
            }
        }
        Ok(y)
    }
    fn adjoint(&self, y: &Array2<f64>) -> Result<Array2<f64>> {
        check_cols(y, self.out_dim(), "Blur::adjoint")?;
        let hw = self.h * self.w;
        let mut x = Array2::<f64>::zeros(y.raw_dim());
        for (yr, mut xr) in y.outer_iter().zip(x.outer_iter_mut()) {
            for c in 0..self.c {
                for i in 0..self.h {
                    for j in 0..self.w {
                        let v = yr[c * hw + i * self.w + j];
                        for (p, kv) in self.taps(i, j) {
                            xr[c * hw + p] += kv * v;
                        }
                    }
                }
            }
        }
        Ok(x)
    }
    fn noise_std(&self) -> f64 {
        self.noise_std
    }
    #[cfg(feature = "tch")]
    fn tensor_op(&self) -> Option<&dyn TensorOp> {
        self.has_tensor_form().then_some(self as &dyn TensorOp)
    }
    fn circulant(&self) -> Option<Circulant<'_>> {
        (self.boundary == Boundary::Periodic).then_some(Circulant {
            channels: self.c,
            height: self.h,
            width: self.w,
            kernel: &self.k,
        })
    }
    fn describe(&self) -> String {
        let edge = match self.boundary {
            Boundary::Zero => "zero",
            Boundary::Periodic => "periodic",
        };
        format!(
            "a {k}×{k} blur ({edge} boundary) of [{}, {}, {}] images",
            self.c,
            self.h,
            self.w,
            k = 2 * self.r + 1
        )
    }
}

/// y = A·x₀ + s·z for one clean signal x₀, z = `noise` (standard normals), as a measurement vector.
pub fn measure(
    op: &dyn ForwardModel,
    x0: &Array1<f64>,
    noise: &Array1<f64>,
) -> Result<Array1<f64>> {
    let y = op
        .apply(&x0.clone().insert_axis(Axis(0)))?
        .row(0)
        .to_owned();
    if noise.len() != y.len() {
        return Err(SamplerError::Shape(format!(
            "noise has {} entries, measurement {}",
            noise.len(),
            y.len()
        )));
    }
    Ok(y + noise * op.noise_std())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tweedie_core::rng::normal_rows;

    fn adjoint_check(op: &dyn ForwardModel) {
        let x = normal_rows(1, 0, 3, 0, op.in_dim());
        let y = normal_rows(2, 0, 3, 0, op.out_dim());
        let ax = op.apply(&x).unwrap();
        let aty = op.adjoint(&y).unwrap();
        for i in 0..3 {
            let l = ax.row(i).dot(&y.row(i));
            let r = x.row(i).dot(&aty.row(i));
            assert!(
                (l - r).abs() < 1e-12 * (1.0 + l.abs()),
                "{op:?}: {l} vs {r}"
            );
        }
        let a = op.matrix().unwrap();
        assert_eq!(a.shape(), &[op.out_dim(), op.in_dim()]);
        assert!((x.dot(&a.t()) - ax).iter().all(|d| d.abs() < 1e-12));
    }

    #[test]
    fn adjoints_are_adjoint() {
        adjoint_check(&MatrixOp::new(normal_rows(3, 0, 4, 0, 6), 0.1).unwrap());
        adjoint_check(&Mask::new(&[true, false, true, true, false], 0.0).unwrap());
        adjoint_check(&Downsample::new(2, 4, 6, 2, 0.0).unwrap());
        adjoint_check(&Blur::new(2, 5, 4, 0.8, 2, 0.0).unwrap());
        adjoint_check(
            &Blur::new(2, 5, 4, 0.8, 2, 0.0)
                .unwrap()
                .with_boundary(Boundary::Periodic),
        );
    }

    #[test]
    fn a_periodic_blur_is_diagonal_in_fourier_space() {
        // A plane wave e^{2πi(κ_y i/H + κ_x j/W)} is an eigenvector with eigenvalue H(κ): check
        // on its real and imaginary parts (A is real).
        let (h, w) = (5, 6);
        let b = Blur::new(1, h, w, 0.9, 2, 0.0)
            .unwrap()
            .with_boundary(Boundary::Periodic);
        let c = b.circulant().unwrap();
        assert!(Blur::new(1, h, w, 0.9, 2, 0.0)
            .unwrap()
            .circulant()
            .is_none());
        let tf = c.transfer();
        let tau = 2.0 * std::f64::consts::PI;
        for (ky, kx) in [(0usize, 0usize), (1, 2), (3, 5), (4, 1)] {
            let ph = |p: usize| {
                tau * ((ky * (p / w)) as f64 / h as f64 + (kx * (p % w)) as f64 / w as f64)
            };
            let re = Array2::from_shape_fn((1, h * w), |(_, p)| ph(p).cos());
            let im = Array2::from_shape_fn((1, h * w), |(_, p)| ph(p).sin());
            let (ar, ai) = (b.apply(&re).unwrap(), b.apply(&im).unwrap());
            let (hr, hi) = tf[ky * w + kx];
            for p in 0..h * w {
                // (re + i·im)·(hr + i·hi)
                assert!((ar[[0, p]] - (re[[0, p]] * hr - im[[0, p]] * hi)).abs() < 1e-12);
                assert!((ai[[0, p]] - (re[[0, p]] * hi + im[[0, p]] * hr)).abs() < 1e-12);
            }
        }
        // The kernel sums to 1: the constant mode passes unchanged.
        assert!((tf[0].0 - 1.0).abs() < 1e-14 && tf[0].1.abs() < 1e-14);
    }

    #[test]
    fn operators_compute_what_they_say() {
        let d = Downsample::new(1, 2, 2, 2, 0.0).unwrap();
        let y = d.apply(&ndarray::array![[1.0, 2.0, 3.0, 6.0]]).unwrap();
        assert_eq!(y, ndarray::array![[3.0]]);
        let m = Mask::new(&[false, true, true], 0.0).unwrap();
        assert_eq!(
            m.apply(&ndarray::array![[1.0, 2.0, 3.0]]).unwrap(),
            ndarray::array![[2.0, 3.0]]
        );
        // A blur of a constant image is constant away from the border; the kernel sums to 1.
        let b = Blur::new(1, 7, 7, 1.0, 1, 0.0).unwrap();
        assert!((b.kernel().sum() - 1.0).abs() < 1e-14);
        let y = b.apply(&Array2::ones((1, 49))).unwrap();
        assert!((y[[0, 24]] - 1.0).abs() < 1e-14);
        assert!(y[[0, 0]] < 1.0);
        assert!(Downsample::new(1, 5, 4, 2, 0.0).is_err());
        assert!(Mask::new(&[false, false], 0.0).is_err());
        assert!(MatrixOp::new(Array2::eye(2), -1.0).is_err());
    }
}
