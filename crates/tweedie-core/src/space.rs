//! A small linear-space trait that conversions and samplers are generic over.

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
}

// TODO(core helper): impls for f64, ndarray::Array<f32|f64, D>, tch::Tensor (feature "tch").
