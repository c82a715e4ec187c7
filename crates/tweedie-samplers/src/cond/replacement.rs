//! Replacement: a per-step correction that sets the observed coordinates to the measurement
//! (noised to the next σ̃) after every step of a sampler on a fixed grid.

use ndarray::{Array1, Array2, Axis};
use tweedie_core::rng::normal_rows;
use tweedie_core::{Invalid, LinearSpace};

use crate::error::{Result, SamplerError};
use crate::kind::SamplerKind;
use crate::ops::ForwardModel;
use crate::rows::Rows;
use crate::sampler::{NoiseKey, StepHook};
use crate::state::State;

/// What replacement needs: a selection operator (a mask), and a sampler on a fixed grid (it
/// acts between the grid's steps).
pub fn check(op: &dyn ForwardModel, kind: &SamplerKind) -> Result<()> {
    check_operator(op)?;
    if matches!(kind, SamplerKind::Adaptive { .. }) {
        return Err(SamplerError::invalid(
            "sampler",
            "adaptive",
            "replacement needs a fixed grid",
        ));
    }
    Ok(())
}

fn check_operator(op: &dyn ForwardModel) -> Result<()> {
    if !op.is_selection() {
        return Err(SamplerError::invalid(
            "operator",
            op.describe(),
            "replacement needs a mask (selection) operator",
        ));
    }
    Ok(())
}

/// Replacement for selection operators: x̃[obs] ← y + σ̃′·ε after every step (σ̃′ = 0: exactly y).
pub struct Replacement<'a> {
    op: &'a dyn ForwardModel,
    y: Array2<f64>,
}

impl<'a> Replacement<'a> {
    /// Replacement of the coordinates `op` selects by `y`.
    pub fn new(op: &'a dyn ForwardModel, y: &Array1<f64>) -> Result<Self> {
        check_operator(op)?;
        if y.len() != op.out_dim() {
            return Err(SamplerError::Shape(format!(
                "measurement has {} entries, operator output {}",
                y.len(),
                op.out_dim()
            )));
        }
        Ok(Replacement {
            op,
            y: y.clone().insert_axis(Axis(0)),
        })
    }
}

impl<S: State> StepHook<S> for Replacement<'_> {
    /// Observed coordinates ← y + σ̃′·z on the state's rows where they live (only the keyed
    /// noise z is made on the host, as every sampler's noise is).
    fn after_step(&self, _step: usize, sigma_next: f64, x: S, key: NoiseKey) -> Result<S> {
        let rows = x.device_rows();
        let b = rows.nrows();
        let z = normal_rows(key.seed, key.first_index, b, key.stream, self.op.out_dim());
        let target = rows.host_like(&(&self.y + &(z * sigma_next)))?;
        let keep = rows.lincomb(1.0, &rows.apply(self.op)?.adjoint(self.op)?, -1.0);
        x.with_device_rows(&keep.lincomb(1.0, &target.adjoint(self.op)?, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Blur, Boundary, Downsample, MatrixOp};

    /// The refusal names the operator's kind and shape, not its `Debug` form (a blur's kernel,
    /// a matrix's entries).
    #[test]
    fn refusal_names_the_operator_kind_and_shape() {
        let blur = Blur::new(1, 16, 16, 1.5, 4, 0.05)
            .unwrap()
            .with_boundary(Boundary::Periodic);
        let down = Downsample::new(1, 16, 16, 4, 0.02).unwrap();
        let matrix = MatrixOp::new(ndarray::Array2::eye(3), 0.1).unwrap();
        let cases: [(&dyn ForwardModel, &str); 3] = [
            (
                &blur,
                "a 9×9 blur (periodic boundary) of [1, 16, 16] images",
            ),
            (&down, "a 4× downsample of [1, 16, 16] images to [1, 4, 4]"),
            (&matrix, "a 3×3 matrix"),
        ];
        for (op, name) in cases {
            let e = check(op, &SamplerKind::Heun).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "invalid value for `operator`: {name} (replacement needs a mask (selection) operator)"
                )
            );
        }
    }
}
