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
    ($t:ty, $axpby_assign:ident, $axpby:ident, $all_finite:ident) => {
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

        /// Whether every element is finite (a branch-free pass per 1024 elements, AVX2 where
        /// the CPU has it; states are finite almost always).
        #[inline(never)]
        pub fn $all_finite(x: &[$t]) -> bool {
            x.chunks(1024).all(|c| {
                #[cfg(target_arch = "x86_64")]
                if has_avx2() {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2::finite_part(c) };
                }
                finite_part(c)
            })
        }
    };
}

/// An element type of a state buffer: values are combined in f64 and rounded to the type.
pub trait Elem: Copy + Send + Sync {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// NaN or ±∞ (`is_finite` is |v| < ∞: a float compare that vectorises, where the exponent
    /// bits' 64-bit integer compare has no SSE2 instruction), so the update passes or it into
    /// a flag and check what they write without a pass of their own.
    fn non_finite(self) -> bool;
}

impl Elem for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn non_finite(self) -> bool {
        !self.is_finite()
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn non_finite(self) -> bool {
        !self.is_finite()
    }
}

/// Runs `f(part, offset)` over `out` in parts of PAR_CHUNK elements on rayon threads (on the
/// calling thread for small buffers); true when every part returned true. Every part runs
/// (no short-circuit: the parts write).
#[inline(always)]
fn for_parts<T: Send>(out: &mut [T], f: impl Fn(&mut [T], usize) -> bool + Sync) -> bool {
    if out.len() <= PAR_CHUNK {
        return f(out, 0);
    }
    out.par_chunks_mut(PAR_CHUNK)
        .enumerate()
        .map(|(k, part)| f(part, k * PAR_CHUNK))
        .reduce(|| true, |a, b| a & b)
}

/// One element of a combination: `start` (a·x or c₀·y₀, exact in f64 registers) plus the
/// terms in order, rounded to the element type after each term, so that the result is bit for
/// bit that of the same terms applied by one `axpby` pass each.
#[inline(always)]
pub fn combine_element<T: Elem, const N: usize>(
    start: f64,
    cs: &[f64; N],
    ys: &[&[T]; N],
    i: usize,
) -> T {
    if N == 0 {
        return T::from_f64(start);
    }
    let mut t = start;
    for j in 0..N {
        t = T::from_f64(t + cs[j] * ys[j][i].to_f64()).to_f64();
    }
    T::from_f64(t)
}

/// One part of [`combine_assign_n`]: x[i] ← a·x[i] + Σⱼ cⱼ·yⱼ[i]; true when every new value is
/// finite (the check rides in the same loop).
#[inline(always)]
fn assign_part<T: Elem, const N: usize>(
    a: f64,
    x: &mut [T],
    cs: &[f64; N],
    ys: &[&[T]; N],
) -> bool {
    let mut bad = false;
    for (i, x) in x.iter_mut().enumerate() {
        let v = combine_element(a * x.to_f64(), cs, ys, i);
        bad |= v.non_finite();
        *x = v;
    }
    !bad
}

/// One part of [`combine_into_n`]: out[i] ← c₀·y₀[i] + Σⱼ cⱼ·yⱼ[i]; true when every value
/// written is finite.
#[inline(always)]
fn into_part<T: Elem, const N: usize>(
    out: &mut [T],
    c0: f64,
    y0: &[T],
    cs: &[f64; N],
    ys: &[&[T]; N],
) -> bool {
    let mut bad = false;
    for (i, o) in out.iter_mut().enumerate() {
        let v = combine_element(c0 * y0[i].to_f64(), cs, ys, i);
        bad |= v.non_finite();
        *o = v;
    }
    !bad
}

/// Whether every element is finite: the non-finite test or-ed over the part, no branch.
#[inline(always)]
fn finite_part<T: Elem>(x: &[T]) -> bool {
    !x.iter().fold(false, |bad, v| bad | v.non_finite())
}

