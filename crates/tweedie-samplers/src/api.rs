//! One-call entry points for the CLI (`tweedie sample`).

use ndarray::{Array2, ArrayD, IxDyn};
use tweedie_core::{Process, Timer};

use crate::error::{Result, SamplerError};
use crate::kind::SamplerSpec;
use crate::model::Model;
use crate::sampler::{Init, Sampler};

/// What [`sample`] returns: samples `[n, …]` and the NFE used per batch.
#[derive(Debug, Clone)]
pub struct Samples {
    pub x: ArrayD<f64>,
    pub nfe: usize,
}

/// Draw `n` samples of shape `sample_shape` with `spec` on `timer`'s grid under `process`.
///
/// Starts from `latents` (x_T, shape `[n, …]`) when given, else from x_T ~ N(0, σ(T)²I), or from
/// the model's exact p_T when `exact_start` (analytic models). Sample i depends on (seed, i) only.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    model: &dyn Model<ArrayD<f64>>,
    process: &dyn Process,
    timer: &dyn Timer,
    spec: &SamplerSpec,
    sample_shape: &[usize],
    n: usize,
    seed: u64,
    latents: Option<ArrayD<f64>>,
    exact_start: bool,
) -> Result<Samples> {
    spec.validate()?;
    if n == 0 {
        return Err(SamplerError::invalid("n", 0, "must be at least 1"));
    }
    let mut shape = vec![n];
    shape.extend_from_slice(sample_shape);
    let grid = timer.grid(process, spec.steps)?;
    let d = Sampler::new(process, grid, spec.kind.clone(), model)?.seed(seed);
    let template = ArrayD::<f64>::zeros(IxDyn(&shape));
    let init = match latents {
        Some(l) => {
            if l.shape() != shape.as_slice() {
                return Err(SamplerError::Shape(format!(
                    "latents have shape {:?}, expected {:?}",
                    l.shape(),
                    shape
                )));
            }
            Init::Latents(l)
        }
        None if exact_start => Init::Exact(template),
        None => Init::Noise(template),
    };
    let out = d.run(init, None)?;
    Ok(Samples {
        x: out.samples,
        nfe: out.nfe,
    })
}

/// [`sample`] for flat samples `[n, dim]` (e.g. an analytic mixture).
#[allow(clippy::too_many_arguments)]
pub fn sample_rows(
    model: &dyn Model<ArrayD<f64>>,
    process: &dyn Process,
    timer: &dyn Timer,
    spec: &SamplerSpec,
    dim: usize,
    n: usize,
    seed: u64,
    exact_start: bool,
) -> Result<(Array2<f64>, usize)> {
    let s = sample(
        model,
        process,
        timer,
        spec,
        &[dim],
        n,
        seed,
        None,
        exact_start,
    )?;
    let x =
        s.x.into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| SamplerError::Shape(e.to_string()))?;
    Ok((x, s.nfe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixture::MixtureModel;
    use ndarray::array;
    use tweedie_core::process::Edm;
    use tweedie_core::TimerKind;

    #[test]
    fn sample_checks_inputs_and_is_seeded() {
        let mix = MixtureModel::new(
            &[1.0],
            array![[1.0, -1.0]],
            vec![array![[0.5, 0.1], [0.1, 0.3]]],
        )
        .unwrap();
        let p = Edm {
            sigma_min: 0.002,
            sigma_max: 80.0,
        };
        let spec = SamplerSpec::parse("heun", 8).unwrap();
        let t = TimerKind::edm();
        let a = sample_rows(&mix, &p, &t, &spec, 2, 20, 3, true).unwrap();
        let b = sample_rows(&mix, &p, &t, &spec, 2, 20, 3, true).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, 15);
        let c = sample_rows(&mix, &p, &t, &spec, 2, 20, 4, false).unwrap();
        assert_ne!(a.0, c.0);
        assert!(sample(&mix, &p, &t, &spec, &[2], 0, 0, None, false).is_err());
        let bad = ArrayD::<f64>::zeros(IxDyn(&[5, 3]));
        let e = sample(&mix, &p, &t, &spec, &[2], 5, 0, Some(bad), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[5, 3]"), "{e}");
        let zero = SamplerSpec {
            kind: crate::SamplerKind::Euler,
            steps: 0,
        };
        assert!(sample(&mix, &p, &t, &zero, &[2], 5, 0, None, false).is_err());
    }
}
