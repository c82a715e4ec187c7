//! Per-sample seeded noise: a sample depends on (seed, sample index, stream) only, never on
//! batch size, thread count or device.
//!
//! This module is the one source of noise for every sampler and backend: initial x_T, the
//! per-step noise of stochastic samplers, training noise. Backends (ndarray or tch, CPU or
//! CUDA) draw here, in f64 on the CPU, and only then convert/upload, so a CPU run and a GPU
//! run with the same seed see the same numbers.
//!
//! Normals come from Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as
//! 1, 2, 3"), the counter-based generator cuRAND and JAX use: the key is derived once from
//! (seed, stream) by one Philox call, the 128-bit counter is (block, sample index), and each
//! block's four 32-bit words become two 52-bit open uniforms and, by Box–Muller, two normals.
//! Normal j of a sample is a pure function of (seed, stream, index, j): no generator state, so
//! rows can be drawn in any order, on any thread, into a preallocated buffer. The generator is
//! written for SIMD (4 blocks at a time, its own logarithm and sine/cosine series, AVX2 when
//! present) and gives the same bits on every instruction set and platform (module `normal`).
//!
//! Discrete draws (component choices, permutations, coin flips) use [`stream_rng`], a ChaCha12
//! generator keyed the same way: key = (seed, stream) as 2×8 little-endian bytes, stream id
//! (nonce) = sample index.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::kernels::{self, Elem};

/// Conventional stream ids, so independent uses never share noise.
pub mod streams {
    /// Initial state x_T.
    pub const INIT: u64 = 0;
    /// Per-step sampler noise uses `STEP_BASE + step`.
    pub const STEP_BASE: u64 = 1 << 32;
    /// Mixture sampling (component choice and Gaussian draw).
    pub const MIXTURE: u64 = 2 << 32;
    /// Training noise ε and noise levels.
    pub const TRAIN: u64 = 3 << 32;
    /// Likelihood: Hutchinson probe k uses `LIKELIHOOD + k`, dequantisation noise `LIKELIHOOD - 1`.
    pub const LIKELIHOOD: u64 = 4 << 32;
    /// Posterior samplers with loops of their own (FPS, DiffPIR, DAPS, PnP-DM, EnKG, DPS-GSG):
    /// outer step i, draw j uses `COND + (i << 20) + j`.
    pub const COND: u64 = 5 << 32;
    /// Variational bound: the draw x̃ = x₀ + u_j·ε of chain step j uses `VLB + j`.
    pub const VLB: u64 = 6 << 32;
}

/// The generator of sample `index` in stream `stream` under `seed`.
pub fn stream_rng(seed: u64, index: u64, stream: u64) -> ChaCha12Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    let mut rng = ChaCha12Rng::from_seed(key);
    rng.set_stream(index);
    rng
}

/// The generator of sample `index` under `seed` (stream 0).
pub fn sample_rng(seed: u64, index: u64) -> ChaCha12Rng {
    stream_rng(seed, index, 0)
}

/// Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011, Table 2).
const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// Philox4x32-10: ten rounds of (hi, lo) = M·c products, c′ = (hi₁ ⊕ c₁ ⊕ k₀, lo₁, hi₀ ⊕ c₃ ⊕ k₁, lo₀),
/// key bumped by the Weyl constants between rounds (Salmon et al. 2011, §3.2).
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W[0]);
            k[1] = k[1].wrapping_add(PHILOX_W[1]);
        }
        let p0 = PHILOX_M[0] as u64 * c[0] as u64;
        let p1 = PHILOX_M[1] as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// The Philox key of (seed, stream): one Philox call on the counter (stream, tag) under the seed,
