//! Gaussian random fields: radially averaged power spectrum of samples against the exact S(k).

use std::fmt::Write as _;

use ndarray::Array2;
use serde_json::{json, Value};

use crate::data::{Data, FieldSpec};
use crate::error::Result;

pub(super) fn eval_fields(
    spec: &FieldSpec,
    x: &Array2<f32>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let exact = spec.exact_radial_spectrum();
    let gen = spec.radial_spectrum(x.view())?;
    let ho = spec.radial_spectrum(data.held_out.x.view())?;
    let _ = writeln!(md, "### Fields: radially averaged power spectrum\n");
    let _ = writeln!(
        md,
        "| |k| | exact S | generated | generated / exact | held-out / exact |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut worst = 0.0f64;
    let mut worst_ref = 0.0f64;
    for (b, ((e, g), h)) in exact.iter().zip(&gen).zip(&ho).enumerate() {
        let _ = writeln!(
            md,
            "| {} | {e:.4e} | {g:.4e} | {:.3} | {:.3} |",
            b + 1,
            g / e,
            h / e
        );
        worst = worst.max((g / e).ln().abs());
        worst_ref = worst_ref.max((h / e).ln().abs());
    }
    let _ = writeln!(
        md,
        "\nmax |log(generated/exact)| = {worst:.3} (held-out data: {worst_ref:.3})\n"
    );
    head.push(format!(
        "fields: spectrum max |log ratio| {worst:.3} (held-out data {worst_ref:.3})"
    ));

    Ok(
        json!({"spectrum": {"exact": exact, "generated": gen, "held_out": ho, "max_abs_log_ratio": worst,
        "held_out_max_abs_log_ratio": worst_ref}}),
    )
}
