//! Sampler states: batches `[B, …]` of f32/f64 ndarray arrays (and `tch::Tensor` behind the
//! `tch` feature), with per-sample seeded noise.

use ndarray::{Array, Array2, Dimension, IxDyn};
use tweedie_core::kernels;
use tweedie_core::rng::{self, normal_rows};
use tweedie_core::LinearSpace;

use crate::error::{Result, SamplerError};
use crate::rows::Rows;

/// A batch of samples `[B, …]` that samplers evolve; all scalars are f64.
///
/// Linear-space operations come from `tweedie_core::LinearSpace`; the batch operations give
/// per-sample noise and a row view `[B, n]` in f64 used by analytic models and operators.
pub trait State: LinearSpace + Send + std::fmt::Debug {
    /// Batch size B (first axis).
    fn batch(&self) -> usize;
    /// Number of elements of one sample.
    fn sample_len(&self) -> usize;
    /// The state as rows `[B, sample_len]` in f64.
    fn to_rows(&self) -> Array2<f64>;
    /// A state shaped like `self` holding `rows` (`[B, sample_len]`).
    fn with_rows(&self, rows: &Array2<f64>) -> Result<Self>;
    /// Rows `[B, n]` in f64 where the batch lives: host arrays for ndarray states, a tensor on
    /// the state's device for tensor states. Operators act on them ([`Rows::apply`]).
    type Rows: Rows;
    /// The batch as [`State::Rows`] (for tensors a reshape and cast on the device, no host copy).
    fn device_rows(&self) -> Self::Rows;
    /// A state shaped like `self` (and of its element type) holding `rows` (`[B, sample_len]`).
    fn with_device_rows(&self, rows: &Self::Rows) -> Result<Self>;
    /// Standard normal noise shaped like `self`; row i is
    /// `tweedie_core::rng::normal_vec(seed, first_index + i, stream, sample_len)`, drawn in f64.
    fn randn_like(&self, seed: u64, first_index: u64, stream: u64) -> Result<Self> {
        self.with_rows(&normal_rows(
            seed,
            first_index,
            self.batch(),
            stream,
            self.sample_len(),
        ))
    }
    /// self ← self + c·ε with ε = `randn_like(seed, first_index, stream)`, without allocating
    /// where the type allows (the stochastic samplers' per-step noise).
    fn add_randn(&mut self, c: f64, seed: u64, first_index: u64, stream: u64) -> Result<()> {
        let eps = self.randn_like(seed, first_index, stream)?;
        self.lincomb_assign(1.0, &eps, c);
        Ok(())
    }
    /// self ← a·self + Σⱼ cⱼ·yⱼ + c·ε, ε = `randn_like(seed, first_index, stream)`: a
    /// stochastic step's update and noise, the values of `combine_assign` then `add_randn`, in one
    /// pass over self where the type allows. Returns whether every new element is finite when
    /// that pass could tell (as `combine_assign`), else `None`.
    fn combine_add_randn(
        &mut self,
        (a, terms, c): (f64, &[(f64, &Self)], f64),
        seed: u64,
        first_index: u64,
        stream: u64,
    ) -> Result<Option<bool>> {
        self.combine_assign(a, terms);
        self.add_randn(c, seed, first_index, stream)?;
        Ok(None)
    }
    /// a·self + b·u + c·v.
    fn lincomb3(&self, a: f64, u: &Self, b: f64, v: &Self, c: f64) -> Self {
        self.lincomb(a, u, b).lincomb(1.0, v, c)
    }
    /// Per-sample RMS of err / (atol + rtol·max(|x₀|, |x₁|)), the error norm of adaptive solvers.
    fn scaled_rms(&self, x0: &Self, x1: &Self, atol: f64, rtol: f64) -> Vec<f64> {
        let (e, a, b) = (self.to_rows(), x0.to_rows(), x1.to_rows());
        let n = e.ncols().max(1) as f64;
        (0..e.nrows())
            .map(|i| {
                let s: f64 = e
                    .row(i)
                    .iter()
                    .zip(a.row(i).iter().zip(b.row(i).iter()))
                    .map(|(e, (a, b))| {
                        let w = atol + rtol * a.abs().max(b.abs());
                        (e / w) * (e / w)
                    })
                    .sum();
                (s / n).sqrt()
            })
            .collect()
    }
    /// True when every element is finite.
    fn all_finite(&self) -> bool {
        self.to_rows().iter().all(|v| v.is_finite())
    }
    /// self ⊙ exp(b·v) elementwise (per-element noise scales of learned variances); exactly
    /// `self` where v = 0.
    fn mul_exp(&self, v: &Self, b: f64) -> Result<Self> {
        let (x, w) = (self.to_rows(), v.to_rows());
        if x.dim() != w.dim() {
            return Err(SamplerError::Shape(format!(
                "mul_exp: {:?} and {:?}",
                x.dim(),
                w.dim()
            )));
        }
        self.with_rows(
            &ndarray::Zip::from(&x)
                .and(&w)
                .map_collect(|x, w| x * (b * w).exp()),
        )
    }
}