/// so every stream gets its own 64-bit key and the 128-bit counter is free for (block, index).
fn philox_key(seed: u64, stream: u64) -> [u32; 2] {
    const KEY_TAG: u32 = 0x6B65_7921;
    let out = philox4x32_10(
        [stream as u32, (stream >> 32) as u32, KEY_TAG, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    [out[0], out[1]]
}

/// A uniform in the open interval (0, 1) from 53 bits of (hi, lo): (m + ½)·2⁻⁵³.
#[inline(always)]
fn open_uniform(hi: u32, lo: u32) -> f64 {
    let m = (((hi as u64) << 32) | lo as u64) >> 11;
    (m as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Standard normals 0 .. out.len() of sample `index` in stream `stream` under `seed`, written
/// into `out` (normals 2j and 2j + 1 come from Philox block j, counter (j, index)).
pub fn fill_normals(seed: u64, index: u64, stream: u64, out: &mut [f64]) {
    normal_rows_into(seed, index, stream, out.len().max(1), out);
}

/// Uniforms in (0, 1) for sample `index` in stream `stream` under `seed`, written into `out`
/// (uniforms 2j and 2j + 1 are the two 53-bit halves of Philox block j, counter (j, index)).
pub fn fill_uniforms(seed: u64, index: u64, stream: u64, out: &mut [f64]) {
    let key = philox_key(seed, stream);
    let (i0, i1) = (index as u32, (index >> 32) as u32);
    for j in 0..out.len().div_ceil(2) {
        let b = philox4x32_10([j as u32, (j as u64 >> 32) as u32, i0, i1], key);
        out[2 * j] = open_uniform(b[0], b[1]);
        if 2 * j + 1 < out.len() {
            out[2 * j + 1] = open_uniform(b[2], b[3]);
        }
    }
}

/// Rows `[B, len]` (row-major in `out`, B = out.len()/len) of standard normals: row i is sample
/// `first_index + i`, so it equals `normal_vec(seed, first_index + i, stream, len)` whatever
/// the batch split. Nothing is allocated; large batches are split across rayon threads.
pub fn normal_rows_into(seed: u64, first_index: u64, stream: u64, len: usize, out: &mut [f64]) {
    normal::rows(seed, first_index, stream, len, out, |x, _, z| {
        x.copy_from_slice(z);
        true
    });
}

/// out ← out + c·ε in place, ε the rows of [`normal_rows_into`] (the stochastic samplers'
/// per-step noise, without a noise buffer).
pub fn add_normal_rows(
    seed: u64,
    first_index: u64,
    stream: u64,
    c: f64,
    len: usize,
    out: &mut [f64],
) {
    noisy_update::<f64, 0>(seed, first_index, stream, len, (1.0, [], []), c, out);
}

/// [`add_normal_rows`] for an f32 buffer: each element is combined in f64 and rounded once.
pub fn add_normal_rows_f32(
    seed: u64,
    first_index: u64,
    stream: u64,
    c: f64,
    len: usize,
    out: &mut [f32],
) {
    noisy_update::<f32, 0>(seed, first_index, stream, len, (1.0, [], []), c, out);
}

/// x ← a·x + Σⱼ cⱼ·yⱼ + c·ε in one pass over x (ε the rows of [`normal_rows_into`]): a
/// stochastic sampler's whole update with its noise. The values are those of
/// `kernels::combine_assign_f64(a, x, terms)` followed by [`add_normal_rows`]. True when every
/// new value is finite (checked in the same pass).
pub fn combine_add_normal_rows(
    seed: u64,
    first_index: u64,
    stream: u64,
    len: usize,
    update: (f64, &[(f64, &[f64])], f64),
    x: &mut [f64],
) -> bool {
    combine_add_normals(seed, first_index, stream, len, update, x)
}

/// [`combine_add_normal_rows`] for an f32 buffer (rounded to f32 after every term, as there).
pub fn combine_add_normal_rows_f32(
    seed: u64,
    first_index: u64,
    stream: u64,
    len: usize,
    update: (f64, &[(f64, &[f32])], f64),
    x: &mut [f32],
) -> bool {
    combine_add_normals(seed, first_index, stream, len, update, x)
}

/// Terms applied with the noise in one pass; the ones before them take a pass of their own
/// (same values: the element is rounded to T after every term either way).
const NOISY_TERMS: usize = 3;

#[inline(always)]
fn combine_add_normals<T: Elem>(
    seed: u64,
    first_index: u64,
    stream: u64,
    len: usize,
    (a, terms, c): (f64, &[(f64, &[T])], f64),
    x: &mut [T],
) -> bool {
    for (_, y) in terms {
        assert_eq!(y.len(), x.len(), "combine_add_normal_rows: lengths differ");
    }
    let (a, terms) = match terms.len().checked_sub(NOISY_TERMS) {
        Some(k) if k > 0 => {
            // Its flag is not needed: a non-finite value stays non-finite through finite terms.
            kernels::combine_assign(a, x, &terms[..k]);
            (1.0, &terms[k..])
        }
        _ => (a, terms),
    };
    // The number of terms is fixed for the whole pass, so the chunk loops below are
    // straight-line code per element.
    let c_ = |k: usize| terms[k].0;
    let y = |k: usize| terms[k].1;
    match terms.len() {
        0 => noisy_update::<T, 0>(seed, first_index, stream, len, (a, [], []), c, x),
        1 => noisy_update(seed, first_index, stream, len, (a, [c_(0)], [y(0)]), c, x),
        2 => noisy_update(
            seed,
            first_index,
            stream,
            len,
            (a, [c_(0), c_(1)], [y(0), y(1)]),
            c,
            x,
        ),
        _ => noisy_update(
            seed,
            first_index,
            stream,
            len,
            (a, [c_(0), c_(1), c_(2)], [y(0), y(1), y(2)]),
            c,
            x,
        ),
    }
}

/// x ← a·x + Σⱼ cⱼ·yⱼ + c·ε for N terms, chunk by chunk of the generator's buffer of normals:
/// each element is `kernels::combine_element` then the noise, rounded to T after each; true
/// when every new value is finite.
#[inline(always)]
fn noisy_update<T: Elem, const N: usize>(
    seed: u64,
    first_index: u64,
    stream: u64,
    len: usize,
    (a, cs, ys): (f64, [f64; N], [&[T]; N]),
    c: f64,
    x: &mut [T],
) -> bool {
    normal::rows(seed, first_index, stream, len, x, |x, at, z| {
        let ys: [&[T]; N] = std::array::from_fn(|j| &ys[j][at..at + x.len()]);
        let z = &z[..x.len()];
        let mut bad = false;
        for (i, x) in x.iter_mut().enumerate() {
            let t = kernels::combine_element(a * x.to_f64(), &cs, &ys, i);
            let v = T::from_f64(t.to_f64() + c * z[i]);
            bad |= v.non_finite();
            *x = v;
        }
        !bad
    })
}

/// The normal generator behind every public draw: Philox4x32-10 blocks, two 52-bit open
/// uniforms per block, Box–Muller with its own logarithm and sine/cosine.
///
/// Everything is written over fixed-width lanes of blocks in straight-line integer and f64
/// arithmetic (no libm, no branches), so it compiles to SIMD: 4 blocks per vector, 32 per
/// batch, AVX2 where the CPU has it (chosen at run time). Without fused multiply–adds (Rust never
/// contracts a·b + c) every instruction set gives the same bits, and so does every platform:
/// the draws do not depend on the system's libm.
// Lane loops index several arrays in lockstep (structure of arrays), which is what vectorises.
#[allow(clippy::needless_range_loop)]
mod normal {
    use super::{philox_key, PHILOX_M, PHILOX_W};
    use rayon::prelude::*;

    /// Philox blocks per batch (2·BATCH normals). A batch is drawn in stages — every block's
    /// Philox rounds, then the Box–Muller arithmetic — into a stack buffer, and the caller's
    /// update runs over that buffer afterwards: each stage then holds GROUPS independent SIMD
    /// chains (one group's division, series and square root are ≈ 100 cycles of latency),
    /// where one group at a time from Philox to update left the core waiting on that chain
    /// (6.5 → 4.35 ns per normal on one Zen 3 core; 4 or 16 groups were slower than 8).
    const BATCH: usize = GROUPS * LANES;
    /// Groups of LANES blocks per batch.
    const GROUPS: usize = 8;
    /// Philox blocks per group (one AVX2 vector of u64/f64 lanes).
    const LANES: usize = 4;
    /// Normals per rayon task: below this a batch is drawn on the calling thread.
    const PAR_CHUNK: usize = 1 << 14;
    const LOW32: u64 = 0xFFFF_FFFF;
    const ONE_BITS: u64 = 0x3FF0_0000_0000_0000;
    const MANTISSA: u64 = (1 << 52) - 1;
    /// The mantissa bits of √2 (its exponent is that of 1).
    const SQRT2_MANTISSA: u64 = std::f64::consts::SQRT_2.to_bits() & MANTISSA;
    /// 2⁵² as f64 bits: integers below 2⁵² convert by or-ing them into its mantissa.
    const TWO52_BITS: u64 = 0x4330_0000_0000_0000;
    const TWO52: f64 = 4_503_599_627_370_496.0;
    const TWO51: f64 = 2_251_799_813_685_248.0;

    /// Series coefficients: atanh(s)/s = Σ s²ᵏ/(2k + 1) (k < 10), sin θ/θ = Σ (−θ²)ᵏ/(2k + 1)!
    /// (k ≤ 8), cos θ = Σ (−θ²)ᵏ/(2k)! (k ≤ 9).
    const ATANH: [f64; 10] = series(1, false);
    const SIN: [f64; 9] = series(1, true);
    const COS: [f64; 10] = series(0, true);

    /// c_k = (±1)ᵏ/(2k + o)! when `factorial`, else 1/(2k + o).
    const fn series<const N: usize>(o: usize, factorial: bool) -> [f64; N] {
        let mut c = [0.0; N];
        let mut k = 0;
        while k < N {
            let n = 2 * k + o;
            let mut d = n as f64;
            if factorial {
                d = 1.0;
                let mut j = 2;
                while j <= n {
                    d *= j as f64;
                    j += 1;
                }
                if k % 2 == 1 {
                    d = -d;
                }
            }
            c[k] = 1.0 / d;
            k += 1;
        }
        c
    }

    /// Σₖ c_k·zᵏ on every lane by Horner's rule, coefficient-major so the lanes' chains
    /// interleave. It starts from the top coefficient: the same bits as starting from 0·z + c
    /// for finite z.
    #[inline(always)]
    fn horner<const N: usize, const K: usize>(c: &[f64; K], z: &[f64; N]) -> [f64; N] {
        let mut p = [c[K - 1]; N];
        for k in (0..K - 1).rev() {
            for l in 0..N {
                p[l] = p[l] * z[l] + c[k];
            }
        }
        p
    }

    /// Philox4x32-10 of the counters (block_l, index_l), l < N, at once: 32-bit words held in
    /// u64 lanes so that the 32×32→64 products are SIMD multiplies; lane l equals
    /// `philox4x32_10([block_l as u32, (block_l >> 32) as u32, index_l as u32, (index_l >> 32) as u32], key)`.
    #[inline(always)]
    fn philox_lanes<const N: usize>(
        block: &[u64; N],
        index: &[u64; N],
        key: [u32; 2],
    ) -> [[u64; N]; 4] {
        let mut c = [[0u64; N]; 4];
        for l in 0..N {
            c[0][l] = block[l] & LOW32;
            c[1][l] = block[l] >> 32;
            c[2][l] = index[l] & LOW32;
            c[3][l] = index[l] >> 32;
        }
        let mut k = key;
        for round in 0..10 {
            if round > 0 {
                k[0] = k[0].wrapping_add(PHILOX_W[0]);
                k[1] = k[1].wrapping_add(PHILOX_W[1]);
            }
            let (k0, k1) = (k[0] as u64, k[1] as u64);
            let mut n = [[0u64; N]; 4];
            for l in 0..N {
                // Masks make the 32×32→64 product explicit (one SIMD multiply per lane pair).
                let p0 = PHILOX_M[0] as u64 * (c[0][l] & LOW32);
                let p1 = PHILOX_M[1] as u64 * (c[2][l] & LOW32);
                n[0][l] = (p1 >> 32) ^ c[1][l] ^ k0;
                n[1][l] = p1 & LOW32;
                n[2][l] = (p0 >> 32) ^ c[3][l] ^ k1;
                n[3][l] = p0 & LOW32;
            }
            c = n;
        }
        c
    }

    /// u = (m + ½)·2⁻⁵² ∈ (0, 1) for a 52-bit m, exactly: 1.m − (1 − 2⁻⁵³) (Sterbenz).
    #[inline(always)]
    pub(super) fn open_uniform52(m: u64) -> f64 {
        f64::from_bits(ONE_BITS | m) - (1.0 - f64::EPSILON / 2.0)
    }

    /// ln u for normal positive u, to a few ulp: u = 2ᵉ·m with m ∈ [√½, √2), then
    /// ln m = 2·atanh s = 2s·Σₖ s²ᵏ/(2k + 1), s = (m − 1)/(m + 1), |s| ≤ 0.172 (ten terms
    /// reach 1e-17).
    #[inline(always)]
    fn ln_lanes<const N: usize>(u: [f64; N]) -> [f64; N] {
        let (mut e, mut s, mut z) = ([0.0; N], [0.0; N], [0.0; N]);
        for l in 0..N {
            let bits = u[l].to_bits();
            // m = 1.mantissa > √2 compares as integers (same exponent); then m/2 and e + 1,
            // both exact, are made in the bits (integer ops vectorise without blends).
            let big = (bits & MANTISSA).wrapping_add(MANTISSA - SQRT2_MANTISSA) >> 52;
            e[l] = f64::from_bits(TWO52_BITS | (bits >> 52).wrapping_add(big)) - (TWO52 + 1023.0);
            let m = f64::from_bits((bits & MANTISSA) | ONE_BITS.wrapping_sub(big << 52));
            let f = m - 1.0;
            s[l] = f / (2.0 + f);
            z[l] = s[l] * s[l];
        }
        let p = horner(&ATANH, &z);
        let mut out = [0.0; N];
        for l in 0..N {
            out[l] = e[l] * std::f64::consts::LN_2 + 2.0 * s[l] * p[l];
        }
        out
    }

    /// [`ln_lanes`] of one value (the tests' scalar reference).
    #[cfg(test)]
    pub(super) fn ln(u: f64) -> f64 {
        ln_lanes([u])[0]
    }

    /// (cos 2πu, sin 2πu) for u = (m + ½)·2⁻⁵²: the nearest quarter turn q is taken off in
    /// integers (exactly), θ = 2π(u − q/4) ∈ [−π/4, π/4] gets Taylor series to θ¹⁸ (error
    /// < 1e-19), and the quarter turn is a swap and sign flips.
    #[inline(always)]
    fn cos_sin_turn_lanes<const N: usize>(m: [u64; N]) -> ([f64; N], [f64; N]) {
        let (mut q, mut theta, mut z) = ([0u64; N], [0.0; N], [0.0; N]);
        for l in 0..N {
            q[l] = m[l].wrapping_add(1 << 49) >> 50;
            // Signed r = m − q·2⁵⁰ ∈ [−2⁴⁹, 2⁴⁹) in two's complement.
            let r = m[l].wrapping_sub(q[l] << 50);
            // u − q/4 = (2r + 1)·2⁻⁵³, |2r + 1| < 2⁵⁰: converted exactly through 2⁵² + 2⁵¹.
            let t = f64::from_bits(TWO52_BITS | r.wrapping_mul(2).wrapping_add(1 + (1 << 51)))
                - (TWO52 + TWO51);
            theta[l] = t * (std::f64::consts::TAU * (f64::EPSILON / 2.0));
            z[l] = theta[l] * theta[l];
        }
        let s = horner(&SIN, &z);
        let c = horner(&COS, &z);
        let (mut cos, mut sin) = ([0.0; N], [0.0; N]);
        for l in 0..N {
            let (s, c) = ((s[l] * theta[l]).to_bits(), c[l].to_bits());
            // Quarter turns: q = 1 → (−sin, cos), 2 → (−cos, −sin), 3 → (sin, −cos): a swap
            // by xor under a mask and sign flips by xor (what negation is): bit operations
            // that vectorise without blends. Bit 1 of q (of q + 1) flips sin (cos).
            let d = (s ^ c) & 0u64.wrapping_sub(q[l] & 1);
            const SIGN: u64 = 1 << 63;
            cos[l] = f64::from_bits(c ^ d ^ ((q[l].wrapping_add(1) << 62) & SIGN));
            sin[l] = f64::from_bits(s ^ d ^ ((q[l] << 62) & SIGN));
        }
        (cos, sin)
    }

    /// [`cos_sin_turn_lanes`] of one value (the tests' scalar reference).
    #[cfg(test)]
    pub(super) fn cos_sin_turn(m: u64) -> (f64, f64) {
        let (c, s) = cos_sin_turn_lanes([m]);
        (c[0], s[0])
    }

    /// The counters of a batch: lane l of group g is block `block[g][l]` of sample
    /// `index[g][l]`.
    struct Counters {
        block: [[u64; LANES]; GROUPS],
        index: [[u64; LANES]; GROUPS],
    }

    /// Normals 2l, 2l + 1 of z are those of the counter of lane l, for the first `groups`
    /// groups: every group's Philox block first, then logarithm and turn group by group (the
    /// turn's series run while the divider works on the logarithm's division and square root;
    /// as separate passes they took 4.7 ns per normal, together 4.35).
    #[inline(always)]
    fn normals(key: [u32; 2], ctr: &Counters, groups: usize, z: &mut [f64; 2 * BATCH]) {
        let groups = groups.min(GROUPS);
        let (mut u1, mut m2) = ([[0.0; LANES]; GROUPS], [[0u64; LANES]; GROUPS]);
        for g in 0..groups {
            let w = philox_lanes(&ctr.block[g], &ctr.index[g], key);
            for l in 0..LANES {
                u1[g][l] = open_uniform52(((w[0][l] << 32) | w[1][l]) >> 12);
                m2[g][l] = ((w[2][l] << 32) | w[3][l]) >> 12;
            }
        }
        for (g, z) in z.chunks_exact_mut(2 * LANES).enumerate().take(groups) {
            let ln_u1 = ln_lanes(u1[g]);
            let (c, s) = cos_sin_turn_lanes(m2[g]);
            for l in 0..LANES {
                let r = (-2.0 * ln_u1[l]).sqrt();
                z[2 * l] = r * c[l];
                z[2 * l + 1] = r * s[l];
            }
        }
    }

    /// The caller's update of a chunk: put(out_chunk, at, z) with z the chunk's normals (as
    /// many as it has elements) and `at` its first element's position in the whole buffer;
    /// true when every value it wrote is finite.
    pub(super) trait Put<T>: Fn(&mut [T], usize, &[f64]) -> bool {}
    impl<T, F: Fn(&mut [T], usize, &[f64]) -> bool> Put<T> for F {}

    /// put over the rows of `len` normals of samples first, first + 1, … laid end to end in
    /// `out` (the last one may be cut short), one chunk per batch (at most 2·BATCH elements,
    /// `at` + its offset in `out`), so the update runs as a slice loop rather than a call per
    /// element. The rows' blocks are drawn as one sequence, BATCH at a time whatever the row
    /// length, so short rows (2-D states) fill the SIMD lanes too; an odd row drops its last
    /// block's second normal. True when every chunk's put was.
    #[inline(always)]
    pub(super) fn rows_portable<T>(
        key: [u32; 2],
        first: u64,
        len: usize,
        out: &mut [T],
        at: usize,
        put: &impl Put<T>,
    ) -> bool {
        let (per_row, odd) = (len.div_ceil(2) as u64, !len.is_multiple_of(2));
        let mut ctr = Counters {
            block: [[0; LANES]; GROUPS],
            index: [[0; LANES]; GROUPS],
        };
        let mut z = [0.0; 2 * BATCH];
        let mut finite = true;
        // The next block to draw: block j of sample `index`; the next output: out[k].
        let (mut index, mut j, mut k) = (first, 0u64, 0usize);
        while k < out.len() {
            let left = out.len() - k;
            // Blocks the rest needs (at most, for odd rows), in whole groups.
            let blocks = if odd { left } else { left.div_ceil(2) };
            let groups = blocks.div_ceil(LANES).min(GROUPS);
            if j + (groups * LANES) as u64 <= per_row {
                // All in one row.
                for g in 0..groups {
                    for l in 0..LANES {
                        ctr.block[g][l] = j + (g * LANES + l) as u64;
                        ctr.index[g][l] = index;
                    }
                }
                j += (groups * LANES) as u64;
            } else {
                for g in 0..groups {
                    for l in 0..LANES {
                        ctr.block[g][l] = j;
                        ctr.index[g][l] = index;
                        j += 1;
                        if j == per_row {
                            j = 0;
                            index = index.wrapping_add(1);
                        }
                    }
                }
            }
            if j == per_row {
                j = 0;
                index = index.wrapping_add(1);
            }
            if groups == GROUPS {
                // Whole batches: loop bounds known to the compiler (this is the hot path).
                normals(key, &ctr, GROUPS, &mut z);
            } else {
                normals(key, &ctr, groups, &mut z);
            }
            let drawn = if odd {
                // Odd rows: a block that ends its row gives one normal; the others move down
                // over the dropped ones (in place: the write never passes the read).
                let mut n = 0;
                for (p, b) in ctr.block[..groups].iter().flatten().enumerate() {
                    let (z0, z1) = (z[2 * p], z[2 * p + 1]);
                    z[n] = z0;
                    n += 1;
                    if *b + 1 != per_row {
                        z[n] = z1;
                        n += 1;
                    }
                }
                n
            } else {
                2 * groups * LANES
            };
            let n = left.min(drawn);
            finite &= put(&mut out[k..k + n], at + k, &z[..n]);
            k += n;
        }
        finite
    }

    /// The same code compiled for AVX2 (4 f64 / u64 lanes per instruction instead of 2).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2<T>(
        key: [u32; 2],
        first: u64,
        len: usize,
        out: &mut [T],
        at: usize,
        put: &impl Put<T>,
    ) -> bool {
        rows_portable(key, first, len, out, at, put)
    }

    pub(super) fn rows_here<T>(
        key: [u32; 2],
        first: u64,
        len: usize,
        out: &mut [T],
        at: usize,
        put: &impl Put<T>,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { rows_avx2(key, first, len, out, at, put) };
        }
        rows_portable(key, first, len, out, at, put)
    }

    /// put over rows i of samples `first_index + i` (see [`rows_portable`]); whole rows per
    /// rayon task once the batch is large enough to pay for the threads. True when every
    /// chunk's put was (every task runs: they write).
    pub(super) fn rows<T: Send>(
        seed: u64,
        first_index: u64,
        stream: u64,
        len: usize,
        out: &mut [T],
        put: impl Put<T> + Sync,
    ) -> bool {
        if len == 0 || out.is_empty() {
            return true;
        }
        let key = philox_key(seed, stream);
        let per_task = (PAR_CHUNK / len).max(1);
        if out.len() <= PAR_CHUNK || rayon::current_num_threads() == 1 {
            return rows_here(key, first_index, len, out, 0, &put);
        }
        out.par_chunks_mut(per_task * len)
            .enumerate()
            .map(|(t, part)| {
                let first = first_index + (t * per_task) as u64;
                rows_here(key, first, len, part, t * per_task * len, &put)
            })
            .reduce(|| true, |a, b| a & b)
    }
}

/// `len` standard normals for sample `index`, stream `stream` (Philox4x32-10 + Box–Muller).
pub fn normal_vec(seed: u64, index: u64, stream: u64, len: usize) -> Vec<f64> {
    let mut v = vec![0.0; len];
    fill_normals(seed, index, stream, &mut v);
    v
}

/// Standard normals for samples `first_index .. first_index + n`, one row per sample ([n, len]).
/// Row i equals `normal_vec(seed, first_index + i, stream, len)` whatever the batch split.
pub fn normal_rows(seed: u64, first_index: u64, n: usize, stream: u64, len: usize) -> Array2<f64> {
    let mut v = vec![0.0; n * len];
    normal_rows_into(seed, first_index, stream, len, &mut v);
    Array2::from_shape_vec((n, len), v).unwrap_or_else(|_| Array2::zeros((n, len)))
}

/// One uniform draw in [0, 1) for sample `index`, stream `stream`.
pub fn uniform(seed: u64, index: u64, stream: u64) -> f64 {
    stream_rng(seed, index, stream).gen::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draw as a chunk update: the chunk's normals copied out.
    fn copy(x: &mut [f64], _: usize, z: &[f64]) -> bool {
        x.copy_from_slice(z);
        true
    }

    #[test]
    fn independent_of_batching() {
        let all = normal_rows(7, 0, 10, streams::INIT, 5);
        let tail = normal_rows(7, 6, 4, streams::INIT, 5);
        assert_eq!(all.slice(ndarray::s![6.., ..]), tail);
        assert_eq!(all.row(3).to_vec(), normal_vec(7, 3, streams::INIT, 5));
    }

    #[test]
    fn seeds_indices_streams_differ() {
        let a = normal_vec(1, 0, 0, 4);
        assert_ne!(a, normal_vec(2, 0, 0, 4));
        assert_ne!(a, normal_vec(1, 1, 0, 4));
        assert_ne!(a, normal_vec(1, 0, 1, 4));
        assert_eq!(a, normal_vec(1, 0, 0, 4));
    }

    /// Random123's known-answer vectors for philox4x32 with 10 rounds (kat_vectors: counter, key → output).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// The SIMD generator is the textbook one: normal 2j, 2j + 1 of a sample is
    /// √(−2 ln u₁)·(cos 2πu₂, sin 2πu₂) with u₁, u₂ the 52-bit open uniforms of the scalar
    /// (known-answer tested) Philox block j, to the libm's own rounding; across many samples,
    /// streams, block positions and both halves of each block.
    #[test]
    fn normals_are_box_muller_of_the_scalar_philox_blocks() {
        let mut worst: f64 = 0.0;
        for (seed, index, stream) in [(0u64, 0u64, 0u64), (7, 3, 9), (u64::MAX, 1 << 40, 1 << 33)] {
            let z = normal_vec(seed, index, stream, 4099);
            let key = philox_key(seed, stream);
            for (j, pair) in z.chunks(2).enumerate() {
                let b = philox4x32_10([j as u32, 0, index as u32, (index >> 32) as u32], key);
                let m = |hi: u32, lo: u32| ((((hi as u64) << 32) | lo as u64) >> 12) as f64;
                let u1 = (m(b[0], b[1]) + 0.5) / (1u64 << 52) as f64;
                let u2 = (m(b[2], b[3]) + 0.5) / (1u64 << 52) as f64;
                let r = (-2.0 * u1.ln()).sqrt();
                let (sn, cs) = (std::f64::consts::TAU * u2).sin_cos();
                worst = worst.max((pair[0] - r * cs).abs());
                if pair.len() == 2 {
                    worst = worst.max((pair[1] - r * sn).abs());
                }
            }
        }
        assert!(worst < 1e-14, "largest difference {worst:e}");
    }

    /// Every normal, bit for bit, is the one-lane computation on its own scalar Philox block,
    /// whatever the row length (odd rows drop their last block's second normal), the batching
    /// across rows, a row cut short at the end of the buffer and the index crossing 2³².
    #[test]
    fn rows_are_their_scalar_blocks_bit_for_bit() {
        let key = philox_key(9, streams::STEP_BASE + 4);
        let first = (1u64 << 32) - 3;
        for len in [1, 2, 3, 5, 8, 63, 64, 65, 130] {
            let mut z = vec![f64::NAN; 7 * len + len / 2];
            normal::rows_here(key, first, len, &mut z, 0, &copy);
            for (k, &zk) in z.iter().enumerate() {
                let (index, j) = (first + (k / len) as u64, k % len);
                let b = philox4x32_10([(j / 2) as u32, 0, index as u32, (index >> 32) as u32], key);
                let m = |hi: u32, lo: u32| (((hi as u64) << 32) | lo as u64) >> 12;
                let r = (-2.0 * normal::ln(normal::open_uniform52(m(b[0], b[1])))).sqrt();
                let (c, s) = normal::cos_sin_turn(m(b[2], b[3]));
                let want = if j % 2 == 0 { r * c } else { r * s };
                assert_eq!(zk.to_bits(), want.to_bits(), "len {len}, normal {k}");
            }
        }
    }

    /// ln and (cos, sin) of a turn at the edges: the smallest and largest uniforms, and both
    /// sides of every quarter turn, against libm.
    #[test]
    fn series_hold_at_the_edges() {
        let top = (1u64 << 52) - 1;
        let mut ms = vec![0, 1, top - 1, top];
        for q in 1..4u64 {
            ms.extend([
                (q << 50) - 1,
                q << 50,
                (q << 50) + 1,
                (q << 50) + (1 << 49),
                (q << 50) - (1 << 49),
            ]);
        }
        for m in ms {
            let u = normal::open_uniform52(m);
            assert_eq!(u, (m as f64 + 0.5) / (1u64 << 52) as f64);
            let ln = normal::ln(u);
            assert!(
                (ln - u.ln()).abs() <= 4.0 * f64::EPSILON * u.ln().abs(),
                "ln {u}: {ln}"
            );
            let (c, s) = normal::cos_sin_turn(m);
            let (sn, cs) = (std::f64::consts::TAU * u).sin_cos();
            assert!(
                (c - cs).abs() < 2e-15 && (s - sn).abs() < 2e-15,
                "turn {u}: {c} {s}"
            );
        }
    }

    /// The AVX2 build of the generator gives the portable build's bits, and a batch large
    /// enough to be split across threads gives the rows one at a time.
    #[test]
    fn instruction_sets_and_threads_agree() {
        let key = philox_key(3, 5);
        let (len, rows) = (37, 1000);
        let mut a = vec![0.0; len * rows];
        let mut b = vec![0.0; len * rows];
        normal::rows_portable(key, 11, len, &mut a, 0, &copy);
        normal::rows_here(key, 11, len, &mut b, 0, &copy);
        assert_eq!(a, b);
        let all = normal_rows(3, 11, rows, 5, len);
        assert_eq!(all.as_slice().unwrap(), &a[..]);
        assert_eq!(all.row(999).to_vec(), normal_vec(3, 1010, 5, len));
        let mut y = vec![1.5f64; len * rows];
        add_normal_rows(3, 11, 5, -2.0, len, &mut y);
        assert!(y.iter().zip(&a).all(|(y, z)| *y == 1.5 - 2.0 * z));
        let mut f = vec![1.5f32; len * rows];
        add_normal_rows_f32(3, 11, 5, -2.0, len, &mut f);
        assert!(f.iter().zip(&a).all(|(f, z)| *f == (1.5 - 2.0 * z) as f32));
        // The fused update: one pass, the values of the combination and then the noise, with the
        // other buffers read at the element's own position across the thread split.
        let d: Vec<f64> = (0..len * rows)
            .map(|k| (k % 11) as f64 * 0.5 - 2.0)
            .collect();
        let e: Vec<f64> = (0..len * rows).map(|k| (k % 3) as f64 + 0.25).collect();
        let mut want = vec![1.5f64; len * rows];
        crate::kernels::combine_assign_f64(0.9, &mut want, &[(0.1, &d), (-0.3, &e)]);
        add_normal_rows(3, 11, 5, -2.0, len, &mut want);
        let mut got = vec![1.5f64; len * rows];
        combine_add_normal_rows(
            3,
            11,
            5,
            len,
            (0.9, &[(0.1, &d), (-0.3, &e)], -2.0),
            &mut got,
        );
        assert_eq!(got, want);
        let (df, ef): (Vec<f32>, Vec<f32>) = (
            d.iter().map(|v| *v as f32).collect(),
            e.iter().map(|v| *v as f32).collect(),
        );
        let mut wantf = vec![1.5f32; len * rows];
        crate::kernels::combine_assign_f32(0.9, &mut wantf, &[(0.1, &df), (-0.3, &ef)]);
        add_normal_rows_f32(3, 11, 5, -2.0, len, &mut wantf);
        let mut gotf = vec![1.5f32; len * rows];
        combine_add_normal_rows_f32(
            3,
            11,
            5,
            len,
            (0.9, &[(0.1, &df), (-0.3, &ef)], -2.0),
            &mut gotf,
        );
        assert_eq!(gotf, wantf);
    }

    /// The fused update with every number of terms (each count has its own chunk loop; past
    /// three, the leading terms take a pass of their own) and odd and even rows: bit for bit
    /// the combination, then the noise.
    #[test]
    fn noisy_update_is_the_combination_then_the_noise_for_every_term_count() {
        for (len, rows) in [(3, 50), (64, 9), (129, 4)] {
            let n = len * rows;
            let ys: Vec<Vec<f64>> = (0..5)
                .map(|j| {
                    (0..n)
                        .map(|k| ((k * (j + 2)) % 13) as f64 * 0.37 - 2.1)
                        .collect()
                })
                .collect();
            let ysf: Vec<Vec<f32>> = ys
                .iter()
                .map(|y| y.iter().map(|v| *v as f32).collect())
                .collect();
            let cs = [0.3, -1.1, 2.5e-3, 0.7, -0.01];
            let x0: Vec<f64> = (0..n).map(|k| (k % 23) as f64 * 0.11 - 1.3).collect();
            for t in 0..=5 {
                let terms: Vec<(f64, &[f64])> = (0..t).map(|j| (cs[j], &ys[j][..])).collect();
                let mut want = x0.clone();
                crate::kernels::combine_assign_f64(0.93, &mut want, &terms);
                add_normal_rows(4, 7, 2, 0.17, len, &mut want);
                let mut got = x0.clone();
                assert!(combine_add_normal_rows(
                    4,
                    7,
                    2,
                    len,
                    (0.93, &terms, 0.17),
                    &mut got
                ));
                assert_eq!(got, want, "len {len}, {t} terms");
                let terms: Vec<(f64, &[f32])> = (0..t).map(|j| (cs[j], &ysf[j][..])).collect();
                let x0f: Vec<f32> = x0.iter().map(|v| *v as f32).collect();
                let mut want = x0f.clone();
                crate::kernels::combine_assign_f32(0.93, &mut want, &terms);
                add_normal_rows_f32(4, 7, 2, 0.17, len, &mut want);
                let mut got = x0f;
                assert!(combine_add_normal_rows_f32(
                    4,
                    7,
                    2,
                    len,
                    (0.93, &terms, 0.17),
                    &mut got
                ));
                assert_eq!(got, want, "f32, len {len}, {t} terms");
            }
        }
    }

    /// The fused noisy update reports whether what it wrote is finite, across the thread split
    /// and for f32 overflow of a finite f64 value.
    #[test]
    fn noisy_update_reports_non_finite_values() {
        let (len, rows) = (37, 1000);
        let n = len * rows;
        let d: Vec<f64> = (0..n).map(|k| (k % 11) as f64 * 0.5 - 2.0).collect();
        let mut x = vec![1.5f64; n];
        assert!(combine_add_normal_rows(
            3,
            11,
            5,
            len,
            (0.9, &[(0.1, &d)], -2.0),
            &mut x
        ));
        for (at, bad) in [
            (0, f64::NAN),
            (n / 2, f64::INFINITY),
            (n - 1, f64::NEG_INFINITY),
        ] {
            let mut d = d.clone();
            d[at] = bad;
            let mut x = vec![1.5f64; n];
            assert!(!combine_add_normal_rows(
                3,
                11,
                5,
                len,
                (0.9, &[(0.1, &d)], -2.0),
                &mut x
            ));
            let mut x = vec![1.5f32; n];
            let df: Vec<f32> = d.iter().map(|v| *v as f32).collect();
            assert!(!combine_add_normal_rows_f32(
                3,
                11,
                5,
                len,
                (0.9, &[(0.1, &df)], -2.0),
                &mut x
            ));
        }
        // 1e39 is finite in f64 and ∞ once rounded to f32.
        let mut x = vec![1.5f32; n];
        assert!(!combine_add_normal_rows_f32(
            3,
            11,
            5,
            len,
            (1e39, &[], 0.0),
            &mut x
        ));
        assert!(x.iter().all(|v| *v == f32::INFINITY));
    }

    /// Row i is a function of (seed, stream, first_index + i) only, and of the prefix length never:
    /// a longer row starts with the shorter one (odd lengths drop the block's second normal).
    #[test]
    fn rows_are_prefix_stable_and_buffer_fills_agree() {
        let long = normal_vec(5, 9, 3, 7);
        assert_eq!(normal_vec(5, 9, 3, 4), long[..4].to_vec());
        let mut buf = [0.0; 7];
        fill_normals(5, 9, 3, &mut buf);
        assert_eq!(buf.to_vec(), long);
        let rows = normal_rows(5, 8, 3, 3, 7);
        assert_eq!(rows.row(1).to_vec(), long);
    }

    /// Distribution test: Kolmogorov–Smirnov distance of 100 000 draws (from many samples,
    /// streams and positions) to Φ, below the 0.1%-level critical value 1.95/√n; and the
    /// fourth moment 3 within 5 standard errors (√(96/n)).
    #[test]
    fn normals_pass_ks_and_kurtosis() {
        let mut z: Vec<f64> = (0..50u64)
            .flat_map(|i| normal_vec(11, i, streams::STEP_BASE + i % 3, 2000))
            .collect();
        let n = z.len() as f64;
        let m4 = z.iter().map(|v| v.powi(4)).sum::<f64>() / n;
        assert!((m4 - 3.0).abs() < 5.0 * (96.0 / n).sqrt(), "{m4}");
        z.sort_by(|a, b| a.total_cmp(b));
        let phi = |x: f64| 0.5 * erfc(-x / std::f64::consts::SQRT_2);
        let d = z
            .iter()
            .enumerate()
            .map(|(k, &x)| {
                let f = phi(x);
                (f - k as f64 / n).abs().max(((k + 1) as f64 / n - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / n.sqrt(), "KS distance {d}");
    }

    /// erfc to ~1e-7 (Numerical Recipes' Chebyshev fit), enough for a KS bound of 6e-3.
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let r = t
            * (-z * z - 1.26551223
                + t * (1.00002368
                    + t * (0.37409196
                        + t * (0.09678418
                            + t * (-0.18628806
                                + t * (0.27886807
                                    + t * (-1.13520398
                                        + t * (1.48851587
                                            + t * (-0.82215223 + t * 0.17087277)))))))))
                .exp();
        if x >= 0.0 {
            r
        } else {
            2.0 - r
        }
    }

    /// Uniforms: prefix-stable, inside (0, 1), mean ½ and variance 1/12 within 5 standard errors.
    #[test]
    fn uniforms_are_uniform() {
        let mut u = vec![0.0; 20001];
        fill_uniforms(4, 2, 9, &mut u);
        let mut v = vec![0.0; 3];
        fill_uniforms(4, 2, 9, &mut v);
        assert_eq!(v, u[..3].to_vec());
        assert!(u.iter().all(|&x| x > 0.0 && x < 1.0));
        let n = u.len() as f64;
        let m = u.iter().sum::<f64>() / n;
        let var = u.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        assert!((m - 0.5).abs() < 5.0 * (1.0 / 12.0 / n).sqrt(), "{m}");
        assert!(
            (var - 1.0 / 12.0).abs() < 5.0 * (1.0 / 180.0 / n).sqrt(),
            "{var}"
        );
    }

    #[test]
    fn normals_have_unit_moments() {
        let z = normal_rows(3, 0, 2000, 0, 10);
        let n = z.len() as f64;
        let mean = z.sum() / n;
        let var = z.mapv(|v| v * v).sum() / n - mean * mean;
        // 20 000 draws: standard errors 0.007 (mean) and 0.01 (variance); 5σ bounds.
        assert!(mean.abs() < 0.035, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