/// The part loops compiled for AVX2 (4 f64 lanes per instruction instead of SSE2's 2), chosen
/// at run time. Same values on every instruction set: Rust never contracts a·b + c into a fused
/// multiply–add, so each lane does the IEEE operations of the scalar code.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Elem;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn assign_part<T: Elem, const N: usize>(
        a: f64,
        x: &mut [T],
        cs: &[f64; N],
        ys: &[&[T]; N],
    ) -> bool {
        super::assign_part(a, x, cs, ys)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn finite_part<T: Elem>(x: &[T]) -> bool {
        super::finite_part(x)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn into_part<T: Elem, const N: usize>(
        out: &mut [T],
        c0: f64,
        y0: &[T],
        cs: &[f64; N],
        ys: &[&[T]; N],
    ) -> bool {
        super::into_part(out, c0, y0, cs, ys)
    }
}

/// Whether the AVX2 forms of the part loops can run here (detected once, then a cached load).
#[inline(always)]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// x ← a·x + Σⱼ cⱼ·yⱼ for N terms, split across rayon threads for large buffers; true when
/// every new value is finite.
#[inline(always)]
fn combine_assign_n<T: Elem, const N: usize>(
    a: f64,
    x: &mut [T],
    cs: [f64; N],
    ys: [&[T]; N],
) -> bool {
    let n = x.len();
    for y in &ys {
        assert_eq!(y.len(), n, "combine: lengths differ");
    }
    for_parts(x, |x, off| {
        let ys: [&[T]; N] = std::array::from_fn(|j| &ys[j][off..off + x.len()]);
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2::assign_part(a, x, &cs, &ys) };
        }
        assign_part(a, x, &cs, &ys)
    })
}

/// out ← c₀·y₀ + Σ_{j≥1} cⱼ·yⱼ for 1 + N terms; true when every value written is finite.
#[inline(always)]
fn combine_into_n<T: Elem, const N: usize>(
    out: &mut [T],
    c0: f64,
    y0: &[T],
    cs: [f64; N],
    ys: [&[T]; N],
) -> bool {
    let n = out.len();
    assert_eq!(y0.len(), n, "combine: lengths differ");
    for y in &ys {
        assert_eq!(y.len(), n, "combine: lengths differ");
    }
    for_parts(out, |out, off| {
        let y0 = &y0[off..off + out.len()];
        let ys: [&[T]; N] = std::array::from_fn(|j| &ys[j][off..off + out.len()]);
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2::into_part(out, c0, y0, &cs, &ys) };
        }
        into_part(out, c0, y0, &cs, &ys)
    })
}

/// Terms per fused pass: longer combinations take several passes (same values).
const MAX_FUSED: usize = 4;

/// x ← a·x + Σⱼ cⱼ·yⱼ in one pass (up to four terms per pass), each element combined in f64
/// and rounded to T after every term: the values of `axpby_assign(a, x, c₀, y₀)` followed by
/// `axpby_assign(1, x, cⱼ, yⱼ)`, without their separate passes over x. True when every new
/// value is finite.
#[inline(always)]
pub(crate) fn combine_assign<T: Elem>(a: f64, x: &mut [T], terms: &[(f64, &[T])]) -> bool {
    let (head, rest) = terms.split_at(terms.len().min(MAX_FUSED));
    let c = |k: usize| head[k].0;
    let y = |k: usize| head[k].1;
    let finite = match head.len() {
        0 => combine_assign_n::<T, 0>(a, x, [], []),
        1 => combine_assign_n(a, x, [c(0)], [y(0)]),
        2 => combine_assign_n(a, x, [c(0), c(1)], [y(0), y(1)]),
        3 => combine_assign_n(a, x, [c(0), c(1), c(2)], [y(0), y(1), y(2)]),
        _ => combine_assign_n(a, x, [c(0), c(1), c(2), c(3)], [y(0), y(1), y(2), y(3)]),
    };
    if rest.is_empty() {
        return finite;
    }
    combine_assign(1.0, x, rest)
}

/// out ← Σⱼ cⱼ·yⱼ (at least one term) in one pass (up to four terms), the values of
/// `axpby(c₀, y₀, c₁, y₁)` followed by `axpby_assign(1, out, cⱼ, yⱼ)` (one term: c₀·y₀). True
/// when every value written is finite.
#[inline(always)]
fn combine_into<T: Elem>(out: &mut [T], terms: &[(f64, &[T])]) -> bool {
    let Some(((c0, y0), more)) = terms.split_first() else {
        panic!("combine_into: no terms");
    };
    let (head, rest) = more.split_at(more.len().min(MAX_FUSED - 1));
    let c = |k: usize| head[k].0;
    let y = |k: usize| head[k].1;
    let finite = match head.len() {
        0 => combine_into_n::<T, 0>(out, *c0, y0, [], []),
        1 => combine_into_n(out, *c0, y0, [c(0)], [y(0)]),
        2 => combine_into_n(out, *c0, y0, [c(0), c(1)], [y(0), y(1)]),
        _ => combine_into_n(out, *c0, y0, [c(0), c(1), c(2)], [y(0), y(1), y(2)]),
    };
    if rest.is_empty() {
        return finite;
    }
    combine_assign(1.0, out, rest)
}