macro_rules! impl_state_ndarray {
    ($t:ty, $add_normals:path, $combine_add_normals:path, $all_finite:path) => {
        impl<D: Dimension> State for Array<$t, D> {
            type Rows = Array2<f64>;
            fn device_rows(&self) -> Array2<f64> {
                self.to_rows()
            }
            fn with_device_rows(&self, rows: &Array2<f64>) -> Result<Self> {
                self.with_rows(rows)
            }
            fn batch(&self) -> usize {
                self.shape().first().copied().unwrap_or(1)
            }
            fn sample_len(&self) -> usize {
                let b = self.batch();
                if b == 0 {
                    self.shape().iter().skip(1).product()
                } else {
                    self.len() / b
                }
            }
            fn to_rows(&self) -> Array2<f64> {
                let (b, n) = (self.batch(), self.sample_len());
                let v: Vec<f64> = self.iter().map(|x| *x as f64).collect();
                Array2::from_shape_vec((b, n), v).unwrap_or_else(|_| Array2::zeros((b, n)))
            }
            fn all_finite(&self) -> bool {
                match self.as_slice_memory_order() {
                    Some(v) => $all_finite(v),
                    None => self.iter().all(|v| v.is_finite()),
                }
            }
            fn randn_like(&self, seed: u64, first_index: u64, stream: u64) -> Result<Self> {
                let mut out = Array::zeros(self.raw_dim());
                out.add_randn(1.0, seed, first_index, stream)?;
                Ok(out)
            }
            fn add_randn(
                &mut self,
                c: f64,
                seed: u64,
                first_index: u64,
                stream: u64,
            ) -> Result<()> {
                let n = self.sample_len();
                // Standard-layout states are filled in place; others go through a row copy.
                if let Some(v) = self.as_slice_mut() {
                    $add_normals(seed, first_index, stream, c, n, v);
                    return Ok(());
                }
                let mut rows = self.to_rows();
                let flat = rows.as_slice_mut().ok_or_else(|| {
                    SamplerError::Shape("rows of a state are not contiguous".into())
                })?;
                rng::add_normal_rows(seed, first_index, stream, c, n, flat);
                *self = self.with_rows(&rows)?;
                Ok(())
            }
            fn combine_add_randn(
                &mut self,
                (a, terms, c): (f64, &[(f64, &Self)], f64),
                seed: u64,
                first_index: u64,
                stream: u64,
            ) -> Result<Option<bool>> {
                let n = self.sample_len();
                let shape = self.shape().to_vec();
                let ys: Option<Vec<(f64, &[$t])>> = terms
                    .iter()
                    .map(|(c, y)| {
                        (y.shape() == &shape[..])
                            .then_some(())
                            .and(y.as_slice())
                            .map(|y| (*c, y))
                    })
                    .collect();
                if let (Some(ys), Some(x)) = (ys, self.as_slice_mut()) {
                    return Ok(Some($combine_add_normals(
                        seed,
                        first_index,
                        stream,
                        n,
                        (a, &ys, c),
                        x,
                    )));
                }
                self.combine_assign(a, terms);
                self.add_randn(c, seed, first_index, stream)?;
                Ok(None)
            }
            fn with_rows(&self, rows: &Array2<f64>) -> Result<Self> {
                if rows.nrows() != self.batch() || rows.ncols() != self.sample_len() {
                    return Err(SamplerError::Shape(format!(
                        "rows {:?} for a state of shape {:?}",
                        rows.shape(),
                        self.shape()
                    )));
                }
                let v: Vec<$t> = rows.iter().map(|x| *x as $t).collect();
                Array::from_shape_vec(IxDyn(self.shape()), v)
                    .and_then(|a| a.into_dimensionality::<D>())
                    .map_err(|e| SamplerError::Shape(e.to_string()))
            }
        }
    };
}

