//! A small radix-2 FFT (Cooley–Tukey, iterative, in place), 1-D and 2-D, unitary scaling.
//!
//! The fields data set and its Wiener filter only need power-of-two square grids, so ~60
//! lines here avoid a dependency; it is tested against the O(n²) DFT.

/// A complex number in f64.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct C64 {
    pub re: f64,
    pub im: f64,
}

impl C64 {
    /// re + i·im.
    pub fn new(re: f64, im: f64) -> Self {
        C64 { re, im }
    }
    /// |z|².
    pub fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }
    fn mul(self, o: C64) -> C64 {
        C64::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
    fn add(self, o: C64) -> C64 {
        C64::new(self.re + o.re, self.im + o.im)
    }
    fn sub(self, o: C64) -> C64 {
        C64::new(self.re - o.re, self.im - o.im)
    }
    /// a·z for real a.
    pub fn scale(self, a: f64) -> C64 {
        C64::new(self.re * a, self.im * a)
    }
}

/// Unitary DFT in place: X_k = n^{-1/2} Σ_j x_j e^{∓2πi jk/n} (− forward, + inverse).
///
/// Panics if `buf.len()` is not a power of two: callers validate sizes first.
pub fn fft(buf: &mut [C64], inverse: bool) {
    let n = buf.len();
    assert!(n.is_power_of_two(), "fft length {n} is not a power of two");
    if n <= 1 {
        return;
    }
    // Bit-reversal permutation.
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if j > i {
            buf.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut len = 2;
    while len <= n {
        let ang = sign * 2.0 * std::f64::consts::PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                // Twiddles computed directly (not by repeated multiplication) to keep
                // rounding at machine precision for every size.
                let w = C64::new((ang * k as f64).cos(), (ang * k as f64).sin());
                let a = buf[start + k];
                let b = buf[start + k + len / 2].mul(w);
                buf[start + k] = a.add(b);
                buf[start + k + len / 2] = a.sub(b);
            }
        }
        len *= 2;
    }
    let s = 1.0 / (n as f64).sqrt();
    for z in buf.iter_mut() {
        *z = z.scale(s);
    }
}

/// Unitary 2-D DFT in place of an n×n row-major grid (rows, then columns).
pub fn fft2(buf: &mut [C64], n: usize, inverse: bool) {
    assert_eq!(buf.len(), n * n, "fft2 buffer is not n×n");
    for r in 0..n {
        fft(&mut buf[r * n..(r + 1) * n], inverse);
    }
    let mut col = vec![C64::default(); n];
    for c in 0..n {
        for r in 0..n {
            col[r] = buf[r * n + c];
        }
        fft(&mut col, inverse);
        for r in 0..n {
            buf[r * n + c] = col[r];
        }
    }
}

/// Signed integer frequency of index i on an n-point grid: i for i < n/2, i − n otherwise.
pub fn freq(i: usize, n: usize) -> i64 {
    if i < n / 2 {
        i as i64
    } else {
        i as i64 - n as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dft(x: &[C64], inverse: bool) -> Vec<C64> {
        let n = x.len();
        let sign = if inverse { 1.0 } else { -1.0 };
        (0..n)
            .map(|k| {
                let mut s = C64::default();
                for (j, &xj) in x.iter().enumerate() {
                    let a = sign * 2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                    s = s.add(xj.mul(C64::new(a.cos(), a.sin())));
                }
                s.scale(1.0 / (n as f64).sqrt())
            })
            .collect()
    }

    #[test]
    fn matches_the_naive_dft_and_inverts() {
        for &n in &[1usize, 2, 4, 8, 32] {
            let x: Vec<C64> = (0..n)
                .map(|i| C64::new((i as f64 * 0.37).sin() + 0.1 * i as f64, (i as f64).cos()))
                .collect();
            let mut y = x.clone();
            fft(&mut y, false);
            let want = dft(&x, false);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a.re - b.re).abs() < 1e-12 && (a.im - b.im).abs() < 1e-12,
                    "n={n}"
                );
            }
            fft(&mut y, true);
            for (a, b) in y.iter().zip(&x) {
                assert!((a.re - b.re).abs() < 1e-12 && (a.im - b.im).abs() < 1e-12);
            }
            // Unitary: Parseval.
            let e0: f64 = x.iter().map(|z| z.norm_sqr()).sum();
            let e1: f64 = want.iter().map(|z| z.norm_sqr()).sum();
            assert!((e0 - e1).abs() < 1e-9 * e0.max(1.0));
        }
    }

    #[test]
    fn fft2_of_a_plane_wave_is_a_single_mode() {
        let n = 8;
        let (kx, ky) = (3usize, 6usize);
        let mut buf: Vec<C64> = (0..n * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                let a = 2.0 * std::f64::consts::PI * ((ky * r + kx * c) as f64) / n as f64;
                C64::new(a.cos(), a.sin())
            })
            .collect();
        fft2(&mut buf, n, false);
        for (i, z) in buf.iter().enumerate() {
            let want = if i == ky * n + kx { n as f64 } else { 0.0 };
            assert!(
                (z.re - want).abs() < 1e-10 && z.im.abs() < 1e-10,
                "mode {i}: {z:?}"
            );
        }
        assert_eq!(freq(3, 8), 3);
        assert_eq!(freq(4, 8), -4);
        assert_eq!(freq(7, 8), -1);
    }
}
