//! Data without a reference metric: pixel mean and standard deviation against held-out data.

use std::fmt::Write as _;

use ndarray::Array2;
use serde_json::{json, Value};

use crate::data::Data;
use crate::error::Result;

pub(super) fn eval_generic(
    x: &Array2<f32>,
    data: &Data,
    md: &mut String,
    head: &mut Vec<String>,
) -> Result<Value> {
    let stats = |a: &Array2<f32>| {
        let m = a.mean().unwrap_or(0.0) as f64;
        let s = a
            .mapv(|v| (v as f64 - m).powi(2))
            .mean()
            .unwrap_or(0.0)
            .sqrt();
        (m, s)
    };
    let (mg, sg) = stats(x);
    let (mh, sh) = stats(&data.held_out.x);
    let _ = writeln!(
        md,
        "### Pixel statistics\n\n| | mean | std |\n|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| generated | {mg:.4} | {sg:.4} |\n| held-out | {mh:.4} | {sh:.4} |\n"
    );
    head.push(format!(
        "pixels: mean {mg:.3} / std {sg:.3} (held-out {mh:.3} / {sh:.3})"
    ));
    Ok(json!({"mean": mg, "std": sg, "held_out_mean": mh, "held_out_std": sh}))
}