impl_state_ndarray!(
    f64,
    rng::add_normal_rows,
    rng::combine_add_normal_rows,
    kernels::all_finite_f64
);
impl_state_ndarray!(
    f32,
    rng::add_normal_rows_f32,
    rng::combine_add_normal_rows_f32,
    kernels::all_finite_f32
);

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn noise_depends_on_seed_and_index_only() {
        let big = Array3::<f64>::zeros((5, 2, 3))
            .randn_like(7, 0, 3)
            .unwrap()
            .to_rows();
        let small = Array3::<f64>::zeros((2, 2, 3))
            .randn_like(7, 3, 3)
            .unwrap()
            .to_rows();
        assert_eq!(big.row(3), small.row(0));
        assert_eq!(big.row(4), small.row(1));
        let other = Array3::<f64>::zeros((5, 2, 3))
            .randn_like(7, 0, 4)
            .unwrap()
            .to_rows();
        assert_ne!(big.row(0), other.row(0));
        // f32 states see the same draws rounded.
        let f = Array3::<f32>::zeros((5, 2, 3))
            .randn_like(7, 0, 3)
            .unwrap()
            .to_rows();
        assert!((&f - &big).iter().all(|d| d.abs() < 1e-6));
        // In place: x + c·ε is the allocating lincomb exactly, also for non-standard layouts.
        let x = Array3::<f64>::from_shape_fn((5, 2, 3), |(i, j, k)| (i + 2 * j + 3 * k) as f64);
        let mut y = x.clone();
        y.add_randn(0.5, 7, 0, 3).unwrap();
        let eps = x.randn_like(7, 0, 3).unwrap();
        assert_eq!(y, x.lincomb(1.0, &eps, 0.5));
        let mut t = x.clone().reversed_axes();
        t.add_randn(0.5, 7, 0, 3).unwrap();
        let et = x.clone().reversed_axes().randn_like(7, 0, 3).unwrap();
        assert_eq!(t, x.clone().reversed_axes().lincomb(1.0, &et, 0.5));
        // The fused update with noise: the combination, then the noise, bit for bit.
        let d = x.mapv(|v| 0.5 - v);
        let mut want = x.clone();
        want.combine_assign(0.8, &[(0.2, &d), (-0.1, &x)]);
        want.add_randn(0.5, 7, 0, 3).unwrap();
        let mut got = x.clone();
        let finite = got
            .combine_add_randn((0.8, &[(0.2, &d), (-0.1, &x)], 0.5), 7, 0, 3)
            .unwrap();
        assert_eq!(got, want);
        // The fused pass checks what it wrote (a non-standard layout's fallback cannot tell).
        assert_eq!(finite, Some(true));
        let inf = x.mapv(|v| if v == 7.0 { f64::INFINITY } else { v });
        assert_eq!(
            got.combine_add_randn((0.8, &[(0.2, &inf)], 0.5), 7, 0, 3)
                .unwrap(),
            Some(false)
        );
        let mut got_t = x.clone().reversed_axes();
        let (dt, xt) = (d.clone().reversed_axes(), x.clone().reversed_axes());
        let finite_t = got_t
            .combine_add_randn((0.8, &[(0.2, &dt), (-0.1, &xt)], 0.5), 7, 0, 3)
            .unwrap();
        assert_eq!(finite_t, None);
        let mut want_t = x.clone().reversed_axes();
        want_t.combine_assign(0.8, &[(0.2, &dt), (-0.1, &xt)]);
        want_t.add_randn(0.5, 7, 0, 3).unwrap();
        assert_eq!(got_t, want_t);
    }

    #[test]
    fn rows_roundtrip_and_shape_errors() {
        let x = Array3::<f64>::from_shape_fn((2, 2, 2), |(i, j, k)| (i * 4 + j * 2 + k) as f64);
        let r = x.to_rows();
        assert_eq!(r.shape(), &[2, 4]);
        assert_eq!(r[[1, 3]], 7.0);
        assert_eq!(x.with_rows(&r).ok(), Some(x.clone()));
        assert!(x.with_rows(&Array2::zeros((3, 4))).is_err());
    }
}
