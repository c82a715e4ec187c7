//! Unitary 2-D DFT of any h×w grid through `rustfft` (mixed radix, Bluestein for large
//! primes), so fields and their metrics work on rectangular, non-power-of-two grids.

use std::sync::Arc;

pub use rustfft::num_complex::Complex64 as C64;
use rustfft::{Fft, FftPlanner};

/// Planned forward and inverse unitary 2-D DFTs of an h×w row-major grid:
/// X[k_y, k_x] = (hw)^{-1/2} Σ x[r, c] e^{∓2πi (k_y r/h + k_x c/w)} (− forward, + inverse).
pub struct Fft2 {
    h: usize,
    w: usize,
    row: [Arc<dyn Fft<f64>>; 2],
    col: [Arc<dyn Fft<f64>>; 2],
}

impl std::fmt::Debug for Fft2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fft2({}×{})", self.h, self.w)
    }
}

impl Clone for Fft2 {
    fn clone(&self) -> Self {
        Fft2 {
            h: self.h,
            w: self.w,
            row: self.row.clone(),
            col: self.col.clone(),
        }
    }
}

impl Fft2 {
    /// Plans the transforms of an h×w grid (h, w ≥ 1).
    pub fn new(h: usize, w: usize) -> Self {
        let mut p = FftPlanner::<f64>::new();
        Fft2 {
            h,
            w,
            row: [p.plan_fft_forward(w), p.plan_fft_inverse(w)],
            col: [p.plan_fft_forward(h), p.plan_fft_inverse(h)],
        }
    }

    /// Grid height and width.
    pub fn dims(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    /// Transforms `buf` (h·w values, row-major) in place; `scratch` is reused across calls.
    pub fn process(&self, buf: &mut [C64], inverse: bool, scratch: &mut Vec<C64>) {
        let (h, w) = (self.h, self.w);
        debug_assert_eq!(buf.len(), h * w);
        let i = usize::from(inverse);
        // Rows: rustfft transforms every consecutive chunk of length w.
        let need = self.row[i]
            .get_inplace_scratch_len()
            .max(self.col[i].get_inplace_scratch_len());
        if scratch.len() < need.max(h * w) {
            scratch.resize(need.max(h * w), C64::default());
        }
        self.row[i].process_with_scratch(buf, &mut scratch[..need]);
        // Columns: transpose to [w, h], transform rows of length h, transpose back.
        transpose(buf, &mut scratch[..h * w], h, w);
        buf.copy_from_slice(&scratch[..h * w]);
        self.col[i].process_with_scratch(buf, &mut scratch[..need]);
        transpose(buf, &mut scratch[..h * w], w, h);
        let s = 1.0 / ((h * w) as f64).sqrt();
        for (o, z) in buf.iter_mut().zip(scratch.iter()) {
            *o = z * s;
        }
    }
}

/// dst[c·rows + r] = src[r·cols + c] for a rows×cols row-major src.
fn transpose(src: &[C64], dst: &mut [C64], rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Signed integer frequency of index i on an n-point grid: i for i ≤ (n−1)/2, i − n otherwise.
pub fn freq(i: usize, n: usize) -> i64 {
    if i <= (n.max(1) - 1) / 2 {
        i as i64
    } else {
        i as i64 - n as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// O((hw)²) unitary 2-D DFT, straight from the definition.
    fn dft2(x: &[C64], h: usize, w: usize, inverse: bool) -> Vec<C64> {
        let sign = if inverse { 1.0 } else { -1.0 };
        let mut out = vec![C64::default(); h * w];
        for ky in 0..h {
            for kx in 0..w {
                let mut s = C64::default();
                for r in 0..h {
                    for c in 0..w {
                        let a = sign
                            * 2.0
                            * std::f64::consts::PI
                            * ((ky * r) as f64 / h as f64 + (kx * c) as f64 / w as f64);
                        s += x[r * w + c] * C64::new(a.cos(), a.sin());
                    }
                }
                out[ky * w + kx] = s / ((h * w) as f64).sqrt();
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_rectangular_and_odd_grids_and_inverts() {
        let mut scratch = Vec::new();
        for &(h, w) in &[(1usize, 1usize), (4, 8), (3, 5), (6, 10), (7, 4)] {
            let x: Vec<C64> = (0..h * w)
                .map(|i| C64::new((i as f64 * 0.37).sin() + 0.1 * i as f64, (i as f64).cos()))
                .collect();
            let f = Fft2::new(h, w);
            let mut y = x.clone();
            f.process(&mut y, false, &mut scratch);
            let want = dft2(&x, h, w, false);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).norm() < 1e-12, "{h}×{w}: {a} vs {b}");
            }
            f.process(&mut y, true, &mut scratch);
            for (a, b) in y.iter().zip(&x) {
                assert!((a - b).norm() < 1e-12, "{h}×{w} round trip");
            }
            // Unitary: Parseval.
            let e0: f64 = x.iter().map(|z| z.norm_sqr()).sum();
            let e1: f64 = want.iter().map(|z| z.norm_sqr()).sum();
            assert!((e0 - e1).abs() < 1e-9 * e0.max(1.0));
        }
    }

    #[test]
    fn a_plane_wave_is_a_single_mode() {
        let (h, w) = (6, 10);
        let (ky, kx) = (4usize, 3usize);
        let mut buf: Vec<C64> = (0..h * w)
            .map(|i| {
                let (r, c) = (i / w, i % w);
                let a = 2.0
                    * std::f64::consts::PI
                    * ((ky * r) as f64 / h as f64 + (kx * c) as f64 / w as f64);
                C64::new(a.cos(), a.sin())
            })
            .collect();
        Fft2::new(h, w).process(&mut buf, false, &mut Vec::new());
        for (i, z) in buf.iter().enumerate() {
            let want = if i == ky * w + kx {
                ((h * w) as f64).sqrt()
            } else {
                0.0
            };
            assert!(
                (z.re - want).abs() < 1e-10 && z.im.abs() < 1e-10,
                "mode {i}: {z}"
            );
        }
        assert_eq!((freq(3, 8), freq(4, 8), freq(7, 8)), (3, -4, -1));
        assert_eq!((freq(2, 5), freq(3, 5), freq(4, 5)), (2, -2, -1));
    }
}
