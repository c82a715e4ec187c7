//! A small linear-space trait that conversions and samplers are generic over.

use ndarray::{Array, Dimension, Zip};

use crate::kernels;

/// Vector-space operations on a sampler state (f64, ndarray arrays, tch tensors).
///
/// All scalars are f64: formulas are evaluated in f64 and only the state may be f32.
pub trait LinearSpace: Clone {
    /// a·self + b·other.
    fn lincomb(&self, a: f64, other: &Self, b: f64) -> Self;
    /// a·self.
    fn scale(&self, a: f64) -> Self;
    /// Euclidean inner product over all elements.
    fn dot(&self, other: &Self) -> f64;
    /// A zero element of the same shape.
    fn zeros_like(&self) -> Self;
    /// self ← a·self + b·other, in place where the type allows (samplers' steps allocate nothing).
    fn lincomb_assign(&mut self, a: f64, other: &Self, b: f64) {
        *self = self.lincomb(a, other, b);
    }
    /// self ← a·self + Σⱼ cⱼ·yⱼ: the values of `lincomb_assign(a, y₀, c₀)` followed by
    /// `lincomb_assign(1, yⱼ, cⱼ)`, in one pass over self where the type allows.
    ///
    /// Returns whether every element of the result is finite when that pass could tell at no
    /// cost (contiguous arrays), else `None`: a caller that must check then checks itself.
    fn combine_assign(&mut self, a: f64, terms: &[(f64, &Self)]) -> Option<bool> {
        combine_assign_per_term(self, a, terms)
    }
    /// self ← Σⱼ cⱼ·yⱼ over at least one term (self only gives the storage): the values of
    /// `y₀.lincomb(c₀, y₁, c₁)` (one term: `y₀.scale(c₀)`) followed by `lincomb_assign(1, yⱼ, cⱼ)`,
    /// written into self's buffer without allocating where the type allows. No terms: unchanged.
    /// Returns what [`LinearSpace::combine_assign`] does.
    fn assign_combination(&mut self, terms: &[(f64, &Self)]) -> Option<bool> {
        assign_combination_per_term(self, terms)
    }
    /// d ← p·self + q·z (self before the update; d only gives the storage), then
    /// self ← a·self + Σⱼ cⱼ·yⱼ where a term given as `None` is d: a multistep step that forms
    /// its newest history entry (e.g. d = (x̃ − D)/σ̃) in the same pass over self where the type
    /// allows. The values of `d.assign_combination(&[(p, self), (q, z)])` followed by
    /// `self.combine_assign(a, terms)`; returns what `combine_assign` does.
    fn combine_assign_forming(
        &mut self,
        d: &mut Self,
        (p, q, z): (f64, f64, &Self),
        a: f64,
        terms: &[(f64, Option<&Self>)],
    ) -> Option<bool> {
        forming_in_two_passes(self, d, (p, q, z), a, terms)
    }
}

/// [`LinearSpace::combine_assign_forming`] as its two passes: the trait's default, and the
/// arrays' path when a buffer is not contiguous.
fn forming_in_two_passes<S: LinearSpace>(
    x: &mut S,
    d: &mut S,
    (p, q, z): (f64, f64, &S),
    a: f64,
    terms: &[(f64, Option<&S>)],
) -> Option<bool> {
    d.assign_combination(&[(p, x), (q, z)]);
    let terms: Vec<(f64, &S)> = terms.iter().map(|(c, y)| (*c, y.unwrap_or(d))).collect();
    x.combine_assign(a, &terms)
}

/// The terms of a forming pass over buffers (`None`: the buffer being formed).
type FormingTerms<'a, T> = Vec<(f64, Option<&'a [T]>)>;