/// Elements per block of [`combine_assign_forming`]: the block's d is read back while it is
/// still in cache (16 KiB per f64 stream), and the per-block dispatch stays small against the
/// block's arithmetic.
const FORMING_BLOCK: usize = 2048;
/// Terms of a [`combine_assign_forming`] held on the stack per block; longer ones take two
/// whole passes (same values).
const FORMING_MAX_TERMS: usize = 8;

/// d ← p·x + q·z, then x ← a·x + Σⱼ cⱼ·yⱼ where a term given as `None` is d: a multistep step
/// that forms its newest history entry in the same pass over x. The values of
/// `combine_into(d, [(p, x), (q, z)])` followed by `combine_assign(a, x, terms)`, computed block
/// by block (d is read back from cache, not memory). True when every new x is finite.
fn combine_assign_forming<T: Elem>(
    a: f64,
    x: &mut [T],
    d: &mut [T],
    (p, q, z): (f64, f64, &[T]),
    terms: &[(f64, Option<&[T]>)],
) -> bool {
    let n = x.len();
    assert!(d.len() == n && z.len() == n, "combine: lengths differ");
    for (_, y) in terms {
        assert!(y.is_none_or(|y| y.len() == n), "combine: lengths differ");
    }
    if terms.len() > FORMING_MAX_TERMS {
        combine_into(d, &[(p, x), (q, z)]);
        let ts: Vec<(f64, &[T])> = terms.iter().map(|(c, y)| (*c, y.unwrap_or(d))).collect();
        return combine_assign(a, x, &ts);
    }
    let part = |x: &mut [T], d: &mut [T], off: usize| -> bool {
        let mut finite = true;
        for (k, (xb, db)) in x
            .chunks_mut(FORMING_BLOCK)
            .zip(d.chunks_mut(FORMING_BLOCK))
            .enumerate()
        {
            let at = off + k * FORMING_BLOCK;
            let range = at..at + xb.len();
            combine_into(db, &[(p, xb), (q, &z[range.clone()])]);
            let mut ts: [(f64, &[T]); FORMING_MAX_TERMS] = [(0.0, &[]); FORMING_MAX_TERMS];
            for (t, (c, y)) in ts.iter_mut().zip(terms) {
                *t = (*c, y.map_or(&*db, |y| &y[range.clone()]));
            }
            finite &= combine_assign(a, xb, &ts[..terms.len()]);
        }
        finite
    };
    if n <= PAR_CHUNK {
        return part(x, d, 0);
    }
    x.par_chunks_mut(PAR_CHUNK)
        .zip(d.par_chunks_mut(PAR_CHUNK))
        .enumerate()
        .map(|(k, (x, d))| part(x, d, k * PAR_CHUNK))
        .reduce(|| true, |a, b| a & b)
}

macro_rules! combine_kernels {
    ($t:ty, $assign:ident, $into:ident, $forming:ident) => {
        /// x ← a·x + Σⱼ cⱼ·yⱼ in one pass (see [`combine_element`] for the rounding); true
        /// when every new value is finite (checked in the same pass).
        #[inline(never)]
        pub fn $assign(a: f64, x: &mut [$t], terms: &[(f64, &[$t])]) -> bool {
            combine_assign(a, x, terms)
        }
        /// out ← Σⱼ cⱼ·yⱼ (at least one term) in one pass, nothing allocated; true when every
        /// value written is finite.
        #[inline(never)]
        pub fn $into(out: &mut [$t], terms: &[(f64, &[$t])]) -> bool {
            combine_into(out, terms)
        }
        /// d ← p·x + q·z and x ← a·x + Σⱼ cⱼ·yⱼ (a `None` term is d) in one pass over x: the
        /// values of `$into(d, [(p, x), (q, z)])` then `$assign(a, x, terms)`; true when every
        /// new x is finite.
        #[inline(never)]
        pub fn $forming(
            a: f64,
            x: &mut [$t],
            d: &mut [$t],
            formed: (f64, f64, &[$t]),
            terms: &[(f64, Option<&[$t]>)],
        ) -> bool {
            combine_assign_forming(a, x, d, formed, terms)
        }
    };
}

combine_kernels!(
    f64,
    combine_assign_f64,
    combine_into_f64,
    combine_assign_forming_f64
);
combine_kernels!(
    f32,
    combine_assign_f32,
    combine_into_f32,
    combine_assign_forming_f32
);

