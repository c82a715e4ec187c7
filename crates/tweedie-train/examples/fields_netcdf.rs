//! The two-variable field data set of docs/results.md, as NetCDF, and the check of samples
//! against its exact statistics.
//!
//! ```text
//! cargo run --profile dev -p tweedie-train --example fields_netcdf -- write fields.nc 2048
//! cargo run --profile dev -p tweedie-train --example fields_netcdf -- check runs/x/samples.nc
//! ```
//!
//! `t` (K): mean 288, std 4, S ∝ |κ|^−3; `u` (m s⁻¹): mean 2, std 3, S ∝ |κ|^−2; their white
//! noises correlate with ρ = 0.6, so the pixel correlation is exact (FieldPair). `check`
//! reports, per variable, the spectrum's max and mean |log(samples/exact)| over the radial
//! bins, and the samples' correlation against the exact one; the same figures for as many
//! fresh exact draws give the floor set by the sample count.

use ndarray::{Array2, ArrayView2};
use tweedie_train::data::fields::{correlation, radial_spectrum, FieldPair, FieldSpec};
use tweedie_train::data::netcdf::write_grid_file;

const H: usize = 24;
const W: usize = 48;
const MEANS: [f64; 2] = [288.0, 2.0];

fn pair() -> Result<FieldPair, Box<dyn std::error::Error>> {
    Ok(FieldPair::new(
        FieldSpec::new(H, W, 3.0, 4.0)?,
        FieldSpec::new(H, W, 2.0, 3.0)?,
        0.6,
    )?)
}

fn log_errors(
    x: ArrayView2<f32>,
    spec: &FieldSpec,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let est = radial_spectrum(x, H, W)?;
    let errs: Vec<f64> = est
        .iter()
        .zip(spec.exact_radial_spectrum())
        .map(|(e, t)| (e / t).ln().abs())
        .collect();
    let max = errs.iter().copied().fold(0.0, f64::max);
    Ok((max, errs.iter().sum::<f64>() / errs.len() as f64))
}

fn report(
    label: &str,
    t: ArrayView2<f32>,
    u: ArrayView2<f32>,
    p: &FieldPair,
) -> Result<(), Box<dyn std::error::Error>> {
    let (tm, ta) = log_errors(t, &p.a)?;
    let (um, ua) = log_errors(u, &p.b)?;
    let r = correlation(t, u);
    println!(
        "| {label} | {} | {tm:.3} / {ta:.3} | {um:.3} / {ua:.3} | {r:.3} (exact {:.3}) |",
        t.nrows(),
        p.exact_correlation()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let p = pair()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["write", out, n] => {
            let n: usize = n.parse()?;
            let (t, u) = p.sample_range(0, n, 0);
            let (t, u) = (
                t.mapv(|v| v + MEANS[0] as f32),
                u.mapv(|v| v + MEANS[1] as f32),
            );
            let lat: Vec<f64> = (0..H).map(|i| -57.5 + 5.0 * i as f64).collect();
            let lon: Vec<f64> = (0..W).map(|i| 7.5 * i as f64).collect();
            write_grid_file(
                std::path::Path::new(out),
                &lat,
                &lon,
                &[("t", "K", t.view()), ("u", "m s-1", u.view())],
            )?;
            println!(
                "wrote {out}: {n} samples of t (K) and u (m s-1) on {H}×{W}, exact pixel correlation {:.4}",
                p.exact_correlation()
            );
        }
        ["check", samples] => {
            let f = netcdf::open(samples)?;
            let read = |name: &str, mean: f64| -> Result<Array2<f32>, Box<dyn std::error::Error>> {
                let v = f.variable(name).ok_or(format!("{samples}: no `{name}`"))?;
                let vals: Vec<f32> = v.get_values(..)?;
                let n = vals.len() / (H * W);
                Ok(Array2::from_shape_vec((n, H * W), vals)?.mapv(|x| x - mean as f32))
            };
            let (t, u) = (read("t", MEANS[0])?, read("u", MEANS[1])?);
            println!("| samples | n | t: spectrum max / mean \\|log ratio\\| | u: spectrum max / mean \\|log ratio\\| | correlation t–u |");
            println!("|---|---|---|---|---|");
            report("model", t.view(), u.view(), &p)?;
            // Fresh exact draws (indices past any training set) of the same count: the floor.
            let (te, ue) = p.sample_range(1 << 40, t.nrows(), 0);
            report("exact draws", te.view(), ue.view(), &p)?;
        }
        _ => return Err("usage: fields_netcdf write OUT.nc N | check SAMPLES.nc".into()),
    }
    Ok(())
}