/// [`LinearSpace::combine_assign_forming`]'s contiguous buffers: z's and every given term's
/// (`None` stays `None`: d), when they all have `shape` and standard layout.
fn forming_slices<'a, T, D: Dimension>(
    shape: &[usize],
    z: &'a Array<T, D>,
    terms: &[(f64, Option<&'a Array<T, D>>)],
) -> Option<(&'a [T], FormingTerms<'a, T>)> {
    let slice = |y: &'a Array<T, D>| (y.shape() == shape).then_some(()).and(y.as_slice());
    let ys = terms
        .iter()
        .map(|(c, y)| match y {
            None => Some((*c, None)),
            Some(y) => slice(y).map(|y| (*c, Some(y))),
        })
        .collect::<Option<Vec<_>>>()?;
    Some((slice(z)?, ys))
}

/// [`LinearSpace::combine_assign`] one term at a time: the trait's default, and the arrays'
/// path when a term is not contiguous.
fn combine_assign_per_term<S: LinearSpace>(x: &mut S, a: f64, terms: &[(f64, &S)]) -> Option<bool> {
    match terms.split_first() {
        None => *x = x.scale(a),
        Some(((c0, y0), rest)) => {
            x.lincomb_assign(a, y0, *c0);
            for (c, y) in rest {
                x.lincomb_assign(1.0, y, *c);
            }
        }
    }
    None
}

/// [`LinearSpace::assign_combination`] one term at a time: the trait's default, and the arrays'
/// path when a term is not contiguous.
fn assign_combination_per_term<S: LinearSpace>(x: &mut S, terms: &[(f64, &S)]) -> Option<bool> {
    let ((c0, y0), rest) = terms.split_first()?;
    let rest = match rest.split_first() {
        None => {
            *x = y0.scale(*c0);
            return None;
        }
        Some(((c1, y1), rest)) => {
            *x = y0.lincomb(*c0, y1, *c1);
            rest
        }
    };
    for (c, y) in rest {
        x.lincomb_assign(1.0, y, *c);
    }
    None
}

/// The contiguous buffers of `terms` when they all have `shape` and standard layout: what the
/// fused kernels take (else the trait's pass-per-term fallback runs).
fn term_slices<'a, T, D: Dimension>(
    shape: &[usize],
    terms: &[(f64, &'a Array<T, D>)],
) -> Option<Vec<(f64, &'a [T])>> {
    terms
        .iter()
        .map(|(c, y)| {
            (y.shape() == shape)
                .then_some(())
                .and(y.as_slice())
                .map(|y| (*c, y))
        })
        .collect()
}

impl LinearSpace for f64 {
    fn lincomb(&self, a: f64, other: &Self, b: f64) -> Self {
        a * self + b * other
    }
    fn scale(&self, a: f64) -> Self {
        a * self
    }
    fn dot(&self, other: &Self) -> f64 {
        self * other
    }
    fn zeros_like(&self) -> Self {
        0.0
    }
}

impl<D: Dimension> LinearSpace for Array<f64, D> {
    fn lincomb(&self, a: f64, other: &Self, b: f64) -> Self {
        if let (Some(x), Some(y), true) = (
            self.as_slice(),
            other.as_slice(),
            self.shape() == other.shape(),
        ) {
            if let Ok(v) = Array::from_shape_vec(self.raw_dim(), kernels::axpby_f64(a, x, b, y)) {
                return v;
            }
        }
        Zip::from(self)
            .and(other)
            .map_collect(|&x, &y| a * x + b * y)
    }
    fn scale(&self, a: f64) -> Self {
        self.mapv(|x| a * x)
    }
    fn dot(&self, other: &Self) -> f64 {
        Zip::from(self)
            .and(other)
            .fold(0.0, |acc, &x, &y| acc + x * y)
    }
    fn zeros_like(&self) -> Self {
        Array::zeros(self.raw_dim())
    }
    fn lincomb_assign(&mut self, a: f64, other: &Self, b: f64) {
        if self.shape() == other.shape() {
            if let (Some(y), Some(x)) = (other.as_slice(), self.as_slice_mut()) {
                return kernels::axpby_assign_f64(a, x, b, y);
            }
        }
        Zip::from(self)
            .and(other)
            .for_each(|x, &y| *x = a * *x + b * y);
    }
    fn combine_assign(&mut self, a: f64, terms: &[(f64, &Self)]) -> Option<bool> {
        if let Some(ys) = term_slices(self.shape(), terms) {
            if let Some(x) = self.as_slice_mut() {
                return Some(kernels::combine_assign_f64(a, x, &ys));
            }
        }
        combine_assign_per_term(self, a, terms)
    }
    fn assign_combination(&mut self, terms: &[(f64, &Self)]) -> Option<bool> {
        if let (false, Some(ys)) = (terms.is_empty(), term_slices(self.shape(), terms)) {
            if let Some(out) = self.as_slice_mut() {
                return Some(kernels::combine_into_f64(out, &ys));
            }
        }
        assign_combination_per_term(self, terms)
    }
    fn combine_assign_forming(
        &mut self,
        d: &mut Self,
        (p, q, z): (f64, f64, &Self),
        a: f64,
        terms: &[(f64, Option<&Self>)],
    ) -> Option<bool> {
        let shape = self.shape().to_vec();
        if let (Some((z, ys)), true) = (forming_slices(&shape, z, terms), d.shape() == shape) {
            if let (Some(x), Some(d)) = (self.as_slice_mut(), d.as_slice_mut()) {
                return Some(kernels::combine_assign_forming_f64(a, x, d, (p, q, z), &ys));
            }
        }
        forming_in_two_passes(self, d, (p, q, z), a, terms)
    }
}

/// f32 states: each element is combined in f64 and rounded once.
impl<D: Dimension> LinearSpace for Array<f32, D> {
    fn lincomb(&self, a: f64, other: &Self, b: f64) -> Self {
        if let (Some(x), Some(y), true) = (
            self.as_slice(),
            other.as_slice(),
            self.shape() == other.shape(),
        ) {
            if let Ok(v) = Array::from_shape_vec(self.raw_dim(), kernels::axpby_f32(a, x, b, y)) {
                return v;
            }
        }
        Zip::from(self)
            .and(other)
            .map_collect(|&x, &y| (a * x as f64 + b * y as f64) as f32)
    }
    fn scale(&self, a: f64) -> Self {
        self.mapv(|x| (a * x as f64) as f32)
    }
    fn dot(&self, other: &Self) -> f64 {
        Zip::from(self)
            .and(other)
            .fold(0.0, |acc, &x, &y| acc + x as f64 * y as f64)
    }
    fn zeros_like(&self) -> Self {
        Array::zeros(self.raw_dim())
    }
    fn lincomb_assign(&mut self, a: f64, other: &Self, b: f64) {
        if self.shape() == other.shape() {
            if let (Some(y), Some(x)) = (other.as_slice(), self.as_slice_mut()) {
                return kernels::axpby_assign_f32(a, x, b, y);
            }
        }
        Zip::from(self)
            .and(other)
            .for_each(|x, &y| *x = (a * *x as f64 + b * y as f64) as f32);
    }
    fn combine_assign(&mut self, a: f64, terms: &[(f64, &Self)]) -> Option<bool> {
        if let Some(ys) = term_slices(self.shape(), terms) {
            if let Some(x) = self.as_slice_mut() {
                return Some(kernels::combine_assign_f32(a, x, &ys));
            }
        }
        combine_assign_per_term(self, a, terms)
    }
    fn assign_combination(&mut self, terms: &[(f64, &Self)]) -> Option<bool> {
        if let (false, Some(ys)) = (terms.is_empty(), term_slices(self.shape(), terms)) {
            if let Some(out) = self.as_slice_mut() {
                return Some(kernels::combine_into_f32(out, &ys));
            }
        }
        assign_combination_per_term(self, terms)
    }
    fn combine_assign_forming(
        &mut self,
        d: &mut Self,
        (p, q, z): (f64, f64, &Self),
        a: f64,
        terms: &[(f64, Option<&Self>)],
    ) -> Option<bool> {
        let shape = self.shape().to_vec();
        if let (Some((z, ys)), true) = (forming_slices(&shape, z, terms), d.shape() == shape) {
            if let (Some(x), Some(d)) = (self.as_slice_mut(), d.as_slice_mut()) {
                return Some(kernels::combine_assign_forming_f32(a, x, d, (p, q, z), &ys));
            }
        }
        forming_in_two_passes(self, d, (p, q, z), a, terms)
    }
}

/// A tch tensor as a sampler state. `tch::Tensor` is not `Clone`; this wrapper's `clone` is a
/// shallow clone (shared storage), which is sound because [`LinearSpace`] ops never mutate.
#[cfg(feature = "tch")]
#[derive(Debug)]
pub struct TchTensor(pub tch::Tensor);

#[cfg(feature = "tch")]
impl Clone for TchTensor {
    fn clone(&self) -> Self {
        TchTensor(self.0.shallow_clone())
    }
}

#[cfg(feature = "tch")]
impl From<tch::Tensor> for TchTensor {
    fn from(t: tch::Tensor) -> Self {
        TchTensor(t)
    }
}

#[cfg(feature = "tch")]
impl std::ops::Deref for TchTensor {
    type Target = tch::Tensor;
    fn deref(&self) -> &tch::Tensor {
        &self.0
    }
}

#[cfg(feature = "tch")]
impl LinearSpace for TchTensor {
    fn lincomb(&self, a: f64, other: &Self, b: f64) -> Self {
        TchTensor(&self.0 * a + &other.0 * b)
    }
    fn scale(&self, a: f64) -> Self {
        TchTensor(&self.0 * a)
    }
    fn dot(&self, other: &Self) -> f64 {
        (&self.0 * &other.0)
            .sum(tch::Kind::Double)
            .double_value(&[])
    }
    fn zeros_like(&self) -> Self {
        TchTensor(self.0.zeros_like())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    #[test]
    fn ndarray_ops() {
        let x = arr2(&[[1.0, 2.0], [3.0, 4.0]]);
        let y = arr2(&[[0.5, -1.0], [2.0, 0.0]]);
        assert_eq!(x.lincomb(2.0, &y, -1.0), arr2(&[[1.5, 5.0], [4.0, 8.0]]));
        assert_eq!(LinearSpace::dot(&x, &y), 0.5 - 2.0 + 6.0);
        assert_eq!(x.scale(0.5), arr2(&[[0.5, 1.0], [1.5, 2.0]]));
        assert_eq!(x.zeros_like(), arr2(&[[0.0, 0.0], [0.0, 0.0]]));
        let mut z = x.clone();
        z.lincomb_assign(2.0, &y, -1.0);
        assert_eq!(z, x.lincomb(2.0, &y, -1.0));
        let mut zf = arr1(&[1.0_f32, 2.0]);
        zf.lincomb_assign(0.1, &arr1(&[1.0_f32, 2.0]), 0.2);
        assert_eq!(zf, arr1(&[(0.3_f64) as f32, (0.6_f64) as f32]));
        let xf = arr1(&[1.0_f32, 2.0]);
        assert_eq!(
            xf.lincomb(0.1, &xf, 0.2),
            arr1(&[(0.3_f64) as f32, (0.6_f64) as f32])
        );
        assert_eq!(LinearSpace::dot(&xf, &xf), 5.0);
        // Fused combinations equal the pass-per-term sequence, for standard and transposed layouts.
        let w = arr2(&[[0.25, -3.0], [1.0, 0.125]]);
        let mut seq = x.clone();
        seq.lincomb_assign(0.3, &y, -1.7);
        seq.lincomb_assign(1.0, &w, 0.9);
        for (a, b, c) in [
            (x.clone(), y.clone(), w.clone()),
            (x.t().to_owned(), y.t().to_owned(), w.t().to_owned()),
        ] {
            let mut z = a.clone();
            let finite = z.combine_assign(0.3, &[(-1.7, &b), (0.9, &c)]);
            let mut into = Array::zeros(a.raw_dim());
            let finite_into = into.assign_combination(&[(0.3, &a), (-1.7, &b), (0.9, &c)]);
            let want = if a == x {
                // The fused pass checks what it wrote; the per-term fallback cannot tell.
                assert_eq!((finite, finite_into), (Some(true), Some(true)));
                seq.clone()
            } else {
                assert_eq!((finite, finite_into), (None, None));
                seq.t().to_owned()
            };
            assert_eq!(z, want);
            assert_eq!(into, want);
        }
        // Forming d = (x − y)/s in the update's pass: the two passes' values, contiguous or not.
        for (a, b, c) in [
            (x.clone(), y.clone(), w.clone()),
            (x.t().to_owned(), y.t().to_owned(), w.t().to_owned()),
        ] {
            let mut d_want = Array::zeros(a.raw_dim());
            d_want.assign_combination(&[(1.0 / 0.3, &a), (-1.0 / 0.3, &b)]);
            let mut want = a.clone();
            want.combine_assign(0.9, &[(0.4, &c), (-0.7, &d_want)]);
            let (mut d, mut got) = (Array::zeros(a.raw_dim()), a.clone());
            let finite = got.combine_assign_forming(
                &mut d,
                (1.0 / 0.3, -1.0 / 0.3, &b),
                0.9,
                &[(0.4, Some(&c)), (-0.7, None)],
            );
            assert_eq!((got, d), (want, d_want));
            assert_eq!(finite, if a == x { Some(true) } else { None });
        }
        let mut z = x.clone();
        z.combine_assign(0.5, &[]);
        assert_eq!(z, x.scale(0.5));
        let inf = arr2(&[[0.0, f64::INFINITY], [0.0, 0.0]]);
        assert_eq!(z.combine_assign(1.0, &[(1.0, &inf)]), Some(false));
        assert_eq!(z.assign_combination(&[(1.0, &x), (0.0, &inf)]), Some(false));
        let mut into = arr2(&[[0.0]]);
        into.assign_combination(&[(2.0, &x)]);
        assert_eq!(into, x.scale(2.0));
        assert_eq!(3.0_f64.lincomb(2.0, &1.0, 4.0), 10.0);
    }

    #[cfg(feature = "tch")]
    #[test]
    fn tch_ops() {
        let x = TchTensor(tch::Tensor::from_slice(&[1.0_f32, 2.0, 3.0]));
        let y = TchTensor(tch::Tensor::from_slice(&[0.5_f32, -1.0, 2.0]));
        let z = x.lincomb(2.0, &y, -1.0);
        assert_eq!(Vec::<f32>::try_from(&z.0).unwrap(), vec![1.5, 5.0, 4.0]);
        assert_eq!(LinearSpace::dot(&x, &y), 0.5 - 2.0 + 6.0);
        assert_eq!(
            Vec::<f32>::try_from(&x.scale(0.5).0).unwrap(),
            vec![0.5, 1.0, 1.5]
        );
        assert_eq!(LinearSpace::dot(&x.zeros_like(), &x), 0.0);
    }
}