kernels!(f64, axpby_assign_f64, axpby_f64, all_finite_f64);
kernels!(f32, axpby_assign_f32, axpby_f32, all_finite_f32);

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
            // Fused combinations: the values of one axpby pass per term, in both types.
            let w: Vec<f64> = (0..n).map(|i| (i % 7) as f64 * 0.3 + 0.1).collect();
            let v: Vec<f64> = (0..n).map(|i| (i % 5) as f64 - 2.2).collect();
            let mut seq = x.clone();
            axpby_assign_f64(0.7, &mut seq, 0.3, &y);
            axpby_assign_f64(1.0, &mut seq, -1.1, &w);
            axpby_assign_f64(1.0, &mut seq, 2.5, &v);
            axpby_assign_f64(1.0, &mut seq, 0.01, &y);
            axpby_assign_f64(1.0, &mut seq, -0.2, &w);
            let mut fused = x.clone();
            combine_assign_f64(
                0.7,
                &mut fused,
                &[(0.3, &y), (-1.1, &w), (2.5, &v), (0.01, &y), (-0.2, &w)],
            );
            assert_eq!(fused, seq);
            let mut into = vec![9.0; n];
            combine_into_f64(
                &mut into,
                &[
                    (0.7, &x),
                    (0.3, &y),
                    (-1.1, &w),
                    (2.5, &v),
                    (0.01, &y),
                    (-0.2, &w),
                ],
            );
            assert_eq!(into, seq);
            combine_into_f64(&mut into, &[(0.7, &x)]);
            assert_eq!(into, x.iter().map(|x| 0.7 * x).collect::<Vec<_>>());
            let wf: Vec<f32> = w.iter().map(|v| *v as f32).collect();
            let mut seqf = xf.clone();
            axpby_assign_f32(0.7, &mut seqf, 0.3, &yf);
            axpby_assign_f32(1.0, &mut seqf, -1.1, &wf);
            let mut fusedf = xf.clone();
            combine_assign_f32(0.7, &mut fusedf, &[(0.3, &yf), (-1.1, &wf)]);
            assert_eq!(fusedf, seqf);
            let mut intof = vec![0.0f32; n];
            combine_into_f32(&mut intof, &[(0.7, &xf), (0.3, &yf), (-1.1, &wf)]);
            assert_eq!(intof, seqf);
            if n > 0 {
                let mut bad = x.clone();
                bad[n - 1] = f64::NAN;
                assert!(!all_finite_f64(&bad));
                bad[n - 1] = f64::NEG_INFINITY;
                assert!(!all_finite_f64(&bad));
            }
        }
    }

    /// The forming pass equals its two passes bit for bit, whatever the term order, block and
    /// thread split; and reports finiteness.
    #[test]
    fn forming_equals_two_passes() {
        for n in [
            5,
            FORMING_BLOCK + 7,
            PAR_CHUNK + 3,
            3 * PAR_CHUNK + FORMING_BLOCK / 2,
        ] {
            let x: Vec<f64> = (0..n).map(|i| (i % 97) as f64 * 0.25 - 3.0).collect();
            let z: Vec<f64> = (0..n).map(|i| (i % 13) as f64 - 6.5).collect();
            let u: Vec<f64> = (0..n).map(|i| (i % 7) as f64 * 0.3 + 0.1).collect();
            let v: Vec<f64> = (0..n).map(|i| (i % 5) as f64 - 2.2).collect();
            let s = 0.37;
            for at in 0..3 {
                let mut terms: Vec<(f64, Option<&[f64]>)> =
                    vec![(-0.21, Some(&u[..])), (0.13, Some(&v[..]))];
                terms.insert(at, (0.7, None));
                let mut d_want = vec![0.0; n];
                combine_into_f64(&mut d_want, &[(1.0 / s, &x), (-1.0 / s, &z)]);
                let ts: Vec<(f64, &[f64])> = terms
                    .iter()
                    .map(|(c, y)| (*c, y.unwrap_or(&d_want)))
                    .collect();
                let mut x_want = x.clone();
                combine_assign_f64(0.9, &mut x_want, &ts);
                let mut d = vec![5.0; n];
                let mut got = x.clone();
                let finite = combine_assign_forming_f64(
                    0.9,
                    &mut got,
                    &mut d,
                    (1.0 / s, -1.0 / s, &z),
                    &terms,
                );
                assert!(finite);
                assert_eq!((got, d), (x_want, d_want), "n {n}, at {at}");
                // f32: rounded after every term in both.
                let f = |w: &[f64]| w.iter().map(|v| *v as f32).collect::<Vec<f32>>();
                let (xf, zf, uf) = (f(&x), f(&z), f(&u));
                let mut df_want = vec![0.0f32; n];
                combine_into_f32(&mut df_want, &[(1.0 / s, &xf), (-1.0 / s, &zf)]);
                let mut xf_want = xf.clone();
                combine_assign_f32(0.9, &mut xf_want, &[(0.7, &df_want), (-0.21, &uf)]);
                let mut df = vec![0.0f32; n];
                let mut xf_got = xf.clone();
                combine_assign_forming_f32(
                    0.9,
                    &mut xf_got,
                    &mut df,
                    (1.0 / s, -1.0 / s, &zf),
                    &[(0.7, None), (-0.21, Some(&uf))],
                );
                assert_eq!((xf_got, df), (xf_want, df_want));
            }
            let mut zbad = z.clone();
            zbad[n - 1] = f64::NAN;
            let (mut d, mut got) = (vec![0.0; n], x.clone());
            let finite = combine_assign_forming_f64(
                1.0,
                &mut got,
                &mut d,
                (1.0, -1.0, &zbad),
                &[(0.5, None)],
            );
            assert!(!finite && d[n - 1].is_nan());
            // More terms than a block holds on the stack: the two passes, same values.
            let many: Vec<(f64, Option<&[f64]>)> = (0..FORMING_MAX_TERMS + 1)
                .map(|k| (0.1 * k as f64, if k == 2 { None } else { Some(&u[..]) }))
                .collect();
            let mut d_want = vec![0.0; n];
            combine_into_f64(&mut d_want, &[(1.0, &x), (-1.0, &z)]);
            let ts: Vec<(f64, &[f64])> = many
                .iter()
                .map(|(c, y)| (*c, y.unwrap_or(&d_want)))
                .collect();
            let mut x_want = x.clone();
            combine_assign_f64(1.0, &mut x_want, &ts);
            let (mut d, mut got) = (vec![0.0; n], x.clone());
            combine_assign_forming_f64(1.0, &mut got, &mut d, (1.0, -1.0, &z), &many);
            assert_eq!((got, d), (x_want, d_want));
        }
    }

    /// The fused passes report whether what they wrote is finite: NaN and ±∞ anywhere across the
    /// thread split, and f32 overflow of a value finite in f64.
    #[test]
    fn combinations_report_non_finite_values() {
        for n in [5, PAR_CHUNK + 3, 3 * PAR_CHUNK] {
            let x: Vec<f64> = (0..n).map(|i| (i % 97) as f64 * 0.25 - 3.0).collect();
            let y: Vec<f64> = (0..n).map(|i| (i % 13) as f64 - 6.5).collect();
            let mut z = x.clone();
            assert!(combine_assign_f64(0.3, &mut z, &[(-1.7, &y)]));
            assert!(combine_into_f64(&mut z, &[(0.3, &x), (-1.7, &y)]));
            for (at, bad) in [
                (0, f64::NAN),
                (n / 2, f64::INFINITY),
                (n - 1, f64::NEG_INFINITY),
            ] {
                let mut b = y.clone();
                b[at] = bad;
                let mut z = x.clone();
                assert!(!combine_assign_f64(0.3, &mut z, &[(-1.7, &b)]));
                let mut z = x.clone();
                assert!(!combine_assign_f64(
                    0.3,
                    &mut z,
                    &[(1.0, &x), (2.0, &y), (3.0, &x), (-1.7, &b)]
                ));
                assert!(!combine_into_f64(&mut z, &[(0.3, &x), (-1.7, &b)]));
                assert!(!combine_into_f64(&mut z, &[(-1.7, &b)]));
                let bf: Vec<f32> = b.iter().map(|v| *v as f32).collect();
                let mut zf = vec![1.0f32; n];
                assert!(!combine_assign_f32(0.3, &mut zf, &[(-1.7, &bf)]));
            }
            // 1e39 is finite in f64 and ∞ once rounded to f32.
            let mut zf = vec![1.0f32; n];
            assert!(!combine_assign_f32(1e39, &mut zf, &[]));
            let ones = vec![1.0f32; n];
            assert!(!combine_into_f32(&mut zf, &[(1e39, &ones)]));
            assert!(combine_into_f32(&mut zf, &[(1e38, &ones)]));
        }
    }
}
