//! Elementwise kernels on contiguous f64/f32 buffers: the samplers' per-step arithmetic.
//!
//! They are plain functions of slices, not generic, so they are compiled here — once, at this
//! crate's optimisation level (the workspace builds tweedie-core optimised even in the dev
//! profile) — rather than inside every caller's generic code. Large states are split across
//! rayon threads; every element is computed the same way whatever the split, so results do
//! not depend on the thread count.

use rayon::prelude::*;

/// Elements per rayon task: below this (256 KiB of f64) a kernel runs on the calling thread.
const PAR_CHUNK: usize = 1 << 15;

macro_rules! kernels {
    ($t:ty, $bits:ty, $exp:expr, $axpby_assign:ident, $axpby:ident, $all_finite:ident) => {
        /// x ← a·x + b·y (each element combined in f64, rounded once).
        #[inline(never)]
        pub fn $axpby_assign(a: f64, x: &mut [$t], b: f64, y: &[$t]) {
            assert_eq!(x.len(), y.len(), "axpby: lengths differ");
            let f = |x: &mut [$t], y: &[$t]| {
                for (x, y) in x.iter_mut().zip(y) {
                    *x = (a * *x as f64 + b * *y as f64) as $t;
                }
            };
            if x.len() <= PAR_CHUNK {
                return f(x, y);
            }
            x.par_chunks_mut(PAR_CHUNK)
                .zip(y.par_chunks(PAR_CHUNK))
                .for_each(|(x, y)| f(x, y));
        }

        /// a·x + b·y as a new buffer.
        #[inline(never)]
        pub fn $axpby(a: f64, x: &[$t], b: f64, y: &[$t]) -> Vec<$t> {
            assert_eq!(x.len(), y.len(), "axpby: lengths differ");
            let f = |x: &[$t], y: &[$t]| -> Vec<$t> {
                x.iter()
                    .zip(y)
                    .map(|(x, y)| (a * *x as f64 + b * *y as f64) as $t)
                    .collect()
            };
            if x.len() <= PAR_CHUNK {
                return f(x, y);
            }
            let parts: Vec<Vec<$t>> = x
                .par_chunks(PAR_CHUNK)
                .zip(y.par_chunks(PAR_CHUNK))
                .map(|(x, y)| f(x, y))
                .collect();
            parts.concat()
        }

        /// Whether every element is finite (no early exit: a branch-free pass the compiler
        /// vectorises; states are finite almost always).
        #[inline(never)]
        pub fn $all_finite(x: &[$t]) -> bool {
            // Non-finite ⇔ all exponent bits set: an integer compare-and-or the compiler vectorises.
            x.chunks(1024).all(|c| {
                c.iter().fold(0 as $bits, |bad, v| {
                    bad | ((v.to_bits() & $exp) == $exp) as $bits
                }) == 0
            })
        }
    };
}

kernels!(
    f64,
    u64,
    0x7FF0_0000_0000_0000u64,
    axpby_assign_f64,
    axpby_f64,
    all_finite_f64
);
kernels!(
    f32,
    u32,
    0x7F80_0000u32,
    axpby_assign_f32,
    axpby_f32,
    all_finite_f32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_compute_elementwise_whatever_the_split() {
        for n in [0, 5, PAR_CHUNK + 3, 3 * PAR_CHUNK] {
            let x: Vec<f64> = (0..n).map(|i| (i % 97) as f64 * 0.25 - 3.0).collect();
            let y: Vec<f64> = (0..n).map(|i| (i % 13) as f64 - 6.5).collect();
            let want: Vec<f64> = x.iter().zip(&y).map(|(x, y)| 0.3 * x - 1.7 * y).collect();
            assert_eq!(axpby_f64(0.3, &x, -1.7, &y), want);
            let mut z = x.clone();
            axpby_assign_f64(0.3, &mut z, -1.7, &y);
            assert_eq!(z, want);
            let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
            let yf: Vec<f32> = y.iter().map(|v| *v as f32).collect();
            let wf: Vec<f32> = xf
                .iter()
                .zip(&yf)
                .map(|(x, y)| (0.3 * *x as f64 - 1.7 * *y as f64) as f32)
                .collect();
            assert_eq!(axpby_f32(0.3, &xf, -1.7, &yf), wf);
            assert!(all_finite_f64(&x) && all_finite_f32(&xf));
            if n > 0 {
                let mut bad = x.clone();
                bad[n - 1] = f64::NAN;
                assert!(!all_finite_f64(&bad));
                bad[n - 1] = f64::NEG_INFINITY;
                assert!(!all_finite_f64(&bad));
            }
        }
    }
}
