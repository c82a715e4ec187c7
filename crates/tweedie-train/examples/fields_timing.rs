//! Times the FFT-based fields computations (draws, Wiener filter, radial spectrum) on a few
//! grids: `cargo run --profile dev -p tweedie-train --example fields_timing`.
//!
//! Prints milliseconds per call (best of 3), so runs before and after a change to the FFT
//! can be set side by side (docs/results.md).

use std::time::Instant;

use ndarray::Array2;
use tweedie_train::data::FieldSpec;

fn best_ms(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = 256;
    println!("| grid | draw {n} fields (ms) | Wiener filter {n} (ms) | radial spectrum {n} (ms) |");
    println!("|---|---|---|---|");
    for &(h, w) in &[
        (32usize, 32usize),
        (64, 64),
        (128, 128),
        (24, 48),
        (121, 240),
    ] {
        let Ok(spec) = FieldSpec::new(h, w, 3.0, 0.5) else {
            println!("| {h}×{w} | unsupported | | |");
            continue;
        };
        let x = spec.sample_range(0, n, 1);
        let xd: Array2<f64> = x.mapv(f64::from);
        let sig = vec![0.3; n];
        let t_draw = best_ms(|| {
            std::hint::black_box(spec.sample_range(0, n, 1));
        });
        let t_wiener = best_ms(|| {
            std::hint::black_box(spec.wiener(xd.view(), &sig).ok());
        });
        let t_spec = best_ms(|| {
            std::hint::black_box(spec.radial_spectrum(x.view()).ok());
        });
        println!("| {h}×{w} | {t_draw:.1} | {t_wiener:.1} | {t_spec:.1} |");
    }
    Ok(())
}
